//! AI providers: the contracts NodeTool's AI nodes call, and clients that speak to real servers.
//!
//! - [`ChatProvider`] (messages with text, image and audio parts; tools; streamed deltas, tool
//!   calls, usage and stop reasons; cancellation by drop), [`ImageProvider`], [`SpeechToText`],
//!   [`TextToSpeech`]: each trait documents its MUST/SHOULD contract.
//! - [`openai::OpenAiCompatible`]: OpenAI, Ollama, llama.cpp, vLLM, LM Studio, OpenRouter.
//! - [`anthropic::Anthropic`]: the Messages API. [`gemini::Gemini`]: the Gemini API.
//! - [`ProviderSet`]: NodeTool provider ids → clients, built from keys and URLs looked up job
//!   secrets first, then process settings; [`ProviderSet::missing`] names the setting a call
//!   lacks, so a node can refuse before its job starts.
//! - [`HttpOptions`]: connect/idle timeouts, retries with backoff honouring `retry-after` and
//!   rate-limit headers, a hard cap on response bytes.
//!
//! This crate never reads the environment (settings come in as [`ProviderSettings`]) and never
//! names the engine: nodes adapt it to `ProcessingContext`.

pub mod anthropic;
pub mod contract;
pub mod cost;
pub mod gemini;
pub mod http;
pub mod metrics;
pub mod openai;
pub mod set;
pub mod types;

pub use contract::{
    collect, AsrChunk, AsrRequest, AsrResult, ChatProvider, ChatStream, GeneratedImage,
    ImageProvider, ImageToImageParams, Speech, SpeechToText, TextToImageParams, TextToSpeech,
    TtsRequest,
};
pub use http::HttpOptions;
pub use metrics::{UsageMeter, UsageTotals};
pub use set::{
    setting_names, spec, Layered, ModelKind, ModelRef, ProviderSet, ProviderSettings, ProviderSpec,
    Secrets, PROVIDERS,
};
pub use types::{
    ChatRequest, ChatResponse, Media, Message, Part, ResponseFormat, Role, StopReason, StreamItem,
    ToolCall, ToolChoice, ToolSpec, Usage,
};
