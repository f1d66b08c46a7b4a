//! Streaming inputs through the real runner: values pushed into input nodes while the job runs
//! flow downstream as a stream, `end` finishes them, and mistakes are the caller's errors.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nodetool_core::ErrorKind;
use nodetool_engine::{
    Engine, Graph, InputStreams, RunOptions, RunOutcome, RunRequest, Status, VecSink,
};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// `text` (streamed) and `suffix` (a param) → Concat → Collect → output `items`; Concat's output
/// also goes straight to output `each`. `hold` (streamed) → output `held` keeps the job running
/// until it is ended too. Concat is `zip_all`: one firing per streamed value with the param reused
/// (under `on_any` a value arriving before the param would be replaced by the next one).
fn concat_graph() -> Graph {
    let g = graph(
        &[
            (
                "text",
                "nodetool.input.StringInput",
                json!({"name": "text"}),
            ),
            (
                "suffix",
                "nodetool.input.StringInput",
                json!({"name": "suffix"}),
            ),
            ("cat", "nodetool.text.Concat", json!({})),
            ("col", "nodetool.control.Collect", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "items"})),
            ("each", "nodetool.output.Output", json!({"name": "each"})),
            (
                "hold",
                "nodetool.input.IntegerInput",
                json!({"name": "hold"}),
            ),
            ("held", "nodetool.output.Output", json!({"name": "held"})),
        ],
        &[
            ("text", "output", "cat", "a"),
            ("suffix", "output", "cat", "b"),
            ("cat", "output", "col", "input_item"),
            ("col", "output", "out", "value"),
            ("cat", "output", "each", "value"),
            ("hold", "output", "held", "value"),
        ],
    );
    with_sync_mode(g, "cat", "zip_all")
}

fn collect_graph() -> Graph {
    graph(
        &[
            ("in", "nodetool.input.StringInput", json!({"name": "text"})),
            ("col", "nodetool.control.Collect", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "items"})),
        ],
        &[
            ("in", "output", "col", "input_item"),
            ("col", "output", "out", "value"),
        ],
    )
}

type RunTask = tokio::task::JoinHandle<(RunOutcome, Arc<VecSink>)>;

/// Starts a run with input streams for every input without a param (`streaming_inputs: true`);
/// returns its handle and the task yielding the outcome.
fn start(
    engine: Engine,
    graph: Graph,
    params: Value,
    opts: RunOptions,
    cancel: CancellationToken,
) -> (InputStreams, RunTask) {
    start_with(
        InputStreams::all_unset(),
        engine,
        graph,
        params,
        opts,
        cancel,
    )
}

