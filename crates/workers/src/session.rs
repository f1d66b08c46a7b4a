//! One worker session: what a parent does with a `nodetool worker` at the other end of a pair of
//! pipes, whatever runs it. The subprocess and Docker strategies start the worker and hand over
//! its stdin, stdout and a [`WorkerControl`]; [`run`] writes the request, forwards events, serves
//! calls, routes input acks, enforces cancellation and the hard deadline, waits for the worker to
//! exit and builds the job's outcome — once, the same way for every strategy that has a worker.
//!
//! Semantics (both strategies):
//! - cancel before the terminal event: [`WorkerControl::terminate`] (the worker cancels its job
//!   and reports `cancelled`), then after the grace [`WorkerControl::kill`]; the outcome is
//!   `cancelled`. A cancel after the worker's terminal event changes nothing.
//! - the job's time limit: the worker's engine ends the job itself; [`HARD_DEADLINE_GRACE`]
//!   later the session kills the worker and the outcome is `timed_out`.
//! - stdout closed without an outcome: the worker crashed ([`WorkerControl::crashed`]).
//! - a malformed frame: the worker is killed, "broke the protocol".
//! - pause: the request offers pause control with the gate's state; a worker that answers
//!   `controls {pause}` first is sent `set_paused` on every change of `spec.pause` (and then
//!   any change made before it answered); one that answers nothing cannot pause
//!   (`spec.pause_support` says so, and a gate closed while the job was queued opens again).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind};
use nodetool_engine::EventSink;

use crate::calls::{CallHandler, ServiceOffer};
use crate::protocol::{pump_frames, read_frame, ChildFrame, ParentFrame, WorkerStdin};
use nodetool_exec::sink::TrackingSink;
use nodetool_exec::strategy::{JobError, JobOutcome, JobSpec, HARD_DEADLINE_GRACE};

/// How long a finished job waits for its worker's calls in flight (and aborted uploads) to
/// settle before its outcome is reported anyway.
pub(crate) const CALL_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How a worker's runner (a process group, a container) is stopped; the session decides when.
#[async_trait]
pub(crate) trait WorkerControl: Send + Sync {
    /// Asks the worker to cancel its job (SIGTERM): it reports `cancelled` and exits.
    async fn terminate(&self);
    /// Kills the worker now (idempotent; a worker that is gone is fine).
    async fn kill(&self);
    /// Waits at most `grace` for the worker to exit, killing it after that; how it ended.
    async fn wait_exit(&self, grace: Duration) -> Exit;
    /// The job's failure when the worker stopped without an outcome frame (the control keeps
    /// the worker's stderr tail for it).
    async fn crashed(&self, exit: &Exit) -> JobError;
    /// Releases what the worker held, before the terminal event is posted.
    async fn cleanup(&self) {}
}

/// How a worker ended, as far as its runner knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    /// A shell-style code: above 128 means killed by signal `code - 128` (Docker reports so).
    pub fn from_shell_code(code: i64) -> Self {
        match i32::try_from(code) {
            Ok(c) if c > 128 && c < 128 + 65 => Self {
                code: None,
                signal: Some(c - 128),
            },
            Ok(c) => Self {
                code: Some(c),
                signal: None,
            },
            Err(_) => Self::default(),
        }
    }

    pub fn known(&self) -> bool {
        self.code.is_some() || self.signal.is_some()
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "was killed by {}", signal_name(sig)),
            (Some(c), None) => write!(f, "exited with code {c}"),
            (None, None) => f.write_str("vanished"),
        }
    }
}

/// `SIGKILL`, `SIGSEGV` … or `signal N`.
pub(crate) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The last bytes of a worker's stderr, kept for error messages.
#[derive(Debug)]
pub(crate) struct StderrTail {
    buf: Mutex<VecDeque<u8>>,
    cap: usize,
}

impl StderrTail {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            buf: Mutex::new(VecDeque::new()),
            cap,
        })
    }

    pub fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend(bytes);
        let excess = buf.len().saturating_sub(self.cap);
        buf.drain(..excess);
    }

    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The reply to a call when the strategy lends its workers nothing.
pub(crate) fn unserved(call_id: u64, op: &str) -> ParentFrame {
    ParentFrame::Reply {
        call_id,
        result: None,
        data: None,
        error: Some(crate::calls::CallError::new(
            ErrorKind::Unsupported,
            format!("worker call {op:?}: this runtime lends its workers no storage, cache or asset records"),
        )),
    }
}

