//! The execution-strategy contract: what a job is ([`JobSpec`]), how it is started
//! ([`ExecutionStrategy::start`]), how it ends ([`JobOutcome`]), how values reach its streamed
//! inputs while it runs ([`JobInputs`]) and the public request shape ([`RunJobRequest`],
//! NodeTool's field names).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, JobId, Result, UserId};
use nodetool_engine::{EventSink, Graph, RunOutcome, Status};

/// The three strategies a request may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Threaded,
    Subprocess,
    Docker,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Threaded => "threaded",
            StrategyKind::Subprocess => "subprocess",
            StrategyKind::Docker => "docker",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StrategyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "threaded" => Ok(StrategyKind::Threaded),
            "subprocess" => Ok(StrategyKind::Subprocess),
            "docker" => Ok(StrategyKind::Docker),
            other => Err(Error::invalid_input(format!(
                "unknown execution_strategy {other:?}: expected threaded, subprocess or docker"
            ))
            .with_operation("exec.validate")),
        }
    }
}

/// How long past its time limit a job whose nodes ignore cancellation is given before the
/// strategy ends it anyway (kills its worker, or abandons its task: threads cannot be killed).
pub const HARD_DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// Limits for one job, in plain units. `None` means "no limit from the request".
///
/// Strategies enforce what they can and say so in [`Capabilities`]: threaded enforces only
/// `time_seconds`; subprocess turns the rest into rlimits; Docker into container limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Memory the job may allocate: RLIMIT_DATA of a subprocess worker (heap and anonymous
    /// mappings, not reserved address space), or the container's memory limit.
    pub memory_bytes: Option<u64>,
    /// CPU time (RLIMIT_CPU).
    pub cpu_seconds: Option<u64>,
    /// Largest file the job may write (RLIMIT_FSIZE).
    pub file_size_bytes: Option<u64>,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Processes/threads (RLIMIT_NPROC: counts every process of the user, as Linux does; Docker
    /// uses a pids limit instead).
    pub processes: Option<u64>,
    /// Wall-clock limit for the whole job.
    pub time_seconds: Option<f64>,
}

impl ResourceLimits {
    pub fn timeout(&self) -> Option<Duration> {
        self.time_seconds.map(Duration::from_secs_f64)
    }

    /// Applies the operator's deadline (`JOB_TIMEOUT_SECONDS`) as a ceiling: the job gets the
    /// smaller of its own `time_seconds` and `ceiling`. A request may lower the operator's limit,
    /// never lift it; with no ceiling the request's limit (or none) stands.
    pub fn cap_time(mut self, ceiling: Option<Duration>) -> Self {
        self.time_seconds = effective_time_limit(self.time_seconds, ceiling);
        self
    }
}

/// The deadline a job runs under, in seconds: the smaller of what the caller asked for and the
/// operator's ceiling. Every entry point (CLI `nodetool run`, REST, /ws) computes it here.
pub fn effective_time_limit(requested: Option<f64>, ceiling: Option<Duration>) -> Option<f64> {
    let ceiling = ceiling.map(|d| d.as_secs_f64());
    match (requested, ceiling) {
        (Some(r), Some(c)) => Some(r.min(c)),
        (r, c) => r.or(c),
    }
}

