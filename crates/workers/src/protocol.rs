//! The worker protocol between a parent (subprocess or Docker strategy) and `nodetool worker`.
//!
//! Framing: every frame is a 4-byte big-endian payload length followed by that many bytes of
//! UTF-8 JSON (JSON rather than MessagePack so a captured stream is readable). Bytes do not go
//! inside the JSON: a call or reply that moves bytes (an upload or download chunk) sets bit 31
//! of the length prefix and carries them raw after the JSON, as a 4-byte big-endian length and
//! the bytes ([`Attachment`]), so a chunk crosses the pipe with no encoding at all. A worker
//! sends attachments only when the parent's offer says `binary_chunks`, and asks for them in
//! replies per call, so older peers keep base64 inside the JSON. There is no line limit; a frame
//! (or attachment) larger than the reader's maximum
//! ([`MAX_FRAME_BYTES`] by default) is an error before anything is allocated, and so are a stream
//! that ends inside a frame and a payload that is not a valid frame. Each direction is a sequence
//! of frames until EOF.
//!
//! Conversation:
//! 1. parent → child (stdin): one [`ParentFrame::Request`] with the [`JobSpec`] (secrets
//!    included: they travel only here, never in the environment or argv) and, from a parent
//!    that serves calls, its [`ServiceOffer`].
//! 2. child → parent (stdout): [`ChildFrame::Event`] for every event, in seq order, with the
//!    parent's job id; then exactly one [`ChildFrame::Outcome`]; then the child exits 0.
//! 3. The parent keeps stdin open while the job runs. EOF on stdin means the parent is gone: the
//!    child cancels its job. Cancellation itself is SIGTERM to the child's process group.
//! 4. Streamed inputs (a spec with input feeds, [`JobSpec::has_input_feeds`]; request version 2):
//!    the parent sends [`ParentFrame::InputPush`] / [`ParentFrame::InputEnd`] with ids it numbers,
//!    and the child
//!    answers each, in order, with one [`ChildFrame::InputAck`] once the engine took the value
//!    (after waiting for room in the input's buffer: backpressure crosses the process boundary)
//!    or refused it (the ack carries the error; the job goes on). The child reads stdin while the
//!    job runs, so these frames never wait behind the job. [`RemoteInputs`] is the parent's side.
//! 5. Calls (version 3, DESIGN §5): the child asks the parent for storage, temp-storage, node-cache
//!    and asset-record operations with [`ChildFrame::Call`] (a `call_id` it numbers, an `op`, JSON
//!    `args`); the parent answers each with one [`ParentFrame::Reply`] carrying the same id and
//!    either a `result` or an `error` (kind, message, retryability). Replies come in any order:
//!    several calls are in flight at once, and the parent serves them concurrently, so a slow
//!    call never holds up events. [`crate::calls`] has the operations, the chunked uploads and
//!    downloads, the scope the parent enforces and both sides ([`crate::calls::CallClient`],
//!    [`crate::calls::CallHandler`]). A call after the child's outcome is refused (logged; stdin
//!    is closing). A worker thus needs neither network access nor credentials.
//! 6. Pause (negotiated, no version of its own): a request's `pause` ([`PauseOffer`]) says the
//!    parent may pause the job, and whether it starts paused. A worker that can pause answers
//!    with [`ChildFrame::Controls`] before any other frame and then takes
//!    [`ParentFrame::SetPaused`] at any time: it closes or opens the [`nodetool_engine::PauseGate`]
//!    of its run, so nodes wait at their next node boundary exactly as on the threaded strategy
//!    (cancellation and the deadline still apply) and the run's `job_update` `paused` / `running`
//!    events come back as any other. An older worker ignores the field and sends an event first:
//!    the parent then knows it cannot pause and never sends it a `set_paused`
//!    ([`nodetool_exec::strategy::PauseSupport`] tells the manager, which refuses pause for that job).
//! 7. Spans (negotiated by the environment): a worker whose environment has
//!    `NODETOOL_TRACE_RELAY=1` (set only by a parent that exports spans) sends the spans that ended
//!    during its job in one [`ChildFrame::Spans`] right before its outcome, raw OTLP protobuf, and
//!    the parent sends them on to its collector (`nodetool_core::trace::forward_spans`). So a
//!    Docker worker needs no network for its spans, and a subprocess worker's spans are out before
//!    its outcome rather than at its exit.
//!
//! Versions: a parent asks for version 1 unless the job streams inputs (then 2), so an older
//! worker image still runs every other job; a worker accepts
//! [`MIN_PROTOCOL_VERSION`]..=[`PROTOCOL_VERSION`] and skips (with a warning) a frame kind it does
//! not know. Calls need no higher request version: a parent that serves them says so with the
//! request's `services` (a field older workers ignore — they run jobs with their own storage, as
//! before). A worker given no `services` (an older parent, or a strategy built without
//! [`crate::calls::WorkerServices`]) fails every storage and asset operation with `unsupported`,
//! naming the reason, and its cache always misses; jobs that need none of them run as before.
//! stderr is free-form logging (the parent keeps its tail for error messages).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::EventEnvelope;

