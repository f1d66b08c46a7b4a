//! `/ws` through a real socket (tokio-tungstenite), JSON text and MessagePack binary.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use futures::{SinkExt, StreamExt};
use jobs_support::{busy_graph, sleep_graph, start, token};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Json,
    MsgPack,
}

struct Client {
    ws: Ws,
    mode: Mode,
    /// Job events that arrived while waiting for a command's reply.
    early: std::collections::VecDeque<Value>,
}

async fn connect(url: &str, bearer: Option<&str>, mode: Mode) -> Result<Client, WsError> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(Client {
        ws,
        mode,
        early: Default::default(),
    })
}

fn ws_url(http: &str, query: &str) -> String {
    format!("{}/ws{query}", http.replacen("http://", "ws://", 1))
}

impl Client {
    async fn send(&mut self, v: Value) {
        let msg = match self.mode {
            Mode::Json => Message::text(v.to_string()),
            Mode::MsgPack => Message::binary(rmp_serde::to_vec_named(&v).unwrap()),
        };
        self.ws.send(msg).await.unwrap();
    }

    /// The next frame, asserting it is in this client's format.
    async fn recv(&mut self) -> Value {
        loop {
            match self.ws.next().await.expect("socket open").unwrap() {
                Message::Text(t) => {
                    assert_eq!(self.mode, Mode::Json, "text frame in binary mode: {t}");
                    return serde_json::from_str(t.as_str()).unwrap();
                }
                Message::Binary(b) => {
                    assert_eq!(self.mode, Mode::MsgPack, "binary frame in text mode");
                    return rmp_serde::from_slice(&b).unwrap();
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends a command and returns its reply; job events that arrive first are kept for
    /// [`Self::next_event`].
    async fn command(&mut self, command: &str, data: Value) -> Value {
        self.send(json!({"command": command, "data": data})).await;
        self.reply().await
    }

    async fn reply(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v.get("seq").is_some() || v["type"] == "lag" {
                self.early.push_back(v);
            } else {
                return v;
            }
        }
    }

    async fn next_event(&mut self) -> Value {
        match self.early.pop_front() {
            Some(v) => v,
            None => self.recv().await,
        }
    }

    /// Events of `job_id` until its terminal job_update (other frames are returned apart).
    async fn events_until_done(&mut self, job_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.next_event().await;
            assert_eq!(v["job_id"], job_id, "{v}");
            let done = v["type"] == "job_update"
                && ["completed", "failed", "cancelled"]
                    .contains(&v["status"].as_str().unwrap_or(""));
            out.push(v);
            if done {
                return out;
            }
        }
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

async fn run_and_reconnect(mode: Mode) {
    let s = start("local").await;
    let mut c = connect(&ws_url(&s.url, ""), None, mode).await.unwrap();
    // user_id in the command is ignored.
    let reply = c
        .command(
            "run_job",
            json!({"graph": busy_graph(10, 5), "user_id": "mallory"}),
        )
        .await;
    assert_eq!(reply["message"], "Job started", "{reply}");
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    let events = c.events_until_done(&job_id).await;
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(
        last["result"]["numbers"],
        json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    );
    assert_eq!(
        s.manager
            .get(&nodetool_core::JobId::parse(&job_id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "1"
    );

    // Reconnect after seq 3: exactly the events after it, identical to the first time.
    let reply = c
        .command("reconnect_job", json!({"job_id": job_id, "since_seq": 3}))
        .await;
    assert_eq!(reply["job_id"], job_id.as_str(), "{reply}");
    let replay = c.events_until_done(&job_id).await;
    assert_eq!(replay, events[3..].to_vec());

    // get_status for the job, and the socket is still usable.
    let status = c.command("get_status", json!({"job_id": job_id})).await;
    assert_eq!(status["status"], "completed", "{status}");
    let pong = c.command("ping", json!({})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_run_job_streams_events_and_reconnect_replays() {
    run_and_reconnect(Mode::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_run_job_streams_events_and_reconnect_replays() {
    run_and_reconnect(Mode::MsgPack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_job_ping_and_errors_keep_the_socket_usable() {
    let s = start("local").await;
    let mut c = connect(&ws_url(&s.url, ""), None, Mode::Json)
        .await
        .unwrap();

    let pong = c.command("ping", json!({})).await;
    assert_eq!(pong["type"], "pong");
    assert!(pong["ts"].as_f64().unwrap() > 0.0);
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");

    let err = c.command("no_such_command", json!({})).await;
    assert_eq!(err["error"], "unknown_command", "{err}");
    c.ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(c.recv().await["error"], "invalid_command");
    c.send(json!({"data": {}})).await;
    assert_eq!(c.recv().await["error"], "invalid_message");
    let err = c
        .command(
            "stream_input",
            json!({"job_id": "x", "input": "a", "value": 1}),
        )
        .await;
    assert_eq!(err["error"], "not_found", "{err}");
    let err = c.command("run_job", json!({"params": {}})).await;
    assert_eq!(err["error"], "job_rejected", "{err}");

    let reply = c
        .command("run_job", json!({"graph": sleep_graph(30.0)}))
        .await;
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    let status = c.command("get_status", json!({})).await;
    assert_eq!(
        status["active_jobs"][0]["job_id"],
        job_id.as_str(),
        "{status}"
    );
    let r = c.command("cancel_job", json!({"job_id": job_id})).await;
    assert_eq!(r["message"], "Job cancellation requested", "{r}");
    // The job's own terminal event still arrives on this socket.
    let events = c.events_until_done(&job_id).await;
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    assert_eq!(
        s.manager
            .wait(&nodetool_core::JobId::parse(&job_id).unwrap())
            .await
            .unwrap()
            .status,
        nodetool_engine::Status::Cancelled
    );
    let again = c.command("cancel_job", json!({"job_id": job_id})).await;
    assert_eq!(again["error"], "not_running", "{again}");
    let status = c.command("get_status", json!({"job_id": "nope"})).await;
    assert_eq!(status["status"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_mode_switches_the_reply_format() {
    let s = start("local").await;
    let mut c = connect(&ws_url(&s.url, ""), None, Mode::Json)
        .await
        .unwrap();
    c.send(json!({"command": "set_mode", "data": {"mode": "binary"}}))
        .await;
    c.mode = Mode::MsgPack;
    let reply = c.recv().await;
    assert_eq!(reply["mode"], "binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_and_jobs_are_per_user() {
    let s = start("supabase").await;
    let url = ws_url(&s.url, "");
    match connect(&url, None, Mode::Json).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            assert!(resp.headers().contains_key("www-authenticate"));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected without a token"),
    }
    match connect(&ws_url(&s.url, "?api_key=wrong"), None, Mode::Json).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("unexpected {:?}", other.is_ok()),
    }

    let mut alice = connect(&url, Some(&token("alice")), Mode::Json)
        .await
        .unwrap();
    let reply = alice
        .command(
            "run_job",
            json!({"graph": sleep_graph(30.0), "user_id": "bob"}),
        )
        .await;
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.manager
            .get(&nodetool_core::JobId::parse(&job_id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "alice"
    );

    // Bob, with ?api_key=, cannot see, follow or cancel Alice's job.
    let bob_url = ws_url(&s.url, &format!("?api_key={}", token("bob")));
    let mut bob = connect(&bob_url, None, Mode::MsgPack).await.unwrap();
    let r = bob
        .command("reconnect_job", json!({"job_id": job_id, "since_seq": 0}))
        .await;
    assert_eq!(r["error"], "not_found", "{r}");
    let r = bob.command("cancel_job", json!({"job_id": job_id})).await;
    assert_eq!(r["error"], "not_found", "{r}");
    let r = bob.command("get_status", json!({"job_id": job_id})).await;
    assert_eq!(r["status"], "not_found", "{r}");
    assert!(!s
        .manager
        .get(&nodetool_core::JobId::parse(&job_id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .status
        .is_terminal());

    let r = alice.command("cancel_job", json!({"job_id": job_id})).await;
    assert_eq!(r["message"], "Job cancellation requested", "{r}");
}
