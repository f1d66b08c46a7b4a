//! The durable job queue on PostgreSQL (`JOB_EXECUTION=queue`): servers enqueue, `nodetool
//! work` processes claim and run.
//!
//! Invariants (the queue tests in `tests/test_job_queue.rs` and the CLI's `queue_workers` check
//! them against a real PostgreSQL):
//! - a job is claimed by one worker at a time: [`JobStore::claim`] takes `scheduled` rows with
//!   `FOR UPDATE SKIP LOCKED` and, in the same statement, makes them `running` with a fresh
//!   lease (owner, random token, expiry on the database's clock);
//! - every write of a claimed job — heartbeat, events, outcome — names the lease token and is
//!   refused once the lease has moved on (expired and re-claimed or failed): a worker whose lease
//!   expired cannot write a terminal status or a late event;
//! - a worker's outcome and its terminal event are one transaction, so a follower that sees the
//!   record terminal finds every event stored;
//! - a lease that expires (its worker died or was cut off) either puts the job back to
//!   `scheduled` (an idempotent job with attempts left) or fails it with [`WORKER_LOST`] naming
//!   the worker; a retried run's events
//!   continue the seq after the last stored one, so followers see one stream with one terminal
//!   event;
//! - a cancel marks the row (`cancel_requested`): a job nobody claimed yet is cancelled at once,
//!   a claimed one by its worker at its next heartbeat;
//! - per-user and total limits ([`ClaimFilter`]) hold across every claimer: a limited claim
//!   counts live-lease running rows and takes new ones under one advisory lock;
//! - a waiting job no live worker (`queue_workers`) can take is reported, then failed with a
//!   message naming what it needs and what the workers offer ([`JobStore::settle_unclaimable`]).
//!
//! Secrets never enter the queue: a worker runs each job with its own settings (provider keys,
//! storage credentials), as a server runs its jobs today.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgPool;
use tokio::sync::broadcast;

use nodetool_core::{Error, ErrorKind, JobId, Result, UserId};
use nodetool_engine::Status;

use crate::store::{db_err, micros, seq_param, Db, JobRecord, JobStore};
use crate::strategy::RunJobRequest;

/// `NOTIFY` channel: payload = a job id whose events or record changed.
pub const EVENTS_CHANNEL: &str = "nodetool_job_events";
/// `NOTIFY` channel: a job was enqueued (or put back), workers may claim.
pub const QUEUE_CHANNEL: &str = "nodetool_job_queue";
/// `NOTIFY` channel: payload = a job id with new [`JobControl`]s for its worker.
pub const CONTROLS_CHANNEL: &str = "nodetool_job_controls";
/// [`JobControl`]s a queued job may have waiting for its worker; a sender past it waits
/// ([`ControlPush::Full`]), as a local job's full input buffer makes it wait.
pub const MAX_PENDING_CONTROLS: i64 = 256;
/// The error of a job whose worker's lease expired with no attempts left.
pub const WORKER_LOST: &str =
    "worker lost: the worker running this job stopped renewing its lease (it died or was cut off)";
/// The version of [`QueuedSpec`] this binary writes and reads; a worker refuses a newer one.
pub const QUEUE_SPEC_VERSION: u32 = 1;

/// What a worker needs to run a queued job: the request as the server validated it (its
/// `job_id` and `execution_strategy` filled in), for the user it was accepted for. No secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedSpec {
    pub version: u32,
    pub user_id: UserId,
    pub request: RunJobRequest,
}

/// A command for a queued job from any server, applied in order by the worker running it
/// (through that worker's own manager, so the engine's rules answer it there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobControl {
    /// `stream_input`: a value on the input node `input`'s `handle`.
    Input {
        input: String,
        handle: String,
        value: Value,
    },
    /// `end_input_stream`.
    EndInput {
        input: String,
        handle: String,
    },
    Pause,
    Resume,
}

/// What [`JobStore::push_control`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPush {
    Pushed,
    /// [`MAX_PENDING_CONTROLS`] are waiting: try again once the worker applied some.
    Full,
    /// The job is not a live queued job (ended, or unknown).
    Ended,
}

/// A claimed job's lease: every write of the job names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: JobId,
    pub token: String,
}

/// A job [`JobStore::claim`] handed to this worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub lease: Lease,
    /// The stored spec (JSON text); see [`ClaimedJob::spec`].
    pub spec_text: Option<String>,
    /// 1 for the first run.
    pub attempt: u32,
    /// The highest event seq already stored (an earlier attempt's): this run's seqs follow it.
    pub seq_offset: u64,
}

impl ClaimedJob {
    /// The spec, or why this worker cannot run it (missing, unreadable, or newer than it knows).
    pub fn spec(&self) -> std::result::Result<QueuedSpec, String> {
        parse_spec(self.spec_text.as_deref())
    }
}