use crate::calls::{CallError, ServiceOffer};
use nodetool_exec::strategy::{JobError, JobInputs, JobOutcome, JobSpec};

/// The newest version this code speaks; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 3;

/// The oldest request version a worker still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The first version with streamed-input frames.
pub const STREAMING_INPUTS_VERSION: u32 = 2;

/// The first version whose parents serve calls (announced by the request's `services`).
pub const CALLS_VERSION: u32 = 3;

/// Bit 31 of a length prefix: an [`Attachment`] follows the frame's JSON.
const ATTACHMENT_FLAG: u32 = 1 << 31;

/// Default largest frame (64 MiB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Frames the parent sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "frame", content = "body", rename_all = "snake_case")]
pub enum ParentFrame {
    Request {
        protocol_version: u32,
        spec: Box<JobSpec>,
        /// What the parent lends the worker through calls; absent from parents that serve none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        services: Option<Box<ServiceOffer>>,
        /// Pause control (module docs, 6); absent from parents that never pause a worker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pause: Option<PauseOffer>,
    },
    /// The answer to the [`ChildFrame::Call`] with the same `call_id`: a `result` (JSON `null`
    /// when the operation returns nothing) or an `error`.
    Reply {
        call_id: u64,
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<CallError>,
        /// Raw bytes after the JSON (a download chunk asked for with `binary`).
        #[serde(skip)]
        data: Option<Bytes>,
    },
    /// A value for the streamed input `input` (its output `handle`); answered by an
    /// [`ChildFrame::InputAck`] with the same `id`.
    InputPush {
        id: u64,
        input: String,
        handle: String,
        #[serde(default)]
        value: Value,
    },
    /// Ends the stream of `input` on `handle`; answered by an [`ChildFrame::InputAck`].
    InputEnd {
        id: u64,
        input: String,
        handle: String,
    },
    /// Closes (`true`) or opens the job's pause gate. Sent only to a worker whose
    /// [`ChildFrame::Controls`] said `pause`; not answered (the run's `job_update` says it).
    SetPaused { paused: bool },
}

/// A parent's offer to pause the job (the request's `pause`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseOffer {
    /// The job starts paused (it was paused while it waited for a slot).
    #[serde(default)]
    pub paused: bool,
}

impl ParentFrame {
    /// The request frame for `spec`, at the lowest version that can run it, offering `services`
    /// (`None`: this parent serves no calls) and pause control, starting paused when the spec's
    /// gate is closed now.
    pub fn request(spec: JobSpec, services: Option<ServiceOffer>) -> Self {
        let protocol_version = if spec.has_input_feeds() {
            STREAMING_INPUTS_VERSION
        } else {
            MIN_PROTOCOL_VERSION
        };
        let pause = Some(PauseOffer {
            paused: spec.pause.is_paused(),
        });
        ParentFrame::Request {
            protocol_version,
            spec: Box::new(spec),
            services: services.map(Box::new),
            pause,
        }
    }

