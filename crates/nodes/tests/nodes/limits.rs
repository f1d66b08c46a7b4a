//! Small inputs that would exhaust memory or CPU fail with a clear `TooLarge` (or end at the
//! job's deadline and cancellation), by class: ranges whose count overflows, lists grown by
//! chains of nodes, streams collected into one list, templates that loop or build huge text,
//! and set operations on big lists (hashed, not quadratic).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use nodetool_core::ErrorKind;
use nodetool_engine::limits::{MAX_ITEMS, MAX_TEXT_BYTES};

use nodetool_engine::{RunOptions, Status};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use common::{engine, graph, run, run_with_cancel};

/// One node `n` of `node_type` with `data`, its `output` into the output `result`.
fn one(node_type: &str, data: Value) -> nodetool_engine::Graph {
    graph(
        &[
            ("n", node_type, data),
            ("out", "nodetool.output.Output", json!({"name": "result"})),
        ],
        &[("n", "output", "out", "value")],
    )
}

async fn failure(g: nodetool_engine::Graph) -> nodetool_core::Error {
    let (outcome, _) = run(&engine().await, g, json!({}), RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Failed, "{:?}", outcome.result);
    outcome.error.unwrap()
}

#[tokio::test]
async fn ranges_are_exact_and_huge_counts_refused_without_overflow() {
    let e = engine().await;
    for (start, stop, step, want) in [
        (0i64, 10i64, 3i64, json!([0, 3, 6, 9])),
        (10, 0, -3, json!([10, 7, 4, 1])),
        (5, 5, 1, json!([])),
        (5, 0, 1, json!([])),
        (
            i64::MAX - 2,
            i64::MAX,
            1,
            json!([i64::MAX - 2, i64::MAX - 1]),
        ),
        (
            i64::MIN + 2,
            i64::MIN,
            -1,
            json!([i64::MIN + 2, i64::MIN + 1]),
        ),
        (
            i64::MIN,
            i64::MAX,
            i64::MAX,
            json!([i64::MIN, -1, i64::MAX - 1]),
        ),
    ] {
        let g = one(
            "nodetool.list.Range",
            json!({"start": start, "stop": stop, "step": step}),
        );
        let (outcome, _) = run(&e, g, json!({}), RunOptions::default()).await;
        assert_eq!(
            outcome.status,
            Status::Completed,
            "{start}..{stop}/{step}: {:?}",
            outcome.error
        );
        assert_eq!(
            outcome.result["result"],
            json!([want]),
            "{start}..{stop}/{step}"
        );
    }
    // Counts that overflow i64 arithmetic, and counts just past the cap.
    for (start, stop, step) in [
        (i64::MIN, i64::MAX, 1i64),
        (i64::MAX, i64::MIN, -1),
        (0, i64::MAX, 1),
        (0, MAX_ITEMS as i64 + 1, 1),
    ] {
        let err = failure(one(
            "nodetool.list.Range",
            json!({"start": start, "stop": stop, "step": step}),
        ))
        .await;
        assert_eq!(
            err.kind(),
            ErrorKind::TooLarge,
            "{start}..{stop}/{step}: {err}"
        );
        assert!(err.to_string().contains("range is too large"), "{err}");
    }
}

#[tokio::test]
async fn a_chain_that_doubles_a_list_stops_at_the_cap() {
    // Range(0, 300k) → Extend(x, x) → Extend(y, y) → ...: the third doubling passes the cap.
    let mut nodes = vec![(
        "r".to_owned(),
        "nodetool.list.Range",
        json!({"start": 0, "stop": 300_000, "step": 1}),
    )];
    let mut edges = Vec::new();
    let mut prev = "r".to_owned();
    for k in 0..6 {
        let id = format!("x{k}");
        nodes.push((id.clone(), "nodetool.list.Extend", json!({})));
        edges.push((prev.clone(), "output", id.clone(), "values"));
        edges.push((prev.clone(), "output", id.clone(), "other_values"));
        prev = id;
    }
    nodes.push((
        "out".to_owned(),
        "nodetool.output.Output",
        json!({"name": "result"}),
    ));
    edges.push((prev, "output", "out".to_owned(), "value"));
    let nodes: Vec<(&str, &str, Value)> = nodes
        .iter()
        .map(|(a, b, c)| (a.as_str(), *b, c.clone()))
        .collect();
    let edges: Vec<(&str, &str, &str, &str)> = edges
        .iter()
        .map(|(a, b, c, d)| (a.as_str(), *b, c.as_str(), *d))
        .collect();
    let (outcome, _) = run(
        &engine().await,
        graph(&nodes, &edges),
        json!({}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert_eq!(outcome.failed_node.as_deref(), Some("x1"), "{err}");
    assert!(
        err.to_string().contains("output \"output\" is too large"),
        "{err}"
    );
}

#[tokio::test]
async fn collecting_a_stream_stops_at_the_cap() {
    // Range → ForEach → Collect completes (200k items; millions are refused by Range) …
    let g = graph(
        &[
            (
                "r",
                "nodetool.list.Range",
                json!({"start": 0, "stop": 200_000, "step": 1}),
            ),
            ("each", "nodetool.control.ForEach", json!({})),
            ("c", "nodetool.control.Collect", json!({})),
            ("len", "nodetool.list.Length", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "result"})),
        ],
        &[
            ("r", "output", "each", "input_list"),
            ("each", "output", "c", "input_item"),
            ("c", "output", "len", "values"),
            ("len", "output", "out", "value"),
        ],
    );
    let (outcome, _) = run(&engine().await, g, json!({}), RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["result"], json!([200_000]));
    // … a stream whose items add up past the cap is refused by Collect itself, at the item
    // that crosses it, before the list is built: items 0..12000 each become a string of that
    // many bytes (72 MB in all).
    for collect in ["nodetool.control.Collect", "nodetool.text.Collect"] {
        let g = graph(
            &[
                (
                    "r",
                    "nodetool.list.Range",
                    json!({"start": 0, "stop": 12_000, "step": 1}),
                ),
                ("each", "nodetool.control.ForEach", json!({})),
                ("big", "nodetool.test.BigOutput", json!({})),
                ("c", collect, json!({})),
                ("out", "nodetool.output.Output", json!({"name": "result"})),
            ],
            &[
                ("r", "output", "each", "input_list"),
                ("each", "output", "big", "bytes"),
                ("big", "output", "c", "input_item"),
                ("c", "output", "out", "value"),
            ],
        );
        let (outcome, _) = run(&engine().await, g, json!({}), RunOptions::default()).await;
        let err = outcome.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{collect}: {err}");
        assert_eq!(
            outcome.failed_node.as_deref(),
            Some("c"),
            "{collect}: {err}"
        );
        assert!(err.to_string().contains("collected"), "{collect}: {err}");
    }
}

