//! [`JobExecutionManager`]: submit, get, list, cancel, wait, subscribe, shutdown.
//!
//! Each job has one owner task, the only writer of its record (memory and SQLite). Jobs wait as
//! `scheduled` for one of `max_concurrent_jobs` slots ([`crate::scheduler`]: per-user caps and
//! queue limits, freed slots shared round-robin between users), then run on the strategy the
//! request names. Events go to a per-job hub: a broadcast for live subscribers plus a bounded replay
//! buffer, so a late subscriber asks for "everything after seq N".
//!
//! Streamed inputs ([`JobExecutionManager::stream_input`], [`JobExecutionManager::end_input_stream`])
//! go to the job's [`JobInputs`], whichever strategy runs it; a call made before the strategy has
//! started the job waits for it, and every wait ends when the job does. Which jobs take them is
//! NodeTool's rule, applied here from [`NodeFacts`]: a job whose graph has a streaming input
//! node (`RealtimeAudioInput`) gets input feeds with no flag from the client; a request's
//! `streaming_inputs: true` streams every input without a param as well, `false` none.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use nodetool_core::{Error, ErrorKind, JobId, Result, UserId};
use nodetool_engine::{EventEnvelope, EventSink, Status};

use crate::event_log::{EventLog, EventLogConfig};
use crate::node_facts::NodeFacts;
use crate::queue::{ControlPush, JobControl};
use crate::replay::StoredEvents;
use crate::scheduler::{Admission, Scheduler, SchedulerLimits};
use crate::store::{JobRecord, JobStore};
use crate::strategy::{
    ExecutionStrategy, JobInputs, JobOutcome, JobSpec, RunJobRequest, StrategyKind, WorkerRef,
};

/// How long pause and resume wait for a running subprocess or Docker job's worker to say whether
/// it can pause (its first frame, sent as it starts) before going ahead as for a queued job.
pub const PAUSE_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Manager knobs (from `Settings`: `MAX_WORKFLOW_THREADS`, `JOB_TIMEOUT`).
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Jobs running at once; the rest wait as `scheduled`.
    pub max_concurrent_jobs: usize,
    /// Jobs one user runs at once (`MAX_JOBS_PER_USER`); `None`: only the total bounds them.
    pub max_jobs_per_user: Option<usize>,
    /// Jobs one user may have waiting (`MAX_QUEUED_JOBS_PER_USER`); a submission past it is
    /// `RateLimited` with a `retry_after` context.
    pub max_queued_jobs_per_user: usize,
    /// The operator's time limit (`JOB_TIMEOUT_SECONDS`): jobs whose request sets none get it,
    /// and a request's own `time_seconds` may only lower it.
    pub default_timeout: Option<Duration>,
    /// Strategy for requests that name none (the first allowed one when this is not allowed).
    pub default_strategy: StrategyKind,
    /// Strategies requests may use (`ALLOWED_STRATEGIES`); naming another is `PermissionDenied`.
    pub allowed_strategies: Vec<StrategyKind>,
    /// Events kept per job for late and slow subscribers: one that falls further behind than
    /// this gets a lag notice for the gap. 131,072 lets 100 SSE clients follow a job emitting
    /// 100,000 events as fast as it can with no loss (docs/bench/server.md), for about 40 MiB
    /// of buffer in such a job; jobs with few events cost only what they emit.
    pub replay_events: usize,
    /// How long a finished job stays in memory (events replayable) before only the store has it.
    pub retain_finished: Duration,
    /// Most finished jobs kept in memory at once: past it the oldest is forgotten early (the
    /// store and the event log still answer for it), so memory stays flat under any job rate.
    pub max_retained_finished: usize,
    /// Persist every job's events in the job store (batched), so replay survives a restart;
    /// `None` keeps them in memory only.
    pub event_log: Option<EventLogConfig>,
    /// `JOB_EXECUTION=queue`: submitted jobs are only enqueued in the (PostgreSQL) store for
    /// `nodetool work` processes; nothing runs here, and followers read the store.
    pub queue: Option<QueueMode>,
    /// Each node type's facts, from the registry the strategies run: which graphs get input
    /// feeds without `streaming_inputs`, which queued jobs are retried when their worker is
    /// lost (every node idempotent), and the VRAM hints. Empty: no feeds without the flag, no
    /// retries, no hints.
    pub node_facts: NodeFacts,
    /// `NODETOOL_VRAM_GB`: a job with a node hinting more is refused at submit (in queue mode
    /// the hint travels with the job for the workers to match); `None`: not checked.
    pub vram_gb: Option<f64>,
}

/// How a queue-mode manager enqueues (`JOB_MAX_ATTEMPTS`, `JOB_LEASE_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMode {
    /// Runs of a job at most when its worker is lost.
    pub max_attempts: u32,
    /// The workers' lease: expired leases are settled every half of it here too, so a job
    /// whose worker died is retried or failed even when no other worker is polling.
    pub lease: Duration,
    /// `JOB_CLAIM_TIMEOUT_SECONDS`: a job no live worker can take fails after waiting this long.
    pub claim_timeout: Duration,
    /// `JOB_EVENTS_MAX_PER_JOB`, for the terminal event of such a job.
    pub max_events_per_job: u64,
}

/// How often a follower of a job run elsewhere re-reads the store without a wake-up.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_millis(500);

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_jobs: 16,
            max_jobs_per_user: None,
            max_queued_jobs_per_user: usize::MAX,
            default_timeout: None,
            default_strategy: StrategyKind::Threaded,
            allowed_strategies: vec![
                StrategyKind::Threaded,
                StrategyKind::Subprocess,
                StrategyKind::Docker,
            ],
            replay_events: 131_072,
            retain_finished: Duration::from_secs(300),
            max_retained_finished: 10_000,
            event_log: Some(EventLogConfig::default()),
            queue: None,
            node_facts: NodeFacts::default(),
            vram_gb: None,
        }
    }
}

impl ManagerConfig {
    pub fn from_settings(settings: &nodetool_config::Settings) -> Self {
        Self {
            max_concurrent_jobs: settings
                .max_workflow_threads
                .unwrap_or(settings.thread_pool_size)
                .max(1),
            max_jobs_per_user: settings.max_jobs_per_user,
            max_queued_jobs_per_user: settings.max_queued_jobs_per_user,
            default_timeout: settings.job_timeout,
            allowed_strategies: settings
                .allowed_strategies
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            event_log: Some(EventLogConfig::from_settings(settings)),
            queue: (settings.database.job_execution
                == nodetool_config::database::JobExecution::Queue)
                .then_some(QueueMode {
                    max_attempts: settings.database.job_max_attempts,
                    lease: settings.database.job_lease,
                    claim_timeout: settings.database.job_claim_timeout,
                    max_events_per_job: settings.database.job_events_max_per_job,
                }),
            vram_gb: settings.vram_gb,
            ..Self::default()
        }
    }
}

