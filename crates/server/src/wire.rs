//! The typed wire layer: every frame `/ws` reads and writes, the job view REST (`/api/jobs`),
//! SSE and `/ws` share, the one event-follow stream SSE and `/ws` read a job's events through,
//! and the one table from [`ErrorKind`] to an HTTP status and a wire error code.
//!
//! Nothing here does I/O: [`crate::ws`] and [`crate::jobs`] decode with [`parse_frame`], answer
//! with [`Reply`], [`ErrorFrame`] and [`Control`], and follow jobs with [`follow`]. The snapshot
//! tests (`tests/server/wire_frames.rs`) pin the shape of every frame in JSON and MessagePack, so a
//! protocol change is a reviewed diff.

use std::collections::VecDeque;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::Stream;
use nodetool_core::ErrorKind;
use nodetool_engine::{Event, EventEnvelope, Status};
use nodetool_exec::{JobEvents, JobRecord, RunJobRequest, StrategyKind};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Errors: one table.

/// How an error kind goes over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// The HTTP status of a REST answer.
    pub status: StatusCode,
    /// `{"error": {"kind"}}` of a REST answer.
    pub code: &'static str,
    /// `"error"` of a `/ws` job command's error reply (NodeTool's vocabulary: a job that has
    /// ended is `not_running`, a feature a job lacks `not_supported`).
    pub ws: &'static str,
}

/// The one table from an error kind to its HTTP status, REST code and `/ws` code.
pub fn wire_error(kind: ErrorKind) -> WireError {
    let (status, code, ws) = match kind {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found", "not_found"),
        ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input", "invalid_input"),
        ErrorKind::RangeNotSatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "invalid_input",
        ),
        ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", "too_large"),
        ErrorKind::StorageFull => (
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "insufficient_storage",
        ),
        ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "already_exists", "already_exists"),
        ErrorKind::PermissionDenied => (
            StatusCode::FORBIDDEN,
            "permission_denied",
            "permission_denied",
        ),
        ErrorKind::RateLimited => (
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limited",
            "rate_limited",
        ),
        ErrorKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not_running",
        ),
        ErrorKind::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout", "timeout"),
        ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported", "not_supported"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal"),
    };
    WireError { status, code, ws }
}

// ---------------------------------------------------------------------------------------------
// Statuses as clients see them.

/// A job's status on `/ws`, in NodeTool's words: `queued` for our `scheduled` (with a
/// `queue_position`), `paused` for a running job whose gate is closed, `timed_out` for a job
/// that failed by running out of time. REST keeps the record's own status.
pub fn ws_status(status: Status, paused: bool, error: Option<&str>) -> WsStatus {
    match status {
        Status::Scheduled => WsStatus::Queued,
        Status::Running if paused => WsStatus::Paused,
        Status::Running => WsStatus::Running,
        Status::Paused => WsStatus::Paused,
        Status::Completed => WsStatus::Completed,
        Status::Failed if error.is_some_and(nodetool_engine::is_job_timeout_message) => {
            WsStatus::TimedOut
        }
        Status::Failed => WsStatus::Failed,
        Status::TimedOut => WsStatus::TimedOut,
        Status::Cancelled => WsStatus::Cancelled,
        Status::Suspended => WsStatus::Suspended,
    }
}

/// NodeTool's job statuses (`docs/websocket-api.md`, `job_update.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsStatus {
    Queued,
    Running,
    Paused,
    Suspended,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

/// A job event as `/ws` sends it: the envelope's fields plus NodeTool's `job_seq` (equal to
/// `seq`, which stays for our own clients), with a job time-out's terminal `failed` said as
/// `timed_out`.
pub fn ws_event(mut e: EventEnvelope) -> WsEvent {
    if let Event::JobUpdate(u) = &mut e.event {
        if u.status == Status::Failed
            && u.error
                .as_deref()
                .is_some_and(nodetool_engine::is_job_timeout_message)
        {
            u.status = Status::TimedOut;
        }
    }
    WsEvent {
        job_seq: e.seq,
        event: e,
    }
}

/// See [`ws_event`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WsEvent {
    #[serde(flatten)]
    pub event: EventEnvelope,
    pub job_seq: u64,
}

// ---------------------------------------------------------------------------------------------
// The job view.

