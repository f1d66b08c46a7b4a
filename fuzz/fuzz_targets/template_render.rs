//! The text template nodes' rendering (`nodetool.text.Template`, `FormatText`: minijinja via
//! `nodetool_nodes::text::render`) with a fuzzed template and realistic variables. A template
//! is user input from a workflow, so rendering must end (fuel) with bounded output; libFuzzer's
//! `-timeout` and `-rss_limit_mb` turn a hang or a blow-up into a failure.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodetool_nodes::text::render;
use serde_json::{json, Value};

fn vars() -> &'static Value {
    static VARS: OnceLock<Value> = OnceLock::new();
    VARS.get_or_init(|| {
        json!({
            "name": "Ada",
            "count": 3,
            "ratio": 0.25,
            "flag": true,
            "none": null,
            "items": ["alpha", "beta", "gamma"],
            "nested": {"a": {"b": [1, 2, {"c": "deep"}]}},
            "text": "The quick brown fox jumps over the lazy dog",
        })
    })
}

fn run(data: &[u8]) {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(out) = render(template, vars()) {
        assert!(
            out.len() <= nodetool_nodes::text::MAX_RENDER_BYTES,
            "output of {} bytes",
            out.len()
        );
    }
}

/// Nodes and request handlers run on tokio workers: 2 MiB stacks.
const STACK: usize = 2 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || run(&data))
        .expect("spawn")
        .join()
        .expect("no panic");
});
