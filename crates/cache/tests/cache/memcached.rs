//! The memcached node cache against a real memcached, a dying one, and fake servers.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use nodetool_cache::{
    codec, node_cache_key, CacheValue, MemcachedConfig, MemcachedNodeCache, NodeCache,
    NodeCacheConfig,
};
use nodetool_testkit::memcached::MemcachedServer;
use nodetool_testkit::skip_or_fail;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);

async fn server(test: &str) -> Option<MemcachedServer> {
    let server = MemcachedServer::start().await;
    if server.is_none() {
        skip_or_fail(
            test,
            "memcached binary not installed (apt-get install memcached)",
        );
    }
    server
}

fn config(port: u16, namespace: &str) -> MemcachedConfig {
    MemcachedConfig {
        namespace: namespace.to_owned(),
        timeout: Duration::from_millis(200),
        ..MemcachedConfig::new("127.0.0.1", port)
    }
}

async fn cache(port: u16, namespace: &str) -> MemcachedNodeCache {
    // Shows the cache's warnings (each failure with its cause) in failing tests' output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    MemcachedNodeCache::connect(config(port, namespace))
        .await
        .expect("valid config")
}

/// One raw text-protocol exchange, bypassing our client; returns the first reply line.
async fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.unwrap();
    line.trim_end().to_owned()
}

async fn raw_set(port: u16, key: &str, data: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", data.len()).into_bytes();
    req.extend_from_slice(data);
    req.extend_from_slice(b"\r\n");
    assert_eq!(raw(port, &req).await, "STORED");
}

fn item_key(namespace: &str, generation: u64, key: &str) -> String {
    format!(
        "{namespace}:{generation}:{}",
        blake3::hash(key.as_bytes()).to_hex()
    )
}

#[tokio::test]
async fn memcached_cache_passes_the_suite() {
    let Some(server) = server("memcached_cache_passes_the_suite").await else {
        return;
    };
    let cfg = NodeCacheConfig::Memcached(config(server.port(), "suite"));
    assert_eq!(cfg.backend(), "memcached");
    let cache = cfg.build().await.unwrap();
    assert_eq!(cache.name(), "memcached");
    nodetool_testkit::cache_suite::run(cache).await;
}

#[tokio::test]
async fn a_server_that_dies_mid_use_means_misses_then_recovery() {
    let Some(mut server) = server("a_server_that_dies_mid_use_means_misses_then_recovery").await
    else {
        return;
    };
    let cache = cache(server.port(), "fault").await;
    let v = CacheValue::from("before");
    cache.set("k", v.clone(), HOUR).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(v));

    server.stop();
    assert_eq!(cache.get("k").await.unwrap(), None);
    cache.set("k2", CacheValue::Int(1), HOUR).await.unwrap();
    cache.delete("k").await.unwrap();
    cache.clear().await.unwrap();
    assert_eq!(cache.get("k2").await.unwrap(), None);

    server.restart().await;
    let after = CacheValue::from("after");
    cache.set("k3", after.clone(), HOUR).await.unwrap();
    assert_eq!(cache.get("k3").await.unwrap(), Some(after));
}

#[tokio::test]
async fn a_server_down_at_start_is_not_an_error_and_is_used_once_up() {
    let port = nodetool_testkit::free_port();
    let cache = cache(port, "late").await;
    assert_eq!(cache.get("k").await.unwrap(), None);
    cache.set("k", CacheValue::Int(1), HOUR).await.unwrap();

    let Some(_server) = MemcachedServer::start_with(port, None).await else {
        skip_or_fail(
            "a_server_down_at_start_is_not_an_error_and_is_used_once_up",
            "no memcached",
        );
        return;
    };
    cache.set("k", CacheValue::Int(2), HOUR).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(CacheValue::Int(2)));
}

#[derive(Clone, Copy, Debug)]
enum Fake {
    /// Answers every line with nonsense.
    Garbage,
    /// Accepts, then closes at once.
    Close,
    /// Accepts and never answers.
    Hang,
    /// Announces a 4 GiB value for any `get`.
    HugeValue,
}

async fn fake_server(kind: Fake) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                match kind {
                    Fake::Close => drop(stream),
                    Fake::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Fake::Garbage | Fake::HugeValue => loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let reply = match (kind, line.split(' ').collect::<Vec<_>>().as_slice()) {
                            (Fake::HugeValue, ["get", key]) => {
                                format!("VALUE {} 0 4294967295\r\n", key.trim_end())
                            }
                            _ => "HTTP/1.1 400 Bad Request\r\n\u{1}\u{2}garbage".to_owned(),
                        };
                        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    },
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn garbage_closed_hung_and_lying_servers_are_misses() {
    for kind in [Fake::Garbage, Fake::Close, Fake::Hang, Fake::HugeValue] {
        let port = fake_server(kind).await;
        let cache = cache(port, "fake").await;
        assert_eq!(cache.get("k").await.unwrap(), None, "{kind:?}");
        cache.set("k", CacheValue::Int(1), HOUR).await.unwrap();
        cache.delete("k").await.unwrap();
        cache.clear().await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), None, "{kind:?}");
    }
}

