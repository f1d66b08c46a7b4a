//! Runner semantics: DAGs, on_any vs zip_all, streaming, fail-fast, cancellation, timeouts,
//! caching, panics, params.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use nodetool_core::{ErrorKind, Result};
use nodetool_engine::{
    Emitter, Event, EventEnvelope, NodeImpl, NodeInputs, NodeSpec, ProcessingContext, Registry,
    RunOptions, RunRequest, Status,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn diamond_dag_joins_both_branches() {
    let g = graph(
        &[
            ("n", "nodetool.constant.Integer", json!({"value": 5})),
            ("add", "nodetool.math.Add", json!({"b": 1})),
            ("mul", "nodetool.math.Multiply", json!({"b": 2})),
            ("sum", "nodetool.math.Add", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "r"})),
        ],
        &[
            ("n", "output", "add", "a"),
            ("n", "output", "mul", "a"),
            ("add", "output", "sum", "a"),
            ("mul", "output", "sum", "b"),
            ("sum", "output", "out", "value"),
        ],
    );
    let (o, events) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(Value::Object(o.result), json!({"r": [16]}));
    // The join fired once, after both branches.
    assert_eq!(node_statuses(&events, "sum"), vec!["running", "completed"]);
}

fn foreach_format(mode: &str) -> nodetool_engine::Graph {
    let g = graph(
        &[
            (
                "lst",
                "nodetool.constant.List",
                json!({"value": ["a", "b", "c"]}),
            ),
            ("fe", "nodetool.control.ForEach", json!({})),
            (
                "fmt",
                "nodetool.text.FormatText",
                json!({"template": "{{ index }}:{{ item }}"}),
            ),
            ("col", "nodetool.control.Collect", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "pairs"})),
        ],
        &[
            ("lst", "output", "fe", "input_list"),
            ("fe", "output", "fmt", "item"),
            ("fe", "index", "fmt", "index"),
            ("fmt", "output", "col", "input_item"),
            ("col", "output", "out", "value"),
        ],
    );
    with_sync_mode(with_dynamic(g, "fmt", &["index", "item"]), "fmt", mode)
}

#[tokio::test]
async fn on_any_fires_on_every_arrival_after_the_first_full_set() {
    let (o, _) = run(
        &engine().await,
        foreach_format("on_any"),
        Value::Null,
        RunOptions::default(),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    // 2N-1 firings for two streamed inputs of one ForEach, with the latest value of each.
    assert_eq!(
        Value::Object(o.result),
        json!({"pairs": [["0:a", "0:b", "1:b", "1:c", "2:c"]]})
    );
}

#[tokio::test]
async fn zip_all_fires_once_per_aligned_set() {
    let (o, events) = run(
        &engine().await,
        foreach_format("zip_all"),
        Value::Null,
        RunOptions::default(),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(
        Value::Object(o.result),
        json!({"pairs": [["0:a", "1:b", "2:c"]]})
    );
    assert_eq!(
        node_statuses(&events, "fmt"),
        ["running", "completed"].repeat(3)
    );
}

#[tokio::test]
async fn zip_all_reuses_non_streaming_inputs() {
    // `sep` comes from a constant (not a stream): it is sticky and reused for every item.
    let g = graph(
        &[
            ("gen", "nodetool.test.Generate", json!({"count": 4})),
            ("sep", "nodetool.constant.String", json!({"value": "#"})),
            (
                "fmt",
                "nodetool.text.FormatText",
                json!({"template": "{{ s }}{{ n }}"}),
            ),
            ("col", "nodetool.control.Collect", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "o"})),
        ],
        &[
            ("gen", "output", "fmt", "n"),
            ("sep", "output", "fmt", "s"),
            ("fmt", "output", "col", "input_item"),
            ("col", "output", "out", "value"),
        ],
    );
    let g = with_sync_mode(with_dynamic(g, "fmt", &["n", "s"]), "fmt", "zip_all");
    let (o, _) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
    assert_eq!(
        Value::Object(o.result),
        json!({"o": [["#0", "#1", "#2", "#3"]]})
    );
}

