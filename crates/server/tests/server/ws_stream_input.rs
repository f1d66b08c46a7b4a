//! `/ws` `stream_input` / `end_input_stream` through a real socket (tokio-tungstenite): a job
//! started with `streaming_inputs` collects what the client pushes, and every mistake is a clear
//! error reply on a socket that stays usable.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use std::collections::VecDeque;

use futures::{SinkExt, StreamExt};
use jobs_support::{sleep_graph, start, token};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

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
    events: VecDeque<Value>,
}

async fn connect(http: &str, bearer: Option<&str>, mode: Mode) -> Client {
    let url = format!("{}/ws", http.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    Client {
        ws,
        mode,
        events: VecDeque::new(),
    }
}

impl Client {
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

    /// Sends a command and returns its reply (job events meanwhile are kept).
    async fn command(&mut self, command: &str, data: Value) -> Value {
        let frame = json!({"command": command, "data": data});
        let msg = match self.mode {
            Mode::Json => Message::text(frame.to_string()),
            Mode::MsgPack => Message::binary(rmp_serde::to_vec_named(&frame).unwrap()),
        };
        self.ws.send(msg).await.unwrap();
        loop {
            let v = self.recv().await;
            if v.get("seq").is_some() {
                self.events.push_back(v);
            } else {
                return v;
            }
        }
    }

    /// The job's events through its terminal job_update; returns that update.
    async fn until_done(&mut self, job_id: &str) -> Value {
        loop {
            let v = match self.events.pop_front() {
                Some(v) => v,
                None => self.recv().await,
            };
            assert_eq!(v["job_id"], job_id, "{v}");
            let terminal = v["type"] == "job_update"
                && ["completed", "failed", "cancelled"].contains(&v["status"].as_str().unwrap());
            if terminal {
                return v;
            }
        }
    }

    async fn run_collect_job(&mut self) -> String {
        let reply = self
            .command(
                "run_job",
                json!({"graph": collect_graph(), "streaming_inputs": true}),
            )
            .await;
        assert_eq!(reply["message"], "Job started", "{reply}");
        reply["job_id"].as_str().unwrap().to_owned()
    }
}

/// StringInput `text` → Collect → Output `items`.
fn collect_graph() -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "nodetool.input.StringInput", "data": {"name": "text"}},
            {"id": "col", "type": "nodetool.control.Collect", "data": {}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "items"}}
        ],
        "edges": [
            {"id": "e1", "source": "in", "sourceHandle": "output", "target": "col", "targetHandle": "input_item"},
            {"id": "e2", "source": "col", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    })
}