    /// A reply's answer as the caller sees it (no result and no error is a `null` result).
    pub fn reply_answer(
        result: Option<Value>,
        error: Option<CallError>,
        data: Option<Bytes>,
    ) -> std::result::Result<(Value, Option<Bytes>), CallError> {
        match error {
            Some(e) => Err(e),
            None => Ok((result.unwrap_or(Value::Null), data)),
        }
    }
}

/// Frames the worker sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "frame", content = "body", rename_all = "snake_case")]
pub enum ChildFrame {
    Event(Box<EventEnvelope>),
    Outcome(Box<JobOutcome>),
    /// An operation the worker asks the parent to perform ([`crate::calls`]); answered by one
    /// [`ParentFrame::Reply`] with the same `call_id`.
    Call {
        call_id: u64,
        op: String,
        #[serde(default)]
        args: Value,
        /// Raw bytes after the JSON (an upload chunk, when the offer has `binary_chunks`).
        #[serde(skip)]
        data: Option<Bytes>,
    },
    /// The answer to the [`ParentFrame::InputPush`] or [`ParentFrame::InputEnd`] with this `id`:
    /// no error means the engine took it.
    InputAck {
        id: u64,
        #[serde(default)]
        error: Option<JobError>,
    },
    /// The controls this worker honours: its first frame when the request offered any (module
    /// docs, 6). `pause`: it takes [`ParentFrame::SetPaused`].
    Controls {
        #[serde(default)]
        pause: bool,
    },
    /// Finished spans for the parent to send to its collector (module docs, 7): `spans` of them,
    /// as an OTLP protobuf `ExportTraceServiceRequest` in the attachment, and how many the worker
    /// dropped (its buffer was full), for the parent to count. Not answered.
    Spans {
        spans: u32,
        #[serde(default)]
        dropped: u32,
        #[serde(skip)]
        data: Option<Bytes>,
    },
}

fn proto_err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg).with_operation("worker.protocol")
}

/// Frames that may carry raw bytes after their JSON (see the module's framing).
pub trait Attachment {
    /// The bytes to send after the JSON.
    fn attachment(&self) -> Option<&Bytes> {
        None
    }

    /// Takes the bytes read after the JSON; `false` when this frame carries none (an error).
    fn attach(&mut self, _data: Bytes) -> bool {
        false
    }
}

impl Attachment for ParentFrame {
    fn attachment(&self) -> Option<&Bytes> {
        match self {
            ParentFrame::Reply { data, .. } => data.as_ref(),
            _ => None,
        }
    }

    fn attach(&mut self, bytes: Bytes) -> bool {
        match self {
            ParentFrame::Reply { data, .. } => {
                *data = Some(bytes);
                true
            }
            _ => false,
        }
    }
}

impl Attachment for ChildFrame {
    fn attachment(&self) -> Option<&Bytes> {
        match self {
            ChildFrame::Call { data, .. } | ChildFrame::Spans { data, .. } => data.as_ref(),
            _ => None,
        }
    }

    fn attach(&mut self, bytes: Bytes) -> bool {
        match self {
            ChildFrame::Call { data, .. } | ChildFrame::Spans { data, .. } => {
                *data = Some(bytes);
                true
            }
            _ => false,
        }
    }
}

/// A frame as plain JSON (tests, tools) carries no bytes.
impl Attachment for Value {}

/// A frame read but not decoded (its JSON, and the attachment if any).
#[derive(Debug)]
pub struct RawFrame {
    pub json: Vec<u8>,
    pub data: Option<Bytes>,
}

impl RawFrame {
    /// Decodes the JSON as `T` and hands it the attachment.
    pub fn decode<T: DeserializeOwned + Attachment>(self) -> Result<T> {
        let len = self.json.len();
        let mut frame: T = serde_json::from_slice(&self.json).map_err(|e| {
            let preview: String = String::from_utf8_lossy(&self.json[..len.min(80)]).into_owned();
            proto_err(
                ErrorKind::InvalidInput,
                format!("garbled frame of {len} bytes: {e} (starts with {preview:?})"),
            )
        })?;
        if let Some(data) = self.data {
            if !frame.attach(data) {
                return Err(proto_err(
                    ErrorKind::InvalidInput,
                    "a frame of a kind that carries no bytes has an attachment",
                ));
            }
        }
        Ok(frame)
    }
}

