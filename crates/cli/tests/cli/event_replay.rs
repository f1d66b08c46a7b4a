//! A finished job's events survive a restart of `nodetool serve` (issue 15, item 16): SSE with
//! `Last-Event-ID` and `/ws reconnect_job` replay the same node and output events with the same
//! `seq` after the server was stopped and started again on the same database, as they did live.
//! `JOB_EVENTS_MAX_PER_JOB` keeps the latest events (the gap is announced), and
//! `JOB_EVENT_RETENTION` drops old jobs' events at start (the record's `job_update` stays).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};
use serde_json::{json, Value};

use crate::support;
use support::{is_terminal, Api, HANG};

/// Each test's own `HOME` (and config directory) for the `nodetool` it runs.
fn home() -> NodetoolHome {
    NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"))
}

/// A running `nodetool serve`, killed when dropped.
struct Server {
    proc: ServeProcess,
}

impl Server {
    fn start(env: &NodetoolHome, vars: &[(&str, &str)]) -> Self {
        Self {
            proc: ServeProcess::start(env.cmd(&["serve"], vars), HANG),
        }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    fn api(&self) -> Api {
        Api::new(self.url(""))
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let status = self.proc.terminate(HANG);
        assert!(status.success(), "serve exited with {status}");
    }
}

fn after(events: &[Value], since: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > since))
        .cloned()
        .collect()
}

/// 20 streamed items into an output: node, output and job events.
fn request() -> Value {
    json!({
        "graph": {
            "nodes": [
                {"id": "gen", "type": "nodetool.test.Generate", "data": {"count": 20}},
                {"id": "out", "type": "nodetool.output.Output", "data": {"name": "items"}},
            ],
            "edges": [
                {"id": "e1", "source": "gen", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
            ],
        },
        "execution_strategy": "threaded",
    })
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_restart_is_the_live_stream() {
    let env = home();
    let server = Server::start(&env, &[]);
    let (id, live) = server.api().run_streamed(&request()).await;
    assert!(is_terminal(live.last().unwrap()), "{live:?}");
    assert_eq!(live.last().unwrap()["status"], "completed", "{live:?}");
    let kinds = types(&live);
    for kind in ["node_update", "output_update", "job_update"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let seqs: Vec<u64> = live.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=live.len() as u64).collect::<Vec<_>>());
    let ws_live = server.api().ws_follow(&id, 0).await;
    assert_eq!(ws_live.len(), live.len(), "{ws_live:?}");
    server.stop();

    let server = Server::start(&env, &[]);
    assert_eq!(server.api().follow(&id, 0).await, live);
    let mid = live.len() as u64 / 2;
    assert_eq!(server.api().follow(&id, mid).await, after(&live, mid));
    assert_eq!(server.api().ws_follow(&id, 0).await, ws_live);
    assert_eq!(server.api().ws_follow(&id, mid).await, after(&ws_live, mid));
    // Past the end: nothing more (no second terminal event).
    let last = live.len() as u64;
    assert_eq!(server.api().follow(&id, last).await, Vec::<Value>::new());

    // Killed instead of stopped: the events were written as the job ran, not at shutdown.
    let (id2, live2) = server.api().run_streamed(&request()).await;
    let deadline = Instant::now() + HANG;
    let db = env.path("nodetool.db");
    while stored_events(&db, &id2).await < live2.len() {
        assert!(
            Instant::now() < deadline,
            "the events never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server); // SIGKILL
    let server = Server::start(&env, &[]);
    assert_eq!(server.api().follow(&id2, 0).await, live2);
    server.stop();
}

/// Rows of the job in `job_events`, read with a second connection as another process would.
async fn stored_events(db: &std::path::Path, id: &str) -> usize {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Row};
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM job_events WHERE job_id = ?")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    n as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_keeps_the_latest_events_and_expires_old_jobs() {
    let env = home();
    let keep = [("JOB_EVENTS_MAX_PER_JOB", "5")];
    let server = Server::start(&env, &keep);
    let (id, live) = server.api().run_streamed(&request()).await;
    assert!(live.len() > 10, "{live:?}");
    server.stop();

    let server = Server::start(&env, &keep);
    let replay = server.api().follow(&id, 0).await;
    let n = live.len() as u64;
    // A lag notice for the events the log no longer has, then the latest five.
    assert_eq!(replay[0]["type"], "lag", "{replay:?}");
    assert_eq!(replay[0]["missed_from_seq"], 1);
    assert_eq!(replay[0]["missed_to_seq"], n - 5);
    assert_eq!(replay[1..], after(&live, n - 5)[..]);
    server.stop();

    // Older than JOB_EVENT_RETENTION at start: only the record's terminal update is left.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let server = Server::start(&env, &[("JOB_EVENT_RETENTION", "1s")]);
    assert_eq!(stored_events(&env.path("nodetool.db"), &id).await, 0);
    let replay = server.api().follow(&id, 0).await;
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0]["type"], "job_update");
    assert_eq!(replay[0]["status"], "completed");
    assert_eq!(replay[0]["result"], live.last().unwrap()["result"]);
    server.stop();
}