fn start_with(
    streams: InputStreams,
    engine: Engine,
    graph: Graph,
    params: Value,
    opts: RunOptions,
    cancel: CancellationToken,
) -> (InputStreams, RunTask) {
    let opts = RunOptions {
        input_streams: Some(streams.clone()),
        ..opts
    };
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    let task = tokio::spawn(async move {
        let sink = VecSink::new();
        let req = RunRequest::new(graph).with_params(params);
        let outcome = engine.run(req, opts, sink.clone(), cancel).await;
        (outcome, sink)
    });
    (streams, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_values_reach_collect_in_order_and_end_finishes_the_job() {
    let (streams, task) = start(
        engine().await,
        collect_graph(),
        Value::Null,
        RunOptions::default(),
        CancellationToken::new(),
    );
    streams.push("text", "output", json!("v1")).await.unwrap();
    streams.push("text", "output", json!("v2")).await.unwrap();
    // A NodeTool chunk passes through as the dict it is, whatever the input's type.
    let chunk = json!({"type": "chunk", "content": "v3", "done": true});
    streams.push("text", "output", chunk.clone()).await.unwrap();
    streams.end("text", "output").await.unwrap();
    let (o, sink) = task.await.unwrap();
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["items"], json!([["v1", "v2", chunk]]));

    // The input node ran once, as a stream: one message per pushed value on its edge.
    let events = to_values(&sink.events());
    assert_eq!(
        per_node_sequences(&events)["in"],
        vec!["running", "completed"]
    );
    assert_eq!(per_edge_counters(&events)["e1"], vec![1, 2, 3]);

    // The run is over: the handle says so.
    let err = streams
        .push("text", "output", json!("late"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("completed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_param_inputs_mix_and_mistakes_do_not_fail_the_job() {
    let (streams, task) = start(
        engine().await,
        concat_graph(),
        json!({"suffix": "!"}),
        RunOptions::default(),
        CancellationToken::new(),
    );
    streams.push("text", "output", json!("a")).await.unwrap();

    let err = streams
        .push("nope", "output", json!("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("`nope`"), "{err}");
    let err = streams
        .push("text", "not_a_handle", json!("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = streams
        .push("suffix", "output", json!("?"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = streams.push("text", "output", json!(42)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("takes str"), "{err}");

    streams.push("text", "output", json!("b")).await.unwrap();
    streams.push("text", "output", json!("c")).await.unwrap();
    streams.end("text", "output").await.unwrap();
    let err = streams
        .push("text", "output", json!("d"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("already ended"), "{err}");
    assert!(!streams.is_closed(), "`hold` is still open");
    streams.push("hold", "output", json!(7)).await.unwrap();
    streams.end("hold", "output").await.unwrap();

    let (o, _) = task.await.unwrap();
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    // The param is sticky: Concat fired once per streamed value.
    assert_eq!(o.result["items"], json!([["a!", "b!", "c!"]]));
    assert_eq!(o.result["each"], json!(["a!", "b!", "c!"]));
    assert_eq!(o.result["held"], json!([7]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unended_stream_keeps_the_job_running_until_cancelled() {
    let cancel = CancellationToken::new();
    let (streams, task) = start(
        engine().await,
        collect_graph(),
        Value::Null,
        RunOptions::default(),
        cancel.clone(),
    );
    streams.push("text", "output", json!("only")).await.unwrap();
    assert!(!streams.is_closed());
    cancel.cancel();
    let (o, _) = task.await.unwrap();
    assert_eq!(o.status, Status::Cancelled, "{:?}", o.error);
    let err = streams.end("text", "output").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("cancelled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_time_limit_ends_a_stream_nobody_ends() {
    let opts = RunOptions {
        job_timeout: Some(Duration::from_millis(200)),
        ..RunOptions::default()
    };
    let (streams, task) = start(
        engine().await,
        collect_graph(),
        Value::Null,
        opts,
        CancellationToken::new(),
    );
    let (o, _) = task.await.unwrap();
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.error.unwrap().kind(), ErrorKind::Timeout);
    assert!(streams.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_with_params_are_not_streamed_and_runs_without_streams_are_unchanged() {
    // Every input has a param: nothing waits for pushes.
    let (streams, task) = start(
        engine().await,
        collect_graph(),
        json!({"text": "given"}),
        RunOptions::default(),
        CancellationToken::new(),
    );
    let (o, _) = task.await.unwrap();
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["items"], json!([["given"]]));
    let err = streams
        .push("text", "output", json!("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    // No input streams: an input without a param emits its default once.
    let (o, _) = run(
        &engine().await,
        collect_graph(),
        Value::Null,
        RunOptions::default(),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["items"], json!([[""]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_serves_one_run() {
    let engine = engine().await;
    let (streams, task) = start(
        engine.clone(),
        collect_graph(),
        json!({"text": "x"}),
        RunOptions::default(),
        CancellationToken::new(),
    );
    task.await.unwrap();
    let opts = RunOptions {
        input_streams: Some(streams),
        ..RunOptions::default()
    };
    let (o, _) = run(&engine, collect_graph(), Value::Null, opts).await;
    assert_eq!(o.status, Status::Failed);
    assert!(
        o.error.unwrap().to_string().contains("another run"),
        "a second run must not take over the first run's streams"
    );
}

/// RealtimeAudioInput `audio` → Collect → output `chunks`; StringInput `text` → output `text`.
fn realtime_graph() -> Graph {
    graph(
        &[
            (
                "mic",
                "nodetool.input.RealtimeAudioInput",
                json!({"name": "audio", "value": null}),
            ),
            ("col", "nodetool.control.Collect", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "chunks"})),
            (
                "text",
                "nodetool.input.StringInput",
                json!({"name": "text", "value": "fixed"}),
            ),
            (
                "text_out",
                "nodetool.output.Output",
                json!({"name": "text"}),
            ),
        ],
        &[
            ("mic", "chunk", "col", "input_item"),
            ("col", "output", "out", "value"),
            ("text", "output", "text_out", "value"),
        ],
    )
}

/// NodeTool's rule (`InputStreams::new`): only the streaming input is fed — it opens with its
/// param, takes pushes on its own handle (an empty handle names it), and ends when ended — while
/// the StringInput without a param emits its value once and refuses pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodetool_rule_feeds_only_streaming_inputs() {
    let first = json!({"type": "audio", "uri": "memory://first.wav"});
    let (streams, task) = start_with(
        InputStreams::new(),
        engine().await,
        realtime_graph(),
        json!({"audio": first.clone()}),
        RunOptions::default(),
        CancellationToken::new(),
    );
    assert!(!streams.streams_unset_inputs());
    let chunk = json!({"type": "chunk", "content": "pcm", "content_type": "audio"});
    streams.push("audio", "", chunk.clone()).await.unwrap();
    streams.push("audio", "chunk", chunk.clone()).await.unwrap();
    let err = streams
        .push("audio", "output", chunk.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = streams.push("text", "", json!("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("not streamed"), "{err}");
    assert!(
        !task.is_finished(),
        "an open streaming input keeps the run going"
    );
    streams.end("audio", "").await.unwrap();
    let (o, _) = task.await.unwrap();
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["chunks"], json!([[first, chunk, chunk]]));
    assert_eq!(o.result["text"], json!(["fixed"]));

    // Without input streams the streaming input sends its param once, and a null value not at all.
    let (o, _) = run(
        &engine().await,
        realtime_graph(),
        json!({"audio": first.clone()}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["chunks"], json!([[first]]));
    let (o, _) = run(
        &engine().await,
        realtime_graph(),
        Value::Null,
        RunOptions::default(),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["chunks"], json!([[]]));
}
