//! Google's Gemini API: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` with the key
//! in `x-goog-api-key` (never in the URL), function calling, usage metadata; image generation
//! through `generateContent` with image response modalities.

use std::collections::VecDeque;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, ErrorKind, Result};

use crate::contract::{
    decoded, truncated, ChatProvider, ChatStream, Decode, GeneratedImage, ImageProvider,
    ImageToImageParams, TextToImageParams,
};
use crate::http::{HttpOptions, SseReader, Target, Transport};
use crate::types::{
    b64, ChatRequest, Media, Message, Part, ResponseFormat, Role, StopReason, StreamItem, ToolCall,
    ToolChoice, Usage,
};

#[derive(Clone)]
pub struct GeminiConfig {
    /// E.g. `https://generativelanguage.googleapis.com` (no version).
    pub base_url: String,
    pub api_key: String,
    pub http: HttpOptions,
}

impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Gemini {
    config: GeminiConfig,
    transport: Transport,
}

impl Gemini {
    pub fn new(config: GeminiConfig) -> Result<Self> {
        let transport = Transport::new(
            config.http.clone(),
            Target {
                provider: "gemini".into(),
                key_setting: "GEMINI_API_KEY",
                secret: Some(config.api_key.clone()),
            },
        )?;
        Ok(Self { config, transport })
    }

    fn url(&self, model: &str, method: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        format!(
            "{}/v1beta/models/{model}:{method}",
            self.config.base_url.trim_end_matches('/')
        )
    }

    /// The `GenerateContentRequest` body.
    pub fn body(&self, req: &ChatRequest) -> Result<Value> {
        let system: Vec<String> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(Message::text_content)
            .filter(|t| !t.is_empty())
            .collect();
        let mut contents: Vec<Value> = Vec::new();
        for m in req.messages.iter().filter(|m| m.role != Role::System) {
            let (role, parts) = parts_of(m, &req.messages)?;
            match contents.last_mut() {
                Some(last) if last["role"] == role => {
                    if let Some(arr) = last["parts"].as_array_mut() {
                        arr.extend(parts);
                    }
                }
                _ => contents.push(json!({"role": role, "parts": parts})),
            }
        }
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if !system.is_empty() {
            body.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system.join("\n\n")}]}),
            );
        }
        if !req.tools.is_empty() {
            let decls: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                                "parametersJsonSchema": t.input_schema})
                })
                .collect();
            body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
            let config = match &req.tool_choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            };
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
        let mut gen = Map::new();
        if let Some(n) = req.max_tokens {
            gen.insert("maxOutputTokens".into(), json!(n));
        }
        if let Some(t) = req.temperature {
            gen.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            gen.insert("topP".into(), json!(p));
        }
        if let Some(s) = req.seed {
            gen.insert("seed".into(), json!(s));
        }
        if !req.stop.is_empty() {
            gen.insert("stopSequences".into(), json!(req.stop));
        }
        match &req.response_format {
            None => {}
            Some(ResponseFormat::JsonObject) => {
                gen.insert("responseMimeType".into(), json!("application/json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                gen.insert("responseMimeType".into(), json!("application/json"));
                gen.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        if !gen.is_empty() {
            body.insert("generationConfig".into(), Value::Object(gen));
        }
        Ok(Value::Object(body))
    }
}

fn media_part(m: &Media) -> Value {
    match m {
        Media::Inline { mime_type, data } => {
            json!({"inlineData": {"mimeType": mime_type, "data": b64::encode(data)}})
        }
        Media::Url { url } => json!({"fileData": {"fileUri": url}}),
    }
}

fn parts_of(m: &Message, all: &[Message]) -> Result<(&'static str, Vec<Value>)> {
    if m.role == Role::Tool {
        let id = m.tool_call_id.clone().unwrap_or_default();
        // Gemini answers a call by function name; find it if the message lacks it.
        let name = m.name.clone().or_else(|| {
            all.iter()
                .flat_map(|x| x.tool_calls.iter())
                .find(|c| c.id == id)
                .map(|c| c.name.clone())
        });
        let text = m.text_content();
        let response = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o)) => Value::Object(o),
            Ok(other) => json!({"result": other}),
            Err(_) => json!({"result": text}),
        };
        let mut fr = json!({"name": name.unwrap_or_default(), "response": response});
        if !id.is_empty() {
            fr["id"] = json!(id);
        }
        return Ok(("user", vec![json!({"functionResponse": fr})]));
    }
    let mut parts = Vec::new();
    for p in &m.content {
        match p {
            Part::Text { text } if text.is_empty() => {}
            Part::Text { text } => parts.push(json!({"text": text})),
            Part::Image { image } => parts.push(media_part(image)),
            Part::Audio { audio } => parts.push(media_part(audio)),
        }
    }
    for c in &m.tool_calls {
        let mut fc = json!({"name": c.name, "args": c.args});
        if !c.id.starts_with("gemini_call_") {
            fc["id"] = json!(c.id);
        }
        parts.push(json!({"functionCall": fc}));
    }
    if parts.is_empty() {
        parts.push(json!({"text": " "}));
    }
    let role = if m.role == Role::Assistant {
        "model"
    } else {
        "user"
    };
    Ok((role, parts))
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "STOP" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            StopReason::ContentFilter
        }
        other => StopReason::Other(other.to_ascii_lowercase()),
    }
}

fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cached_tokens: n("cachedContentTokenCount"),
        reasoning_tokens: n("thoughtsTokenCount"),
    }
}

