//! Job records and job events, in SQLite (`settings.db_path`, shared with other crates' tables)
//! or PostgreSQL (`DATABASE_URL`), behind one [`JobStore`].
//!
//! Only a job's owner task writes its row. Status changes are compare-and-set on the current
//! status, so a terminal status is written once and `cancelled` is never overwritten.
//!
//! The two schemas (`migrations/`, `migrations_postgres/`) have the same tables, columns and
//! migration versions. PostgreSQL keeps `params`/`result` as `JSON` (validated, key order kept)
//! and events as `TEXT` (replayed byte for byte); SQLite keeps all three as `TEXT`.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqlitePool};

use nodetool_assets::postgres::{connect_err, wait_for_postgres};
use nodetool_core::{Error, ErrorKind, JobId, Result, UserId};
use nodetool_engine::{EventEnvelope, Status};

use crate::strategy::{StrategyKind, WorkerRef};

/// What the manager knows about a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: JobId,
    pub user_id: UserId,
    pub workflow_id: String,
    pub strategy: StrategyKind,
    pub status: Status,
    pub params: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// `{output name: [values...]}` of a completed job.
    pub result: Option<Value>,
    pub worker: Option<WorkerRef>,
}

/// The message recorded for jobs a previous process left running.
pub const RESTART_ERROR: &str = "the runtime restarted while this job was running";

