//! The job store contract ([`JobStore`]'s doc), one behaviour suite run against SQLite (a temp
//! file) and against a real PostgreSQL (the testkit's, from Debian's packages), plus
//! PostgreSQL's start-up failures: a bad `DATABASE_URL`, a server that is down, a schema newer
//! than the binary.
//!
//! Each case gets a fresh database; all cases run even when one fails, and the panic lists every
//! failure.
#![allow(clippy::unwrap_used)]

use nodetool_testkit::ids::{jid, uid};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::FutureExt;
use nodetool_core::ErrorKind;
use nodetool_engine::events::{Event, LogUpdate, Severity};
use nodetool_engine::{EventEnvelope, Status};
use nodetool_exec::store::RESTART_ERROR;
use nodetool_exec::{JobRecord, JobStore, PostgresOptions, StrategyKind, WorkerRef};
use nodetool_testkit::postgres::PostgresServer;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The suite.

/// Where a case's database lives, so that it can be opened again ("after a restart").
#[derive(Debug, Clone)]
enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Target {
    async fn open(&self) -> JobStore {
        match self {
            Target::Sqlite(path) => JobStore::open(path).await.unwrap(),
            Target::Postgres(url) => JobStore::connect(url, &PostgresOptions::default())
                .await
                .unwrap(),
        }
    }
}

struct Ctx {
    target: Target,
    store: JobStore,
}

impl Ctx {
    /// The store as a new process would open it: a new pool on the same database.
    async fn reopen(&self) -> JobStore {
        self.target.open().await
    }
}

type Case = fn(Ctx) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |ctx| Box::pin($name(ctx)))),*]
    };
}

const CASES: &[(&str, Case)] = cases![
    insert_then_get_round_trips,
    unknown_job_is_none,
    a_job_id_is_inserted_once,
    list_is_per_user_newest_first_and_limited,
    mark_running_only_from_scheduled,
    finish_writes_the_first_terminal_status_only,
    cancelled_is_never_overwritten,
    concurrent_finishes_have_exactly_one_winner,
    concurrent_start_and_cancel_end_cancelled,
    set_worker_records_pid_or_container,
    events_replay_in_seq_order_after_reopen,
    a_stored_seq_keeps_its_first_event,
    large_batches_round_trip,
    each_job_keeps_its_latest_events,
    expiry_removes_only_events_of_jobs_finished_before,
    reconcile_fails_interrupted_jobs_once,
    delete_ended_removes_only_the_owners_ended_job,
];

/// Runs every case, each against a fresh database from `fresh(case name)`.
async fn run_suite<F, Fut>(backend: &str, fresh: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Target>,
{
    let mut failures = Vec::new();
    for (name, case) in CASES {
        let target = fresh(name).await;
        let store = target.open().await;
        assert_eq!(store.backend(), backend);
        let ctx = Ctx { target, store };
        let outcome = AssertUnwindSafe(tokio::time::timeout(Duration::from_secs(120), case(ctx)))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => eprintln!("job_store_{backend}::{name} ... ok"),
            Ok(Err(_)) => failures.push(format!("{name}: timed out after 120 s")),
            Err(panic) => failures.push(format!("{name}: {}", panic_message(&*panic))),
        }
    }
    assert!(
        failures.is_empty(),
        "job_store_{backend}: {} of {} cases failed:\n  {}",
        failures.len(),
        CASES.len(),
        failures.join("\n  ")
    );
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// A fixed instant `secs` after a base, with microseconds (what both backends keep).
fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 123_456_000)
        .unwrap()
}

fn job(id: &str, user: &str, status: Status, created: i64) -> JobRecord {
    JobRecord {
        id: jid(id),
        user_id: user.into(),
        workflow_id: format!("wf-{id}"),
        strategy: StrategyKind::Threaded,
        status,
        params: json!({"z": 1, "a": {"nested": [1, 2, "three"]}, "m": null}),
        created_at: at(created),
        started_at: None,
        finished_at: None,
        error: None,
        result: None,
        worker: None,
    }
}

fn event(job_id: &str, seq: u64, content: &str) -> EventEnvelope {
    EventEnvelope {
        job_id: job_id.to_owned(),
        seq,
        event: Event::LogUpdate(LogUpdate {
            node_id: "n1".into(),
            node_name: "Log".into(),
            content: content.to_owned(),
            severity: Severity::Info,
            workflow_id: None,
        }),
    }
}

