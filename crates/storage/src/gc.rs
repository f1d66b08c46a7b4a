//! Temp-storage expiry. Temp objects live `ASSET_TEMP_TTL` (24 h by default); the runtime, not a
//! bucket rule, removes older ones — `nodetool storage gc` and the server's reaper call [`reap`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use nodetool_core::{Result, Storage, StoragePrefix};

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub scanned: usize,
    pub deleted: usize,
    pub deleted_bytes: u64,
    /// Objects that were expired but could not be deleted (logged with their cause).
    pub failed: usize,
}

/// Deletes every object under `prefix` last modified before `now - ttl`.
pub async fn reap(
    storage: &dyn Storage,
    prefix: &StoragePrefix,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<GcReport> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let cutoff = now
        .checked_sub_signed(ttl)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut report = GcReport::default();
    for meta in storage.list(prefix).await? {
        report.scanned += 1;
        if meta.last_modified >= cutoff {
            continue;
        }
        match storage.delete(&meta.key).await {
            Ok(()) => {
                report.deleted += 1;
                report.deleted_bytes += meta.size;
            }
            Err(error) => {
                report.failed += 1;
                tracing::warn!(key = %meta.key, %error, "temp gc: could not delete an expired object");
            }
        }
    }
    tracing::info!(
        storage = storage.info().scheme,
        scanned = report.scanned,
        deleted = report.deleted,
        failed = report.failed,
        "temp gc sweep"
    );
    Ok(report)
}
