//! OpenAI-compatible servers: OpenAI, Ollama, llama.cpp, vLLM, LM Studio, OpenRouter — a base URL
//! (ending in `/v1`) and an optional key. Chat completions (streamed SSE with tool calls and
//! usage), image generation and edits, audio transcriptions and speech.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, ErrorKind, Result};

use crate::contract::{
    decoded, truncated, AsrRequest, AsrResult, ChatProvider, ChatStream, Decode, GeneratedImage,
    ImageProvider, ImageToImageParams, Speech, SpeechToText, TextToImageParams, TextToSpeech,
    TtsRequest,
};
use crate::http::{HttpOptions, SseReader, Target, Transport};
use crate::types::{
    b64, ChatRequest, Media, Message, Part, ResponseFormat, Role, StopReason, StreamItem, ToolCall,
    ToolChoice, Usage,
};

/// Where an OpenAI-compatible server is and how to reach it.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// NodeTool's provider id (`openai`, `ollama`, `llama_cpp`, `vllm`, `lmstudio`, `openrouter`).
    pub provider: String,
    /// E.g. `https://api.openai.com/v1`; no trailing slash.
    pub base_url: String,
    pub api_key: Option<String>,
    /// The setting named when the key is refused.
    pub key_setting: &'static str,
    /// Send `max_completion_tokens` (OpenAI's newer models refuse `max_tokens`) instead of
    /// `max_tokens` (what other servers read).
    pub max_completion_tokens: bool,
    /// Ask for a final usage chunk (`stream_options.include_usage`).
    pub stream_usage: bool,
    /// Send a JSON schema as `{"type": "json_object", "schema": …}`: llama.cpp's server
    /// (llama-cpp-python) refuses `json_schema` and reads the schema from there instead.
    pub schema_in_json_object: bool,
    pub http: HttpOptions,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("key_setting", &self.key_setting)
            .finish()
    }
}

impl OpenAiConfig {
    pub fn new(provider: impl Into<String>, base_url: impl Into<String>) -> Self {
        let provider = provider.into();
        Self {
            max_completion_tokens: provider == "openai",
            schema_in_json_object: provider == "llama_cpp",
            provider,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            key_setting: "OPENAI_API_KEY",
            stream_usage: true,
            http: HttpOptions::default(),
        }
    }

    pub fn with_key(mut self, key: Option<String>, setting: &'static str) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self.key_setting = setting;
        self
    }
}

/// A client of one OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    config: OpenAiConfig,
    transport: Transport,
}

impl OpenAiCompatible {
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let transport = Transport::new(
            config.http.clone(),
            Target {
                provider: config.provider.clone(),
                key_setting: config.key_setting,
                secret: config.api_key.clone(),
            },
        )?;
        Ok(Self { config, transport })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// The chat completion body (`stream: true`).
    pub fn chat_body(&self, req: &ChatRequest) -> Result<Value> {
        let mut body = Map::new();
        body.insert("model".into(), json!(req.model));
        body.insert("messages".into(), Value::Array(messages(req)?));
        body.insert("stream".into(), json!(true));
        if self.config.stream_usage {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if let Some(n) = req.max_tokens {
            let key = if self.config.max_completion_tokens {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(key.into(), json!(n));
        }
        if let Some(t) = req.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if let Some(s) = req.seed {
            body.insert("seed".into(), json!(s));
        }
        if !req.stop.is_empty() {
            body.insert("stop".into(), json!(req.stop));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.input_schema}})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            // `auto` is every server's default with tools, so it is not sent: llama.cpp's
            // server refuses an explicit `auto` when streaming.
            let choice = match &req.tool_choice {
                ToolChoice::Auto => None,
                ToolChoice::None => Some(json!("none")),
                ToolChoice::Required => Some(json!("required")),
                ToolChoice::Tool(name) => {
                    Some(json!({"type": "function", "function": {"name": name}}))
                }
            };
            if let Some(choice) = choice {
                body.insert("tool_choice".into(), choice);
            }
        }
        match &req.response_format {
            None => {}
            Some(ResponseFormat::JsonObject) => {
                body.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some(ResponseFormat::JsonSchema { schema, .. })
                if self.config.schema_in_json_object =>
            {
                body.insert(
                    "response_format".into(),
                    json!({"type": "json_object", "schema": schema}),
                );
            }
            Some(ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            }) => {
                body.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}),
                );
            }
        }
        Ok(Value::Object(body))
    }
}