fn rows(events: &[EventEnvelope]) -> Vec<(String, u64, String)> {
    events
        .iter()
        .map(|e| (e.job_id.clone(), e.seq, serde_json::to_string(e).unwrap()))
        .collect()
}

async fn seqs(store: &JobStore, job_id: &str) -> Vec<u64> {
    store
        .events_after(&jid(job_id), 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

async fn status(store: &JobStore, id: &str) -> Status {
    store.get(&jid(id)).await.unwrap().unwrap().status
}

async fn insert_then_get_round_trips(ctx: Ctx) {
    let mut full = job("full", "u1", Status::Completed, 0);
    full.strategy = StrategyKind::Docker;
    full.started_at = Some(at(1));
    full.finished_at = Some(at(2));
    full.error = Some("partial: \"quoted\" ünïcode".into());
    full.result = Some(json!({"out": [1, {"b": 2, "a": 1}], "empty": []}));
    full.worker = Some(WorkerRef::Container("c0ffee".into()));
    ctx.store.insert(&full).await.unwrap();
    let mut pid = job("pid", "u1", Status::Running, 3);
    pid.strategy = StrategyKind::Subprocess;
    pid.worker = Some(WorkerRef::Pid(4_000_000));
    ctx.store.insert(&pid).await.unwrap();

    let store = ctx.reopen().await;
    let got = store.get(&jid("full")).await.unwrap().unwrap();
    assert_eq!(got, full);
    // JSON comes back as written, key order included.
    assert_eq!(
        serde_json::to_string(&got.params).unwrap(),
        serde_json::to_string(&full.params).unwrap()
    );
    assert_eq!(
        serde_json::to_string(&got.result).unwrap(),
        serde_json::to_string(&full.result).unwrap()
    );
    assert_eq!(store.get(&jid("pid")).await.unwrap().unwrap(), pid);

    // Nanoseconds are cut to microseconds, the same on both backends.
    let mut fine = job("fine", "u1", Status::Scheduled, 0);
    fine.created_at = Utc.timestamp_opt(1_780_000_000, 123_456_789).unwrap();
    store.insert(&fine).await.unwrap();
    assert_eq!(
        store.get(&jid("fine")).await.unwrap().unwrap().created_at,
        Utc.timestamp_opt(1_780_000_000, 123_456_000).unwrap()
    );
}

async fn unknown_job_is_none(ctx: Ctx) {
    assert_eq!(ctx.store.get(&jid("nope")).await.unwrap(), None);
    assert!(ctx.store.list(&uid("nobody"), 10).await.unwrap().is_empty());
    assert!(!ctx.store.mark_running(&jid("nope"), at(0)).await.unwrap());
    assert!(!ctx
        .store
        .finish(&jid("nope"), Status::Completed, None, None, at(0))
        .await
        .unwrap());
    assert!(!ctx
        .store
        .delete_ended(&jid("nope"), &uid("u1"))
        .await
        .unwrap());
    assert!(ctx
        .store
        .events_after(&jid("nope"), 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ctx.store.last_event(&jid("nope")).await.unwrap(), None);
    // Empty batches are fine.
    ctx.store.append_events(&[], 10).await.unwrap();
}

async fn a_job_id_is_inserted_once(ctx: Ctx) {
    let first = job("dup", "u1", Status::Scheduled, 0);
    ctx.store.insert(&first).await.unwrap();
    let mut second = job("dup", "u2", Status::Completed, 5);
    second.workflow_id = "other".into();
    let err = ctx.store.insert(&second).await.unwrap_err();
    assert_eq!(err.operation(), "jobs.insert", "{err}");
    assert_eq!(ctx.store.get(&jid("dup")).await.unwrap().unwrap(), first);
}

async fn list_is_per_user_newest_first_and_limited(ctx: Ctx) {
    for (id, user, created) in [
        ("a1", "alice", 10),
        ("a3", "alice", 30),
        ("a2", "alice", 20),
        ("b1", "bob", 40),
        // Same instant as a3: the larger id comes first.
        ("a3b", "alice", 30),
    ] {
        ctx.store
            .insert(&job(id, user, Status::Scheduled, created))
            .await
            .unwrap();
    }
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ctx.store.list(&uid("alice"), 10).await.unwrap()),
        ["a3b", "a3", "a2", "a1"]
    );
    assert_eq!(
        ids(ctx.store.list(&uid("alice"), 2).await.unwrap()),
        ["a3b", "a3"]
    );
    assert_eq!(ids(ctx.store.list(&uid("bob"), 10).await.unwrap()), ["b1"]);
    assert!(ctx.store.list(&uid("alice"), 0).await.unwrap().is_empty());
}

async fn mark_running_only_from_scheduled(ctx: Ctx) {
    ctx.store
        .insert(&job("j", "u1", Status::Scheduled, 0))
        .await
        .unwrap();
    assert!(ctx.store.mark_running(&jid("j"), at(1)).await.unwrap());
    let got = ctx.store.get(&jid("j")).await.unwrap().unwrap();
    assert_eq!(got.status, Status::Running);
    assert_eq!(got.started_at, Some(at(1)));
    // Already running: no second start, the first start time stays.
    assert!(!ctx.store.mark_running(&jid("j"), at(2)).await.unwrap());
    assert_eq!(
        ctx.store.get(&jid("j")).await.unwrap().unwrap().started_at,
        Some(at(1))
    );
    assert!(ctx
        .store
        .finish(&jid("j"), Status::Completed, None, None, at(3))
        .await
        .unwrap());
    assert!(!ctx.store.mark_running(&jid("j"), at(4)).await.unwrap());
    assert_eq!(status(&ctx.store, "j").await, Status::Completed);
}

async fn finish_writes_the_first_terminal_status_only(ctx: Ctx) {
    for id in ["from_scheduled", "from_running"] {
        ctx.store
            .insert(&job(id, "u1", Status::Scheduled, 0))
            .await
            .unwrap();
    }
    ctx.store
        .mark_running(&jid("from_running"), at(1))
        .await
        .unwrap();
    for id in ["from_scheduled", "from_running"] {
        let result = json!({"out": [id]});
        assert!(ctx
            .store
            .finish(&jid(id), Status::Completed, None, Some(&result), at(5))
            .await
            .unwrap());
        assert!(!ctx
            .store
            .finish(&jid(id), Status::Failed, Some("late"), None, at(6))
            .await
            .unwrap());
        let got = ctx.reopen().await.get(&jid(id)).await.unwrap().unwrap();
        assert_eq!(got.status, Status::Completed, "{id}");
        assert_eq!(got.result, Some(result), "{id}");
        assert_eq!(got.error, None, "{id}");
        assert_eq!(got.finished_at, Some(at(5)), "{id}");
    }
    ctx.store
        .insert(&job("failed", "u1", Status::Running, 0))
        .await
        .unwrap();
    assert!(ctx
        .store
        .finish(&jid("failed"), Status::Failed, Some("boom"), None, at(7))
        .await
        .unwrap());
    let got = ctx.store.get(&jid("failed")).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.error.as_deref()),
        (Status::Failed, Some("boom"))
    );
}

