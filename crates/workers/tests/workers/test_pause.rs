//! Pause and resume of worker jobs through the manager: a subprocess job (a real
//! `nodetool-exec-worker` child) paused while it runs and while it waits for a slot, a Docker
//! job paused while it runs (skipped loudly without an engine unless
//! `NODETOOL_TEST_REQUIRE=1`), a worker
//! older than pause control refused cleanly, and the worker's side of the negotiation over an
//! in-memory pipe. The strategy suite (`nodetool_testkit::strategy_suite`) has the engine-level cases
//! (held between nodes, cancel and deadline while paused) on every strategy.
#![allow(clippy::unwrap_used)]

use crate::docker_image;
use nodetool_testkit::ids::uid;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodetool_core::ErrorKind;
use nodetool_engine::{Event, EventEnvelope, Status};
use nodetool_exec::{
    ExecutionStrategy, JobEvents, JobExecutionManager, JobSpec, JobStore, ManagerConfig,
    RunJobRequest,
};
use nodetool_testkit::strategy_suite::{chain, one};
use nodetool_workers::docker::{DockerConfig, DockerStrategy, PullPolicy};
use nodetool_workers::protocol::{
    encode_frame, read_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES,
};
use nodetool_workers::subprocess::{SubprocessConfig, SubprocessStrategy};
use serde_json::json;

const WORKER: &str = env!("CARGO_BIN_EXE_nodetool-exec-worker");

/// Hang guard for one event (not a timing claim).
const WAIT: Duration = Duration::from_secs(30);

fn env(dir: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("ENV".to_owned(), "test".to_owned()),
        ("NODETOOL_CONFIG_DIR".to_owned(), dir.display().to_string()),
    ])
}

fn subprocess(dir: &Path) -> Arc<dyn ExecutionStrategy> {
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = env(dir);
    cfg.scratch_root = Some(dir.to_path_buf());
    Arc::new(SubprocessStrategy::new(cfg))
}

async fn manager(
    dir: &Path,
    strategy: Arc<dyn ExecutionStrategy>,
    slots: usize,
) -> JobExecutionManager {
    let store = JobStore::open(&dir.join("jobs.db")).await.unwrap();
    let config = ManagerConfig {
        max_concurrent_jobs: slots,
        ..ManagerConfig::default()
    };
    JobExecutionManager::new(store, vec![strategy], config)
        .await
        .unwrap()
}

fn request(graph: nodetool_engine::Graph) -> RunJobRequest {
    on("subprocess", graph)
}

fn on(strategy: &str, graph: nodetool_engine::Graph) -> RunJobRequest {
    RunJobRequest {
        graph: Some(graph),
        execution_strategy: Some(strategy.to_owned()),
        use_cache: Some(false),
        ..RunJobRequest::default()
    }
}

fn node_is(e: &EventEnvelope, node: &str, status: Status) -> bool {
    matches!(&e.event, Event::NodeUpdate(n) if n.node_id == node && n.status == status)
}

fn job_is(e: &EventEnvelope, status: Status) -> bool {
    matches!(&e.event, Event::JobUpdate(u) if u.status == status)
}

/// The next event; `seen` gets it too.
async fn next(events: &mut JobEvents, seen: &mut Vec<EventEnvelope>) -> EventEnvelope {
    let e = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event within the wait")
        .expect("the job's events go on");
    seen.push(e.clone());
    e
}

/// A running job of `strategy` paused while its first node runs holds the second, then resumes
/// and completes.
async fn pause_a_running_job(m: &JobExecutionManager, strategy: &str) {
    let id = m
        .submit(on(strategy, chain(2.0)), &uid("alice"))
        .await
        .unwrap();
    let mut events = m.subscribe(&id, 0).unwrap();
    let mut seen = Vec::new();
    while !node_is(&next(&mut events, &mut seen).await, "s1", Status::Running) {}

    assert!(m.pause(&id, &uid("alice")).await.unwrap());
    assert!(
        !m.pause(&id, &uid("alice")).await.unwrap(),
        "already paused"
    );
    assert!(m.is_paused(&id));
    let err = m.pause(&id, &uid("mallory")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // s1 finishes; s2 waits at its boundary.
    let mut paused = false;
    loop {
        let e = next(&mut events, &mut seen).await;
        assert!(
            !node_is(&e, "s2", Status::Running),
            "s2 ran while paused: {seen:#?}"
        );
        paused |= job_is(&e, Status::Paused);
        if node_is(&e, "s1", Status::Completed) {
            break;
        }
    }
    assert!(
        paused,
        "a job_update paused came from the worker: {seen:#?}"
    );
    // A moment for a pause that does not hold to show (a working one holds however long).
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        assert!(
            !node_is(&e, "s2", Status::Running),
            "s2 ran while paused: {e:?}"
        );
        seen.push(e);
    }
    assert!(!m.get(&id).await.unwrap().unwrap().status.is_terminal());

    assert!(m.resume(&id, &uid("alice")).await.unwrap());
    assert!(
        !m.resume(&id, &uid("alice")).await.unwrap(),
        "not paused any more"
    );
    assert!(!m.is_paused(&id));
    let record = m.wait(&id).await.unwrap();
    assert_eq!(record.status, Status::Completed, "{record:?}");
    assert_eq!(record.result, Some(json!({"result": ["a"]})), "{record:?}");
    let err = m.pause(&id, &uid("alice")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_subprocess_job_pauses_and_resumes_through_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), subprocess(dir.path()), 2).await;
    pause_a_running_job(&m, "subprocess").await;
}