/// Events a live subscriber may trail the job by before it resyncs from the replay buffer.
const LIVE_CAPACITY: usize = 1024;

/// Per-job event fan-out with a replay buffer.
#[derive(Debug)]
struct EventHub {
    state: Mutex<HubState>,
    capacity: usize,
    /// The manager's per-node-type totals, fed by ended firings.
    stats: Arc<crate::node_stats::NodeStats>,
}

#[derive(Debug)]
struct HubState {
    buffer: VecDeque<EventEnvelope>,
    /// Made by the first subscriber: most jobs have none, and a channel preallocates all of
    /// its slots (1024 envelopes, ~250 KiB per job).
    tx: Option<broadcast::Sender<EventEnvelope>>,
    /// The job's last event is out: no subscriber gets a live channel any more.
    closed: bool,
    /// The job's terminal `job_update`, held back until the owner has recorded the outcome, so a
    /// client that reacts to the event never reads a stale record.
    held: Option<EventEnvelope>,
    /// Where published events are persisted (in publish order).
    log: Option<EventLog>,
}

impl EventHub {
    fn new(
        capacity: usize,
        log: Option<EventLog>,
        stats: Arc<crate::node_stats::NodeStats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(HubState {
                buffer: VecDeque::new(),
                tx: None,
                closed: false,
                held: None,
                log,
            }),
            capacity: capacity.max(1),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the held terminal event (its status set to the recorded one, which wins when a
    /// cancel raced the strategy, and its error and result to the recorded ones when the outcome
    /// could not be written), then closes: live subscribers end after draining.
    fn release_and_close(&self, record: &JobRecord, unrecorded: bool) {
        let status = record.status;
        let mut st = self.lock();
        if let Some(mut event) = st.held.take() {
            if let nodetool_engine::Event::JobUpdate(update) = &mut event.event {
                if unrecorded {
                    update.result = None;
                    update.error.clone_from(&record.error);
                }
                update.status = status;
            }
            st.publish(event, self.capacity);
        }
        st.tx = None;
        st.closed = true;
    }

    /// A live receiver of every event published after this call; `None` once the job closed.
    fn subscribe_live(&self) -> Option<broadcast::Receiver<EventEnvelope>> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        Some(
            st.tx
                .get_or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0)
                .subscribe(),
        )
    }

    /// A terminal `job_update` was sent (and is held).
    fn has_terminal(&self) -> bool {
        self.lock().held.is_some()
    }

    /// Up to `max` buffered events after `seq`. Bounded so that a subscriber catching up copies
    /// a batch at a time, holding the lock the job publishes under only briefly (copying a whole
    /// 100k-event buffer per lagging subscriber cost gigabytes and slowed the job 3.6×).
    fn since(&self, seq: u64, max: usize) -> VecDeque<EventEnvelope> {
        let st = self.lock();
        let start = st.buffer.partition_point(|e| e.seq <= seq);
        st.buffer.range(start..).take(max).cloned().collect()
    }
}

impl HubState {
    fn publish(&mut self, event: EventEnvelope, capacity: usize) {
        if self.buffer.len() >= capacity {
            self.buffer.pop_front();
        }
        if let Some(log) = &self.log {
            log.record(&event);
        }
        self.buffer.push_back(event.clone());
        if let Some(tx) = &self.tx {
            // No subscriber is fine.
            let _ = tx.send(event);
        }
    }
}

impl EventSink for EventHub {
    fn send(&self, event: EventEnvelope) {
        if let nodetool_engine::Event::NodeUpdate(u) = &event.event {
            self.stats.record(u);
        }
        let mut st = self.lock();
        let terminal = matches!(
            &event.event,
            nodetool_engine::Event::JobUpdate(u) if u.status.is_terminal()
        );
        if terminal {
            st.held = Some(event);
        } else {
            st.publish(event, self.capacity);
        }
    }
}

/// A job's events from a given seq on: the replayed backlog, then live ones; ends after the job's
/// last event.
#[derive(Debug)]
pub struct JobEvents {
    /// `None` for a job that is no longer in memory: `stored` replays it.
    hub: Option<Arc<EventHub>>,
    stored: Option<StoredEvents>,
    backlog: VecDeque<EventEnvelope>,
    rx: Option<broadcast::Receiver<EventEnvelope>>,
    last_seq: u64,
    /// Reading from the replay buffer (after subscribing, lagging, or the job's end) until it
    /// has nothing newer.
    catching_up: bool,
}

/// Events copied from the replay buffer (or read from the store) at a time.
pub(crate) const REPLAY_BATCH: usize = 256;

impl JobEvents {
    /// The next event, or `None` when the job has ended and everything was delivered. A
    /// subscriber that falls behind the broadcast resyncs from the replay buffer; events older
    /// than the buffer are skipped.
    pub async fn next(&mut self) -> Option<EventEnvelope> {
        if let Some(stored) = &mut self.stored {
            return stored.next(&mut self.last_seq).await;
        }
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if e.seq > self.last_seq {
                    self.last_seq = e.seq;
                    return Some(e);
                }
                continue;
            }
            if self.catching_up {
                let Some(hub) = &self.hub else {
                    return None;
                };
                self.backlog = hub.since(self.last_seq, REPLAY_BATCH);
                if !self.backlog.is_empty() {
                    continue;
                }
                self.catching_up = false;
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(e) if e.seq > self.last_seq => {
                    self.last_seq = e.seq;
                    return Some(e);
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx = None;
                    self.catching_up = true;
                }
            }
        }
    }

    /// The seq of the last event returned.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[derive(Debug)]
struct LiveJob {
    user_id: UserId,
    cancel: CancellationToken,
    record: watch::Receiver<JobRecord>,
    hub: Arc<EventHub>,
    /// Has input feeds ([`JobSpec::has_input_feeds`]).
    streaming: bool,
    /// Without feeds: the graph's input node names, for a precise refusal of a push.
    fixed_inputs: Vec<String>,
    /// The strategy's input side, once it has started the job.
    inputs: watch::Sender<Option<Arc<dyn JobInputs>>>,
    /// The job's pause switch (also in its spec).
    pause: nodetool_engine::PauseGate,
    /// Whether its run honours the switch (worker strategies learn it from the worker).
    pause_support: crate::strategy::PauseSupport,
    /// Its scheduler ticket while it waits for a place (see `queue_position`).
    ticket: Option<u64>,
}