/// The length prefix of `len` bytes, with the attachment flag when one follows.
fn prefix(len: usize, flag: bool, what: &str) -> Result<[u8; 4]> {
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| l & ATTACHMENT_FLAG == 0)
        .ok_or_else(|| {
            proto_err(
                ErrorKind::TooLarge,
                format!("{what} of {len} bytes does not fit the length prefix"),
            )
        })?;
    Ok((len32 | if flag { ATTACHMENT_FLAG } else { 0 }).to_be_bytes())
}

/// Encodes one frame (length prefix + JSON, then the attachment if any).
pub fn encode_frame<T: Serialize + Attachment>(frame: &T) -> Result<Vec<u8>> {
    let (head, data) = encode_head(frame)?;
    let mut buf = head;
    if let Some(data) = data {
        buf.extend_from_slice(data);
    }
    Ok(buf)
}

/// Length prefix + JSON (+ the attachment's length prefix), and the attachment to send after it.
fn encode_head<T: Serialize + Attachment>(frame: &T) -> Result<(Vec<u8>, Option<&Bytes>)> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, frame).map_err(|e| {
        proto_err(ErrorKind::Unexpected, "cannot encode a worker frame").with_source(e)
    })?;
    let data = frame.attachment();
    let head = prefix(buf.len() - 4, data.is_some(), "frame")?;
    buf[..4].copy_from_slice(&head);
    if let Some(data) = data {
        buf.extend_from_slice(&prefix(data.len(), false, "attachment")?);
    }
    Ok((buf, data))
}

/// The pipe capacity [`widen_pipe`] asks for: Linux's default unprivileged maximum
/// (`/proc/sys/fs/pipe-max-size`), 16 times the default 64 KiB.
pub const PIPE_BYTES: usize = 1024 * 1024;

/// Grows the pipe behind `fd` to [`PIPE_BYTES`] (`F_SETPIPE_SZ`; either end sets it for both). A
/// 4 MiB chunk then crosses in 4 writes and wake-ups instead of 64, which is most of what a
/// chunk's round trip costs. Anything that is not a pipe (a file, a socket under Docker) or a
/// system that refuses is left as it is: frames still work, only slower.
#[allow(unsafe_code)]
pub fn widen_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) with F_SETPIPE_SZ takes an int and touches no memory of ours; `fd` is a
    // live descriptor for the duration of the call (it is borrowed).
    let rc = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_BYTES as libc::c_int,
        )
    };
    if rc < 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot grow the worker pipe; keeping its size"
        );
    }
}

/// Writes one frame and flushes.
pub async fn write_frame<W, T>(w: &mut W, frame: &T) -> Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize + Attachment,
{
    let write_failed = |e| {
        proto_err(ErrorKind::Unavailable, "cannot write a worker frame")
            .with_source(e)
            .set_temporary(false)
    };
    let (head, data) = encode_head(frame)?;
    w.write_all(&head).await.map_err(write_failed)?;
    // The attachment goes as it is: no copy into the head's buffer.
    if let Some(data) = data {
        w.write_all(data).await.map_err(write_failed)?;
    }
    w.flush().await.map_err(|e| {
        proto_err(ErrorKind::Unavailable, "cannot flush a worker frame")
            .with_source(e)
            .set_temporary(false)
    })
}

/// Reads one frame. `Ok(None)` is a clean EOF between frames; EOF inside a frame, a frame over
/// `max_bytes` and a payload that does not decode as `T` are errors.
pub async fn read_frame<R, T>(r: &mut R, max_bytes: usize) -> Result<Option<T>>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned + Attachment,
{
    match read_raw_frame(r, max_bytes).await? {
        Some(raw) => raw.decode().map(Some),
        None => Ok(None),
    }
}