fn messages(req: &ChatRequest) -> Result<Vec<Value>> {
    req.messages.iter().map(message).collect()
}

fn message(m: &Message) -> Result<Value> {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let only_text = m.content.iter().all(|p| matches!(p, Part::Text { .. }));
    let content = if only_text || m.role != Role::User {
        // Only user turns may carry media; everything else is text.
        json!(m.text_content())
    } else {
        let mut parts = Vec::new();
        for p in &m.content {
            parts.push(match p {
                Part::Text { text } => json!({"type": "text", "text": text}),
                Part::Image { image } => {
                    json!({"type": "image_url", "image_url": {"url": image.as_url()}})
                }
                Part::Audio { audio } => match audio {
                    Media::Inline { mime_type, data } => json!({"type": "input_audio",
                        "input_audio": {"data": b64::encode(data), "format": audio_format(mime_type)}}),
                    Media::Url { .. } => {
                        return Err(Error::invalid_input(
                            "OpenAI-compatible servers take audio input as bytes, not a URL",
                        ))
                    }
                },
            });
        }
        Value::Array(parts)
    };
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        let text = m.text_content();
        out.insert(
            "content".into(),
            if text.is_empty() {
                Value::Null
            } else {
                json!(text)
            },
        );
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = match &c.invalid_arguments {
                    Some(raw) => raw.clone(),
                    None => Value::Object(c.args.clone()).to_string(),
                };
                json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments}})
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    } else {
        out.insert("content".into(), content);
    }
    if m.role == Role::Tool {
        out.insert(
            "tool_call_id".into(),
            json!(m.tool_call_id.clone().unwrap_or_default()),
        );
    }
    Ok(Value::Object(out))
}

fn audio_format(mime: &str) -> &'static str {
    match mime {
        "audio/mpeg" | "audio/mp3" => "mp3",
        _ => "wav",
    }
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn usage_of(v: &Value) -> Usage {
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("/prompt_tokens"),
        output_tokens: n("/completion_tokens"),
        cached_tokens: n("/prompt_tokens_details/cached_tokens"),
        reasoning_tokens: n("/completion_tokens_details/reasoning_tokens"),
    }
}

/// A tool call being assembled from `delta.tool_calls` fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns chat completion chunks into stream items.
struct Decoder {
    sse: SseReader,
    calls: BTreeMap<u64, PartialCall>,
    finish: Option<StopReason>,
    usage: Usage,
    pending: std::collections::VecDeque<StreamItem>,
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
                // No [DONE]: a server that just closes after the finish reason is fine; one that
                // stops before it broke off.
                return match self.finish.take() {
                    Some(reason) => {
                        self.finish_items(reason);
                        continue;
                    }
                    None => Err(truncated("the chat stream ended before a finish reason")),
                };
            };
            if ev.data.trim() == "[DONE]" {
                let reason = self.finish.take().ok_or_else(|| {
                    truncated("the chat stream sent [DONE] without a finish reason")
                })?;
                self.finish_items(reason);
                continue;
            }
            if ev.data.trim().is_empty() {
                continue;
            }
            let chunk = self.sse.parse(&ev)?;
            if let Some(err) = chunk.get("error") {
                let msg = err
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| err.to_string(), str::to_owned);
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("provider error in stream: {msg}"),
                )
                .with_operation("openai.chat"));
            }
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                self.usage = usage_of(u);
            }
            let Some(choice) = chunk.pointer("/choices/0") else {
                continue;
            };
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(t) = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.pending
                    .push_back(StreamItem::Thinking { text: t.to_owned() });
            }
            if let Some(t) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.pending
                    .push_back(StreamItem::Text { text: t.to_owned() });
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, c) in calls.iter().enumerate() {
                    let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
                    let entry = self.calls.entry(index).or_default();
                    if let Some(id) = c.get("id").and_then(Value::as_str) {
                        entry.id = id.to_owned();
                    }
                    if let Some(f) = c.get("function") {
                        // OpenAI names the function in the first fragment; llama.cpp repeats it.
                        if let Some(name) = f.get("name").and_then(Value::as_str) {
                            if entry.name.is_empty() {
                                entry.name = name.to_owned();
                            }
                        }
                        if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                            entry.arguments.push_str(args);
                        }
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                // Keep reading: the usage chunk and [DONE] follow.
                self.finish = Some(stop_reason(reason));
            }
        }
    }
}

