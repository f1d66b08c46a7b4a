//! [`QueueWorker`]: what `nodetool work` runs. Claims queued jobs in batches
//! ([`JobStore::claim`]), runs each on a local [`JobExecutionManager`] (the same strategies,
//! scheduler and event hub as a server's own jobs), and writes its events and outcome back to
//! the queue's store, every write fenced by the job's lease (see [`crate::queue`]).

use std::sync::Arc;
use std::time::Duration;

use nodetool_core::{JobId, Result, UserId};
use nodetool_engine::{Event, Status};
use tokio::task::JoinSet;

use crate::manager::JobExecutionManager;
use crate::queue::{
    ClaimFilter, ClaimedJob, JobControl, Lease, Wakeup, WorkerInfo, QUEUE_SPEC_VERSION,
};
use crate::store::JobStore;

/// `nodetool work`'s knobs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id in `lease_owner` (unique per process).
    pub owner: String,
    /// Jobs run at once (and claimed per batch at most).
    pub concurrency: usize,
    pub filter: ClaimFilter,
    /// The lease taken per job, renewed every third of it.
    pub lease: Duration,
    /// Re-check the queue this often without a `NOTIFY`.
    pub poll: Duration,
    /// Events kept per job (`JOB_EVENTS_MAX_PER_JOB`).
    pub max_per_job: u64,
    /// Events written per transaction at most, and how long an event may wait for its batch.
    pub batch: usize,
    pub batch_delay: Duration,
}

impl WorkerConfig {
    pub fn new(owner: String, concurrency: usize, filter: ClaimFilter, lease: Duration) -> Self {
        Self {
            owner,
            concurrency: concurrency.max(1),
            filter,
            lease,
            poll: Duration::from_millis(500),
            max_per_job: 10_000,
            batch: crate::event_log::BATCH,
            batch_delay: Duration::from_millis(20),
        }
    }
}

/// Claims and runs queued jobs until told to stop.
#[derive(Debug, Clone)]
pub struct QueueWorker {
    store: JobStore,
    local: JobExecutionManager,
    config: Arc<WorkerConfig>,
}

impl QueueWorker {
    /// `store` is the queue (PostgreSQL); `local` runs the jobs (its own store is this process's
    /// bookkeeping only, e.g. an in-memory SQLite, with no event log).
    pub fn new(store: JobStore, local: JobExecutionManager, config: WorkerConfig) -> Self {
        Self {
            store,
            local,
            config: Arc::new(config),
        }
    }