#[tokio::test]
async fn foreign_versions_and_garbage_values_are_misses() {
    let Some(server) = server("foreign_versions_and_garbage_values_are_misses").await else {
        return;
    };
    let port = server.port();
    // Pin the namespace generation so the test can address items directly.
    raw_set(port, "ver:gen", b"7").await;
    let cache = cache(port, "ver").await;

    let good = codec::encode_envelope(&CacheValue::from("ok"));
    raw_set(port, &item_key("ver", 7, "good"), &good).await;
    // Proves the addressing: a well-formed envelope written from outside is a hit.
    assert_eq!(
        cache.get("good").await.unwrap(),
        Some(CacheValue::from("ok"))
    );

    let mut future_version = good.clone();
    future_version[codec::MAGIC.len()] = codec::VERSION + 1;
    raw_set(port, &item_key("ver", 7, "future"), &future_version).await;
    assert_eq!(cache.get("future").await.unwrap(), None);

    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    raw_set(port, &item_key("ver", 7, "truncated"), &truncated).await;
    assert_eq!(cache.get("truncated").await.unwrap(), None);

    raw_set(
        port,
        &item_key("ver", 7, "pickle"),
        b"\x80\x05\x95cos\nsystem\n",
    )
    .await;
    assert_eq!(cache.get("pickle").await.unwrap(), None);

    // The connection stays usable after all that.
    cache.set("after", CacheValue::Int(1), HOUR).await.unwrap();
    assert_eq!(cache.get("after").await.unwrap(), Some(CacheValue::Int(1)));
}

#[tokio::test]
async fn values_over_the_item_limit_are_skipped() {
    let Some(server) = server("values_over_the_item_limit_are_skipped").await else {
        return;
    };
    let big = CacheValue::from(vec![1u8; 2 * 1024 * 1024]);

    // Our own limit (1 MiB by default) stops it before it is sent.
    let cache = cache(server.port(), "big").await;
    cache.set("big", big.clone(), HOUR).await.unwrap();
    assert_eq!(cache.get("big").await.unwrap(), None);

    // A limit set above the server's: memcached refuses it, we skip and carry on.
    let generous = MemcachedNodeCache::connect(MemcachedConfig {
        max_item_bytes: 8 * 1024 * 1024,
        ..config(server.port(), "big2")
    })
    .await
    .unwrap();
    generous.set("big", big, HOUR).await.unwrap();
    assert_eq!(generous.get("big").await.unwrap(), None);
    generous
        .set("small", CacheValue::Int(5), HOUR)
        .await
        .unwrap();
    assert_eq!(
        generous.get("small").await.unwrap(),
        Some(CacheValue::Int(5))
    );
}

#[tokio::test]
async fn clear_affects_only_its_namespace_and_is_seen_by_other_instances() {
    let Some(server) = server("clear_affects_only_its_namespace").await else {
        return;
    };
    let a = cache(server.port(), "team-a").await;
    let b = cache(server.port(), "team-b").await;
    // Same namespace, another instance (as another process would be), re-reading the generation
    // on every call.
    let a2 = MemcachedNodeCache::connect(MemcachedConfig {
        generation_refresh: Duration::ZERO,
        ..config(server.port(), "team-a")
    })
    .await
    .unwrap();
    raw_set(server.port(), "unrelated", b"keep me").await;

    a.set("k", CacheValue::Int(1), HOUR).await.unwrap();
    b.set("k", CacheValue::Int(2), HOUR).await.unwrap();
    assert_eq!(a2.get("k").await.unwrap(), Some(CacheValue::Int(1)));

    a.clear().await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), None);
    assert_eq!(a2.get("k").await.unwrap(), None);
    assert_eq!(b.get("k").await.unwrap(), Some(CacheValue::Int(2)));
    let kept = raw(server.port(), b"get unrelated\r\n").await;
    assert!(kept.starts_with("VALUE unrelated"), "{kept}");
}

const CHILD_PORT_VAR: &str = "NODETOOL_CACHE_TEST_CHILD_PORT";

fn shared_inputs() -> CacheValue {
    CacheValue::map([
        ("image", CacheValue::map([("digest", "blake3:00ff".into())])),
        ("width", CacheValue::Int(512)),
        ("scale", CacheValue::Float(0.1)),
        ("tags", CacheValue::List(vec!["a".into(), "b".into()])),
    ])
}

fn shared_output() -> CacheValue {
    CacheValue::map([("output", CacheValue::from(vec![9u8; 4096]))])
}

#[tokio::test]
async fn two_processes_compute_the_same_key_and_share_a_hit() {
    const NAME: &str = "two_processes_compute_the_same_key_and_share_a_hit";
    let key = node_cache_key("user-1", "nodetool.image.Resize", "3", &shared_inputs());

    // Child mode: this same test, re-run by the parent in a separate process.
    if let Ok(port) = std::env::var(CHILD_PORT_VAR) {
        let cache = cache(port.parse().unwrap(), "two-proc").await;
        cache.set(&key, shared_output(), HOUR).await.unwrap();
        println!("\nCHILD_KEY={key}");
        return;
    }

    let Some(server) = server(NAME).await else {
        return;
    };
    // Inside the `cache` test binary this test's name has its module in front.
    let filter = format!("memcached::{NAME}");
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            filter.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_PORT_VAR, server.port().to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD_KEY="))
        .unwrap_or_else(|| panic!("child printed no key: {stdout}"));
    assert_eq!(child_key, key);

    let cache = cache(server.port(), "two-proc").await;
    assert_eq!(cache.get(&key).await.unwrap(), Some(shared_output()));
}

#[tokio::test]
async fn concurrent_calls_share_the_pool() {
    let Some(server) = server("concurrent_calls_share_the_pool").await else {
        return;
    };
    let cache = Arc::new(
        MemcachedNodeCache::connect(MemcachedConfig {
            pool_size: 2,
            timeout: Duration::from_secs(2),
            ..config(server.port(), "pool")
        })
        .await
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..32i64 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            cache.set(&key, CacheValue::Int(i), HOUR).await.unwrap();
            cache.get(&key).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Some(CacheValue::Int(i as i64)));
    }
}