#[tokio::test]
async fn streams_flow_through_foreach_and_collect_with_backpressure() {
    let g = graph(
        &[
            ("gen", "nodetool.test.Generate", json!({"count": 500})),
            ("add", "nodetool.math.Add", json!({"b": 1000})),
            ("col", "nodetool.control.Collect", json!({})),
            ("fe", "nodetool.control.ForEach", json!({})),
            ("col2", "nodetool.control.Collect", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "items"})),
            ("last", "nodetool.output.Output", json!({"name": "each"})),
        ],
        &[
            ("gen", "output", "add", "a"),
            ("add", "output", "col", "input_item"),
            ("col", "output", "fe", "input_list"),
            ("fe", "output", "col2", "input_item"),
            ("col2", "output", "out", "value"),
            ("fe", "index", "last", "value"),
        ],
    );
    let opts = RunOptions {
        inbox_capacity: 2,
        ..RunOptions::default()
    };
    let (o, events) = run(&engine().await, g, Value::Null, opts).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let want: Vec<Value> = (1000..1500).map(Value::from).collect();
    assert_eq!(o.result["items"], json!([want]));
    // Every streamed item reached the second output, one output_update each.
    let each: Vec<Value> = (0..500).map(Value::from).collect();
    assert_eq!(o.result["each"], Value::Array(each));
    let counters = per_edge_counters(&to_values(&events));
    assert_eq!(counters["e1"].len(), 500);
    assert_eq!(counters["e1"], (1..=500).collect::<Vec<u64>>());
}

#[tokio::test]
async fn first_failure_cancels_the_rest_and_fails_the_job() {
    let g = graph(
        &[
            (
                "bad",
                "nodetool.test.Fail",
                json!({"message": "boom at step 3"}),
            ),
            (
                "slow",
                "nodetool.test.Sleep",
                json!({"seconds": 600, "value": 1}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "o"})),
        ],
        &[("slow", "output", "out", "value")],
    );
    let opts = RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };
    let (o, events) = run(&engine().await, g, Value::Null, opts).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("bad"));
    let err = o.error.unwrap();
    assert!(err.to_string().contains("boom at step 3"), "{err}");
    assert_eq!(node_statuses(&events, "bad"), vec!["running", "failed"]);
    assert_eq!(node_statuses(&events, "slow"), vec!["running", "cancelled"]);
    let last = to_values(&events).pop().unwrap();
    assert_eq!(last["type"], "job_update");
    assert_eq!(last["status"], "failed");
    assert!(
        last["error"].as_str().unwrap().contains("node bad"),
        "{last}"
    );
}

#[tokio::test]
async fn cancellation_reaches_a_sleeping_node() {
    let g = graph(
        &[("slow", "nodetool.test.Sleep", json!({"seconds": 600}))],
        &[],
    );
    let engine = engine().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EventEnvelope>();
    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(e) = rx.recv().await {
                if let Event::NodeUpdate(n) = &e.event {
                    if n.status == Status::Running {
                        cancel.cancel();
                    }
                }
                seen.push(e);
            }
            seen
        })
    };
    let opts = RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };
    let o = engine
        .run(RunRequest::new(g), opts, Arc::new(tx), cancel)
        .await;
    assert_eq!(o.status, Status::Cancelled);
    assert!(o.error.is_none());
    let seen = watcher.await.unwrap();
    let Event::JobUpdate(last) = &seen.last().unwrap().event else {
        panic!("last event is not a job_update")
    };
    assert_eq!(last.status, Status::Cancelled);
}

#[tokio::test]
async fn node_timeout_fails_the_job_with_a_timeout() {
    let g = graph(
        &[("slow", "nodetool.test.Sleep", json!({"seconds": 600}))],
        &[],
    );
    let opts = RunOptions {
        use_cache: false,
        node_timeout: Some(Duration::from_millis(50)),
        ..RunOptions::default()
    };
    let (o, _) = run(&engine().await, g, Value::Null, opts).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("slow"));
    assert_eq!(o.error.unwrap().kind(), ErrorKind::Timeout);
}

#[tokio::test]
async fn job_timeout_stops_every_node() {
    let g = graph(
        &[
            ("a", "nodetool.test.Sleep", json!({"seconds": 600})),
            ("b", "nodetool.test.Sleep", json!({"seconds": 601})),
        ],
        &[],
    );
    let opts = RunOptions {
        use_cache: false,
        job_timeout: Some(Duration::from_millis(50)),
        ..RunOptions::default()
    };
    let (o, events) = run(&engine().await, g, Value::Null, opts).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node, None);
    assert_eq!(o.error.unwrap().kind(), ErrorKind::Timeout);
    assert_eq!(node_statuses(&events, "a"), vec!["running", "cancelled"]);
    assert_eq!(node_statuses(&events, "b"), vec!["running", "cancelled"]);
}

