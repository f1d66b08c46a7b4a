//! The node cache that `Resources` hands out counts its hits and misses.

use std::collections::BTreeMap;
use std::time::Duration;

use nodetool_config::{Settings, Sources};
use nodetool_core::CacheValue;
use nodetool_runtime::{ResourceOptions, Resources};

#[tokio::test]
async fn lookups_are_counted_whatever_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings::load(&Sources::new(BTreeMap::new(), dir.path())).expect("settings");
    let resources = Resources::new(settings, ResourceOptions::default());
    let stats = resources.node_cache_stats();
    assert_eq!((stats.hits(), stats.misses()), (0, 0));

    let cache = resources.node_cache().await.expect("node cache");
    assert_eq!(
        cache.name(),
        "memory",
        "the wrapper keeps the backend's name"
    );
    assert_eq!(cache.get("k").await.expect("get"), None);
    cache
        .set("k", CacheValue::from("v"), Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(
        cache.get("k").await.expect("get"),
        Some(CacheValue::from("v"))
    );
    assert_eq!(
        cache.get("k").await.expect("get"),
        Some(CacheValue::from("v"))
    );
    cache.delete("k").await.expect("delete");
    assert_eq!(cache.get("k").await.expect("get"), None);

    // The same counters, however they are reached.
    let again = resources.node_cache_stats();
    assert_eq!((again.hits(), again.misses()), (2, 2));
}
