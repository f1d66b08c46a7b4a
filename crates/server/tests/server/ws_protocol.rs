//! The NodeTool web client's `/ws` protocol (`web/src/stores/WorkflowRunner.ts`,
//! `GlobalWebSocketManager.ts`), replayed frame by frame through a real socket, in JSON and in
//! MessagePack: frames carry both `type` and `command`, the client makes the job id, follows
//! `job_seq`, drops the socket mid-run and comes back with `?resume_job=` and
//! `reconnect_job {job_id, last_seq}`; cancel, pause/resume, queueing and `stream_input`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jobs_support::{sleep_graph, start, start_with};
use nodetool_exec::ManagerConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Json,
    MsgPack,
}

/// What the web client does with the socket.
struct WebClient {
    ws: Ws,
    mode: Mode,
    /// Frames read while waiting for something else.
    pending: VecDeque<Value>,
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn connect(http: &str, query: &str, mode: Mode) -> WebClient {
    let url = format!("{}/ws{query}", http.replacen("http://", "ws://", 1));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    WebClient {
        ws,
        mode,
        pending: VecDeque::new(),
    }
}

const WAIT: Duration = Duration::from_secs(20);

impl WebClient {
    async fn send_raw(&mut self, v: Value) {
        let msg = match self.mode {
            Mode::Json => Message::text(v.to_string()),
            Mode::MsgPack => Message::binary(rmp_serde::to_vec_named(&v).unwrap()),
        };
        self.ws.send(msg).await.unwrap();
    }

    /// `globalWebSocketManager.send({type, command, data})`.
    async fn send(&mut self, command: &str, data: Value) {
        self.send_raw(json!({"type": command, "command": command, "data": data}))
            .await;
    }

