//! The behaviour every [`NodeCache`] must show, run against each implementation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nodetool_core::{CacheValue, NodeCache};
use rand::Rng;

/// Runs every case against `cache` under random keys; panics listing each failed case.
///
/// Calls `clear`, so give it a cache (or namespace) of its own. Takes about 3.5 s (TTL expiry
/// needs real time: memcached counts whole seconds).
pub async fn run(cache: Arc<dyn NodeCache>) {
    let run_id: u64 = rand::thread_rng().gen();
    let mut failures: Vec<String> = Vec::new();
    macro_rules! check {
        ($case:expr, $cond:expr, $($msg:tt)*) => {
            if !$cond {
                failures.push(format!("{}: {}", $case, format!($($msg)*)));
            }
        };
    }
    let k = |name: &str| format!("suite-{run_id:x}-{name}");
    let get = |key: String| {
        let cache = cache.clone();
        async move {
            match cache.get(&key).await {
                Ok(v) => v,
                Err(e) => panic!(
                    "{}: get returned Err (a cache never fails): {e}",
                    cache.name()
                ),
            }
        }
    };
    let set = |key: String, value: CacheValue, ttl: Duration| {
        let cache = cache.clone();
        async move {
            if let Err(e) = cache.set(&key, value, ttl).await {
                panic!(
                    "{}: set returned Err (a cache never fails): {e}",
                    cache.name()
                );
            }
        }
    };
    let hour = Duration::from_secs(3600);

    // set / get / miss
    let v = CacheValue::map([("out", CacheValue::from("hello"))]);
    set(k("a"), v.clone(), hour).await;
    check!(
        "set_get",
        get(k("a")).await == Some(v.clone()),
        "value not read back"
    );
    check!(
        "miss",
        get(k("never-set")).await.is_none(),
        "unknown key is not a miss"
    );

    // overwrite
    let v2 = CacheValue::Int(2);
    set(k("a"), v2.clone(), hour).await;
    check!(
        "overwrite",
        get(k("a")).await == Some(v2),
        "second set not visible"
    );

    // delete (and delete of a missing key is fine)
    set(k("del"), CacheValue::Bool(true), hour).await;
    cache.delete(&k("del")).await.expect("delete never fails");
    check!(
        "delete",
        get(k("del")).await.is_none(),
        "deleted key still there"
    );
    cache
        .delete(&k("del-missing"))
        .await
        .expect("delete never fails");

    // every variant round-trips, nested
    let mut map = BTreeMap::new();
    map.insert("null".to_owned(), CacheValue::Null);
    map.insert("bool".to_owned(), CacheValue::Bool(false));
    map.insert("int".to_owned(), CacheValue::Int(i64::MIN));
    map.insert("float".to_owned(), CacheValue::Float(-1.25e300));
    map.insert("string".to_owned(), CacheValue::from("ünïcode \0 \r\n"));
    map.insert(
        "bytes".to_owned(),
        CacheValue::Bytes(Bytes::from_static(&[0, 255, 13, 10])),
    );
    map.insert(
        "list".to_owned(),
        CacheValue::List(vec![
            CacheValue::Int(1),
            CacheValue::List(vec![]),
            CacheValue::map([("x", CacheValue::Null)]),
        ]),
    );
    map.insert("empty_map".to_owned(), CacheValue::Map(BTreeMap::new()));
    for (name, value) in map.clone() {
        set(k(&format!("variant-{name}")), value.clone(), hour).await;
        check!(
            "variants",
            get(k(&format!("variant-{name}"))).await == Some(value),
            "{name} did not round-trip"
        );
    }
    let all = CacheValue::Map(map);
    set(k("all"), all.clone(), hour).await;
    check!(
        "variants",
        get(k("all")).await == Some(all),
        "nested map did not round-trip"
    );

    // keys of any length and byte content stay distinct
    let odd_keys = [
        String::new(),
        " ".to_owned(),
        "with space\r\nand newline".to_owned(),
        "\0nul".to_owned(),
        "ünï/ファイル".to_owned(),
        "x".repeat(300),
        "x".repeat(10_000),
    ];
    for (i, key) in odd_keys.iter().enumerate() {
        let key = format!("{}{key}", k("odd"));
        set(key.clone(), CacheValue::Int(i as i64), hour).await;
    }
    for (i, key) in odd_keys.iter().enumerate() {
        let key = format!("{}{key}", k("odd"));
        let shown: String = key.chars().take(40).collect();
        check!(
            "odd_keys",
            get(key).await == Some(CacheValue::Int(i as i64)),
            "key {shown:?} (len {})",
            i
        );
    }
    // the empty key itself
    set(String::new(), CacheValue::from("empty"), hour).await;
    check!(
        "empty_key",
        get(String::new()).await == Some(CacheValue::from("empty")),
        "empty key not stored"
    );
    cache.delete("").await.expect("delete never fails");

    // big value (under memcached's 1 MiB item limit)
    let big = CacheValue::Bytes(Bytes::from(
        (0..900_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    ));
    set(k("big"), big.clone(), hour).await;
    check!(
        "big_value",
        get(k("big")).await == Some(big),
        "900 kB value not read back"
    );

    // ttl expiry; ttl 0 never expires
    set(k("short"), CacheValue::Int(1), Duration::from_secs(2)).await;
    set(k("forever"), CacheValue::Int(2), Duration::ZERO).await;
    check!(
        "ttl",
        get(k("short")).await == Some(CacheValue::Int(1)),
        "short-TTL entry missing before expiry"
    );
    tokio::time::sleep(Duration::from_millis(3300)).await;
    check!(
        "ttl_expiry",
        get(k("short")).await.is_none(),
        "2 s entry still there after 3.3 s"
    );
    check!(
        "ttl_zero",
        get(k("forever")).await == Some(CacheValue::Int(2)),
        "ttl 0 entry expired"
    );

    // clear
    set(k("c1"), CacheValue::Int(1), hour).await;
    cache.clear().await.expect("clear never fails");
    check!(
        "clear",
        get(k("c1")).await.is_none(),
        "entry survived clear"
    );
    check!(
        "clear",
        get(k("forever")).await.is_none(),
        "ttl 0 entry survived clear"
    );
    set(k("after-clear"), CacheValue::Int(3), hour).await;
    check!(
        "clear",
        get(k("after-clear")).await == Some(CacheValue::Int(3)),
        "cache unusable after clear"
    );

    assert!(
        failures.is_empty(),
        "cache suite failed for {} ({} case(s)):\n  {}",
        cache.name(),
        failures.len(),
        failures.join("\n  ")
    );
}
