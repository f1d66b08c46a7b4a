//! `/ws`: NodeTool's unified WebSocket protocol.
//!
//! Frames are `{"command": <name>, "data": {...}}`, JSON in text frames or MessagePack in binary
//! frames. Replies and events go out in the format of the client's last frame (`set_mode`
//! overrides it). Commands: `run_job` (reply carries `job_id`; the job's events then stream on
//! this socket), `reconnect_job` (`job_id`, `since_seq`: replay after that seq, then live),
//! `cancel_job`, `get_status`, `set_mode`, `ping`, `stream_input`, `end_input_stream`. The
//! control frame `{"type":"ping"}` gets `{"type":"pong","ts"}`. Each command gets one reply:
//! `{"command", "message", ...}` or `{"command", "error", "message"}`.
//!
//! Streamed inputs: a job submitted with `"streaming_inputs": true` (not NodeTool's field; its
//! default is off) keeps every input node without a param open. `stream_input` (`job_id`,
//! `input`: the input node's name, `value`, `handle`: default `"output"`) sends one value
//! downstream (a NodeTool chunk dict passes as it is), `end_input_stream` (`job_id`, `input`,
//! `handle`) ends that input, and the job finishes once every streamed input has ended; this
//! works on every strategy. Any job of the socket's user may be fed, from any socket. Each
//! job's input commands run in order on their own bounded queue per socket, so a push waiting
//! for room in the job's input buffer (or for a scheduled job to start) delays only later input
//! commands for that job, and their replies, never this socket's other commands; with
//! [`INPUT_QUEUE`] commands already waiting, a further one is refused at once with `busy` (and
//! not applied). Errors: `invalid_command` (a missing field), `not_found` (no such job for this
//! user, or no such input or handle), `not_running` (the job has ended), `not_supported` (a job
//! without `streaming_inputs`), `invalid_input` (a wrong-typed value, an input fed by params, a
//! push after the end), `busy`.
//!
//! Auth happens before the upgrade (401 otherwise): `Authorization: Bearer` or `?api_key=`. A
//! `user_id` in any command is ignored; a job of another user is "not found".
//!
//! Fan-out: each socket has one bounded outgoing queue; one task per streamed job feeds it and
//! waits when it is full, so a slow client only slows its own forwarders. The manager's
//! subscription then resyncs from the job's replay buffer, so nothing is lost unless the client
//! falls further behind than that buffer; then it gets a `{"type":"lag"}` notice naming the
//! missed seqs, and can `reconnect_job` or fetch the job's result.
//!
//! Jobs outlive the socket: a disconnect stops the streaming, not the job (reconnect with
//! `reconnect_job`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use nodetool_engine::EventEnvelope;
use nodetool_exec::{JobExecutionManager, RunJobRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::{websocket_user, Authenticator, LOCAL_USER};
use crate::jobs::{final_update, is_terminal};
use crate::AppState;

/// Outgoing frames queued per socket before job forwarders wait.
pub const SOCKET_QUEUE: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    api_key: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let user = match &state.auth {
        Authenticator::Local => LOCAL_USER.to_owned(),
        auth => match websocket_user(auth, &headers, q.api_key).await {
            Ok(user) => user,
            Err(response) => return response,
        },
    };
    // Clients send small command frames: tungstenite's default 128 KiB read buffer was most of
    // a socket's memory (142 KiB per idle client; 17 KiB with 8 KiB).
    // A message over the cap is refused from its frame header, before it is buffered, and the
    // socket is closed with 1009 (a 9 MiB JSON message used to cost ~1 GiB to parse).
    let max = state.options.ws_max_message_bytes;
    ws.read_buffer_size(8 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(state, user, socket))
}

/// Something to send; encoded in the socket's mode when it is written.
enum Out {
    Value(Value),
    Event(Box<EventEnvelope>),
    /// A close frame; the writer stops after it.
    Close(u16, String),
}