/// A started worker's pipes and what the session needs to run its job.
pub(crate) struct Session<R, W> {
    pub spec: JobSpec,
    pub sink: Arc<TrackingSink>,
    pub cancel: CancellationToken,
    /// The worker's stdout: event, outcome, call and input-ack frames.
    pub stdout: R,
    /// The worker's stdin: the request, then replies and input frames; EOF tells it we are gone.
    pub stdin: W,
    pub frames: WorkerStdin,
    pub calls: Option<(ServiceOffer, Arc<CallHandler>)>,
    pub max_frame_bytes: usize,
    /// SIGTERM → SIGKILL, and outcome → exit.
    pub grace: Duration,
    /// When the worker started (the hard deadline counts from here).
    pub started: Instant,
    /// "worker" or "docker worker", for messages.
    pub what: &'static str,
}

/// The parent's half of pause control: what the worker can do and which state it was last told,
/// so a `set_paused` goes out only to a worker that answered `pause`, and only on a change.
struct PauseLink {
    /// The worker's answer (`None`: not yet).
    can: Option<bool>,
    /// The gate's state as the worker has it (from the request, then the frames sent).
    sent: bool,
}

impl PauseLink {
    fn new(request: &ParentFrame) -> Self {
        let sent = match request {
            ParentFrame::Request { pause: Some(p), .. } => p.paused,
            _ => false,
        };
        Self { can: None, sent }
    }

    /// The gate is now `paused`: the frame to send, if any.
    fn want(&mut self, paused: bool) -> Option<ParentFrame> {
        if self.can != Some(true) || paused == self.sent {
            return None;
        }
        self.sent = paused;
        Some(ParentFrame::SetPaused { paused })
    }

    /// The worker answered (`can`: it pauses); catches it up with the gate, which is `paused`.
    fn answered(&mut self, can: bool, paused: bool) -> Option<ParentFrame> {
        self.can = Some(can);
        self.want(paused)
    }
}

/// Why the read loop stopped.
enum End {
    Outcome(JobOutcome),
    TimedOut(Duration),
    /// stdout closed without an outcome (the worker died).
    Eof,
    Protocol(Error),
}

/// Reads the worker's frames until EOF, an error, or the session dropping the receiver.
async fn read_frames<R: AsyncRead + Unpin>(
    mut stdout: R,
    max_frame_bytes: usize,
    tx: tokio::sync::mpsc::Sender<Result<Option<ChildFrame>, Error>>,
) {
    loop {
        let frame = read_frame::<_, ChildFrame>(&mut stdout, max_frame_bytes).await;
        let last = !matches!(frame, Ok(Some(_)));
        if tx.send(frame).await.is_err() || last {
            return;
        }
    }
}

/// Waits (at most `grace`) for the writer to flush and close the worker's stdin.
async fn close_stdin(writer: &mut tokio::task::JoinHandle<()>, grace: Duration) {
    if tokio::time::timeout(grace, writer).await.is_err() {
        tracing::debug!("the worker's stdin did not close in time");
    }
}

