//! `/ws`: NodeTool's unified WebSocket protocol.
//!
//! Frames are `{"command": <name>, "data": {...}}`, JSON in text frames or MessagePack in binary
//! frames; every frame's type is in [`crate::wire`] (decoded by [`wire::parse_frame`], answered
//! with [`wire::Reply`], [`wire::ErrorFrame`] or [`wire::Control`]). Replies and events go out in
//! the format of the client's last frame (`set_mode` overrides it). Commands: `run_job` (a
//! client `job_id` is used as the job's id, see [`nodetool_core::JobId::parse`]; the reply
//! carries `job_id` and `status`, a queued job also gets a `job_update` `queued` with its
//! `queue_position`; the job's events then stream on this socket), `reconnect_job` (`job_id`,
//! `last_seq`, alias `since_seq`: a `job_resumed` reply, then the events after that seq, then
//! live ones; a `last_seq` past the job's newest event is `invalid_input`), `cancel_job`,
//! `pause_job` / `resume_job` (every strategy, a subprocess or Docker job when its worker can
//! pause; [`nodetool_engine::pause`] has the semantics; on a job that has ended: `not_running`), `get_status`, `set_mode`, `ping`, `stream_input`,
//! `end_input_stream`. The control frame `{"type":"ping"}` gets `{"type":"pong","ts"}`; any
//! other frame with a `type` and no `command` (the web client's `client_tools_manifest`) is
//! ignored. Each command gets one reply: `{"command", "message", ...}` or
//! `{"command", "error", "message"}`.
//!
//! Events carry `seq` and NodeTool's `job_seq` (the same number). Statuses are NodeTool's:
//! `queued` for a job waiting for a slot, `paused`, and `timed_out` for a job that ran out of
//! time (REST and SSE keep the record's `scheduled` / `failed`).
//!
//! Streamed inputs, by NodeTool's rule: a job whose graph has a streaming input node
//! (`RealtimeAudioInput`) keeps it open with no flag (it first sends its param or non-null
//! value); `"streaming_inputs": true` (not NodeTool's) also keeps every other input node without
//! a param open, and `false` none. `stream_input` (`job_id`, `input`: the input node's name,
//! `value`, `handle`: by default the input's own, `output` or RealtimeAudioInput's `chunk`) sends
//! one value downstream (a NodeTool chunk dict passes as it is), `end_input_stream` (`job_id`, `input`, `handle`) ends that input, and the
//! job finishes once every streamed input has ended; this works on every strategy. Both commands
//! take any job of the socket's user, from any socket. Each job's input commands run in order on
//! their own bounded queue per socket, so a push waiting for room in the job's input buffer (or
//! for a scheduled job to start) delays only later input commands for that job, and their
//! replies, never this socket's other commands; with [`INPUT_QUEUE`] commands already waiting, a
//! further one is refused at once with `busy` (and not applied). Errors: `invalid_command` (a
//! missing field), `not_found` (no such job for this user, or no such input or handle),
//! `not_running` (the job has ended), `invalid_input` (a wrong-typed value, an input that is not
//! streamed because it took its value once, a push after the end), `not_supported` (a job of
//! another process outside queue mode), `busy`. In queue mode a job run by a worker gets its
//! inputs, pause and resume through the queue (the worker applies them and logs what its engine
//! refuses).
//!
//! Auth happens before the upgrade (401 otherwise): `Authorization: Bearer` or `?api_key=`.
//! `?resume_job=<job id>` (NodeTool's routing hint for multi-instance deployments) is accepted;
//! one process holds every job here, so it needs no routing. A `user_id` in any command is
//! ignored; a job of another user is "not found".
//!
//! Fan-out: each socket has one bounded outgoing queue; one task per streamed job feeds it and
//! waits when it is full, so a slow client only slows its own forwarders. The manager's
//! subscription then resyncs from the job's replay buffer, so nothing is lost unless the client
//! falls further behind than that buffer; then it gets a `{"type":"lag"}` notice naming the
//! missed seqs ([`wire::follow`], shared with SSE), and can `reconnect_job` or fetch the job's
//! result.
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
use nodetool_core::{JobId, UserId};
use nodetool_exec::{JobExecutionManager, RunJobRequest};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::{websocket_user, Authenticator};
use crate::wire::{
    self, wire_error, ActiveJob, Command, Control, ErrorFrame, FinalUpdate, Frame, Inbound,
    InputApplied, InputCommand, JobControlled, JobResumed, JobStarted, JobView, Mode, Reply,
    StatusReply, WsStatus,
};
use crate::AppState;