/// A job as every client sees it: the body of `GET /api/jobs/{id}`, each entry of
/// `GET /api/jobs`, and the source of the `job_update` a client gets for a job that left
/// memory and of `/ws`'s `get_status`. Built from a record in one place ([`JobView::of`]); it
/// never carries the worker's pid or container id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub id: String,
    pub user_id: String,
    pub workflow_id: String,
    pub job_type: &'static str,
    pub status: Status,
    pub execution_strategy: StrategyKind,
    pub params: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub result: Option<Value>,
}

impl JobView {
    pub fn of(r: &JobRecord) -> Self {
        Self {
            id: r.id.to_string(),
            user_id: r.user_id.to_string(),
            workflow_id: r.workflow_id.clone(),
            job_type: "workflow",
            status: r.status,
            execution_strategy: r.strategy,
            params: r.params.clone(),
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error.clone(),
            result: r.result.clone(),
        }
    }

    /// The one event a client gets for a job that ended and left memory: its final status.
    pub fn final_update(&self) -> FinalUpdate {
        FinalUpdate {
            kind: "job_update",
            job_id: self.id.clone(),
            workflow_id: self.workflow_id.clone(),
            status: self.status,
            error: self.error.clone(),
            result: self.result.clone(),
        }
    }

    /// The status `/ws` reports for this job.
    pub fn ws_status(&self, paused: bool) -> WsStatus {
        ws_status(self.status, paused, self.error.as_deref())
    }
}

/// `{"type": "job_update", ...}` for a job known only from its record (SSE and `/ws`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalUpdate {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub job_id: String,
    pub workflow_id: String,
    pub status: Status,
    pub error: Option<String>,
    pub result: Option<Value>,
}

/// `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_start_key: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Following a job's events: one stream for SSE and /ws.

/// Sent in place of events that left the replay buffer before this client read them (SSE's
/// `event: lag`, `/ws`'s `{"type": "lag"}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagNotice {
    pub job_id: String,
    pub missed_from_seq: u64,
    pub missed_to_seq: u64,
    pub message: &'static str,
}

impl LagNotice {
    pub fn new(job_id: &str, from: u64, to: u64) -> Self {
        Self {
            job_id: job_id.to_owned(),
            missed_from_seq: from,
            missed_to_seq: to,
            message: "this client fell behind the job's replay buffer; these events are lost to it",
        }
    }
}

/// One item of a followed job.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    Event(Box<EventEnvelope>),
    /// Events `missed_from_seq..=missed_to_seq` are lost to this client.
    Lag(LagNotice),
    /// The job had left memory: its record's final status.
    Final(FinalUpdate),
}

/// True for the event after which a job sends nothing more.
pub fn is_terminal(e: &EventEnvelope) -> bool {
    matches!(&e.event, Event::JobUpdate(u) if u.status.is_terminal())
}