struct Inner {
    store: JobStore,
    /// Persists job events (`config.event_log`).
    event_log: Option<EventLog>,
    strategies: HashMap<StrategyKind, Arc<dyn ExecutionStrategy>>,
    config: ManagerConfig,
    scheduler: Arc<Scheduler>,
    live: Mutex<HashMap<JobId, Arc<LiveJob>>>,
    accepting: AtomicBool,
    owners: tokio_util::task::TaskTracker,
    /// Called with each job's final record (see [`JobExecutionManager::on_finished`]).
    finished_observers: Mutex<Vec<FinishedObserver>>,
    node_stats: Arc<crate::node_stats::NodeStats>,
    /// Finished jobs still in `live`, oldest first, with when each is to be forgotten; one
    /// sweeper task (started with the first finish) forgets them.
    retained: Mutex<VecDeque<(tokio::time::Instant, JobId)>>,
    sweeper: std::sync::Once,
}

/// A callback for finished jobs; it runs on the job's owner task, so it must be quick.
type FinishedObserver = Arc<dyn Fn(&JobRecord) + Send + Sync>;

/// Runs and tracks jobs. Cheap to clone (shared state).
#[derive(Clone)]
pub struct JobExecutionManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for JobExecutionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobExecutionManager")
            .field(
                "strategies",
                &self.inner.strategies.keys().collect::<Vec<_>>(),
            )
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A push to a job with no input feeds: the engine's own answer for a fixed input (one of
/// `fixed_inputs`, the job's input nodes' names: each took its value once), or for a name that
/// is no input of the job.
fn no_feeds(fixed_inputs: &[String], input: &str) -> Error {
    if fixed_inputs.iter().any(|n| n == input) {
        nodetool_engine::inputs::not_streamed(input)
    } else {
        Error::not_found(format!(
            "no input node named `{input}` (this job has no streamed inputs)"
        ))
        .with_context("input", input)
    }
}

fn not_found(job_id: &JobId) -> Error {
    Error::not_found("no such job")
        .with_operation("jobs.get")
        .with_context("job_id", job_id)
}