/// Runs the session to its end and posts the terminal event; returns the job's outcome.
pub(crate) async fn run<R, W>(session: Session<R, W>, control: &dyn WorkerControl) -> JobOutcome
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Session {
        spec,
        sink,
        cancel,
        stdout,
        mut stdin,
        frames,
        calls,
        max_frame_bytes,
        grace,
        started,
        what,
    } = session;
    let workflow_id = spec.workflow_id.clone();
    let limit = spec.resource_limits.timeout();
    // Subscribed before the request reads the gate, so no change between the two is missed.
    let gate = spec.pause.clone();
    let mut gate_changes = gate.subscribe();
    let support = spec.pause_support.clone();
    let job_id = spec.job_id.clone();
    let (offer, handler) = match calls {
        Some((offer, handler)) => (Some(offer), Some(handler)),
        None => (None, None),
    };
    let request = ParentFrame::request(spec, offer);
    let mut pause = PauseLink::new(&request);
    let WorkerStdin {
        tx,
        rx: mut queued,
        inputs,
    } = frames;
    // One writer owns stdin: the request, then replies and input frames, then EOF once every
    // sender is gone.
    let mut writer = tokio::spawn(async move {
        // A write failure means the worker is already gone; the read side reports why.
        if let Err(e) = pump_frames(&mut stdin, &request, &mut queued).await {
            tracing::debug!(error = %e, "cannot write to the worker's stdin");
        }
    });

    // Frames are read on their own task: `read_frame` is not cancel-safe, so reading it inside
    // the select below would lose a half-read frame whenever a timer or a cancel won the race.
    let (frame_tx, mut frame_rx) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(read_frames(stdout, max_frame_bytes, frame_tx));

    let deadline = limit.map(|l| {
        (
            tokio::time::Instant::from_std(started) + l + HARD_DEADLINE_GRACE,
            l,
        )
    });
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut cancelled = false;
    let mut first_frame = true;
    let end = loop {
        let hard = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let escalate = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Once the worker reported its terminal status, a late cancel must not contradict it.
        let cancellable = !cancelled && !sink.terminal_sent();
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if cancellable => {
                cancelled = true;
                control.terminate().await;
                kill_at = Some(tokio::time::Instant::now() + grace);
            }
            _ = escalate => {
                kill_at = None;
                control.kill().await;
            }
            _ = hard => {
                control.kill().await;
                break End::TimedOut(deadline.map(|d| d.1).unwrap_or_default());
            }
            changed = gate_changes.changed() => {
                // The gate lives in `gate`, so this never fails.
                if changed.is_ok() {
                    let paused = *gate_changes.borrow_and_update();
                    if let Some(frame) = pause.want(paused) {
                        let _ = tx.send(frame);
                    }
                }
            }
            frame = frame_rx.recv() => match frame.unwrap_or(Ok(None)) {
                Ok(Some(frame)) => {
                    if std::mem::take(&mut first_frame) {
                        // An older worker answers nothing: its first frame is something else.
                        let can = matches!(frame, ChildFrame::Controls { pause: true });
                        support.set(can);
                        if let Some(frame) = pause.answered(can, gate.is_paused()) {
                            let _ = tx.send(frame);
                        }
                        if !can && gate.resume() {
                            // Paused before it answered (while queued, say): it cannot be held,
                            // so it is not shown as paused.
                            tracing::warn!(
                                job_id = %job_id,
                                "this job's {what} cannot pause (it predates pause control); it runs on"
                            );
                        }
                    } else if matches!(frame, ChildFrame::Controls { .. }) {
                        tracing::warn!(job_id = %job_id, "ignoring a controls frame after the first");
                    }
                    match frame {
                        ChildFrame::Event(e) => sink.send(*e),
                        ChildFrame::Outcome(o) => break End::Outcome(*o),
                        ChildFrame::Call { call_id, op, args, data } => match &handler {
                            Some(h) => h.dispatch(call_id, op, args, data),
                            None => {
                                let _ = tx.send(unserved(call_id, &op));
                            }
                        },
                        ChildFrame::InputAck { id, error } => {
                            if let Some(inputs) = &inputs {
                                inputs.ack(id, error);
                            }
                        }
                        ChildFrame::Controls { .. } => {}
                        ChildFrame::Spans { spans, dropped, data } => {
                            use nodetool_core::trace::{forward_spans, RelayedSpans};
                            forward_spans(match data {
                                Some(otlp) => RelayedSpans { spans, dropped, otlp },
                                // No bytes (a broken peer): nothing to send, every span lost.
                                None => RelayedSpans {
                                    spans: 0,
                                    dropped: dropped.saturating_add(spans),
                                    otlp: Default::default(),
                                },
                            });
                        }
                    }
                }
                Ok(None) => break End::Eof,
                Err(e) => break End::Protocol(e),
            },
        }
    };
    // Nothing more will be learnt: a worker that never answered cannot pause.
    support.set(false);
    // The worker is done: pushes fail, calls are refused, and with the last sender gone the
    // writer closes stdin, the worker's cue to exit (its stdin reader holds it open).
    if let Some(inputs) = &inputs {
        inputs.close();
    }
    if let Some(h) = &handler {
        h.close();
    }
    drop(tx);
    let mut outcome = match end {
        // The worker's own outcome stands, also after a cancel: it says what the stream said.
        End::Outcome(o) => {
            close_stdin(&mut writer, grace).await;
            control.wait_exit(grace).await;
            o
        }
        End::TimedOut(limit) => JobOutcome::timed_out(limit),
        End::Eof => {
            close_stdin(&mut writer, grace).await;
            let exit = control.wait_exit(grace).await;
            if cancelled {
                JobOutcome::cancelled()
            } else {
                JobOutcome::failed(control.crashed(&exit).await)
            }
        }
        End::Protocol(e) => {
            control.kill().await;
            control.wait_exit(grace).await;
            JobOutcome::failed(JobError::new(
                e.kind(),
                format!("the {what} broke the protocol: {e}"),
            ))
        }
    };
    writer.abort();
    reader.abort();
    // Whatever the worker left open (it died mid-upload, say) is aborted before the outcome.
    if let Some(h) = &handler {
        h.finish(CALL_DRAIN_LIMIT).await;
    }
    if outcome.duration_secs == 0.0 {
        outcome.duration_secs = started.elapsed().as_secs_f64();
    }
    control.cleanup().await;
    sink.finish(&workflow_id, &outcome);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{read_frame, write_frame, MAX_FRAME_BYTES};
    use nodetool_core::JobId;
    use nodetool_engine::{Event, EventEnvelope, Graph, Status, VecSink};
    use tokio::io::DuplexStream;

    struct NoControl;

    #[async_trait]
    impl WorkerControl for NoControl {
        async fn terminate(&self) {}
        async fn kill(&self) {}
        async fn wait_exit(&self, _grace: Duration) -> Exit {
            Exit {
                code: Some(0),
                signal: None,
            }
        }
        async fn crashed(&self, exit: &Exit) -> JobError {
            JobError::new(ErrorKind::Unexpected, format!("the worker {exit}"))
        }
    }

    /// The child's ends of the pipes.
    struct Child {
        stdin: DuplexStream,
        stdout: DuplexStream,
    }

    impl Child {
        async fn read(&mut self) -> Option<ParentFrame> {
            read_frame(&mut self.stdin, MAX_FRAME_BYTES).await.unwrap()
        }

        async fn send(&mut self, frame: ChildFrame) {
            write_frame(&mut self.stdout, &frame).await.unwrap();
        }

        async fn event(&mut self, job_id: &JobId, seq: u64, status: Status) {
            let e = EventEnvelope {
                job_id: job_id.to_string(),
                seq,
                event: Event::JobUpdate(nodetool_engine::events::JobUpdate {
                    status,
                    workflow_id: None,
                    message: None,
                    result: None,
                    error: None,
                    traceback: None,
                    run_state: None,
                    duration: None,
                    peak_memory_bytes: None,
                }),
            };
            self.send(ChildFrame::Event(Box::new(e))).await;
        }
    }

    /// A session over in-memory pipes, running; the child's ends to play the worker.
    fn session(spec: JobSpec) -> (tokio::task::JoinHandle<JobOutcome>, Child) {
        let (parent_in, child_in) = tokio::io::duplex(1 << 16);
        let (child_out, parent_out) = tokio::io::duplex(1 << 16);
        let sink = TrackingSink::new(spec.job_id.clone(), VecSink::new());
        let s = Session {
            spec,
            sink,
            cancel: CancellationToken::new(),
            stdout: parent_out,
            stdin: parent_in,
            frames: WorkerStdin::new(false),
            calls: None,
            max_frame_bytes: MAX_FRAME_BYTES,
            grace: Duration::from_secs(5),
            started: Instant::now(),
            what: "worker",
        };
        let task = tokio::spawn(async move { run(s, &NoControl).await });
        (
            task,
            Child {
                stdin: child_in,
                stdout: child_out,
            },
        )
    }

    fn completed() -> ChildFrame {
        ChildFrame::Outcome(Box::new(JobOutcome::completed(Default::default())))
    }

    #[tokio::test]
    async fn a_worker_that_answers_pause_is_told_every_change() {
        let spec = JobSpec::new(Graph::default());
        let (gate, support, job_id) = (
            spec.pause.clone(),
            spec.pause_support.clone(),
            spec.job_id.clone(),
        );
        let (task, mut child) = session(spec);
        let Some(ParentFrame::Request { pause, .. }) = child.read().await else {
            panic!("expected the request")
        };
        assert_eq!(pause.map(|p| p.paused), Some(false));
        // Paused before the worker answered: it is caught up right after its answer.
        gate.pause();
        child.send(ChildFrame::Controls { pause: true }).await;
        assert!(support.known().await);
        assert!(matches!(
            child.read().await,
            Some(ParentFrame::SetPaused { paused: true })
        ));
        child.event(&job_id, 1, Status::Running).await;
        gate.resume();
        assert!(matches!(
            child.read().await,
            Some(ParentFrame::SetPaused { paused: false })
        ));
        child.send(completed()).await;
        assert_eq!(task.await.unwrap().status, Status::Completed);
        assert!(
            child.read().await.is_none(),
            "stdin closes after the outcome"
        );
    }

    #[tokio::test]
    async fn an_older_worker_is_never_sent_a_pause_frame() {
        // Paused while queued: an older worker ignores the offer, so the job runs unpaused.
        let spec = JobSpec::new(Graph::default());
        spec.pause.pause();
        let (gate, support, job_id) = (
            spec.pause.clone(),
            spec.pause_support.clone(),
            spec.job_id.clone(),
        );
        let (task, mut child) = session(spec);
        let Some(ParentFrame::Request { pause, .. }) = child.read().await else {
            panic!("expected the request")
        };
        assert_eq!(pause.map(|p| p.paused), Some(true));
        child.event(&job_id, 1, Status::Running).await;
        assert!(!support.known().await, "no answer first: it cannot pause");
        assert!(
            !gate.is_paused(),
            "the gate opens again: the job is not held"
        );
        gate.pause();
        gate.resume();
        child.send(completed()).await;
        assert_eq!(task.await.unwrap().status, Status::Completed);
        assert!(
            child.read().await.is_none(),
            "nothing but the request went to the worker"
        );
    }
}
