//! The child side of the worker protocol: what `nodetool worker` runs (see [`crate::protocol`]).
//!
//! The worker has no storage, cache or database of its own: its engine's resources are the
//! parent's, reached through calls ([`crate::calls::client::remote_resources`]), so it reads no
//! settings and needs no credentials.
//!
//! stdin is read by its own task for the whole job, so input frames, call replies, pause frames
//! (and EOF, which cancels the job) are seen while the job runs. A pause frame flips the run's
//! own `PauseGate` (`spec.pause`) at once. Replies go straight to the [`CallClient`];
//! input frames go, in order, to one forwarder task that pushes them into the engine's
//! [`InputStreams`] and answers each with an ack; a push that waits for room in the input's
//! buffer delays only later input frames, never the stdin reader.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{Engine, EventEnvelope, EventSink, InputStreams, Registry};

use crate::calls::client::remote_resources;
use crate::calls::CallClient;

use crate::protocol::{
    read_frame, read_raw_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use nodetool_exec::strategy::JobError;
use nodetool_exec::threaded::run_in_process;

#[derive(Debug)]
struct FrameSink(mpsc::UnboundedSender<ChildFrame>);

impl EventSink for FrameSink {
    fn send(&self, mut event: EventEnvelope) {
        // The job's last word says what this process held at most: it ran nothing else.
        if let nodetool_engine::Event::JobUpdate(u) = &mut event.event {
            if u.status.is_terminal() {
                u.peak_memory_bytes = peak_rss_bytes();
            }
        }
        // A closed writer means stdout is gone; the job is cancelled separately.
        let _ = self.0.send(ChildFrame::Event(Box::new(event)));
    }
}

/// This process's peak resident set (`VmHWM` of `/proc/self/status`), inside a container too.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Where a worker gets the node types for the job it has just read: the built-in library (an
/// `Arc<Registry>`), or more — the binary adds the Python bridge's node types when the job's
/// graph names types the library lacks.
#[async_trait::async_trait]
pub trait RegistrySource: Send + Sync + 'static {
    async fn registry_for(&self, spec: &nodetool_exec::strategy::JobSpec) -> Arc<Registry>;
}

#[async_trait::async_trait]
impl RegistrySource for Arc<Registry> {
    async fn registry_for(&self, _spec: &nodetool_exec::strategy::JobSpec) -> Arc<Registry> {
        self.clone()
    }
}

/// Reads one request from `input`, runs it with the nodes of `registry` and the parent's
/// resources (calls on `output`, replies on `input`), writes events and the outcome to `output`.
/// `terminate` resolving (SIGTERM in the binary) or EOF on `input` cancels the job. Returns `Err`
/// only when no job could be run (bad request, broken pipe); the job failing is reported in the
/// outcome frame and is `Ok`.
pub async fn serve<R, W, F>(
    mut input: R,
    mut output: W,
    registry: impl RegistrySource,
    terminate: F,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let first = read_frame::<_, ParentFrame>(&mut input, MAX_FRAME_BYTES).await?;
    let (spec, services, pause) = match first {
        Some(ParentFrame::Request {
            protocol_version,
            spec,
            services,
            pause,
        }) => {
            if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol_version) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "worker protocol version {protocol_version} requested, this worker speaks \
                         {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                    ),
                )
                .with_operation("worker.serve"));
            }
            (*spec, services, pause)
        }
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "the first frame must be a request, got {other:?}"
            ))
            .with_operation("worker.serve"))
        }
        None => {
            return Err(
                Error::invalid_input("no request on stdin (EOF before the first frame)")
                    .with_operation("worker.serve"),
            )
        }
    };

    // Pause control: the answer comes before any other frame (the parent tells an older worker,
    // which sends none, by its first frame), and before the registry, which may take a while.
    let gate = spec.pause.clone();
    if let Some(offer) = pause {
        if offer.paused {
            gate.pause();
        }
        write_frame(&mut output, &ChildFrame::Controls { pause: true }).await?;
    }

    let registry = registry.registry_for(&spec).await;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<ChildFrame>();
    let client = match &services {
        Some(offer) => CallClient::new(tx.clone(), offer.max_calls_in_flight),
        None => CallClient::offline(
            "the parent lends this worker no storage, cache or asset records (a parent older \
             than worker protocol 3, or a strategy built without worker services)",
        ),
    };
    let owner = if spec.user_id.as_str().is_empty() {
        "anonymous"
    } else {
        spec.user_id.as_str()
    };
    let engine = Engine::new(
        registry,
        remote_resources(&client, services.as_deref(), owner),
    );
    let streams = spec.input_streams();
    let (input_tx, input_rx) = mpsc::unbounded_channel::<ParentFrame>();
    tokio::spawn(forward_inputs(input_rx, streams.clone(), tx.clone()));
    // Parent gone (EOF or broken stdin) or SIGTERM: cancel the job.
    {
        let cancel = cancel.clone();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                match read_parent_frame(&mut input).await {
                    Ok(Some(ParentFrame::Reply {
                        call_id,
                        result,
                        error,
                        data,
                    })) => client.deliver(call_id, ParentFrame::reply_answer(result, error, data)),
                    Ok(Some(ParentFrame::Request { .. })) => {
                        tracing::warn!("ignoring a second request frame");
                    }
                    Ok(Some(ParentFrame::SetPaused { paused })) => {
                        if paused {
                            gate.pause();
                        } else {
                            gate.resume();
                        }
                    }
                    Ok(Some(frame)) => {
                        let _ = input_tx.send(frame);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "stdin failed; cancelling the job");
                        break;
                    }
                }
            }
            // Calls waiting for a reply fail instead of hanging.
            client.close();
            cancel.cancel();
        });
    }
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            terminate.await;
            cancel.cancel();
        });
    }

    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let last = matches!(frame, ChildFrame::Outcome(_));
            write_frame(&mut output, &frame).await?;
            if last {
                break;
            }
        }
        Ok::<_, Error>(())
    });
    let sink: Arc<dyn EventSink> = Arc::new(FrameSink(tx.clone()));
    // The worker's own job span, a child of the parent's (its traceparent is in the spec).
    let span = nodetool_exec::trace::job_span(&spec, "worker");
    let outcome = run_in_process(engine, spec, sink, cancel, streams)
        .instrument(span)
        .await;
    // No call may follow the outcome.
    client.close();
    // The job's spans (its own has just ended) go out before the outcome, so the parent has
    // them when it reports the job (protocol docs, 7).
    if let Some(batch) = nodetool_core::trace::take_relayed_spans() {
        let _ = tx.send(ChildFrame::Spans {
            spans: batch.spans,
            dropped: batch.dropped,
            data: Some(batch.otlp),
        });
    }
    let _ = tx.send(ChildFrame::Outcome(Box::new(outcome)));
    drop(tx);
    match writer.await {
        Ok(r) => r,
        Err(e) => Err(
            Error::new(ErrorKind::Unexpected, "the frame writer panicked")
                .with_operation("worker.serve")
                .with_source(e),
        ),
    }
}

