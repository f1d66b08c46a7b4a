//! The threaded strategy: the engine runs in-process on a dedicated multi-thread tokio runtime of
//! `THREAD_POOL_SIZE` workers, so heavy jobs do not starve the server's own runtime. A job with
//! input feeds ([`JobSpec::has_input_feeds`]) gets an engine [`InputStreams`] as its
//! [`JobHandle::inputs`]: pushes go straight into the run.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{Engine, EventSink, InputStreams, RunOptions, RunRequest};

use crate::sink::TrackingSink;
use crate::strategy::{
    Capabilities, ExecutionStrategy, JobHandle, JobOutcome, JobSpec, StrategyKind,
};

/// How long past its time limit a job that ignores cancellation is given before it is abandoned
/// (its task keeps running on the pool; threads cannot be killed). The same grace as every
/// strategy's ([`crate::strategy::HARD_DEADLINE_GRACE`]).
pub const HARD_TIMEOUT_GRACE: Duration = crate::strategy::HARD_DEADLINE_GRACE;

pub struct ThreadedStrategy {
    engine: Engine,
    // `Option` so Drop can shut the pool down without blocking (dropping a runtime inside
    // another runtime's context would panic).
    pool: Option<tokio::runtime::Runtime>,
    threads: usize,
}

impl fmt::Debug for ThreadedStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadedStrategy")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl ThreadedStrategy {
    /// A pool of `threads` worker threads (at least 1) running jobs with `engine`.
    pub fn new(engine: Engine, threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let pool = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("nodetool-job")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "cannot start the job thread pool")
                    .with_operation("exec.threaded.new")
                    .with_context("threads", threads)
                    .with_source(e)
                    .set_temporary(false)
            })?;
        Ok(Self {
            engine,
            pool: Some(pool),
            threads,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for ThreadedStrategy {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.shutdown_background();
        }
    }
}

#[async_trait]
impl ExecutionStrategy for ThreadedStrategy {
    fn name(&self) -> StrategyKind {
        StrategyKind::Threaded
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_crashes: false,
            memory_limit: false,
            os_limits: false,
            isolated_env: false,
        }
    }

    async fn start(&self, spec: JobSpec, sink: Arc<dyn EventSink>) -> Result<JobHandle> {
        self.admit(&spec)?;
        let pool = self.pool.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::Unavailable, "the job thread pool is shut down")
                .with_operation("exec.threaded.start")
        })?;
        let cancel = CancellationToken::new();
        let job_id = spec.job_id.clone();
        let engine = self.engine.clone();
        let token = cancel.clone();
        let inputs = spec.input_streams();
        let streams = inputs.clone();
        // The engine's node spans are children of the caller's (the manager's job span).
        let span = tracing::Span::current();
        let task = pool.spawn(
            async move { run_in_process(engine, spec, sink, token, streams).await }
                .instrument(span),
        );
        let handle = JobHandle::new(job_id, cancel, task);
        Ok(match inputs {
            Some(inputs) => handle.with_inputs(Arc::new(inputs)),
            None => handle,
        })
    }
}

/// Runs a job with `engine` in the current runtime, with a hard deadline past the engine's own
/// time limit for nodes that ignore cancellation. Shared by the threaded strategy and the worker.
/// `inputs` feeds the job's streamed inputs (pass [`JobSpec::input_streams`]).
pub async fn run_in_process(
    engine: Engine,
    spec: JobSpec,
    sink: Arc<dyn EventSink>,
    cancel: CancellationToken,
    inputs: Option<InputStreams>,
) -> JobOutcome {
    let tracking = TrackingSink::new(spec.job_id.clone(), sink);
    let limit = spec.resource_limits.timeout();
    let workflow_id = spec.workflow_id.clone();
    let job_id = spec.job_id.clone();
    let pause = spec.pause.clone();
    let request = RunRequest {
        job_id: spec.job_id.into(),
        user_id: spec.user_id.into(),
        workflow_id: spec.workflow_id,
        graph: spec.graph,
        params: spec.params,
    };
    let opts = RunOptions {
        use_cache: spec.use_cache,
        job_timeout: limit,
        secrets: spec.secrets,
        input_streams: inputs,
        pause: Some(pause),
        ..RunOptions::default()
    };
    let run = engine.run(request, opts, tracking.clone(), cancel.clone());
    let outcome = match limit {
        None => JobOutcome::from(run.await),
        Some(limit) => match tokio::time::timeout(limit + HARD_TIMEOUT_GRACE, run).await {
            Ok(o) => JobOutcome::from(o),
            Err(_) => {
                cancel.cancel();
                tracing::warn!(
                    job_id = %job_id,
                    "job ignored cancellation after its time limit; abandoning it"
                );
                JobOutcome::timed_out(limit)
            }
        },
    };
    tracking.finish(&workflow_id, &outcome);
    outcome
}
