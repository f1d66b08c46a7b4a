//! The child side of the worker protocol: what `nodetool worker` runs (see [`crate::protocol`]).
//!
//! stdin is read by its own task for the whole job, so input frames (and EOF, which cancels the
//! job) are seen while the job runs. Input frames go, in order, to one forwarder task that pushes
//! them into the engine's [`InputStreams`] and answers each with an ack; a push that waits for
//! room in the input's buffer delays only later input frames, never the stdin reader.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use serde_json::Value;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{Engine, EventEnvelope, EventSink, InputStreams};

use crate::protocol::{
    read_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::strategy::JobError;
use crate::threaded::run_in_process;

#[derive(Debug)]
struct FrameSink(mpsc::UnboundedSender<ChildFrame>);

impl EventSink for FrameSink {
    fn send(&self, event: EventEnvelope) {
        // A closed writer means stdout is gone; the job is cancelled separately.
        let _ = self.0.send(ChildFrame::Event(Box::new(event)));
    }
}

/// Reads one request from `input`, runs it with `engine`, writes events and the outcome to
/// `output`. `terminate` resolving (SIGTERM in the binary) or EOF on `input` cancels the job.
/// Returns `Err` only when no job could be run (bad request, broken pipe); the job failing is
/// reported in the outcome frame and is `Ok`.
pub async fn serve<R, W, F>(mut input: R, mut output: W, engine: Engine, terminate: F) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let first = read_frame::<_, ParentFrame>(&mut input, MAX_FRAME_BYTES).await?;
    let spec = match first {
        Some(ParentFrame::Request {
            protocol_version,
            spec,
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
            *spec
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

    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<ChildFrame>();
    let streams = spec.streaming_inputs.then(InputStreams::new);
    let (input_tx, input_rx) = mpsc::unbounded_channel::<ParentFrame>();
    tokio::spawn(forward_inputs(input_rx, streams.clone(), tx.clone()));
    // Parent gone (EOF or broken stdin) or SIGTERM: cancel the job.
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                match read_parent_frame(&mut input).await {
                    Ok(Some(ParentFrame::Reply { .. })) | Ok(Some(ParentFrame::Request { .. })) => {
                        tracing::warn!("ignoring an unexpected reply or second request frame");
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
    let outcome = run_in_process(engine, spec, sink, cancel, streams).await;
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
        let Some(raw) = read_frame::<_, Value>(input, MAX_FRAME_BYTES).await? else {
            return Ok(None);
        };
        match serde_json::from_value::<ParentFrame>(raw.clone()) {
            Ok(frame) => return Ok(Some(frame)),
            Err(e) => match raw.get("frame").and_then(Value::as_str) {
                Some(kind) if !KNOWN_FRAMES.contains(&kind) => {
                    tracing::warn!(
                        frame = kind,
                        "skipping a frame kind this worker does not know"
                    );
                }
                _ => {
                    return Err(Error::invalid_input(format!("garbled parent frame: {e}"))
                        .with_operation("worker.protocol"))
                }
            },
        }
    }
}

/// The `frame` tags of [`ParentFrame`].
const KNOWN_FRAMES: [&str; 4] = ["request", "reply", "input_push", "input_end"];

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
                    "this job was not started with streaming_inputs",
                )),
            ),
            (ParentFrame::Request { .. } | ParentFrame::Reply { .. }, _) => continue,
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

/// The whole `nodetool worker` process body: builds the engine from `settings` (the worker's own
/// storage and cache, from its allow-listed environment), then [`serve`]s stdin/stdout; SIGTERM
/// cancels the job.
pub async fn run_worker(settings: nodetool_config::Settings) -> Result<()> {
    let resources =
        nodetool_runtime::Resources::new(settings, nodetool_runtime::ResourceOptions::default());
    let engine = Engine::new(
        Arc::new(nodetool_engine::Registry::builtin()),
        nodetool_engine::EngineResources::from_resources(&resources).await?,
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| {
            Error::new(ErrorKind::Unavailable, "cannot install the SIGTERM handler")
                .with_operation("worker.run")
                .with_source(e)
        })?;
    let terminate = async move {
        term.recv().await;
    };
    serve(tokio::io::stdin(), tokio::io::stdout(), engine, terminate).await
}
