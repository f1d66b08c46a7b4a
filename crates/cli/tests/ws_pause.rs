//! Pause and resume of a subprocess job end to end: the real `nodetool serve` runs a job in a
//! `nodetool worker` child, and the NodeTool web client's `pause_job` / `resume_job` over `/ws`
//! hold it between two nodes and let it go on (issue 18).
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};

/// Hang guard for one frame or the server's start (not a timing claim).
const WAIT: Duration = Duration::from_secs(60);

/// `nodetool serve` in a clean home, on the port it picked.
struct Server {
    proc: ServeProcess,
    _home: NodetoolHome,
}

impl Server {
    fn start() -> Self {
        let home = NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"));
        let proc = home.serve(&[("AUTH_PROVIDER", "local")], WAIT);
        Self { proc, _home: home }
    }
}

/// The web client's socket: commands and their replies, and the job's frames.
struct WebClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Frames read while waiting for something else.
    pending: VecDeque<Value>,
}

impl WebClient {
    async fn connect(server: &Server) -> Self {
        let url = format!("ws://127.0.0.1:{}/ws", server.proc.port());
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            ws,
            pending: VecDeque::new(),
        }
    }

    async fn read(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .unwrap();
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// `globalWebSocketManager.send({type, command, data})`, then the reply.
    async fn command(&mut self, command: &str, data: Value) -> Value {
        let frame = json!({"type": command, "command": command, "data": data});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        loop {
            let v = self.read().await;
            if v["command"] == command {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// The next frame of the job that is not a command reply.
    async fn job_frame(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        loop {
            let v = self.read().await;
            if v.get("command").is_none() {
                return v;
            }
        }
    }
}

fn is_node(v: &Value, node: &str, status: &str) -> bool {
    v["type"] == "node_update" && v["node_id"] == node && v["status"] == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subprocess_job_pauses_and_resumes_over_ws() {
    let server = Server::start();
    let mut c = WebClient::connect(&server).await;
    let job_id = "ws-pause-subprocess-job";
    // s1 sleeps 2 s, then s2 takes its value.
    let graph = json!({
        "nodes": [
            {"id": "s1", "type": "nodetool.test.Sleep", "data": {"seconds": 2.0, "value": "a"}},
            {"id": "s2", "type": "nodetool.test.Sleep", "data": {"seconds": 0.0}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}
        ],
        "edges": [
            {"id": "e1", "source": "s1", "sourceHandle": "output", "target": "s2", "targetHandle": "value"},
            {"id": "e2", "source": "s2", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    });
    let r = c
        .command(
            "run_job",
            json!({
                "type": "run_job_request", "job_id": job_id, "workflow_id": "wf-pause",
                "job_type": "workflow", "execution_strategy": "subprocess", "params": {},
                "graph": graph, "use_cache": false,
            }),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let record: Value = reqwest::get(format!(
        "http://127.0.0.1:{}/api/jobs/{job_id}",
        server.proc.port()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(record["execution_strategy"], "subprocess", "{record}");
    while !is_node(&c.job_frame().await, "s1", "running") {}

    let r = c.command("pause_job", json!({"job_id": job_id})).await;
    assert_eq!(r["message"], "Job paused", "{r}");
    assert_eq!(r["status"], "paused", "{r}");

    // s1 finishes in the worker; s2 waits at its boundary.
    let mut saw_paused = false;
    loop {
        let v = c.job_frame().await;
        assert!(
            !is_node(&v, "s2", "running"),
            "s2 started while paused: {v}"
        );
        saw_paused |= v["type"] == "job_update" && v["status"] == "paused";
        if is_node(&v, "s1", "completed") {
            break;
        }
    }
    assert!(
        saw_paused,
        "the worker's job_update paused reached the socket"
    );
    // A moment for a pause that does not hold to show (a working one holds however long).
    if let Ok(v) = tokio::time::timeout(Duration::from_millis(700), c.job_frame()).await {
        assert!(
            !is_node(&v, "s2", "running"),
            "s2 started while paused: {v}"
        );
    }
    let st = c.command("get_status", json!({"job_id": job_id})).await;
    assert_eq!(st["status"], "paused", "{st}");

    let r = c.command("resume_job", json!({"job_id": job_id})).await;
    assert_eq!(r["message"], "Job resumed", "{r}");
    assert_eq!(r["status"], "running", "{r}");
    let mut s2_ran = false;
    let done = loop {
        let v = c.job_frame().await;
        s2_ran |= is_node(&v, "s2", "running");
        let terminal = ["completed", "failed", "cancelled", "timed_out"]
            .contains(&v["status"].as_str().unwrap_or(""));
        if v["type"] == "job_update" && terminal {
            break v;
        }
    };
    assert!(s2_ran, "s2 ran after the resume");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["result"], json!(["a"]), "{done}");
}