/// The database behind a [`JobStore`]. Both speak the same SQL except where noted at the query
/// (`$n` placeholders work in both; PostgreSQL's JSON columns take a cast).
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$pool` bound to that backend's pool: the same tokens
/// compile against each driver, so one query text serves both. `Db` inside names the driver.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => {
                #[allow(dead_code)]
                type Dialect = sqlx::Sqlite;
                $body
            }
            Db::Postgres($pool) => {
                #[allow(dead_code)]
                type Dialect = sqlx::Postgres;
                $body
            }
        }
    };
}

/// Job records and job events, in SQLite or PostgreSQL. Cheap to clone.
///
/// Contract (the behaviour suite in `tests/test_job_store.rs` runs it against both):
/// - status changes MUST be compare-and-set on the current status: of two concurrent
///   [`JobStore::finish`] calls on one job exactly one returns `true`, and a terminal status
///   (`cancelled` included) is never overwritten;
/// - events MUST come back in `seq` order, a seq stored twice MUST keep its first event, and
///   each job keeps at most its latest `max_per_job`;
/// - timestamps are kept to the microsecond (PostgreSQL's precision) on both backends.
#[derive(Debug, Clone)]
pub struct JobStore {
    pub(crate) db: Db,
    /// PostgreSQL's `LISTEN` wake-ups (`crate::queue`), started on first use.
    pub(crate) wakeups:
        std::sync::Arc<std::sync::OnceLock<tokio::sync::broadcast::Sender<crate::queue::Wakeup>>>,
}

/// How [`JobStore::connect`] reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// How long a server that refuses connections at start (down, starting up, not resolvable
    /// yet) is waited for, retrying with backoff, before [`ErrorKind::Unavailable`].
    pub startup_wait: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            startup_wait: Duration::from_secs(5),
            max_connections: 8,
        }
    }
}

pub(crate) fn db_err(op: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| {
        Error::new(ErrorKind::Unavailable, "job store query failed")
            .with_operation(op)
            .with_source(e)
            .set_temporary(false)
    }
}

pub(crate) fn parse_status(s: &str) -> Result<Status> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        Error::new(
            ErrorKind::Unexpected,
            format!("unknown job status {s:?} in the store"),
        )
        .with_operation("jobs.read")
    })
}

/// Microseconds: what PostgreSQL keeps, so both backends read back what they were given.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(t)
}

pub(crate) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl JobStore {
    /// Opens (creating if needed) the SQLite database at `path` and applies the job migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::from(e)
                    .with_operation("jobs.open")
                    .with_context("dir", dir.display())
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(db_err("jobs.open"))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a crash may lose the last commits but never corrupts; job records
            // are reconciled on start anyway.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| db_err("jobs.open")(e).with_context("path", path.display()))?;
        Self::from_pool(pool).await
    }

    /// A private in-memory SQLite store (one connection, gone with the process): a queue
    /// worker's bookkeeping of the jobs it runs, whose real records are in the queue's store.
    pub async fn in_memory() -> Result<Self> {
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_err("jobs.open"))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db_err("jobs.open"))?;
        Self::from_pool(pool).await
    }

    /// Uses an existing SQLite pool (e.g. the server's), applying the job migrations.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        let mut migrator = sqlx::migrate!("./migrations");
        // Other crates keep their migrations in the same database.
        migrator.set_ignore_missing(true);
        migrator
            .run(&pool)
            .await
            .map_err(|e| migrate_err(e, "SQLite"))?;
        Ok(Self {
            db: Db::Sqlite(pool),
            wakeups: Default::default(),
        })
    }

    /// Connects to the PostgreSQL at `url` (`DATABASE_URL`: `postgres://` or `postgresql://`)
    /// and applies the job migrations (`migrations_postgres/`; concurrent starts are serialized
    /// by sqlx's advisory lock).
    ///
    /// Errors never print the URL's password: a malformed URL is `ConfigInvalid` naming
    /// `DATABASE_URL`; a server still refusing connections after `options.startup_wait` is
    /// `Unavailable`; refused credentials are `PermissionDenied`; a database whose schema has a
    /// migration this binary does not know (a newer nodetool migrated it) is refused.
    pub async fn connect(url: &str, options: &PostgresOptions) -> Result<Self> {
        let shown = nodetool_config::database::redact_url(url);
        nodetool_config::database::postgres_url(url).map_err(|why| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("DATABASE_URL={shown} {why}"),
            )
            .with_operation("jobs.connect")
        })?;
        let pg = PgConnectOptions::from_str(url).map_err(|e| {
            // sqlx's parse errors name the offending part, never the whole URL.
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("DATABASE_URL={shown} is not a valid PostgreSQL URL: {e}"),
            )
            .with_operation("jobs.connect")
        })?;
        let target = format!(
            "PostgreSQL at {}:{}/{}",
            pg.get_host(),
            pg.get_port(),
            pg.get_database().unwrap_or("(default database)")
        );
        // Reachable first (bounded retry, clear refusals), then the pool.
        let probe = wait_for_postgres(&pg, &target, options.startup_wait).await?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(pg)
            .await
            .map_err(|e| connect_err(e, &target))?;
        // Not `set_ignore_missing`: this database holds only the job tables, so any migration
        // this binary does not know comes from a newer one. (When other crates' tables move
        // here, they need their own check, as sqlx 0.8 keeps one migrations table.)
        sqlx::migrate!("./migrations_postgres")
            .run(&pool)
            .await
            .map_err(|e| migrate_err(e, &target))?;
        tracing::info!(target = %target, "job store on PostgreSQL");
        Ok(Self {
            db: Db::Postgres(pool),
            wakeups: Default::default(),
        })
    }

    /// The SQLite pool, when the store is in SQLite (tables of other crates may share it).
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Sqlite(pool) => Some(pool),
            Db::Postgres(_) => None,
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match &self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// The job columns as [`JobRow`] reads them (PostgreSQL's JSON read back as text).
    pub(crate) fn job_columns(&self) -> &'static str {
        match &self.db {
            Db::Sqlite(_) => {
                "id, user_id, workflow_id, strategy, status, params, created_at, started_at, \
                 finished_at, error, result, worker_pid, container_id"
            }
            Db::Postgres(_) => {
                "id, user_id, workflow_id, strategy, status, params::text AS params, created_at, \
                 started_at, finished_at, error, result::text AS result, worker_pid, container_id"
            }
        }
    }

    /// The cast a JSON text parameter takes (PostgreSQL's columns are `JSON`).
    fn json_cast(&self) -> &'static str {
        match &self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => "::json",
        }
    }

    pub async fn insert(&self, r: &JobRecord) -> Result<()> {
        let (pid, container) = worker_cols(r.worker.as_ref());
        let sql = format!(
            "INSERT INTO jobs (id, user_id, workflow_id, strategy, status, params, created_at, \
             started_at, finished_at, error, result, worker_pid, container_id) \
             VALUES ($1, $2, $3, $4, $5, $6{j}, $7, $8, $9, $10, $11{j}, $12, $13)",
            j = self.json_cast()
        );
        on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(r.id.as_str())
                .bind(r.user_id.as_str())
                .bind(&r.workflow_id)
                .bind(r.strategy.as_str())
                .bind(r.status.as_str())
                .bind(r.params.to_string())
                .bind(micros(r.created_at))
                .bind(r.started_at.map(micros))
                .bind(r.finished_at.map(micros))
                .bind(&r.error)
                .bind(r.result.as_ref().map(Value::to_string))
                .bind(pid)
                .bind(&container)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(db_err("jobs.insert"))?;
        Ok(())
    }

    /// `scheduled` → `running`. False if the job is no longer scheduled.
    pub async fn mark_running(&self, id: &JobId, at: DateTime<Utc>) -> Result<bool> {
        let sql = "UPDATE jobs SET status = 'running', started_at = $1 \
                   WHERE id = $2 AND status = 'scheduled'";
        let affected = on_pool!(self, pool => {
            sqlx::query(sql).bind(micros(at)).bind(id.as_str()).execute(pool).await.map(|d| d.rows_affected())
        })
        .map_err(db_err("jobs.mark_running"))?;
        Ok(affected == 1)
    }

    pub async fn set_worker(&self, id: &JobId, worker: &WorkerRef) -> Result<()> {
        let (pid, container) = worker_cols(Some(worker));
        let sql = "UPDATE jobs SET worker_pid = $1, container_id = $2 WHERE id = $3";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(pid).bind(&container).bind(id.as_str()).execute(pool).await.map(drop)
        })
        .map_err(db_err("jobs.set_worker"))
    }

    /// Writes a terminal status once: only from `scheduled` or `running`. False if the job
    /// already ended (its first terminal status stays) or a queue worker holds it (its writes
    /// go through [`JobStore::finish_fenced`]).
    pub async fn finish(
        &self,
        id: &JobId,
        status: Status,
        error: Option<&str>,
        result: Option<&Value>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        // One statement, so the check and the write cannot interleave with another writer's
        // (PostgreSQL re-checks the WHERE on the row it waited for).
        let sql = format!(
            "UPDATE jobs SET status = $1, error = $2, result = $3{j}, finished_at = $4 \
             WHERE id = $5 AND status IN ('scheduled', 'running') AND lease_token IS NULL",
            j = self.json_cast()
        );
        let result = result.map(Value::to_string);
        let affected = on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(status.as_str())
                .bind(error)
                .bind(&result)
                .bind(micros(at))
                .bind(id.as_str())
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })
        .map_err(db_err("jobs.finish"))?;
        Ok(affected == 1)
    }

    /// Deletes `user_id`'s ended job `id` and its stored events. False if there is no such
    /// ended job (unknown, another user's, or still `scheduled`/`running`).
    pub async fn delete_ended(&self, id: &JobId, user_id: &UserId) -> Result<bool> {
        let err = db_err("jobs.delete");
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(&err)?;
            let done = sqlx::query(
                "DELETE FROM jobs WHERE id = $1 AND user_id = $2 \
                 AND status NOT IN ('scheduled', 'running')",
            )
            .bind(id.as_str())
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            if done.rows_affected() == 1 {
                sqlx::query("DELETE FROM job_events WHERE job_id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            tx.commit().await.map_err(&err)?;
            done.rows_affected() == 1
        });
        Ok(deleted)
    }

    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {} FROM jobs WHERE id = $1", self.job_columns());
        let row: Option<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(pool).await
        })
        .map_err(db_err("jobs.get"))?;
        row.map(JobRow::into_record).transpose()
    }

    /// A user's jobs, newest first.
    pub async fn list(&self, user_id: &UserId, limit: u32) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            self.job_columns()
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(user_id.as_str()).bind(i64::from(limit)).fetch_all(pool).await
        })
        .map_err(db_err("jobs.list"))?;
        rows.into_iter().map(JobRow::into_record).collect()
    }

    /// Appends events (`(job_id, seq, envelope JSON)`) in one transaction, ignoring seqs already
    /// stored, then trims each job in the batch to its latest `max_per_job` events.
    pub async fn append_events(
        &self,
        events: &[(String, u64, String)],
        max_per_job: u64,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut newest: HashMap<&str, u64> = HashMap::new();
        for (job, seq, _) in events {
            let e = newest.entry(job.as_str()).or_default();
            *e = (*e).max(*seq);
        }
        let err = db_err("job_events.append");
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(&err)?;
            // 3 variables a row: far below SQLite's 32,766 and PostgreSQL's 65,535.
            for chunk in events.chunks(500) {
                let mut q = sqlx::QueryBuilder::<Dialect>::new(
                    "INSERT INTO job_events (job_id, seq, event) ",
                );
                q.push_values(chunk, |mut row, (job, seq, event)| {
                    row.push_bind(job).push_bind(seq_param(*seq)).push_bind(event);
                });
                q.push(" ON CONFLICT (job_id, seq) DO NOTHING");
                q.build().execute(&mut *tx).await.map_err(&err)?;
            }
            for (job, seq) in &newest {
                if *seq > max_per_job {
                    sqlx::query("DELETE FROM job_events WHERE job_id = $1 AND seq <= $2")
                        .bind(*job)
                        .bind(seq_param(seq - max_per_job))
                        .execute(&mut *tx)
                        .await
                        .map_err(&err)?;
                }
            }
            tx.commit().await.map_err(&err)?;
        });
        Ok(())
    }

    /// Up to `limit` stored events of a job with a seq above `after`, in seq order.
    pub async fn events_after(
        &self,
        job_id: &JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<EventEnvelope>> {
        let sql = "SELECT event FROM job_events WHERE job_id = $1 AND seq > $2 \
                   ORDER BY seq LIMIT $3";
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(job_id.as_str())
                .bind(seq_param(after))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .map_err(db_err("job_events.read"))?;
        rows.iter().map(|(text,)| parse_event(text)).collect()
    }

    /// The job's stored event with the highest seq.
    pub async fn last_event(&self, job_id: &JobId) -> Result<Option<EventEnvelope>> {
        let sql = "SELECT event FROM job_events WHERE job_id = $1 ORDER BY seq DESC LIMIT 1";
        let row: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job_id.as_str()).fetch_optional(pool).await
        })
        .map_err(db_err("job_events.read"))?;
        row.map(|(text,)| parse_event(&text)).transpose()
    }

    /// Removes the events of jobs that finished before `before`; returns how many.
    pub async fn expire_events(&self, before: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM job_events WHERE job_id IN \
                   (SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1)";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(micros(before)).execute(pool).await.map(|d| d.rows_affected())
        })
        .map_err(db_err("job_events.expire"))
    }

    /// Marks every job a previous process left `scheduled` or `running` as failed with
    /// [`RESTART_ERROR`] and returns them as they were (with their workers, for reaping). Each
    /// is failed by compare-and-set, so a job that ended meanwhile keeps its outcome.
    ///
    /// Queued jobs (`JOB_EXECUTION=queue`) are not this process's: their leases decide
    /// ([`JobStore::expire_leases`]). Other jobs on PostgreSQL are assumed to be this server's
    /// (as with SQLite): servers sharing one database run in queue mode.
    pub async fn reconcile_interrupted(&self) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE status IN ('scheduled', 'running') AND NOT queued",
            self.job_columns()
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await
        })
        .map_err(db_err("jobs.reconcile"))?;
        let jobs: Vec<JobRecord> = rows
            .into_iter()
            .map(JobRow::into_record)
            .collect::<Result<_>>()?;
        let now = Utc::now();
        for job in &jobs {
            self.finish(&job.id, Status::Failed, Some(RESTART_ERROR), None, now)
                .await?;
        }
        Ok(jobs)
    }
}

