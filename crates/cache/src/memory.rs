//! The in-process node cache: one moka cache shared by every job of the process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;
use nodetool_core::{CacheValue, NodeCache, Result};

/// Default byte budget of [`MemoryNodeCache`]: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Clone)]
struct Entry {
    value: CacheValue,
    /// `None` = never expires.
    ttl: Option<Duration>,
}

/// Per-entry TTL: each entry carries its own, set again on overwrite.
struct EntryExpiry;

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        entry.ttl
    }
}

/// In-process [`NodeCache`] (moka): per-entry TTL, capacity in bytes (each entry weighs its key
/// plus [`CacheValue::approx_size`]), least-recently/frequently-used eviction beyond it.
///
/// Cheap to clone (clones share the store); the runtime builds one per process and hands it to
/// every job. A hit returns a copy, so a caller mutating it cannot change the cached value. An
/// entry heavier than the whole budget is never kept. Never returns `Err`.
#[derive(Clone)]
pub struct MemoryNodeCache {
    inner: Cache<String, Entry>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryNodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNodeCache")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.inner.entry_count())
            .field("weighted_bytes", &self.inner.weighted_size())
            .finish()
    }
}

impl Default for MemoryNodeCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl MemoryNodeCache {
    /// A cache holding at most about `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.approx_size()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .build();
        Self { inner, max_bytes }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Entries currently held (approximate: moka applies writes in batches).
    pub fn entry_count(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    /// Bytes currently held, by the weigher's measure (approximate, as `entry_count`).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }

    /// The synchronous form of [`NodeCache::get`], for callers outside async code.
    pub fn get_sync(&self, key: &str) -> Option<CacheValue> {
        self.inner.get(key).map(|e| e.value)
    }

    /// The synchronous form of [`NodeCache::set`].
    pub fn set_sync(&self, key: &str, value: CacheValue, ttl: Duration) {
        let ttl = (!ttl.is_zero()).then_some(ttl);
        self.inner.insert(key.to_owned(), Entry { value, ttl });
    }
}

#[async_trait]
impl NodeCache for MemoryNodeCache {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<CacheValue>> {
        Ok(self.get_sync(key))
    }

    async fn set(&self, key: &str, value: CacheValue, ttl: Duration) -> Result<()> {
        self.set_sync(key, value, ttl);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.invalidate(key);
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        self.inner.invalidate_all();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_budget_evicts() {
        let cache = MemoryNodeCache::new(64 * 1024);
        let value = CacheValue::from(vec![7u8; 1024]);
        for i in 0..1000 {
            cache.set_sync(&format!("k{i}"), value.clone(), Duration::ZERO);
        }
        let held = cache.weighted_bytes();
        assert!(held <= 64 * 1024, "held {held} bytes");
        assert!(cache.entry_count() < 1000);
    }

    #[test]
    fn an_entry_bigger_than_the_budget_is_not_kept() {
        let cache = MemoryNodeCache::new(1024);
        cache.set_sync("big", CacheValue::from(vec![0u8; 4096]), Duration::ZERO);
        cache.inner.run_pending_tasks();
        assert_eq!(cache.get_sync("big"), None);
    }
}
