//! The durable queue's store invariants (`nodetool_exec::queue`) against a real PostgreSQL (the
//! testkit's): concurrent claimers never share a job, every write of a claimed job is fenced by
//! its lease, an expired lease retries once then fails "worker lost", a cancel reaches waiting
//! and claimed jobs, tags and strategies route jobs; SQLite refuses the queue.
#![allow(clippy::unwrap_used)]

use nodetool_testkit::ids::jid;
use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use nodetool_core::ErrorKind;
use nodetool_engine::{Event, Status};
use nodetool_exec::queue::{
    ClaimFilter, ControlPush, EnqueueOptions, JobControl, QueuedSpec, MAX_PENDING_CONTROLS,
    QUEUE_SPEC_VERSION, WORKER_LOST,
};
use nodetool_exec::{JobRecord, JobStore, PostgresOptions, RunJobRequest, StrategyKind};
use nodetool_testkit::postgres::PostgresServer;
use serde_json::json;

async fn postgres(test: &str) -> Option<PostgresServer> {
    let pg = PostgresServer::start().await;
    if pg.is_none() {
        let why = PostgresServer::why_missing().unwrap_or_default();
        nodetool_testkit::skip_or_fail(test, &why);
    }
    pg
}

async fn store(pg: &PostgresServer, name: &str) -> JobStore {
    JobStore::connect(&pg.create_database(name), &PostgresOptions::default())
        .await
        .unwrap()
}

fn record(id: &str) -> JobRecord {
    JobRecord {
        id: jid(id),
        user_id: "u1".into(),
        workflow_id: "wf".into(),
        strategy: StrategyKind::Threaded,
        status: Status::Scheduled,
        params: json!({}),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        error: None,
        result: None,
        worker: None,
    }
}

fn spec(id: &str) -> QueuedSpec {
    QueuedSpec {
        version: QUEUE_SPEC_VERSION,
        user_id: "u1".into(),
        request: RunJobRequest {
            job_id: Some(id.to_owned()),
            execution_strategy: Some("threaded".into()),
            ..Default::default()
        },
    }
}

fn options(worker_tags: Vec<String>, max_attempts: u32, idempotent: bool) -> EnqueueOptions {
    EnqueueOptions {
        worker_tags,
        max_attempts,
        idempotent,
        max_waiting_per_user: None,
        requires_vram_gb: None,
    }
}

async fn enqueue(store: &JobStore, id: &str, tags: &[&str], max_attempts: u32) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    store
        .enqueue(&record(id), &spec(id), &options(tags, max_attempts, true))
        .await
        .unwrap();
}

/// A job of `user` that is not idempotent (`idempotent: false`) or is.
async fn enqueue_as(store: &JobStore, id: &str, user: &str, max_attempts: u32, idempotent: bool) {
    let mut rec = record(id);
    rec.user_id = user.into();
    let mut sp = spec(id);
    sp.user_id = user.into();
    store
        .enqueue(&rec, &sp, &options(Vec::new(), max_attempts, idempotent))
        .await
        .unwrap();
}

