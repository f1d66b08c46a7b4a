//! Streamed inputs (`stream_input` / `end_input_stream`) through the manager, on every strategy:
//! threaded (in-process), subprocess (a real `nodetool-exec-worker` child) and Docker (a real
//! container; skipped loudly without an engine unless `NODETOOL_TEST_REQUIRE=1`). Plus the
//! worker's side of the protocol over an in-memory pipe.
#![allow(clippy::unwrap_used)]

use crate::docker_image;
use nodetool_testkit::ids::{jid, uid};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use nodetool_core::ErrorKind;
use nodetool_engine::{Graph, Status};
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{
    ExecutionStrategy, JobExecutionManager, JobSpec, JobStore, ManagerConfig, RunJobRequest,
    WorkerRef,
};
use nodetool_testkit::strategy_suite::graph;
use nodetool_workers::docker::{DockerConfig, DockerStrategy, PullPolicy};
use nodetool_workers::protocol::{
    read_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES,
};
use nodetool_workers::subprocess::{SubprocessConfig, SubprocessStrategy};
use serde_json::{json, Value};

const WORKER: &str = env!("CARGO_BIN_EXE_nodetool-exec-worker");

/// StringInput `text` → Collect → Output `items`.
fn collect_graph() -> Graph {
    graph(
        vec![
            json!({"id": "in", "type": "nodetool.input.StringInput", "data": {"name": "text"}}),
            json!({"id": "col", "type": "nodetool.control.Collect", "data": {}}),
            json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "items"}}),
        ],
        vec![
            json!({"id": "e1", "source": "in", "sourceHandle": "output", "target": "col", "targetHandle": "input_item"}),
            json!({"id": "e2", "source": "col", "sourceHandle": "output", "target": "out", "targetHandle": "value"}),
        ],
    )
}

/// [`collect_graph`] plus a 60 s sleep, so the job outlives its input stream.
fn collect_and_sleep_graph() -> Graph {
    let g = serde_json::to_value(collect_graph()).unwrap();
    let mut nodes = g["nodes"].as_array().unwrap().clone();
    let mut edges = g["edges"].as_array().unwrap().clone();
    nodes.push(
        json!({"id": "nap", "type": "nodetool.test.Sleep", "data": {"seconds": 60, "value": 1}}),
    );
    nodes.push(json!({"id": "nap_out", "type": "nodetool.output.Output", "data": {"name": "nap"}}));
    edges.push(json!({"id": "e3", "source": "nap", "sourceHandle": "output", "target": "nap_out", "targetHandle": "value"}));
    graph(nodes, edges)
}

fn request(strategy: &str, streaming: bool) -> RunJobRequest {
    RunJobRequest {
        graph: Some(collect_graph()),
        execution_strategy: Some(strategy.to_owned()),
        streaming_inputs: Some(streaming),
        ..RunJobRequest::default()
    }
}

fn subprocess(dir: &Path) -> Arc<dyn ExecutionStrategy> {
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = BTreeMap::from([
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("ENV".to_owned(), "test".to_owned()),
        ("NODETOOL_CONFIG_DIR".to_owned(), dir.display().to_string()),
    ]);
    cfg.scratch_root = Some(dir.to_path_buf());
    Arc::new(SubprocessStrategy::new(cfg))
}

async fn manager(
    dir: &Path,
    strategies: Vec<Arc<dyn ExecutionStrategy>>,
    max_jobs: usize,
) -> JobExecutionManager {
    let store = JobStore::open(&dir.join("jobs.db")).await.unwrap();
    let config = ManagerConfig {
        max_concurrent_jobs: max_jobs,
        node_facts: nodetool_exec::NodeFacts::from_registry(&nodetool_nodes::registry()),
        ..ManagerConfig::default()
    };
    JobExecutionManager::new(store, strategies, config)
        .await
        .unwrap()
}

async fn threaded(dir: &Path) -> Arc<dyn ExecutionStrategy> {
    Arc::new(
        ThreadedStrategy::new(nodetool_testkit::strategy_suite::test_engine(dir).await, 2).unwrap(),
    )
}