struct Session {
    user: String,
    manager: Option<JobExecutionManager>,
    tx: mpsc::Sender<Out>,
    /// true: MessagePack binary frames; false: JSON text.
    binary: Arc<AtomicBool>,
    /// Jobs whose events stream to this socket.
    streams: HashMap<String, JoinHandle<()>>,
    /// Per job, the queue its `stream_input` / `end_input_stream` commands run from, in order.
    inputs: HashMap<String, mpsc::Sender<InputOp>>,
}

async fn session(state: AppState, user: String, socket: WebSocket) {
    let _open = state.metrics.open_stream(crate::StreamKind::WebSocket);
    let max_message = state.options.ws_max_message_bytes;
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Out>(SOCKET_QUEUE);
    // NodeTool's default mode is binary until the client says otherwise.
    let binary = Arc::new(AtomicBool::new(true));
    let writer_mode = binary.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            if let Out::Close(code, reason) = out {
                let frame = axum::extract::ws::CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
            let Some(msg) = encode(&out, writer_mode.load(Ordering::Relaxed)) else {
                continue;
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut s = Session {
        user,
        manager: state.jobs.clone(),
        tx,
        binary,
        streams: HashMap::new(),
        inputs: HashMap::new(),
    };
    tracing::debug!(user = %s.user, "websocket opened");
    while let Some(frame) = incoming.next().await {
        let parsed = match frame {
            Ok(Message::Text(text)) => {
                s.binary.store(false, Ordering::Relaxed);
                decode_text_frame(text.as_str())
            }
            Ok(Message::Binary(bytes)) => {
                s.binary.store(true, Ordering::Relaxed);
                decode_binary_frame(&bytes)
            }
            Ok(Message::Close(_)) => break,
            Err(e) => {
                let text = e.to_string();
                if text.contains("Message too long") || text.contains("Space limit exceeded") {
                    tracing::info!(user = %s.user, limit = max_message, "websocket message over the size cap; closing");
                    let reason = format!(
                        "message larger than {max_message} bytes (NODETOOL_WS_MAX_MESSAGE_BYTES)"
                    );
                    let _ = s.tx.send(Out::Close(1009, reason)).await;
                    // Read on for a moment: closing a socket with unread bytes (the rest of
                    // the oversized message) resets it, and the client would lose the close
                    // frame.
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                    for _ in 0..10_000 {
                        match tokio::time::timeout_at(deadline, incoming.next()).await {
                            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Err(_) => break,
                            Ok(Some(Err(e))) if e.to_string().contains("closed") => break,
                            Ok(Some(_)) => {}
                        }
                    }
                }
                break;
            }
            Ok(_) => continue,
        };
        let reply = match parsed {
            Ok(v) => s.handle(v).await,
            Err(details) => Some(json!({"error": "invalid_command", "details": details})),
        };
        if let Some(reply) = reply {
            if s.tx.send(Out::Value(reply)).await.is_err() {
                break;
            }
        }
    }
    for (_, task) in s.streams.drain() {
        task.abort();
    }
    drop(s);
    let _ = writer.await;
    tracing::debug!("websocket closed");
}

/// Decodes a client's text frame (JSON). Public for the fuzz targets (`fuzz/`), which must
/// reach the decoder the socket uses.
pub fn decode_text_frame(text: &str) -> Result<Value, String> {
    serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// Decodes a client's binary frame (MessagePack). Public for the fuzz targets.
pub fn decode_binary_frame(bytes: &[u8]) -> Result<Value, String> {
    use serde::Deserialize;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp-serde allows 1024 levels; each costs stack in the recursive decode, so a small frame
    // of nested arrays could overflow a worker thread's stack. JSON text frames stop at
    // serde_json's 128: MessagePack frames get the same bound.
    de.set_max_depth(MAX_FRAME_DEPTH);
    Value::deserialize(&mut de).map_err(|e| e.to_string())
}

/// Nesting a `/ws` command may have, in either encoding (serde_json's own limit).
pub const MAX_FRAME_DEPTH: usize = 128;

fn encode(out: &Out, binary: bool) -> Option<Message> {
    let result = match (out, binary) {
        (Out::Value(v), true) => rmp_serde::to_vec_named(v).map(|b| Message::Binary(b.into())),
        (Out::Event(e), true) => {
            rmp_serde::to_vec_named(e.as_ref()).map(|b| Message::Binary(b.into()))
        }
        (Out::Close(..), _) => return None,
        (Out::Value(v), false) => return Some(Message::Text(v.to_string().into())),
        (Out::Event(e), false) => {
            return match serde_json::to_string(e.as_ref()) {
                Ok(s) => Some(Message::Text(s.into())),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot encode an event as JSON");
                    None
                }
            }
        }
    };
    match result {
        Ok(m) => Some(m),
        Err(err) => {
            tracing::warn!(error = %err, "cannot encode a frame as MessagePack");
            None
        }
    }
}

fn error_reply(command: &str, error: &str, message: impl Into<String>) -> Value {
    json!({"command": command, "error": error, "message": message.into()})
}

fn job_id_of(data: &Value) -> Option<String> {
    data.get("job_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Session {
    /// One reply per frame (`None` for nothing to say).
    async fn handle(&mut self, frame: Value) -> Option<Value> {
        if frame.get("type").and_then(Value::as_str) == Some("ping") {
            return Some(pong());
        }
        let Some(command) = frame.get("command").and_then(Value::as_str) else {
            return Some(json!({
                "error": "invalid_message",
                "message": "a frame needs a \"command\" (or is {\"type\":\"ping\"})",
            }));
        };
        let command = command.to_owned();
        let data = frame.get("data").cloned().unwrap_or_else(|| json!({}));
        if !data.is_object() {
            return Some(error_reply(
                &command,
                "invalid_command",
                "\"data\" must be an object",
            ));
        }
        Some(match command.as_str() {
            "ping" => pong(),
            "set_mode" => match data.get("mode").and_then(Value::as_str) {
                Some("binary") => {
                    self.binary.store(true, Ordering::Relaxed);
                    json!({"command": command, "message": "Mode set to binary", "mode": "binary"})
                }
                Some("text") => {
                    self.binary.store(false, Ordering::Relaxed);
                    json!({"command": command, "message": "Mode set to text", "mode": "text"})
                }
                _ => error_reply(
                    &command,
                    "invalid_command",
                    "mode must be \"binary\" or \"text\"",
                ),
            },
            "run_job" => return self.run_job(data).await,
            "reconnect_job" => return self.reconnect_job(data).await,
            "cancel_job" => self.cancel_job(data).await,
            "get_status" => self.get_status(data).await,
            "stream_input" | "end_input_stream" => return self.input_command(&command, data).await,
            _ => error_reply(
                &command,
                "unknown_command",
                format!("unknown command {command:?}"),
            ),
        })
    }

    fn manager(&self, command: &str) -> Result<JobExecutionManager, Value> {
        self.manager.clone().ok_or_else(|| {
            error_reply(
                command,
                "unavailable",
                "job execution is not enabled on this server",
            )
        })
    }

    /// The job's record if this socket's user owns it.
    async fn owned(
        &self,
        manager: &JobExecutionManager,
        command: &str,
        job_id: &str,
    ) -> Result<nodetool_exec::JobRecord, Value> {
        match manager.get(job_id).await {
            Ok(Some(rec)) if rec.user_id == self.user => Ok(rec),
            Ok(_) => Err(
                json!({"command": command, "error": "not_found", "message": "Job not found", "job_id": job_id}),
            ),
            Err(e) => {
                tracing::error!(error = %e, job_id, "job lookup failed");
                Err(error_reply(command, "internal", "job lookup failed"))
            }
        }
    }

    /// Queues a frame; a closed socket is noticed by the read loop.
    async fn send(&self, v: Value) {
        let _ = self.tx.send(Out::Value(v)).await;
    }

    /// `None` when the reply was already sent (before the job's events).
    async fn run_job(&mut self, data: Value) -> Option<Value> {
        let manager = match self.manager("run_job") {
            Ok(m) => m,
            Err(e) => return Some(e),
        };
        let request: RunJobRequest = match serde_json::from_value(data) {
            Ok(r) => r,
            Err(e) => return Some(error_reply("run_job", "invalid_command", e.to_string())),
        };
        match manager.submit(request, &self.user).await {
            Ok(job_id) => {
                let workflow_id = manager
                    .get(&job_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.workflow_id);
                tracing::info!(%job_id, user = %self.user, "job submitted over websocket");
                // The reply goes out before the first event, so the client knows the id.
                self.send(json!({"command": "run_job", "message": "Job started", "job_id": job_id, "workflow_id": workflow_id})).await;
                self.stream(&manager, &job_id, 0, None);
                None
            }
            Err(e) => Some(error_reply("run_job", "job_rejected", api_message(e))),
        }
    }

    /// `None` when the reply was already sent (before the job's events).
    async fn reconnect_job(&mut self, data: Value) -> Option<Value> {
        let manager = match self.manager("reconnect_job") {
            Ok(m) => m,
            Err(e) => return Some(e),
        };
        let Some(job_id) = job_id_of(&data) else {
            return Some(error_reply(
                "reconnect_job",
                "invalid_command",
                "job_id is required",
            ));
        };
        let since = data.get("since_seq").and_then(Value::as_u64).unwrap_or(0);
        let rec = match self.owned(&manager, "reconnect_job", &job_id).await {
            Ok(r) => r,
            Err(e) => return Some(e),
        };
        self.send(json!({
            "command": "reconnect_job",
            "message": format!("Reconnecting to job {job_id}"),
            "job_id": job_id,
            "workflow_id": rec.workflow_id,
            "since_seq": since,
        }))
        .await;
        self.stream(&manager, &job_id, since, Some(final_update(&rec)));
        None
    }

    async fn cancel_job(&mut self, data: Value) -> Value {
        let manager = match self.manager("cancel_job") {
            Ok(m) => m,
            Err(e) => return e,
        };
        let Some(job_id) = job_id_of(&data) else {
            return error_reply("cancel_job", "invalid_command", "job_id is required");
        };
        if let Err(e) = self.owned(&manager, "cancel_job", &job_id).await {
            return e;
        }
        match manager.cancel(&job_id).await {
            // The job's own cancelled job_update still streams to this socket.
            Ok(true) => {
                json!({"command": "cancel_job", "message": "Job cancellation requested", "job_id": job_id})
            }
            Ok(false) => {
                json!({"command": "cancel_job", "error": "not_running", "message": "Job not found or already completed", "job_id": job_id})
            }
            Err(e) => error_reply("cancel_job", "internal", api_message(e)),
        }
    }

    async fn get_status(&mut self, data: Value) -> Value {
        let manager = match self.manager("get_status") {
            Ok(m) => m,
            Err(e) => return e,
        };
        match job_id_of(&data) {
            Some(job_id) => match self.owned(&manager, "get_status", &job_id).await {
                Ok(rec) => json!({
                    "command": "get_status",
                    "job_id": rec.id,
                    "workflow_id": rec.workflow_id,
                    "status": rec.status.as_str(),
                    "error": rec.error,
                }),
                Err(_) => json!({"command": "get_status", "job_id": job_id, "status": "not_found"}),
            },
            None => {
                let mut active = Vec::new();
                for job_id in self.streams.keys() {
                    if let Ok(Some(rec)) = manager.get(job_id).await {
                        active.push(json!({
                            "job_id": rec.id,
                            "workflow_id": rec.workflow_id,
                            "status": rec.status.as_str(),
                        }));
                    }
                }
                json!({"command": "get_status", "active_jobs": active})
            }
        }
    }

    /// `stream_input` / `end_input_stream`: checks the fields and the job's owner here, then
    /// queues the command on the job's input queue, which replies (`None`: nothing to send now).
    async fn input_command(&mut self, command: &str, data: Value) -> Option<Value> {
        let manager = match self.manager(command) {
            Ok(m) => m,
            Err(e) => return Some(e),
        };
        let Some(job_id) = job_id_of(&data) else {
            return Some(error_reply(
                command,
                "invalid_command",
                "job_id is required",
            ));
        };
        let Some(input) = data
            .get("input")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Some(error_reply(
                command,
                "invalid_command",
                "input (the input node's name) is required",
            ));
        };
        let handle = match data.get("handle") {
            None | Some(Value::Null) => "output",
            Some(Value::String(h)) if !h.is_empty() => h.as_str(),
            Some(_) => {
                return Some(error_reply(
                    command,
                    "invalid_command",
                    "handle must be a non-empty string",
                ))
            }
        };
        let value = if command == "stream_input" {
            match data.get("value") {
                Some(v) => Some(v.clone()),
                None => {
                    return Some(error_reply(command, "invalid_command", "value is required"));
                }
            }
        } else {
            None
        };
        let rec = match self.owned(&manager, command, &job_id).await {
            Ok(r) => r,
            Err(e) => return Some(e),
        };
        if rec.status.is_terminal() {
            return Some(json!({
                "command": command,
                "error": "not_running",
                "message": format!("job {job_id} is no longer running ({})", rec.status.as_str()),
                "job_id": job_id,
                "input": input,
            }));
        }
        let op = InputOp {
            job_id: job_id.clone(),
            input: input.to_owned(),
            handle: handle.to_owned(),
            value,
        };
        self.inputs.retain(|_, q| !q.is_closed());
        let queue = self.inputs.entry(job_id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(INPUT_QUEUE);
            tokio::spawn(run_input_queue(
                manager,
                self.user.clone(),
                job_id,
                rx,
                self.tx.downgrade(),
            ));
            tx
        });
        // Never wait here: a full queue must not stop this socket's other commands.
        match queue.try_send(op) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(op)) => Some(json!({
                "command": op.command(),
                "error": "busy",
                "message": format!(
                    "{INPUT_QUEUE} input commands for job {} are already waiting; \
                     this one was not applied (retry after their replies)",
                    op.job_id
                ),
                "job_id": op.job_id,
                "input": op.input,
            })),
            // The queue ended with its job between the check and now.
            Err(mpsc::error::TrySendError::Closed(op)) => Some(json!({
                "command": op.command(),
                "error": "not_running",
                "message": format!("job {} is no longer running", op.job_id),
                "job_id": op.job_id,
                "input": op.input,
            })),
        }
    }

    /// Streams the job's events after `since` to this socket (replacing an earlier stream of the
    /// same job); `gone` is sent instead when the job has left the manager's memory.
    fn stream(
        &mut self,
        manager: &JobExecutionManager,
        job_id: &str,
        since: u64,
        gone: Option<Value>,
    ) {
        if let Some(old) = self.streams.remove(job_id) {
            old.abort();
        }
        self.streams.retain(|_, t| !t.is_finished());
        let tx = self.tx.clone();
        let subscription = manager.subscribe(job_id, since);
        let job = job_id.to_owned();
        let task = tokio::spawn(async move {
            let mut events = match subscription {
                Ok(ev) => ev,
                Err(_) => {
                    if let Some(v) = gone {
                        let _ = tx.send(Out::Value(v)).await;
                    }
                    return;
                }
            };
            let mut last = since;
            while let Some(e) = events.next().await {
                if e.seq > last + 1 {
                    // Older than the replay buffer: say so rather than skip silently.
                    let notice = json!({
                        "type": "lag",
                        "job_id": job,
                        "missed_from_seq": last + 1,
                        "missed_to_seq": e.seq - 1,
                        "message": "this client fell behind the job's replay buffer; these events are lost to it",
                    });
                    if tx.send(Out::Value(notice)).await.is_err() {
                        return;
                    }
                }
                last = e.seq;
                let terminal = is_terminal(&e);
                if tx.send(Out::Event(Box::new(e))).await.is_err() || terminal {
                    return;
                }
            }
        });
        self.streams.insert(job_id.to_owned(), task);
    }
}

