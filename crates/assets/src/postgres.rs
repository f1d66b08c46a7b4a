//! Record stores in PostgreSQL (`DATABASE_URL`): [`connect`], the pool every such store opens,
//! and [`PostgresAssetStore`], the asset records there.
//!
//! Each store keeps its tables in its own PostgreSQL schema (`nodetool_assets`,
//! `nodetool_workflows`, ...) with its own `_sqlx_migrations` table: sqlx 0.8 keeps one
//! migrations table per schema, and a store refuses a schema with a migration it does not know
//! (a newer nodetool migrated it) only if no other store's migrations share that table. The job
//! store keeps its tables in the database's default schema.

use std::str::FromStr;
use std::time::Duration;

use nodetool_core::{Error, ErrorKind, Result};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use tokio::sync::OnceCell;

use crate::micros;

/// How [`connect`] reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// How long a server that refuses connections at start is waited for, retrying with
    /// backoff, before [`ErrorKind::Unavailable`].
    pub startup_wait: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            startup_wait: Duration::from_secs(5),
            max_connections: 8,
        }
    }
}

/// Connects to the PostgreSQL at `url` (`DATABASE_URL`), creates `schema` if needed, and returns
/// a pool whose connections work in `schema` (its `search_path`) after applying `migrator`
/// there. `what` names the store in errors and logs ("asset store").
///
/// Errors never print the URL's password: a malformed URL is `ConfigInvalid` naming
/// `DATABASE_URL`; a server still refusing connections after `options.startup_wait` is
/// `Unavailable`; refused credentials are `PermissionDenied`; a schema with a migration
/// `migrator` does not know is `Unsupported`.
pub async fn connect(
    url: &str,
    schema: &str,
    migrator: &Migrator,
    what: &str,
    options: &PgOptions,
) -> Result<PgPool> {
    let op = "db.connect";
    let shown = nodetool_config::database::redact_url(url);
    nodetool_config::database::postgres_url(url).map_err(|why| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("DATABASE_URL={shown} {why}"),
        )
        .with_operation(op)
    })?;
    let base = PgConnectOptions::from_str(url).map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("DATABASE_URL={shown} is not a valid PostgreSQL URL: {e}"),
        )
        .with_operation(op)
    })?;
    let target = format!(
        "PostgreSQL at {}:{}/{}",
        base.get_host(),
        base.get_port(),
        base.get_database().unwrap_or("(default database)")
    );
    let mut conn = wait_for_postgres(&base, &target, options.startup_wait).await?;
    // Concurrent starts may race on the schema: IF NOT EXISTS can still report a duplicate.
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => {}
        Err(sqlx::Error::Database(d)) if matches!(d.code().as_deref(), Some("42P06" | "23505")) => {
        }
        Err(e) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("cannot create the schema {schema} in {target} (DATABASE_URL)"),
            )
            .with_operation(op)
            .with_source(e))
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(base.options([("search_path", schema)]))
        .await
        .map_err(|e| connect_err(e, &target))?;
    migrator
        .run(&pool)
        .await
        .map_err(|e| migrate_err(e, what, &target))?;
    tracing::info!(target = %target, schema, store = what, "store on PostgreSQL");
    Ok(pool)
}

/// Connects once at a time until the server answers or `wait` has passed, backing off from
/// 50 ms to 1 s. Only "not there (yet)" errors are retried; refused credentials or a missing
/// database are final at once. Every PostgreSQL store (asset records, workflows, jobs) starts
/// with it; `target` names the server in errors (never the URL, whose password it would show).
pub async fn wait_for_postgres(
    pg: &PgConnectOptions,
    target: &str,
    wait: Duration,
) -> Result<PgConnection> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // A host that drops packets would hang the connect: bound each attempt too.
        let attempt = tokio::time::timeout(
            left.clamp(Duration::from_secs(1), Duration::from_secs(10)),
            PgConnection::connect_with(pg),
        )
        .await;
        let why = match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) if retryable_at_connect(&e) => e.to_string(),
            Ok(Err(e)) => return Err(connect_err(e, target)),
            Err(_) => "the connection attempt timed out".to_owned(),
        };
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{target} (DATABASE_URL) is not reachable after {attempts} attempts in {:.1} s: {why}",
                    wait.as_secs_f64()
                ),
            )
            .with_operation("db.connect")
            .set_temporary(true));
        }
        tracing::warn!(target = %target, attempt = attempts, error = %why,
            "PostgreSQL is not reachable yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Down, starting up, or out of connections: worth waiting for.
fn retryable_at_connect(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // cannot_connect_now (starting up), too_many_connections
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
        _ => false,
    }
}