async fn cancelled_is_never_overwritten(ctx: Ctx) {
    ctx.store
        .insert(&job("c", "u1", Status::Scheduled, 0))
        .await
        .unwrap();
    assert!(ctx
        .store
        .finish(&jid("c"), Status::Cancelled, None, None, at(1))
        .await
        .unwrap());
    for late in [Status::Completed, Status::Failed, Status::Cancelled] {
        assert!(!ctx
            .store
            .finish(&jid("c"), late, Some("late"), Some(&json!({})), at(2))
            .await
            .unwrap());
    }
    assert!(!ctx.store.mark_running(&jid("c"), at(3)).await.unwrap());
    let got = ctx.store.get(&jid("c")).await.unwrap().unwrap();
    assert_eq!(got.status, Status::Cancelled);
    assert_eq!((got.error, got.result), (None, None));
    assert_eq!(got.finished_at, Some(at(1)));
}

async fn concurrent_finishes_have_exactly_one_winner(ctx: Ctx) {
    let n = 40;
    for i in 0..n {
        let id = format!("race{i}");
        ctx.store
            .insert(&job(&id, "u1", Status::Running, i))
            .await
            .unwrap();
    }
    // Two stores (two pools, as two processes would have) finish every job at once.
    let other = ctx.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let id = format!("race{i}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let racer = |store: JobStore, status: Status| {
            let (id, barrier) = (id.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let won = store
                    .finish(
                        &jid(&id),
                        status,
                        None,
                        Some(&json!({"by": status.as_str()})),
                        at(9),
                    )
                    .await
                    .unwrap();
                (status, won)
            })
        };
        tasks.push((
            id.clone(),
            racer(ctx.store.clone(), Status::Completed),
            racer(other.clone(), Status::Cancelled),
        ));
    }
    for (id, a, b) in tasks {
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(
            a.1 ^ b.1,
            "{id}: exactly one finish must win, got {a:?} and {b:?}"
        );
        let winner = if a.1 { a.0 } else { b.0 };
        let got = ctx.store.get(&jid(&id)).await.unwrap().unwrap();
        assert_eq!(got.status, winner, "{id}");
        assert_eq!(got.result, Some(json!({"by": winner.as_str()})), "{id}");
    }
}

