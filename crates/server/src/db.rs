//! Where the server's records live: the SQLite database (`settings.db_path`), or PostgreSQL
//! when `DATABASE_URL` is set ([`Records::open`]). The asset table and its migrations belong to
//! `nodetool_assets`, which the engine shares; the job store and the workflow store
//! ([`crate::workflow_store`]) add theirs to the same database.

use std::path::Path;
use std::sync::Arc;

use nodetool_assets::PgOptions;
use nodetool_core::{AssetStore, Result};
use sqlx::SqlitePool;

use crate::workflow_store::WorkflowStore;

/// Asset records and workflows (with their versions), in one backend.
#[derive(Debug, Clone)]
pub struct Records {
    pub assets: Arc<dyn AssetStore>,
    pub workflows: WorkflowStore,
    /// The SQLite pool when the records are in the file ([`close`] it on shutdown).
    pub sqlite: Option<SqlitePool>,
}

impl Records {
    /// With `database_url` (`DATABASE_URL`), asset records and workflows in that PostgreSQL
    /// (nothing of them in the file at `db_path`, which is not opened); without, in the SQLite
    /// file at `db_path` ([`open`]).
    pub async fn open(db_path: &Path, database_url: Option<&str>) -> Result<Self> {
        match database_url {
            Some(url) => {
                let options = PgOptions::default();
                let assets = nodetool_assets::PostgresAssetStore::connect(url, &options).await?;
                let workflows = WorkflowStore::connect(url, &options).await?;
                Ok(Self {
                    assets: Arc::new(assets),
                    workflows,
                    sqlite: None,
                })
            }
            None => Ok(Self::from(open(db_path).await?)),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.workflows.backend()
    }

    /// Clean shutdown of the SQLite file ([`close`]); nothing to do for PostgreSQL.
    pub async fn close(&self) -> Result<()> {
        match &self.sqlite {
            Some(pool) => close(pool).await,
            None => Ok(()),
        }
    }
}

/// The stores over a pool from [`open`] (migrations applied).
impl From<SqlitePool> for Records {
    fn from(pool: SqlitePool) -> Self {
        Self {
            assets: asset_store(&pool),
            workflows: WorkflowStore::sqlite(pool.clone()),
            sqlite: Some(pool),
        }
    }
}

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