async fn push_three_end_and_collect(mode: Mode) {
    let s = start("local").await;
    let mut c = connect(&s.url, None, mode).await;
    let job_id = c.run_collect_job().await;

    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "v1"}),
        )
        .await;
    assert_eq!(r["command"], "stream_input", "{r}");
    assert_eq!(r["message"], "Input value pushed", "{r}");
    assert!(
        r.get("handle").is_none(),
        "no handle named, none echoed: {r}"
    );
    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "v2", "handle": "output"}),
        )
        .await;
    assert_eq!(r["message"], "Input value pushed", "{r}");
    let chunk = json!({"type": "chunk", "content": "v3", "done": true});
    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": chunk}),
        )
        .await;
    assert_eq!(r["message"], "Input value pushed", "{r}");
    let r = c
        .command(
            "end_input_stream",
            json!({"job_id": job_id, "input": "text"}),
        )
        .await;
    assert_eq!(r["command"], "end_input_stream", "{r}");
    assert_eq!(r["message"], "Input stream ended", "{r}");

    let done = c.until_done(&job_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["items"],
        json!([["v1", "v2", chunk]]),
        "{done}"
    );
    let rec = s
        .manager
        .get(&nodetool_core::JobId::parse(&job_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.result, Some(json!({"items": [["v1", "v2", chunk]]})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stream_input_three_values_then_end() {
    push_three_end_and_collect(Mode::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_stream_input_three_values_then_end() {
    push_three_end_and_collect(Mode::MsgPack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_are_clear_errors_and_the_socket_stays_usable() {
    let s = start("local").await;
    let mut c = connect(&s.url, None, Mode::Json).await;
    let job_id = c.run_collect_job().await;

    // Missing or malformed fields.
    let cases = [
        ("stream_input", json!({"input": "text", "value": 1})),
        ("stream_input", json!({"job_id": job_id, "value": "x"})),
        ("stream_input", json!({"job_id": job_id, "input": "text"})),
        (
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "x", "handle": 7}),
        ),
        ("end_input_stream", json!({"job_id": job_id})),
        ("end_input_stream", json!({"input": "text"})),
    ];
    for (command, data) in cases {
        let r = c.command(command, data.clone()).await;
        assert_eq!(r["command"], command, "{data}: {r}");
        assert_eq!(r["error"], "invalid_command", "{data}: {r}");
        assert!(!r["message"].as_str().unwrap().is_empty(), "{r}");
    }

    // Unknown job, unknown input, unknown handle, wrong type.
    let r = c
        .command(
            "stream_input",
            json!({"job_id": "no-such-job", "input": "text", "value": "x"}),
        )
        .await;
    assert_eq!(r["error"], "not_found", "{r}");
    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "nope", "value": "x"}),
        )
        .await;
    assert_eq!(r["error"], "not_found", "{r}");
    assert!(r["message"].as_str().unwrap().contains("`nope`"), "{r}");
    let r = c
        .command(
            "end_input_stream",
            json!({"job_id": job_id, "input": "text", "handle": "elsewhere"}),
        )
        .await;
    assert_eq!(r["error"], "not_found", "{r}");
    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": {"a": 1}}),
        )
        .await;
    assert_eq!(r["error"], "invalid_input", "{r}");

    // The job is still fine: one value, the end, and a push after the end.
    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "only"}),
        )
        .await;
    assert_eq!(r["message"], "Input value pushed", "{r}");
    let r = c
        .command(
            "end_input_stream",
            json!({"job_id": job_id, "input": "text"}),
        )
        .await;
    assert_eq!(r["message"], "Input stream ended", "{r}");
    let done = c.until_done(&job_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["items"], json!([["only"]]));
    let r = c
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "after"}),
        )
        .await;
    assert_eq!(r["error"], "not_running", "{r}");

    // A push after the end, to a job that outlives its stream (a sleeping branch).
    let mut g = collect_graph();
    g["nodes"].as_array_mut().unwrap().extend([
        json!({"id": "nap", "type": "nodetool.test.Sleep", "data": {"seconds": 30, "value": 1}}),
        json!({"id": "nap_out", "type": "nodetool.output.Output", "data": {"name": "nap"}}),
    ]);
    g["edges"].as_array_mut().unwrap().push(
        json!({"id": "e3", "source": "nap", "sourceHandle": "output", "target": "nap_out", "targetHandle": "value"}),
    );
    let r = c
        .command("run_job", json!({"graph": g, "streaming_inputs": true}))
        .await;
    let sleepy = r["job_id"].as_str().unwrap().to_owned();
    let r = c
        .command(
            "end_input_stream",
            json!({"job_id": sleepy, "input": "text"}),
        )
        .await;
    assert_eq!(r["message"], "Input stream ended", "{r}");
    let r = c
        .command(
            "stream_input",
            json!({"job_id": sleepy, "input": "text", "value": "late"}),
        )
        .await;
    assert_eq!(r["error"], "invalid_input", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("already ended"),
        "{r}"
    );
    c.command("cancel_job", json!({"job_id": sleepy})).await;
    assert_eq!(c.until_done(&sleepy).await["status"], "cancelled");

    // A job without streaming input nodes, started without streaming_inputs (a long sleep
    // beside a StringInput), keeps its inputs fixed: NodeTool's rule.
    let mut g = sleep_graph(30.0);
    g["nodes"].as_array_mut().unwrap().extend([
        json!({"id": "t", "type": "nodetool.input.StringInput", "data": {"name": "text", "value": "v"}}),
        json!({"id": "t_out", "type": "nodetool.output.Output", "data": {"name": "text"}}),
    ]);
    g["edges"].as_array_mut().unwrap().push(
        json!({"id": "e9", "source": "t", "sourceHandle": "output", "target": "t_out", "targetHandle": "value"}),
    );
    let r = c.command("run_job", json!({"graph": g})).await;
    let fixed = r["job_id"].as_str().unwrap().to_owned();
    let r = c
        .command(
            "stream_input",
            json!({"job_id": fixed, "input": "text", "value": "x"}),
        )
        .await;
    assert_eq!(r["error"], "invalid_input", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("not streamed"),
        "{r}"
    );
    let r = c
        .command(
            "stream_input",
            json!({"job_id": fixed, "input": "nope", "value": "x"}),
        )
        .await;
    assert_eq!(r["error"], "not_found", "{r}");
    let r = c.command("cancel_job", json!({"job_id": fixed})).await;
    assert_eq!(r["message"], "Job cancellation requested", "{r}");
    assert_eq!(c.until_done(&fixed).await["status"], "cancelled");

    let pong = c.command("ping", json!({})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_job_is_not_found() {
    let s = start("supabase").await;
    let mut alice = connect(&s.url, Some(&token("alice")), Mode::Json).await;
    let job_id = alice.run_collect_job().await;

    let mut bob = connect(&s.url, Some(&token("bob")), Mode::MsgPack).await;
    for (command, data) in [
        (
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "from bob"}),
        ),
        (
            "end_input_stream",
            json!({"job_id": job_id, "input": "text"}),
        ),
    ] {
        let r = bob.command(command, data).await;
        assert_eq!(r["error"], "not_found", "{r}");
    }
    let pong = bob.command("ping", json!({})).await;
    assert_eq!(pong["type"], "pong");

    // Alice's job never saw Bob's value; she finishes it.
    let r = alice
        .command(
            "stream_input",
            json!({"job_id": job_id, "input": "text", "value": "from alice"}),
        )
        .await;
    assert_eq!(r["message"], "Input value pushed", "{r}");
    let r = alice
        .command(
            "end_input_stream",
            json!({"job_id": job_id, "input": "text"}),
        )
        .await;
    assert_eq!(r["message"], "Input stream ended", "{r}");
    let done = alice.until_done(&job_id).await;
    assert_eq!(done["result"]["items"], json!([["from alice"]]), "{done}");
}