async fn concurrent_start_and_cancel_end_cancelled(ctx: Ctx) {
    let n = 40;
    for i in 0..n {
        ctx.store
            .insert(&job(&format!("sc{i}"), "u1", Status::Scheduled, i))
            .await
            .unwrap();
    }
    let other = ctx.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let id = format!("sc{i}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let (s, b1, id1) = (ctx.store.clone(), barrier.clone(), id.clone());
        let start = tokio::spawn(async move {
            b1.wait().await;
            s.mark_running(&jid(&id1), at(1)).await.unwrap()
        });
        let (s, id2) = (other.clone(), id.clone());
        let cancel = tokio::spawn(async move {
            barrier.wait().await;
            s.finish(&jid(&id2), Status::Cancelled, None, None, at(2))
                .await
                .unwrap()
        });
        tasks.push((id, start, cancel));
    }
    for (id, start, cancel) in tasks {
        let _started = start.await.unwrap();
        // From scheduled or from running, the cancel always lands, and nothing undoes it.
        assert!(cancel.await.unwrap(), "{id}: the cancel must win");
        assert_eq!(status(&ctx.store, &id).await, Status::Cancelled, "{id}");
    }
}

async fn set_worker_records_pid_or_container(ctx: Ctx) {
    ctx.store
        .insert(&job("w", "u1", Status::Running, 0))
        .await
        .unwrap();
    ctx.store
        .set_worker(&jid("w"), &WorkerRef::Pid(4242))
        .await
        .unwrap();
    assert_eq!(
        ctx.store.get(&jid("w")).await.unwrap().unwrap().worker,
        Some(WorkerRef::Pid(4242))
    );
    ctx.store
        .set_worker(&jid("w"), &WorkerRef::Container("abc123".into()))
        .await
        .unwrap();
    assert_eq!(
        ctx.reopen()
            .await
            .get(&jid("w"))
            .await
            .unwrap()
            .unwrap()
            .worker,
        Some(WorkerRef::Container("abc123".into()))
    );
    // An unknown job is no error (its owner task is gone).
    ctx.store
        .set_worker(&jid("gone"), &WorkerRef::Pid(1))
        .await
        .unwrap();
}

