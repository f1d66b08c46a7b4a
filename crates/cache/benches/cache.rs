//! Node-cache benchmarks.
//!
//! - `memory/*`: in-process get/set of a 1 KB value (target: get ≤ 2 µs p50).
//! - `memcached/*`: one get or set round trip through `MemcachedNodeCache` (hashing, encoding,
//!   pooling, deadline) next to the same operation by a bare client (`async-memcached`, one
//!   connection, raw bytes) on the same server in the same run (target: ≤ 1.3×).
//!
//! Run: `cargo bench -p nodetool-cache --bench cache` (needs the `memcached` binary; the memcached
//! group is skipped without it). Figures: docs/bench/cache.md.

use std::sync::Arc;
use std::time::Duration;

use async_memcached::AsciiProtocol;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nodetool_cache::{CacheValue, MemcachedConfig, MemcachedNodeCache, MemoryNodeCache, NodeCache};
use nodetool_testkit::memcached::MemcachedServer;

const HOUR: Duration = Duration::from_secs(3600);

fn value_1k() -> CacheValue {
    CacheValue::from(vec![0xabu8; 1024])
}

fn memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = MemoryNodeCache::default();
    let keys: Vec<String> = (0..1000).map(|i| format!("node-output-{i:04}")).collect();
    for k in &keys {
        cache.set_sync(k, value_1k(), HOUR);
    }
    let dyn_cache: Arc<dyn NodeCache> = Arc::new(cache.clone());

    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1));
    g.bench_function("get_1k", |b| {
        let mut i = 0;
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (cache, key) = (dyn_cache.clone(), &keys[i]);
            async move { cache.get(key).await }
        })
    });
    g.bench_function("get_1k_sync", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            cache.get_sync(&keys[i])
        })
    });
    g.bench_function("set_1k", |b| {
        let mut i = 0;
        b.to_async(&rt).iter_batched(
            value_1k,
            |v| {
                i = (i + 1) % keys.len();
                let (cache, key) = (dyn_cache.clone(), &keys[i]);
                async move { cache.set(key, v, HOUR).await }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // Throughput from 2 threads hitting the shared cache (the machine has 2 cores).
    let mut g = c.benchmark_group("memory_parallel");
    g.throughput(Throughput::Elements(2 * 10_000));
    g.bench_function("get_1k_2_threads", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (cache, keys) = (&cache, &keys);
                    s.spawn(move || {
                        for i in 0..10_000 {
                            std::hint::black_box(cache.get_sync(&keys[(i * 7 + t) % keys.len()]));
                        }
                    });
                }
            })
        })
    });
    g.finish();
}

fn memcached(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(server) = rt.block_on(MemcachedServer::start()) else {
        eprintln!("memcached not installed: skipping the memcached benchmarks");
        return;
    };
    let cfg = MemcachedConfig {
        namespace: "bench".into(),
        ..MemcachedConfig::new("127.0.0.1", server.port())
    };
    let ours = Arc::new(
        rt.block_on(MemcachedNodeCache::connect(cfg))
            .expect("connect"),
    );
    let mut bare = rt
        .block_on(async_memcached::Client::new(format!(
            "tcp://127.0.0.1:{}",
            server.port()
        )))
        .expect("bare client");
    let raw = vec![0xabu8; 1024];
    // Same key length as ours: namespace, generation and a 64-hex digest.
    let bare_key = format!("bare:1700000000000000:{}", blake3::hash(b"k").to_hex());
    rt.block_on(ours.set("k", value_1k(), HOUR)).expect("set");
    rt.block_on(bare.set(&bare_key, raw.as_slice(), Some(3600), None))
        .expect("bare set");
    assert_eq!(rt.block_on(ours.get("k")).expect("get"), Some(value_1k()));

    let mut g = c.benchmark_group("memcached");
    g.throughput(Throughput::Elements(1));
    // Both sides run under the same harness: one `block_on` per operation.
    g.bench_function("ours_get_1k", |b| {
        b.iter(|| rt.block_on(ours.get("k")).expect("get"))
    });
    g.bench_function("bare_get_1k", |b| {
        b.iter(|| rt.block_on(bare.get(&bare_key)).expect("bare get"))
    });
    let v = value_1k(); // Bytes inside: clone is a reference-count bump.
    g.bench_function("ours_set_1k", |b| {
        b.iter(|| rt.block_on(ours.set("k", v.clone(), HOUR)).expect("set"))
    });
    g.bench_function("bare_set_1k", |b| {
        b.iter(|| {
            rt.block_on(bare.set(&bare_key, raw.as_slice(), Some(3600), None))
                .expect("bare set")
        })
    });
    g.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = memory, memcached
}
criterion_main!(benches);