impl JobExecutionManager {
    /// Builds a manager and reconciles the store: jobs a previous process left `scheduled` or
    /// `running` are marked failed, and their leftover worker process groups are killed
    /// (containers are the Docker strategy's to reap, by label).
    pub async fn new(
        store: JobStore,
        strategies: Vec<Arc<dyn ExecutionStrategy>>,
        config: ManagerConfig,
    ) -> Result<Self> {
        if config.queue.is_some() && store.backend() != "postgres" {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                "JOB_EXECUTION=queue needs the job store on PostgreSQL (DATABASE_URL)",
            )
            .with_operation("jobs.start"));
        }
        let interrupted = store.reconcile_interrupted().await?;
        for job in &interrupted {
            tracing::warn!(job_id = %job.id, "marked failed: the runtime restarted while it ran");
            if let Some(WorkerRef::Pid(pid)) = job.worker {
                // Only if that pid is still this job's worker (pids are reused).
                crate::reap::reap_worker_group(pid, &job.id, job.created_at);
            }
        }
        // Idle warm workers of a previous process have no job record to name them.
        crate::reap::reap_leftover_warm_workers();
        let strategies = strategies.into_iter().map(|s| (s.name(), s)).collect();
        let event_log = match config.event_log {
            Some(cfg) => Some(EventLog::start(store.clone(), cfg).await),
            None => None,
        };
        let manager = Self {
            inner: Arc::new(Inner {
                event_log,
                store,
                strategies,
                scheduler: Scheduler::new(SchedulerLimits {
                    total: config.max_concurrent_jobs,
                    per_user: config.max_jobs_per_user,
                    queued_per_user: config.max_queued_jobs_per_user,
                }),
                config,
                live: Mutex::new(HashMap::new()),
                accepting: AtomicBool::new(true),
                owners: tokio_util::task::TaskTracker::new(),
                finished_observers: Mutex::default(),
                node_stats: Arc::default(),
                retained: Mutex::default(),
                sweeper: std::sync::Once::new(),
            }),
        };
        if let Some(queue) = manager.inner.config.queue {
            tokio::spawn(settle_leases(
                Arc::downgrade(&manager.inner),
                (queue.lease / 2).max(Duration::from_millis(200)),
                queue,
            ));
        }
        Ok(manager)
    }

    pub fn store(&self) -> &JobStore {
        &self.inner.store
    }

    pub fn strategies(&self) -> Vec<StrategyKind> {
        self.inner.strategies.keys().copied().collect()
    }

    /// The strategy a request gets: the one it names if the operator allows it, else the
    /// default (or, when the default is not allowed, the first allowed one).
    fn strategy_for(&self, requested: Option<StrategyKind>) -> Result<StrategyKind> {
        let allowed = &self.inner.config.allowed_strategies;
        let list = || {
            allowed
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match requested {
            Some(kind) if allowed.contains(&kind) => Ok(kind),
            Some(kind) => Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "execution_strategy {kind} is not allowed on this server \
                     (ALLOWED_STRATEGIES: {})",
                    list()
                ),
            )
            .with_operation("jobs.submit")),
            None => {
                let default = self.inner.config.default_strategy;
                if allowed.contains(&default) {
                    return Ok(default);
                }
                allowed.first().copied().ok_or_else(|| {
                    Error::new(
                        ErrorKind::PermissionDenied,
                        "no execution strategy is allowed on this server (ALLOWED_STRATEGIES)",
                    )
                    .with_operation("jobs.submit")
                })
            }
        }
    }

    fn live(&self, job_id: &JobId) -> Option<Arc<LiveJob>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
            .cloned()
    }

    /// Validates and starts a job for `user_id` (the authenticated user; the request's `user_id`
    /// is ignored) and returns its id. Validation problems are `InvalidInput`; an unavailable
    /// strategy is `Unsupported`; after shutdown, `Unavailable`.
    pub async fn submit(&self, request: RunJobRequest, user_id: &UserId) -> Result<JobId> {
        self.submit_with_secrets(request, user_id, Default::default())
            .await
    }

    /// [`submit`](Self::submit) with the secrets the job's nodes may read.
    pub async fn submit_with_secrets(
        &self,
        request: RunJobRequest,
        user_id: &UserId,
        secrets: std::collections::BTreeMap<String, String>,
    ) -> Result<JobId> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(
                Error::new(ErrorKind::Unavailable, "the job manager is shutting down")
                    .with_operation("jobs.submit")
                    .set_temporary(true),
            );
        }
        let valid = request.validate()?;
        let kind = self.strategy_for(valid.strategy)?;
        if let Some(queue) = self.inner.config.queue {
            return self.enqueue(request, valid, kind, user_id, queue).await;
        }
        self.inner
            .config
            .node_facts
            .check_vram(&valid.graph, self.inner.config.vram_gb)?;
        let strategy = self.inner.strategies.get(&kind).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("execution_strategy {kind} is not available in this runtime"),
            )
            .with_operation("jobs.submit")
        })?;
        // The operator's deadline is a ceiling: a request may only lower it.
        let limits = valid
            .resource_limits
            .cap_time(self.inner.config.default_timeout);
        let job_id = match valid.job_id {
            Some(id) => self.unused_job_id(id).await?,
            None => JobId::generate(),
        };
        let streaming_input_nodes = valid.streaming_inputs != Some(false)
            && self.inner.config.node_facts.any_streaming(&valid.graph);
        let spec = JobSpec {
            job_id,
            user_id: user_id.clone(),
            workflow_id: valid.workflow_id,
            graph: valid.graph,
            params: valid.params,
            resource_limits: limits,
            secrets,
            use_cache: valid.use_cache,
            streaming_inputs: valid.streaming_inputs == Some(true),
            streaming_input_nodes,
            docker_image: valid.docker_image,
            traceparent: valid.traceparent.map(|t| t.to_string()),
            pause: nodetool_engine::PauseGate::default(),
            pause_support: Default::default(),
        };
        // What the strategy would refuse (an image outside the allow-list) is the caller's
        // error now, not a failed job later.
        strategy.admit(&spec)?;
        // A free slot now means the job starts now: record it as running in the same insert,
        // saving one store write on the fast path. A full queue for this user is refused here.
        let permit = self.inner.scheduler.admit(&spec.user_id)?;
        let starts_now = matches!(permit, Admission::Now(_));
        let created_at = Utc::now();
        let record = JobRecord {
            id: spec.job_id.clone(),
            user_id: spec.user_id.clone(),
            workflow_id: spec.workflow_id.clone(),
            strategy: kind,
            status: if starts_now {
                Status::Running
            } else {
                Status::Scheduled
            },
            params: Value::Object(spec.params.clone()),
            created_at,
            started_at: starts_now.then_some(created_at),
            finished_at: None,
            error: None,
            result: None,
            worker: None,
        };
        self.inner.store.insert(&record).await?;
        let (tx, rx) = watch::channel(record);
        let live = Arc::new(LiveJob {
            user_id: spec.user_id.clone(),
            cancel: CancellationToken::new(),
            record: rx,
            hub: EventHub::new(
                self.inner.config.replay_events,
                self.inner.event_log.clone(),
                self.inner.node_stats.clone(),
            ),
            streaming: spec.has_input_feeds(),
            fixed_inputs: if spec.has_input_feeds() {
                Vec::new()
            } else {
                self.inner.config.node_facts.input_names(&spec.graph)
            },
            inputs: watch::Sender::new(None),
            pause: spec.pause.clone(),
            pause_support: spec.pause_support.clone(),
            ticket: match &permit {
                Admission::Queued(t) => Some(t.id()),
                Admission::Now(_) => None,
            },
        });
        let job_id = spec.job_id.clone();
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone(), live.clone());
        let inner = self.inner.clone();
        let span = crate::trace::job_span(&spec, strategy.name().as_str());
        self.inner
            .owners
            .spawn(owner(inner, strategy, spec, live, tx, permit).instrument(span));
        Ok(job_id)
    }

    /// Queue mode: writes the job `scheduled` with what a worker needs (no secrets: workers run
    /// jobs with their own settings) and returns its id; nothing runs here.
    async fn enqueue(
        &self,
        mut request: RunJobRequest,
        valid: crate::strategy::ValidRequest,
        kind: StrategyKind,
        user_id: &UserId,
        queue: QueueMode,
    ) -> Result<JobId> {
        let facts = &self.inner.config.node_facts;
        let streams = facts.fed(valid.streaming_inputs, &valid.graph);
        let job_id = match valid.job_id {
            Some(id) => self.unused_job_id(id).await?,
            None => JobId::generate(),
        };
        // The operator's deadline travels with the job (the worker applies its own as well).
        if let Some(limit) = self.inner.config.default_timeout {
            let limits = request.resource_limits.get_or_insert_with(Default::default);
            let cap = limit.as_secs_f64();
            limits.time_seconds = Some(limits.time_seconds.map_or(cap, |t| t.min(cap)));
        }
        let tags = request.worker_tags.clone().unwrap_or_default();
        let requires_vram_gb = facts.vram_need(&valid.graph).map(|(_, _, gb)| gb);
        // A job fed by a live stream cannot be run again faithfully: the values it took are gone.
        let idempotent = !streams && facts.all_idempotent(&valid.graph);
        request.job_id = Some(job_id.to_string());
        request.execution_strategy = Some(kind.as_str().to_owned());
        request.user_id = None;
        if let Some(tp) = crate::trace::traceparent_of(&tracing::Span::current()) {
            request.traceparent.get_or_insert(tp);
        }
        let record = JobRecord {
            id: job_id.clone(),
            user_id: user_id.clone(),
            workflow_id: valid.workflow_id,
            strategy: kind,
            status: Status::Scheduled,
            params: Value::Object(valid.params),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            error: None,
            result: None,
            worker: None,
        };
        let spec = crate::queue::QueuedSpec {
            version: crate::queue::QUEUE_SPEC_VERSION,
            user_id: user_id.clone(),
            request,
        };
        self.inner
            .store
            .enqueue(
                &record,
                &spec,
                &crate::queue::EnqueueOptions {
                    worker_tags: tags,
                    max_attempts: queue.max_attempts,
                    idempotent,
                    max_waiting_per_user: u32::try_from(self.inner.config.max_queued_jobs_per_user)
                        .ok(),
                    requires_vram_gb,
                },
            )
            .await?;
        tracing::info!(job_id = %job_id, strategy = kind.as_str(), idempotent, "job enqueued");
        Ok(job_id)
    }

    /// Deletes `user_id`'s ended job from the history: its record, its stored events and any
    /// copy still in memory. False if there is no such ended job (the caller checks first why).
    pub async fn delete_ended(&self, job_id: &JobId, user_id: &UserId) -> Result<bool> {
        let deleted = self.inner.store.delete_ended(job_id, user_id).await?;
        if deleted {
            self.inner
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(job_id);
        }
        Ok(deleted)
    }

    /// The job's record (live state if it is in memory, else the store). No side effects.
    pub async fn get(&self, job_id: &JobId) -> Result<Option<JobRecord>> {
        if let Some(live) = self.live(job_id) {
            return Ok(Some(live.record.borrow().clone()));
        }
        self.inner.store.get(job_id).await
    }

    /// A user's jobs, newest first (at most `limit`).
    pub async fn list(&self, user_id: &UserId, limit: u32) -> Result<Vec<JobRecord>> {
        let mut jobs = self.inner.store.list(user_id, limit).await?;
        // The store can trail the owner by one write; live state wins.
        for job in &mut jobs {
            if let Some(live) = self.live(&job.id) {
                *job = live.record.borrow().clone();
            }
        }
        Ok(jobs)
    }

    /// The owner of a live job (for authorization checks by callers).
    pub fn owner_of(&self, job_id: &JobId) -> Option<UserId> {
        self.live(job_id).map(|l| l.user_id.clone())
    }

    /// Asks a job to stop. Idempotent: `Ok(true)` if the job was still live (scheduled or
    /// running), `Ok(false)` if it had already ended, `NotFound` if there is no such job.
    pub async fn cancel(&self, job_id: &JobId) -> Result<bool> {
        match self.live(job_id) {
            Some(live) => {
                let ended = live.record.borrow().status.is_terminal();
                live.cancel.cancel();
                Ok(!ended)
            }
            None => {
                if self.inner.config.queue.is_some()
                    && self.inner.store.request_cancel(job_id).await?.is_some()
                {
                    return Ok(true);
                }
                match self.inner.store.get(job_id).await? {
                    Some(_) => Ok(false),
                    None => Err(not_found(job_id)),
                }
            }
        }
    }

    /// Pushes `value` into the streamed input `input` (on its output `handle`, `"output"` for the
    /// built-in inputs) of `user_id`'s job. Waits while the job is still being started and while
    /// the input's buffer is full (backpressure); any wait ends when the job does.
    ///
    /// Errors, none of which fails the job: no such job, or another user's → `NotFound`; a job
    /// that has ended → `Unavailable`; an unknown input or handle → `NotFound`; a wrong type, an
    /// input that is not streamed (it took its value once) or a stream already ended →
    /// `InvalidInput` (the engine's own rules; this manager answers them alike for a job with no
    /// input feeds at all).
    pub async fn stream_input(
        &self,
        job_id: &JobId,
        user_id: &UserId,
        input: &str,
        handle: &str,
        value: Value,
    ) -> Result<()> {
        if let Some(remote) = self.queued_elsewhere(job_id) {
            let control = JobControl::Input {
                input: input.to_owned(),
                handle: handle.to_owned(),
                value,
            };
            return remote.send(user_id, control, "jobs.stream_input").await;
        }
        let (live, inputs) = self
            .job_inputs(job_id, user_id, input, "jobs.stream_input")
            .await?;
        until_ended(
            &live,
            "jobs.stream_input",
            inputs.push(input, handle, value),
        )
        .await
    }

    /// Ends the stream of `input` on `handle` of `user_id`'s job: the input node finishes after
    /// the values pushed before, and downstream sees end-of-stream. Ending twice is harmless.
    /// Errors as for [`stream_input`](Self::stream_input).
    pub async fn end_input_stream(
        &self,
        job_id: &JobId,
        user_id: &UserId,
        input: &str,
        handle: &str,
    ) -> Result<()> {
        if let Some(remote) = self.queued_elsewhere(job_id) {
            let control = JobControl::EndInput {
                input: input.to_owned(),
                handle: handle.to_owned(),
            };
            return remote.send(user_id, control, "jobs.end_input_stream").await;
        }
        let (live, inputs) = self
            .job_inputs(job_id, user_id, input, "jobs.end_input_stream")
            .await?;
        until_ended(&live, "jobs.end_input_stream", inputs.end(input, handle)).await
    }

    /// The live job of `user_id` and its inputs, waiting for the strategy to start it.
    async fn job_inputs(
        &self,
        job_id: &JobId,
        user_id: &UserId,
        input: &str,
        op: &'static str,
    ) -> Result<(Arc<LiveJob>, Arc<dyn JobInputs>)> {
        let not_found = || not_found(job_id).with_operation(op);
        let Some(live) = self.live(job_id) else {
            return match self.inner.store.get(job_id).await? {
                Some(rec) if rec.user_id == *user_id => Err(elsewhere(job_id, op, rec.status)),
                _ => Err(not_found()),
            };
        };
        if live.user_id != *user_id {
            return Err(not_found());
        }
        if !live.streaming {
            return Err(no_feeds(&live.fixed_inputs, input)
                .with_operation(op)
                .with_context("job_id", job_id));
        }
        let mut slot = live.inputs.subscribe();
        let mut record = live.record.clone();
        let inputs = tokio::select! {
            biased;
            r = slot.wait_for(Option::is_some) => r.ok().and_then(|i| i.clone()),
            _ = record.wait_for(|r| r.status.is_terminal()) => None,
        };
        match inputs {
            Some(inputs) => Ok((live, inputs)),
            None => {
                let status = live.record.borrow().status;
                Err(ended(job_id, op, status))
            }
        }
    }

    /// Queue mode, for a job this process does not run: the way to its worker.
    fn queued_elsewhere<'a>(&'a self, job_id: &'a JobId) -> Option<RemoteJob<'a>> {
        (self.inner.config.queue.is_some() && self.live(job_id).is_none()).then_some(RemoteJob {
            manager: self,
            job_id,
        })
    }

    /// A client's job id, if no job (of any user: ids are global) has it yet; `AlreadyExists`
    /// otherwise. The store's primary key catches a race between two submits of one id.
    async fn unused_job_id(&self, id: JobId) -> Result<JobId> {
        if self.live(&id).is_some() || self.inner.store.get(&id).await?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("job_id {id} is already in use; send a new id for a new run"),
            )
            .with_operation("jobs.submit")
            .with_context("job_id", id));
        }
        Ok(id)
    }

    /// Pauses `user_id`'s job between node boundaries (`nodetool_engine::pause` has the
    /// semantics); it keeps its slot. `Ok(false)` when it was already paused. A queued job
    /// starts paused. Subprocess and Docker jobs pause when their worker can (it says so when it
    /// starts; a running job's answer is awaited for at most [`PAUSE_ANSWER_WAIT`]); a queued
    /// one whose worker turns out unable runs unpaused. Errors: no such job (or another user's)
    /// → `NotFound`; a job that has ended → `Unavailable`; a job whose worker cannot pause (an
    /// older `nodetool worker` or image) → `Unsupported`.
    pub async fn pause(&self, job_id: &JobId, user_id: &UserId) -> Result<bool> {
        if let Some(remote) = self.queued_elsewhere(job_id) {
            remote
                .send(user_id, JobControl::Pause, "jobs.pause")
                .await?;
            return Ok(true);
        }
        let live = self.controllable(job_id, user_id, "jobs.pause").await?;
        Ok(live.pause.pause())
    }

    /// Lets a paused job go on; `Ok(false)` when it was not paused. Errors as for
    /// [`pause`](Self::pause).
    pub async fn resume(&self, job_id: &JobId, user_id: &UserId) -> Result<bool> {
        if let Some(remote) = self.queued_elsewhere(job_id) {
            remote
                .send(user_id, JobControl::Resume, "jobs.resume")
                .await?;
            return Ok(true);
        }
        let live = self.controllable(job_id, user_id, "jobs.resume").await?;
        Ok(live.pause.resume())
    }

    /// Whether the job is live and paused.
    pub fn is_paused(&self, job_id: &JobId) -> bool {
        self.live(job_id)
            .is_some_and(|l| l.pause.is_paused() && !l.record.borrow().status.is_terminal())
    }

    /// The live, unfinished job of `user_id` that pause and resume act on.
    async fn controllable(
        &self,
        job_id: &JobId,
        user_id: &UserId,
        op: &'static str,
    ) -> Result<Arc<LiveJob>> {
        let Some(live) = self.live(job_id).filter(|l| l.user_id == *user_id) else {
            return match self.inner.store.get(job_id).await? {
                Some(rec) if rec.user_id == *user_id => Err(elsewhere(job_id, op, rec.status)),
                _ => Err(not_found(job_id).with_operation(op)),
            };
        };
        let (status, strategy) = {
            let r = live.record.borrow();
            (r.status, r.strategy)
        };
        if status.is_terminal() {
            return Err(ended(job_id, op, status));
        }
        // Threaded runs hold the gate themselves; a worker's run, when its worker can pause.
        if strategy == StrategyKind::Threaded {
            return Ok(live);
        }
        let mut supported = live.pause_support.get();
        if supported.is_none() && status == Status::Running {
            // The worker answers as it starts: a moment's wait gives a clear answer.
            let mut record = live.record.clone();
            tokio::select! {
                known = live.pause_support.known() => supported = Some(known),
                _ = record.wait_for(|r| r.status.is_terminal()) => {}
                _ = tokio::time::sleep(PAUSE_ANSWER_WAIT) => {}
            }
            let status = live.record.borrow().status;
            if status.is_terminal() {
                return Err(ended(job_id, op, status));
            }
        }
        match supported {
            // Unknown (still queued, or a worker slow to start): the request carries the gate's
            // state and the session catches a worker up once it answers.
            Some(true) | None => Ok(live),
            Some(false) => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "this {strategy} job's worker cannot pause: it is an older nodetool worker \
                     or image, from before pause control (rebuild the image with `nodetool \
                     docker build-image` to pause its jobs)"
                ),
            )
            .with_operation(op)
            .with_context("job_id", job_id)),
        }
    }

    /// Where a `scheduled` job stands among the jobs waiting for a slot (1: next), in the
    /// scheduler's fair order ([`Scheduler::position`]); `None` for a job that is not waiting.
    pub fn queue_position(&self, job_id: &JobId) -> Option<usize> {
        let live = self.live(job_id)?;
        if live.record.borrow().status != Status::Scheduled {
            return None;
        }
        self.inner.scheduler.position(&live.user_id, live.ticket?)
    }

    /// What the nodes of this manager's jobs cost, by node type, since it started.
    pub fn node_stats(&self) -> Vec<(String, crate::node_stats::NodeTotals)> {
        self.inner.node_stats.snapshot()
    }

    /// The seq of the newest event a live job has published (0: none yet); `None` once the job
    /// has left memory.
    pub fn last_seq(&self, job_id: &JobId) -> Option<u64> {
        let live = self.live(job_id)?;
        let st = live.hub.lock();
        Some(st.buffer.back().map_or(0, |e| e.seq))
    }

    /// Waits until the job has ended and returns its final record.
    pub async fn wait(&self, job_id: &JobId) -> Result<JobRecord> {
        if let Some(live) = self.live(job_id) {
            let mut rx = live.record.clone();
            let rec = rx
                .wait_for(|r| r.status.is_terminal())
                .await
                .map(|r| r.clone());
            if let Ok(rec) = rec {
                return Ok(rec);
            }
        }
        // Not live any more (or the owner is gone): the store has the last word. A job run by a
        // queue worker is waited for there.
        let mut wake = self
            .inner
            .config
            .queue
            .and_then(|_| self.inner.store.wakeups());
        loop {
            let rec = self
                .inner
                .store
                .get(job_id)
                .await?
                .ok_or_else(|| not_found(job_id))?;
            if rec.status.is_terminal() || self.inner.config.queue.is_none() {
                return Ok(rec);
            }
            crate::replay::wait_for_job(wake.as_mut(), job_id, FOLLOW_POLL).await;
        }
    }

    /// The job's events after `since_seq` (0: all kept), then live ones until the job ends.
    /// A job no longer in memory (finished long ago, or before a restart) is replayed from
    /// the store's event log, ending with its terminal `job_update` (made from its record when
    /// the log has none); a job the store does not know yields nothing. `NotFound` only when
    /// events are kept in memory only (`ManagerConfig::event_log` is `None`).
    pub fn subscribe(&self, job_id: &JobId, since_seq: u64) -> Result<JobEvents> {
        let Some(live) = self.live(job_id) else {
            if self.inner.event_log.is_none() {
                return Err(not_found(job_id));
            }
            let stored = if self.inner.config.queue.is_some() {
                // Run by a queue worker: follow the store while it runs.
                StoredEvents::following(self.inner.store.clone(), job_id)
            } else {
                StoredEvents::new(self.inner.store.clone(), job_id)
            };
            return Ok(JobEvents {
                hub: None,
                stored: Some(stored),
                backlog: VecDeque::new(),
                rx: None,
                last_seq: since_seq,
                catching_up: false,
            });
        };
        // Subscribe under the lock, so every event after the buffer's current end also reaches
        // `rx`; the replay is then read a batch at a time (overlaps are dropped by seq).
        let rx = live.hub.subscribe_live();
        Ok(JobEvents {
            hub: Some(live.hub.clone()),
            stored: None,
            backlog: VecDeque::new(),
            rx,
            last_seq: since_seq,
            catching_up: true,
        })
    }

    /// Calls `observer` with the final record of every job that finishes from now on (once per
    /// job, after its outcome is recorded), e.g. to feed metrics.
    pub fn on_finished(&self, observer: impl Fn(&JobRecord) + Send + Sync + 'static) {
        self.inner
            .finished_observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(observer));
    }

    /// Jobs currently in memory (scheduled, running, or recently finished).
    pub fn live_jobs(&self) -> Vec<JobId> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Stops accepting jobs, lets running ones finish for up to `grace`, cancels the rest and
    /// waits for their owners to record the outcome, then for their events to be written.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown_jobs(grace).await;
        // No job will start any more: what strategies keep ready (warm workers) goes now.
        for strategy in self.inner.strategies.values() {
            strategy.shutdown();
        }
        self.flush_events().await;
    }

    /// Waits until every event published so far is in the store (a no-op without an event log).
    pub async fn flush_events(&self) {
        if let Some(log) = &self.inner.event_log {
            log.flush().await;
        }
    }

    async fn shutdown_jobs(&self, grace: Duration) {
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.owners.close();
        if tokio::time::timeout(grace, self.inner.owners.wait())
            .await
            .is_err()
        {
            let live: Vec<Arc<LiveJob>> = self
                .inner
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            for job in live {
                job.cancel.cancel();
            }
            self.inner.owners.wait().await;
        }
    }
}