/// A job's events after `since` until its terminal `job_update` (`events`: the live
/// subscription, `None` when the job has left memory), then `tail` once if the subscription
/// ended without one. A gap in the seqs (the client fell further behind than the job's replay
/// buffer) becomes a [`Followed::Lag`] before the next event, so loss is never silent.
pub fn follow(
    events: Option<JobEvents>,
    since: u64,
    tail: Option<FinalUpdate>,
) -> impl Stream<Item = Followed> + Send {
    struct St {
        events: Option<JobEvents>,
        tail: Option<FinalUpdate>,
        last: u64,
        ready: VecDeque<Followed>,
        ended: bool,
    }
    let st = St {
        events,
        tail,
        last: since,
        ready: VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if let Some(item) = st.ready.pop_front() {
            return Some((item, st));
        }
        if st.ended {
            return None;
        }
        let next = match &mut st.events {
            Some(ev) => ev.next().await,
            None => None,
        };
        match next {
            Some(e) => {
                st.ended = is_terminal(&e);
                let gap = (e.seq > st.last + 1)
                    .then(|| LagNotice::new(&e.job_id, st.last + 1, e.seq - 1));
                st.last = e.seq;
                let event = Followed::Event(Box::new(e));
                match gap {
                    Some(lag) => {
                        st.ready.push_back(event);
                        Some((Followed::Lag(lag), st))
                    }
                    None => Some((event, st)),
                }
            }
            None => {
                st.ended = true;
                st.events = None;
                st.tail.take().map(|t| (Followed::Final(t), st))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// /ws: what clients send.

/// `set_mode`'s modes (also the socket's current encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// MessagePack in binary frames.
    Binary,
    /// JSON in text frames.
    Text,
}

/// A decoded client frame.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// `{"type": "ping"}`: answered with a pong.
    Ping,
    Command(Command),
    /// A frame with a `type` and no `command` (the web client's `client_tools_manifest`,
    /// `renderer_tool_result`, …): not a command of this server; ignored (logged at debug).
    Ignored(String),
}

/// A `/ws` command with its checked data.
#[derive(Debug, Clone)]
pub enum Command {
    Ping,
    SetMode(Mode),
    RunJob(Box<RunJobRequest>),
    /// Replay after `last_seq` (NodeTool's name; our `since_seq` is an alias), then live.
    ReconnectJob {
        job_id: String,
        last_seq: u64,
    },
    CancelJob {
        job_id: String,
    },
    PauseJob {
        job_id: String,
    },
    ResumeJob {
        job_id: String,
    },
    /// One job's status, or (without `job_id`) the jobs this socket follows.
    GetStatus {
        job_id: Option<String>,
    },
    StreamInput(InputCommand),
    EndInputStream(InputCommand),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::SetMode(_) => "set_mode",
            Command::RunJob(_) => "run_job",
            Command::ReconnectJob { .. } => "reconnect_job",
            Command::CancelJob { .. } => "cancel_job",
            Command::PauseJob { .. } => "pause_job",
            Command::ResumeJob { .. } => "resume_job",
            Command::GetStatus { .. } => "get_status",
            Command::StreamInput(_) => "stream_input",
            Command::EndInputStream(_) => "end_input_stream",
        }
    }
}

/// `stream_input` (with a `value`) and `end_input_stream` (without).
#[derive(Debug, Clone, PartialEq)]
pub struct InputCommand {
    pub job_id: String,
    /// The input node's name.
    pub input: String,
    /// The input node's output handle; empty when the client named none (the web client sends
    /// none): then the input's own handle, whatever it is (`output`, RealtimeAudioInput's
    /// `chunk`), as NodeTool's server pushes to every edge of the input.
    pub handle: String,
    pub value: Option<Value>,
}

/// Decodes a frame already parsed as a value: one [`Inbound`], or the error reply to send.
pub fn parse_frame(frame: Value) -> Result<Inbound, Box<ErrorFrame>> {
    let Value::Object(mut frame) = frame else {
        return Err(frame_err(
            "invalid_message",
            "a frame must be a map with a \"command\" (or {\"type\":\"ping\"})",
        ));
    };
    let command = match frame.remove("command") {
        Some(Value::String(c)) => c,
        Some(_) => return Err(frame_err("invalid_message", "\"command\" must be a string")),
        None => {
            return match frame.get("type").and_then(Value::as_str) {
                Some("ping") => Ok(Inbound::Ping),
                Some(kind) => Ok(Inbound::Ignored(kind.to_owned())),
                None => Err(frame_err(
                    "invalid_message",
                    "a frame needs a \"command\" (or is {\"type\":\"ping\"})",
                )),
            }
        }
    };
    let data = match frame.remove("data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(d @ Value::Object(_)) => d,
        Some(_) => {
            return Err(invalid(&command, "\"data\" must be an object"));
        }
    };
    parse_command(&command, data).map(Inbound::Command)
}

/// Refusals travel boxed: an [`ErrorFrame`] is large next to what a command decodes to.
fn frame_err(error: &'static str, message: &str) -> Box<ErrorFrame> {
    Box::new(ErrorFrame::frame(error, message))
}

fn invalid(command: &str, message: impl Into<String>) -> Box<ErrorFrame> {
    Box::new(ErrorFrame::invalid(command, message))
}

/// Data fields: serde errors become `invalid_command` replies naming the field.
fn data<T: for<'de> Deserialize<'de>>(command: &str, data: Value) -> Result<T, Box<ErrorFrame>> {
    serde_json::from_value(data).map_err(|e| invalid(command, e.to_string()))
}

#[derive(Deserialize)]
struct JobRef {
    #[serde(default)]
    job_id: Option<String>,
}

