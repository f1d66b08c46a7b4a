//! Threaded strategy and JobExecutionManager behaviour.

use nodetool_testkit::ids::{jid, uid};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nodetool_engine::{Event, Status};
use nodetool_exec::store::RESTART_ERROR;
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{
    ExecutionStrategy, JobExecutionManager, JobRecord, JobStore, ManagerConfig, RunJobRequest,
    StrategyKind, TypeFacts,
};
use nodetool_testkit::strategy_suite::{self, one};
use serde_json::json;

async fn threaded(dir: &std::path::Path) -> Arc<dyn ExecutionStrategy> {
    Arc::new(
        ThreadedStrategy::new(nodetool_testkit::strategy_suite::test_engine(dir).await, 2)
            .expect("pool"),
    )
}

async fn manager(dir: &std::path::Path, max: usize) -> JobExecutionManager {
    let store = JobStore::open(&dir.join("jobs.db")).await.expect("store");
    let config = ManagerConfig {
        max_concurrent_jobs: max,
        ..ManagerConfig::default()
    };
    JobExecutionManager::new(store, vec![threaded(dir).await], config)
        .await
        .expect("manager")
}

fn request(graph: nodetool_engine::Graph) -> RunJobRequest {
    RunJobRequest {
        graph: Some(graph),
        ..RunJobRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threaded_strategy_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    strategy_suite::run(threaded(dir.path()).await, threaded(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_runs_a_job_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), 4).await;
    let mut req = request(one("nodetool.test.Sleep", json!({"value": "hi"})));
    req.user_id = Some("someone-else".into());
    req.job_id = Some("client-hint".into());
    let id = m.submit(req.clone(), &uid("u1")).await.unwrap();
    // The client's job id is the job's (NodeTool's web client makes one per run).
    assert_eq!(id, "client-hint");
    let rec = m.wait(&id).await.unwrap();
    // The same id again is refused, by any user, once the job has ended too.
    for user in ["u1", "u2"] {
        let err = m.submit(req.clone(), &uid(user)).await.unwrap_err();
        assert_eq!(err.kind(), nodetool_core::ErrorKind::AlreadyExists, "{err}");
    }
    req.job_id = Some("../escape".into());
    let err = m.submit(req, &uid("u1")).await.unwrap_err();
    assert_eq!(err.kind(), nodetool_core::ErrorKind::InvalidInput, "{err}");
    assert_eq!(rec.status, Status::Completed, "{rec:?}");
    assert_eq!(rec.user_id, "u1");
    assert_eq!(rec.result, Some(json!({"result": ["hi"]})));
    assert!(rec.started_at.is_some() && rec.finished_at.is_some());
    // The store agrees, and get has no side effects (twice gives the same).
    let stored = m.store().get(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Completed);
    assert_eq!(m.get(&id).await.unwrap(), m.get(&id).await.unwrap());
    let listed = m.list(&uid("u1"), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(m.list(&uid("u2"), 10).await.unwrap().is_empty());
    // Late subscriber replays everything, ending with the terminal job_update.
    let mut events = m.subscribe(&id, 0).unwrap();
    let mut seqs = vec![];
    let mut last = None;
    while let Some(e) = events.next().await {
        seqs.push(e.seq);
        last = Some(e);
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        matches!(last.map(|e| e.event), Some(Event::JobUpdate(u)) if u.status == Status::Completed)
    );
    let mut since = m.subscribe(&id, 2).unwrap();
    assert_eq!(since.next().await.map(|e| e.seq), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), 1).await;
    let g = one("nodetool.test.Sleep", json!({}));
    let mut r = request(g.clone());
    r.execution_strategy = Some("kubernetes".into());
    let e = m.submit(r, &uid("u")).await.unwrap_err();
    assert_eq!(e.kind(), nodetool_core::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("unknown execution_strategy"), "{e}");

    let bad: Result<RunJobRequest, _> =
        serde_json::from_value(json!({"graph": g, "resource_limits": {"memory_gb": 1}}));
    assert!(bad.unwrap_err().to_string().contains("memory_gb"));

    for limits in [
        json!({"memory_mb": -1}),
        json!({"time_seconds": 0}),
        json!({"memory_mb": 1}),
    ] {
        let r: RunJobRequest =
            serde_json::from_value(json!({"graph": g, "resource_limits": limits})).unwrap();
        let e = m.submit(r, &uid("u")).await.unwrap_err();
        assert_eq!(e.kind(), nodetool_core::ErrorKind::InvalidInput, "{limits}");
        assert!(e.to_string().contains("resource_limits."), "{e}");
    }
    let mut r = request(g);
    r.execution_strategy = Some("docker".into());
    let e = m.submit(r, &uid("u")).await.unwrap_err();
    assert!(e.to_string().contains("docker is not available"), "{e}");
    let e = m
        .submit(RunJobRequest::default(), &uid("u"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("graph"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_keeps_extra_jobs_scheduled() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), 2).await;
    let mut ids = vec![];
    for _ in 0..4 {
        let r = request(one("nodetool.test.Sleep", json!({"seconds": 60.0})));
        ids.push(m.submit(r, &uid("u")).await.unwrap());
    }
    // Wait until two run.
    let mut statuses = vec![];
    for _ in 0..200 {
        statuses.clear();
        for id in &ids {
            statuses.push(m.get(id).await.unwrap().unwrap().status);
        }
        if statuses.iter().filter(|s| **s == Status::Running).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Running).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Scheduled).count(),
        2,
        "{statuses:?}"
    );
    // Cancelling a scheduled job ends it without running; twice is fine.
    let queued = ids
        .iter()
        .zip(&statuses)
        .find(|(_, s)| **s == Status::Scheduled)
        .map(|(id, _)| id.clone())
        .unwrap();
    assert!(m.cancel(&queued).await.unwrap());
    m.cancel(&queued).await.unwrap();
    let rec = m.wait(&queued).await.unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    assert!(rec.started_at.is_none());
    assert!(!m.cancel(&queued).await.unwrap());
    for id in &ids {
        m.cancel(id).await.unwrap();
    }
    for id in &ids {
        let rec = m.wait(id).await.unwrap();
        assert_eq!(rec.status, Status::Cancelled, "{rec:?}");
        assert_eq!(
            m.store().get(id).await.unwrap().unwrap().status,
            Status::Cancelled
        );
    }
    assert!(m.cancel(&jid("nope")).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_after_the_grace_period_and_refuses_new_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), 2).await;
    let slow = m
        .submit(
            request(one("nodetool.test.Sleep", json!({"seconds": 60.0}))),
            &uid("u"),
        )
        .await
        .unwrap();
    let quick = m
        .submit(
            request(one("nodetool.test.Sleep", json!({"seconds": 0.05}))),
            &uid("u"),
        )
        .await
        .unwrap();
    m.shutdown(Duration::from_millis(500)).await;
    assert_eq!(
        m.get(&quick).await.unwrap().unwrap().status,
        Status::Completed
    );
    assert_eq!(
        m.get(&slow).await.unwrap().unwrap().status,
        Status::Cancelled
    );
    let e = m
        .submit(request(one("nodetool.test.Sleep", json!({}))), &uid("u"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), nodetool_core::ErrorKind::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_marks_running_jobs_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
    let left = JobRecord {
        id: jid("left-running"),
        user_id: "u".into(),
        workflow_id: String::new(),
        strategy: StrategyKind::Threaded,
        status: Status::Running,
        params: json!({}),
        created_at: Utc::now(),
        started_at: Some(Utc::now()),
        finished_at: None,
        error: None,
        result: None,
        worker: None,
    };
    store.insert(&left).await.unwrap();
    let mut done = left.clone();
    done.id = jid("done");
    done.status = Status::Completed;
    store.insert(&done).await.unwrap();
    drop(store);
    let m = manager(dir.path(), 1).await;
    let rec = m.get(&jid("left-running")).await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert_eq!(rec.error.as_deref(), Some(RESTART_ERROR));
    assert_eq!(
        m.get(&jid("done")).await.unwrap().unwrap().status,
        Status::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_status_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
    let rec = JobRecord {
        id: jid("j"),
        user_id: "u".into(),
        workflow_id: String::new(),
        strategy: StrategyKind::Subprocess,
        status: Status::Scheduled,
        params: json!({"a": 1}),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        error: None,
        result: None,
        worker: None,
    };
    store.insert(&rec).await.unwrap();
    assert!(store.mark_running(&jid("j"), Utc::now()).await.unwrap());
    assert!(store
        .finish(&jid("j"), Status::Cancelled, None, None, Utc::now())
        .await
        .unwrap());
    assert!(!store
        .finish(&jid("j"), Status::Failed, Some("late"), None, Utc::now())
        .await
        .unwrap());
    let got = store.get(&jid("j")).await.unwrap().unwrap();
    assert_eq!(got.status, Status::Cancelled);
    assert_eq!(got.error, None);
    assert_eq!(got.params, json!({"a": 1}));
}

/// The manager's limits from settings are what the registry documents: MAX_WORKFLOW_THREADS
/// unset falls back to THREAD_POOL_SIZE (not "no limit"), and JOB_TIMEOUT_SECONDS is the
/// deadline a request may lower but not lift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_limits_follow_the_documented_settings() {
    let load = |vars: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let env: std::collections::BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path())).unwrap()
    };
    let c = ManagerConfig::from_settings(&load(&[("THREAD_POOL_SIZE", "3")]));
    assert_eq!(c.max_concurrent_jobs, 3);
    let doc = nodetool_config::registry::find("MAX_WORKFLOW_THREADS")
        .unwrap()
        .description;
    assert!(doc.contains("unset: THREAD_POOL_SIZE"), "{doc}");
    let c = ManagerConfig::from_settings(&load(&[
        ("THREAD_POOL_SIZE", "3"),
        ("MAX_WORKFLOW_THREADS", "5"),
        ("JOB_TIMEOUT_SECONDS", "2"),
    ]));
    assert_eq!(c.max_concurrent_jobs, 5);
    assert_eq!(c.default_timeout, Some(Duration::from_secs(2)));

    // Through the manager: a request asking for 60 s gets 2, one asking for 1 gets 1.
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
    let m = JobExecutionManager::new(store, vec![threaded(dir.path()).await], c)
        .await
        .unwrap();
    for (asked, got) in [(60.0, 2.0), (1.0, 1.0)] {
        let r: RunJobRequest = serde_json::from_value(json!({
            "graph": one("nodetool.test.Sleep", json!({"seconds": 30.0})),
            "resource_limits": {"time_seconds": asked},
        }))
        .unwrap();
        let id = m.submit(r, &uid("u")).await.unwrap();
        let rec = m.wait(&id).await.unwrap();
        assert_eq!(rec.status, Status::Failed, "asked {asked}");
        let error = rec.error.unwrap_or_default();
        assert!(
            error.contains(&format!("time limit of {got:.3}s")),
            "asked {asked}: {error}"
        );
    }
}

