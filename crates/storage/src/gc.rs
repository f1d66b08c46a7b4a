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
    /// Leftovers of interrupted writes removed (partial uploads of a killed process).
    pub interrupted: usize,
}

/// A partial upload untouched for this long belongs to no live writer: a stream that stalls
/// this long has long been cut off by the HTTP timeouts.
pub const STALE_PARTIAL_UPLOAD: Duration = Duration::from_secs(3600);

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
    match storage.reap_interrupted(STALE_PARTIAL_UPLOAD).await {
        Ok(n) => report.interrupted = n,
        Err(error) => tracing::warn!(%error, "temp gc: could not sweep partial uploads"),
    }
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
        interrupted = report.interrupted,
        "temp gc sweep"
    );
    Ok(report)
}

/// Runs [`reap`] over all of `storage` every `every`, until the returned handle is aborted (the
/// server does this on shutdown). A failed sweep is logged and retried at the next tick.
pub fn spawn_reaper(
    storage: std::sync::Arc<dyn Storage>,
    ttl: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = reap(storage.as_ref(), &StoragePrefix::all(), ttl, Utc::now()).await
            {
                tracing::warn!(%error, "temp gc: sweep failed; retrying at the next tick");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use nodetool_core::{PutOptions, StorageKey};

    use super::*;
    use crate::MemoryStorage;

    async fn put(storage: &MemoryStorage, key: &str) {
        storage
            .upload_bytes(
                &StorageKey::new(key).unwrap(),
                Bytes::from_static(b"12345"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reap_deletes_only_expired_objects_under_the_prefix() {
        let storage = MemoryStorage::new("/t");
        put(&storage, "job1/a").await;
        put(&storage, "job2/b").await;
        let later = Utc::now() + chrono::Duration::hours(25);
        let ttl = Duration::from_secs(24 * 3600);
        let report = reap(&storage, &StoragePrefix::new("job1/").unwrap(), ttl, later)
            .await
            .unwrap();
        assert_eq!(
            report,
            GcReport {
                scanned: 1,
                deleted: 1,
                deleted_bytes: 5,
                failed: 0,
                interrupted: 0,
            }
        );
        let report = reap(&storage, &StoragePrefix::all(), ttl, Utc::now())
            .await
            .unwrap();
        assert_eq!(report.deleted, 0, "fresh objects survive");
        assert!(storage
            .exists(&StorageKey::new("job2/b").unwrap())
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn reaper_sweeps_in_the_background() {
        let storage = Arc::new(MemoryStorage::new("/t"));
        put(&storage, "old").await;
        let handle = spawn_reaper(
            storage.clone(),
            Duration::from_millis(20),
            Duration::from_millis(10),
        );
        let key = StorageKey::new("old").unwrap();
        let gone = async {
            while storage.exists(&key).await.unwrap() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the reaper removes the expired object");
        handle.abort();
    }
}
