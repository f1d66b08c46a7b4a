//! The provider contracts: chat, image generation, speech-to-text and text-to-speech.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use nodetool_core::{Error, ErrorKind, Result};

use crate::types::{ChatRequest, ChatResponse, Media, StopReason, StreamItem, Usage};

/// A stream of a chat answer.
pub type ChatStream = BoxStream<'static, Result<StreamItem>>;

/// A chat model server.
///
/// **MUST**
/// - `stream` sends the request and yields the answer as it arrives: [`StreamItem::Text`] and
///   [`StreamItem::Thinking`] deltas in order, each [`StreamItem::ToolCall`] once its arguments
///   are complete, and exactly one [`StreamItem::Finish`] (stop reason and usage) as the last
///   item of a successful stream.
/// - A stream that ends without the provider's end marker is an error
///   (`Unavailable`, "truncated"), never a silent short answer.
/// - Tool-call arguments that are not a JSON object come back as a call with
///   `invalid_arguments` set, not as an error: the caller answers the model.
/// - Dropping the stream (or the future) cancels the request: no work goes on in the
///   background and no retry starts after the drop.
/// - Errors are `nodetool_core::Error` with a kind: `RateLimited` (429, after the configured
///   retries, honouring `retry-after`), `Unavailable` (5xx, connection, truncation),
///   `Timeout` (connect or idle), `PermissionDenied` (the message names the setting holding
///   the key), `InvalidInput` (bad request, a model that does not exist), `TooLarge` (the
///   stream exceeded the byte cap). Transient ones are marked temporary.
/// - Secrets (API keys) never appear in errors, `Debug` output or logs.
///
/// **SHOULD**
/// - retry transient failures that happen before the first byte of the answer, with backoff;
///   never retry once part of an answer was yielded.
/// - report usage when the provider gives it (zeros otherwise).
#[async_trait]
pub trait ChatProvider: Send + Sync + fmt::Debug {
    /// NodeTool's provider id, e.g. `openai`, `llama_cpp`, `anthropic`.
    fn provider_id(&self) -> &str;

    async fn stream(&self, request: ChatRequest) -> Result<ChatStream>;

    /// The whole answer; the default collects [`stream`](Self::stream).
    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse> {
        collect(self.stream(request).await?).await
    }
}

/// Collects a stream into one answer; a stream without `Finish` is an error.
pub async fn collect(mut stream: ChatStream) -> Result<ChatResponse> {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut tool_calls = Vec::new();
    while let Some(item) = stream.next().await {
        match item? {
            StreamItem::Text { text: t } => text.push_str(&t),
            StreamItem::Thinking { text: t } => thinking.push_str(&t),
            StreamItem::ToolCall { call } => tool_calls.push(call),
            StreamItem::Finish { stop_reason, usage } => {
                return Ok(ChatResponse {
                    text,
                    thinking,
                    tool_calls,
                    stop_reason,
                    usage,
                })
            }
        }
    }
    Err(truncated("the answer stream ended without a finish"))
}

pub(crate) fn truncated(why: &str) -> Error {
    Error::new(ErrorKind::Unavailable, format!("truncated response: {why}"))
        .with_operation("provider.stream")
}

/// Parameters of a text-to-image call (NodeTool's `TextToImageParams`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextToImageParams {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    /// `None` or negative: the provider picks.
    pub seed: Option<i64>,
    pub guidance_scale: Option<f64>,
    pub num_inference_steps: Option<u32>,
}

/// Parameters of an image-to-image call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageToImageParams {
    pub image: Media,
    pub text: TextToImageParams,
    /// How far the result may move from the input, 0..1.
    pub strength: Option<f64>,
}

/// An image the provider made.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    pub bytes: Bytes,
    pub mime_type: String,
    pub usage: Usage,
}

/// An image model server.
///
/// **MUST** return the image bytes (decoded, never a base64 text) with their content type;
/// map errors as [`ChatProvider`] does; never leak keys; dropping the future cancels the call.
/// **SHOULD** honour `width`/`height` (rounding to the nearest size the model accepts) and
/// `seed` when the model supports them.
#[async_trait]
pub trait ImageProvider: Send + Sync + fmt::Debug {
    fn provider_id(&self) -> &str;

    async fn text_to_image(&self, params: TextToImageParams) -> Result<GeneratedImage>;

    /// Default: `Unsupported`, naming the provider.
    async fn image_to_image(&self, params: ImageToImageParams) -> Result<GeneratedImage> {
        let _ = params;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "provider {} cannot edit images; pick an image model of another provider",
                self.provider_id()
            ),
        )
        .with_operation("provider.image_to_image"))
    }
}

/// A transcription request.
#[derive(Debug, Clone, PartialEq)]
pub struct AsrRequest {
    pub model: String,
    pub audio: Bytes,
    pub mime_type: String,
    /// ISO-639-1, or `None` to detect.
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: Option<f64>,
}

/// A timed piece of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsrChunk {
    pub timestamp: (f64, f64),
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AsrResult {
    pub text: String,
    pub chunks: Vec<AsrChunk>,
    pub usage: Usage,
    /// Seconds of audio, when the provider says.
    pub duration: Option<f64>,
}

/// A speech-to-text server.
///
/// **MUST** send the audio as given (no re-encoding), return the transcript text, map errors as
/// [`ChatProvider`] does and never leak keys. **SHOULD** return timed chunks when the provider
/// gives them.
#[async_trait]
pub trait SpeechToText: Send + Sync + fmt::Debug {
    fn provider_id(&self) -> &str;

    async fn transcribe(&self, request: AsrRequest) -> Result<AsrResult>;
}

/// A speech request.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsRequest {
    pub model: String,
    pub text: String,
    pub voice: String,
    pub speed: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    pub audio: Bytes,
    pub mime_type: String,
}

/// A text-to-speech server.
///
/// **MUST** return the whole encoded clip with its content type, refuse empty text with
/// `InvalidInput`, map errors as [`ChatProvider`] does and never leak keys.
#[async_trait]
pub trait TextToSpeech: Send + Sync + fmt::Debug {
    fn provider_id(&self) -> &str;

    async fn speak(&self, request: TtsRequest) -> Result<Speech>;
}

/// The stop reason of a collected answer, for events and logs.
pub fn stop_reason_str(reason: &StopReason) -> &str {
    match reason {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ToolUse => "tool_use",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ContentFilter => "content_filter",
        StopReason::Other(s) => s,
    }
}

/// A provider's stream decoder: the next item, `None` at the end.
#[async_trait]
pub(crate) trait Decode: Send + 'static {
    async fn next_item(&mut self) -> Result<Option<StreamItem>>;
}

/// The stream of a decoder; it ends after the first error.
pub(crate) fn decoded<D: Decode>(decoder: D) -> ChatStream {
    futures::stream::unfold((decoder, false), |(mut d, failed)| async move {
        if failed {
            return None;
        }
        match d.next_item().await {
            Ok(Some(item)) => Some((Ok(item), (d, false))),
            Ok(None) => None,
            Err(e) => Some((Err(e), (d, true))),
        }
    })
    .boxed()
}