fn parse_spec(text: Option<&str>) -> std::result::Result<QueuedSpec, String> {
    let text = text.ok_or("the queued job has no spec")?;
    let raw: Value =
        serde_json::from_str(text).map_err(|e| format!("unreadable queued spec: {e}"))?;
    let version = raw.get("version").and_then(Value::as_u64).unwrap_or(0);
    if version > u64::from(QUEUE_SPEC_VERSION) {
        return Err(format!(
            "the job was queued by a newer nodetool (queue spec version {version}; this worker \
             reads up to {QUEUE_SPEC_VERSION}): upgrade the worker"
        ));
    }
    serde_json::from_value(raw).map_err(|e| format!("unreadable queued spec: {e}"))
}

/// Which queued jobs a worker takes.
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// Strategies it runs (a job's `strategy` must be one).
    pub strategies: Vec<String>,
    /// Its tags: a job's `worker_tags` must all be among them.
    pub tags: Vec<String>,
    /// `MAX_JOBS_PER_USER` across the cluster: a user with this many running jobs (rows with a
    /// live lease, on any worker) gets no more claimed until one ends.
    pub max_per_user: Option<u32>,
    /// `JOB_QUEUE_MAX_RUNNING`: running queued jobs across the cluster at most.
    pub max_running: Option<u32>,
    /// `NODETOOL_VRAM_GB` of this worker: it takes no job whose VRAM need is larger (`None`:
    /// needs are not checked).
    pub vram_gb: Option<f64>,
}

/// A live `nodetool work` process, as it registers itself in `queue_workers`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub strategies: Vec<String>,
    /// The [`QUEUE_SPEC_VERSION`] it reads up to.
    pub spec_version: u32,
    /// Its binary's version (`CARGO_PKG_VERSION`), for the operator.
    pub binary_version: String,
    /// The GPU memory it offers (`NODETOOL_VRAM_GB`); `None`: not checked.
    pub vram_gb: Option<f64>,
}

/// A waiting job that no live worker can take (its tags, strategy or spec version offered by
/// none), as [`JobStore::settle_unclaimable`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclaimable {
    pub job_id: JobId,
    /// Why, naming what the job needs and what the live workers offer.
    pub reason: String,
    /// Failed now (it waited past the claim timeout); else it still waits.
    pub failed: bool,
}

/// How [`JobStore::enqueue`] queues a job.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Route the job: a worker must offer every one.
    pub worker_tags: Vec<String>,
    /// Runs at most (at least 1).
    pub max_attempts: u32,
    /// Every node may run twice harmlessly: only then is the job run again after a lost
    /// worker.
    pub idempotent: bool,
    /// `MAX_QUEUED_JOBS_PER_USER` across the cluster: with this many of the user's jobs
    /// waiting, a new one is `RateLimited` (with a `retry_after` context).
    pub max_waiting_per_user: Option<u32>,
    /// The largest VRAM hint of the job's nodes: only a worker offering that much (or not
    /// checking) claims it.
    pub requires_vram_gb: Option<f64>,
}

/// Namespace of the per-user advisory lock that makes [`EnqueueOptions::max_waiting_per_user`]
/// exact under concurrent submissions (the second key is the user id's hash).
const WAITING_LOCK: i32 = 0x6e74_7177; // "ntqw"

/// Serializes limited claims (`pg_advisory_xact_lock` key): counting running jobs and taking
/// new ones must be one step across all claimers, or two workers could each see room for one.
const CLAIM_LOCK: i64 = 0x006e_7471_5f63_6c6d; // "ntq_clm"

/// Both claims' last step: the `picked` rows become `running` under a fresh lease token, and
/// each comes back with its spec and the seq its events continue from.
macro_rules! take_picked {
    () => {
        "UPDATE jobs j SET status = 'running', started_at = COALESCE(j.started_at, now()), \
         attempts = j.attempts + 1, lease_owner = $1, \
         lease_token = md5(random()::text || clock_timestamp()::text || j.id), \
         lease_expires_at = now() + make_interval(secs => $5) \
         FROM picked WHERE j.id = picked.id \
         RETURNING j.id, j.spec::text, j.lease_token, j.attempts, \
         (SELECT COALESCE(MAX(seq), 0) FROM job_events e WHERE e.job_id = j.id)"
    };
}

/// The claim with no limits: the oldest waiting jobs first, straight off the waiting index
/// (the fast path). `$1` owner, `$2` strategies, `$3` tags, `$4` limit, `$5` lease seconds,
/// `$8` the spec version this binary reads, `$9` the worker's VRAM (`$6`, `$7`, the limits,
/// unused here).
const CLAIM_ANY: &str = concat!(
    "WITH picked AS ( \
       SELECT id FROM jobs \
       WHERE queued AND status = 'scheduled' AND NOT cancel_requested \
         AND strategy = ANY($2) AND worker_tags <@ $3 \
         AND COALESCE((spec->>'version')::int, 0) <= $8 \
         AND ($9::float8 IS NULL OR requires_vram_gb IS NULL OR requires_vram_gb <= $9) \
       ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) ",
    take_picked!()
);

