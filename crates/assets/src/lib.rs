//! Asset records: [`SqliteAssetStore`] in the database file `DB_PATH` names, or
//! [`PostgresAssetStore`] in PostgreSQL (`DATABASE_URL`): the [`AssetStore`] behind
//! `/api/assets` and the engine's `create_asset`. [`postgres::connect`] is also how the other
//! record stores (workflows) reach PostgreSQL.
//!
//! The table is NodeTool's `nodetool_assets`. Other crates (the job store) keep their own tables
//! and migrations in the same file, so migrations applied by someone else are not an error here,
//! and migration versions are dated to avoid collisions.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nodetool_core::{AssetPage, AssetRecord, Error, ErrorKind, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use tokio::sync::OnceCell;

pub mod postgres;
mod sql;
pub use postgres::{PgOptions, PostgresAssetStore};

/// Microseconds: what PostgreSQL keeps, so both backends read back what they were given.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(t)
}

/// Asset records in one SQLite database.
///
/// Built with [`open`](Self::open) (now), [`lazy`](Self::lazy) (on first use, so a command that
/// never touches assets never opens the file), or over a pool someone else opened.
#[derive(Debug)]
pub struct SqliteAssetStore {
    pool: OnceCell<SqlitePool>,
    /// Where a lazy store opens its database.
    path: Option<PathBuf>,
}

impl SqliteAssetStore {
    /// Opens (creating if needed) the database at `path` and applies the asset migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        Ok(Self::with_pool(open_pool(path).await?))
    }

    /// A store that opens `path` (as [`open`](Self::open) does) on its first operation; an
    /// unopenable database fails that operation, naming the path.
    pub fn lazy(path: impl Into<PathBuf>) -> Self {
        Self {
            pool: OnceCell::new(),
            path: Some(path.into()),
        }
    }

    /// Applies the asset migrations to `pool` and uses it.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        migrate(&pool).await?;
        Ok(Self::with_pool(pool))
    }

    /// Uses `pool` as is: the caller has applied the migrations ([`open_pool`], [`migrate`]).
    pub fn with_pool(pool: SqlitePool) -> Self {
        Self {
            pool: OnceCell::new_with(Some(pool)),
            path: None,
        }
    }

    /// A private in-memory database that lives as long as the store (tests, throwaway runs).
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db_err("assets.open"))?
            .foreign_keys(true);
        // One connection that never closes: each connection of `:memory:` is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db_err("assets.open"))?;
        Self::from_pool(pool).await
    }

    /// The pool, opening a lazy store's database first.
    pub async fn pool(&self) -> Result<&SqlitePool> {
        self.pool
            .get_or_try_init(|| async {
                match &self.path {
                    Some(path) => open_pool(path).await,
                    None => Err(Error::unexpected("asset store has neither pool nor path")
                        .with_operation("assets.open")),
                }
            })
            .await
    }
}

/// Opens (creating if needed) the SQLite database at `path` with the settings every crate of the
/// workspace uses (WAL, 5 s busy timeout, foreign keys) and applies the asset migrations.
pub async fn open_pool(path: &Path) -> Result<SqlitePool> {
    let fail = |what: &'static str| {
        move |e: sqlx::Error| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot {what} the database"),
            )
            .with_operation("db.open")
            .with_context("path", path.display())
            .with_source(e)
            .set_temporary(false)
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::from(e)
                .with_operation("db.open")
                .with_context("dir", dir.display())
        })?;
    }
    let options = SqliteConnectOptions::from_str("sqlite:")
        .map_err(fail("configure"))?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(fail("open"))?;
    migrate(&pool)
        .await
        .map_err(|e| e.with_context("path", path.display()))?;
    Ok(pool)
}

/// Applies the asset migrations (idempotent).
pub async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.map_err(|e| {
        Error::new(ErrorKind::Unexpected, "asset database migration failed")
            .with_operation("db.migrate")
            .with_source(e)
    })
}

pub(crate) fn db_err(op: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| {
        let (kind, temporary) = match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                (ErrorKind::AlreadyExists, false)
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                (ErrorKind::Unavailable, true)
            }
            // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout: another writer held on.
            sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "6")) => {
                (ErrorKind::Unavailable, true)
            }
            _ => (ErrorKind::Unexpected, false),
        };
        let message = match kind {
            ErrorKind::AlreadyExists => "an asset with this id already exists",
            _ => "asset database query failed",
        };
        Error::new(kind, message)
            .with_operation(op)
            .with_source(e)
            .set_temporary(temporary)
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Row {
    id: String,
    user_id: String,
    workflow_id: Option<String>,
    parent_id: String,
    name: String,
    content_type: String,
    size: Option<i64>,
    metadata: Option<String>,
    duration: Option<f64>,
    node_id: Option<String>,
    job_id: Option<String>,
    storage_key: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for AssetRecord {
    fn from(r: Row) -> Self {
        AssetRecord {
            // Written by us as JSON text; anything else reads as no metadata.
            metadata: r
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok()),
            id: r.id,
            user_id: r.user_id,
            workflow_id: r.workflow_id,
            parent_id: r.parent_id,
            name: r.name,
            content_type: r.content_type,
            size: r.size,
            duration: r.duration,
            node_id: r.node_id,
            job_id: r.job_id,
            storage_key: r.storage_key,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `%`, `_` and `\` escaped for `LIKE ... ESCAPE '\'`.
pub(crate) fn like_prefix(prefix: &str) -> String {
    let escaped = prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}%")
}

/// One page of `rows` (fetched with one more than `limit`, to tell whether there is a next).
pub(crate) fn page(mut rows: Vec<Row>, limit: usize) -> AssetPage {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    AssetPage {
        assets: rows.into_iter().map(AssetRecord::from).collect(),
        next,
    }
}

/// SQLite keeps what it is given.
fn as_given(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

sql::asset_store_sql!(SqliteAssetStore, sqlx::Sqlite, as_given);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(like_prefix("image"), "image%");
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
