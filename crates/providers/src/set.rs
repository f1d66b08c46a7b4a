//! NodeTool's provider ids → clients, and the settings each needs.
//!
//! A model ref (`{"type": "language_model", "provider": "anthropic", "id": "claude-…"}`, and
//! `image_model`, `tts_model`, `asr_model`) names a provider by NodeTool's id. [`ProviderSet`]
//! turns the id into a client, reading keys and URLs through a [`Secrets`] lookup: the job's
//! secrets first, then the process settings (as NodeTool's per-user secrets beat its environment).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use nodetool_core::{Error, ErrorKind, Result};

use crate::anthropic::{Anthropic, AnthropicConfig};
use crate::contract::{ChatProvider, ImageProvider, SpeechToText, TextToSpeech};
use crate::gemini::{Gemini, GeminiConfig};
use crate::http::HttpOptions;
use crate::metrics::UsageMeter;
use crate::openai::{OpenAiCompatible, OpenAiConfig};

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

/// One provider NodeTool names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSpec {
    /// NodeTool's id (`Provider` enum value).
    pub id: &'static str,
    pub wire: Wire,
    /// The setting holding the base URL, and its default (`None`: the URL must be set).
    pub url_setting: &'static str,
    pub default_url: Option<&'static str>,
    /// The setting holding the key, and whether calls need it.
    pub key_setting: Option<&'static str>,
    pub key_required: bool,
    /// Path appended to the URL setting when it lacks it (`/v1` for OpenAI-compatible servers).
    pub api_suffix: &'static str,
}

/// Every provider with a client here, by NodeTool id.
pub const PROVIDERS: &[ProviderSpec] = &[
    ProviderSpec {
        id: "openai",
        wire: Wire::OpenAi,
        url_setting: "OPENAI_BASE_URL",
        default_url: Some("https://api.openai.com/v1"),
        key_setting: Some("OPENAI_API_KEY"),
        key_required: true,
        api_suffix: "",
    },
    ProviderSpec {
        id: "anthropic",
        wire: Wire::Anthropic,
        url_setting: "ANTHROPIC_BASE_URL",
        default_url: Some("https://api.anthropic.com"),
        key_setting: Some("ANTHROPIC_API_KEY"),
        key_required: true,
        api_suffix: "",
    },
    ProviderSpec {
        id: "gemini",
        wire: Wire::Gemini,
        url_setting: "GEMINI_BASE_URL",
        default_url: Some("https://generativelanguage.googleapis.com"),
        key_setting: Some("GEMINI_API_KEY"),
        key_required: true,
        api_suffix: "",
    },
    ProviderSpec {
        id: "ollama",
        wire: Wire::OpenAi,
        url_setting: "OLLAMA_API_URL",
        default_url: Some("http://127.0.0.1:11434"),
        key_setting: None,
        key_required: false,
        api_suffix: "/v1",
    },
    ProviderSpec {
        id: "llama_cpp",
        wire: Wire::OpenAi,
        url_setting: "LLAMA_CPP_URL",
        default_url: None,
        key_setting: None,
        key_required: false,
        api_suffix: "/v1",
    },
    ProviderSpec {
        id: "vllm",
        wire: Wire::OpenAi,
        url_setting: "VLLM_BASE_URL",
        default_url: None,
        key_setting: Some("VLLM_API_KEY"),
        key_required: false,
        api_suffix: "/v1",
    },
    ProviderSpec {
        id: "lmstudio",
        wire: Wire::OpenAi,
        url_setting: "LMSTUDIO_API_URL",
        default_url: Some("http://127.0.0.1:1234"),
        key_setting: Some("LMSTUDIO_API_KEY"),
        key_required: false,
        api_suffix: "/v1",
    },
    ProviderSpec {
        id: "openrouter",
        wire: Wire::OpenAi,
        url_setting: "OPENROUTER_BASE_URL",
        default_url: Some("https://openrouter.ai/api/v1"),
        key_setting: Some("OPENROUTER_API_KEY"),
        key_required: true,
        api_suffix: "",
    },
];

/// The spec of a NodeTool provider id.
pub fn spec(id: &str) -> Option<&'static ProviderSpec> {
    PROVIDERS.iter().find(|p| p.id == id)
}

/// Every setting a provider reads (URLs and keys), for the CLI and workers to pass along.
pub fn setting_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = PROVIDERS
        .iter()
        .flat_map(|p| std::iter::once(p.url_setting).chain(p.key_setting))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Where keys and URLs come from.
pub trait Secrets {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Secrets for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.trim().is_empty())
    }
}

/// A job's secrets over the process's settings.
#[allow(missing_debug_implementations)] // holds secrets
pub struct Layered<'a> {
    pub job: &'a dyn Secrets,
    pub process: &'a ProviderSettings,
}

