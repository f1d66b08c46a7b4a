//! Anthropic's Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`), streamed:
//! `message_start`, `content_block_start|delta|stop` (text, tool_use with `input_json_delta`,
//! thinking), `message_delta` (stop reason, output usage), `message_stop`; `ping` and `error`
//! events in between.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, ErrorKind, Result};

use crate::contract::{decoded, truncated, ChatProvider, ChatStream, Decode};
use crate::http::{HttpOptions, SseReader, Target, Transport};
use crate::types::{
    ChatRequest, Media, Message, Part, ResponseFormat, Role, StopReason, StreamItem, ToolCall,
    ToolChoice, Usage,
};

/// The API version every request names.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Messages needs `max_tokens`; NodeTool's default for its nodes.
const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Clone)]
pub struct AnthropicConfig {
    /// E.g. `https://api.anthropic.com` (no `/v1`).
    pub base_url: String,
    pub api_key: String,
    pub http: HttpOptions,
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Anthropic {
    config: AnthropicConfig,
    transport: Transport,
}

impl Anthropic {
    pub fn new(config: AnthropicConfig) -> Result<Self> {
        let transport = Transport::new(
            config.http.clone(),
            Target {
                provider: "anthropic".into(),
                key_setting: "ANTHROPIC_API_KEY",
                secret: Some(config.api_key.clone()),
            },
        )?;
        Ok(Self { config, transport })
    }

    /// The Messages body (`stream: true`).
    pub fn body(&self, req: &ChatRequest) -> Result<Value> {
        let mut system: Vec<String> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(Message::text_content)
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(format) = &req.response_format {
            // Messages has no response_format: ask for the JSON in the system prompt.
            system.push(match format {
                ResponseFormat::JsonObject => {
                    "Respond with a single JSON object and nothing else.".to_owned()
                }
                ResponseFormat::JsonSchema { schema, .. } => format!(
                    "Respond with a single JSON object matching this JSON schema and nothing else:\n{schema}"
                ),
            });
        }
        let mut messages: Vec<Value> = Vec::new();
        for m in req.messages.iter().filter(|m| m.role != Role::System) {
            let (role, blocks) = blocks_of(m)?;
            // Consecutive turns of one role merge (tool results of parallel calls).
            match messages.last_mut() {
                Some(last) if last["role"] == role => {
                    if let Some(arr) = last["content"].as_array_mut() {
                        arr.extend(blocks);
                    }
                }
                _ => messages.push(json!({"role": role, "content": blocks})),
            }
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(req.model));
        body.insert(
            "max_tokens".into(),
            json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        );
        body.insert("messages".into(), Value::Array(messages));
        if !system.is_empty() {
            body.insert("system".into(), json!(system.join("\n\n")));
        }
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !req.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(req.stop));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            body.insert(
                "tool_choice".into(),
                match &req.tool_choice {
                    ToolChoice::Auto => json!({"type": "auto"}),
                    ToolChoice::None => json!({"type": "none"}),
                    ToolChoice::Required => json!({"type": "any"}),
                    ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
                },
            );
        }
        body.insert("stream".into(), json!(true));
        Ok(Value::Object(body))
    }
}

fn blocks_of(m: &Message) -> Result<(&'static str, Vec<Value>)> {
    let mut blocks = Vec::new();
    match m.role {
        Role::Tool => {
            blocks.push(json!({
                "type": "tool_result",
                "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                "content": m.text_content(),
            }));
            return Ok(("user", blocks));
        }
        Role::System => return Ok(("user", blocks)),
        Role::User | Role::Assistant => {}
    }
    for p in &m.content {
        match p {
            Part::Text { text } if text.is_empty() => {}
            Part::Text { text } => blocks.push(json!({"type": "text", "text": text})),
            Part::Image { image } => blocks.push(match image {
                Media::Inline { mime_type, data } => json!({"type": "image", "source": {
                    "type": "base64", "media_type": mime_type,
                    "data": crate::types::b64::encode(data)}}),
                Media::Url { url } => json!({"type": "image", "source": {"type": "url", "url": url}}),
            }),
            Part::Audio { .. } => {
                return Err(Error::invalid_input(
                    "Anthropic models take no audio input; transcribe it first (AutomaticSpeechRecognition)",
                )
                .with_operation("anthropic.chat"))
            }
        }
    }
    for c in &m.tool_calls {
        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}));
    }
    if blocks.is_empty() {
        // Messages refuses empty content.
        blocks.push(json!({"type": "text", "text": " "}));
    }
    let role = if m.role == Role::Assistant {
        "assistant"
    } else {
        "user"
    };
    Ok((role, blocks))
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" | "pause_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "tool_use" => StopReason::ToolUse,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    Other,
}

struct Decoder {
    sse: SseReader,
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
    stop: Option<StopReason>,
    started: bool,
    pending: VecDeque<StreamItem>,
    done: bool,
}

