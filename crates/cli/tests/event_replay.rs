//! A finished job's events survive a restart of `nodetool serve` (issue 15, item 16): SSE with
//! `Last-Event-ID` and `/ws reconnect_job` replay the same node and output events with the same
//! `seq` after the server was stopped and started again on the same database, as they did live.
//! `JOB_EVENTS_MAX_PER_JOB` keeps the latest events (the gap is announced), and
//! `JOB_EVENT_RETENTION` drops old jobs' events at start (the record's `job_update` stays).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const HANG: Duration = Duration::from_secs(90);

/// Each test's own `HOME` (and config directory) for the `nodetool` it runs.
fn home() -> NodetoolHome {
    NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"))
}

/// A running `nodetool serve`, killed when dropped.
struct Server {
    proc: ServeProcess,
    port: u16,
}

impl Server {
    fn start(env: &NodetoolHome, vars: &[(&str, &str)]) -> Self {
        let proc = ServeProcess::start(env.cmd(&["serve"], vars), HANG);
        Self {
            port: proc.port(),
            proc,
        }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let status = self.proc.terminate(HANG);
        assert!(status.success(), "serve exited with {status}");
    }

    /// `POST /api/jobs?stream=true`: the job's id and its live SSE events (`data` parsed).
    async fn run_streamed(&self, request: &Value) -> (String, Vec<Value>) {
        let resp = reqwest::Client::new()
            .post(self.url("/api/jobs?stream=true"))
            .json(request)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let events = tokio::time::timeout(HANG, resp.text())
            .await
            .expect("the streamed job did not end")
            .unwrap();
        let events = parse_sse(&events);
        let id = events[0]["job_id"].as_str().unwrap().to_owned();
        (id, events)
    }

    /// `GET /api/jobs/{id}/events` with `Last-Event-ID: since`.
    async fn sse_replay(&self, id: &str, since: u64) -> Vec<Value> {
        let resp = reqwest::Client::new()
            .get(self.url(&format!("/api/jobs/{id}/events")))
            .header("Last-Event-ID", since.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let text = tokio::time::timeout(HANG, resp.text())
            .await
            .expect("the replay did not end")
            .unwrap();
        parse_sse(&text)
    }

    /// `reconnect_job` over `/ws`: every message after the command's reply, up to the
    /// terminal `job_update`.
    async fn ws_replay(&self, id: &str, since: u64) -> Vec<Value> {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let cmd = json!({"command": "reconnect_job", "data": {"job_id": id, "since_seq": since}});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let read = async {
            let mut out = Vec::new();
            loop {
                let msg = ws.next().await.expect("socket open").unwrap();
                let Message::Text(t) = msg else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["command"] == "reconnect_job" {
                    assert!(v["error"].is_null(), "reconnect_job refused: {v}");
                    continue;
                }
                let terminal = is_terminal(&v);
                out.push(v);
                if terminal {
                    return out;
                }
            }
        };
        tokio::time::timeout(HANG, read)
            .await
            .expect("the /ws replay did not end")
    }
}

fn is_terminal(v: &Value) -> bool {
    v["type"] == "job_update"
        && ["completed", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))
}

/// The `data` of each SSE event, checking that `id:` is the event's seq (and absent on a lag
/// notice).
fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(v.trim().to_owned());
                }
            }
            let v: Value = serde_json::from_str(&data?).unwrap();
            match v["seq"].as_u64() {
                Some(seq) => assert_eq!(id, Some(seq.to_string()), "{block}"),
                None => assert_eq!(id, None, "{block}"),
            }
            Some(v)
        })
        .collect()
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
    let (id, live) = server.run_streamed(&request()).await;
    assert!(is_terminal(live.last().unwrap()), "{live:?}");
    assert_eq!(live.last().unwrap()["status"], "completed", "{live:?}");
    let kinds = types(&live);
    for kind in ["node_update", "output_update", "job_update"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let seqs: Vec<u64> = live.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=live.len() as u64).collect::<Vec<_>>());
    let ws_live = server.ws_replay(&id, 0).await;
    assert_eq!(ws_live.len(), live.len(), "{ws_live:?}");
    server.stop();

    let server = Server::start(&env, &[]);
    assert_eq!(server.sse_replay(&id, 0).await, live);
    let mid = live.len() as u64 / 2;
    assert_eq!(server.sse_replay(&id, mid).await, after(&live, mid));
    assert_eq!(server.ws_replay(&id, 0).await, ws_live);
    assert_eq!(server.ws_replay(&id, mid).await, after(&ws_live, mid));
    // Past the end: nothing more (no second terminal event).
    let last = live.len() as u64;
    assert_eq!(server.sse_replay(&id, last).await, Vec::<Value>::new());

    // Killed instead of stopped: the events were written as the job ran, not at shutdown.
    let (id2, live2) = server.run_streamed(&request()).await;
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
    assert_eq!(server.sse_replay(&id2, 0).await, live2);
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
    let (id, live) = server.run_streamed(&request()).await;
    assert!(live.len() > 10, "{live:?}");
    server.stop();

    let server = Server::start(&env, &keep);
    let replay = server.sse_replay(&id, 0).await;
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
    let replay = server.sse_replay(&id, 0).await;
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0]["type"], "job_update");
    assert_eq!(replay[0]["status"], "completed");
    assert_eq!(replay[0]["result"], live.last().unwrap()["result"]);
    server.stop();
}