/// Everything a strategy needs to run one job. The job id is allocated once, by the manager (or
/// the caller), and every strategy and worker uses it unchanged.
#[derive(Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: JobId,
    pub user_id: UserId,
    #[serde(default)]
    pub workflow_id: String,
    pub graph: Graph,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub resource_limits: ResourceLimits,
    /// Secrets the job's nodes may read. Strategies pass them in memory or in the request frame,
    /// never in an environment or argv.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub use_cache: bool,
    /// Every input node without a param takes values pushed while the job runs (a request's
    /// `streaming_inputs: true`; [`JobHandle::inputs`]; `nodetool_engine::inputs` has the rules).
    #[serde(default)]
    pub streaming_inputs: bool,
    /// The graph has streaming input nodes (`RealtimeAudioInput`): NodeTool's rule keeps them
    /// open for pushed values with no flag from the client. Set by the manager.
    #[serde(default)]
    pub streaming_input_nodes: bool,
    /// Docker only: the image to run instead of the strategy's default (a request's
    /// `docker_image`; the Docker strategy checks it against `DOCKER_ALLOWED_IMAGES`). Other
    /// strategies refuse a spec that names one ([`ExecutionStrategy::admit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// The W3C `traceparent` the job's spans join (the caller's, checked; in a worker's request:
    /// the parent's job span), so one trace covers request → manager → worker → node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Pauses the job between node boundaries (`nodetool_engine::pause`). The threaded strategy
    /// hands it to the engine; the worker strategies' session watches it and tells a worker that
    /// can pause (`nodetool_workers::protocol`, pause control), whose run has a gate of its own.
    #[serde(skip)]
    pub pause: nodetool_engine::PauseGate,
    /// Whether the run honours `pause`, as the strategy learns it (worker strategies: from the
    /// worker's first frame). Threaded runs always do and leave it unset.
    #[serde(skip)]
    pub pause_support: PauseSupport,
}

/// Whether a job's run honours its [`JobSpec::pause`] gate: unknown until a worker strategy's
/// worker answered the request's pause offer (`nodetool_workers::protocol`, pause control),
/// then known for good. Shared by the strategy (which sets it) and the manager (which refuses
/// pause and resume for a job whose worker cannot pause). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PauseSupport(Arc<watch::Sender<Option<bool>>>);

impl PauseSupport {
    /// Records what the run can do; the first answer stands.
    pub fn set(&self, supported: bool) {
        self.0.send_if_modified(|known| {
            if known.is_some() {
                return false;
            }
            *known = Some(supported);
            true
        });
    }

    /// `None` while not known yet.
    pub fn get(&self) -> Option<bool> {
        *self.0.borrow()
    }

    /// Waits until it is known.
    pub async fn known(&self) -> bool {
        let mut rx = self.0.subscribe();
        let known = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
        // The sender lives in `self`, so the wait cannot fail.
        known.unwrap_or(false)
    }
}

fn yes() -> bool {
    true
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs: only their names.
        f.debug_struct("JobSpec")
            .field("job_id", &self.job_id)
            .field("user_id", &self.user_id)
            .field("workflow_id", &self.workflow_id)
            .field("nodes", &self.graph.nodes.len())
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("resource_limits", &self.resource_limits)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("use_cache", &self.use_cache)
            .field("streaming_inputs", &self.streaming_inputs)
            .field("streaming_input_nodes", &self.streaming_input_nodes)
            .field("docker_image", &self.docker_image)
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

impl JobSpec {
    /// Whether pushed values can reach the job: the strategy's handle then MUST carry
    /// [`JobInputs`].
    pub fn has_input_feeds(&self) -> bool {
        self.streaming_inputs || self.streaming_input_nodes
    }

    /// The engine streams for this job's run, `None` when nothing can be pushed to it.
    pub fn input_streams(&self) -> Option<nodetool_engine::InputStreams> {
        if self.streaming_inputs {
            Some(nodetool_engine::InputStreams::all_unset())
        } else if self.streaming_input_nodes {
            Some(nodetool_engine::InputStreams::new())
        } else {
            None
        }
    }

    /// A spec with a fresh job id, user "1", no params, limits or secrets.
    pub fn new(graph: Graph) -> Self {
        Self {
            job_id: JobId::generate(),
            user_id: UserId::local(),
            workflow_id: String::new(),
            graph,
            params: Map::new(),
            resource_limits: ResourceLimits::default(),
            secrets: BTreeMap::new(),
            use_cache: true,
            streaming_inputs: false,
            streaming_input_nodes: false,
            docker_image: None,
            traceparent: None,
            pause: nodetool_engine::PauseGate::default(),
            pause_support: PauseSupport::default(),
        }
    }
}

/// Why a job failed, in a form that crosses process boundaries (the engine's `Error` is not
/// serialisable): the error kind's name (`nodetool_core::ErrorKind::as_str`) and the full text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub kind: String,
    pub message: String,
}