#[async_trait]
impl Decode for Decoder {
    async fn next_item(&mut self) -> Result<Option<StreamItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            let Some(ev) = self.sse.next().await? else {
                return Err(truncated("the Messages stream ended before message_stop"));
            };
            if ev.data.trim().is_empty() {
                continue;
            }
            let v = self.sse.parse(&ev)?;
            let kind = v.get("type").and_then(Value::as_str).unwrap_or(&ev.event);
            match kind {
                "message_start" => {
                    self.started = true;
                    if let Some(u) = v.pointer("/message/usage") {
                        self.usage.input_tokens = num(u, "input_tokens")
                            + num(u, "cache_creation_input_tokens")
                            + num(u, "cache_read_input_tokens");
                        self.usage.cached_tokens = num(u, "cache_read_input_tokens");
                        self.usage.output_tokens = num(u, "output_tokens");
                    }
                }
                "content_block_start" => {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let block = v.get("content_block").unwrap_or(&Value::Null);
                    let b = match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(t) = block
                                .get("text")
                                .and_then(Value::as_str)
                                .filter(|t| !t.is_empty())
                            {
                                self.pending
                                    .push_back(StreamItem::Text { text: t.to_owned() });
                            }
                            Block::Text
                        }
                        Some("thinking") => Block::Thinking,
                        Some("tool_use") => Block::ToolUse {
                            id: str_of(block, "id"),
                            name: str_of(block, "name"),
                            json: String::new(),
                        },
                        _ => Block::Other,
                    };
                    self.blocks.insert(index, b);
                }
                "content_block_delta" => {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let delta = v.get("delta").unwrap_or(&Value::Null);
                    match (
                        delta.get("type").and_then(Value::as_str),
                        self.blocks.get_mut(&index),
                    ) {
                        (Some("text_delta"), _) => {
                            let t = str_of(delta, "text");
                            if !t.is_empty() {
                                self.pending.push_back(StreamItem::Text { text: t });
                            }
                        }
                        (Some("thinking_delta"), _) => {
                            let t = str_of(delta, "thinking");
                            if !t.is_empty() {
                                self.pending.push_back(StreamItem::Thinking { text: t });
                            }
                        }
                        (Some("input_json_delta"), Some(Block::ToolUse { json, .. })) => {
                            json.push_str(&str_of(delta, "partial_json"));
                        }
                        _ => {}
                    }
                }
                "content_block_stop" => {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(Block::ToolUse { id, name, json }) = self.blocks.remove(&index) {
                        self.pending.push_back(StreamItem::ToolCall {
                            call: ToolCall::from_raw(id, name, &json),
                        });
                    }
                }
                "message_delta" => {
                    if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        self.stop = Some(stop_reason(r));
                    }
                    if let Some(u) = v.get("usage") {
                        if let Some(out) = u.get("output_tokens").and_then(Value::as_u64) {
                            self.usage.output_tokens = out;
                        }
                    }
                }
                "message_stop" => {
                    let stop = self.stop.take().unwrap_or(StopReason::EndTurn);
                    self.pending.push_back(StreamItem::Finish {
                        stop_reason: stop,
                        usage: self.usage,
                    });
                    self.done = true;
                }
                "error" => {
                    let etype = v
                        .pointer("/error/type")
                        .and_then(Value::as_str)
                        .unwrap_or("error");
                    let msg = v
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let kind = match etype {
                        "overloaded_error" | "api_error" => ErrorKind::Unavailable,
                        "rate_limit_error" => ErrorKind::RateLimited,
                        "invalid_request_error" => ErrorKind::InvalidInput,
                        _ => ErrorKind::Unexpected,
                    };
                    return Err(Error::new(
                        kind,
                        format!("anthropic stream error ({etype}): {msg}"),
                    )
                    .with_operation("anthropic.chat"));
                }
                // ping and future event types
                _ => {}
            }
        }
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

#[async_trait]
impl ChatProvider for Anthropic {
    fn provider_id(&self) -> &str {
        "anthropic"
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.body(&request)?;
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let resp = self
            .transport
            .send("anthropic.chat", &request.model, |c| {
                c.post(&url)
                    .header("x-api-key", &self.config.api_key)
                    .header("anthropic-version", ANTHROPIC_VERSION)
                    .json(&body)
            })
            .await?;
        Ok(decoded(Decoder {
            sse: self.transport.sse("anthropic.chat", resp),
            blocks: BTreeMap::new(),
            usage: Usage::default(),
            stop: None,
            started: false,
            pending: VecDeque::new(),
            done: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_merge_into_one_user_turn() {
        let p = Anthropic::new(AnthropicConfig {
            base_url: "http://x".into(),
            api_key: "k".into(),
            http: HttpOptions::default(),
        })
        .unwrap();
        let a = ToolCall::from_raw("t1", "f", "{}");
        let b = ToolCall::from_raw("t2", "g", r#"{"x": 2}"#);
        let req = ChatRequest::new(
            "claude",
            vec![
                Message::system("sys"),
                Message::user("hi"),
                Message::assistant("calling", vec![a.clone(), b.clone()]),
                Message::tool_result(&a, "1"),
                Message::tool_result(&b, "2"),
            ],
        );
        let body = p.body(&req).unwrap();
        assert_eq!(body["system"], "sys");
        assert_eq!(body["max_tokens"], 4096);
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
        assert_eq!(msgs[1]["content"][2]["input"]["x"], 2);
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(msgs[2]["content"][1]["tool_use_id"], "t2");
    }
}