/// Input commands that may wait per job and socket; more are refused with `busy`.
pub const INPUT_QUEUE: usize = 64;

/// One `stream_input` (with a value) or `end_input_stream` (without).
struct InputOp {
    job_id: String,
    input: String,
    handle: String,
    value: Option<Value>,
}

impl InputOp {
    fn command(&self) -> &'static str {
        if self.value.is_some() {
            "stream_input"
        } else {
            "end_input_stream"
        }
    }

    async fn run(self, manager: &JobExecutionManager, user: &str) -> Value {
        let command = self.command();
        let result = match self.value {
            Some(value) => {
                manager
                    .stream_input(&self.job_id, user, &self.input, &self.handle, value)
                    .await
            }
            None => {
                manager
                    .end_input_stream(&self.job_id, user, &self.input, &self.handle)
                    .await
            }
        };
        match result {
            Ok(()) => json!({
                "command": command,
                "message": if command == "stream_input" { "Input value pushed" } else { "Input stream ended" },
                "job_id": self.job_id,
                "input": self.input,
                "handle": self.handle,
            }),
            Err(e) => {
                use nodetool_core::ErrorKind;
                let code = match e.kind() {
                    ErrorKind::NotFound => "not_found",
                    ErrorKind::InvalidInput => "invalid_input",
                    ErrorKind::Unsupported => "not_supported",
                    ErrorKind::Unavailable => "not_running",
                    _ => "internal",
                };
                let message = if code == "internal" {
                    tracing::error!(error = %e, job_id = %self.job_id, "{command} failed");
                    "internal server error".to_owned()
                } else {
                    e.message().to_owned()
                };
                json!({
                    "command": command,
                    "error": code,
                    "message": message,
                    "job_id": self.job_id,
                    "input": self.input,
                })
            }
        }
    }
}