/// Reads one frame's JSON and attachment without decoding them.
pub async fn read_raw_frame<R>(r: &mut R, max_bytes: usize) -> Result<Option<RawFrame>>
where
    R: AsyncRead + Unpin,
{
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut head[got..]).await.map_err(read_failed)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(proto_err(
                ErrorKind::Unexpected,
                format!("the stream ended inside a frame header ({got} of 4 bytes)"),
            ));
        }
        got += n;
    }
    let word = u32::from_be_bytes(head);
    let len = (word & !ATTACHMENT_FLAG) as usize;
    if len > max_bytes {
        let hint = if head
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n')
        {
            format!(
                "; the bytes look like text ({:?}), so the peer is probably not speaking the worker protocol",
                String::from_utf8_lossy(&head)
            )
        } else {
            String::new()
        };
        return Err(proto_err(
            ErrorKind::TooLarge,
            format!("frame of {len} bytes exceeds the limit of {max_bytes} bytes{hint}"),
        ));
    }
    let json = read_exactly(r, len, "frame").await?;
    let data = if word & ATTACHMENT_FLAG != 0 {
        let mut head = [0u8; 4];
        r.read_exact(&mut head).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                proto_err(
                    ErrorKind::Unexpected,
                    "the stream ended inside an attachment's length",
                )
            } else {
                read_failed(e)
            }
        })?;
        let data_len = u32::from_be_bytes(head) as usize;
        if data_len > max_bytes {
            return Err(proto_err(
                ErrorKind::TooLarge,
                format!("attachment of {data_len} bytes exceeds the limit of {max_bytes} bytes"),
            ));
        }
        Some(Bytes::from(read_exactly(r, data_len, "attachment").await?))
    } else {
        None
    };
    Ok(Some(RawFrame { json, data }))
}

/// Reads `len` bytes.
async fn read_exactly<R: AsyncRead + Unpin>(r: &mut R, len: usize, what: &str) -> Result<Vec<u8>> {
    // Filled by reading rather than zeroed first: frames carrying chunks are megabytes.
    let mut payload = Vec::with_capacity(len);
    while payload.len() < len {
        let rest = (len - payload.len()) as u64;
        let n = (&mut *r)
            .take(rest)
            .read_buf(&mut payload)
            .await
            .map_err(read_failed)?;
        if n == 0 {
            return Err(proto_err(
                ErrorKind::Unexpected,
                format!(
                    "the stream ended inside a{} {what} ({} of {len} bytes)",
                    if what.starts_with('a') { "n" } else { "" },
                    payload.len()
                ),
            ));
        }
    }
    Ok(payload)
}

/// Writes `first`, then every frame sent on `rx` until all its senders are gone, then shuts `w`
/// down (EOF tells a worker its parent is done). The parent's stdin writer for subprocess and
/// Docker jobs: one task owns the pipe, so frames from several callers never interleave and the
/// read side never waits on a write.
pub async fn pump_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    first: &ParentFrame,
    rx: &mut mpsc::UnboundedReceiver<ParentFrame>,
) -> Result<()> {
    write_frame(w, first).await?;
    while let Some(frame) = rx.recv().await {
        write_frame(w, &frame).await?;
    }
    w.shutdown().await.map_err(|e| {
        proto_err(ErrorKind::Unavailable, "cannot close the worker's stdin")
            .with_source(e)
            .set_temporary(false)
    })
}

/// A parent's channel to a worker's stdin writer ([`pump_frames`]) and, for a job with streamed
/// inputs, the [`RemoteInputs`] that send on it.
#[derive(Debug)]
pub struct WorkerStdin {
    pub tx: mpsc::UnboundedSender<ParentFrame>,
    pub rx: mpsc::UnboundedReceiver<ParentFrame>,
    pub inputs: Option<Arc<RemoteInputs>>,
}

impl WorkerStdin {
    pub fn new(streaming_inputs: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inputs = streaming_inputs.then(|| Arc::new(RemoteInputs::new(tx.clone())));
        Self { tx, rx, inputs }
    }
}

/// The parent's side of a worker job's streamed inputs: each push or end is a frame to the
/// worker, answered by its [`ChildFrame::InputAck`], so the engine's errors and backpressure
/// reach the caller unchanged. The strategy's read loop feeds acks in with [`RemoteInputs::ack`]
/// and calls [`RemoteInputs::close`] when the worker is done.
#[derive(Debug)]
pub struct RemoteInputs {
    state: Mutex<RemoteState>,
}