/// Outgoing frames queued per socket before job forwarders wait.
pub const SOCKET_QUEUE: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    api_key: Option<String>,
    /// NodeTool's hint naming the run to route this socket to.
    resume_job: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let user = match &state.auth {
        Authenticator::Local => UserId::local(),
        auth => match websocket_user(auth, &headers, q.api_key).await {
            Ok(user) => user,
            Err(response) => return response,
        },
    };
    if let Some(job) = &q.resume_job {
        tracing::debug!(user = %user, resume_job = %job, "websocket resume hint (single instance: nothing to route)");
    }
    // Clients send small command frames: tungstenite's default 128 KiB read buffer was most of
    // a socket's memory (142 KiB per idle client; 17 KiB with 8 KiB).
    // A message over the cap is refused from its frame header, before it is buffered, and the
    // socket is closed with 1009 (a 9 MiB JSON message used to cost ~1 GiB to parse).
    let max = state.options.ws_max_message_bytes;
    // The handshake's trace context, for the socket's jobs that bring none of their own.
    let traceparent = crate::jobs::traceparent_header(&headers);
    ws.read_buffer_size(8 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(state, user, traceparent, socket))
}

/// Something to send; encoded in the socket's mode when it is written.
enum Out {
    Frame(Box<Frame>),
    /// A close frame; the writer stops after it.
    Close(u16, String),
}

struct Session {
    user: UserId,
    /// The workflow store, for `run_job {workflow_id}` without a graph.
    workflows: crate::workflow_store::WorkflowStore,
    manager: Option<JobExecutionManager>,
    tx: mpsc::Sender<Out>,
    /// true: MessagePack binary frames; false: JSON text.
    binary: Arc<AtomicBool>,
    /// Jobs whose events stream to this socket.
    streams: HashMap<JobId, JoinHandle<()>>,
    /// The handshake's `traceparent` header: the trace of a `run_job` that names none.
    traceparent: Option<String>,
    /// Per job, the queue its `stream_input` / `end_input_stream` commands run from, in order.
    inputs: HashMap<JobId, mpsc::Sender<InputOp>>,
}

