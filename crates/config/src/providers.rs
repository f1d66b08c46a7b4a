//! The AI provider block of the settings, handed to `nodetool-providers` as plain values (the
//! providers crate never reads settings itself).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::settings::Settings;

/// Provider URL/key settings, by the names NodeTool uses.
pub const PROVIDER_SETTINGS: &[&str] = &[
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GEMINI_BASE_URL",
    "OLLAMA_API_URL",
    "LLAMA_CPP_URL",
    "VLLM_BASE_URL",
    "VLLM_API_KEY",
    "LMSTUDIO_API_URL",
    "LMSTUDIO_API_KEY",
    "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL",
    "SERPAPI_API_KEY",
];

/// What the providers need from the settings. `Debug` lists names, never values.
#[derive(Clone, PartialEq)]
pub struct ProviderValues {
    /// Set provider settings (defaults included), by name.
    pub values: BTreeMap<String, String>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_retries: u32,
    pub max_response_bytes: u64,
    /// `NODETOOL_MODEL_OVERRIDE` items (`type=provider:model`).
    pub model_overrides: Vec<String>,
}

impl std::fmt::Debug for ProviderValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderValues")
            .field("set", &self.values.keys().collect::<Vec<_>>())
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("model_overrides", &self.model_overrides)
            .finish()
    }
}

impl Settings {
    /// The provider block, validated at load like every setting.
    pub fn provider_values(&self) -> ProviderValues {
        let raw = |name: &str| self.entry(name).and_then(|e| e.value);
        let values = PROVIDER_SETTINGS
            .iter()
            .filter_map(|n| raw(n).map(|v| ((*n).to_owned(), v)))
            .collect();
        let seconds = |name: &str, default: u64| {
            raw(name)
                .and_then(|v| crate::parse::seconds(&v).ok())
                .unwrap_or(Duration::from_secs(default))
        };
        ProviderValues {
            values,
            connect_timeout: seconds("NODETOOL_AI_CONNECT_TIMEOUT", 10),
            idle_timeout: seconds("NODETOOL_AI_IDLE_TIMEOUT", 120),
            max_retries: raw("NODETOOL_AI_MAX_RETRIES")
                .and_then(|v| v.parse::<i64>().ok())
                .map_or(2, |n| n.clamp(0, 10) as u32),
            max_response_bytes: raw("NODETOOL_AI_MAX_RESPONSE_BYTES")
                .and_then(|v| crate::parse::size(&v).ok())
                .unwrap_or(64 * 1024 * 1024),
            model_overrides: raw("NODETOOL_MODEL_OVERRIDE")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