async fn events_replay_in_seq_order_after_reopen(ctx: Ctx) {
    ctx.store
        .insert(&job("e", "u1", Status::Running, 0))
        .await
        .unwrap();
    // Out of order, across batches, interleaved with another job's.
    let batch1 = [
        event("e", 3, "three"),
        event("other", 1, "o1"),
        event("e", 1, "one"),
    ];
    let batch2 = [
        event("e", 2, "two"),
        event("e", 10, "ten"),
        event("other", 2, "o2"),
    ];
    ctx.store.append_events(&rows(&batch1), 100).await.unwrap();
    ctx.store.append_events(&rows(&batch2), 100).await.unwrap();
    drop(ctx.store);

    let store = ctx.target.open().await;
    let all = store.events_after(&jid("e"), 0, 100).await.unwrap();
    assert_eq!(
        all,
        vec![
            event("e", 1, "one"),
            event("e", 2, "two"),
            event("e", 3, "three"),
            event("e", 10, "ten")
        ]
    );
    assert_eq!(
        store.events_after(&jid("e"), 1, 2).await.unwrap(),
        vec![event("e", 2, "two"), event("e", 3, "three")]
    );
    assert_eq!(
        store.events_after(&jid("e"), 3, 100).await.unwrap(),
        vec![event("e", 10, "ten")]
    );
    assert!(store
        .events_after(&jid("e"), 10, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.last_event(&jid("e")).await.unwrap(),
        Some(event("e", 10, "ten"))
    );
    assert_eq!(seqs(&store, "other").await, [1, 2]);
    // A seq beyond i64 is clamped, not an error.
    assert!(store
        .events_after(&jid("e"), u64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_stored_seq_keeps_its_first_event(ctx: Ctx) {
    ctx.store
        .append_events(&rows(&[event("j", 1, "first"), event("j", 2, "two")]), 100)
        .await
        .unwrap();
    // A retried batch (the writer could not tell whether its commit landed) changes nothing.
    ctx.store
        .append_events(
            &rows(&[
                event("j", 1, "second"),
                event("j", 2, "two"),
                event("j", 3, "three"),
            ]),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        ctx.store.events_after(&jid("j"), 0, 100).await.unwrap(),
        vec![
            event("j", 1, "first"),
            event("j", 2, "two"),
            event("j", 3, "three")
        ]
    );
}

async fn large_batches_round_trip(ctx: Ctx) {
    // More rows than one INSERT statement carries.
    let events: Vec<EventEnvelope> = (1..=1_777)
        .rev()
        .map(|seq| event("big", seq, &format!("event {seq}")))
        .collect();
    ctx.store
        .append_events(&rows(&events), 10_000)
        .await
        .unwrap();
    let back = ctx
        .reopen()
        .await
        .events_after(&jid("big"), 0, 10_000)
        .await
        .unwrap();
    assert_eq!(back.len(), 1_777);
    for (i, e) in back.iter().enumerate() {
        assert_eq!(*e, event("big", i as u64 + 1, &format!("event {}", i + 1)));
    }
}

async fn each_job_keeps_its_latest_events(ctx: Ctx) {
    let batch: Vec<EventEnvelope> = (1..=5)
        .map(|s| event("long", s, "x"))
        .chain([event("short", 1, "y"), event("short", 2, "y")])
        .collect();
    ctx.store.append_events(&rows(&batch), 3).await.unwrap();
    assert_eq!(seqs(&ctx.store, "long").await, [3, 4, 5]);
    assert_eq!(seqs(&ctx.store, "short").await, [1, 2]);
    ctx.store
        .append_events(&rows(&[event("long", 6, "x")]), 3)
        .await
        .unwrap();
    assert_eq!(seqs(&ctx.store, "long").await, [4, 5, 6]);
}

async fn expiry_removes_only_events_of_jobs_finished_before(ctx: Ctx) {
    let mut old = job("old", "u1", Status::Completed, 0);
    old.finished_at = Some(at(100));
    let mut recent = job("recent", "u1", Status::Failed, 0);
    recent.finished_at = Some(at(10_000));
    let running = job("running", "u1", Status::Running, 0);
    for j in [&old, &recent, &running] {
        ctx.store.insert(j).await.unwrap();
        let events: Vec<EventEnvelope> = (1..=3).map(|s| event(j.id.as_str(), s, "e")).collect();
        ctx.store.append_events(&rows(&events), 100).await.unwrap();
    }
    assert_eq!(ctx.store.expire_events(at(100)).await.unwrap(), 0);
    assert_eq!(ctx.store.expire_events(at(5_000)).await.unwrap(), 3);
    assert!(seqs(&ctx.store, "old").await.is_empty());
    assert_eq!(seqs(&ctx.store, "recent").await, [1, 2, 3]);
    assert_eq!(seqs(&ctx.store, "running").await, [1, 2, 3]);
    // The record itself stays: only its replay is gone.
    assert!(ctx.store.get(&jid("old")).await.unwrap().is_some());
    assert_eq!(ctx.store.expire_events(at(5_000)).await.unwrap(), 0);
}

async fn reconcile_fails_interrupted_jobs_once(ctx: Ctx) {
    let scheduled = job("scheduled", "u1", Status::Scheduled, 0);
    let mut running = job("running", "u2", Status::Running, 1);
    running.started_at = Some(at(2));
    running.worker = Some(WorkerRef::Pid(777));
    let mut done = job("done", "u1", Status::Completed, 2);
    done.finished_at = Some(at(3));
    let mut cancelled = job("cancelled", "u1", Status::Cancelled, 3);
    cancelled.finished_at = Some(at(4));
    for j in [&scheduled, &running, &done, &cancelled] {
        ctx.store.insert(j).await.unwrap();
    }
    drop(ctx.store);

    let store = ctx.target.open().await;
    let mut interrupted = store.reconcile_interrupted().await.unwrap();
    interrupted.sort_by(|a, b| a.id.cmp(&b.id));
    // As they were: the caller reaps their workers.
    assert_eq!(interrupted, vec![running.clone(), scheduled.clone()]);
    for id in ["scheduled", "running"] {
        let got = store.get(&jid(id)).await.unwrap().unwrap();
        assert_eq!(got.status, Status::Failed, "{id}");
        assert_eq!(got.error.as_deref(), Some(RESTART_ERROR), "{id}");
        assert!(got.finished_at.is_some(), "{id}");
    }
    assert_eq!(store.get(&jid("done")).await.unwrap().unwrap(), done);
    assert_eq!(
        store.get(&jid("cancelled")).await.unwrap().unwrap(),
        cancelled
    );
    assert!(store.reconcile_interrupted().await.unwrap().is_empty());
}

async fn delete_ended_removes_only_the_owners_ended_job(ctx: Ctx) {
    let mut ended = job("ended", "alice", Status::Completed, 0);
    ended.finished_at = Some(at(1));
    let live = job("live", "alice", Status::Running, 0);
    for j in [&ended, &live] {
        ctx.store.insert(j).await.unwrap();
        ctx.store
            .append_events(
                &rows(&[event(j.id.as_str(), 1, "a"), event(j.id.as_str(), 2, "b")]),
                100,
            )
            .await
            .unwrap();
    }
    // Another user's job: refused, and nothing of it goes.
    assert!(!ctx
        .store
        .delete_ended(&jid("ended"), &uid("mallory"))
        .await
        .unwrap());
    assert_eq!(ctx.store.get(&jid("ended")).await.unwrap().unwrap(), ended);
    assert_eq!(seqs(&ctx.store, "ended").await, [1, 2]);
    // Still running: refused.
    assert!(!ctx
        .store
        .delete_ended(&jid("live"), &uid("alice"))
        .await
        .unwrap());
    assert_eq!(seqs(&ctx.store, "live").await, [1, 2]);

    assert!(ctx
        .store
        .delete_ended(&jid("ended"), &uid("alice"))
        .await
        .unwrap());
    assert_eq!(ctx.store.get(&jid("ended")).await.unwrap(), None);
    assert!(seqs(&ctx.store, "ended").await.is_empty());
    assert!(!ctx
        .store
        .delete_ended(&jid("ended"), &uid("alice"))
        .await
        .unwrap());
    // The other job is untouched.
    assert_eq!(ctx.store.get(&jid("live")).await.unwrap().unwrap(), live);
    assert_eq!(seqs(&ctx.store, "live").await, [1, 2]);
}

// ---------------------------------------------------------------------------------------------
// The suite on each backend.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_suite("sqlite", |name| {
        let path = root.join(format!("{name}.db"));
        async move { Target::Sqlite(path) }
    })
    .await;
}

async fn postgres(test: &str) -> Option<PostgresServer> {
    let pg = PostgresServer::start().await;
    if pg.is_none() {
        let why = PostgresServer::why_missing().unwrap_or_default();
        nodetool_testkit::skip_or_fail(test, &why);
    }
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_suite_on_postgres() {
    let Some(pg) = postgres("job_store_suite_on_postgres").await else {
        return;
    };
    run_suite("postgres", |name| {
        let url = pg.create_database(name);
        async move { Target::Postgres(url) }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL at start.

const PASSWORD: &str = "pa55-w0rd-never-shown";

fn assert_hides_password(e: &nodetool_core::Error) {
    let shown = format!("{e} {e:?} {}", e.message());
    assert!(!shown.contains(PASSWORD), "the password leaked: {shown}");
}

#[tokio::test]
async fn a_bad_database_url_is_refused_by_name_without_its_password() {
    let quick = PostgresOptions {
        startup_wait: Duration::ZERO,
        ..PostgresOptions::default()
    };
    for url in [
        format!("mysql://app:{PASSWORD}@db:3306/nodetool"),
        format!("postgres://app:{PASSWORD}@db:notaport/nodetool"),
        format!("postgres://app:{PASSWORD}@/nodetool"),
        format!("postgres://app:{PASSWORD}@db/nodetool?sslmode=sometimes"),
        PASSWORD.to_owned(),
    ] {
        let e = JobStore::connect(&url, &quick).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{url}: {e}");
        assert!(e.message().contains("DATABASE_URL"), "{url}: {e}");
        assert_hides_password(&e);
    }
}

#[tokio::test]
async fn a_postgres_that_stays_down_is_unavailable_after_the_wait() {
    // Nothing listens there.
    let port = nodetool_testkit::free_port();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/nodetool");
    let options = PostgresOptions {
        startup_wait: Duration::from_millis(600),
        ..PostgresOptions::default()
    };
    let e = JobStore::connect(&url, &options).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary(), "{e}");
    let msg = e.message();
    assert!(msg.contains("DATABASE_URL"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}/nodetool")), "{msg}");
    // It did retry.
    assert!(!msg.contains("after 1 attempts"), "{msg}");
    assert_hides_password(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_comes_up_during_the_wait_is_used() {
    let Some(mut pg) = postgres("a_postgres_that_comes_up_during_the_wait_is_used").await else {
        return;
    };
    let url = pg.create_database("late");
    pg.stop();
    let options = PostgresOptions {
        startup_wait: Duration::from_secs(60),
        ..PostgresOptions::default()
    };
    let connecting = tokio::spawn({
        let url = url.clone();
        async move { JobStore::connect(&url, &options).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.restart().await;
    let store = connecting.await.unwrap().unwrap();
    store
        .insert(&job("after-start", "u1", Status::Scheduled, 0))
        .await
        .unwrap();
    assert!(store.get(&jid("after-start")).await.unwrap().is_some());
}

#[tokio::test]
async fn postgres_refusals_are_clear() {
    let Some(pg) = postgres("postgres_refusals_are_clear").await else {
        return;
    };
    let quick = PostgresOptions {
        startup_wait: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    // A database that does not exist: final at once, not retried.
    let missing = format!(
        "postgres://nodetool:{PASSWORD}@127.0.0.1:{}/no_such_db",
        pg.port()
    );
    let e = JobStore::connect(&missing, &quick).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{e}");
    assert!(e.message().contains("does not exist"), "{e}");
    assert_hides_password(&e);

    // A schema migrated by a newer binary.
    let url = pg.create_database("future");
    drop(JobStore::connect(&url, &quick).await.unwrap());
    pg.psql(
        "future",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000000, 'from the future', true, '\\x00', 0)",
    );
    let e = JobStore::connect(&url, &quick).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("29991231000000"), "{e}");
    assert!(e.message().contains("newer nodetool"), "{e}");

    // The same database opened twice at once migrates once.
    let url = pg.create_database("twice");
    let (a, b) = tokio::join!(
        JobStore::connect(&url, &quick),
        JobStore::connect(&url, &quick)
    );
    a.unwrap();
    b.unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations_postgres"))
        .unwrap()
        .count();
    assert_eq!(
        pg.psql("twice", "SELECT count(*) FROM _sqlx_migrations"),
        migrations.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeps_working_after_postgres_restarts() {
    let Some(mut pg) = postgres("a_store_keeps_working_after_postgres_restarts").await else {
        return;
    };
    let url = pg.create_database("restart");
    let store = JobStore::connect(&url, &PostgresOptions::default())
        .await
        .unwrap();
    store
        .insert(&job("before", "u1", Status::Running, 0))
        .await
        .unwrap();
    store
        .append_events(&rows(&[event("before", 1, "a")]), 100)
        .await
        .unwrap();
    // The pool's connections die with the server; new ones are made on the next query.
    pg.restart().await;
    assert!(store
        .finish(&jid("before"), Status::Completed, None, None, at(1))
        .await
        .unwrap());
    store
        .append_events(&rows(&[event("before", 2, "b")]), 100)
        .await
        .unwrap();
    assert_eq!(seqs(&store, "before").await, [1, 2]);
    assert_eq!(status(&store, "before").await, Status::Completed);
}