/// Counts its runs; cacheable.
#[derive(Debug)]
struct Counting {
    spec: NodeSpec,
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl NodeImpl for Counting {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    async fn process(
        &self,
        _: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        out.emit("output", json!(format!("seen {}", i.text("x"))))
            .await
    }
}

fn counting_registry(runs: &Arc<AtomicUsize>) -> Registry {
    let mut r = nodetool_nodes::registry();
    r.register(Arc::new(Counting {
        spec: NodeSpec::new("test.Counting", "Counting")
            .input("x", "any", Value::Null)
            .output("output", "str")
            .cacheable(),
        runs: runs.clone(),
    }));
    r
}

#[tokio::test]
async fn second_run_hits_the_node_cache() {
    let runs = Arc::new(AtomicUsize::new(0));
    let engine = engine_with(counting_registry(&runs)).await;
    let g = graph(
        &[
            (
                "in",
                "nodetool.input.StringInput",
                json!({"name": "x", "value": "v"}),
            ),
            ("c", "test.Counting", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "o"})),
        ],
        &[("in", "output", "c", "x"), ("c", "output", "out", "value")],
    );
    let salt = nodetool_core::id::new_id(); // a key no other test run has used
    let params = json!({"x": salt});
    let (first, _) = run(&engine, g.clone(), params.clone(), RunOptions::default()).await;
    let (second, _) = run(&engine, g.clone(), params.clone(), RunOptions::default()).await;
    assert_eq!(first.result, second.result);
    assert_eq!(second.result["o"], json!([format!("seen {salt}")]));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the second run must come from the cache"
    );

    // Other inputs miss; --no-cache never reads it.
    run(
        &engine,
        g.clone(),
        json!({"x": "other"}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let no_cache = RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };
    run(&engine, g, params, no_cache).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_panicking_node_fails_only_its_job() {
    let engine = engine().await;
    let g = graph(
        &[("p", "nodetool.test.Panic", json!({"message": "kaboom"}))],
        &[],
    );
    let (o, events) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("p"));
    assert!(o
        .error
        .unwrap()
        .to_string()
        .contains("node panicked: kaboom"));
    assert_eq!(node_statuses(&events, "p"), vec!["running", "failed"]);

    // The engine (and process) keep working.
    let ok = graph(
        &[
            (
                "s",
                "nodetool.constant.String",
                json!({"value": "still here"}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "o"})),
        ],
        &[("s", "output", "out", "value")],
    );
    let (o, _) = run(&engine, ok, Value::Null, RunOptions::default()).await;
    assert_eq!(Value::Object(o.result), json!({"o": ["still here"]}));
}