/// The next frame from the parent (`None` at EOF). A well-formed frame of a kind this worker does
/// not know (from a newer parent) is logged and skipped rather than cancelling the job.
async fn read_parent_frame<R: AsyncRead + Unpin>(input: &mut R) -> Result<Option<ParentFrame>> {
    loop {
        let Some(raw) = read_raw_frame(input, MAX_FRAME_BYTES).await? else {
            return Ok(None);
        };
        let kind = serde_json::from_slice::<FrameKind>(&raw.json)
            .ok()
            .and_then(|k| k.frame);
        match raw.decode::<ParentFrame>() {
            Ok(frame) => return Ok(Some(frame)),
            Err(e) => match kind.as_deref() {
                Some(kind) if !KNOWN_FRAMES.contains(&kind) => {
                    tracing::warn!(
                        frame = kind,
                        "skipping a frame kind this worker does not know"
                    );
                }
                _ => {
                    return Err(Error::invalid_input(format!(
                        "garbled parent frame: {}",
                        e.message()
                    ))
                    .with_operation("worker.protocol"))
                }
            },
        }
    }
}

/// Just the tag of a frame, to tell an unknown kind from a garbled one.
#[derive(serde::Deserialize)]
struct FrameKind {
    frame: Option<String>,
}

/// The `frame` tags of [`ParentFrame`].
const KNOWN_FRAMES: [&str; 5] = ["request", "reply", "input_push", "input_end", "set_paused"];

/// Pushes input frames into the job in order and acks each (an error ack when the job has no
/// streamed inputs).
async fn forward_inputs(
    mut frames: mpsc::UnboundedReceiver<ParentFrame>,
    streams: Option<InputStreams>,
    out: mpsc::UnboundedSender<ChildFrame>,
) {
    while let Some(frame) = frames.recv().await {
        let (id, result) = match (frame, &streams) {
            (
                ParentFrame::InputPush {
                    id,
                    input,
                    handle,
                    value,
                },
                Some(s),
            ) => (id, s.push(&input, &handle, value).await),
            (ParentFrame::InputEnd { id, input, handle }, Some(s)) => {
                (id, s.end(&input, &handle).await)
            }
            (ParentFrame::InputPush { id, .. } | ParentFrame::InputEnd { id, .. }, None) => (
                id,
                Err(Error::new(
                    ErrorKind::Unsupported,
                    "this job has no streamed inputs",
                )),
            ),
            (
                ParentFrame::Request { .. }
                | ParentFrame::Reply { .. }
                | ParentFrame::SetPaused { .. },
                _,
            ) => continue,
        };
        // The message alone: the parent adds its own operation.
        let error = result
            .err()
            .map(|e| JobError::new(e.kind(), e.message().to_owned()));
        if out.send(ChildFrame::InputAck { id, error }).is_err() {
            return;
        }
    }
}

/// The whole `nodetool worker` process body: [`serve`]s stdin/stdout with the built-in nodes and
/// the parent's resources; SIGTERM cancels the job. Reads no settings: nothing the worker does
/// depends on its environment.
pub async fn run_worker() -> Result<()> {
    run_worker_with(Arc::new(nodetool_nodes::registry())).await
}

/// [`run_worker`] with the node types of `registry`.
pub async fn run_worker_with(registry: impl RegistrySource) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| {
            Error::new(ErrorKind::Unavailable, "cannot install the SIGTERM handler")
                .with_operation("worker.run")
                .with_source(e)
        })?;
    let terminate = async move {
        term.recv().await;
    };
    let (input, output) = stdio();
    serve(input, output, registry, terminate).await
}

/// The process's stdin and stdout for frames: as non-blocking pipes when they are pipes (as
/// under both strategies), so large frames move without a blocking-thread hand-off per read or
/// write; tokio's blocking stdin/stdout otherwise (a file, a terminal).
pub fn stdio() -> (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    // Large frames (storage chunks) cross in few wake-ups; a no-op when they are not pipes.
    crate::protocol::widen_pipe(std::io::stdin().as_fd());
    crate::protocol::widen_pipe(std::io::stdout().as_fd());
    let input: Box<dyn AsyncRead + Unpin + Send> = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd)
    {
        Ok(rx) => Box::new(rx),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let output: Box<dyn AsyncWrite + Unpin + Send> = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd)
    {
        Ok(tx) => Box::new(tx),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    (input, output)
}
