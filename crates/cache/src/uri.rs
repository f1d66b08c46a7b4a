//! The URI cache: resolved asset URIs, `memory://` objects and downloaded bytes, kept briefly.

use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use nodetool_core::CacheValue;

/// Default time an entry lives: 300 s.
pub const DEFAULT_URI_TTL: Duration = Duration::from_secs(300);
/// Default number of entries kept (oldest/least used evicted beyond it).
pub const DEFAULT_URI_MAX_ENTRIES: u64 = 10_000;

#[derive(Clone)]
struct Entry<V> {
    value: V,
    ttl: Duration,
}

struct EntryExpiry;

impl<V> Expiry<String, Entry<V>> for EntryExpiry {
    fn expire_after_create(&self, _: &String, e: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        e: &Entry<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// A short-lived map from URI (or URL) to a value, safe to share between tasks and threads.
///
/// Every entry expires: a TTL of zero means "the default", never "forever", so a forgotten
/// `memory://` object cannot pin memory. Clones share the store. Values are returned by clone, so
/// `V` should be cheap to clone (`Bytes`, `Arc<_>`, a short string).
pub struct UriCache<V = CacheValue> {
    inner: Cache<String, Entry<V>>,
    default_ttl: Duration,
}

impl<V> Clone for UriCache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            default_ttl: self.default_ttl,
        }
    }
}

impl<V> std::fmt::Debug for UriCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UriCache")
            .field("default_ttl", &self.default_ttl)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl<V: Clone + Send + Sync + 'static> Default for UriCache<V> {
    fn default() -> Self {
        Self::new(DEFAULT_URI_TTL)
    }
}

impl<V: Clone + Send + Sync + 'static> UriCache<V> {
    /// A cache whose entries live `default_ttl` (zero: [`DEFAULT_URI_TTL`]), holding at most
    /// [`DEFAULT_URI_MAX_ENTRIES`].
    pub fn new(default_ttl: Duration) -> Self {
        Self::with_max_entries(default_ttl, DEFAULT_URI_MAX_ENTRIES)
    }

    pub fn with_max_entries(default_ttl: Duration, max_entries: u64) -> Self {
        let default_ttl = if default_ttl.is_zero() {
            DEFAULT_URI_TTL
        } else {
            default_ttl
        };
        let inner = Cache::builder()
            .max_capacity(max_entries)
            .expire_after(EntryExpiry)
            .build();
        Self { inner, default_ttl }
    }

    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    pub fn get(&self, uri: &str) -> Option<V> {
        self.inner.get(uri).map(|e| e.value)
    }

    /// Stores `value` for the default TTL. An empty `uri` is ignored.
    pub fn set(&self, uri: &str, value: V) {
        self.set_with_ttl(uri, value, self.default_ttl);
    }

    /// Stores `value` for `ttl` (zero: the default TTL). An empty `uri` is ignored.
    pub fn set_with_ttl(&self, uri: &str, value: V, ttl: Duration) {
        if uri.is_empty() {
            return;
        }
        let ttl = if ttl.is_zero() { self.default_ttl } else { ttl };
        self.inner.insert(uri.to_owned(), Entry { value, ttl });
    }

    pub fn remove(&self, uri: &str) -> Option<V> {
        self.inner.remove(uri).map(|e| e.value)
    }

    pub fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// Entries currently held (approximate: moka applies writes in batches).
    pub fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
