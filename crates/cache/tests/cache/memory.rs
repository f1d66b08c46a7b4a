//! The in-process node cache and the URI cache.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use nodetool_cache::{CacheValue, MemoryNodeCache, NodeCache, NodeCacheConfig, UriCache};

#[tokio::test]
async fn memory_cache_passes_the_suite() {
    nodetool_testkit::cache_suite::run(Arc::new(MemoryNodeCache::default())).await;
}

#[tokio::test]
async fn default_config_builds_the_shared_memory_cache() {
    let cfg = NodeCacheConfig::default();
    assert_eq!(cfg.backend(), "memory");
    let cache = cfg.build().await.unwrap();
    assert_eq!(cache.name(), "memory");
    nodetool_testkit::cache_suite::run(cache).await;
}

#[tokio::test]
async fn clones_share_one_store_across_tasks() {
    let cache = MemoryNodeCache::new(1 << 20);
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            c.set(&format!("k{i}"), CacheValue::Int(i), Duration::ZERO)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..8i64 {
        assert_eq!(
            cache.get(&format!("k{i}")).await.unwrap(),
            Some(CacheValue::Int(i))
        );
    }
}

#[tokio::test]
async fn a_hit_is_a_copy() {
    let cache = MemoryNodeCache::default();
    cache
        .set(
            "k",
            CacheValue::List(vec![CacheValue::Int(1)]),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let Some(CacheValue::List(mut got)) = cache.get("k").await.unwrap() else {
        panic!("miss")
    };
    got.push(CacheValue::Int(2));
    assert_eq!(
        cache.get("k").await.unwrap(),
        Some(CacheValue::List(vec![CacheValue::Int(1)]))
    );
}

#[tokio::test]
async fn uri_cache_get_set_remove_and_expiry() {
    let cache: UriCache<bytes::Bytes> = UriCache::new(Duration::from_millis(300));
    cache.set("memory://a", bytes::Bytes::from_static(b"A"));
    cache.set("", bytes::Bytes::from_static(b"ignored"));
    assert_eq!(cache.get("memory://a").as_deref(), Some(&b"A"[..]));
    assert_eq!(cache.get(""), None);
    assert_eq!(cache.get("memory://missing"), None);
    assert_eq!(cache.remove("memory://a").as_deref(), Some(&b"A"[..]));
    assert_eq!(cache.get("memory://a"), None);

    cache.set("https://x/y.png", bytes::Bytes::from_static(b"png"));
    cache.set_with_ttl(
        "long",
        bytes::Bytes::from_static(b"L"),
        Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cache.get("https://x/y.png"),
        None,
        "default TTL did not expire the entry"
    );
    assert_eq!(cache.get("long").as_deref(), Some(&b"L"[..]));
}

#[test]
fn uri_cache_zero_ttl_means_default_not_forever() {
    let cache: UriCache = UriCache::new(Duration::ZERO);
    assert_eq!(cache.default_ttl(), nodetool_cache::DEFAULT_URI_TTL);
    assert_eq!(nodetool_cache::DEFAULT_URI_TTL, Duration::from_secs(300));
}

#[test]
fn uri_cache_is_safe_across_threads() {
    let cache: UriCache<u64> = UriCache::default();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let cache = cache.clone();
            s.spawn(move || {
                for i in 0..500u64 {
                    let key = format!("memory://{t}/{i}");
                    cache.set(&key, t * 1000 + i);
                    assert_eq!(cache.get(&key), Some(t * 1000 + i));
                }
            });
        }
    });
    assert_eq!(cache.len(), 2000);
}