impl Decoder {
    fn finish_items(&mut self, reason: StopReason) {
        let calls = std::mem::take(&mut self.calls);
        let has_calls = !calls.is_empty();
        for (i, c) in calls {
            let id = if c.id.is_empty() {
                format!("call_{i}")
            } else {
                c.id
            };
            self.pending.push_back(StreamItem::ToolCall {
                call: ToolCall::from_raw(id, c.name, &c.arguments),
            });
        }
        // Some servers say "stop" while returning tool calls.
        let reason = if has_calls && reason == StopReason::EndTurn {
            StopReason::ToolUse
        } else {
            reason
        };
        self.pending.push_back(StreamItem::Finish {
            stop_reason: reason,
            usage: self.usage,
        });
        self.done = true;
    }
}

#[async_trait]
impl ChatProvider for OpenAiCompatible {
    fn provider_id(&self) -> &str {
        &self.config.provider
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.chat_body(&request)?;
        let url = self.url("/chat/completions");
        let resp = self
            .transport
            .send("openai.chat", &request.model, |c| {
                self.auth(c.post(&url)).json(&body)
            })
            .await?;
        let decoder = Decoder {
            sse: self.transport.sse("openai.chat", resp),
            calls: BTreeMap::new(),
            finish: None,
            usage: Usage::default(),
            pending: Default::default(),
            done: false,
        };
        Ok(decoded(decoder))
    }
}

pub(crate) fn size_string(width: u32, height: u32) -> String {
    format!("{width}x{height}")
}

fn image_from_response(v: &Value, provider: &str) -> Result<GeneratedImage> {
    let first = v.pointer("/data/0").ok_or_else(|| {
        Error::new(
            ErrorKind::Unexpected,
            format!("{provider} returned no image"),
        )
        .with_operation("openai.image")
    })?;
    let b64_text = first
        .get("b64_json")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!("{provider} returned an image without b64_json data"),
            )
            .with_operation("openai.image")
        })?;
    let bytes = b64::decode(b64_text).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("{provider} returned an image that is not valid base64: {e}"),
        )
    })?;
    let usage = v.get("usage").map(|u| Usage {
        input_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        ..Usage::default()
    });
    Ok(GeneratedImage {
        mime_type: sniff_image(&bytes).to_owned(),
        bytes: Bytes::from(bytes),
        usage: usage.unwrap_or_default(),
    })
}

pub(crate) fn sniff_image(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        "image/jpeg"
    } else if bytes.len() > 12 && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}

#[async_trait]
impl ImageProvider for OpenAiCompatible {
    fn provider_id(&self) -> &str {
        &self.config.provider
    }

    async fn text_to_image(&self, p: TextToImageParams) -> Result<GeneratedImage> {
        let mut body = json!({
            "model": p.model, "prompt": p.prompt, "n": 1,
            "size": size_string(p.width, p.height),
        });
        // dall-e returns URLs unless asked; gpt-image-* always answers base64 and refuses the field.
        if p.model.starts_with("dall-e") {
            body["response_format"] = json!("b64_json");
        }
        let url = self.url("/images/generations");
        let resp = self
            .transport
            .send("openai.image", &p.model, |c| {
                self.auth(c.post(&url)).json(&body)
            })
            .await?;
        let v = self.transport.json("openai.image", resp).await?;
        image_from_response(&v, &self.config.provider)
    }

    async fn image_to_image(&self, p: ImageToImageParams) -> Result<GeneratedImage> {
        let Media::Inline { mime_type, data } = &p.image else {
            return Err(Error::invalid_input("image edits need the image bytes"));
        };
        let url = self.url("/images/edits");
        let (mime, data) = (mime_type.clone(), data.clone());
        let resp = self
            .transport
            .send("openai.image_edit", &p.text.model, |c| {
                let part = reqwest::multipart::Part::bytes(data.clone())
                    .file_name(format!("image.{}", ext_for(&mime)))
                    .mime_str(&mime)
                    .unwrap_or_else(|_| reqwest::multipart::Part::bytes(data.clone()));
                let form = reqwest::multipart::Form::new()
                    .text("model", p.text.model.clone())
                    .text("prompt", p.text.prompt.clone())
                    .text("size", size_string(p.text.width, p.text.height))
                    .part("image", part);
                self.auth(c.post(&url)).multipart(form)
            })
            .await?;
        let v = self.transport.json("openai.image_edit", resp).await?;
        image_from_response(&v, &self.config.provider)
    }
}