/// The claim under limits (run holding [`CLAIM_LOCK`]): counts each user's running jobs with a
/// live lease, ranks each user's waiting jobs oldest first, and takes them round-robin across
/// users while `$6` (per user) and `$7` (in total) leave room.
const CLAIM_LIMITED: &str = concat!(
    "WITH live AS ( \
       SELECT user_id, count(*) AS n FROM jobs \
       WHERE queued AND status = 'running' AND lease_expires_at > now() \
       GROUP BY user_id), \
     waiting AS ( \
       SELECT id, user_id, created_at, \
         row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) AS rank \
       FROM jobs \
       WHERE queued AND status = 'scheduled' AND NOT cancel_requested \
         AND strategy = ANY($2) AND worker_tags <@ $3 \
         AND COALESCE((spec->>'version')::int, 0) <= $8 \
         AND ($9::float8 IS NULL OR requires_vram_gb IS NULL OR requires_vram_gb <= $9)), \
     allowed AS ( \
       SELECT w.id FROM waiting w LEFT JOIN live l ON l.user_id = w.user_id \
       WHERE w.rank <= $4 \
         AND ($6::bigint IS NULL OR COALESCE(l.n, 0) + w.rank <= $6) \
       ORDER BY w.rank, w.created_at, w.id \
       LIMIT GREATEST(0, LEAST($4, \
         COALESCE($7::bigint - (SELECT COALESCE(sum(n), 0) FROM live)::bigint, $4::bigint)))), \
     picked AS ( \
       SELECT id FROM jobs \
       WHERE id IN (SELECT id FROM allowed) \
         AND queued AND status = 'scheduled' AND NOT cancel_requested \
       FOR UPDATE SKIP LOCKED) ",
    take_picked!()
);

/// What a `LISTEN` connection heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// A job's events or record changed.
    Job(String),
    /// Work was enqueued.
    Queue,
    /// A job has new [`JobControl`]s.
    Control(String),
    /// The listener (re)connected: anything may have happened meanwhile.
    Reconnected,
}

/// A lease expiry's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub job_id: JobId,
    /// `scheduled` (retried) or terminal.
    pub status: Status,
}

fn unsupported(op: &'static str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "the job queue needs PostgreSQL (DATABASE_URL): SQLite keeps one process's jobs",
    )
    .with_operation(op)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(0.001)
}

impl JobStore {
    fn pg(&self, op: &'static str) -> Result<&PgPool> {
        match &self.db {
            Db::Postgres(pool) => Ok(pool),
            Db::Sqlite(_) => Err(unsupported(op)),
        }
    }