    async fn read(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .unwrap();
            match msg {
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

    /// The reply to `command` (frames for jobs that come first are kept).
    async fn reply(&mut self, command: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|v| v["command"] == command) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let v = self.read().await;
            if v["command"] == command {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    async fn command(&mut self, command: &str, data: Value) -> Value {
        self.send(command, data).await;
        self.reply(command).await
    }

    /// The next frame routed to `job_id` that is not a command reply.
    async fn job_frame(&mut self, job_id: &str) -> Value {
        if let Some(i) = self
            .pending
            .iter()
            .position(|v| v["job_id"] == job_id && v.get("command").is_none())
        {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let v = self.read().await;
            if v["job_id"] == job_id && v.get("command").is_none() {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// The job's stamped events after `last_seq` until its terminal job_update: `job_seq`
    /// (equal to `seq`) goes up by one from `last_seq + 1`.
    async fn events_until_done(&mut self, job_id: &str, mut last_seq: u64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.job_frame(job_id).await;
            assert_eq!(v["job_seq"], last_seq + 1, "{v}");
            assert_eq!(v["seq"], v["job_seq"], "{v}");
            last_seq += 1;
            let done = v["type"] == "job_update" && is_terminal(&v["status"]);
            out.push(v);
            if done {
                return out;
            }
        }
    }
}

fn is_terminal(status: &Value) -> bool {
    ["completed", "failed", "cancelled", "timed_out", "suspended"]
        .contains(&status.as_str().unwrap_or(""))
}

/// A run with progress frames that takes about a second: a progress node, then a sleep.
fn progress_graph() -> Value {
    json!({
        "nodes": [
            {"id": "prog", "type": "nodetool.test.Progress", "data": {"steps": 5}},
            {"id": "nap", "type": "nodetool.test.Sleep", "data": {"seconds": 1.0}},
            {"id": "o1", "type": "nodetool.output.Output", "data": {"name": "steps"}},
            {"id": "o2", "type": "nodetool.output.Output", "data": {"name": "nap"}}
        ],
        "edges": [
            {"id": "e1", "source": "prog", "sourceHandle": "output", "target": "o1", "targetHandle": "value"},
            {"id": "e2", "source": "prog", "sourceHandle": "output", "target": "nap", "targetHandle": "value"},
            {"id": "e3", "source": "nap", "sourceHandle": "output", "target": "o2", "targetHandle": "value"}
        ]
    })
}

/// The web client's `run_job` data (`WorkflowRunner.run`).
fn run_request(job_id: &str, graph: Value) -> Value {
    json!({
        "type": "run_job_request",
        "api_url": "http://127.0.0.1",
        "user_id": "1",
        "workflow_id": "wf-web",
        "auth_token": "local_token",
        "job_type": "workflow",
        "execution_strategy": "threaded",
        "params": {},
        "explicit_types": false,
        "graph": graph,
        "resource_limits": null,
        "settings": {},
        "use_cache": false,
        "job_id": job_id,
    })
}

async fn run_disconnect_reconnect(mode: Mode) {
    let s = start("static").await;
    let mut c = connect(&s.url, "?api_key=tok", mode).await;
    // The manifest the web client sends on open is no command: nothing answers it.
    c.send_raw(json!({"type": "client_tools_manifest", "tools": [{"name": "ui_add_node"}]}))
        .await;
    c.send_raw(json!({"type": "ping"})).await;
    assert_eq!(c.read().await["type"], "pong");

    let job_id = uuid();
    let reply = c
        .command("run_job", run_request(&job_id, progress_graph()))
        .await;
    assert_eq!(reply["message"], "Job started", "{reply}");
    assert_eq!(
        reply["job_id"],
        job_id.as_str(),
        "the client's id is the job's"
    );
    assert_eq!(reply["status"], "running", "{reply}");

    // Progress frames, then the socket drops (a reload) mid-run.
    let mut seen = Vec::new();
    while !seen.iter().any(|v: &Value| v["type"] == "node_progress") {
        let v = c.job_frame(&job_id).await;
        assert_eq!(v["job_seq"], seen.len() as u64 + 1, "{v}");
        seen.push(v);
    }
    let last_seq = seen.last().unwrap()["job_seq"].as_u64().unwrap();
    drop(c);

    // A duplicate id from the same user is refused; the running job is untouched.
    let mut c = connect(&s.url, &format!("?api_key=tok&resume_job={job_id}"), mode).await;
    let dup = c
        .command("run_job", run_request(&job_id, sleep_graph(0.1)))
        .await;
    assert_eq!(dup["error"], "job_rejected", "{dup}");
    assert_eq!(dup["kind"], "already_exists", "{dup}");
    assert!(
        dup["message"].as_str().unwrap().contains("already in use"),
        "{dup}"
    );
    // A last_seq the job has not reached is a clear error.
    let future = c
        .command(
            "reconnect_job",
            json!({"job_id": job_id, "workflow_id": "wf-web", "last_seq": 1_000_000}),
        )
        .await;
    assert_eq!(future["error"], "invalid_input", "{future}");
    assert!(
        future["message"].as_str().unwrap().contains("past"),
        "{future}"
    );

    let resumed = c
        .command(
            "reconnect_job",
            json!({"job_id": job_id, "workflow_id": "wf-web", "last_seq": last_seq}),
        )
        .await;
    assert_eq!(resumed["type"], "job_resumed", "{resumed}");
    assert_eq!(resumed["job_id"], job_id.as_str());
    assert_eq!(resumed["last_seq"], last_seq);
    assert!(
        resumed["job_seq"].as_u64().unwrap() >= last_seq,
        "{resumed}"
    );
    let rest = c.events_until_done(&job_id, last_seq).await;
    let done = rest.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["nap"], json!([5]), "{done}");
    // Replay + live = exactly the events the first socket did not get.
    assert_eq!(
        rest.first().unwrap()["job_seq"],
        last_seq + 1,
        "the replay starts right after last_seq"
    );

    // A bad client id is refused with the rule.
    let bad = c
        .command("run_job", run_request("../etc/passwd", sleep_graph(0.1)))
        .await;
    assert_eq!(bad["error"], "job_rejected", "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("job_id"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_run_disconnect_reconnect_json() {
    run_disconnect_reconnect(Mode::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_run_disconnect_reconnect_msgpack() {
    run_disconnect_reconnect(Mode::MsgPack).await;
}

async fn cancel_and_queue(mode: Mode) {
    let config = ManagerConfig {
        max_concurrent_jobs: 1,
        ..ManagerConfig::default()
    };
    let s = start_with("local", config).await;
    let mut c = connect(&s.url, "", mode).await;
    let first = uuid();
    let r = c
        .command("run_job", run_request(&first, sleep_graph(30.0)))
        .await;
    assert_eq!(r["status"], "running", "{r}");
    // The only slot is taken: the next run waits as `queued`, with its place.
    let second = uuid();
    let r = c
        .command("run_job", run_request(&second, sleep_graph(30.5)))
        .await;
    assert_eq!(r["status"], "queued", "{r}");
    assert_eq!(r["queue_position"], 1, "{r}");
    let queued = c.job_frame(&second).await;
    assert_eq!(queued["type"], "job_update", "{queued}");
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["queue_position"], 1, "{queued}");
    let st = c.command("get_status", json!({"job_id": second})).await;
    assert_eq!(st["status"], "queued", "{st}");

    for job in [&second, &first] {
        let r = c
            .command(
                "cancel_job",
                json!({"job_id": job, "workflow_id": "wf-web"}),
            )
            .await;
        assert_eq!(r["message"], "Job cancellation requested", "{r}");
    }
    for job in [&first, &second] {
        let mut last = None;
        while last.is_none() {
            let v = c.job_frame(job).await;
            if v["type"] == "job_update" && is_terminal(&v["status"]) {
                last = Some(v);
            }
        }
        let last = last.unwrap();
        assert_eq!(last["status"], "cancelled", "{last}");
        assert!(last["job_seq"].as_u64().unwrap() >= 1, "{last}");
    }
    let again = c.command("cancel_job", json!({"job_id": first})).await;
    assert_eq!(again["error"], "not_running", "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_cancel_and_queue_json() {
    cancel_and_queue(Mode::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_cancel_and_queue_msgpack() {
    cancel_and_queue(Mode::MsgPack).await;
}

/// Two sleeps in a row: pausing while the first runs holds the second at its boundary.
fn chain_graph(first: f64) -> Value {
    json!({
        "nodes": [
            {"id": "s1", "type": "nodetool.test.Sleep", "data": {"seconds": first, "value": "a"}},
            {"id": "s2", "type": "nodetool.test.Sleep", "data": {"seconds": 0.01}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}
        ],
        "edges": [
            {"id": "e1", "source": "s1", "sourceHandle": "output", "target": "s2", "targetHandle": "value"},
            {"id": "e2", "source": "s2", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    })
}

fn is_node(v: &Value, node: &str, status: &str) -> bool {
    v["type"] == "node_update" && v["node_id"] == node && v["status"] == status
}

async fn pause_and_resume(mode: Mode) {
    let s = start("local").await;
    let mut c = connect(&s.url, "", mode).await;
    let job_id = uuid();
    c.command("run_job", run_request(&job_id, chain_graph(0.8)))
        .await;
    while !is_node(&c.job_frame(&job_id).await, "s1", "running") {}
    let r = c
        .command(
            "pause_job",
            json!({"job_id": job_id, "workflow_id": "wf-web"}),
        )
        .await;
    assert_eq!(r["message"], "Job paused", "{r}");
    assert_eq!(r["status"], "paused", "{r}");
    let again = c.command("pause_job", json!({"job_id": job_id})).await;
    assert_eq!(again["changed"], false, "{again}");

    // The running node finishes; the next one does not start while paused.
    let mut saw_paused = false;
    loop {
        let v = c.job_frame(&job_id).await;
        assert!(
            !is_node(&v, "s2", "running"),
            "s2 started while paused: {v}"
        );
        saw_paused |= v["type"] == "job_update" && v["status"] == "paused";
        if is_node(&v, "s1", "completed") {
            break;
        }
    }
    assert!(saw_paused, "a job_update paused went out");
    let held = tokio::time::timeout(Duration::from_millis(700), c.job_frame(&job_id)).await;
    if let Ok(v) = &held {
        assert!(!is_node(v, "s2", "running"), "s2 started while paused: {v}");
    }
    let st = c.command("get_status", json!({"job_id": job_id})).await;
    assert_eq!(st["status"], "paused", "{st}");
    assert!(!s
        .manager
        .get(&nodetool_core::JobId::parse(&job_id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .status
        .is_terminal());

    let r = c
        .command(
            "resume_job",
            json!({"job_id": job_id, "workflow_id": "wf-web"}),
        )
        .await;
    assert_eq!(r["message"], "Job resumed", "{r}");
    assert_eq!(r["status"], "running", "{r}");
    let mut resumed = false;
    let mut s2_ran = false;
    let done = loop {
        let v = c.job_frame(&job_id).await;
        resumed |=
            v["type"] == "job_update" && v["status"] == "running" && v["message"] == "Job resumed";
        s2_ran |= is_node(&v, "s2", "running");
        if v["type"] == "job_update" && is_terminal(&v["status"]) {
            break v;
        }
    };
    assert!(resumed && s2_ran, "resumed: {resumed}, s2 ran: {s2_ran}");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["result"], json!(["a"]), "{done}");

    // Pause on a finished job, and on a job that does not exist: clear errors.
    let r = c.command("pause_job", json!({"job_id": job_id})).await;
    assert_eq!(r["error"], "not_running", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("no longer running"),
        "{r}"
    );
    let r = c.command("resume_job", json!({"job_id": uuid()})).await;
    assert_eq!(r["error"], "not_found", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_pause_and_resume_json() {
    pause_and_resume(Mode::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_pause_and_resume_msgpack() {
    pause_and_resume(Mode::MsgPack).await;
}

async fn stream_input(mode: Mode) {
    let s = start("local").await;
    let mut c = connect(&s.url, "", mode).await;
    let job_id = uuid();
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "nodetool.input.StringInput", "data": {"name": "text"}},
            {"id": "col", "type": "nodetool.control.Collect", "data": {}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "items"}}
        ],
        "edges": [
            {"id": "e1", "source": "in", "sourceHandle": "output", "target": "col", "targetHandle": "input_item"},
            {"id": "e2", "source": "col", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    });
    let mut request = run_request(&job_id, graph);
    request["streaming_inputs"] = json!(true);
    let r = c.command("run_job", request).await;
    assert_eq!(r["job_id"], job_id.as_str(), "{r}");
    for value in ["v1", "v2"] {
        // `WorkflowRunner.streamInput` sends `handle: undefined`, i.e. absent, and workflow_id.
        let r = c
            .command(
                "stream_input",
                json!({"input": "text", "value": value, "job_id": job_id, "workflow_id": "wf-web"}),
            )
            .await;
        assert_eq!(r["message"], "Input value pushed", "{r}");
    }
    let r = c
        .command(
            "end_input_stream",
            json!({"input": "text", "handle": null, "job_id": job_id, "workflow_id": "wf-web"}),
        )
        .await;
    assert_eq!(r["message"], "Input stream ended", "{r}");
    let events = c.events_until_done(&job_id, 0).await;
    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["items"], json!([["v1", "v2"]]), "{done}");

    // NodeTool's own case, as the app sends it: a RealtimeAudioInput stays open with no
    // `streaming_inputs` flag, and chunks pushed with no handle go out on its `chunk` output.
    let job_id = uuid();
    let graph = json!({
        "nodes": [
            {"id": "mic", "type": "nodetool.input.RealtimeAudioInput", "data": {"name": "audio", "value": null, "description": "", "audio": {}}},
            {"id": "col", "type": "nodetool.control.Collect", "data": {}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "chunks"}}
        ],
        "edges": [
            {"id": "e1", "source": "mic", "sourceHandle": "chunk", "target": "col", "targetHandle": "input_item"},
            {"id": "e2", "source": "col", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    });
    let r = c.command("run_job", run_request(&job_id, graph)).await;
    assert_eq!(r["job_id"], job_id.as_str(), "{r}");
    let chunks: Vec<Value> = (0..3)
        .map(|i| json!({"type": "chunk", "content": format!("pcm{i}"), "content_type": "audio", "done": i == 2}))
        .collect();
    for chunk in &chunks {
        let r = c
            .command(
                "stream_input",
                json!({"input": "audio", "value": chunk, "job_id": job_id, "workflow_id": "wf-web"}),
            )
            .await;
        assert_eq!(r["message"], "Input value pushed", "{r}");
    }
    let r = c
        .command(
            "end_input_stream",
            json!({"input": "audio", "job_id": job_id, "workflow_id": "wf-web"}),
        )
        .await;
    assert_eq!(r["message"], "Input stream ended", "{r}");
    let events = c.events_until_done(&job_id, 0).await;
    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["chunks"], json!([chunks]), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_stream_input_json() {
    stream_input(Mode::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_stream_input_msgpack() {
    stream_input(Mode::MsgPack).await;
}