fn all() -> ClaimFilter {
    ClaimFilter {
        strategies: vec!["threaded".into(), "subprocess".into(), "docker".into()],
        tags: vec![],
        ..ClaimFilter::default()
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// Settles leases until `id`'s has expired (the lease is short; this waits, it asserts nothing
/// about time).
async fn expire(store: &JobStore, id: &str) -> Status {
    loop {
        let expired = store.expire_leases().await.unwrap();
        if let Some(e) = expired.into_iter().find(|e| e.job_id == id) {
            return e.status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_queue_on_postgres() {
    let Some(pg) = postgres("job_queue_on_postgres").await else {
        return;
    };

    // --- Concurrent claimers never get the same job; together they get every job.
    {
        let store = store(&pg, "claims").await;
        let n = 60;
        for i in 0..n {
            enqueue(&store, &format!("j{i:03}"), &[], 2).await;
        }
        let mut claimers = Vec::new();
        for w in 0..6 {
            let store = store.clone();
            claimers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim(&format!("w{w}"), &all(), 4, LEASE)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.lease.job_id));
                }
            }));
        }
        let mut seen = Vec::new();
        for c in claimers {
            seen.extend(c.await.unwrap());
        }
        let unique: HashSet<&nodetool_core::JobId> = seen.iter().collect();
        assert_eq!(seen.len(), n, "a job was claimed twice or missed: {seen:?}");
        assert_eq!(unique.len(), n);
        let owners = pg.psql(
            "claims",
            "SELECT count(*) FROM jobs WHERE status = 'running' AND attempts = 1 \
             AND lease_owner IS NOT NULL",
        );
        assert_eq!(owners, n.to_string());
    }

    // --- Lease fencing and expiry: retried once, then "worker lost"; late writes refused.
    {
        let store = store(&pg, "leases").await;
        enqueue(&store, "job", &[], 2).await;
        let short = Duration::from_millis(200);
        let first = store.claim("w1", &all(), 10, short).await.unwrap();
        assert_eq!(first.len(), 1);
        let first = &first[0];
        assert_eq!((first.attempt, first.seq_offset), (1, 0));
        assert_eq!(first.spec().unwrap().request.job_id.as_deref(), Some("job"));
        assert!(store
            .append_events_fenced(&first.lease, &[(1, "{\"e\":1}".into())], 100)
            .await
            .unwrap());
        assert_eq!(expire(&store, "job").await, Status::Scheduled);
        // The expired holder can neither heartbeat nor write events or an outcome.
        assert_eq!(store.renew_lease(&first.lease, LEASE).await.unwrap(), None);
        assert!(!store
            .append_events_fenced(&first.lease, &[(2, "{\"late\":1}".into())], 100)
            .await
            .unwrap());
        assert!(!store
            .finish_fenced(&first.lease, Status::Completed, None, None, &[], 100)
            .await
            .unwrap());
        // The unfenced writer (a local-mode owner) cannot touch it either once claimed.
        let second = store.claim("w2", &all(), 10, short).await.unwrap();
        assert_eq!(second.len(), 1);
        let second = &second[0];
        assert_eq!((second.attempt, second.seq_offset), (2, 1));
        assert_ne!(second.lease.token, first.lease.token);
        assert!(!store
            .finish(&jid("job"), Status::Failed, Some("x"), None, Utc::now())
            .await
            .unwrap());
        assert!(!store
            .finish_fenced(&first.lease, Status::Completed, None, None, &[], 100)
            .await
            .unwrap());
        // Attempts used up: failed, "worker lost", and the job stays failed.
        assert_eq!(expire(&store, "job").await, Status::Failed);
        let rec = store.get(&jid("job")).await.unwrap().unwrap();
        assert_eq!(rec.status, Status::Failed);
        let error = rec.error.unwrap_or_default();
        assert!(error.starts_with(WORKER_LOST), "{error}");
        assert!(error.contains("[worker w2, attempt 2 of 2]"), "{error}");
        assert!(!store
            .finish_fenced(&second.lease, Status::Completed, None, None, &[], 100)
            .await
            .unwrap());
        assert!(store
            .claim("w3", &all(), 10, LEASE)
            .await
            .unwrap()
            .is_empty());
        // The late event of the first holder was refused: only its one event is stored.
        assert_eq!(
            pg.psql(
                "leases",
                "SELECT string_agg(seq::text, ',') FROM job_events"
            ),
            "1"
        );

        // A holder whose lease holds finishes once, with its events in the same transaction.
        enqueue(&store, "ok", &[], 1).await;
        let c = store.claim("w1", &all(), 10, LEASE).await.unwrap();
        let lease = &c[0].lease;
        assert_eq!(store.renew_lease(lease, LEASE).await.unwrap(), Some(false));
        assert!(store
            .finish_fenced(
                lease,
                Status::Completed,
                None,
                Some(&json!({"out": [1]})),
                &[(1, "{\"t\":1}".into())],
                100
            )
            .await
            .unwrap());
        assert!(!store
            .finish_fenced(lease, Status::Failed, Some("again"), None, &[], 100)
            .await
            .unwrap());
        let rec = store.get(&jid("ok")).await.unwrap().unwrap();
        assert_eq!(rec.status, Status::Completed);
        assert_eq!(rec.result, Some(json!({"out": [1]})));
    }

    // --- A job given back before it started: waiting again, the attempt not counted.
    {
        let store = store(&pg, "release").await;
        enqueue(&store, "back", &[], 1).await;
        let c = store.claim("w1", &all(), 1, LEASE).await.unwrap();
        assert!(store.release(&c[0].lease).await.unwrap());
        assert!(!store.release(&c[0].lease).await.unwrap());
        assert_eq!(
            store.get(&jid("back")).await.unwrap().unwrap().status,
            Status::Scheduled
        );
        let again = store.claim("w2", &all(), 1, LEASE).await.unwrap();
        assert_eq!(again[0].attempt, 1);
        assert!(!store
            .finish_fenced(&c[0].lease, Status::Completed, None, None, &[], 100)
            .await
            .unwrap());
    }

    // --- Cancel: a waiting job ends at once; a claimed one is told at its heartbeat.
    {
        let store = store(&pg, "cancel").await;
        enqueue(&store, "waiting", &[], 2).await;
        assert_eq!(
            store.request_cancel(&jid("waiting")).await.unwrap(),
            Some(Status::Scheduled)
        );
        assert_eq!(
            store.get(&jid("waiting")).await.unwrap().unwrap().status,
            Status::Cancelled
        );
        assert!(store
            .claim("w1", &all(), 10, LEASE)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.request_cancel(&jid("waiting")).await.unwrap(), None);

        enqueue(&store, "claimed", &[], 2).await;
        let c = store.claim("w1", &all(), 10, LEASE).await.unwrap();
        assert_eq!(
            store.request_cancel(&jid("claimed")).await.unwrap(),
            Some(Status::Running)
        );
        assert_eq!(
            store.renew_lease(&c[0].lease, LEASE).await.unwrap(),
            Some(true)
        );
        // A lost worker of a cancelled job: cancelled, not retried.
        enqueue(&store, "gone", &[], 2).await;
        let _ = store
            .claim("w1", &all(), 10, Duration::from_millis(100))
            .await
            .unwrap();
        store.request_cancel(&jid("gone")).await.unwrap();
        assert_eq!(expire(&store, "gone").await, Status::Cancelled);
    }

    // --- Routing: tags must all be the worker's; strategies must be among its own.
    {
        let store = store(&pg, "routing").await;
        enqueue(&store, "gpu", &["gpu"], 1).await;
        enqueue(&store, "any", &[], 1).await;
        let cpu = ClaimFilter {
            strategies: vec!["threaded".into()],
            tags: vec!["cpu".into()],
            ..ClaimFilter::default()
        };
        let got = store.claim("cpu", &cpu, 10, LEASE).await.unwrap();
        assert_eq!(
            got.iter()
                .map(|c| c.lease.job_id.as_str())
                .collect::<Vec<_>>(),
            ["any"]
        );
        let docker_only = ClaimFilter {
            strategies: vec!["docker".into()],
            tags: vec!["gpu".into()],
            ..ClaimFilter::default()
        };
        assert!(store
            .claim("d", &docker_only, 10, LEASE)
            .await
            .unwrap()
            .is_empty());
        let gpu = ClaimFilter {
            strategies: vec!["threaded".into()],
            tags: vec!["gpu".into(), "big".into()],
            ..ClaimFilter::default()
        };
        let got = store.claim("g", &gpu, 10, LEASE).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].lease.job_id, "gpu");
    }

    // --- A spec from a newer nodetool: this worker does not claim it (and would refuse it
    // with a message); with no live worker able to read it, it is reported, then failed.
    {
        let store = store(&pg, "versions").await;
        enqueue(&store, "new", &[], 1).await;
        pg.psql(
            "versions",
            "UPDATE jobs SET spec = '{\"version\": 99, \"user_id\": \"u1\", \"request\": {}}'",
        );
        assert!(store.claim("w", &all(), 1, LEASE).await.unwrap().is_empty());
        let text = pg.psql("versions", "SELECT spec::text FROM jobs WHERE id = 'new'");
        let claimed = nodetool_exec::queue::ClaimedJob {
            lease: nodetool_exec::queue::Lease {
                job_id: jid("new"),
                token: "t".into(),
            },
            spec_text: Some(text),
            attempt: 1,
            seq_offset: 0,
        };
        let why = claimed.spec().unwrap_err();
        assert!(why.contains("newer nodetool"), "{why}");
        store.register_worker(&worker("old", &[])).await.unwrap();
        let found = store.settle_unclaimable(LEASE, LEASE, 100).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].failed);
        assert!(
            found[0].reason.contains("queue spec version 99"),
            "{found:?}"
        );
        assert!(
            found[0].reason.contains("old (strategies threaded"),
            "{found:?}"
        );
    }

    // --- Only idempotent jobs are retried after a lost worker; others fail naming it.
    {
        let store = store(&pg, "idempotent").await;
        enqueue_as(&store, "pure", "u1", 2, true).await;
        enqueue_as(&store, "effects", "u1", 2, false).await;
        let short = Duration::from_millis(200);
        let got = store.claim("lost-w", &all(), 10, short).await.unwrap();
        assert_eq!(got.len(), 2);
        let mut ends = std::collections::HashMap::new();
        while ends.len() < 2 {
            for e in store.expire_leases().await.unwrap() {
                ends.insert(e.job_id, e.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ends["pure"], Status::Scheduled);
        assert_eq!(ends["effects"], Status::Failed);
        let rec = store.get(&jid("effects")).await.unwrap().unwrap();
        let error = rec.error.unwrap_or_default();
        assert!(error.starts_with(WORKER_LOST), "{error}");
        assert!(error.contains("[worker lost-w, attempt 1 of 2]"), "{error}");
        assert!(error.contains("not idempotent"), "{error}");
    }

    // --- Jobs no live worker can take: reported while young, failed past the timeout with
    // an error naming the tags they need and those the live workers offer.
    {
        let store = store(&pg, "unclaimable").await;
        enqueue(&store, "gpu-job", &["gpu"], 1).await;
        enqueue(&store, "plain", &[], 1).await;
        store
            .register_worker(&worker("cpu-w", &["cpu"]))
            .await
            .unwrap();
        let young = store.settle_unclaimable(LEASE, LEASE, 100).await.unwrap();
        assert_eq!(
            young
                .iter()
                .map(|u| (u.job_id.as_str(), u.failed))
                .collect::<Vec<_>>(),
            [("gpu-job", false)]
        );
        // Its followers are told why it waits, once per reason (a second round adds nothing).
        store.settle_unclaimable(LEASE, LEASE, 100).await.unwrap();
        let waiting = store.events_after(&jid("gpu-job"), 0, 100).await.unwrap();
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        let Event::JobUpdate(u) = &waiting[0].event else {
            panic!("{waiting:?}");
        };
        assert_eq!(u.status, Status::Scheduled);
        let message = u.message.clone().unwrap_or_default();
        assert!(message.contains("worker_tags [gpu]"), "{message}");
        let old = store
            .settle_unclaimable(LEASE, Duration::ZERO, 100)
            .await
            .unwrap();
        assert_eq!(old.len(), 1);
        assert!(old[0].failed);
        let rec = store.get(&jid("gpu-job")).await.unwrap().unwrap();
        assert_eq!(rec.status, Status::Failed);
        let error = rec.error.unwrap_or_default();
        assert!(error.contains("worker_tags [gpu]"), "{error}");
        assert!(
            error.contains("cpu-w (strategies threaded,subprocess,docker; tags [cpu]"),
            "{error}"
        );
        let events = store.events_after(&jid("gpu-job"), 0, 100).await.unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        // Once the worker stops, nothing is live: the plain job is reported too.
        store.unregister_worker("cpu-w").await.unwrap();
        let found = store.settle_unclaimable(LEASE, LEASE, 100).await.unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].reason.contains("no worker is live"), "{found:?}");
    }
}