fn ext_for(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "audio/webm" => "webm",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "m4a",
        _ => "png",
    }
}

#[async_trait]
impl SpeechToText for OpenAiCompatible {
    fn provider_id(&self) -> &str {
        &self.config.provider
    }

    async fn transcribe(&self, r: AsrRequest) -> Result<AsrResult> {
        let url = self.url("/audio/transcriptions");
        let resp = self
            .transport
            .send("openai.transcribe", &r.model, |c| {
                let file = reqwest::multipart::Part::bytes(r.audio.to_vec())
                    .file_name(format!("audio.{}", ext_for(&r.mime_type)));
                let mut form = reqwest::multipart::Form::new()
                    .text("model", r.model.clone())
                    .text("response_format", "json")
                    .part("file", file);
                if let Some(l) = &r.language {
                    form = form.text("language", l.clone());
                }
                if let Some(p) = &r.prompt {
                    form = form.text("prompt", p.clone());
                }
                if let Some(t) = r.temperature {
                    form = form.text("temperature", t.to_string());
                }
                self.auth(c.post(&url)).multipart(form)
            })
            .await?;
        let v = self.transport.json("openai.transcribe", resp).await?;
        let text = v.get("text").and_then(Value::as_str).ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!(
                    "{} returned a transcription without text",
                    self.config.provider
                ),
            )
        })?;
        Ok(AsrResult {
            text: text.to_owned(),
            chunks: Vec::new(),
            usage: v.get("usage").map(usage_of).unwrap_or_default(),
            duration: v.get("duration").and_then(Value::as_f64),
        })
    }
}

#[async_trait]
impl TextToSpeech for OpenAiCompatible {
    fn provider_id(&self) -> &str {
        &self.config.provider
    }

    async fn speak(&self, r: TtsRequest) -> Result<Speech> {
        if r.text.trim().is_empty() {
            return Err(
                Error::invalid_input("text to speak is empty").with_operation("openai.speech")
            );
        }
        let body = json!({"model": r.model, "input": r.text, "voice": r.voice,
                          "speed": r.speed, "response_format": "mp3"});
        let url = self.url("/audio/speech");
        let resp = self
            .transport
            .send("openai.speech", &r.model, |c| {
                self.auth(c.post(&url)).json(&body)
            })
            .await?;
        let audio = self.transport.bytes("openai.speech", resp).await?;
        Ok(Speech {
            audio,
            mime_type: "audio/mpeg".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ToolSpec;

    #[test]
    fn chat_body_has_openai_field_names() {
        let p = OpenAiCompatible::new(OpenAiConfig::new("llama_cpp", "http://x/v1")).unwrap();
        let mut req = ChatRequest::new(
            "m",
            vec![
                Message::system("be brief"),
                Message::new(
                    Role::User,
                    vec![
                        Part::Text {
                            text: "look".into(),
                        },
                        Part::Image {
                            image: Media::inline("image/png", vec![1, 2]),
                        },
                    ],
                ),
            ],
        );
        req.max_tokens = Some(5);
        req.seed = Some(1);
        req.tools = vec![ToolSpec {
            name: "f".into(),
            description: "d".into(),
            input_schema: json!({"type": "object"}),
        }];
        let call = ToolCall::from_raw("c1", "f", r#"{"a":1}"#);
        req.messages
            .push(Message::assistant("", vec![call.clone()]));
        req.messages.push(Message::tool_result(&call, "ok"));
        let b = p.chat_body(&req).unwrap();
        assert_eq!(b["max_tokens"], 5);
        assert_eq!(b["seed"], 1);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            b["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AQI="
        );
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":1}"#
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "content": "ok", "tool_call_id": "c1"})
        );
        assert_eq!(b["tools"][0]["function"]["name"], "f");
        let openai = OpenAiCompatible::new(OpenAiConfig::new("openai", "http://x/v1")).unwrap();
        assert_eq!(openai.chat_body(&req).unwrap()["max_completion_tokens"], 5);
    }
}