/// The whole story on one strategy: pushes in order, a chunk dict passing through, every caller
/// mistake answered with its error kind while the job goes on, end, and the collected result.
async fn push_three_then_end(m: &JobExecutionManager, strategy: &str) {
    let id = m
        .submit(request(strategy, true), &uid("alice"))
        .await
        .unwrap();
    m.stream_input(&id, &uid("alice"), "text", "output", json!("v1"))
        .await
        .unwrap();

    let kind = |r: nodetool_core::Result<()>| r.unwrap_err().kind();
    // Another user's job does not exist for them.
    let err = m
        .stream_input(&id, &uid("mallory"), "text", "output", json!("x"))
        .await;
    assert_eq!(kind(err), ErrorKind::NotFound, "{strategy}: other user");
    let err = m
        .stream_input(
            &jid("no-such-job"),
            &uid("alice"),
            "text",
            "output",
            json!("x"),
        )
        .await;
    assert_eq!(kind(err), ErrorKind::NotFound, "{strategy}: unknown job");
    let err = m
        .stream_input(&id, &uid("alice"), "nope", "output", json!("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{strategy}: {err}");
    assert!(err.to_string().contains("`nope`"), "{strategy}: {err}");
    let err = m
        .stream_input(&id, &uid("alice"), "text", "output", json!([1]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{strategy}: {err}");

    m.stream_input(&id, &uid("alice"), "text", "output", json!("v2"))
        .await
        .unwrap();
    let chunk = json!({"type": "chunk", "content": "v3", "done": true});
    m.stream_input(&id, &uid("alice"), "text", "output", chunk.clone())
        .await
        .unwrap();
    m.end_input_stream(&id, &uid("alice"), "text", "output")
        .await
        .unwrap();

    let rec = m.wait(&id).await.unwrap();
    assert_eq!(rec.status, Status::Completed, "{strategy}: {rec:?}");
    assert_eq!(
        rec.result,
        Some(json!({"items": [["v1", "v2", chunk]]})),
        "{strategy}"
    );
    let err = m
        .stream_input(&id, &uid("alice"), "text", "output", json!("after"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{strategy}: {err}");
    assert!(
        err.to_string().contains("no longer running"),
        "{strategy}: {err}"
    );

    // A job without streaming inputs keeps its inputs fixed, whether the flag is off or unset
    // (NodeTool's rule: a StringInput is not a streaming input).
    for flag in [Some(false), None] {
        let req = RunJobRequest {
            streaming_inputs: flag,
            ..request(strategy, false)
        };
        let fixed = m.submit(req, &uid("alice")).await.unwrap();
        assert_not_streamed(refused(m, &fixed, "text", "output").await, strategy);
        let err = refused(m, &fixed, "nope", "output").await;
        // The job may already have ended (it has nothing to wait for).
        assert!(
            matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Unavailable),
            "{strategy}: {err}"
        );
        let rec = m.wait(&fixed).await.unwrap();
        assert_eq!(rec.result, Some(json!({"items": [[""]]})), "{strategy}");
    }
}

/// A push of alice's that the manager refuses.
async fn refused(
    m: &JobExecutionManager,
    id: &nodetool_core::JobId,
    input: &str,
    handle: &str,
) -> nodetool_core::Error {
    m.stream_input(id, &uid("alice"), input, handle, json!("x"))
        .await
        .unwrap_err()
}

fn assert_not_streamed(err: nodetool_core::Error, strategy: &str) {
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{strategy}: {err}");
    assert!(
        err.to_string().contains("not streamed"),
        "{strategy}: {err}"
    );
}

/// RealtimeAudioInput `audio` → Collect → Output `chunks`, and StringInput `text` → Output
/// `text`: NodeTool's streaming input beside a fixed one.
fn realtime_graph() -> Graph {
    graph(
        vec![
            json!({"id": "mic", "type": "nodetool.input.RealtimeAudioInput", "data": {"name": "audio", "value": null}}),
            json!({"id": "col", "type": "nodetool.control.Collect", "data": {}}),
            json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "chunks"}}),
            json!({"id": "txt", "type": "nodetool.input.StringInput", "data": {"name": "text", "value": "fixed"}}),
            json!({"id": "txt_out", "type": "nodetool.output.Output", "data": {"name": "text"}}),
        ],
        vec![
            json!({"id": "e1", "source": "mic", "sourceHandle": "chunk", "target": "col", "targetHandle": "input_item"}),
            json!({"id": "e2", "source": "col", "sourceHandle": "output", "target": "out", "targetHandle": "value"}),
            json!({"id": "e3", "source": "txt", "sourceHandle": "output", "target": "txt_out", "targetHandle": "value"}),
        ],
    )
}

/// NodeTool's rule with no flag from the client: the streaming input stays open (opening with
/// its param when it has one), the fixed input refuses pushes, and ending the stream completes
/// the job.
async fn a_streaming_input_needs_no_flag(m: &JobExecutionManager, strategy: &str) {
    let req = |params: Option<Value>| RunJobRequest {
        graph: Some(realtime_graph()),
        execution_strategy: Some(strategy.to_owned()),
        params,
        ..RunJobRequest::default()
    };
    let id = m.submit(req(None), &uid("alice")).await.unwrap();
    let c1 = json!({"type": "chunk", "content": "a1", "content_type": "audio"});
    let c2 = json!({"type": "chunk", "content": "a2", "content_type": "audio", "done": true});
    m.stream_input(&id, &uid("alice"), "audio", "chunk", c1.clone())
        .await
        .unwrap();
    assert_not_streamed(refused(m, &id, "text", "output").await, strategy);
    let err = refused(m, &id, "audio", "output").await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{strategy}: {err}");
    assert!(err.to_string().contains("`chunk`"), "{strategy}: {err}");
    m.stream_input(&id, &uid("alice"), "audio", "chunk", c2.clone())
        .await
        .unwrap();
    assert_eq!(
        m.get(&id).await.unwrap().unwrap().status,
        Status::Running,
        "{strategy}: an open stream keeps the job running"
    );
    m.end_input_stream(&id, &uid("alice"), "audio", "chunk")
        .await
        .unwrap();
    let rec = m.wait(&id).await.unwrap();
    assert_eq!(rec.status, Status::Completed, "{strategy}: {rec:?}");
    assert_eq!(
        rec.result,
        Some(json!({"chunks": [[c1, c2]], "text": ["fixed"]})),
        "{strategy}"
    );

    // A param is the stream's first item.
    let first = json!({"type": "audio", "uri": "memory://first.wav"});
    let id = m
        .submit(req(Some(json!({"audio": first.clone()}))), &uid("alice"))
        .await
        .unwrap();
    m.stream_input(&id, &uid("alice"), "audio", "chunk", c1.clone())
        .await
        .unwrap();
    m.end_input_stream(&id, &uid("alice"), "audio", "chunk")
        .await
        .unwrap();
    let rec = m.wait(&id).await.unwrap();
    assert_eq!(
        rec.result,
        Some(json!({"chunks": [[first, c1]], "text": ["fixed"]})),
        "{strategy}: {rec:?}"
    );

    // `streaming_inputs: false` opts out: the input emits its value once and the job ends.
    let req = RunJobRequest {
        streaming_inputs: Some(false),
        ..req(Some(json!({"audio": first.clone()})))
    };
    let id = m.submit(req, &uid("alice")).await.unwrap();
    let rec = m.wait(&id).await.unwrap();
    assert_eq!(rec.status, Status::Completed, "{strategy}: {rec:?}");
    assert_eq!(
        rec.result,
        Some(json!({"chunks": [[first]], "text": ["fixed"]})),
        "{strategy}: {rec:?}"
    );
}

/// A push after the end is refused while the job goes on (a sleeping branch keeps it running).
async fn push_after_end_is_refused(m: &JobExecutionManager, strategy: &str) {
    let req = RunJobRequest {
        graph: Some(collect_and_sleep_graph()),
        ..request(strategy, true)
    };
    let id = m.submit(req, &uid("alice")).await.unwrap();
    m.stream_input(&id, &uid("alice"), "text", "output", json!("v"))
        .await
        .unwrap();
    m.end_input_stream(&id, &uid("alice"), "text", "output")
        .await
        .unwrap();
    // Ending twice is harmless; pushing after the end is not.
    m.end_input_stream(&id, &uid("alice"), "text", "output")
        .await
        .unwrap();
    let err = m
        .stream_input(&id, &uid("alice"), "text", "output", json!("late"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{strategy}: {err}");
    assert!(
        err.to_string().contains("already ended"),
        "{strategy}: {err}"
    );
    assert!(m.cancel(&id).await.unwrap(), "{strategy}: still running");
    assert_eq!(m.wait(&id).await.unwrap().status, Status::Cancelled);
}

/// Many values, more than any buffer holds: all arrive, in order (backpressure, not loss).
async fn many_values_arrive_in_order(m: &JobExecutionManager, strategy: &str) {
    let id = m
        .submit(request(strategy, true), &uid("alice"))
        .await
        .unwrap();
    let want: Vec<Value> = (0..60).map(|i| json!(format!("item {i}"))).collect();
    for v in &want {
        m.stream_input(&id, &uid("alice"), "text", "output", v.clone())
            .await
            .unwrap();
    }
    m.end_input_stream(&id, &uid("alice"), "text", "output")
        .await
        .unwrap();
    let rec = m.wait(&id).await.unwrap();
    assert_eq!(rec.status, Status::Completed, "{strategy}: {rec:?}");
    assert_eq!(rec.result, Some(json!({ "items": [want] })), "{strategy}");
}

/// Cancelling a job whose stream is still open ends it as cancelled, and later pushes fail.
async fn cancel_ends_an_open_stream(m: &JobExecutionManager, strategy: &str) {
    let id = m
        .submit(request(strategy, true), &uid("alice"))
        .await
        .unwrap();
    m.stream_input(&id, &uid("alice"), "text", "output", json!("only"))
        .await
        .unwrap();
    assert!(m.cancel(&id).await.unwrap());
    let rec = m.wait(&id).await.unwrap();
    assert_eq!(rec.status, Status::Cancelled, "{strategy}: {rec:?}");
    let err = m
        .end_input_stream(&id, &uid("alice"), "text", "output")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{strategy}: {err}");
}

/// Every job of the test ran where it should (a worker process, a container).
async fn assert_workers(m: &JobExecutionManager, want: fn(&WorkerRef) -> bool) {
    let jobs = m.list(&uid("alice"), 100).await.unwrap();
    assert!(!jobs.is_empty());
    for job in jobs {
        assert!(job.worker.as_ref().is_some_and(want), "{job:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threaded_jobs_take_streamed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), vec![threaded(dir.path()).await], 4).await;
    push_three_then_end(&m, "threaded").await;
    a_streaming_input_needs_no_flag(&m, "threaded").await;
    push_after_end_is_refused(&m, "threaded").await;
    many_values_arrive_in_order(&m, "threaded").await;
    cancel_ends_an_open_stream(&m, "threaded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_jobs_take_streamed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), vec![subprocess(dir.path())], 4).await;
    push_three_then_end(&m, "subprocess").await;
    a_streaming_input_needs_no_flag(&m, "subprocess").await;
    push_after_end_is_refused(&m, "subprocess").await;
    many_values_arrive_in_order(&m, "subprocess").await;
    cancel_ends_an_open_stream(&m, "subprocess").await;
    assert_workers(&m, |w| matches!(w, WorkerRef::Pid(_))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_scheduled_job_waits_until_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    // One slot: the sleeper holds it, so the streaming job waits as `scheduled`.
    let m = manager(dir.path(), vec![threaded(dir.path()).await], 1).await;
    let sleeper = m
        .submit(
            RunJobRequest {
                graph: Some(nodetool_testkit::strategy_suite::one(
                    "nodetool.test.Sleep",
                    json!({"seconds": 60, "value": 1}),
                )),
                ..RunJobRequest::default()
            },
            &uid("alice"),
        )
        .await
        .unwrap();
    let id = m
        .submit(request("threaded", true), &uid("alice"))
        .await
        .unwrap();
    assert_eq!(m.get(&id).await.unwrap().unwrap().status, Status::Scheduled);
    let push = tokio::spawn({
        let (m, id) = (m.clone(), id.clone());
        async move {
            m.stream_input(&id, &uid("alice"), "text", "output", json!("early"))
                .await
        }
    });
    // Freeing the slot starts the job, and the waiting push goes through.
    m.cancel(&sleeper).await.unwrap();
    push.await.unwrap().unwrap();
    m.end_input_stream(&id, &uid("alice"), "text", "output")
        .await
        .unwrap();
    let rec = m.wait(&id).await.unwrap();
    assert_eq!(rec.result, Some(json!({"items": [["early"]]})));

    // A push waiting on a scheduled job that is cancelled fails instead of hanging.
    let sleeper = m
        .submit(
            RunJobRequest {
                graph: Some(nodetool_testkit::strategy_suite::one(
                    "nodetool.test.Sleep",
                    json!({"seconds": 60, "value": 1}),
                )),
                ..RunJobRequest::default()
            },
            &uid("alice"),
        )
        .await
        .unwrap();
    let id = m
        .submit(request("threaded", true), &uid("alice"))
        .await
        .unwrap();
    let push = tokio::spawn({
        let (m, id) = (m.clone(), id.clone());
        async move {
            m.stream_input(&id, &uid("alice"), "text", "output", json!("x"))
                .await
        }
    });
    m.cancel(&id).await.unwrap();
    let err = push.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    m.cancel(&sleeper).await.unwrap();
}

/// The worker reads stdin while its job runs: input frames are acked in order (errors included),
/// a frame kind it does not know is skipped, and the job ends with what was pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_acks_input_frames_while_the_job_runs() {
    let (mut parent_w, child_r) = tokio::io::duplex(64 * 1024);
    let (child_w, mut parent_r) = tokio::io::duplex(64 * 1024);
    let worker = tokio::spawn(nodetool_workers::worker::serve(
        child_r,
        child_w,
        Arc::new(nodetool_nodes::registry()),
        std::future::pending(),
    ));

    let mut spec = JobSpec::new(collect_graph());
    spec.streaming_inputs = true;
    write_frame(&mut parent_w, &ParentFrame::request(spec, None))
        .await
        .unwrap();
    // From a newer parent: skipped, not fatal.
    write_frame(
        &mut parent_w,
        &json!({"frame": "from_the_future", "body": {}}),
    )
    .await
    .unwrap();
    let push = |id: u64, input: &str, value: Value| ParentFrame::InputPush {
        id,
        input: input.to_owned(),
        handle: "output".to_owned(),
        value,
    };
    write_frame(&mut parent_w, &push(1, "text", json!("a")))
        .await
        .unwrap();
    write_frame(&mut parent_w, &push(2, "missing", json!("b")))
        .await
        .unwrap();
    write_frame(&mut parent_w, &push(3, "text", json!("c")))
        .await
        .unwrap();
    let end = ParentFrame::InputEnd {
        id: 4,
        input: "text".to_owned(),
        handle: "output".to_owned(),
    };
    write_frame(&mut parent_w, &end).await.unwrap();

    let mut acks = Vec::new();
    let outcome = loop {
        match read_frame::<_, ChildFrame>(&mut parent_r, MAX_FRAME_BYTES)
            .await
            .unwrap()
        {
            Some(ChildFrame::InputAck { id, error }) => acks.push((id, error.map(|e| e.kind))),
            Some(ChildFrame::Outcome(o)) => break o,
            Some(_) => {}
            None => panic!("the worker closed stdout without an outcome"),
        }
    };
    assert_eq!(
        acks,
        vec![
            (1, None),
            (2, Some(ErrorKind::NotFound.as_str().to_owned())),
            (3, None),
            (4, None),
        ]
    );
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(outcome.result["items"], json!([["a", "c"]]));
    drop(parent_w);
    worker.await.unwrap().unwrap();
}

/// The same story in a real container, when a Docker engine is here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_jobs_take_streamed_inputs() {
    const TEST: &str = "docker_jobs_take_streamed_inputs";
    let Some((_, tag)) = docker_image::worker_image(TEST).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("jobs");
    std::fs::create_dir_all(&workspaces).unwrap();
    let mut config = DockerConfig::new(&workspaces);
    config.image = tag;
    config.pull_policy = PullPolicy::Never;
    let docker: Arc<dyn ExecutionStrategy> =
        Arc::new(DockerStrategy::connect(config).await.unwrap());
    let m = manager(dir.path(), vec![docker], 4).await;
    push_three_then_end(&m, "docker").await;
    a_streaming_input_needs_no_flag(&m, "docker").await;
    push_after_end_is_refused(&m, "docker").await;
    cancel_ends_an_open_stream(&m, "docker").await;
    assert_workers(&m, |w| matches!(w, WorkerRef::Container(_))).await;
    let left: Vec<_> = std::fs::read_dir(&workspaces).unwrap().collect();
    assert!(left.is_empty(), "job workspaces left behind: {left:?}");
}
