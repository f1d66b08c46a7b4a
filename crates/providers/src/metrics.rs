//! Calls, tokens and cost per provider and model, kept for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::types::Usage;

/// Totals of one (provider, model, kind).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageTotals {
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    /// NodeTool credits.
    pub cost: f64,
}

/// The process's provider usage. Cheap to update (one short lock per call).
#[derive(Debug, Default)]
pub struct UsageMeter {
    totals: Mutex<BTreeMap<(String, String), UsageTotals>>,
}

impl UsageMeter {
    /// Records one finished call.
    pub fn record(&self, provider: &str, model: &str, usage: &Usage, cost: f64) {
        let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let e = t
            .entry((provider.to_owned(), model.to_owned()))
            .or_default();
        e.calls += 1;
        e.input_tokens += usage.input_tokens;
        e.output_tokens += usage.output_tokens;
        e.cached_tokens += usage.cached_tokens;
        e.cost += cost;
    }

    /// Records one failed call.
    pub fn record_error(&self, provider: &str, model: &str) {
        let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        t.entry((provider.to_owned(), model.to_owned()))
            .or_default()
            .errors += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), UsageTotals> {
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Prometheus text: `nodetool_provider_calls_total`, `…_errors_total`, `…_tokens_total`
    /// (`direction` input/output/cached) and `…_cost_credits_total`, by provider and model.
    pub fn render_prometheus(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(out, "# HELP nodetool_provider_calls_total Model calls that finished, by provider and model.");
        let _ = writeln!(out, "# TYPE nodetool_provider_calls_total counter");
        for ((p, m), t) in &snap {
            let _ = writeln!(
                out,
                "nodetool_provider_calls_total{{provider=\"{}\",model=\"{}\"}} {}",
                esc(p),
                esc(m),
                t.calls
            );
        }
        let _ = writeln!(
            out,
            "# HELP nodetool_provider_errors_total Model calls that failed, by provider and model."
        );
        let _ = writeln!(out, "# TYPE nodetool_provider_errors_total counter");
        for ((p, m), t) in &snap {
            let _ = writeln!(
                out,
                "nodetool_provider_errors_total{{provider=\"{}\",model=\"{}\"}} {}",
                esc(p),
                esc(m),
                t.errors
            );
        }
        let _ = writeln!(
            out,
            "# HELP nodetool_provider_tokens_total Tokens reported by providers."
        );
        let _ = writeln!(out, "# TYPE nodetool_provider_tokens_total counter");
        for ((p, m), t) in &snap {
            for (dir, n) in [
                ("input", t.input_tokens),
                ("output", t.output_tokens),
                ("cached", t.cached_tokens),
            ] {
                let _ = writeln!(out, "nodetool_provider_tokens_total{{provider=\"{}\",model=\"{}\",direction=\"{dir}\"}} {n}", esc(p), esc(m));
            }
        }
        let _ = writeln!(out, "# HELP nodetool_provider_cost_credits_total Cost of model calls in NodeTool credits (1 credit = $0.01).");
        let _ = writeln!(out, "# TYPE nodetool_provider_cost_credits_total counter");
        for ((p, m), t) in &snap {
            let _ = writeln!(
                out,
                "nodetool_provider_cost_credits_total{{provider=\"{}\",model=\"{}\"}} {}",
                esc(p),
                esc(m),
                t.cost
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_provider_and_model() {
        let m = UsageMeter::default();
        let u = Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Usage::default()
        };
        m.record("openai", "gpt-4o", &u, 0.5);
        m.record("openai", "gpt-4o", &u, 0.5);
        m.record_error("openai", "gpt-4o");
        let text = m.render_prometheus();
        assert!(
            text.contains("nodetool_provider_calls_total{provider=\"openai\",model=\"gpt-4o\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("nodetool_provider_errors_total{provider=\"openai\",model=\"gpt-4o\"} 1")
        );
        assert!(text.contains("direction=\"output\"} 8"));
        assert!(text.contains(
            "nodetool_provider_cost_credits_total{provider=\"openai\",model=\"gpt-4o\"} 1"
        ));
    }
}
