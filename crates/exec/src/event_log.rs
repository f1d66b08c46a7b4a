//! [`EventLog`]: writes every job's events to the job store in batches, so a finished job's
//! replay (`Last-Event-ID`, `/ws reconnect_job`) survives a restart.
//!
//! The hub hands each event to [`EventLog::record`], which only queues it: one writer task
//! drains the queue and inserts whatever has accumulated in one transaction (up to
//! [`BATCH`] rows), so a job publishing events never waits for a commit, and the faster a job
//! emits, the larger the batches. Each job keeps its latest `max_per_job` events. A queue that
//! grows past [`MAX_PENDING`] (the database is stuck) drops events, counted in a warning; a
//! failed batch is retried, then dropped with an error in the log: replay then has a gap that
//! clients see as a `lag` notice, never a silent hole.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nodetool_engine::EventEnvelope;
use tokio::sync::{mpsc, oneshot};

use crate::store::JobStore;

/// Events written in one transaction at most.
pub const BATCH: usize = 2048;
/// Events waiting for the writer at most; more are dropped (and counted).
pub const MAX_PENDING: usize = 262_144;
/// How long the writer waits for more events before it writes what it has.
const LINGER: Duration = Duration::from_millis(5);
/// Attempts at writing one batch.
const ATTEMPTS: u32 = 4;

/// What the event log keeps (from `JOB_EVENTS_MAX_PER_JOB` and `JOB_EVENT_RETENTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLogConfig {
    /// The latest events of one job that are kept.
    pub max_per_job: u64,
    /// How long the events of a finished job are kept.
    pub retention: Duration,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        Self {
            max_per_job: 10_000,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl EventLogConfig {
    pub fn from_settings(settings: &nodetool_config::Settings) -> Self {
        Self {
            max_per_job: settings.database.job_events_max_per_job,
            retention: settings.database.job_event_retention,
        }
    }
}

enum Msg {
    Event(Box<EventEnvelope>),
    Flush(oneshot::Sender<()>),
}

/// The queue into the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    tx: mpsc::UnboundedSender<Msg>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Event(e) => write!(f, "Event({}, {})", e.job_id, e.seq),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl EventLog {
    /// Removes the events of jobs that finished more than `config.retention` ago, then starts
    /// the writer task and the hourly expiry on the current runtime. Both end when every clone
    /// of the log is dropped.
    pub async fn start(store: JobStore, config: EventLogConfig) -> Self {
        expire(&store, config.retention).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        tokio::spawn(writer(
            store.clone(),
            config,
            rx,
            pending.clone(),
            dropped.clone(),
        ));
        let log = Self {
            tx,
            pending,
            dropped,
        };
        tokio::spawn(expire_loop(store, config.retention, log.tx.downgrade()));
        log
    }

    /// Queues `event` for the store; never waits.
    pub fn record(&self, event: &EventEnvelope) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if self.tx.send(Msg::Event(Box::new(event.clone()))).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits until every event queued before this call has been written (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Acquire)
    }
}

async fn writer(
    store: JobStore,
    config: EventLogConfig,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
) {
    let mut batch: Vec<EventEnvelope> = Vec::with_capacity(BATCH);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut reported_drops = 0;
    while let Some(first) = rx.recv().await {
        // Lingers up to LINGER for more (unless a flush waits or the batch is full): jobs
        // back to back then share one commit instead of each taking the write lock.
        let until = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        loop {
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Event(e) => batch.push(*e),
                    // Everything queued before the flush is in `batch` now.
                    Msg::Flush(w) => waiters.push(w),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !waiters.is_empty() || batch.len() >= BATCH {
                break;
            }
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(msg)) => next = Some(msg),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            write_batch(&store, config.max_per_job, &batch).await;
            batch.clear();
            pending.fetch_sub(n, Ordering::AcqRel);
        }
        let drops = dropped.load(Ordering::Acquire);
        if drops > reported_drops {
            tracing::warn!(
                dropped = drops - reported_drops,
                "job events not persisted: the event log's queue was full"
            );
            reported_drops = drops;
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

async fn write_batch(store: &JobStore, max_per_job: u64, batch: &[EventEnvelope]) {
    let rows: Vec<(String, u64, String)> = batch
        .iter()
        .filter_map(|e| match serde_json::to_string(e) {
            Ok(text) => Some((e.job_id.clone(), e.seq, text)),
            Err(error) => {
                tracing::error!(job_id = %e.job_id, seq = e.seq, %error, "cannot serialize a job event");
                None
            }
        })
        .collect();
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        match store.append_events(&rows, max_per_job.max(1)).await {
            Ok(()) => return,
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, events = rows.len(), "writing job events failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                tracing::error!(%error, events = rows.len(),
                    "job events not persisted: their replay after a restart will have a gap");
            }
        }
    }
}

/// Removes the events of jobs that finished more than `retention` ago, at start and hourly,
/// until the log is dropped.
async fn expire_loop(store: JobStore, retention: Duration, alive: mpsc::WeakUnboundedSender<Msg>) {
    let every = Duration::from_secs(3600);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        expire(&store, retention).await;
    }
}

async fn expire(store: &JobStore, retention: Duration) {
    // A retention too long for a date means "keep forever".
    let Some(before) = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
    else {
        return;
    };
    match store.expire_events(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "expired the events of old jobs"),
        Err(error) => tracing::warn!(%error, "cannot expire old job events"),
    }
}
