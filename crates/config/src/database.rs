//! Where jobs and job events are stored (`DATABASE_URL`), and how many of a job's events the
//! database keeps, and for how long (`JOB_EVENTS_MAX_PER_JOB`, `JOB_EVENT_RETENTION`); whether
//! servers run jobs or only enqueue them for `nodetool work` (`JOB_EXECUTION`, `JOB_LEASE_SECONDS`,
//! `JOB_MAX_ATTEMPTS`, `JOB_QUEUE_MAX_RUNNING`, `JOB_CLAIM_TIMEOUT_SECONDS`).

use std::time::Duration;

use nodetool_core::Result;

use crate::parse::{self, Parsed};
use crate::settings::Reader;

/// `JOB_EXECUTION`: where the jobs a server accepts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobExecution {
    /// In the accepting server's own strategies (the default).
    Local,
    /// Enqueued in PostgreSQL; `nodetool work` processes claim and run them.
    Queue,
}

impl JobExecution {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Queue => "queue",
        }
    }
}

/// `DATABASE_URL`, `JOB_EVENTS_MAX_PER_JOB`, `JOB_EVENT_RETENTION`, `JOB_EXECUTION`,
/// `JOB_LEASE_SECONDS`, `JOB_MAX_ATTEMPTS`, `JOB_QUEUE_MAX_RUNNING`, `JOB_CLAIM_TIMEOUT_SECONDS`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: a `postgres://` URL that moves jobs, job events, asset records and
    /// workflows to PostgreSQL (the `DB_PATH` file is not used); `None`: everything in the SQLite
    /// file. A secret: it may carry
    /// a password, so render it with [`redact_url`].
    pub database_url: Option<String>,
    /// The latest events of one job kept for replay after a restart.
    pub job_events_max_per_job: u64,
    /// How long a finished job's events are kept.
    pub job_event_retention: Duration,
    /// `JOB_EXECUTION`; `Queue` only with a `database_url` (checked at load).
    pub job_execution: JobExecution,
    /// `JOB_LEASE_SECONDS`: a claimed job's lease, renewed every third of it.
    pub job_lease: Duration,
    /// `JOB_MAX_ATTEMPTS`: runs of a queued job at most when its worker is lost (at least 1).
    pub job_max_attempts: u32,
    /// `JOB_QUEUE_MAX_RUNNING`: queued jobs running at once across every worker; `None`: no cap
    /// (each worker's `--concurrency` bounds its own).
    pub job_queue_max_running: Option<u32>,
    /// `JOB_CLAIM_TIMEOUT_SECONDS`: how long a queued job no live worker can take (its tags or
    /// strategy offered by none) waits before it fails.
    pub job_claim_timeout: Duration,
}

/// The URL's password never reaches a log line.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("job_events_max_per_job", &self.job_events_max_per_job)
            .field("job_event_retention", &self.job_event_retention)
            .field("job_execution", &self.job_execution)
            .field("job_lease", &self.job_lease)
            .field("job_max_attempts", &self.job_max_attempts)
            .field("job_queue_max_running", &self.job_queue_max_running)
            .field("job_claim_timeout", &self.job_claim_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self> {
        let database_url = r.get("DATABASE_URL", postgres_url)?;
        let job_execution = match r.choice("JOB_EXECUTION")? {
            "queue" => JobExecution::Queue,
            _ => JobExecution::Local,
        };
        if job_execution == JobExecution::Queue && database_url.is_none() {
            return Err(nodetool_core::Error::new(
                nodetool_core::ErrorKind::ConfigInvalid,
                "JOB_EXECUTION=queue needs DATABASE_URL (a postgres:// URL): the queue lives in \
                 PostgreSQL, shared by servers and `nodetool work` processes",
            )
            .with_context("setting", "JOB_EXECUTION"));
        }
        let job_lease = r.require("JOB_LEASE_SECONDS", parse::seconds)?;
        if job_lease < Duration::from_secs(1) {
            return Err(nodetool_core::Error::new(
                nodetool_core::ErrorKind::ConfigInvalid,
                "JOB_LEASE_SECONDS must be at least 1 second",
            )
            .with_context("setting", "JOB_LEASE_SECONDS"));
        }
        Ok(Self {
            database_url,
            job_events_max_per_job: r.require("JOB_EVENTS_MAX_PER_JOB", parse::count)? as u64,
            job_event_retention: r.require("JOB_EVENT_RETENTION", parse::seconds)?,
            job_execution,
            job_lease,
            job_max_attempts: u32::try_from(r.require("JOB_MAX_ATTEMPTS", parse::count)?)
                .unwrap_or(u32::MAX)
                .max(1),
            job_queue_max_running: r
                .get("JOB_QUEUE_MAX_RUNNING", parse::count)?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            job_claim_timeout: r.require("JOB_CLAIM_TIMEOUT_SECONDS", parse::seconds)?,
        })
    }
}

/// `postgres://[user[:password]@]host[:port]/database[?…]` (or `postgresql://`). Only the shape
/// is checked here; the driver reads the rest when it connects.
pub fn postgres_url(raw: &str) -> Parsed<String> {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err("is not a URL: use postgres://user:password@host:5432/database".into());
    };
    if !matches!(
        scheme.to_ascii_lowercase().as_str(),
        "postgres" | "postgresql"
    ) {
        // The scheme is printed; it cannot hold the password.
        let scheme: String = scheme.chars().take(20).collect();
        return Err(format!(
            "has scheme {scheme:?}: only PostgreSQL is supported (postgres:// or postgresql://); \
             unset it to keep records in the SQLite file (DB_PATH)"
        ));
    }
    let (_, host_and_path) = split_userinfo(rest);
    let host = host_and_path
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if host.is_empty() {
        return Err("names no host: use postgres://user:password@host:5432/database".into());
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("has a port that is not a number between 1 and 65535".into());
        }
    }
    Ok(raw.to_owned())
}

/// The URL with its password (in the user info or a `password=` query parameter) replaced by
/// `****`, for logs, errors and `settings show`. Something that is not a URL is masked whole.
pub fn redact_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        // Perhaps a bare password: not even its tail.
        return "****".to_owned();
    };
    let (userinfo, after) = split_userinfo(rest);
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:****@")),
            None => out.push_str(&format!("{userinfo}@")),
        }
    }
    match after.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(after),
    }
    out
}

/// Splits `user:password@host/…` at the last `@` before the path, so that a password holding a
/// raw `@` or `/` still ends up in the user info (and is redacted).
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/nodetool",
                "postgres://app:****@db:5432/nodetool",
            ),
            ("postgres://app@db/nodetool", "postgres://app@db/nodetool"),
            ("postgresql://db/nodetool", "postgresql://db/nodetool"),
            (
                "postgres://app:p@ss/w0rd@db/x?sslmode=require&password=s3cret",
                "postgres://app:****@db/x?sslmode=require&password=****",
            ),
            ("s3cret-not-a-url", "****"),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn only_postgres_urls_are_accepted() {
        for ok in [
            "postgres://app:pw@db:5432/nodetool",
            "postgresql://db/nodetool",
            "POSTGRES://[::1]:5432/x",
        ] {
            assert!(postgres_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("mysql://app:s3cret@db/x", "only PostgreSQL"),
            ("sqlite:///tmp/x.db", "only PostgreSQL"),
            ("s3cret", "not a URL"),
            ("postgres://app:s3cret@/x", "no host"),
            ("postgres://app:s3cret@db:notaport/x", "port"),
            ("postgres://app:s3cret@db:0/x", "port"),
        ] {
            let e = postgres_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
    }
}