impl Secrets for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.job.get(name).or_else(|| self.process.get(name))
    }
}

/// The process-level provider settings (keys and URLs by setting name) and HTTP options.
/// `Debug` shows names only.
#[derive(Clone, Default)]
pub struct ProviderSettings {
    values: BTreeMap<String, String>,
    pub http: HttpOptions,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("set", &self.values.keys().collect::<Vec<_>>())
            .field("http", &self.http)
            .finish()
    }
}

impl ProviderSettings {
    pub fn new(values: BTreeMap<String, String>, http: HttpOptions) -> Self {
        let values = values
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        Self { values, http }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }
}

/// NodeTool's model-ref types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Language,
    Image,
    Tts,
    Asr,
}

impl ModelKind {
    pub fn type_name(self) -> &'static str {
        match self {
            ModelKind::Language => "language_model",
            ModelKind::Image => "image_model",
            ModelKind::Tts => "tts_model",
            ModelKind::Asr => "asr_model",
        }
    }
}

/// A model ref's provider and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub provider: String,
    pub id: String,
}

impl ModelRef {
    /// Reads `{"type": …, "provider": …, "id": …}`; `None` when no model is selected (no
    /// provider, `empty`, or no id), which NodeTool reports as "Select a model".
    pub fn from_value(v: &Value) -> Option<ModelRef> {
        let provider = v.get("provider").and_then(Value::as_str).unwrap_or("");
        let id = v.get("id").and_then(Value::as_str).unwrap_or("");
        (!provider.is_empty() && provider != "empty" && !id.is_empty()).then(|| ModelRef {
            provider: provider.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// Clients by provider, built on demand from the settings a call sees, and the usage meter.
#[derive(Default)]
pub struct ProviderSet {
    pub settings: ProviderSettings,
    meter: Arc<UsageMeter>,
    clients: Mutex<HashMap<String, Client>>,
}

#[derive(Clone)]
enum Client {
    OpenAi(Arc<OpenAiCompatible>),
    Anthropic(Arc<Anthropic>),
    Gemini(Arc<Gemini>),
}

impl fmt::Debug for ProviderSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSet")
            .field("settings", &self.settings)
            .finish()
    }
}

impl ProviderSet {
    pub fn new(settings: ProviderSettings) -> Self {
        Self {
            settings,
            meter: Arc::new(UsageMeter::default()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Calls, tokens and cost by provider and model, for `/metrics`.
    pub fn meter(&self) -> &Arc<UsageMeter> {
        &self.meter
    }

    /// What is missing to call `provider` with these job secrets, as a message naming the
    /// setting; `None` when the provider can be called.
    pub fn missing(&self, provider: &str, job: &dyn Secrets) -> Option<String> {
        let Some(spec) = spec(provider) else {
            let known: Vec<&str> = PROVIDERS.iter().map(|p| p.id).collect();
            return Some(format!(
                "provider `{provider}` is not supported here (supported: {})",
                known.join(", ")
            ));
        };
        let s = Layered {
            job,
            process: &self.settings,
        };
        if spec.default_url.is_none() && s.get(spec.url_setting).is_none() {
            return Some(format!(
                "provider `{provider}` needs {} (the server's URL); set it in the environment, secrets.yaml or settings.yaml",
                spec.url_setting
            ));
        }
        if let Some(key) = spec.key_setting {
            let custom_url = s.get(spec.url_setting).is_some();
            // A key is needed by the hosted API; a custom OPENAI_BASE_URL may be a local server.
            let needed = spec.key_required && !(spec.id == "openai" && custom_url);
            if needed && s.get(key).is_none() {
                return Some(format!(
                    "provider `{provider}` needs {key}; set it in the environment, secrets.yaml or the job's secrets"
                ));
            }
        }
        None
    }

    fn client(&self, provider: &str, job: &dyn Secrets) -> Result<Client> {
        if let Some(why) = self.missing(provider, job) {
            return Err(Error::new(ErrorKind::ConfigInvalid, why).with_operation("providers.get"));
        }
        let spec = spec(provider).ok_or_else(|| Error::unexpected("unknown provider"))?;
        let s = Layered {
            job,
            process: &self.settings,
        };
        let url = s
            .get(spec.url_setting)
            .or_else(|| spec.default_url.map(str::to_owned))
            .unwrap_or_default();
        let mut url = url.trim_end_matches('/').to_owned();
        if !spec.api_suffix.is_empty() && !url.ends_with(spec.api_suffix) {
            url.push_str(spec.api_suffix);
        }
        let key = spec.key_setting.and_then(|k| s.get(k));
        // Clients are kept per (provider, url, key) so connections are reused across calls.
        let mut h = blake3::Hasher::new();
        for part in [provider, &url, key.as_deref().unwrap_or("")] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let cache_key = h.finalize().to_hex().to_string();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&cache_key) {
            return Ok(c.clone());
        }
        let http = self.settings.http.clone();
        let client = match spec.wire {
            Wire::OpenAi => {
                let mut config = OpenAiConfig::new(provider, url)
                    .with_key(key, spec.key_setting.unwrap_or("OPENAI_API_KEY"));
                config.http = http;
                Client::OpenAi(Arc::new(OpenAiCompatible::new(config)?))
            }
            Wire::Anthropic => Client::Anthropic(Arc::new(Anthropic::new(AnthropicConfig {
                base_url: url,
                api_key: key.unwrap_or_default(),
                http,
            })?)),
            Wire::Gemini => Client::Gemini(Arc::new(Gemini::new(GeminiConfig {
                base_url: url,
                api_key: key.unwrap_or_default(),
                http,
            })?)),
        };
        if clients.len() > 64 {
            clients.clear();
        }
        clients.insert(cache_key, client.clone());
        Ok(client)
    }

    pub fn chat(&self, provider: &str, job: &dyn Secrets) -> Result<Arc<dyn ChatProvider>> {
        Ok(match self.client(provider, job)? {
            Client::OpenAi(c) => c,
            Client::Anthropic(c) => c,
            Client::Gemini(c) => c,
        })
    }

    pub fn image(&self, provider: &str, job: &dyn Secrets) -> Result<Arc<dyn ImageProvider>> {
        match self.client(provider, job)? {
            Client::OpenAi(c) => Ok(c),
            Client::Gemini(c) => Ok(c),
            Client::Anthropic(_) => Err(unsupported(provider, "image generation")),
        }
    }

    pub fn asr(&self, provider: &str, job: &dyn Secrets) -> Result<Arc<dyn SpeechToText>> {
        match self.client(provider, job)? {
            Client::OpenAi(c) => Ok(c),
            _ => Err(unsupported(provider, "speech recognition")),
        }
    }

    pub fn tts(&self, provider: &str, job: &dyn Secrets) -> Result<Arc<dyn TextToSpeech>> {
        match self.client(provider, job)? {
            Client::OpenAi(c) => Ok(c),
            _ => Err(unsupported(provider, "text to speech")),
        }
    }

    /// Whether `provider` has a client for `kind` here (checked before a job starts).
    pub fn supports(provider: &str, kind: ModelKind) -> bool {
        match (spec(provider).map(|s| s.wire), kind) {
            (None, _) => false,
            (Some(_), ModelKind::Language) => true,
            (Some(Wire::Anthropic), _) => false,
            (Some(Wire::Gemini), ModelKind::Image) => true,
            (Some(Wire::Gemini), _) => false,
            (Some(Wire::OpenAi), _) => true,
        }
    }
}

fn unsupported(provider: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("provider `{provider}` has no {what} here; pick a model of another provider"),
    )
    .with_operation("providers.get")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn missing_settings_are_named_and_job_secrets_win() {
        let set = ProviderSet::new(ProviderSettings::default());
        let why = set.missing("anthropic", &none).unwrap();
        assert!(why.contains("ANTHROPIC_API_KEY"), "{why}");
        assert!(set
            .missing("llama_cpp", &none)
            .unwrap()
            .contains("LLAMA_CPP_URL"));
        assert!(set.missing("ollama", &none).is_none());
        assert!(set
            .missing("nope", &none)
            .unwrap()
            .contains("not supported"));
        let job = |n: &str| (n == "ANTHROPIC_API_KEY").then(|| "sk-job".to_owned());
        assert!(set.missing("anthropic", &job).is_none());
        // A custom OpenAI base URL (a local server) needs no key.
        let local = |n: &str| (n == "OPENAI_BASE_URL").then(|| "http://127.0.0.1:1/v1".to_owned());
        assert!(set.missing("openai", &local).is_none());
        assert!(set
            .missing("openai", &none)
            .unwrap()
            .contains("OPENAI_API_KEY"));
    }

    #[test]
    fn model_refs_without_a_selection_are_none() {
        assert_eq!(
            ModelRef::from_value(&serde_json::json!({"type": "language_model"})),
            None
        );
        assert_eq!(
            ModelRef::from_value(&serde_json::json!({"provider": "empty", "id": "x"})),
            None
        );
        assert_eq!(
            ModelRef::from_value(&serde_json::json!({"provider": "openai", "id": "gpt-4o"})),
            Some(ModelRef {
                provider: "openai".into(),
                id: "gpt-4o".into()
            })
        );
    }
}