impl JobError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind: kind.as_str().to_owned(),
            message: message.into(),
        }
    }

    pub fn from_error(err: &Error) -> Self {
        Self::new(err.kind(), err.to_string())
    }

    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout.as_str()
    }

    /// The kind back from its name (`Unexpected` for a name this build does not know).
    pub fn error_kind(&self) -> ErrorKind {
        ErrorKind::from_name(&self.kind)
    }

    /// An [`Error`] of the same kind and text (for errors that crossed a process boundary).
    pub fn to_error(&self) -> Error {
        Error::new(self.error_kind(), self.message.clone())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a job ended. A failing workflow is an outcome, not an `Err`: `status` is `completed`,
/// `failed` (with `error`; a time-out is `failed` with an error of kind `timeout`) or
/// `cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub status: Status,
    /// `{output name: [values...]}`.
    #[serde(default)]
    pub result: Map<String, Value>,
    #[serde(default)]
    pub error: Option<JobError>,
    /// The node whose failure failed the job.
    #[serde(default)]
    pub failed_node: Option<String>,
    #[serde(default)]
    pub duration_secs: f64,
}

impl JobOutcome {
    pub fn completed(result: Map<String, Value>) -> Self {
        Self {
            status: Status::Completed,
            result,
            error: None,
            failed_node: None,
            duration_secs: 0.0,
        }
    }

    pub fn failed(error: JobError) -> Self {
        Self {
            status: Status::Failed,
            result: Map::new(),
            error: Some(error),
            failed_node: None,
            duration_secs: 0.0,
        }
    }

    pub fn cancelled() -> Self {
        Self {
            status: Status::Cancelled,
            result: Map::new(),
            error: None,
            failed_node: None,
            duration_secs: 0.0,
        }
    }

    /// The engine's own time-out outcome ([`nodetool_engine::job_timeout_error`]), for a job a
    /// strategy had to end itself.
    pub fn timed_out(limit: Duration) -> Self {
        Self::failed(JobError::from_error(&nodetool_engine::job_timeout_error(
            limit,
        )))
    }

    pub fn is_timeout(&self) -> bool {
        self.status == Status::Failed && self.error.as_ref().is_some_and(JobError::is_timeout)
    }

    /// The error text, as `job_update.error` carries it (`node <id>: <error>`).
    pub fn error_text(&self) -> Option<String> {
        let err = self.error.as_ref()?;
        Some(match &self.failed_node {
            Some(node) => format!("node {node}: {}", err.message),
            None => err.message.clone(),
        })
    }
}

impl From<RunOutcome> for JobOutcome {
    fn from(o: RunOutcome) -> Self {
        Self {
            status: o.status,
            result: o.result,
            error: o.error.as_ref().map(JobError::from_error),
            failed_node: o.failed_node,
            duration_secs: o.duration.as_secs_f64(),
        }
    }
}

/// What runs the job: a process id (subprocess) or a container id (Docker), recorded in the job
/// store so a restarted manager can reap it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum WorkerRef {
    /// Process id, which is also the process-group id (workers lead their own group).
    Pid(u32),
    Container(String),
}

/// Values pushed into a running job's streamed input nodes (NodeTool's `stream_input` and
/// `end_input_stream`), whatever runs the job.
///
/// Contract (the engine's `InputStreams` semantics, across process boundaries too):
/// - `push` MUST deliver values of one input in call order, and MUST wait while the input's
///   buffer is full (backpressure) rather than drop a value.
/// - An unknown input name or handle MUST be `NotFound`; a wrong-typed value, an input fed by
///   params, or a push after `end` MUST be `InvalidInput`; a job that is over (or whose worker
///   is gone) MUST be `Unavailable`. None of these fails the job.
/// - `end` ends the input's stream (downstream sees end-of-stream); ending twice is harmless.
#[async_trait]
pub trait JobInputs: Send + Sync + fmt::Debug + 'static {
    async fn push(&self, input: &str, handle: &str, value: Value) -> Result<()>;

    async fn end(&self, input: &str, handle: &str) -> Result<()>;
}