    /// Writes a `scheduled` job for the queue (workers wake through `NOTIFY`). `record` must be
    /// `scheduled`; `worker_tags` route it; `max_attempts` (at least 1) bounds its runs, and
    /// only an `idempotent` job (every node safe to run twice) is run again after a lost worker.
    pub async fn enqueue(
        &self,
        record: &JobRecord,
        spec: &QueuedSpec,
        options: &EnqueueOptions,
    ) -> Result<()> {
        let EnqueueOptions {
            worker_tags,
            max_attempts,
            idempotent,
            max_waiting_per_user,
            requires_vram_gb,
        } = options;
        let pool = self.pg("jobs.enqueue")?;
        let err = db_err("jobs.enqueue");
        let spec = serde_json::to_string(spec).map_err(|e| {
            Error::new(ErrorKind::Unexpected, "cannot serialize the queued spec")
                .with_operation("jobs.enqueue")
                .with_source(e)
        })?;
        let mut tx = pool.begin().await.map_err(&err)?;
        if let Some(max) = max_waiting_per_user {
            // One user's submissions to every server count one after another.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(WAITING_LOCK)
                .bind(record.user_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM jobs WHERE user_id = $1 AND queued AND status = 'scheduled'",
            )
            .bind(record.user_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(&err)?;
            if waiting >= i64::from(*max) {
                let retry = crate::scheduler::RETRY_AFTER_SECS;
                return Err(Error::new(
                    ErrorKind::RateLimited,
                    format!(
                        "too many jobs waiting: this user has {waiting} queued on the cluster \
                         (the limit, MAX_QUEUED_JOBS_PER_USER, is {max}); retry after {retry} s"
                    ),
                )
                .with_operation("jobs.submit")
                .with_context("retry_after", retry)
                .set_temporary(true));
            }
        }
        sqlx::query(
            "INSERT INTO jobs (id, user_id, workflow_id, strategy, status, params, created_at, \
             queued, spec, worker_tags, max_attempts, idempotent, requires_vram_gb) \
             VALUES ($1, $2, $3, $4, 'scheduled', $5::json, $6, TRUE, $7::json, $8, $9, $10, $11)",
        )
        .bind(record.id.as_str())
        .bind(record.user_id.as_str())
        .bind(&record.workflow_id)
        .bind(record.strategy.as_str())
        .bind(record.params.to_string())
        .bind(micros(record.created_at))
        .bind(&spec)
        .bind(worker_tags)
        .bind(i32::try_from((*max_attempts).max(1)).unwrap_or(i32::MAX))
        .bind(idempotent)
        .bind(requires_vram_gb)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => Error::new(
                ErrorKind::AlreadyExists,
                format!("job_id {} is already in use", record.id),
            )
            .with_operation("jobs.enqueue"),
            _ => err(e),
        })?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUE_CHANNEL)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)
    }

    /// Claims up to `limit` waiting jobs for `owner` that `filter` allows, each with a lease of
    /// `lease`: the oldest first, or, under limits, round-robin across users (each user's
    /// oldest first) so one user's backlog does not hold the others'. Concurrent claimers never get the same job (`SKIP LOCKED`);
    /// cancelled-before-claim jobs and jobs queued by a newer nodetool (spec version above
    /// [`QUEUE_SPEC_VERSION`]) are not taken. With `filter.max_per_user` or `max_running`, the
    /// running jobs are counted and the new ones taken under one transaction-scoped advisory
    /// lock, so claimers racing on several machines never exceed the limits together.
    pub async fn claim(
        &self,
        owner: &str,
        filter: &ClaimFilter,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pool = self.pg("jobs.claim")?;
        let err = db_err("jobs.claim");
        let limited = filter.max_per_user.is_some() || filter.max_running.is_some();
        let mut tx = pool.begin().await.map_err(&err)?;
        if limited {
            // Held until commit: the next claimer's statement sees this one's claims.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
        }
        let sql = if limited { CLAIM_LIMITED } else { CLAIM_ANY };
        let rows: Vec<(String, Option<String>, String, i32, i64)> = sqlx::query_as(sql)
            .bind(owner)
            .bind(&filter.strategies)
            .bind(&filter.tags)
            .bind(i64::from(limit))
            .bind(secs(lease))
            .bind(filter.max_per_user.map(i64::from))
            .bind(filter.max_running.map(i64::from))
            .bind(i32::try_from(QUEUE_SPEC_VERSION).unwrap_or(i32::MAX))
            .bind(filter.vram_gb)
            .fetch_all(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(rows
            .into_iter()
            .map(|(id, spec, token, attempt, offset)| ClaimedJob {
                // Our own row.
                lease: Lease {
                    job_id: JobId::from_trusted(id),
                    token,
                },
                spec_text: spec,
                attempt: u32::try_from(attempt).unwrap_or(1),
                seq_offset: u64::try_from(offset).unwrap_or(0),
            })
            .collect())
    }

    /// Extends a lease by `lease` from now. `Some(cancel_requested)` while the lease holds;
    /// `None` once it is lost (the worker must stop the job and write nothing more).
    pub async fn renew_lease(&self, lease: &Lease, duration: Duration) -> Result<Option<bool>> {
        let pool = self.pg("jobs.renew_lease")?;
        let row: Option<(bool,)> = sqlx::query_as(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) \
             WHERE id = $1 AND lease_token = $2 AND status = 'running' \
             RETURNING cancel_requested",
        )
        .bind(lease.job_id.as_str())
        .bind(&lease.token)
        .bind(secs(duration))
        .fetch_optional(pool)
        .await
        .map_err(db_err("jobs.renew_lease"))?;
        Ok(row.map(|(c,)| c))
    }

    /// Appends a claimed job's events (`(seq, envelope JSON)`), fenced by its lease: false
    /// (nothing written) when the lease is no longer the job's. Trims to `max_per_job`.
    pub async fn append_events_fenced(
        &self,
        lease: &Lease,
        events: &[(u64, String)],
        max_per_job: u64,
    ) -> Result<bool> {
        let pool = self.pg("job_events.append")?;
        let err = db_err("job_events.append");
        let mut tx = pool.begin().await.map_err(&err)?;
        // FOR SHARE: an expiry (FOR UPDATE SKIP LOCKED) passes this row over until we commit.
        let held: Option<(i32,)> = sqlx::query_as(
            "SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2 AND status = 'running' \
             FOR SHARE",
        )
        .bind(lease.job_id.as_str())
        .bind(&lease.token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&err)?;
        if held.is_none() {
            return Ok(false);
        }
        insert_events(&mut tx, &lease.job_id, events, max_per_job).await?;
        tx.commit().await.map_err(&err)?;
        Ok(true)
    }

    /// Writes a claimed job's outcome and its last events (the terminal one among them) in one
    /// transaction, fenced by its lease: false (nothing written) when the lease is lost.
    pub async fn finish_fenced(
        &self,
        lease: &Lease,
        status: Status,
        error: Option<&str>,
        result: Option<&Value>,
        events: &[(u64, String)],
        max_per_job: u64,
    ) -> Result<bool> {
        let pool = self.pg("jobs.finish")?;
        let err = db_err("jobs.finish");
        let mut tx = pool.begin().await.map_err(&err)?;
        let done = sqlx::query(
            "UPDATE jobs SET status = $3, error = $4, result = $5::json, finished_at = now(), \
             lease_expires_at = NULL \
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(lease.job_id.as_str())
        .bind(&lease.token)
        .bind(status.as_str())
        .bind(error)
        .bind(result.map(Value::to_string))
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_events(&mut tx, &lease.job_id, events, max_per_job).await?;
        // Controls nobody will apply now (sent as the job ended).
        sqlx::query("DELETE FROM job_controls WHERE job_id = $1")
            .bind(lease.job_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(true)
    }

    /// Gives a claimed job back to the queue untouched (this worker is stopping before it
    /// started it): `scheduled` again, this attempt not counted. False when the lease is lost.
    pub async fn release(&self, lease: &Lease) -> Result<bool> {
        let pool = self.pg("jobs.release")?;
        let err = db_err("jobs.release");
        let mut tx = pool.begin().await.map_err(&err)?;
        let done = sqlx::query(
            "UPDATE jobs SET status = 'scheduled', attempts = GREATEST(attempts - 1, 0), \
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(lease.job_id.as_str())
        .bind(&lease.token)
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUE_CHANNEL)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(true)
    }

    /// A cancel from any server: marks a live queued job. A job no worker holds is cancelled
    /// at once; a claimed one by its worker at its next heartbeat. `Some(previous status)` for
    /// a job that was live, `None` for an ended or unknown one.
    pub async fn request_cancel(&self, id: &JobId) -> Result<Option<Status>> {
        let pool = self.pg("jobs.cancel")?;
        let err = db_err("jobs.cancel");
        let mut tx = pool.begin().await.map_err(&err)?;
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE jobs SET cancel_requested = TRUE \
             WHERE id = $1 AND queued AND status IN ('scheduled', 'running') RETURNING status",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(&err)?;
        let Some((status,)) = row else {
            return Ok(None);
        };
        let status = crate::store::parse_status(&status)?;
        if status == Status::Scheduled {
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', finished_at = now() \
                 WHERE id = $1 AND status = 'scheduled'",
            )
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        }
        notify_job(&mut tx, id).await?;
        tx.commit().await.map_err(&err)?;
        Ok(Some(status))
    }

    /// Settles the jobs whose lease has expired: an idempotent job goes back to `scheduled`
    /// while attempts remain; otherwise it is `failed` with [`WORKER_LOST`], naming the lost
    /// worker (and, for a job not retried because of its nodes, saying so); `cancelled` if a
    /// cancel was asked. Safe to run from every process at once (`SKIP LOCKED`, and each row
    /// changes once).
    pub async fn expire_leases(&self) -> Result<Vec<Expired>> {
        let pool = self.pg("jobs.expire_leases")?;
        let err = db_err("jobs.expire_leases");
        let mut tx = pool.begin().await.map_err(&err)?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "WITH lost AS ( \
               SELECT id FROM jobs WHERE queued AND status = 'running' \
                 AND lease_expires_at < now() FOR UPDATE SKIP LOCKED) \
             UPDATE jobs j SET \
               status = CASE WHEN j.cancel_requested THEN 'cancelled' \
                             WHEN j.idempotent AND j.attempts < j.max_attempts THEN 'scheduled' \
                             ELSE 'failed' END, \
               error = CASE WHEN j.cancel_requested \
                              OR (j.idempotent AND j.attempts < j.max_attempts) THEN j.error \
                            ELSE $1 || ' [worker ' || COALESCE(j.lease_owner, '?') || \
                              ', attempt ' || j.attempts || ' of ' || j.max_attempts || ']' || \
                              CASE WHEN j.idempotent THEN '' ELSE \
                                '; not retried: some of its nodes are not idempotent (side \
                                 effects such as writes, HTTP calls or provider calls)' END \
                            END, \
               finished_at = CASE WHEN j.cancel_requested \
                                    OR NOT (j.idempotent AND j.attempts < j.max_attempts) \
                                  THEN now() ELSE NULL END, \
               lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             FROM lost WHERE j.id = lost.id RETURNING j.id, j.status",
        )
        .bind(WORKER_LOST)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, status) in rows {
            let id = JobId::from_trusted(id);
            notify_job(&mut tx, &id).await?;
            let status = crate::store::parse_status(&status)?;
            if status == Status::Scheduled {
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(QUEUE_CHANNEL)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            out.push(Expired { job_id: id, status });
        }
        tx.commit().await.map_err(&err)?;
        Ok(out)
    }

    /// Registers (or refreshes) a live worker: called at its start and then as its heartbeat.
    pub async fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        let pool = self.pg("queue_workers.register")?;
        sqlx::query(
            "INSERT INTO queue_workers (id, tags, strategies, spec_version, binary_version, \
               vram_gb) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET tags = $2, strategies = $3, spec_version = $4, \
               binary_version = $5, vram_gb = $6, heartbeat_at = now()",
        )
        .bind(&worker.id)
        .bind(&worker.tags)
        .bind(&worker.strategies)
        .bind(i32::try_from(worker.spec_version).unwrap_or(i32::MAX))
        .bind(&worker.binary_version)
        .bind(worker.vram_gb)
        .execute(pool)
        .await
        .map_err(db_err("queue_workers.register"))
        .map(drop)
    }

    /// A worker that stops cleanly leaves the registry at once (a killed one ages out).
    pub async fn unregister_worker(&self, id: &str) -> Result<()> {
        let pool = self.pg("queue_workers.unregister")?;
        sqlx::query("DELETE FROM queue_workers WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map_err(db_err("queue_workers.unregister"))
            .map(drop)
    }

    /// The workers whose last heartbeat is within `live` (oldest registration first).
    pub async fn live_workers(&self, live: Duration) -> Result<Vec<WorkerInfo>> {
        let pool = self.pg("queue_workers.list")?;
        let rows: Vec<WorkerRow> = sqlx::query_as(
            "SELECT id, tags, strategies, spec_version, binary_version, vram_gb FROM queue_workers \
             WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY started_at, id",
        )
        .bind(secs(live))
        .fetch_all(pool)
        .await
        .map_err(db_err("queue_workers.list"))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, tags, strategies, v, binary_version, vram_gb)| WorkerInfo {
                    id,
                    tags,
                    strategies,
                    spec_version: u32::try_from(v).unwrap_or(0),
                    binary_version,
                    vram_gb,
                },
            )
            .collect())
    }

    /// Finds waiting jobs that no worker live within `live` can take (strategy, tags or spec
    /// version offered by none). Those waiting longer than `timeout` are failed, with one
    /// terminal event, by an error naming what they need and what the live workers offer; the
    /// others are returned for the caller to report. Safe from every process at once (each
    /// failure is a guarded `scheduled` → `failed` update, which a claim would have won).
    pub async fn settle_unclaimable(
        &self,
        live: Duration,
        timeout: Duration,
        max_per_job: u64,
    ) -> Result<Vec<Unclaimable>> {
        let pool = self.pg("jobs.settle_unclaimable")?;
        let err = db_err("jobs.settle_unclaimable");
        let rows: Vec<WaitingRow> = sqlx::query_as(
            "SELECT j.id, j.strategy, j.worker_tags, COALESCE((j.spec->>'version')::int, 0), \
               j.created_at < now() - make_interval(secs => $2), j.requires_vram_gb \
             FROM jobs j \
             WHERE j.queued AND j.status = 'scheduled' AND NOT j.cancel_requested \
               AND NOT EXISTS (SELECT 1 FROM queue_workers w \
                 WHERE w.heartbeat_at > now() - make_interval(secs => $1) \
                   AND j.strategy = ANY(w.strategies) AND j.worker_tags <@ w.tags \
                   AND COALESCE((j.spec->>'version')::int, 0) <= w.spec_version \
                   AND (w.vram_gb IS NULL OR j.requires_vram_gb IS NULL \
                        OR j.requires_vram_gb <= w.vram_gb)) \
             ORDER BY j.created_at LIMIT 100",
        )
        .bind(secs(live))
        .bind(timeout.as_secs_f64())
        .fetch_all(pool)
        .await
        .map_err(&err)?;
        // Rows of workers gone for long are dropped (a killed worker never unregisters).
        sqlx::query(
            "DELETE FROM queue_workers \
             WHERE heartbeat_at < now() - make_interval(secs => $1) - interval '1 hour'",
        )
        .bind(secs(live))
        .execute(pool)
        .await
        .map_err(&err)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let workers = self.live_workers(live).await?;
        let offered = describe_workers(&workers);
        let mut out = Vec::with_capacity(rows.len());
        for (id, strategy, tags, version, overdue, vram) in rows {
            let id = JobId::from_trusted(id);
            let vram = vram.map_or(String::new(), |gb| format!(", {gb} GB of VRAM"));
            let reason = format!(
                "no live worker can take this job: it needs strategy {strategy}, worker_tags [{}]{vram} \
                 and queue spec version {version}; {offered}",
                tags.join(", ")
            );
            let failed = overdue && self.fail_waiting(&id, &reason, max_per_job).await?;
            if overdue && !failed {
                continue; // claimed or cancelled meanwhile
            }
            if !failed {
                self.note_waiting(&id, &reason, max_per_job).await?;
            }
            out.push(Unclaimable {
                job_id: id,
                reason,
                failed,
            });
        }
        Ok(out)
    }

    /// Tells the followers of a job still `scheduled` why it waits: a `job_update` (status
    /// `scheduled`, `message` = `why`), once per distinct reason (`jobs.waiting_reason`), at the
    /// next seq, which a worker's claim then continues after.
    async fn note_waiting(&self, id: &JobId, why: &str, max_per_job: u64) -> Result<()> {
        self.settle_waiting(
            id,
            why,
            max_per_job,
            "UPDATE jobs j SET waiting_reason = $2 \
             WHERE j.id = $1 AND j.queued AND j.status = 'scheduled' \
               AND j.waiting_reason IS DISTINCT FROM $2 \
             RETURNING (SELECT COALESCE(MAX(seq), 0) FROM job_events e WHERE e.job_id = j.id)",
            |seq| job_update_event(id, seq, Status::Scheduled, Some(why), None),
        )
        .await
        .map(drop)
    }

    /// Fails a job still `scheduled` with `why` and its one terminal event; false if it is no
    /// longer waiting.
    async fn fail_waiting(&self, id: &JobId, why: &str, max_per_job: u64) -> Result<bool> {
        self.settle_waiting(
            id,
            why,
            max_per_job,
            "UPDATE jobs j SET status = 'failed', error = $2, finished_at = now() \
             WHERE j.id = $1 AND j.queued AND j.status = 'scheduled' \
             RETURNING (SELECT COALESCE(MAX(seq), 0) FROM job_events e WHERE e.job_id = j.id)",
            |seq| failed_event(id, seq, why),
        )
        .await
    }

    /// Runs `update` (`$1` the job id, `$2` why; it returns the job's last stored seq) and, when
    /// it changed the row, stores `event(next seq)` in the same transaction.
    async fn settle_waiting(
        &self,
        id: &JobId,
        why: &str,
        max_per_job: u64,
        update: &'static str,
        event: impl FnOnce(u64) -> Vec<(u64, String)>,
    ) -> Result<bool> {
        let pool = self.pg("jobs.settle_unclaimable")?;
        let err = db_err("jobs.settle_unclaimable");
        let mut tx = pool.begin().await.map_err(&err)?;
        let changed: Option<(i64,)> = sqlx::query_as(update)
            .bind(id.as_str())
            .bind(why)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&err)?;
        let Some((last,)) = changed else {
            return Ok(false);
        };
        let rows = event(u64::try_from(last).unwrap_or(0) + 1);
        insert_events(&mut tx, id, &rows, max_per_job).await?;
        tx.commit().await.map_err(&err)?;
        Ok(true)
    }

    /// Sends `control` to the worker of the live queued job `id` (any server may): stored for
    /// it in order and announced on [`CONTROLS_CHANNEL`]. Not stored when the job has ended or
    /// [`MAX_PENDING_CONTROLS`] are already waiting (the answer says which).
    pub async fn push_control(&self, id: &JobId, control: &JobControl) -> Result<ControlPush> {
        let pool = self.pg("jobs.control")?;
        let err = db_err("jobs.control");
        let text = serde_json::to_string(control).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("unserializable control: {e}"),
            )
            .with_operation("jobs.control")
        })?;
        let mut tx = pool.begin().await.map_err(&err)?;
        let row: Option<(String, Option<i64>)> = sqlx::query_as(
            "WITH job AS (SELECT status FROM jobs WHERE id = $1 AND queued), \
                  ins AS (INSERT INTO job_controls (job_id, control) \
                    SELECT $1, $2 FROM job \
                    WHERE job.status IN ('scheduled', 'running') \
                      AND (SELECT count(*) FROM job_controls WHERE job_id = $1) < $3 \
                    RETURNING seq) \
             SELECT (SELECT status FROM job), (SELECT seq FROM ins) FROM job",
        )
        .bind(id.as_str())
        .bind(&text)
        .bind(MAX_PENDING_CONTROLS)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&err)?;
        let pushed = match row {
            None => ControlPush::Ended,
            Some((status, _)) if crate::store::parse_status(&status)?.is_terminal() => {
                ControlPush::Ended
            }
            Some((_, None)) => ControlPush::Full,
            Some((_, Some(_))) => ControlPush::Pushed,
        };
        if pushed == ControlPush::Pushed {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CONTROLS_CHANNEL)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)?;
        Ok(pushed)
    }

    /// The controls of `id` after `after` (a seq; 0: all), oldest first, at most `limit`.
    pub async fn controls_after(
        &self,
        id: &JobId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let pool = self.pg("jobs.controls")?;
        sqlx::query_as(
            "SELECT seq, control FROM job_controls WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(id.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(db_err("jobs.controls"))
    }

    /// Forgets the controls of `id` up to `upto` (applied).
    pub async fn ack_controls(&self, id: &JobId, upto: i64) -> Result<()> {
        let pool = self.pg("jobs.controls")?;
        sqlx::query("DELETE FROM job_controls WHERE job_id = $1 AND seq <= $2")
            .bind(id.as_str())
            .bind(upto)
            .execute(pool)
            .await
            .map_err(db_err("jobs.controls"))
            .map(drop)
    }

    /// The spec a queued job was enqueued with (`None`: no such queued job).
    pub async fn queued_spec(&self, id: &JobId) -> Result<Option<QueuedSpec>> {
        let pool = self.pg("jobs.spec")?;
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT spec::text FROM jobs WHERE id = $1 AND queued")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(db_err("jobs.spec"))?;
        let Some((text,)) = row else {
            return Ok(None);
        };
        parse_spec(text.as_deref())
            .map(Some)
            .map_err(|why| Error::new(ErrorKind::Unexpected, why).with_operation("jobs.spec"))
    }

    /// Whether `id` is a queued job (run by workers, not by the process that accepted it).
    pub async fn is_queued(&self, id: &JobId) -> Result<bool> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(false);
        };
        let row: Option<(bool,)> = sqlx::query_as("SELECT queued FROM jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_err("jobs.get"))?;
        Ok(row.is_some_and(|(q,)| q))
    }

    /// This process's `LISTEN` wake-ups (one connection, shared; reconnects with backoff);
    /// `None` on SQLite. Callers poll as well: a wake-up is a hint, never the only signal.
    pub fn wakeups(&self) -> Option<broadcast::Receiver<Wakeup>> {
        let Db::Postgres(pool) = &self.db else {
            return None;
        };
        let tx = self.wakeups.get_or_init(|| {
            let (tx, _) = broadcast::channel(4096);
            tokio::spawn(listen(pool.clone(), tx.clone()));
            tx
        });
        Some(tx.subscribe())
    }
}