/// A job whose node hints more VRAM than `NODETOOL_VRAM_GB` offers is refused at submit,
/// naming the node, its type and both figures; one that fits runs, and with no setting the
/// hint is not checked. The node with the largest hint is the job's need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_needing_more_vram_than_offered_is_refused_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let with = |offered: Option<f64>| {
        let dir = dir.path().to_path_buf();
        async move {
            let store = JobStore::open(&dir.join(format!("jobs-{offered:?}.db")))
                .await
                .unwrap();
            let config = ManagerConfig {
                node_facts: [
                    ("nodetool.test.Sleep", 12.0),
                    ("nodetool.test.Generate", 3.5),
                ]
                .into_iter()
                .map(|(t, gb)| {
                    let facts = TypeFacts {
                        vram_gb: Some(gb),
                        ..TypeFacts::default()
                    };
                    (t.to_owned(), facts)
                })
                .collect(),
                vram_gb: offered,
                ..ManagerConfig::default()
            };
            JobExecutionManager::new(store, vec![threaded(&dir).await], config)
                .await
                .unwrap()
        }
    };
    let job = || request(one("nodetool.test.Sleep", json!({"value": "gpu"})));

    let small = with(Some(8.0)).await;
    let err = small.submit(job(), &uid("u1")).await.unwrap_err();
    assert_eq!(err.kind(), nodetool_core::ErrorKind::Unsupported, "{err}");
    let text = err.to_string();
    for part in [
        "node `n`",
        "nodetool.test.Sleep",
        "12 GB",
        "8 GB",
        "NODETOOL_VRAM_GB",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // Nothing was recorded for the refused job.
    assert!(small.list(&uid("u1"), 10).await.unwrap().is_empty());
    // A smaller hint fits.
    let fits = request(one("nodetool.test.Generate", json!({"count": 2})));
    let id = small.submit(fits, &uid("u1")).await.unwrap();
    assert_eq!(small.wait(&id).await.unwrap().status, Status::Completed);

    for offered in [Some(12.0), None] {
        let m = with(offered).await;
        let id = m.submit(job(), &uid("u1")).await.unwrap();
        assert_eq!(
            m.wait(&id).await.unwrap().status,
            Status::Completed,
            "{offered:?}"
        );
    }
}