/// A connect error as a kind: refused credentials, a missing database, or unavailable.
pub fn connect_err(e: sqlx::Error, target: &str) -> Error {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let (kind, message) = match code.as_deref() {
        Some("28P01" | "28000") => (
            ErrorKind::PermissionDenied,
            format!("{target} refused the credentials in DATABASE_URL"),
        ),
        Some("3D000") => (
            ErrorKind::ConfigInvalid,
            format!(
                "{target}: the database named in DATABASE_URL does not exist (create it first)"
            ),
        ),
        _ => (
            ErrorKind::Unavailable,
            format!("cannot connect to {target} (DATABASE_URL)"),
        ),
    };
    // sqlx's connect errors carry the server's message, never the URL.
    Error::new(kind, message)
        .with_operation("db.connect")
        .with_source(e)
}

fn migrate_err(e: sqlx::migrate::MigrateError, what: &str, target: &str) -> Error {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::VersionMissing(v) => Error::new(
            ErrorKind::Unsupported,
            format!(
                "the {what} schema in {target} has migration {v}, which this binary does not \
                 know: a newer nodetool migrated it. Run that version (or newer); this one \
                 refuses to touch a schema it does not understand"
            ),
        ),
        M::VersionMismatch(v) => Error::new(
            ErrorKind::Unsupported,
            format!(
                "the {what} schema in {target} has a migration {v} that differs from this \
                 binary's: it was migrated by another build of nodetool"
            ),
        ),
        other => Error::new(
            ErrorKind::Unexpected,
            format!("{what} migration failed in {target}"),
        )
        .with_source(other),
    }
    .with_operation("db.migrate")
}

/// The PostgreSQL schema the asset records live in.
pub const ASSETS_SCHEMA: &str = "nodetool_assets";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations_postgres");

/// Asset records in PostgreSQL (`DATABASE_URL`), in the schema [`ASSETS_SCHEMA`]: the same
/// table and the same contract as [`SqliteAssetStore`](crate::SqliteAssetStore). Timestamps are
/// kept to the microsecond (PostgreSQL's precision).
pub struct PostgresAssetStore {
    pool: OnceCell<PgPool>,
    /// Where a lazy store connects; never printed (it may carry a password).
    url: Option<String>,
    options: PgOptions,
}

impl std::fmt::Debug for PostgresAssetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAssetStore")
            .field("connected", &self.pool.initialized())
            .finish_non_exhaustive()
    }
}

impl PostgresAssetStore {
    /// Connects to `url` (see [`connect`]) now and applies the asset migrations.
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self> {
        let pool = connect(url, ASSETS_SCHEMA, &MIGRATOR, "asset store", options).await?;
        Ok(Self {
            pool: OnceCell::new_with(Some(pool)),
            url: None,
            options: options.clone(),
        })
    }

    /// A store that connects (as [`connect`](Self::connect) does) on its first operation, so a
    /// command that never touches assets never reaches the database.
    pub fn lazy(url: impl Into<String>, options: PgOptions) -> Self {
        Self {
            pool: OnceCell::new(),
            url: Some(url.into()),
            options,
        }
    }

    async fn pool(&self) -> Result<&PgPool> {
        self.pool
            .get_or_try_init(|| async {
                match &self.url {
                    Some(url) => {
                        connect(url, ASSETS_SCHEMA, &MIGRATOR, "asset store", &self.options).await
                    }
                    None => Err(Error::unexpected("asset store has neither pool nor URL")
                        .with_operation("assets.open")),
                }
            })
            .await
    }
}

crate::sql::asset_store_sql!(PostgresAssetStore, sqlx::Postgres, micros);
