//! The SQLite database (`settings.db_path`) and this crate's migrations.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use nodetool_core::{Error, ErrorKind, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

/// Opens (creating if needed) the database at `path` and applies this crate's migrations.
///
/// Other crates (the job store) keep their own migrations in the same file, so migrations applied
/// by someone else are not an error here, and our versions are dated to avoid collisions.
pub async fn open(path: &Path) -> Result<SqlitePool> {
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
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(&pool).await.map_err(|e| {
        Error::new(ErrorKind::Unexpected, "database migration failed")
            .with_operation("db.migrate")
            .with_context("path", path.display())
            .with_source(e)
    })?;
    Ok(pool)
}