/// Finished jobs stay in memory for `retain_finished`, at most `max_retained_finished` of them
/// (oldest forgotten first); a forgotten job is still answered from the store, events and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_forgotten_past_the_cap_and_after_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
    // Kept for an hour, so only the cap can forget a job here, however slow the machine is.
    let config = ManagerConfig {
        max_retained_finished: 3,
        retain_finished: Duration::from_secs(3600),
        ..ManagerConfig::default()
    };
    let m = JobExecutionManager::new(store, vec![threaded(dir.path()).await], config)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = m
            .submit(
                request(one("nodetool.constant.Integer", json!({"value": i}))),
                &uid("u1"),
            )
            .await
            .unwrap();
        assert_eq!(m.wait(&id).await.unwrap().status, Status::Completed);
        ids.push(id);
    }
    // The last job's owner forgets the oldest just after `wait` sees its record.
    let mut newest = ids[2..].to_vec();
    newest.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut live = m.live_jobs();
        live.sort();
        if live == newest {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only the 3 newest stay: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The forgotten first job: the store still has it, and its events replay.
    assert_eq!(
        m.get(&ids[0]).await.unwrap().unwrap().status,
        Status::Completed
    );
    m.flush_events().await;
    let mut events = m.subscribe(&ids[0], 0).unwrap();
    let mut terminal = false;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
    {
        if let Event::JobUpdate(u) = &e.event {
            terminal |= u.status == Status::Completed;
        }
    }
    assert!(terminal, "the forgotten job's events replay from the store");
    assert_eq!(
        m.live_jobs().len(),
        3,
        "under the cap, jobs stay for their time"
    );

    // Under the cap, a finished job goes after its time.
    let store = JobStore::open(&dir.path().join("jobs-timed.db"))
        .await
        .unwrap();
    let config = ManagerConfig {
        retain_finished: Duration::from_millis(500),
        ..ManagerConfig::default()
    };
    let m = JobExecutionManager::new(store, vec![threaded(dir.path()).await], config)
        .await
        .unwrap();
    let id = m
        .submit(
            request(one("nodetool.constant.Integer", json!({"value": 1}))),
            &uid("u1"),
        )
        .await
        .unwrap();
    assert_eq!(m.wait(&id).await.unwrap().status, Status::Completed);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !m.live_jobs().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", m.live_jobs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.get(&id).await.unwrap().unwrap().status, Status::Completed);
}