fn migrate_err(e: sqlx::migrate::MigrateError, target: &str) -> Error {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::VersionMissing(v) => Error::new(
            ErrorKind::Unsupported,
            format!(
                "the job store schema in {target} has migration {v}, which this binary does not \
                 know: a newer nodetool migrated it. Run that version (or newer); this one \
                 refuses to touch a schema it does not understand"
            ),
        ),
        M::VersionMismatch(v) => Error::new(
            ErrorKind::Unsupported,
            format!(
                "the job store schema in {target} has a migration {v} that differs from this \
                 binary's: it was migrated by another build of nodetool"
            ),
        ),
        M::Dirty(v) => Error::new(
            ErrorKind::Unexpected,
            format!("migration {v} of the job store in {target} failed earlier and was left half-applied"),
        ),
        other => Error::new(ErrorKind::Unexpected, format!("job store migration failed in {target}"))
            .with_source(other),
    }
    .with_operation("jobs.migrate")
}

/// A `jobs` row as [`JobStore::job_columns`] selects it, in either backend.
#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    user_id: String,
    workflow_id: String,
    strategy: String,
    status: String,
    params: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    result: Option<String>,
    worker_pid: Option<i64>,
    container_id: Option<String>,
}

impl JobRow {
    pub(crate) fn into_record(self) -> Result<JobRecord> {
        let worker = match (self.worker_pid, self.container_id) {
            (_, Some(c)) => Some(WorkerRef::Container(c)),
            (Some(p), None) => u32::try_from(p).ok().map(WorkerRef::Pid),
            _ => None,
        };
        Ok(JobRecord {
            strategy: StrategyKind::from_str(&self.strategy)?,
            status: parse_status(&self.status)?,
            params: serde_json::from_str(&self.params).unwrap_or(Value::Null),
            result: self.result.and_then(|s| serde_json::from_str(&s).ok()),
            // Our own rows: written from parsed or generated ids.
            id: JobId::from_trusted(self.id),
            user_id: UserId::new(self.user_id),
            workflow_id: self.workflow_id,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            error: self.error,
            worker,
        })
    }
}

fn parse_event(text: &str) -> Result<EventEnvelope> {
    serde_json::from_str(text).map_err(|e| {
        Error::new(ErrorKind::Unexpected, "unreadable event in the job store")
            .with_operation("job_events.read")
            .with_source(e)
    })
}

fn worker_cols(w: Option<&WorkerRef>) -> (Option<i64>, Option<String>) {
    match w {
        Some(WorkerRef::Pid(p)) => (Some(i64::from(*p)), None),
        Some(WorkerRef::Container(c)) => (None, Some(c.clone())),
        None => (None, None),
    }
}