/// A waiting job as `settle_unclaimable` reads it: id, strategy, tags, spec version, overdue,
/// VRAM need.
type WaitingRow = (String, String, Vec<String>, i32, bool, Option<f64>);

/// A `queue_workers` row: id, tags, strategies, spec version, binary version, VRAM.
type WorkerRow = (String, Vec<String>, Vec<String>, i32, String, Option<f64>);

/// What the live workers offer, for an unclaimable job's message.
fn describe_workers(workers: &[WorkerInfo]) -> String {
    if workers.is_empty() {
        return "no worker is live (start `nodetool work` with DATABASE_URL)".to_owned();
    }
    let each: Vec<String> = workers
        .iter()
        .map(|w| {
            format!(
                "{} (strategies {}; tags [{}]; {}queue spec version {}; nodetool {})",
                w.id,
                w.strategies.join(","),
                w.tags.join(", "),
                w.vram_gb
                    .map_or(String::new(), |gb| format!("{gb} GB of VRAM; ")),
                w.spec_version,
                w.binary_version
            )
        })
        .collect();
    format!("live workers offer: {}", each.join("; "))
}

/// A `failed` terminal `job_update` at `seq`, as stored rows.
pub(crate) fn failed_event(job_id: &JobId, seq: u64, why: &str) -> Vec<(u64, String)> {
    job_update_event(job_id, seq, Status::Failed, None, Some(why))
}