/// A job that is not in this process: ended, or (queue mode) running on a worker.
/// A queued job run by a worker elsewhere: controls reach it through the queue's store.
struct RemoteJob<'a> {
    manager: &'a JobExecutionManager,
    job_id: &'a JobId,
}

impl RemoteJob<'_> {
    /// Checks what this process can (the job is `user_id`'s, live, and for an input: that the
    /// job streams its inputs), then queues `control` for the job's worker, waiting while
    /// [`crate::queue::MAX_PENDING_CONTROLS`] are waiting already. The engine's own checks of
    /// an input (its handle, the value's type) happen on the worker, which logs a refusal.
    async fn send(&self, user_id: &UserId, control: JobControl, op: &'static str) -> Result<()> {
        let store = &self.manager.inner.store;
        let job_id = self.job_id;
        let rec = store
            .get(job_id)
            .await?
            .filter(|r| r.user_id == *user_id)
            .ok_or_else(|| not_found(job_id).with_operation(op))?;
        if rec.status.is_terminal() {
            return Err(ended(job_id, op, rec.status));
        }
        if let JobControl::Input { input, .. } | JobControl::EndInput { input, .. } = &control {
            let spec = store
                .queued_spec(job_id)
                .await?
                .ok_or_else(|| elsewhere(job_id, op, rec.status))?;
            let valid = spec.request.validate()?;
            let facts = &self.manager.inner.config.node_facts;
            if !facts.fed(valid.streaming_inputs, &valid.graph) {
                return Err(no_feeds(&facts.input_names(&valid.graph), input)
                    .with_operation(op)
                    .with_context("job_id", job_id));
            }
        }
        loop {
            match store.push_control(job_id, &control).await? {
                ControlPush::Pushed => return Ok(()),
                ControlPush::Full => tokio::time::sleep(CONTROL_RETRY).await,
                ControlPush::Ended => {
                    let status = store
                        .get(job_id)
                        .await?
                        .map_or(Status::Failed, |r| r.status);
                    return Err(ended(job_id, op, status));
                }
            }
        }
    }
}