#[derive(Deserialize)]
struct ReconnectData {
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    last_seq: Option<u64>,
    /// Ours, before NodeTool's `last_seq`; `last_seq` wins when both are sent.
    #[serde(default)]
    since_seq: Option<u64>,
}

#[derive(Deserialize)]
struct SetModeData {
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
struct InputData {
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    handle: Option<Value>,
    /// Present (even `null`) or absent.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn required_job_id(command: &str, job_id: Option<String>) -> Result<String, Box<ErrorFrame>> {
    job_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(command, "job_id is required"))
}

fn parse_command(command: &str, d: Value) -> Result<Command, Box<ErrorFrame>> {
    Ok(match command {
        "ping" => Command::Ping,
        "set_mode" => {
            let m: SetModeData = data(command, d)?;
            match m.mode.as_deref() {
                Some("binary") => Command::SetMode(Mode::Binary),
                Some("text") => Command::SetMode(Mode::Text),
                _ => return Err(invalid(command, "mode must be \"binary\" or \"text\"")),
            }
        }
        "run_job" => Command::RunJob(Box::new(data(command, d)?)),
        "reconnect_job" => {
            let r: ReconnectData = data(command, d)?;
            Command::ReconnectJob {
                job_id: required_job_id(command, r.job_id)?,
                last_seq: r.last_seq.or(r.since_seq).unwrap_or(0),
            }
        }
        "cancel_job" | "pause_job" | "resume_job" => {
            let r: JobRef = data(command, d)?;
            let job_id = required_job_id(command, r.job_id)?;
            match command {
                "cancel_job" => Command::CancelJob { job_id },
                "pause_job" => Command::PauseJob { job_id },
                _ => Command::ResumeJob { job_id },
            }
        }
        "get_status" => {
            let r: JobRef = data(command, d)?;
            Command::GetStatus {
                job_id: r.job_id.filter(|s| !s.is_empty()),
            }
        }
        "stream_input" | "end_input_stream" => {
            let r: InputData = data(command, d)?;
            let job_id = required_job_id(command, r.job_id)?;
            let input = r
                .input
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(command, "input (the input node's name) is required"))?;
            let handle = match r.handle {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(h)) if !h.is_empty() => h,
                Some(_) => return Err(invalid(command, "handle must be a non-empty string")),
            };
            let input = InputCommand {
                job_id,
                input,
                handle,
                value: None,
            };
            if command == "stream_input" {
                let value = r
                    .value
                    .ok_or_else(|| invalid(command, "value is required"))?;
                Command::StreamInput(InputCommand {
                    value: Some(value),
                    ..input
                })
            } else {
                Command::EndInputStream(input)
            }
        }
        other => {
            return Err(Box::new(ErrorFrame {
                command: Some(other.to_owned()),
                error: "unknown_command",
                message: format!("unknown command {other:?}"),
                ..ErrorFrame::default()
            }))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// /ws: what the server sends.

/// The reply to a command that succeeded, tagged by `command`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Reply {
    SetMode {
        message: String,
        mode: Mode,
    },
    RunJob(JobStarted),
    /// Also NodeTool's `job_resumed` header: it goes out before the replay.
    ReconnectJob(JobResumed),
    CancelJob {
        message: &'static str,
        job_id: String,
    },
    PauseJob(JobControlled),
    ResumeJob(JobControlled),
    GetStatus(StatusReply),
    StreamInput(InputApplied),
    EndInputStream(InputApplied),
}

/// `run_job`'s reply; the job's events follow on the socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStarted {
    pub message: &'static str,
    pub job_id: String,
    pub workflow_id: Option<String>,
    pub status: WsStatus,
    /// For a queued job: 1 is next to start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
}

/// `reconnect_job`'s reply, with `type: "job_resumed"`: the job's status and where the replay
/// starts. Events with `job_seq > last_seq` follow (a `lag` notice first when some are no
/// longer kept), then live ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobResumed {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
    pub job_id: String,
    pub workflow_id: String,
    pub status: WsStatus,
    /// The replay starts after this seq.
    pub last_seq: u64,
    /// Alias of `last_seq` for our own clients.
    pub since_seq: u64,
    /// The job's newest event now (`None` once it left memory: then only its final
    /// `job_update` follows).
    pub job_seq: Option<u64>,
}

/// `pause_job` / `resume_job`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobControlled {
    pub message: &'static str,
    pub job_id: String,
    pub status: WsStatus,
    /// False when the job already was in that state.
    pub changed: bool,
}

