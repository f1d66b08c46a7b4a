//! Node-output caches (in-process moka, Memcached), the node-cache key, and the URI cache.
//!
//! The runtime builds one [`NodeCache`] per process from a [`NodeCacheConfig`] (memcached when
//! `MEMCACHE_HOST` and `MEMCACHE_PORT` are set, else memory) and shares it with every job. Both
//! caches are lossy: failures are logged and read as misses, never fail a job.

mod memcached;
mod memory;
mod uri;

use std::sync::Arc;
use std::time::Duration;

// The key and the value encoding live in core (every process computes them; none needs a
// backend to).
pub use memcached::{memcached_exptime, MemcachedConfig, MemcachedNodeCache};
pub use memory::{MemoryNodeCache, DEFAULT_MAX_BYTES};
pub use nodetool_core::cache::{codec, node_cache_key};
pub use nodetool_core::{CacheValue, NodeCache};
pub use uri::{UriCache, DEFAULT_URI_MAX_ENTRIES, DEFAULT_URI_TTL};

/// TTL the engine uses for node outputs unless a node says otherwise.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(3600);

/// Which node cache a process uses. Built by the config crate from settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCacheConfig {
    /// In-process, at most `max_bytes` (`NODE_CACHE_MAX_BYTES`).
    Memory { max_bytes: u64 },
    /// Shared memcached (`MEMCACHE_HOST`, `MEMCACHE_PORT`).
    Memcached(MemcachedConfig),
}

impl Default for NodeCacheConfig {
    fn default() -> Self {
        NodeCacheConfig::Memory {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl NodeCacheConfig {
    /// Backend name, as [`NodeCache::name`] reports it.
    pub fn backend(&self) -> &'static str {
        match self {
            NodeCacheConfig::Memory { .. } => "memory",
            NodeCacheConfig::Memcached(_) => "memcached",
        }
    }

    /// Builds the cache. Fails only on invalid configuration; an unreachable memcached is logged
    /// and its calls are misses until it is up.
    pub async fn build(&self) -> nodetool_core::Result<Arc<dyn NodeCache>> {
        Ok(match self {
            NodeCacheConfig::Memory { max_bytes } => Arc::new(MemoryNodeCache::new(*max_bytes)),
            NodeCacheConfig::Memcached(cfg) => {
                Arc::new(MemcachedNodeCache::connect(cfg.clone()).await?)
            }
        })
    }
}