/// How often a sender waiting on a job's full control queue tries again.
const CONTROL_RETRY: Duration = Duration::from_millis(20);

fn elsewhere(job_id: &JobId, op: &'static str, status: Status) -> Error {
    if status.is_terminal() {
        return ended(job_id, op, status);
    }
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "job {job_id} is not run by this process (another server's job, or one whose \
             process stopped): streamed inputs, pause and resume reach a job through the \
             process running it, or through the queue with JOB_EXECUTION=queue"
        ),
    )
    .with_operation(op)
    .with_context("job_id", job_id)
}

/// Queue mode: settles expired leases every `every` while the manager lives, and reports (then,
/// past the claim timeout, fails) waiting jobs no live worker can take.
async fn settle_leases(inner: std::sync::Weak<Inner>, every: Duration, queue: QueueMode) {
    let mut reported = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.store.expire_leases().await {
            Ok(expired) => {
                for e in expired {
                    tracing::warn!(job_id = %e.job_id, status = e.status.as_str(),
                        "a queue worker's lease expired");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot settle expired job leases"),
        }
        // Workers heartbeat their registration every third of the lease: live = within one.
        match inner
            .store
            .settle_unclaimable(queue.lease, queue.claim_timeout, queue.max_events_per_job)
            .await
        {
            Ok(found) => {
                let waiting: std::collections::HashSet<JobId> =
                    found.iter().map(|u| u.job_id.clone()).collect();
                for u in found {
                    if u.failed {
                        tracing::warn!(job_id = %u.job_id, reason = %u.reason,
                            "failed a queued job no live worker could take");
                    } else if reported.insert(u.job_id.clone()) {
                        tracing::warn!(job_id = %u.job_id, reason = %u.reason,
                            timeout_seconds = queue.claim_timeout.as_secs(),
                            "a queued job waits with no live worker able to take it");
                    }
                }
                reported.retain(|id| waiting.contains(id));
            }
            Err(error) => tracing::warn!(%error, "cannot check for unclaimable queued jobs"),
        }
    }
}

fn ended(job_id: &JobId, op: &'static str, status: Status) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("job {job_id} is no longer running ({})", status.as_str()),
    )
    .with_operation(op)
    .with_context("job_id", job_id)
    .set_temporary(false)
}