/// Controls sent to a queued job from any server wait for its worker in order, wake it, stop
/// at the cap (the sender waits) and stop for good once the job has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_reach_the_worker_in_order_up_to_the_cap_and_end_with_the_job() {
    let Some(pg) = postgres("controls_reach_the_worker_in_order").await else {
        return;
    };
    let store = store(&pg, "controls").await;
    let mut wake = store.wakeups().unwrap();
    enqueue(&store, "ctl", &[], 1).await;
    let input = |v: i64| JobControl::Input {
        input: "text".into(),
        handle: "output".into(),
        value: json!(v),
    };
    // Before a worker claims it (a paused start) and while it runs: both are kept.
    assert_eq!(
        store
            .push_control(&jid("ctl"), &JobControl::Pause)
            .await
            .unwrap(),
        ControlPush::Pushed
    );
    let claimed = store.claim("w", &all(), 1, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    for v in 1..=3 {
        assert_eq!(
            store.push_control(&jid("ctl"), &input(v)).await.unwrap(),
            ControlPush::Pushed
        );
    }
    // The worker hears of them (the LISTEN connection may announce itself first).
    let heard = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let nodetool_exec::queue::Wakeup::Control(id) = wake.recv().await.unwrap() {
                return id;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(heard, "ctl");
    let rows = store.controls_after(&jid("ctl"), 0, 100).await.unwrap();
    let controls: Vec<JobControl> = rows
        .iter()
        .map(|(_, t)| serde_json::from_str(t).unwrap())
        .collect();
    assert_eq!(controls, [JobControl::Pause, input(1), input(2), input(3)]);
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "{rows:?}");
    // Applied ones are forgotten; reading after a seq skips what came before.
    store.ack_controls(&jid("ctl"), rows[1].0).await.unwrap();
    let rest = store.controls_after(&jid("ctl"), 0, 100).await.unwrap();
    assert_eq!(rest, rows[2..]);
    assert_eq!(
        store
            .controls_after(&jid("ctl"), rows[2].0, 100)
            .await
            .unwrap(),
        rows[3..]
    );
    // At the cap the sender is told to wait; an ack makes room.
    let pending = rest.len() as i64;
    for v in pending..MAX_PENDING_CONTROLS {
        assert_eq!(
            store.push_control(&jid("ctl"), &input(v)).await.unwrap(),
            ControlPush::Pushed
        );
    }
    assert_eq!(
        store.push_control(&jid("ctl"), &input(0)).await.unwrap(),
        ControlPush::Full
    );
    store.ack_controls(&jid("ctl"), rows[2].0).await.unwrap();
    assert_eq!(
        store.push_control(&jid("ctl"), &input(0)).await.unwrap(),
        ControlPush::Pushed
    );
    // The outcome drops what is left; nothing more is taken.
    let lease = claimed[0].lease.clone();
    assert!(store
        .finish_fenced(&lease, Status::Completed, None, None, &[], 100)
        .await
        .unwrap());
    assert!(store
        .controls_after(&jid("ctl"), 0, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.push_control(&jid("ctl"), &input(9)).await.unwrap(),
        ControlPush::Ended
    );
    assert_eq!(
        store
            .push_control(&jid("no-such-job"), &input(9))
            .await
            .unwrap(),
        ControlPush::Ended
    );
    // The spec a server checks inputs against.
    let spec = store.queued_spec(&jid("ctl")).await.unwrap().unwrap();
    assert_eq!(spec.request.job_id.as_deref(), Some("ctl"));
    assert!(store
        .queued_spec(&jid("no-such-job"))
        .await
        .unwrap()
        .is_none());
}

/// `MAX_QUEUED_JOBS_PER_USER` holds across servers: concurrent submissions of one user to two
/// stores (two servers) leave exactly the limit waiting; the rest are `RateLimited` with a
/// `retry_after`, another user is not held back, and a claim makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_waiting_limit_per_user_holds_across_servers() {
    let Some(pg) = postgres("the_waiting_limit_per_user_holds_across_servers").await else {
        return;
    };
    let url = pg.create_database("waiting");
    let connect = || async {
        JobStore::connect(&url, &PostgresOptions::default())
            .await
            .unwrap()
    };
    let servers = [connect().await, connect().await];
    let limited = |user: &str, id: &str| {
        let mut rec = record(id);
        rec.user_id = user.into();
        let mut sp = spec(id);
        sp.user_id = user.into();
        let mut opts = options(Vec::new(), 1, true);
        opts.max_waiting_per_user = Some(3);
        (rec, sp, opts)
    };
    let tries = (0..12).map(|i| {
        let store = servers[i % 2].clone();
        let (rec, sp, opts) = limited("u1", &format!("w{i}"));
        async move { store.enqueue(&rec, &sp, &opts).await }
    });
    let results = futures::future::join_all(tries).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.kind(), ErrorKind::RateLimited, "{r}");
        assert!(r.to_string().contains("MAX_QUEUED_JOBS_PER_USER"), "{r}");
        assert!(r.is_temporary(), "{r}");
        assert_eq!(r.context_value("retry_after"), Some("5"), "{r}");
    }
    let (rec, sp, opts) = limited("u2", "other-user");
    servers[0].enqueue(&rec, &sp, &opts).await.unwrap();
    assert_eq!(
        servers[1].claim("w", &all(), 1, LEASE).await.unwrap().len(),
        1
    );
    let (rec, sp, opts) = limited("u1", "after-claim");
    servers[1].enqueue(&rec, &sp, &opts).await.unwrap();
}