#[tokio::test]
async fn params_replace_input_values_and_wrong_types_are_refused() {
    let g = graph(
        &[
            (
                "n",
                "nodetool.input.IntegerInput",
                json!({"name": "n", "value": 1, "min": 0, "max": 10}),
            ),
            (
                "t",
                "nodetool.input.StringInput",
                json!({"name": "t", "value": "x"}),
            ),
            ("mul", "nodetool.math.Multiply", json!({"b": 3})),
            ("out", "nodetool.output.Output", json!({"name": "o"})),
            ("out2", "nodetool.output.Output", json!({"name": "t"})),
        ],
        &[
            ("n", "output", "mul", "a"),
            ("mul", "output", "out", "value"),
            ("t", "output", "out2", "value"),
        ],
    );
    let engine = engine().await;
    // min/max are UI hints, not enforced; unknown params are ignored.
    let (o, _) = run(
        &engine,
        g.clone(),
        json!({"n": 50, "nope": 1}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(Value::Object(o.result), json!({"o": [150], "t": ["x"]}));

    let (o, events) = run(
        &engine,
        g,
        json!({"n": "fifty", "t": 3}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(o.status, Status::Failed);
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains("param `n` must be int"), "{msg}");
    assert!(msg.contains("param `t` must be str"), "{msg}");
    // Nothing ran.
    assert!(to_values(&events).iter().all(|e| e["type"] == "job_update"));
}

#[tokio::test]
async fn if_routes_by_condition_only() {
    for (cond, want) in [(true, json!({"yes": ["v"]})), (false, json!({"no": ["v"]}))] {
        let g = graph(
            &[
                ("c", "nodetool.constant.Bool", json!({"value": cond})),
                ("v", "nodetool.constant.String", json!({"value": "v"})),
                ("if", "nodetool.control.If", json!({})),
                ("t", "nodetool.text.ToUppercase", json!({})),
                ("yes", "nodetool.output.Output", json!({"name": "yes"})),
                ("no", "nodetool.output.Output", json!({"name": "no"})),
            ],
            &[
                ("v", "output", "if", "value"),
                ("c", "output", "if", "condition"),
                ("if", "if_true", "yes", "value"),
                ("if", "if_false", "no", "value"),
            ],
        );
        let (o, _) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
        assert_eq!(Value::Object(o.result), want);
    }
}

#[tokio::test]
async fn progress_events_and_text_library() {
    let g = graph(
        &[
            ("p", "nodetool.test.Progress", json!({"steps": 4})),
            (
                "tpl",
                "nodetool.text.Template",
                json!({"string": "{% for k in value %}{{ k }};{% endfor %}", "values": ["a", "b"]}),
            ),
            (
                "d",
                "nodetool.constant.Dict",
                json!({"value": {"name": "Ada"}}),
            ),
            (
                "t2",
                "nodetool.text.Template",
                json!({"string": "hi {{ name }}"}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "steps"})),
            ("out2", "nodetool.output.Output", json!({"name": "tpl"})),
            ("out3", "nodetool.output.Output", json!({"name": "hi"})),
        ],
        &[
            ("p", "output", "out", "value"),
            ("tpl", "output", "out2", "value"),
            ("d", "output", "t2", "values"),
            ("t2", "output", "out3", "value"),
        ],
    );
    let (o, events) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
    // NodeTool's Template (nodetool-base 50bbc4e, recorded with the Python original, and the
    // TypeScript node) substitutes `{{ key }}` of a dict's keys and renders no Jinja2: a list
    // `values` is ignored and the template comes out as written (FormatText renders Jinja2).
    assert_eq!(
        Value::Object(o.result),
        json!({"steps": [4], "tpl": ["{% for k in value %}{{ k }};{% endfor %}"], "hi": ["hi Ada"]})
    );
    let progress: Vec<(i64, i64)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::NodeProgress(p) => Some((p.progress, p.total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
}

#[tokio::test]
async fn context_creates_and_reads_assets() {
    // A node that stores bytes as an asset and reads them back through the ref.
    #[derive(Debug)]
    struct Roundtrip(NodeSpec);
    #[async_trait]
    impl NodeImpl for Roundtrip {
        fn spec(&self) -> &NodeSpec {
            &self.0
        }
        async fn process(
            &self,
            ctx: &ProcessingContext,
            _: &NodeInputs,
            out: &mut Emitter,
        ) -> Result<()> {
            let asset = ctx
                .create_asset("document", "text/plain", "hello asset".into())
                .await?;
            let bytes = ctx.asset_bytes(&asset).await?;
            let url = ctx
                .asset_url(asset["asset_id"].as_str().unwrap_or(""))
                .await?;
            assert!(!url.is_empty());
            assert_eq!(ctx.secret("API_KEY"), Some("s3cret"));
            out.emit("output", json!(String::from_utf8_lossy(&bytes)))
                .await
        }
    }
    let mut r = nodetool_nodes::registry();
    r.register(Arc::new(Roundtrip(
        NodeSpec::new("test.Roundtrip", "Roundtrip").output("output", "str"),
    )));
    let g = graph(
        &[
            ("rt", "test.Roundtrip", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "o"})),
        ],
        &[("rt", "output", "out", "value")],
    );
    let opts = RunOptions {
        secrets: [("API_KEY".to_owned(), "s3cret".to_owned())].into(),
        ..RunOptions::default()
    };
    let (o, _) = run(&engine_with(r).await, g, Value::Null, opts).await;
    assert_eq!(
        Value::Object(o.result),
        json!({"o": ["hello asset"]}),
        "{:?}",
        o.error
    );
}
