//! Job records and job events in SQLite (`settings.db_path`, shared with other crates' tables).
//!
//! Only a job's owner task writes its row. Status changes are compare-and-set on the current
//! status, so a terminal status is written once and `cancelled` is never overwritten.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{EventEnvelope, Status};

use crate::strategy::{StrategyKind, WorkerRef};

/// What the manager knows about a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub user_id: String,
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

#[derive(Debug, Clone)]
pub struct JobStore {
    pool: SqlitePool,
}

fn db_err(op: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| {
        Error::new(ErrorKind::Unavailable, "job store query failed")
            .with_operation(op)
            .with_source(e)
            .set_temporary(false)
    }
}

fn parse_status(s: &str) -> Result<Status> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        Error::new(
            ErrorKind::Unexpected,
            format!("unknown job status {s:?} in the store"),
        )
        .with_operation("jobs.read")
    })
}

impl JobStore {
    /// Opens (creating if needed) the database at `path` and applies the job migrations.
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

    /// Uses an existing pool (e.g. the server's), applying the job migrations.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        let mut migrator = sqlx::migrate!("./migrations");
        // Other crates keep their migrations in the same database.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await.map_err(|e| {
            Error::new(ErrorKind::Unexpected, "job store migration failed")
                .with_operation("jobs.migrate")
                .with_source(e)
        })?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn insert(&self, r: &JobRecord) -> Result<()> {
        let (pid, container) = worker_cols(r.worker.as_ref());
        sqlx::query(
            "INSERT INTO jobs (id, user_id, workflow_id, strategy, status, params, created_at, \
             started_at, finished_at, error, result, worker_pid, container_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.user_id)
        .bind(&r.workflow_id)
        .bind(r.strategy.as_str())
        .bind(r.status.as_str())
        .bind(r.params.to_string())
        .bind(r.created_at)
        .bind(r.started_at)
        .bind(r.finished_at)
        .bind(&r.error)
        .bind(r.result.as_ref().map(Value::to_string))
        .bind(pid)
        .bind(container)
        .execute(&self.pool)
        .await
        .map_err(db_err("jobs.insert"))?;
        Ok(())
    }

    /// `scheduled` → `running`. False if the job is no longer scheduled.
    pub async fn mark_running(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'scheduled'",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err("jobs.mark_running"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_worker(&self, id: &str, worker: &WorkerRef) -> Result<()> {
        let (pid, container) = worker_cols(Some(worker));
        sqlx::query("UPDATE jobs SET worker_pid = ?, container_id = ? WHERE id = ?")
            .bind(pid)
            .bind(container)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err("jobs.set_worker"))?;
        Ok(())
    }

    /// Writes a terminal status once: only from `scheduled` or `running`. False if the job
    /// already ended (its first terminal status stays).
    pub async fn finish(
        &self,
        id: &str,
        status: Status,
        error: Option<&str>,
        result: Option<&Value>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = ?, error = ?, result = ?, finished_at = ? \
             WHERE id = ? AND status IN ('scheduled', 'running')",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(result.map(Value::to_string))
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err("jobs.finish"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes `user_id`'s ended job `id` and its stored events. False if there is no such
    /// ended job (unknown, another user's, or still `scheduled`/`running`).
    pub async fn delete_ended(&self, id: &str, user_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_err("jobs.delete"))?;
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id = ? AND user_id = ? \
             AND status NOT IN ('scheduled', 'running')",
        )
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("jobs.delete"))?;
        if done.rows_affected() == 1 {
            sqlx::query("DELETE FROM job_events WHERE job_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err("jobs.delete"))?;
        }
        tx.commit().await.map_err(db_err("jobs.delete"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("jobs.get"))?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// A user's jobs, newest first.
    pub async fn list(&self, user_id: &str, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("jobs.list"))?;
        rows.iter().map(from_row).collect()
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
        let err = db_err("job_events.append");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        // 3 variables a row: far below SQLite's 32,766.
        for chunk in events.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO job_events (job_id, seq, event) ",
            );
            q.push_values(chunk, |mut row, (job, seq, event)| {
                row.push_bind(job)
                    .push_bind(i64::try_from(*seq).unwrap_or(i64::MAX))
                    .push_bind(event);
            });
            q.push(" ON CONFLICT (job_id, seq) DO NOTHING");
            q.build().execute(&mut *tx).await.map_err(&err)?;
        }
        let mut newest: HashMap<&str, u64> = HashMap::new();
        for (job, seq, _) in events {
            let e = newest.entry(job.as_str()).or_default();
            *e = (*e).max(*seq);
        }
        for (job, seq) in newest {
            if seq > max_per_job {
                sqlx::query("DELETE FROM job_events WHERE job_id = ? AND seq <= ?")
                    .bind(job)
                    .bind(i64::try_from(seq - max_per_job).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
        }
        tx.commit().await.map_err(&err)?;
        Ok(())
    }

    /// Up to `limit` stored events of a job with a seq above `after`, in seq order.
    pub async fn events_after(
        &self,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<EventEnvelope>> {
        let rows = sqlx::query(
            "SELECT event FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(job_id)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("job_events.read"))?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event").map_err(db_err("job_events.read"))?;
                parse_event(&text)
            })
            .collect()
    }

    /// The job's stored event with the highest seq.
    pub async fn last_event(&self, job_id: &str) -> Result<Option<EventEnvelope>> {
        let row =
            sqlx::query("SELECT event FROM job_events WHERE job_id = ? ORDER BY seq DESC LIMIT 1")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("job_events.read"))?;
        row.map(|r| {
            let text: String = r.try_get("event").map_err(db_err("job_events.read"))?;
            parse_event(&text)
        })
        .transpose()
    }

    /// Removes the events of jobs that finished before `before`; returns how many.
    pub async fn expire_events(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM job_events WHERE job_id IN \
             (SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?)",
        )
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(db_err("job_events.expire"))?;
        Ok(done.rows_affected())
    }

    /// Marks every job a previous process left `scheduled` or `running` as failed with
    /// [`RESTART_ERROR`] and returns them (with their workers, for reaping).
    pub async fn reconcile_interrupted(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE status IN ('scheduled', 'running')")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("jobs.reconcile"))?;
        let jobs: Vec<JobRecord> = rows.iter().map(from_row).collect::<Result<_>>()?;
        let now = Utc::now();
        for job in &jobs {
            self.finish(&job.id, Status::Failed, Some(RESTART_ERROR), None, now)
                .await?;
        }
        Ok(jobs)
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

fn from_row(r: &SqliteRow) -> Result<JobRecord> {
    let get = |e: sqlx::Error| db_err("jobs.read")(e);
    let strategy: String = r.try_get("strategy").map_err(get)?;
    let status: String = r.try_get("status").map_err(get)?;
    let params: String = r.try_get("params").map_err(get)?;
    let result: Option<String> = r.try_get("result").map_err(get)?;
    let pid: Option<i64> = r.try_get("worker_pid").map_err(get)?;
    let container: Option<String> = r.try_get("container_id").map_err(get)?;
    let worker = match (pid, container) {
        (_, Some(c)) => Some(WorkerRef::Container(c)),
        (Some(p), None) => u32::try_from(p).ok().map(WorkerRef::Pid),
        _ => None,
    };
    Ok(JobRecord {
        id: r.try_get("id").map_err(get)?,
        user_id: r.try_get("user_id").map_err(get)?,
        workflow_id: r.try_get("workflow_id").map_err(get)?,
        strategy: StrategyKind::from_str(&strategy)?,
        status: parse_status(&status)?,
        params: serde_json::from_str(&params).unwrap_or(Value::Null),
        created_at: r.try_get("created_at").map_err(get)?,
        started_at: r.try_get("started_at").map_err(get)?,
        finished_at: r.try_get("finished_at").map_err(get)?,
        error: r.try_get("error").map_err(get)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
        worker,
    })
}