    /// Runs until `stop` resolves; then claims nothing more and returns once the jobs it holds
    /// have ended (the caller shuts `local` down to bound that).
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let mut wake = self.store.wakeups();
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut failures = 0u32;
        // In the registry while it runs: servers tell a job no live worker can take from one
        // that waits for a free worker (see `JobStore::settle_unclaimable`).
        let me = WorkerInfo {
            id: self.config.owner.clone(),
            tags: self.config.filter.tags.clone(),
            strategies: self.config.filter.strategies.clone(),
            spec_version: QUEUE_SPEC_VERSION,
            binary_version: env!("CARGO_PKG_VERSION").to_owned(),
            vram_gb: self.config.filter.vram_gb,
        };
        let register_every = (self.config.lease / 3).max(Duration::from_millis(100));
        let mut registered: Option<tokio::time::Instant> = None;
        let mut settled: Option<tokio::time::Instant> = None;
        tracing::info!(owner = %self.config.owner, concurrency = self.config.concurrency,
            strategies = ?self.config.filter.strategies, tags = ?self.config.filter.tags,
            max_per_user = ?self.config.filter.max_per_user,
            max_running = ?self.config.filter.max_running,
            "queue worker started");
        loop {
            while jobs.try_join_next().is_some() {}
            if registered.is_none_or(|at| at.elapsed() >= register_every) {
                match self.store.register_worker(&me).await {
                    Ok(()) => registered = Some(tokio::time::Instant::now()),
                    Err(error) => tracing::warn!(%error, "cannot register in queue_workers"),
                }
            }
            // Settling expired leases is every worker's and every server's, a third of a lease
            // apart at most; not per wake-up: each enqueue wakes every worker, and an expiry
            // pass per worker per job made the database's work per job grow with the workers.
            if settled.is_none_or(|at| at.elapsed() >= register_every) {
                settled = Some(tokio::time::Instant::now());
                if let Err(error) = self.store.expire_leases().await {
                    tracing::warn!(%error, "cannot settle expired job leases");
                }
            }
            let free = self.config.concurrency.saturating_sub(jobs.len());
            let mut full_batch = false;
            if free > 0 {
                match self
                    .store
                    .claim(
                        &self.config.owner,
                        &self.config.filter,
                        u32::try_from(free).unwrap_or(u32::MAX),
                        self.config.lease,
                    )
                    .await
                {
                    Ok(claimed) => {
                        failures = 0;
                        full_batch = claimed.len() == free;
                        for job in claimed {
                            tracing::info!(job_id = %job.lease.job_id, attempt = job.attempt,
                                "claimed a job");
                            let this = self.clone();
                            jobs.spawn(async move { this.run_claimed(job).await });
                        }
                    }
                    Err(error) => {
                        // PostgreSQL down or restarting: claiming pauses, then resumes.
                        failures = failures.saturating_add(1);
                        tracing::warn!(%error, "cannot claim jobs; retrying");
                    }
                }
            }
            if full_batch && jobs.len() < self.config.concurrency {
                continue;
            }
            let backoff = if failures > 0 {
                Duration::from_millis(200 * u64::from(failures.min(25)))
            } else {
                self.config.poll
            };
            tokio::select! {
                _ = &mut stop => break,
                _ = crate::replay::wait_for_wakeup(wake.as_mut(), backoff, |w| *w == Wakeup::Queue) => {}
                Some(_) = jobs.join_next() => {}
            }
        }
        tracing::info!(
            running = jobs.len(),
            "queue worker stopping: claiming no more jobs"
        );
        while jobs.join_next().await.is_some() {}
        if let Err(error) = self.store.unregister_worker(&self.config.owner).await {
            tracing::warn!(%error, "cannot leave queue_workers; the entry ages out");
        }
        Ok(())
    }

    async fn run_claimed(&self, job: ClaimedJob) {
        let lease = job.lease.clone();
        let id = lease.job_id.clone();
        let offset = job.seq_offset;
        let spec = match job.spec() {
            Ok(spec) => spec,
            Err(why) => {
                tracing::error!(job_id = %id, %why, "cannot run the queued job");
                self.fail(&lease, offset, &why).await;
                return;
            }
        };
        let mut request = spec.request;
        request.job_id = Some(id.to_string());
        // A retry landing on this worker again: forget the earlier run's local copy.
        let _ = self.local.delete_ended(&id, &spec.user_id).await;
        if let Err(e) = self.local.submit(request, &spec.user_id).await {
            if e.kind() == nodetool_core::ErrorKind::Unavailable {
                // Shutting down (or out of room for now): another worker takes it.
                tracing::info!(job_id = %id, error = %e, "giving the job back to the queue");
                if let Err(error) = self.store.release(&lease).await {
                    tracing::warn!(job_id = %id, %error, "cannot give the job back; its lease will expire");
                }
                return;
            }
            let why = format!("worker {} cannot run this job: {e}", self.config.owner);
            tracing::error!(job_id = %id, error = %e, "cannot start the queued job");
            self.fail(&lease, offset, &why).await;
            return;
        }
        let mut events = match self.local.subscribe(&id, 0) {
            Ok(ev) => ev,
            Err(e) => {
                let _ = self.local.cancel(&id).await;
                self.fail(&lease, offset, &format!("cannot follow the job: {e}"))
                    .await;
                return;
            }
        };
        let beat_every = (self.config.lease / 3).max(Duration::from_millis(100));
        // Streamed inputs, pause and resume sent to any server reach the job through the queue;
        // applied beside the loop below, which must never wait on the job's input buffer.
        let _controls = AbortOnDrop(tokio::spawn(apply_controls(
            self.store.clone(),
            self.local.clone(),
            id.clone(),
            spec.user_id.clone(),
            beat_every,
        )));
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(self.config.batch_delay);
        let mut batch: Vec<(u64, String)> = Vec::new();
        let mut cancel_sent = false;
        let lost = loop {
            tokio::select! {
                biased;
                _ = beat.tick() => match self.store.renew_lease(&lease, self.config.lease).await {
                    Ok(Some(true)) if !cancel_sent => {
                        tracing::info!(job_id = %id, "cancel requested; cancelling");
                        cancel_sent = true;
                        let _ = self.local.cancel(&id).await;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break true,
                    // The lease may still hold; the fenced writes tell.
                    Err(error) => tracing::warn!(job_id = %id, %error, "cannot renew the job's lease"),
                },
                _ = flush.tick(), if !batch.is_empty() => {
                    match self.store.append_events_fenced(&lease, &batch, self.config.max_per_job).await {
                        Ok(true) => batch.clear(),
                        Ok(false) => break true,
                        // Kept, and tried again with the next batch.
                        Err(error) => tracing::warn!(job_id = %id, %error, "cannot write the job's events"),
                    }
                }
                next = events.next() => match next {
                    Some(mut e) => {
                        let terminal = matches!(&e.event, Event::JobUpdate(u) if u.status.is_terminal());
                        e.seq += offset;
                        match serde_json::to_string(&e) {
                            Ok(text) => batch.push((e.seq, text)),
                            Err(error) => tracing::error!(job_id = %id, %error, "cannot serialize a job event"),
                        }
                        if terminal {
                            break false;
                        }
                        if batch.len() >= self.config.batch {
                            flush.reset_immediately();
                        }
                    }
                    None => break false,
                },
            }
        };
        if lost {
            tracing::warn!(job_id = %id, "lost the job's lease (it expired); stopping it, writing nothing more");
            let _ = self.local.cancel(&id).await;
            return;
        }
        let record = match self.local.wait(&id).await {
            Ok(r) => r,
            Err(e) => {
                self.fail(
                    &lease,
                    offset,
                    &format!("the job's local record is lost: {e}"),
                )
                .await;
                return;
            }
        };
        // The outcome and the last events (the terminal one) in one fenced transaction, retried
        // while the database is unreachable; a lost lease ends the attempt.
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=8 {
            match self
                .store
                .finish_fenced(
                    &lease,
                    record.status,
                    record.error.as_deref(),
                    record.result.as_ref(),
                    &batch,
                    self.config.max_per_job,
                )
                .await
            {
                Ok(true) => {
                    tracing::info!(job_id = %id, status = record.status.as_str(), "job finished");
                    return;
                }
                Ok(false) => {
                    tracing::warn!(job_id = %id, "the job's lease was lost before its outcome was written");
                    return;
                }
                Err(error) => {
                    tracing::warn!(job_id = %id, attempt, %error, "cannot write the job's outcome; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::error!(job_id = %id, "the job's outcome could not be written; its lease will expire");
    }

    /// Fails a claimed job this worker cannot run, with its one terminal event.
    async fn fail(&self, lease: &Lease, offset: u64, why: &str) {
        let rows = crate::queue::failed_event(&lease.job_id, offset + 1, why);
        if let Err(error) = self
            .store
            .finish_fenced(
                lease,
                Status::Failed,
                Some(why),
                None,
                &rows,
                self.config.max_per_job,
            )
            .await
        {
            tracing::error!(job_id = %lease.job_id, %error, "cannot record the job as failed");
        }
    }
}

/// Aborts its task when dropped (on every way out of a job's run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Controls applied per read at most.
const CONTROLS_PER_READ: i64 = 64;

/// Applies the job's [`JobControl`]s, in order, through the local manager, as they arrive (a
/// `NOTIFY`, or a read every `poll`), deleting each batch once applied. What the local manager
/// refuses (a wrong type, an unknown handle) is the engine's answer: logged here, on the
/// machine that ran the job; the job goes on.
async fn apply_controls(
    store: JobStore,
    local: JobExecutionManager,
    id: JobId,
    user: UserId,
    poll: Duration,
) {
    let mut wake = store.wakeups();
    let mut after = 0i64;
    loop {
        let rows = match store.controls_after(&id, after, CONTROLS_PER_READ).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(job_id = %id, %error, "cannot read the job's controls");
                Vec::new()
            }
        };
        let full = rows.len() as i64 == CONTROLS_PER_READ;
        for (seq, text) in &rows {
            after = *seq;
            let control: JobControl = match serde_json::from_str(text) {
                Ok(c) => c,
                Err(error) => {
                    tracing::error!(job_id = %id, seq, %error, "unreadable job control; skipped");
                    continue;
                }
            };
            let applied = match control {
                JobControl::Input {
                    input,
                    handle,
                    value,
                } => local.stream_input(&id, &user, &input, &handle, value).await,
                JobControl::EndInput { input, handle } => {
                    local.end_input_stream(&id, &user, &input, &handle).await
                }
                JobControl::Pause => local.pause(&id, &user).await.map(drop),
                JobControl::Resume => local.resume(&id, &user).await.map(drop),
            };
            if let Err(error) = applied {
                tracing::warn!(job_id = %id, seq, %error, "a control sent to the job was refused");
            }
        }
        if !rows.is_empty() {
            if let Err(error) = store.ack_controls(&id, after).await {
                tracing::warn!(job_id = %id, %error, "cannot forget the job's applied controls");
            }
        }
        if !full {
            crate::replay::wait_for_wakeup(
                wake.as_mut(),
                poll,
                |w| matches!(w, Wakeup::Control(j) if *j == id),
            )
            .await;
        }
    }
}