fn format_text(template: &str) -> nodetool_engine::Graph {
    one("nodetool.text.FormatText", json!({"template": template}))
}

#[tokio::test]
async fn templates_that_build_huge_text_are_refused() {
    for template in [
        // One huge repeat (minijinja allows 100 MB; the cap is lower).
        "{{ 'x' * 100000000 }}",
        // Many medium ones.
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    ] {
        let err = failure(format_text(template)).await;
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{template}: {err}");
        assert!(
            err.to_string().contains(&MAX_TEXT_BYTES.to_string()),
            "{template}: {err}"
        );
    }
    // Plain substitution (Template) with many placeholders and a long value.
    let placeholders = "{{v}}".repeat(10_000);
    let g = one(
        "nodetool.text.Template",
        json!({"string": placeholders, "values": {"v": "y".repeat(10_000)}}),
    );
    let err = failure(g).await;
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
}

#[tokio::test]
async fn ordinary_templates_render() {
    let (outcome, _) = run(
        &engine().await,
        format_text("{% for i in range(3) %}{{ i }},{% endfor %}"),
        json!({}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(outcome.result["result"], json!(["0,1,2,"]));
}

const SPIN: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_template_ends_at_the_deadline_and_on_cancel() {
    let e = engine().await;
    let opts = RunOptions {
        job_timeout: Some(Duration::from_secs(1)),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let (outcome, _) = run(&e, format_text(SPIN), json!({}), opts).await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );

    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.cancel();
    });
    let (outcome, _) = run_with_cancel(
        &e,
        format_text(SPIN),
        json!({}),
        RunOptions::default(),
        cancel,
    )
    .await;
    assert_eq!(outcome.status, Status::Cancelled, "{:?}", outcome.error);
}

#[tokio::test]
async fn set_operations_hash_and_keep_python_equality() {
    let e = engine().await;
    let items = json!([1, 1.0, 1, {"a": 1, "b": 2}, {"b": 2, "a": 1}, 0.0, -0.0, "1", [1], [1]]);
    let (outcome, _) = run(
        &e,
        one("nodetool.list.Dedupe", json!({"values": items})),
        json!({}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(
        outcome.result["result"],
        json!([[1, 1.0, {"a": 1, "b": 2}, 0.0, "1", [1]]])
    );
    let g = graph(
        &[
            (
                "n",
                "nodetool.list.Intersection",
                json!({"list1": [3, 1, 2, 1], "list2": [1, 3]}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "result"})),
        ],
        &[("n", "output", "out", "value")],
    );
    let (outcome, _) = run(&e, g, json!({}), RunOptions::default()).await;
    assert_eq!(outcome.result["result"], json!([[3, 1]]));
    // 400,000 distinct items: quadratic would be 10^11 comparisons; hashed, it is quick.
    let g = graph(
        &[
            (
                "r",
                "nodetool.list.Range",
                json!({"start": 0, "stop": 400_000, "step": 1}),
            ),
            ("d", "nodetool.list.Dedupe", json!({})),
            ("len", "nodetool.list.Length", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "result"})),
        ],
        &[
            ("r", "output", "d", "values"),
            ("d", "output", "len", "values"),
            ("len", "output", "out", "value"),
        ],
    );
    let (outcome, _) = run(&e, g, json!({}), RunOptions::default()).await;
    assert_eq!(
        outcome.result["result"],
        json!([400_000]),
        "{:?}",
        outcome.error
    );
}