#[async_trait]
impl JobInputs for nodetool_engine::InputStreams {
    async fn push(&self, input: &str, handle: &str, value: Value) -> Result<()> {
        nodetool_engine::InputStreams::push(self, input, handle, value).await
    }

    async fn end(&self, input: &str, handle: &str) -> Result<()> {
        nodetool_engine::InputStreams::end(self, input, handle).await
    }
}

/// A started job. Dropping the handle does not cancel the job.
#[derive(Debug)]
pub struct JobHandle {
    job_id: JobId,
    cancel: CancellationToken,
    task: Option<JoinHandle<JobOutcome>>,
    worker: Option<WorkerRef>,
    inputs: Option<Arc<dyn JobInputs>>,
}

impl JobHandle {
    /// `task` drives the job to its end and yields the outcome; it MUST watch `cancel` and end
    /// with a `cancelled` outcome soon after it fires.
    pub fn new(job_id: JobId, cancel: CancellationToken, task: JoinHandle<JobOutcome>) -> Self {
        Self {
            job_id,
            cancel,
            task: Some(task),
            worker: None,
            inputs: None,
        }
    }

    pub fn with_worker(mut self, worker: WorkerRef) -> Self {
        self.worker = Some(worker);
        self
    }

    /// For jobs with input feeds ([`JobSpec::has_input_feeds`]): where pushed values go.
    pub fn with_inputs(mut self, inputs: Arc<dyn JobInputs>) -> Self {
        self.inputs = Some(inputs);
        self
    }

    /// The job's streamed inputs; `None` when nothing can be pushed to it.
    pub fn inputs(&self) -> Option<&Arc<dyn JobInputs>> {
        self.inputs.as_ref()
    }

    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    pub fn worker(&self) -> Option<&WorkerRef> {
        self.worker.as_ref()
    }

    /// Asks the job to stop. Idempotent; returns at once (use [`JobHandle::wait`] for the end).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels this job, for callers that keep it apart from the handle.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the end of the job. A panicking driver task becomes a `failed` outcome; a second
    /// call after the outcome was taken also reports `failed` (never hangs).
    pub async fn wait(&mut self) -> JobOutcome {
        let Some(task) = self.task.take() else {
            return JobOutcome::failed(JobError::new(
                ErrorKind::Unexpected,
                "the job's outcome was already taken",
            ));
        };
        match task.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_cancelled() => JobOutcome::cancelled(),
            Err(e) => JobOutcome::failed(JobError::new(
                ErrorKind::Unexpected,
                format!("the job's driver task panicked: {e}"),
            )),
        }
    }
}

/// What a strategy enforces, so callers can tell users (and the test suite can skip what does
/// not apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// A crash (abort, segfault, OOM) in a node fails only this job, not the caller's process.
    pub isolates_crashes: bool,
    /// `memory_bytes` is enforced.
    pub memory_limit: bool,
    /// `cpu_seconds`, `file_size_bytes`, `open_files`, `processes` are enforced.
    pub os_limits: bool,
    /// The job cannot see the caller's environment variables.
    pub isolated_env: bool,
}