#[derive(Debug)]
struct RemoteState {
    /// To the stdin writer; `None` once closed, which also lets the writer end.
    tx: Option<mpsc::UnboundedSender<ParentFrame>>,
    next_id: u64,
    pending: HashMap<u64, oneshot::Sender<Option<JobError>>>,
}

impl RemoteInputs {
    /// Sends frames on `tx` (the channel [`pump_frames`] drains).
    pub fn new(tx: mpsc::UnboundedSender<ParentFrame>) -> Self {
        Self {
            state: Mutex::new(RemoteState {
                tx: Some(tx),
                next_id: 1,
                pending: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker answered `id`. Unknown ids (answered after a close) are ignored.
    pub fn ack(&self, id: u64, error: Option<JobError>) {
        if let Some(waiter) = self.lock().pending.remove(&id) {
            let _ = waiter.send(error);
        }
    }

    /// The worker reported its outcome or is gone: calls waiting for an answer, and later ones,
    /// fail with `Unavailable`. Idempotent.
    pub fn close(&self) {
        let mut st = self.lock();
        st.tx = None;
        // Dropping the waiters' senders wakes them with an error.
        st.pending.clear();
    }

    async fn call(&self, op: &'static str, frame: impl FnOnce(u64) -> ParentFrame) -> Result<()> {
        let answer = {
            let mut st = self.lock();
            let id = st.next_id;
            st.next_id += 1;
            let Some(tx) = st.tx.clone() else {
                return Err(gone(op));
            };
            let (waiter, answer) = oneshot::channel();
            st.pending.insert(id, waiter);
            if tx.send(frame(id)).is_err() {
                st.pending.remove(&id);
                return Err(gone(op));
            }
            answer
        };
        match answer.await {
            Ok(None) => Ok(()),
            Ok(Some(err)) => Err(err.to_error().with_operation(op)),
            Err(_) => Err(gone(op)),
        }
    }
}

fn gone(op: &'static str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the job is no longer running (its worker has finished)",
    )
    .with_operation(op)
    .set_temporary(false)
}

#[async_trait]
impl JobInputs for RemoteInputs {
    async fn push(&self, input: &str, handle: &str, value: Value) -> Result<()> {
        self.call("worker.stream_input", |id| ParentFrame::InputPush {
            id,
            input: input.to_owned(),
            handle: handle.to_owned(),
            value,
        })
        .await
    }

    async fn end(&self, input: &str, handle: &str) -> Result<()> {
        self.call("worker.end_input_stream", |id| ParentFrame::InputEnd {
            id,
            input: input.to_owned(),
            handle: handle.to_owned(),
        })
        .await
    }
}

fn read_failed(e: std::io::Error) -> Error {
    proto_err(ErrorKind::Unavailable, "cannot read a worker frame")
        .with_source(e)
        .set_temporary(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodetool_engine::{Event, Graph, Status};
    use serde_json::json;

    fn outcome() -> ChildFrame {
        ChildFrame::Outcome(Box::new(JobOutcome::completed(
            json!({"out": ["hi"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )))
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut buf = Vec::new();
        let spec = JobSpec::new(Graph::default());
        write_frame(
            &mut buf,
            &ParentFrame::Request {
                protocol_version: PROTOCOL_VERSION,
                spec: Box::new(spec.clone()),
                services: None,
                pause: None,
            },
        )
        .await
        .unwrap();
        write_frame(&mut buf, &outcome()).await.unwrap();
        let ev = EventEnvelope {
            job_id: "j".into(),
            seq: 1,
            event: Event::Error(nodetool_engine::events::ErrorMessage {
                message: "m".into(),
                thread_id: None,
                workflow_id: None,
            }),
        };
        write_frame(&mut buf, &ChildFrame::Event(Box::new(ev.clone())))
            .await
            .unwrap();
        let mut r = buf.as_slice();
        let Some(ParentFrame::Request { spec: got, .. }) =
            read_frame::<_, ParentFrame>(&mut r, MAX_FRAME_BYTES)
                .await
                .unwrap()
        else {
            panic!("expected a request")
        };
        assert_eq!(got.job_id, spec.job_id);
        let Some(ChildFrame::Outcome(o)) = read_frame(&mut r, MAX_FRAME_BYTES).await.unwrap()
        else {
            panic!("expected an outcome")
        };
        assert_eq!(o.status, Status::Completed);
        let Some(ChildFrame::Event(e)) = read_frame(&mut r, MAX_FRAME_BYTES).await.unwrap() else {
            panic!("expected an event")
        };
        assert_eq!(*e, ev);
        assert!(read_frame::<_, ChildFrame>(&mut r, MAX_FRAME_BYTES)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn attachments_cross_raw_and_only_on_frames_that_carry_them() {
        let data = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>());
        let call = ChildFrame::Call {
            call_id: 3,
            op: "storage.upload_chunk".into(),
            args: json!({"upload": 1, "offset": 0}),
            data: Some(data.clone()),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &call).await.unwrap();
        // The bytes follow the JSON as they are: no base64 anywhere.
        assert!(buf.windows(data.len()).any(|w| w == &data[..]));
        assert_eq!(buf, encode_frame(&call).unwrap());
        let mut r = buf.as_slice();
        let Some(ChildFrame::Call {
            call_id, data: got, ..
        }) = read_frame::<_, ChildFrame>(&mut r, MAX_FRAME_BYTES)
            .await
            .unwrap()
        else {
            panic!("expected a call")
        };
        assert_eq!((call_id, got), (3, Some(data.clone())));

        // The flag on a frame kind that carries no bytes is a protocol error.
        let mut flagged = encode_frame(&outcome()).unwrap();
        flagged[0] |= 0x80;
        flagged.extend_from_slice(&[0, 0, 0, 1, 9]);
        let err = read_frame::<_, ChildFrame>(&mut flagged.as_slice(), MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("carries no bytes"), "{err}");

        // An attachment over the limit, or cut short, is refused before or while reading it.
        let small = encode_frame(&call).unwrap();
        let err = read_frame::<_, ChildFrame>(&mut small.as_slice(), 60_000)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
        let cut = &small[..small.len() - 10];
        let err = read_frame::<_, ChildFrame>(&mut &cut[..], MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("inside an attachment"), "{err}");
        let cut = &small[..small.len() - data.len() - 2];
        let err = read_frame::<_, ChildFrame>(&mut &cut[..], MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("attachment's length"), "{err}");
    }

    #[tokio::test]
    async fn oversize_frame_is_an_error_before_allocation() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];
        let err = read_frame::<_, ChildFrame>(&mut r, MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[tokio::test]
    async fn text_on_stdout_is_named_as_such() {
        let mut r: &[u8] = b"hello world\n";
        let err = read_frame::<_, ChildFrame>(&mut r, MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not speaking the worker protocol"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncated_frames_are_errors() {
        let full = encode_frame(&outcome()).unwrap();
        for cut in [2, 4, full.len() - 1] {
            let mut r = &full[..cut];
            let err = read_frame::<_, ChildFrame>(&mut r, MAX_FRAME_BYTES)
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("stream ended inside"),
                "{cut}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn garbled_payload_is_an_error() {
        let mut buf = 5u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"{nope");
        let mut r = buf.as_slice();
        let err = read_frame::<_, ChildFrame>(&mut r, MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("garbled frame"), "{err}");
    }

    #[tokio::test]
    async fn request_version_depends_on_streaming_inputs() {
        let mut spec = JobSpec::new(Graph::default());
        let ParentFrame::Request {
            protocol_version, ..
        } = ParentFrame::request(spec.clone(), None)
        else {
            panic!("expected a request")
        };
        assert_eq!(protocol_version, MIN_PROTOCOL_VERSION);
        spec.streaming_inputs = true;
        let ParentFrame::Request {
            protocol_version, ..
        } = ParentFrame::request(spec, None)
        else {
            panic!("expected a request")
        };
        assert_eq!(protocol_version, STREAMING_INPUTS_VERSION);
    }

    #[tokio::test]
    async fn the_request_offers_pause_with_the_gate_state() {
        let spec = JobSpec::new(Graph::default());
        let offer = |spec: JobSpec| match ParentFrame::request(spec, None) {
            ParentFrame::Request { pause, .. } => pause,
            other => panic!("expected a request, got {other:?}"),
        };
        assert_eq!(offer(spec.clone()), Some(PauseOffer { paused: false }));
        spec.pause.pause();
        assert_eq!(offer(spec), Some(PauseOffer { paused: true }));

        // The frames on the wire, as an older peer sees them: fields it can ignore, and tags.
        let mut buf = Vec::new();
        write_frame(&mut buf, &ParentFrame::SetPaused { paused: true })
            .await
            .unwrap();
        write_frame(&mut buf, &ChildFrame::Controls { pause: true })
            .await
            .unwrap();
        let mut r = buf.as_slice();
        let v: Value = read_frame(&mut r, MAX_FRAME_BYTES).await.unwrap().unwrap();
        assert_eq!(v, json!({"frame": "set_paused", "body": {"paused": true}}));
        let v: Value = read_frame(&mut r, MAX_FRAME_BYTES).await.unwrap().unwrap();
        assert_eq!(v, json!({"frame": "controls", "body": {"pause": true}}));
        // A request from an older parent (no `pause`) still decodes.
        let old = json!({"frame": "request", "body": {"protocol_version": 1, "spec": {
            "job_id": "j", "user_id": "u", "graph": {"nodes": [], "edges": []}}}});
        let frame: ParentFrame = serde_json::from_value(old).unwrap();
        assert!(matches!(frame, ParentFrame::Request { pause: None, .. }));
    }

    #[tokio::test]
    async fn a_spans_frame_carries_its_otlp_bytes_raw() {
        // Not valid UTF-8, and with a length prefix inside: bytes, never text.
        let otlp = Bytes::from_static(&[0x0a, 0xff, 0x00, 0x00, 0x00, 0x04, 0xc3]);
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &ChildFrame::Spans {
                spans: 3,
                dropped: 1,
                data: Some(otlp.clone()),
            },
        )
        .await
        .unwrap();
        let mut r = buf.as_slice();
        let frame: ChildFrame = read_frame(&mut r, MAX_FRAME_BYTES).await.unwrap().unwrap();
        let ChildFrame::Spans {
            spans,
            dropped,
            data,
        } = frame
        else {
            panic!("expected spans, got {frame:?}")
        };
        assert_eq!((spans, dropped, data), (3, 1, Some(otlp)));
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn remote_inputs_pair_frames_with_acks() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inputs = Arc::new(RemoteInputs::new(tx));
        let push = tokio::spawn({
            let inputs = inputs.clone();
            async move { inputs.push("text", "output", json!("v")).await }
        });
        let Some(ParentFrame::InputPush {
            id, input, value, ..
        }) = rx.recv().await
        else {
            panic!("expected a push frame")
        };
        assert_eq!((input.as_str(), value), ("text", json!("v")));
        inputs.ack(id, None);
        push.await.unwrap().unwrap();

        let end = tokio::spawn({
            let inputs = inputs.clone();
            async move { inputs.end("nope", "output").await }
        });
        let Some(ParentFrame::InputEnd { id, .. }) = rx.recv().await else {
            panic!("expected an end frame")
        };
        inputs.ack(
            id,
            Some(JobError::new(
                ErrorKind::NotFound,
                "no input node named `nope`",
            )),
        );
        let err = end.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");

        // A worker that finishes while a push waits: the push fails, and so do later ones.
        let waiting = tokio::spawn({
            let inputs = inputs.clone();
            async move { inputs.push("text", "output", json!("w")).await }
        });
        assert!(rx.recv().await.is_some());
        inputs.close();
        assert_eq!(
            waiting.await.unwrap().unwrap_err().kind(),
            ErrorKind::Unavailable
        );
        let err = inputs.push("text", "output", json!("x")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(
            rx.recv().await.is_none(),
            "closing lets the stdin writer end"
        );
    }

    #[tokio::test]
    async fn small_limit_applies() {
        let full = encode_frame(&outcome()).unwrap();
        let mut r = full.as_slice();
        assert!(read_frame::<_, ChildFrame>(&mut r, 8).await.is_err());
    }
}