/// `get_status`: one job, a job this user does not have, or the jobs this socket follows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StatusReply {
    Job {
        job_id: String,
        workflow_id: String,
        status: WsStatus,
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        queue_position: Option<usize>,
    },
    NotFound {
        job_id: String,
        status: &'static str,
    },
    Active {
        active_jobs: Vec<ActiveJob>,
    },
}

/// An entry of `get_status`'s `active_jobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveJob {
    pub job_id: String,
    pub workflow_id: String,
    pub status: WsStatus,
}

/// `stream_input` / `end_input_stream` applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputApplied {
    pub message: &'static str,
    pub job_id: String,
    pub input: String,
    /// The handle the client named (none: the input's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
}

/// A refused frame or command: `{"command"?, "error": code, "message", ...}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ErrorFrame {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub error: &'static str,
    pub message: String,
    /// The decoder's own words for an undecodable frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The error kind behind the code, when an operation failed (not for malformed commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl ErrorFrame {
    /// A frame-level refusal (no command to name).
    pub fn frame(error: &'static str, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            ..Self::default()
        }
    }

    /// A frame that is not JSON / MessagePack at all.
    pub fn undecodable(details: String) -> Self {
        Self {
            error: "invalid_command",
            message: "the frame is not a valid JSON (text) or MessagePack (binary) message"
                .to_owned(),
            details: Some(details),
            ..Self::default()
        }
    }

    /// A command whose data is missing or malformed.
    pub fn invalid(command: &str, message: impl Into<String>) -> Self {
        Self::new(command, "invalid_command", message)
    }

    pub fn new(command: &str, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            command: Some(command.to_owned()),
            error,
            message: message.into(),
            ..Self::default()
        }
    }

    pub fn job(mut self, job_id: impl Into<String>) -> Self {
        self.job_id = Some(job_id.into());
        self
    }

    pub fn input(mut self, input: impl Into<String>) -> Self {
        self.input = Some(input.into());
        self
    }

    pub fn kind(mut self, kind: ErrorKind) -> Self {
        self.kind = Some(kind);
        self
    }
}

/// Frames that are not replies to a command, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// The answer to `{"type":"ping"}` and to the `ping` command. `ts`: seconds since the epoch.
    Pong {
        ts: f64,
    },
    Lag(LagNotice),
    /// A queued job's place, sent after `run_job`'s reply (not one of the job's events: no
    /// `seq`).
    #[serde(rename = "job_update")]
    Queued {
        job_id: String,
        workflow_id: String,
        status: WsStatus,
        queue_position: usize,
    },
}

impl Control {
    pub fn pong() -> Self {
        Control::Pong {
            ts: Utc::now().timestamp_micros() as f64 / 1e6,
        }
    }
}

/// Everything `/ws` writes (besides a close frame), encoded in the socket's mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Frame {
    Reply(Reply),
    Error(ErrorFrame),
    Control(Control),
    Event(Box<WsEvent>),
    Final(FinalUpdate),
}

impl Frame {
    /// JSON for a text frame.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// MessagePack (maps with field names) for a binary frame.
    pub fn to_msgpack(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }
}

impl From<Reply> for Frame {
    fn from(r: Reply) -> Self {
        Frame::Reply(r)
    }
}

impl From<ErrorFrame> for Frame {
    fn from(e: ErrorFrame) -> Self {
        Frame::Error(e)
    }
}

impl From<Box<ErrorFrame>> for Frame {
    fn from(e: Box<ErrorFrame>) -> Self {
        Frame::Error(*e)
    }
}

impl From<Control> for Frame {
    fn from(c: Control) -> Self {
        Frame::Control(c)
    }
}

impl From<Followed> for Frame {
    fn from(f: Followed) -> Self {
        match f {
            Followed::Event(e) => Frame::Event(Box::new(ws_event(*e))),
            Followed::Lag(l) => Frame::Control(Control::Lag(l)),
            Followed::Final(mut u) => {
                if u.status == Status::Failed
                    && u.error
                        .as_deref()
                        .is_some_and(nodetool_engine::is_job_timeout_message)
                {
                    u.status = Status::TimedOut;
                }
                Frame::Final(u)
            }
        }
    }
}