/// Runs an input call, giving up with `Unavailable` when the job ends first (a strategy whose
/// run was abandoned may never answer).
async fn until_ended(
    live: &LiveJob,
    op: &'static str,
    call: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let mut record = live.record.clone();
    tokio::select! {
        biased;
        r = call => r,
        _ = record.wait_for(|r| r.status.is_terminal()) => {
            let (id, status) = {
                let r = live.record.borrow();
                (r.id.clone(), r.status)
            };
            Err(ended(&id, op, status))
        }
    }
}

/// Attempts at writing a job's outcome before it is reported as not recorded.
const FINISH_ATTEMPTS: u32 = 5;

/// [`JobStore::finish`], retried with backoff (100 ms, doubling: about 1.5 s in all).
async fn record_outcome(
    store: &JobStore,
    job_id: &JobId,
    status: Status,
    error: Option<&str>,
    result: Option<&Value>,
    at: chrono::DateTime<Utc>,
) -> Result<bool> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match store.finish(job_id, status, error, result, at).await {
            Ok(written) => return Ok(written),
            Err(e) if attempt < FINISH_ATTEMPTS => {
                tracing::warn!(job_id = %job_id, attempt, error = %e, "cannot record the job's outcome; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The one writer of a job's record.
async fn owner(
    inner: Arc<Inner>,
    strategy: Arc<dyn ExecutionStrategy>,
    spec: JobSpec,
    live: Arc<LiveJob>,
    record: watch::Sender<JobRecord>,
    permit: Admission,
) {
    let job_id = spec.job_id.clone();
    let workflow_id = spec.workflow_id.clone();
    let outcome = run_owned(&inner, strategy, spec, &live, &record, permit).await;

    // If nothing reached the sink's terminal event (never started, or the strategy broke its
    // contract), close the stream with one.
    let tracking = crate::sink::TrackingSink::new(job_id.clone(), live.hub.clone());
    if !live.hub.has_terminal() {
        // The tracking sink numbers its event after the last one seen.
        let last = live.hub.lock().buffer.back().cloned();
        if let Some(e) = last {
            tracking.observe(&e);
        }
        tracking.finish(&workflow_id, &outcome);
    }

    let now = Utc::now();
    let mut status = outcome.status;
    let mut error = outcome.error_text();
    let mut result =
        (outcome.status == Status::Completed).then(|| Value::Object(outcome.result.clone()));
    // The terminal event waits for a durable record: an outcome the store would not take is
    // reported as what it is, never as the `completed` nobody can read back.
    let mut unrecorded = false;
    if let Err(e) = record_outcome(
        &inner.store,
        &job_id,
        status,
        error.as_deref(),
        result.as_ref(),
        now,
    )
    .await
    {
        tracing::error!(job_id = %job_id, error = %e, status = status.as_str(),
            "the job's outcome could not be recorded; reporting it failed (unavailable)");
        let text = format!(
            "unavailable: the job's outcome ({}) could not be recorded in the job store: {}; \
             its result is lost",
            status.as_str(),
            e
        );
        // A smaller write (no result) may still fit; then the record agrees with the client.
        if let Err(e) = inner
            .store
            .finish(&job_id, Status::Failed, Some(&text), None, now)
            .await
        {
            tracing::error!(job_id = %job_id, error = %e, "cannot record the job as failed either");
        }
        status = Status::Failed;
        error = Some(text);
        result = None;
        unrecorded = true;
    }
    record.send_modify(|r| {
        if !r.status.is_terminal() {
            r.status = status;
            r.error = error;
            r.result = result;
            r.finished_at = Some(now);
        }
    });
    // Observers first, so a client reacting to the terminal event sees their effect.
    let observers = inner
        .finished_observers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !observers.is_empty() {
        let last = record.borrow().clone();
        for observe in observers {
            observe(&last);
        }
    }
    // Only now, with the outcome recorded, do clients see the terminal event.
    live.hub.release_and_close(&record.borrow(), unrecorded);

    // Keep the finished job (and its replay buffer) around for late readers, then forget it.
    retain_finished(&inner, job_id);
}

/// Keeps a finished job in `live` for `retain_finished`, and at most `max_retained_finished` of
/// them: one queue and one sweeper task for all jobs (a sleeping task per job cost ~15 KiB
/// each under load, docs/bench/exec.md).
fn retain_finished(inner: &Arc<Inner>, job_id: JobId) {
    let retain = inner.config.retain_finished;
    let forget_now = {
        let mut retained = inner.retained.lock().unwrap_or_else(|p| p.into_inner());
        retained.push_back((tokio::time::Instant::now() + retain, job_id));
        let excess = retained
            .len()
            .saturating_sub(inner.config.max_retained_finished);
        retained
            .drain(..excess)
            .map(|(_, id)| id)
            .collect::<Vec<_>>()
    };
    forget(inner, forget_now);
    inner.sweeper.call_once(|| {
        let weak = Arc::downgrade(inner);
        // Deadlines are in finishing order (one `retain` for all), so the front is the next.
        let tick = retain.clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = tokio::time::Instant::now();
                let due = {
                    let mut retained = inner.retained.lock().unwrap_or_else(|p| p.into_inner());
                    let n = retained.iter().take_while(|(at, _)| *at <= now).count();
                    retained.drain(..n).map(|(_, id)| id).collect::<Vec<_>>()
                };
                forget(&inner, due);
            }
        });
    });
}