/// A `job_update` at `seq`, as stored rows.
fn job_update_event(
    job_id: &JobId,
    seq: u64,
    status: Status,
    message: Option<&str>,
    error: Option<&str>,
) -> Vec<(u64, String)> {
    let event = nodetool_engine::EventEnvelope {
        job_id: job_id.to_string(),
        seq,
        event: nodetool_engine::Event::JobUpdate(nodetool_engine::events::JobUpdate {
            status,
            workflow_id: None,
            message: message.map(str::to_owned),
            result: None,
            error: error.map(str::to_owned),
            traceback: None,
            run_state: None,
            duration: None,
            peak_memory_bytes: None,
        }),
    };
    serde_json::to_string(&event)
        .map(|t| vec![(seq, t)])
        .unwrap_or_default()
}

async fn notify_job(tx: &mut sqlx::PgConnection, id: &JobId) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(id.as_str())
        .execute(tx)
        .await
        .map_err(db_err("jobs.notify"))
        .map(drop)
}

async fn insert_events(
    tx: &mut sqlx::PgConnection,
    job_id: &JobId,
    events: &[(u64, String)],
    max_per_job: u64,
) -> Result<()> {
    let err = db_err("job_events.append");
    if events.is_empty() {
        return Ok(());
    }
    for chunk in events.chunks(500) {
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO job_events (job_id, seq, event) ",
        );
        q.push_values(chunk, |mut row, (seq, event)| {
            row.push_bind(job_id.as_str())
                .push_bind(seq_param(*seq))
                .push_bind(event);
        });
        q.push(" ON CONFLICT (job_id, seq) DO NOTHING");
        q.build().execute(&mut *tx).await.map_err(&err)?;
    }
    let newest = events.iter().map(|(s, _)| *s).max().unwrap_or(0);
    if newest > max_per_job {
        sqlx::query("DELETE FROM job_events WHERE job_id = $1 AND seq <= $2")
            .bind(job_id.as_str())
            .bind(seq_param(newest - max_per_job))
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
    }
    notify_job(tx, job_id).await
}

/// The shared `LISTEN` connection: forwards notifications until nobody listens any more.
async fn listen(pool: PgPool, tx: broadcast::Sender<Wakeup>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for job wake-ups; followers poll meanwhile");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(error) = listener
            .listen_all([EVENTS_CHANNEL, QUEUE_CHANNEL, CONTROLS_CHANNEL])
            .await
        {
            tracing::warn!(%error, "cannot LISTEN for job wake-ups; followers poll meanwhile");
            tokio::time::sleep(delay).await;
            continue;
        }
        delay = Duration::from_millis(100);
        let _ = tx.send(Wakeup::Reconnected);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let wake = match n.channel() {
                        QUEUE_CHANNEL => Wakeup::Queue,
                        CONTROLS_CHANNEL => Wakeup::Control(n.payload().to_owned()),
                        _ => Wakeup::Job(n.payload().to_owned()),
                    };
                    let _ = tx.send(wake);
                }
                // The connection dropped (sqlx reconnects on the next call).
                Ok(None) => {
                    let _ = tx.send(Wakeup::Reconnected);
                }
                Err(error) => {
                    tracing::warn!(%error, "job wake-up listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}
