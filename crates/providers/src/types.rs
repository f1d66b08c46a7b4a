//! The provider-neutral vocabulary: messages with text, image and audio parts, tools with JSON
//! schemas, tool calls, requests, stream items, usage and stop reasons.
//!
//! Every type serialises deterministically (field order fixed, no maps with random order), so
//! [`ChatRequest::cache_key`] is the same in every process.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call (`tool_call_id` names the call).
    Tool,
}

/// Bytes of an image or audio clip, or a URL the provider fetches itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Media {
    Inline {
        mime_type: String,
        /// Base64 in the serialised form, so cache keys and logs stay text.
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    Url {
        url: String,
    },
}

impl Media {
    pub fn inline(mime_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Media::Inline {
            mime_type: mime_type.into(),
            data: data.into(),
        }
    }

    pub fn mime_type(&self) -> Option<&str> {
        match self {
            Media::Inline { mime_type, .. } => Some(mime_type),
            Media::Url { .. } => None,
        }
    }

    /// `data:` URL of inline media, or the URL itself.
    pub fn as_url(&self) -> String {
        match self {
            Media::Inline { mime_type, data } => {
                format!("data:{mime_type};base64,{}", b64::encode(data))
            }
            Media::Url { url } => url.clone(),
        }
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    Image { image: Media },
    Audio { audio: Media },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// `^[a-zA-Z0-9_-]{1,64}$` for every provider.
    pub name: String,
    pub description: String,
    /// A JSON schema of type `object`.
    pub input_schema: Value,
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The parsed arguments (empty when they were not a JSON object; see `invalid_arguments`).
    pub args: Map<String, Value>,
    /// The raw argument text when it did not parse as a JSON object: the caller answers the call
    /// with an error instead of running the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_arguments: Option<String>,
}

impl ToolCall {
    /// Parses a provider's argument text (`""` reads as `{}`).
    pub fn from_raw(id: impl Into<String>, name: impl Into<String>, raw: &str) -> Self {
        let (args, invalid_arguments) = if raw.trim().is_empty() {
            (Map::new(), None)
        } else {
            match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(m)) => (m, None),
                _ => (Map::new(), Some(raw.to_owned())),
            }
        };
        Self {
            id: id.into(),
            name: name.into(),
            args,
            invalid_arguments,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Calls an assistant message asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `Role::Tool`: the tool's name (Gemini answers calls by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: Vec<Part>) -> Self {
        Self {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self::new(role, vec![Part::Text { text: text.into() }])
    }

    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }

    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }

    /// An assistant turn with its text and the calls it asked for.
    pub fn assistant(text: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        let text = text.into();
        let content = if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Text { text }]
        };
        Self {
            tool_calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The answer to a tool call.
    pub fn tool_result(call: &ToolCall, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            ..Self::text(Role::Tool, content)
        }
    }

    /// The text parts joined.
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "name", rename_all = "snake_case")]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    /// Some tool.
    Required,
    /// This tool.
    Tool(String),
}

/// Structured output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// An object matching `schema`.
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

/// One chat completion request. Field order is the cache key's layout: keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

impl ChatRequest {
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            max_tokens: None,
            temperature: None,
            top_p: None,
            seed: None,
            stop: Vec::new(),
            response_format: None,
        }
    }

    /// Whether the same request gives the same answer, so it may be cached: temperature 0 or a
    /// seed. Anything else samples, and a cached answer would freeze one sample.
    pub fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0) || self.seed.is_some()
    }

    /// A stable key over the whole request and the provider that serves it (64 hex chars), or
    /// `None` when the request is not deterministic.
    pub fn cache_key(&self, provider: &str) -> Option<String> {
        if !self.is_deterministic() {
            return None;
        }
        let body = serde_json::to_vec(self).ok()?;
        let mut h = blake3::Hasher::new_derive_key("nodetool provider chat cache v1");
        h.update(&(provider.len() as u64).to_le_bytes());
        h.update(provider.as_bytes());
        h.update(&body);
        Some(h.finalize().to_hex().to_string())
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A natural end of the turn.
    EndTurn,
    /// `max_tokens` was reached.
    MaxTokens,
    /// The model asked for tool calls.
    ToolUse,
    StopSequence,
    /// Refused or filtered by the provider.
    ContentFilter,
    Other(String),
}

/// Tokens a call used, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Output tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}

/// What a chat stream yields, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamItem {
    /// A piece of the answer.
    Text { text: String },
    /// A piece of visible reasoning.
    Thinking { text: String },
    /// A complete tool call (arguments fully received).
    ToolCall { call: ToolCall },
    /// The last item of every successful stream.
    Finish {
        stop_reason: StopReason,
        usage: Usage,
    },
}

/// A whole answer, collected from a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

pub(crate) mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(text.trim())
    }

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deterministic_requests_have_cache_keys() {
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        assert_eq!(req.cache_key("openai"), None);
        req.temperature = Some(0.7);
        assert_eq!(req.cache_key("openai"), None);
        req.temperature = Some(0.0);
        let a = req.cache_key("openai").unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(Some(a.clone()), req.cache_key("anthropic"));
        req.messages.push(Message::user("more"));
        assert_ne!(Some(a), req.cache_key("openai"));
        req.temperature = Some(0.9);
        req.seed = Some(3);
        assert!(req.cache_key("openai").is_some());
    }

    #[test]
    fn tool_call_arguments_that_are_not_an_object_are_kept_raw() {
        let ok = ToolCall::from_raw("1", "f", r#"{"a": 1}"#);
        assert_eq!(ok.args["a"], 1);
        assert!(ok.invalid_arguments.is_none());
        let empty = ToolCall::from_raw("1", "f", "  ");
        assert!(empty.args.is_empty() && empty.invalid_arguments.is_none());
        let bad = ToolCall::from_raw("1", "f", r#"{"a": "#);
        assert_eq!(bad.invalid_arguments.as_deref(), Some(r#"{"a": "#));
        let list = ToolCall::from_raw("1", "f", "[1]");
        assert!(list.invalid_arguments.is_some());
    }
}