fn forget(inner: &Inner, jobs: Vec<JobId>) {
    if jobs.is_empty() {
        return;
    }
    let mut live = inner.live.lock().unwrap_or_else(|p| p.into_inner());
    for id in jobs {
        live.remove(&id);
    }
}

async fn run_owned(
    inner: &Arc<Inner>,
    strategy: Arc<dyn ExecutionStrategy>,
    mut spec: JobSpec,
    live: &Arc<LiveJob>,
    record: &watch::Sender<JobRecord>,
    permit: Admission,
) -> JobOutcome {
    let job_id = spec.job_id.clone();
    // A worker's spans are children of this job's span (when spans are exported).
    if let Some(own) = crate::trace::traceparent_of(&tracing::Span::current()) {
        spec.traceparent = Some(own);
    }
    let _slot = match permit {
        // Recorded as running at submit.
        Admission::Now(slot) => slot,
        Admission::Queued(ticket) => {
            // Wait for a slot as `scheduled`; a cancel meanwhile ends the job without running it
            // (and gives its place in the queue up).
            let p = tokio::select! {
                p = ticket.wait() => match p {
                    Ok(p) => p,
                    Err(e) => return JobOutcome::failed(crate::strategy::JobError::new(
                        e.kind(),
                        e.to_string(),
                    )),
                },
                _ = live.cancel.cancelled() => return JobOutcome::cancelled(),
            };
            let now = Utc::now();
            if let Err(e) = inner.store.mark_running(&job_id, now).await {
                tracing::error!(job_id = %job_id, error = %e, "cannot record the job as running");
            }
            record.send_modify(|r| {
                r.status = Status::Running;
                r.started_at = Some(now);
            });
            p
        }
    };
    let mut handle = match strategy.start(spec, live.hub.clone()).await {
        Ok(h) => h,
        Err(e) => {
            return JobOutcome::failed(crate::strategy::JobError::new(
                e.kind(),
                format!(
                    "cannot start the job with the {} strategy: {e}",
                    strategy.name()
                ),
            ))
        }
    };
    live.inputs.send_replace(handle.inputs().cloned());
    if let Some(worker) = handle.worker().cloned() {
        if let Err(e) = inner.store.set_worker(&job_id, &worker).await {
            tracing::error!(job_id = %job_id, error = %e, "cannot record the job's worker");
        }
        record.send_modify(|r| r.worker = Some(worker));
    }
    // The user's cancel reaches the strategy from here (no relay task per job).
    let cancel = handle.cancel_token();
    let wait = handle.wait();
    tokio::pin!(wait);
    let mut outcome = tokio::select! {
        outcome = &mut wait => outcome,
        () = live.cancel.cancelled() => {
            cancel.cancel();
            wait.await
        }
    };
    // A cancelled job stays cancelled, whatever the strategy saw while it stopped.
    if live.cancel.is_cancelled() && outcome.status != Status::Completed {
        outcome.status = Status::Cancelled;
        outcome.error = None;
    }
    outcome
}