/// Runs jobs one way (threaded, subprocess, Docker).
///
/// Contract:
/// - When [`JobSpec::has_input_feeds`], the handle MUST carry [`JobInputs`] ([`JobHandle::inputs`]).
/// - `start` MUST return quickly (after spawning, not after the job ends). It returns `Err` only
///   when the job could not be started at all (the Docker engine is absent, the worker binary is
///   missing); the caller records that as a failed job. Everything after a successful start,
///   including the workflow failing, crashing or timing out, MUST come back as a [`JobOutcome`]
///   from [`JobHandle::wait`].
/// - Events MUST reach `sink` as `EventEnvelope`s carrying `spec.job_id` and seqs increasing from
///   1 without gaps, ending with one terminal `job_update` whose status equals the outcome's.
///   `sink.send` never blocks, so strategies MUST NOT rely on back-pressure from it.
/// - `spec.resource_limits.time_seconds` MUST be enforced (a `failed` outcome of kind `timeout`
///   whose message is [`JobOutcome::timed_out`]'s, the engine's own wording), even when a node
///   ignores cancellation: at the latest [`HARD_DEADLINE_GRACE`] past the limit.
/// - `start` MUST refuse what [`ExecutionStrategy::admit`] refuses.
/// - Cancellation ([`JobHandle::cancel`]) MUST end the job with `cancelled` (never `failed`),
///   also when cancelling kills a worker; cancelling twice or after the end is harmless.
/// - Resources a job used (processes, containers, scratch directories) MUST be gone when `wait`
///   returns.
/// - Secrets SHOULD only reach the job in memory or the request frame, never in an
///   environment variable, argv, or a log line.
#[async_trait]
pub trait ExecutionStrategy: Send + Sync + fmt::Debug + 'static {
    fn name(&self) -> StrategyKind;

    fn capabilities(&self) -> Capabilities;

    /// Checks, before a job is recorded, what this strategy would refuse at `start` for reasons
    /// the caller can fix (an image outside the allow-list, say), so the caller gets the error
    /// instead of a failed job. The default refuses a `docker_image` (only Docker runs images).
    fn admit(&self, spec: &JobSpec) -> Result<()> {
        match &spec.docker_image {
            Some(image) => Err(Error::invalid_input(format!(
                "docker_image {image:?} applies only to execution_strategy docker, not {}",
                self.name()
            ))
            .with_operation("exec.validate")),
            None => Ok(()),
        }
    }

    async fn start(&self, spec: JobSpec, sink: Arc<dyn EventSink>) -> Result<JobHandle>;

    /// Releases what the strategy keeps ready for jobs that will now never come (the subprocess
    /// strategy's idle warm workers); running jobs are not touched. Called by
    /// [`JobExecutionManager::shutdown`](crate::JobExecutionManager::shutdown); a wrapper MUST
    /// forward it. Starting a job afterwards still works (cold).
    fn shutdown(&self) {}
}

/// `resource_limits` as NodeTool clients send them. Unknown keys are rejected so a typo is not
/// silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLimits {
    /// Accepted for NodeTool compatibility; only meaningful on macOS there, and ignored here.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    #[serde(default)]
    pub memory_mb: Option<f64>,
    /// CPU seconds (an addition; NodeTool has no CPU-time limit).
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    #[serde(default)]
    pub time_seconds: Option<f64>,
    #[serde(default)]
    pub file_size_mb: Option<f64>,
    #[serde(default)]
    pub open_files: Option<f64>,
    #[serde(default)]
    pub max_processes: Option<f64>,
}

/// Smallest memory limit we accept: below this the worker cannot even start its runtime.
pub const MIN_MEMORY_MB: f64 = 32.0;

impl RequestLimits {
    /// Checks every field and converts to [`ResourceLimits`].
    pub fn validate(&self) -> Result<ResourceLimits> {
        fn positive(name: &str, v: Option<f64>, min: f64) -> Result<Option<f64>> {
            match v {
                None => Ok(None),
                Some(x) if x.is_finite() && x >= min && x > 0.0 => Ok(Some(x)),
                Some(x) => Err(Error::invalid_input(format!(
                    "resource_limits.{name} must be a number >= {min} (and > 0), got {x}"
                ))
                .with_operation("exec.validate")),
            }
        }
        if let Some(p) = self.cpu_percent {
            if !(p.is_finite() && p > 0.0 && p <= 100.0 * 1024.0) {
                return Err(Error::invalid_input(format!(
                    "resource_limits.cpu_percent must be within (0, 102400], got {p}"
                ))
                .with_operation("exec.validate"));
            }
        }
        const MB: f64 = 1024.0 * 1024.0;
        Ok(ResourceLimits {
            memory_bytes: positive("memory_mb", self.memory_mb, MIN_MEMORY_MB)?
                .map(|m| (m * MB) as u64),
            cpu_seconds: positive("cpu_seconds", self.cpu_seconds, 1.0)?.map(|s| s.ceil() as u64),
            file_size_bytes: positive("file_size_mb", self.file_size_mb, 0.0)?
                .map(|m| (m * MB) as u64),
            open_files: positive("open_files", self.open_files, 16.0)?.map(|n| n as u64),
            processes: positive("max_processes", self.max_processes, 1.0)?.map(|n| n as u64),
            time_seconds: positive("time_seconds", self.time_seconds, 0.0)?,
        })
    }
}