struct Decoder {
    sse: SseReader,
    usage: Usage,
    stop: Option<StopReason>,
    calls: usize,
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
                // Gemini's stream has no end marker: it ends after a chunk with a finishReason.
                let Some(stop) = self.stop.take() else {
                    return Err(truncated("the Gemini stream ended before a finishReason"));
                };
                let stop = if self.calls > 0 && stop == StopReason::EndTurn {
                    StopReason::ToolUse
                } else {
                    stop
                };
                self.pending.push_back(StreamItem::Finish {
                    stop_reason: stop,
                    usage: self.usage,
                });
                self.done = true;
                continue;
            };
            if ev.data.trim().is_empty() {
                continue;
            }
            let v = self.sse.parse(&ev)?;
            if let Some(err) = v.get("error") {
                let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("gemini stream error: {msg}"),
                )
                .with_operation("gemini.chat"));
            }
            if let Some(u) = v.get("usageMetadata") {
                self.usage = usage_of(u);
            }
            if let Some(fb) = v
                .pointer("/promptFeedback/blockReason")
                .and_then(Value::as_str)
            {
                return Err(
                    Error::invalid_input(format!("gemini blocked the prompt ({fb})"))
                        .with_operation("gemini.chat"),
                );
            }
            let Some(cand) = v.pointer("/candidates/0") else {
                continue;
            };
            if let Some(parts) = cand.pointer("/content/parts").and_then(Value::as_array) {
                for p in parts {
                    let thought = p.get("thought").and_then(Value::as_bool).unwrap_or(false);
                    if let Some(t) = p
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        self.pending.push_back(if thought {
                            StreamItem::Thinking { text: t.to_owned() }
                        } else {
                            StreamItem::Text { text: t.to_owned() }
                        });
                    }
                    if let Some(fc) = p.get("functionCall") {
                        self.calls += 1;
                        let id = fc
                            .get("id")
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("gemini_call_{}", self.calls), str::to_owned);
                        let name = fc.get("name").and_then(Value::as_str).unwrap_or("");
                        let call = match fc.get("args") {
                            Some(Value::Object(args)) => ToolCall {
                                id,
                                name: name.to_owned(),
                                args: args.clone(),
                                invalid_arguments: None,
                            },
                            None | Some(Value::Null) => ToolCall::from_raw(id, name, ""),
                            Some(other) => ToolCall::from_raw(id, name, &other.to_string()),
                        };
                        self.pending.push_back(StreamItem::ToolCall { call });
                    }
                }
            }
            if let Some(r) = cand.get("finishReason").and_then(Value::as_str) {
                self.stop = Some(stop_reason(r));
            }
        }
    }
}

#[async_trait]
impl ChatProvider for Gemini {
    fn provider_id(&self) -> &str {
        "gemini"
    }

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.body(&request)?;
        let url = format!(
            "{}?alt=sse",
            self.url(&request.model, "streamGenerateContent")
        );
        let resp = self
            .transport
            .send("gemini.chat", &request.model, |c| {
                c.post(&url)
                    .header("x-goog-api-key", &self.config.api_key)
                    .json(&body)
            })
            .await?;
        Ok(decoded(Decoder {
            sse: self.transport.sse("gemini.chat", resp),
            usage: Usage::default(),
            stop: None,
            calls: 0,
            pending: VecDeque::new(),
            done: false,
        }))
    }
}

impl Gemini {
    async fn generate_image(&self, model: &str, parts: Vec<Value>) -> Result<GeneratedImage> {
        let body = json!({
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
        });
        let url = self.url(model, "generateContent");
        let resp = self
            .transport
            .send("gemini.image", model, |c| {
                c.post(&url)
                    .header("x-goog-api-key", &self.config.api_key)
                    .json(&body)
            })
            .await?;
        let v = self.transport.json("gemini.image", resp).await?;
        let parts = v
            .pointer("/candidates/0/content/parts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in parts {
            if let Some(d) = p.get("inlineData") {
                let data = d.get("data").and_then(Value::as_str).unwrap_or("");
                let bytes = b64::decode(data).map_err(|e| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("gemini returned image data that is not base64: {e}"),
                    )
                })?;
                let mime = d
                    .get("mimeType")
                    .and_then(Value::as_str)
                    .unwrap_or("image/png")
                    .to_owned();
                return Ok(GeneratedImage {
                    bytes: Bytes::from(bytes),
                    mime_type: mime,
                    usage: v.get("usageMetadata").map(usage_of).unwrap_or_default(),
                });
            }
        }
        Err(Error::new(
            ErrorKind::Unexpected,
            format!("gemini model {model} returned no image (is it an image model?)"),
        )
        .with_operation("gemini.image"))
    }
}

#[async_trait]
impl ImageProvider for Gemini {
    fn provider_id(&self) -> &str {
        "gemini"
    }

    async fn text_to_image(&self, p: TextToImageParams) -> Result<GeneratedImage> {
        let mut prompt = p.prompt.clone();
        if !p.negative_prompt.is_empty() {
            prompt.push_str(&format!("\nAvoid: {}", p.negative_prompt));
        }
        self.generate_image(&p.model, vec![json!({"text": prompt})])
            .await
    }

    async fn image_to_image(&self, p: ImageToImageParams) -> Result<GeneratedImage> {
        self.generate_image(
            &p.text.model,
            vec![json!({"text": p.text.prompt}), media_part(&p.image)],
        )
        .await
    }
}