/// The same in a real container, when a Docker engine is here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_docker_job_pauses_and_resumes_through_the_manager() {
    const TEST: &str = "a_running_docker_job_pauses_and_resumes_through_the_manager";
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
    let m = manager(dir.path(), docker, 2).await;
    pause_a_running_job(&m, "docker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subprocess_job_paused_while_queued_starts_paused() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), subprocess(dir.path()), 1).await;
    let blocker = m
        .submit(
            request(one("nodetool.test.Sleep", json!({"seconds": 60.0}))),
            &uid("alice"),
        )
        .await
        .unwrap();
    let id = m.submit(request(chain(0.0)), &uid("alice")).await.unwrap();
    assert_eq!(m.get(&id).await.unwrap().unwrap().status, Status::Scheduled);
    assert!(m.pause(&id, &uid("alice")).await.unwrap());
    let mut events = m.subscribe(&id, 0).unwrap();
    m.cancel(&blocker).await.unwrap();

    // The worker starts with its gate closed: paused before any node runs.
    let mut seen = Vec::new();
    loop {
        let e = next(&mut events, &mut seen).await;
        assert!(
            !matches!(&e.event, Event::NodeUpdate(n) if n.status == Status::Completed),
            "a node ran in a job started paused: {seen:#?}"
        );
        if job_is(&e, Status::Paused) {
            break;
        }
    }
    assert!(m.is_paused(&id));
    assert!(m.resume(&id, &uid("alice")).await.unwrap());
    let record = m.wait(&id).await.unwrap();
    assert_eq!(record.status, Status::Completed, "{record:?}");
    assert_eq!(record.result, Some(json!({"result": ["a"]})), "{record:?}");
}

/// `printf` octal escapes for `bytes` (a frame a shell script writes).
fn printf_escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// A worker from before pause control: it ignores the offer, sends a `job_update running` and
/// then works (sleeps) until it is stopped. Pause is refused (the session's unit tests check that
/// such a worker is sent nothing but the request: it would not know a `set_paused`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_pause_control_is_refused_pause() {
    let dir = tempfile::tempdir().unwrap();
    let job_id = "older-worker-job";
    let event = ChildFrame::Event(Box::new(EventEnvelope {
        job_id: job_id.to_owned(),
        seq: 1,
        event: Event::JobUpdate(nodetool_engine::events::JobUpdate {
            status: Status::Running,
            workflow_id: None,
            message: None,
            result: None,
            error: None,
            traceback: None,
            run_state: None,
            duration: None,
            peak_memory_bytes: None,
        }),
    }));
    let script = format!(
        "printf '{}'; exec sleep 60",
        printf_escaped(&encode_frame(&event).unwrap())
    );
    let mut cfg = SubprocessConfig::new("/bin/sh");
    cfg.args = vec!["-c".to_owned(), script];
    cfg.env = env(dir.path());
    let m = manager(dir.path(), Arc::new(SubprocessStrategy::new(cfg)), 1).await;
    let mut req = request(chain(0.0));
    req.job_id = Some(job_id.to_owned());
    let id = m.submit(req, &uid("alice")).await.unwrap();
    let mut events = m.subscribe(&id, 0).unwrap();
    let mut seen = Vec::new();
    // Its first frame told the session it cannot pause.
    assert!(job_is(&next(&mut events, &mut seen).await, Status::Running));

    for err in [
        m.pause(&id, &uid("alice")).await.unwrap_err(),
        m.resume(&id, &uid("alice")).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("cannot pause"), "{err}");
    }
    assert!(!m.is_paused(&id));
    m.cancel(&id).await.unwrap();
    assert_eq!(m.wait(&id).await.unwrap().status, Status::Cancelled);
}

/// The worker answers a pause offer before anything else, and only an offer: a parent from
/// before pause control (no offer) sees what it always saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_answers_pause_control_only_when_offered() {
    for offered in [true, false] {
        let (mut parent_w, child_r) = tokio::io::duplex(64 * 1024);
        let (child_w, mut parent_r) = tokio::io::duplex(64 * 1024);
        let worker = tokio::spawn(nodetool_workers::worker::serve(
            child_r,
            child_w,
            Arc::new(nodetool_nodes::registry()),
            std::future::pending(),
        ));
        let spec = JobSpec::new(chain(0.0));
        let request = if offered {
            ParentFrame::request(spec, None)
        } else {
            ParentFrame::Request {
                protocol_version: 1,
                spec: Box::new(spec),
                services: None,
                pause: None,
            }
        };
        write_frame(&mut parent_w, &request).await.unwrap();
        let first = read_frame::<_, ChildFrame>(&mut parent_r, MAX_FRAME_BYTES)
            .await
            .unwrap();
        match (offered, &first) {
            (true, Some(ChildFrame::Controls { pause: true })) => {}
            (false, Some(ChildFrame::Event(_))) => {}
            other => panic!("offered {offered}: first frame {other:?}"),
        }
        let outcome = loop {
            match read_frame::<_, ChildFrame>(&mut parent_r, MAX_FRAME_BYTES)
                .await
                .unwrap()
            {
                Some(ChildFrame::Outcome(o)) => break o,
                Some(ChildFrame::Controls { .. }) => panic!("a second controls frame"),
                Some(_) => {}
                None => panic!("the worker closed stdout without an outcome"),
            }
        };
        assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
        drop(parent_w);
        worker.await.unwrap().unwrap();
    }
}
