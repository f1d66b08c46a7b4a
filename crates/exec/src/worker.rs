//! The child side of the worker protocol: what `nodetool worker` runs (see [`crate::protocol`]).

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{Engine, EventEnvelope, EventSink};

use crate::protocol::{
    read_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
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
            if protocol_version != PROTOCOL_VERSION {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "worker protocol version {protocol_version} requested, this worker speaks {PROTOCOL_VERSION}"
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
    // Parent gone (EOF or broken stdin) or SIGTERM: cancel the job.
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<_, ParentFrame>(&mut input, MAX_FRAME_BYTES).await {
                    Ok(Some(ParentFrame::Reply { .. })) => continue,
                    Ok(Some(ParentFrame::Request { .. })) => {
                        tracing::warn!("ignoring a second request frame");
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

    let (tx, mut rx) = mpsc::unbounded_channel::<ChildFrame>();
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
    let outcome = run_in_process(engine, spec, sink, cancel).await;
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