/// NodeTool's `run_job_request` (`reference/nodetool-execution.md` §3.2). `user_id` from the
/// client is ignored (the caller names the user). A `job_id` is the client's id for the job
/// (NodeTool's web client makes one per run): checked by [`RunJobRequest::validate`]
/// ([`JobId::parse`]) and used as given; without one the manager allocates an id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunJobRequest {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub job_type: Option<String>,
    /// threaded | subprocess | docker (default: the manager's default strategy).
    #[serde(default)]
    pub execution_strategy: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub graph: Option<Graph>,
    #[serde(default)]
    pub resource_limits: Option<RequestLimits>,
    /// Docker only: the image to run (default from settings).
    #[serde(default)]
    pub docker_image: Option<String>,
    /// Not NodeTool's: `false` neither reads nor fills the node cache.
    #[serde(default)]
    pub use_cache: Option<bool>,
    /// Unset (NodeTool's behaviour): streaming input nodes (`RealtimeAudioInput`) stay open
    /// for `stream_input` until `end_input_stream`, other inputs take their param or default
    /// once. Not NodeTool's: `true` also makes every input node without a param wait for pushed
    /// values; `false` keeps every input fixed (a streaming input then emits its value once).
    #[serde(default)]
    pub streaming_inputs: Option<bool>,
    /// Not NodeTool's: a W3C `traceparent` for the job's spans (REST and /ws also take the
    /// `traceparent` header). A malformed one is ignored: the job starts a fresh trace.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Not NodeTool's: with `JOB_EXECUTION=queue`, only a `nodetool work` process started with
    /// every one of these tags (`--tags`) claims the job (e.g. `["gpu"]`). Ignored when the
    /// accepting server runs its jobs itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_tags: Option<Vec<String>>,
}

/// A request after [`RunJobRequest::validate`].
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The client's job id, if it sent one.
    pub job_id: Option<JobId>,
    pub strategy: Option<StrategyKind>,
    pub workflow_id: String,
    pub graph: Graph,
    pub params: Map<String, Value>,
    pub resource_limits: ResourceLimits,
    pub docker_image: Option<String>,
    pub use_cache: bool,
    /// As in the request: `None` follows NodeTool's rule.
    pub streaming_inputs: Option<bool>,
    pub traceparent: Option<nodetool_core::trace::TraceParent>,
}

impl RunJobRequest {
    /// Checks the strategy, limits, graph and params; every problem is an `InvalidInput` error
    /// naming the field.
    pub fn validate(&self) -> Result<ValidRequest> {
        let strategy = self
            .execution_strategy
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(StrategyKind::from_str)
            .transpose()?;
        let graph = self.graph.clone().ok_or_else(|| {
            Error::invalid_input("run_job_request needs an inline `graph` ({nodes, edges})")
                .with_operation("exec.validate")
        })?;
        let params = match &self.params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "params must be an object of {{input name: value}}, got {}",
                    nodetool_engine::types::type_of(other)
                ))
                .with_operation("exec.validate"))
            }
        };
        let resource_limits = self
            .resource_limits
            .as_ref()
            .map(RequestLimits::validate)
            .transpose()?
            .unwrap_or_default();
        let job_id = match self.job_id.as_deref() {
            None | Some("") => None,
            Some(id) => Some(JobId::parse(id)?),
        };
        Ok(ValidRequest {
            job_id,
            strategy,
            workflow_id: self.workflow_id.clone().unwrap_or_default(),
            graph,
            params,
            resource_limits,
            docker_image: self
                .docker_image
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            use_cache: self.use_cache.unwrap_or(true),
            streaming_inputs: self.streaming_inputs,
            traceparent: self
                .traceparent
                .as_deref()
                .and_then(nodetool_core::trace::TraceParent::parse),
        })
    }
}