/// VRAM hints route a queued job: a worker offering less does not claim it, one offering
/// enough (or not checking) does; a job no live worker has room for is reported naming its need
/// and each worker's offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_claimed_only_by_a_worker_with_the_vram_it_needs() {
    let Some(pg) = postgres("a_job_is_claimed_only_by_a_worker_with_the_vram_it_needs").await
    else {
        return;
    };
    let store = store(&pg, "vram").await;
    let mut opts = options(Vec::new(), 1, true);
    opts.requires_vram_gb = Some(12.0);
    store
        .enqueue(&record("big"), &spec("big"), &opts)
        .await
        .unwrap();
    let offering = |gb: Option<f64>| ClaimFilter {
        vram_gb: gb,
        ..all()
    };
    for filter in [offering(Some(8.0)), offering(Some(0.0))] {
        assert!(store
            .claim("small", &filter, 10, LEASE)
            .await
            .unwrap()
            .is_empty());
    }
    let mut small = worker("small-gpu", &[]);
    small.vram_gb = Some(8.0);
    store.register_worker(&small).await.unwrap();
    let waiting = store.settle_unclaimable(LEASE, LEASE, 100).await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let reason = &waiting[0].reason;
    assert!(reason.contains("12 GB of VRAM"), "{reason}");
    assert!(
        reason.contains("small-gpu (strategies threaded,subprocess,docker; tags []; 8 GB of VRAM"),
        "{reason}"
    );
    let claimed = store
        .claim("big-gpu", &offering(Some(24.0)), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // A worker that does not check takes hinted jobs too.
    let mut opts = options(Vec::new(), 1, true);
    opts.requires_vram_gb = Some(40.0);
    store
        .enqueue(&record("huge"), &spec("huge"), &opts)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim("any", &offering(None), 10, LEASE)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn worker(id: &str, tags: &[&str]) -> nodetool_exec::queue::WorkerInfo {
    nodetool_exec::queue::WorkerInfo {
        id: id.to_owned(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        strategies: all().strategies,
        spec_version: QUEUE_SPEC_VERSION,
        binary_version: "test".into(),
        vram_gb: None,
    }
}

/// Several pools claim at once under MAX_JOBS_PER_USER and JOB_QUEUE_MAX_RUNNING: the limits
/// hold at every moment (checked by the claimers and by an outside observer of the table),
/// every job runs once, and a fresh claim takes each user's oldest jobs round-robin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_limits_hold_across_concurrent_claimers() {
    use std::sync::{Arc, Mutex};
    let Some(pg) = postgres("claim_limits_hold_across_concurrent_claimers").await else {
        return;
    };
    let (per_user, total) = (2u32, 5u32);
    let limited = || ClaimFilter {
        max_per_user: Some(per_user),
        max_running: Some(total),
        ..all()
    };

    // Fair order: 3 users, user a's backlog first; one claim takes 2 of each, oldest first.
    {
        let store = store(&pg, "fair").await;
        for i in 0..4 {
            enqueue_as(&store, &format!("a{i}"), "a", 1, true).await;
        }
        enqueue_as(&store, "b0", "b", 1, true).await;
        enqueue_as(&store, "c0", "c", 1, true).await;
        enqueue_as(&store, "c1", "c", 1, true).await;
        let filter = ClaimFilter {
            max_per_user: Some(2),
            ..all()
        };
        let got = store.claim("w", &filter, 10, LEASE).await.unwrap();
        let mut ids: Vec<&str> = got.iter().map(|c| c.lease.job_id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["a0", "a1", "b0", "c0", "c1"]);
    }

    let name = "limits";
    let url = pg.create_database(name);
    let first = JobStore::connect(&url, &PostgresOptions::default())
        .await
        .unwrap();
    let users = ["u1", "u2", "u3"];
    let per = 15;
    for i in 0..per {
        for u in users {
            enqueue_as(&first, &format!("{u}-{i}"), u, 1, true).await;
        }
    }
    let n = per * users.len();
    // (user -> leases held) as the claimers see it: a job enters after its claim committed and
    // leaves before its outcome is written, so this is always a subset of the running rows.
    let held: Arc<Mutex<Vec<(nodetool_core::UserId, nodetool_core::JobId)>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..4 {
        let store = JobStore::connect(&url, &PostgresOptions::default())
            .await
            .unwrap();
        for t in 0..2 {
            let (store, held, filter) = (store.clone(), held.clone(), limited());
            tasks.push(tokio::spawn(async move {
                let owner = format!("p{p}t{t}");
                let mut ran = Vec::new();
                let mut idle = 0;
                while idle < 40 {
                    let got = store.claim(&owner, &filter, 3, LEASE).await.unwrap();
                    if got.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    {
                        let mut h = held.lock().unwrap();
                        for c in &got {
                            let user = c.spec().unwrap().user_id;
                            h.push((user, c.lease.job_id.clone()));
                        }
                        for u in ["u1", "u2", "u3"] {
                            let count = h.iter().filter(|(x, _)| x == u).count();
                            assert!(count <= per_user as usize, "{u}: {h:?}");
                        }
                        assert!(h.len() <= total as usize, "{h:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    for c in got {
                        held.lock().unwrap().retain(|(_, id)| id != &c.lease.job_id);
                        assert!(store
                            .finish_fenced(&c.lease, Status::Completed, None, None, &[], 100)
                            .await
                            .unwrap());
                        ran.push(c.lease.job_id);
                    }
                }
                ran
            }));
        }
    }
    // An outside observer of the table while they run: per user and in total, never above.
    let mut checks = 0u32;
    while !tasks.iter().all(|t| t.is_finished()) {
        let most = pg.psql(
            name,
            "SELECT COALESCE(max(n), 0) || ' ' || COALESCE(sum(n), 0) FROM (SELECT count(*) AS n \
             FROM jobs WHERE status = 'running' AND lease_expires_at > now() GROUP BY user_id) r",
        );
        let (user_most, running) = most.split_once(' ').unwrap();
        assert!(user_most.parse::<u32>().unwrap() <= per_user, "{most}");
        assert!(running.parse::<u32>().unwrap() <= total, "{most}");
        checks += 1;
    }
    assert!(checks > 0);
    let mut ran = Vec::new();
    for t in tasks {
        ran.extend(t.await.unwrap());
    }
    let unique: HashSet<&nodetool_core::JobId> = ran.iter().collect();
    assert_eq!((ran.len(), unique.len()), (n, n), "{ran:?}");
}

#[tokio::test]
async fn sqlite_refuses_the_queue() {
    let store = JobStore::in_memory().await.unwrap();
    let e = store
        .enqueue(&record("x"), &spec("x"), &options(Vec::new(), 1, true))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    assert!(store.wakeups().is_none());
}
