//! Helpers shared by the queue tests (`queue_workers`: processes on this host; `multi_host`:
//! containers on a private Docker network): job requests, a typed-enough REST/SSE//ws client and
//! the exactly-once checks every such test makes.
// Each test binary (cli, multi_host) uses its own subset; a failed unwrap fails the test.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};

use nodetool_testkit::serve_process::NodetoolHome;
use nodetool_workers::docker::{bollard, image};

pub const HANG: Duration = Duration::from_secs(120);

/// The `data` of each SSE event, checking that `id:` is the event's seq (and absent on a lag
/// notice).
pub fn parse_sse(text: &str) -> Vec<Value> {
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

pub fn one(node_type: &str, data: Value) -> Value {
    json!({
        "graph": {
            "nodes": [
                {"id": "n", "type": node_type, "data": data},
                {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}},
            ],
            "edges": [
                {"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
            ],
        },
        "execution_strategy": "threaded",
    })
}

pub fn generate(count: u64) -> Value {
    one("nodetool.test.Generate", json!({"count": count}))
}

/// A distinct value per job: Sleep is cacheable.
pub fn sleep(seconds: f64, tag: &str) -> Value {
    one(
        "nodetool.test.Sleep",
        json!({"seconds": seconds, "value": tag}),
    )
}

pub fn is_terminal(e: &Value) -> bool {
    e["type"] == "job_update"
        && matches!(
            e["status"].as_str(),
            Some("completed" | "failed" | "cancelled" | "timed_out" | "suspended")
        )
}

/// Every seq once, increasing, and exactly one terminal event, last.
pub fn check_stream(id: &str, events: &[Value]) {
    assert!(!events.is_empty(), "{id}: no events");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{id}: seqs not strictly increasing: {seqs:?}"
    );
    let terminals = events.iter().filter(|e| is_terminal(e)).count();
    assert_eq!(terminals, 1, "{id}: {events:?}");
    assert!(is_terminal(events.last().unwrap()), "{id}: {events:?}");
    for e in events {
        assert_eq!(e["job_id"], id, "{e}");
    }
}

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// Bearer token (AUTH_PROVIDER=static); `None` under local auth.
    pub token: Option<String>,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    pub fn with_token(base: impl Into<String>, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::new(base)
        }
    }

    /// A request to `path` (from `/`) with the bearer token when there is one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
    pub async fn submit(&self, request: &Value) -> String {
        let resp = self
            .request(reqwest::Method::POST, "/api/jobs")
            .json(request)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert!(
            status == 200 || status == 201 || status == 202,
            "{status} {body}"
        );
        body["id"]
            .as_str()
            .or(body["job_id"].as_str())
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned()
    }

    /// `POST /api/jobs?stream=true`: the job's id and the events the server streamed.
    pub async fn run_streamed(&self, request: &Value) -> (String, Vec<Value>) {
        let req = self.request(reqwest::Method::POST, "/api/jobs?stream=true");
        let events = sse(req.json(request), "the streamed job").await;
        let id = events[0]["job_id"].as_str().unwrap().to_owned();
        (id, events)
    }

    /// `GET /api/jobs/{id}/events` from `since`, until the stream ends.
    pub async fn follow(&self, id: &str, since: u64) -> Vec<Value> {
        let req = self.request(reqwest::Method::GET, &format!("/api/jobs/{id}/events"));
        sse(
            req.header("Last-Event-ID", since.to_string()),
            "the event stream",
        )
        .await
    }

    /// `reconnect_job` over `/ws` from `since`: every event up to the terminal `job_update`.
    pub async fn ws_follow(&self, id: &str, since: u64) -> Vec<Value> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut url = format!("{}/ws", self.base.replacen("http://", "ws://", 1));
        if let Some(t) = &self.token {
            url.push_str(&format!("?api_key={t}"));
        }
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
            .expect("the /ws follow did not end")
    }

    pub async fn job(&self, id: &str) -> Value {
        let resp = self
            .request(reqwest::Method::GET, &format!("/api/jobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }

    pub async fn wait_status(&self, id: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            let job = self.job(id).await;
            if job["status"] == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never became {want}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A `/ws` client: commands and their replies; the job frames that arrive meanwhile are kept,
/// in order, for [`WsClient::frame`].
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pending: std::collections::VecDeque<Value>,
}

impl WsClient {
    pub async fn connect(api: &Api) -> Self {
        let mut url = format!("{}/ws", api.base.replacen("http://", "ws://", 1));
        if let Some(t) = &api.token {
            url.push_str(&format!("?api_key={t}"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            ws,
            pending: Default::default(),
        }
    }

    async fn read(&mut self) -> Value {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let msg = tokio::time::timeout(HANG, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .unwrap();
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    }

    /// Sends `{command, data}` and returns its reply.
    pub async fn command(&mut self, command: &str, data: Value) -> Value {
        use futures::SinkExt;
        // As the NodeTool web client sends it (`globalWebSocketManager.send`).
        let frame = json!({"type": command, "command": command, "data": data});
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                frame.to_string(),
            ))
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

    /// The next frame that is not a command's reply.
    pub async fn frame(&mut self) -> Value {
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

    /// Frames up to the job's terminal `job_update`, which is returned with them (last).
    pub async fn until_done(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.frame().await;
            let done = is_terminal(&v);
            out.push(v);
            if done {
                return out;
            }
        }
    }
}

pub fn is_node(v: &Value, node: &str, status: &str) -> bool {
    v["type"] == "node_update" && v["node_id"] == node && v["status"] == status
}

/// `s1` sleeps 2 s and passes `"a"` to `s2`, then `result`: a job with a node boundary to pause
/// at.
pub fn sleep_chain() -> Value {
    json!({
        "nodes": [
            {"id": "s1", "type": "nodetool.test.Sleep", "data": {"seconds": 2.0, "value": "a"}},
            {"id": "s2", "type": "nodetool.test.Sleep", "data": {"seconds": 0.0}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}
        ],
        "edges": [
            {"id": "e1", "source": "s1", "sourceHandle": "output", "target": "s2", "targetHandle": "value"},
            {"id": "e2", "source": "s2", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    })
}

/// After a pause while [`sleep_chain`]'s `s1` runs: `s1` completes and `s2` does not start, the
/// job's `job_update` `paused` reaches `c`, and `s2` still waits a moment later (a pause that
/// did not hold would show there; a working one holds however long).
pub async fn held_at_the_boundary(c: &mut WsClient) {
    let mut saw_paused = false;
    loop {
        let v = c.frame().await;
        assert!(
            !is_node(&v, "s2", "running"),
            "s2 started while paused: {v}"
        );
        saw_paused |= v["type"] == "job_update" && v["status"] == "paused";
        if is_node(&v, "s1", "completed") {
            break;
        }
    }
    assert!(saw_paused, "the job's job_update paused reached the socket");
    if let Ok(v) = tokio::time::timeout(Duration::from_millis(1000), c.frame()).await {
        assert!(
            !is_node(&v, "s2", "running"),
            "s2 started while paused: {v}"
        );
    }
}

/// After the resume: `s2` runs and the job completes with `["a"]`.
pub async fn resumed_to_the_end(c: &mut WsClient) {
    let frames = c.until_done().await;
    assert!(
        frames.iter().any(|v| is_node(v, "s2", "running")),
        "{frames:?}"
    );
    let done = frames.last().unwrap();
    assert_eq!(done["status"], "completed", "{frames:?}");
    assert_eq!(done["result"]["result"], json!(["a"]), "{done}");
}

/// Sends `req`, expects `200` and reads its SSE body to the end (within [`HANG`]).
async fn sse(req: reqwest::RequestBuilder, what: &str) -> Vec<Value> {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{what}");
    let text = tokio::time::timeout(HANG, resp.text())
        .await
        .unwrap_or_else(|_| panic!("{what} did not end"))
        .unwrap();
    parse_sse(&text)
}

/// SQL counting the terminal `job_update` events stored for `id` (one, for every job).
pub fn stored_terminals_sql(id: &str) -> String {
    format!(
        "SELECT count(*) FROM job_events WHERE job_id = '{id}' \
         AND event LIKE '%\"type\":\"job_update\"%' \
         AND (event LIKE '%\"status\":\"completed\"%' OR event LIKE '%\"status\":\"failed\"%' \
              OR event LIKE '%\"status\":\"cancelled\"%')"
    )
}

// Docker: the engine, and this binary's worker image.

pub async fn docker_client(test: &str) -> Option<bollard::Docker> {
    match nodetool_workers::docker::connect_engine(std::path::Path::new("/var/run/docker.sock"))
        .await
    {
        Ok(c) => Some(c),
        Err(e) => {
            nodetool_testkit::skip_or_fail(test, &format!("no Docker engine: {e}"));
            None
        }
    }
}

/// This binary's worker image, built with `nodetool docker build-image` (as an operator does: the
/// pinned tag plus the default `nodetool-worker:<version>`, so a server with no DOCKER_IMAGE runs
/// it). Returns the pinned tag.
pub async fn worker_image(env: &NodetoolHome, client: &bollard::Docker) -> String {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_nodetool"));
    let pinned = image::pinned_tag(binary).unwrap();
    if image::image_exists(client, &pinned).await.unwrap() {
        // Already built from this very binary: point the default tag at it again.
        tag(client, &pinned, &image::default_image()).await;
    } else {
        let out = env.cmd(&["docker", "build-image"], &[]).output().unwrap();
        assert!(
            out.status.success(),
            "build-image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    pinned
}

/// `docker tag source target`.
pub async fn tag(client: &bollard::Docker, source: &str, target: &str) {
    let (repo, t) = target.rsplit_once(':').unwrap();
    let opts = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(t)
        .build();
    client.tag_image(source, Some(opts)).await.unwrap();
}