/// Pushes beyond what a stuck job can buffer wait on their job's input queue, and beyond that
/// queue are refused as `busy`; the socket still answers other commands, and cancelling the job
/// answers the waiting pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_waiting_on_backpressure_does_not_block_the_socket() {
    let s = start("local").await;
    let mut c = connect(&s.url, None, Mode::Json).await;
    // The input feeds a node that sleeps on its first value, so later values pile up.
    let g = json!({
        "nodes": [
            {"id": "in", "type": "nodetool.input.StringInput", "data": {"name": "text"}},
            {"id": "nap", "type": "nodetool.test.Sleep", "data": {"seconds": 300}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}
        ],
        "edges": [
            {"id": "e1", "source": "in", "sourceHandle": "output", "target": "nap", "targetHandle": "value"},
            {"id": "e2", "source": "nap", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    });
    let r = c
        .command("run_job", json!({"graph": g, "streaming_inputs": true}))
        .await;
    let job_id = r["job_id"].as_str().unwrap().to_owned();

    // Far more than the input's and the sleeper's buffers (a few dozen) and the socket's queue
    // for the job hold.
    const PUSHES: usize = 100 + nodetool_server::ws::INPUT_QUEUE;
    for i in 0..PUSHES {
        let frame = json!({"command": "stream_input", "data": {"job_id": job_id, "input": "text", "value": format!("v{i}")}});
        c.ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    let frame = json!({"command": "ping", "data": {}});
    c.ws.send(Message::text(frame.to_string())).await.unwrap();
    let (mut pushed, mut busy) = (0, 0);
    loop {
        let v = c.recv().await;
        if v.get("seq").is_some() {
            continue;
        }
        if v["type"] == "pong" {
            break;
        }
        if v["error"] == "busy" {
            busy += 1;
        } else {
            assert_eq!(v["message"], "Input value pushed", "{v}");
            pushed += 1;
        }
    }
    assert!(busy > 0, "a full queue refuses at once");
    assert!(
        pushed + busy < PUSHES,
        "the ping was answered while pushes waited"
    );

    let frame = json!({"command": "cancel_job", "data": {"job_id": job_id}});
    c.ws.send(Message::text(frame.to_string())).await.unwrap();
    let (mut cancelled, mut refused) = (false, 0);
    while pushed + busy + refused < PUSHES || !cancelled {
        let v = c.recv().await;
        if v.get("seq").is_some() {
            continue;
        }
        match v["command"].as_str() {
            Some("cancel_job") => {
                assert_eq!(v["message"], "Job cancellation requested", "{v}");
                cancelled = true;
            }
            Some("stream_input") if v["message"] == "Input value pushed" => pushed += 1,
            Some("stream_input") if v["error"] == "busy" => busy += 1,
            Some("stream_input") => {
                assert_eq!(v["error"], "not_running", "{v}");
                refused += 1;
            }
            _ => panic!("unexpected reply {v}"),
        }
    }
    assert!(
        refused > 0,
        "the waiting pushes were answered by the cancel"
    );
    let rec = s
        .manager
        .wait(&nodetool_core::JobId::parse(&job_id).unwrap())
        .await
        .unwrap();
    assert_eq!(rec.status, nodetool_engine::Status::Cancelled);
}