/// Runs one job's input commands in order and replies to each; ends (answering what is still
/// queued) when the job ends or the socket drops its queue. Replies to a closed socket are
/// dropped, but commands the client sent are still carried out.
async fn run_input_queue(
    manager: JobExecutionManager,
    user: String,
    job_id: String,
    mut ops: mpsc::Receiver<InputOp>,
    out: mpsc::WeakSender<Out>,
) {
    let reply = |v: Value| {
        let out = out.clone();
        async move {
            if let Some(tx) = out.upgrade() {
                let _ = tx.send(Out::Value(v)).await;
            }
        }
    };
    let mut job_done = Box::pin(manager.wait(&job_id));
    loop {
        let op = tokio::select! {
            biased;
            op = ops.recv() => op,
            _ = &mut job_done => break,
        };
        let Some(op) = op else { return };
        reply(op.run(&manager, &user).await).await;
    }
    ops.close();
    while let Some(op) = ops.recv().await {
        reply(op.run(&manager, &user).await).await;
    }
}

fn pong() -> Value {
    let ts = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    json!({"type": "pong", "ts": ts})
}

/// The client-safe message of an error: the error's own for the caller's mistakes, a generic
/// line (and a log entry) for server-side failures, which can name paths and backends.
fn api_message(e: nodetool_core::Error) -> String {
    use nodetool_core::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidInput
        | ErrorKind::Unsupported
        | ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        // The job manager's per-user queue limit: the message names it and when to retry.
        | ErrorKind::RateLimited => e.message().to_owned(),
        ErrorKind::Unavailable => "the job manager is unavailable; retry later".to_owned(),
        _ => {
            tracing::error!(error = %e, "websocket command failed");
            "internal server error".to_owned()
        }
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    /// `n` nested one-element arrays around a nil, as MessagePack and as JSON.
    fn nested(n: usize) -> (Vec<u8>, String) {
        let mut mp = vec![0x91; n];
        mp.push(0xc0);
        (mp, format!("{}null{}", "[".repeat(n), "]".repeat(n)))
    }

    #[test]
    fn deeply_nested_frames_are_refused_in_both_encodings_without_overflowing() {
        let (mp, json) = nested(100);
        assert!(decode_binary_frame(&mp).is_ok());
        assert!(decode_text_frame(&json).is_ok());
        // Far past the limit: a clear error, never a stack overflow (rmp-serde's own limit is
        // 1024, which a debug build's stack does not survive).
        for n in [MAX_FRAME_DEPTH + 1, 1000, 100_000] {
            let (mp, json) = nested(n);
            let err = decode_binary_frame(&mp).unwrap_err();
            assert!(err.contains("depth"), "{err}");
            assert!(decode_text_frame(&json).is_err());
        }
    }
}
