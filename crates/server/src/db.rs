//! The SQLite database (`settings.db_path`). The asset table and its migrations belong to
//! `nodetool_assets`, which the engine shares; the job store and the workflow store
//! ([`crate::workflows`]) add theirs to the same file.

use std::path::Path;
use std::sync::Arc;

use nodetool_core::{AssetStore, Result};
use sqlx::SqlitePool;

/// Opens (creating if needed) the database at `path` and applies the asset and workflow
/// migrations.
pub async fn open(path: &Path) -> Result<SqlitePool> {
    let pool = nodetool_assets::open_pool(path).await?;
    crate::workflows::migrate(&pool).await?;
    Ok(pool)
}

/// The asset record store over a pool from [`open`]: what `/api/assets` uses, and what
/// `nodetool serve` hands its in-process jobs so that `create_asset` writes the same table.
pub fn asset_store(pool: &SqlitePool) -> Arc<dyn AssetStore> {
    Arc::new(nodetool_assets::SqliteAssetStore::with_pool(pool.clone()))
}

/// Clean shutdown: folds the WAL back into the main file (`wal_checkpoint(TRUNCATE)`) and closes
/// every connection, so the database file alone is complete (a copy without its `-wal` has every
/// table) and SQLite removes the `-wal` and `-shm` files as the last connection closes.
pub async fn close(pool: &SqlitePool) -> Result<()> {
    let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await;
    pool.close().await;
    checkpoint.map(|_| ()).map_err(|e| {
        nodetool_core::Error::new(
            nodetool_core::ErrorKind::Unavailable,
            "WAL checkpoint failed",
        )
        .with_operation("db.close")
        .with_source(e)
    })
}