async fn session(state: AppState, user: UserId, traceparent: Option<String>, socket: WebSocket) {
    let _open = state.metrics.open_stream(crate::StreamKind::WebSocket);
    let max_message = state.options.ws_max_message_bytes;
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Out>(SOCKET_QUEUE);
    // NodeTool's default mode is binary until the client says otherwise.
    let binary = Arc::new(AtomicBool::new(true));
    let writer_mode = binary.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let frame = match out {
                Out::Close(code, reason) => {
                    let frame = axum::extract::ws::CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                Out::Frame(frame) => frame,
            };
            let Some(msg) = encode(&frame, writer_mode.load(Ordering::Relaxed)) else {
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
        workflows: state.workflows.clone(),
        manager: state.jobs.clone(),
        tx,
        binary,
        streams: HashMap::new(),
        inputs: HashMap::new(),
        traceparent,
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
            Err(details) => Some(ErrorFrame::undecodable(details).into()),
        };
        if let Some(reply) = reply {
            if s.tx.send(Out::Frame(Box::new(reply))).await.is_err() {
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

fn encode(frame: &Frame, binary: bool) -> Option<Message> {
    if binary {
        match frame.to_msgpack() {
            Ok(b) => Some(Message::Binary(b.into())),
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode a frame as MessagePack");
                None
            }
        }
    } else {
        match frame.to_json() {
            Ok(s) => Some(Message::Text(s.into())),
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode a frame as JSON");
                None
            }
        }
    }
}

/// The `/ws` error for a failed job operation: the table's code, and the error's own message
/// for the caller's mistakes (a generic line, and a log entry, for server-side failures).
fn op_error(command: &str, job_id: &str, e: nodetool_core::Error) -> ErrorFrame {
    let kind = e.kind();
    let code = wire_error(kind).ws;
    let message = if code == "internal" {
        tracing::error!(error = %e, job_id, "{command} failed");
        "internal server error".to_owned()
    } else {
        e.message().to_owned()
    };
    ErrorFrame::new(command, code, message)
        .job(job_id)
        .kind(kind)
}

impl Session {
    /// One reply per frame (`None` for nothing to say).
    async fn handle(&mut self, frame: Value) -> Option<Frame> {
        match wire::parse_frame(frame) {
            Err(e) => Some(e.into()),
            Ok(Inbound::Ping) => Some(Control::pong().into()),
            Ok(Inbound::Ignored(kind)) => {
                tracing::debug!(user = %self.user, frame_type = %kind, "ignoring a non-command websocket frame");
                None
            }
            Ok(Inbound::Command(command)) => self.command(command).await,
        }
    }

    async fn command(&mut self, command: Command) -> Option<Frame> {
        Some(match command {
            Command::Ping => Control::pong().into(),
            Command::SetMode(mode) => {
                self.binary.store(mode == Mode::Binary, Ordering::Relaxed);
                let name = if mode == Mode::Binary {
                    "binary"
                } else {
                    "text"
                };
                Reply::SetMode {
                    message: format!("Mode set to {name}"),
                    mode,
                }
                .into()
            }
            Command::RunJob(request) => return self.run_job(*request).await,
            Command::ReconnectJob { job_id, last_seq } => {
                return self.reconnect_job(job_id, last_seq).await
            }
            Command::CancelJob { job_id } => self.cancel_job(job_id).await,
            Command::PauseJob { job_id } => self.pause_job(job_id, true).await,
            Command::ResumeJob { job_id } => self.pause_job(job_id, false).await,
            Command::GetStatus { job_id } => self.get_status(job_id).await,
            Command::StreamInput(input) => return self.input_command("stream_input", input).await,
            Command::EndInputStream(input) => {
                return self.input_command("end_input_stream", input).await
            }
        })
    }

    fn manager(&self, command: &str) -> Result<JobExecutionManager, Box<Frame>> {
        self.manager.clone().ok_or_else(|| {
            Box::new(
                ErrorFrame::new(
                    command,
                    "unavailable",
                    "job execution is not enabled on this server",
                )
                .into(),
            )
        })
    }

    /// The command's job id, parsed, and the job's record, if this socket's user owns it. An id
    /// that breaks the id rule ([`JobId::parse`]) names no job: it gets the same `not_found`.
    async fn owned(
        &self,
        manager: &JobExecutionManager,
        command: &str,
        job_id: &str,
    ) -> Result<(JobId, nodetool_exec::JobRecord), Box<Frame>> {
        let not_found = || {
            Box::new(
                ErrorFrame::new(command, "not_found", "Job not found")
                    .job(job_id)
                    .into(),
            )
        };
        let id = JobId::parse(job_id).map_err(|_| not_found())?;
        match manager.get(&id).await {
            Ok(Some(rec)) if rec.user_id == self.user => Ok((id, rec)),
            Ok(_) => Err(not_found()),
            Err(e) => {
                tracing::error!(error = %e, job_id, "job lookup failed");
                Err(Box::new(
                    ErrorFrame::new(command, "internal", "job lookup failed").into(),
                ))
            }
        }
    }

    /// Queues a frame; a closed socket is noticed by the read loop.
    async fn send(&self, frame: impl Into<Frame>) {
        let _ = self.tx.send(Out::Frame(Box::new(frame.into()))).await;
    }

    /// `None` when the reply was already sent (before the job's events).
    async fn run_job(&mut self, request: RunJobRequest) -> Option<Frame> {
        let manager = match self.manager("run_job") {
            Ok(m) => m,
            Err(e) => return Some(*e),
        };
        let mut request = request;
        if request.traceparent.is_none() {
            request.traceparent = self.traceparent.clone();
        }
        if let Err(e) = crate::workflows::resolve_stored_graph(
            &self.workflows,
            self.user.as_str(),
            &mut request,
        )
        .await
        {
            return Some(ErrorFrame::new("run_job", "job_rejected", api_message(e)).into());
        }
        match manager.submit(request, &self.user).await {
            Ok(job_id) => {
                let rec = manager.get(&job_id).await.ok().flatten();
                let view = rec.as_ref().map(JobView::of);
                let status = view.as_ref().map_or(WsStatus::Running, |v| {
                    v.ws_status(manager.is_paused(&job_id))
                });
                let queue_position = manager.queue_position(&job_id);
                tracing::info!(%job_id, user = %self.user, "job submitted over websocket");
                // The reply goes out before the first event, so the client knows the id.
                self.send(Reply::RunJob(JobStarted {
                    message: "Job started",
                    job_id: job_id.to_string(),
                    workflow_id: view.as_ref().map(|v| v.workflow_id.clone()),
                    status,
                    queue_position,
                }))
                .await;
                if let (Some(position), Some(view)) = (queue_position, &view) {
                    self.send(Control::Queued {
                        job_id: job_id.to_string(),
                        workflow_id: view.workflow_id.clone(),
                        status: WsStatus::Queued,
                        queue_position: position,
                    })
                    .await;
                }
                self.stream(&manager, &job_id, 0, None);
                None
            }
            Err(e) => {
                let kind = e.kind();
                Some(
                    ErrorFrame::new("run_job", "job_rejected", api_message(e))
                        .kind(kind)
                        .into(),
                )
            }
        }
    }

    /// `None` when the reply was already sent (before the job's events).
    async fn reconnect_job(&mut self, job_id: String, last_seq: u64) -> Option<Frame> {
        const COMMAND: &str = "reconnect_job";
        let manager = match self.manager(COMMAND) {
            Ok(m) => m,
            Err(e) => return Some(*e),
        };
        let (id, rec) = match self.owned(&manager, COMMAND, &job_id).await {
            Ok(r) => r,
            Err(e) => return Some(*e),
        };
        let job_seq = manager.last_seq(&id);
        if let Some(newest) = job_seq.filter(|newest| last_seq > *newest) {
            return Some(
                ErrorFrame::new(
                    COMMAND,
                    "invalid_input",
                    format!(
                        "last_seq {last_seq} is past job {job_id}'s newest event ({newest}); \
                         send the job_seq of the last event received (0 for all)"
                    ),
                )
                .job(job_id)
                .kind(nodetool_core::ErrorKind::InvalidInput)
                .into(),
            );
        }
        let view = JobView::of(&rec);
        self.send(Reply::ReconnectJob(JobResumed {
            kind: "job_resumed",
            message: format!("Reconnecting to job {job_id}"),
            job_id: job_id.clone(),
            workflow_id: view.workflow_id.clone(),
            status: view.ws_status(manager.is_paused(&id)),
            last_seq,
            since_seq: last_seq,
            job_seq,
        }))
        .await;
        self.stream(&manager, &id, last_seq, Some(view.final_update()));
        None
    }

    async fn cancel_job(&mut self, job_id: String) -> Frame {
        const COMMAND: &str = "cancel_job";
        let manager = match self.manager(COMMAND) {
            Ok(m) => m,
            Err(e) => return *e,
        };
        let id = match self.owned(&manager, COMMAND, &job_id).await {
            Ok((id, _)) => id,
            Err(e) => return *e,
        };
        match manager.cancel(&id).await {
            // The job's own cancelled job_update still streams to this socket.
            Ok(true) => Reply::CancelJob {
                message: "Job cancellation requested",
                job_id,
            }
            .into(),
            Ok(false) => {
                ErrorFrame::new(COMMAND, "not_running", "Job not found or already completed")
                    .job(job_id)
                    .into()
            }
            Err(e) => ErrorFrame::new(COMMAND, "internal", api_message(e)).into(),
        }
    }

    /// `pause_job` (`pause`) or `resume_job`.
    async fn pause_job(&mut self, job_id: String, pause: bool) -> Frame {
        let command = if pause { "pause_job" } else { "resume_job" };
        let manager = match self.manager(command) {
            Ok(m) => m,
            Err(e) => return *e,
        };
        // An id that breaks the id rule names no job: the manager's own answer for one.
        let Ok(id) = JobId::parse(&job_id) else {
            let e = nodetool_core::Error::not_found("no such job").with_context("job_id", &job_id);
            return op_error(command, &job_id, e).into();
        };
        let result = if pause {
            manager.pause(&id, &self.user).await
        } else {
            manager.resume(&id, &self.user).await
        };
        match result {
            Ok(changed) => {
                let status = match manager.get(&id).await {
                    // A queued job's worker applies the pause: this process only knows it sent it.
                    Ok(Some(rec)) => JobView::of(&rec).ws_status(manager.is_paused(&id) || pause),
                    _ if pause => WsStatus::Paused,
                    _ => WsStatus::Running,
                };
                let done = JobControlled {
                    message: match (pause, changed) {
                        (true, true) => "Job paused",
                        (true, false) => "Job already paused",
                        (false, true) => "Job resumed",
                        (false, false) => "Job was not paused",
                    },
                    job_id,
                    status,
                    changed,
                };
                if pause {
                    Reply::PauseJob(done).into()
                } else {
                    Reply::ResumeJob(done).into()
                }
            }
            Err(e) => op_error(command, &job_id, e).into(),
        }
    }

    async fn get_status(&mut self, job_id: Option<String>) -> Frame {
        const COMMAND: &str = "get_status";
        let manager = match self.manager(COMMAND) {
            Ok(m) => m,
            Err(e) => return *e,
        };
        let reply = match job_id {
            Some(job_id) => match self.owned(&manager, COMMAND, &job_id).await {
                Ok((id, rec)) => {
                    let view = JobView::of(&rec);
                    StatusReply::Job {
                        status: view.ws_status(manager.is_paused(&id)),
                        queue_position: manager.queue_position(&id),
                        job_id: view.id,
                        workflow_id: view.workflow_id,
                        error: view.error,
                    }
                }
                Err(_) => StatusReply::NotFound {
                    job_id,
                    status: "not_found",
                },
            },
            None => {
                let mut active_jobs = Vec::new();
                for job_id in self.streams.keys() {
                    if let Ok(Some(rec)) = manager.get(job_id).await {
                        let view = JobView::of(&rec);
                        active_jobs.push(ActiveJob {
                            status: view.ws_status(manager.is_paused(job_id)),
                            job_id: view.id,
                            workflow_id: view.workflow_id,
                        });
                    }
                }
                StatusReply::Active { active_jobs }
            }
        };
        Reply::GetStatus(reply).into()
    }

    /// `stream_input` / `end_input_stream`: checks the job's owner and that it runs, then
    /// queues the command on the job's input queue, which replies (`None`: nothing to send now).
    async fn input_command(&mut self, command: &'static str, input: InputCommand) -> Option<Frame> {
        let manager = match self.manager(command) {
            Ok(m) => m,
            Err(e) => return Some(*e),
        };
        let (job_id, rec) = match self.owned(&manager, command, &input.job_id).await {
            Ok(r) => r,
            Err(e) => return Some(*e),
        };
        if rec.status.is_terminal() {
            return Some(
                ErrorFrame::new(
                    command,
                    "not_running",
                    format!(
                        "job {} is no longer running ({})",
                        input.job_id,
                        rec.status.as_str()
                    ),
                )
                .job(input.job_id)
                .input(input.input)
                .into(),
            );
        }
        let op = InputOp { command, input };
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
            Err(mpsc::error::TrySendError::Full(op)) => Some(
                ErrorFrame::new(
                    op.command,
                    "busy",
                    format!(
                        "{INPUT_QUEUE} input commands for job {} are already waiting; \
                         this one was not applied (retry after their replies)",
                        op.input.job_id
                    ),
                )
                .job(op.input.job_id)
                .input(op.input.input)
                .into(),
            ),
            // The queue ended with its job between the check and now.
            Err(mpsc::error::TrySendError::Closed(op)) => Some(
                ErrorFrame::new(
                    op.command,
                    "not_running",
                    format!("job {} is no longer running", op.input.job_id),
                )
                .job(op.input.job_id)
                .input(op.input.input)
                .into(),
            ),
        }
    }

    /// Streams the job's events after `since` to this socket (replacing an earlier stream of the
    /// same job); `gone` is sent instead when the job has left the manager's memory.
    fn stream(
        &mut self,
        manager: &JobExecutionManager,
        job_id: &JobId,
        since: u64,
        gone: Option<FinalUpdate>,
    ) {
        if let Some(old) = self.streams.remove(job_id) {
            old.abort();
        }
        self.streams.retain(|_, t| !t.is_finished());
        let tx = self.tx.clone();
        let events = manager.subscribe(job_id, since).ok();
        let tail = if events.is_none() { gone } else { None };
        let task = tokio::spawn(async move {
            let items = wire::follow(events, since, tail);
            let mut items = std::pin::pin!(items);
            while let Some(item) = items.next().await {
                if tx.send(Out::Frame(Box::new(item.into()))).await.is_err() {
                    return;
                }
            }
        });
        self.streams.insert(job_id.clone(), task);
    }
}

/// Input commands that may wait per job and socket; more are refused with `busy`.
pub const INPUT_QUEUE: usize = 64;

/// One `stream_input` (with a value) or `end_input_stream` (without).
struct InputOp {
    command: &'static str,
    input: InputCommand,
}

impl InputOp {
    async fn run(self, manager: &JobExecutionManager, job: &JobId, user: &UserId) -> Frame {
        let InputCommand {
            job_id,
            input,
            handle,
            value,
        } = self.input;
        let result = match value {
            Some(value) => {
                manager
                    .stream_input(job, user, &input, &handle, value)
                    .await
            }
            None => manager.end_input_stream(job, user, &input, &handle).await,
        };
        match result {
            Ok(()) => {
                let applied = InputApplied {
                    message: if self.command == "stream_input" {
                        "Input value pushed"
                    } else {
                        "Input stream ended"
                    },
                    job_id,
                    input,
                    handle: (!handle.is_empty()).then_some(handle),
                };
                if self.command == "stream_input" {
                    Reply::StreamInput(applied).into()
                } else {
                    Reply::EndInputStream(applied).into()
                }
            }
            Err(e) => op_error(self.command, &job_id, e).input(input).into(),
        }
    }
}

/// Runs one job's input commands in order and replies to each; ends (answering what is still
/// queued) when the job ends or the socket drops its queue. Replies to a closed socket are
/// dropped, but commands the client sent are still carried out.
async fn run_input_queue(
    manager: JobExecutionManager,
    user: UserId,
    job_id: JobId,
    mut ops: mpsc::Receiver<InputOp>,
    out: mpsc::WeakSender<Out>,
) {
    let reply = |frame: Frame| {
        let out = out.clone();
        async move {
            if let Some(tx) = out.upgrade() {
                let _ = tx.send(Out::Frame(Box::new(frame))).await;
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
        reply(op.run(&manager, &job_id, &user).await).await;
    }
    ops.close();
    while let Some(op) = ops.recv().await {
        reply(op.run(&manager, &job_id, &user).await).await;
    }
}

/// The client-safe message of an error: the error's own for the caller's mistakes, a generic
/// line (and a log entry) for server-side failures, which can name paths and backends.
fn api_message(e: nodetool_core::Error) -> String {
    use nodetool_core::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidInput
        | ErrorKind::Unsupported
        | ErrorKind::NotFound
        | ErrorKind::AlreadyExists
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
