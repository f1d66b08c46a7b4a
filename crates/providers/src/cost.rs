//! Cost of a call in NodeTool credits (1 credit = $0.01), with NodeTool's per-1k-token rates for
//! the hosted chat models it prices. Local servers (llama.cpp, Ollama, vLLM, LM Studio) and
//! models it does not price cost 0.

use crate::types::Usage;

/// (provider, model prefix, input, output, cached) credits per 1k tokens; the longest matching
/// prefix wins.
const RATES: &[(&str, &str, f64, f64, f64)] = &[
    ("openai", "gpt-5", 0.002625, 0.021, 0.0002625),
    ("openai", "gpt-5-mini", 0.000375, 0.003, 0.0000375),
    ("openai", "gpt-5.2-pro", 0.0315, 0.252, 0.0),
    ("openai", "gpt-4.1", 0.0045, 0.018, 0.001125),
    ("openai", "gpt-4.1-mini", 0.0012, 0.0048, 0.0003),
    ("openai", "gpt-4.1-nano", 0.0003, 0.0012, 0.000075),
    ("openai", "o4-mini", 0.006, 0.024, 0.0015),
    ("openai", "o1", 2.25, 9.0, 0.0),
    ("openai", "o1-mini", 0.45, 1.8, 0.0),
    ("openai", "o3", 2.25, 9.0, 0.0),
    ("openai", "o3-mini", 0.45, 1.8, 0.0),
    ("openai", "gpt-4o", 0.375, 1.5, 0.0),
    ("openai", "gpt-4o-mini", 0.0225, 0.09, 0.0),
    ("openai", "gpt-4-turbo", 1.5, 6.0, 0.0),
    ("anthropic", "claude-opus-4", 0.045, 0.15, 0.0),
    ("anthropic", "claude-sonnet-4", 0.0075, 0.0375, 0.0),
    ("anthropic", "claude-haiku-4", 0.00225, 0.0075, 0.0),
    ("anthropic", "claude-3-7-sonnet", 0.009, 0.027, 0.0),
    ("anthropic", "claude-3-5-sonnet", 0.0075, 0.0225, 0.0),
    ("anthropic", "claude-3-5-haiku", 0.0015, 0.006, 0.0),
    ("anthropic", "claude-3-opus", 0.045, 0.15, 0.0),
    ("anthropic", "claude-3-haiku", 0.000375, 0.0015, 0.0),
];

/// Credits for a chat call of `model` at `provider` that used `usage`.
pub fn chat_cost(provider: &str, model: &str, usage: &Usage) -> f64 {
    let best = RATES
        .iter()
        .filter(|(p, prefix, ..)| *p == provider && model.starts_with(prefix))
        .max_by_key(|(_, prefix, ..)| prefix.len());
    let Some((_, _, input, output, cached)) = best else {
        return 0.0;
    };
    let uncached = usage.input_tokens.saturating_sub(usage.cached_tokens) as f64;
    (uncached * input + usage.cached_tokens as f64 * cached + usage.output_tokens as f64 * output)
        / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_prices_and_local_models_are_free() {
        let u = Usage {
            input_tokens: 1000,
            output_tokens: 1000,
            ..Usage::default()
        };
        assert!((chat_cost("openai", "gpt-4o-mini-2024-07-18", &u) - 0.1125).abs() < 1e-9);
        assert!((chat_cost("openai", "gpt-4o", &u) - 1.875).abs() < 1e-9);
        assert_eq!(chat_cost("llama_cpp", "gpt-4o", &u), 0.0);
        assert_eq!(chat_cost("anthropic", "unknown", &u), 0.0);
    }
}
