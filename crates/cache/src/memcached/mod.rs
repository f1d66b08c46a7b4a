//! The Memcached node cache: shared between processes and machines, lossy by contract.

mod proto;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nodetool_core::{CacheValue, Error, ErrorKind, NodeCache, Result};

use crate::codec;
use proto::{Pool, ProtoError, Stored};

/// memcached reads an expiry above 30 days as an absolute unix time.
const THIRTY_DAYS: u64 = 30 * 24 * 3600;
/// Room for memcached's per-item header next to key and value when checking the item limit.
const ITEM_OVERHEAD: usize = 64;
/// Longest namespace accepted, so `{namespace}:{generation}:{64 hex}` stays under 250 bytes.
const MAX_NAMESPACE_LEN: usize = 128;

/// How to reach memcached and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedConfig {
    pub host: String,
    pub port: u16,
    /// Prefix of every key we write; `clear` affects only this namespace. ASCII, no spaces,
    /// at most 128 bytes.
    pub namespace: String,
    /// Deadline of each cache call, connecting included. A call that misses it is a miss.
    pub timeout: Duration,
    /// Most connections open at once; calls beyond it wait (within `timeout`).
    pub pool_size: usize,
    /// Largest item (key + encoded value + header) we send; larger values are skipped. Match the
    /// server's `-I` (1 MiB by default).
    pub max_item_bytes: usize,
    /// How long a process trusts its copy of the namespace generation before re-reading it, i.e.
    /// how late a `clear` made by another process is seen here. Zero: re-read on every call (one
    /// more round trip per call).
    pub generation_refresh: Duration,
}

impl MemcachedConfig {
    /// `host:port` with the defaults: namespace `nodetool`, 200 ms timeout, 8 connections,
    /// 1 MiB items, generation re-read every second.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            namespace: "nodetool".into(),
            timeout: Duration::from_millis(200),
            pool_size: 8,
            max_item_bytes: 1024 * 1024,
            generation_refresh: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::config(msg)
                .with_operation("memcached.connect")
                .with_context("host", &self.host)
                .with_context("port", self.port))
        };
        if self.host.is_empty() {
            return bad("MEMCACHE_HOST is empty".into());
        }
        if self.port == 0 {
            return bad("MEMCACHE_PORT must be 1-65535".into());
        }
        let ns = &self.namespace;
        if ns.is_empty()
            || ns.len() > MAX_NAMESPACE_LEN
            || !ns.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad(format!(
                "memcached namespace {ns:?} must be 1-{MAX_NAMESPACE_LEN} printable ASCII characters without spaces"
            ));
        }
        if self.pool_size == 0 {
            return bad("memcached pool size must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return bad("memcached timeout must be above zero".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Generation {
    value: u64,
    read_at: Instant,
}

/// [`NodeCache`] on memcached.
///
/// - Keys: `{namespace}:{generation}:{blake3(key) hex}`, so any key fits memcached's 250-byte,
///   no-whitespace rule.
/// - Values: the versioned envelope of [`crate::codec`]; another version or garbage reads as a
///   miss (logged).
/// - `clear` increments the namespace generation (a counter in memcached under
///   `{namespace}:gen`): older entries become unreachable and age out. Never `flush_all`.
/// - Every call is bounded by `timeout`; any failure is logged and becomes a miss or skipped
///   write. Never returns `Err`.
#[derive(Debug)]
pub struct MemcachedNodeCache {
    cfg: MemcachedConfig,
    pool: Pool,
    generation: Mutex<Option<Generation>>,
    generation_key: String,
}

/// Why a call did not reach a result; logged, then treated as a miss.
#[derive(Debug)]
enum CallError {
    Timeout,
    Proto(ProtoError),
    BadGeneration(String),
}

impl From<ProtoError> for CallError {
    fn from(e: ProtoError) -> Self {
        CallError::Proto(e)
    }
}

impl MemcachedNodeCache {
    /// Builds the cache and tries one connection. A server that is down is logged, not an error:
    /// calls are misses until it comes up. `Err` only for an invalid `cfg` (`ConfigInvalid`).
    pub async fn connect(cfg: MemcachedConfig) -> Result<Self> {
        cfg.validate()?;
        let cache = Self {
            pool: Pool::new(cfg.host.clone(), cfg.port, cfg.pool_size),
            generation: Mutex::new(None),
            generation_key: format!("{}:gen", cfg.namespace),
            cfg,
        };
        let probe = cache
            .call(|mut c, cache| async move {
                let gen = cache.generation(c.conn()).await?;
                c.release();
                Ok(gen)
            })
            .await;
        match probe {
            Ok(generation) => tracing::info!(
                host = %cache.cfg.host, port = cache.cfg.port, namespace = %cache.cfg.namespace,
                generation, "memcached node cache connected"
            ),
            Err(e) => cache.log_failure("connect", None, &e),
        }
        Ok(cache)
    }

    pub fn config(&self) -> &MemcachedConfig {
        &self.cfg
    }

    /// Runs `f` with a pooled connection under the deadline. `f` releases the connection when its
    /// exchange completed; on any error or timeout the connection is dropped.
    async fn call<'a, T, F, Fut>(&'a self, f: F) -> Result<T, CallError>
    where
        F: FnOnce(proto::Pooled<'a>, &'a Self) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>> + 'a,
    {
        let work = async {
            let conn = self.pool.acquire().await?;
            f(conn, self).await
        };
        let result = match tokio::time::timeout(self.cfg.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        if result.is_err() {
            self.pool.discard_idle();
        }
        result
    }

    /// The namespace generation: our copy while fresh, else read (and created if missing).
    async fn generation(&self, conn: &mut proto::Conn) -> Result<u64, CallError> {
        if let Some(g) = self.cached_generation() {
            return Ok(g);
        }
        let max = 32;
        let value = match conn.get(&self.generation_key, max).await? {
            Some(raw) => parse_generation(&raw)?,
            None => {
                // Start from the clock, not 0: if memcached evicts or loses the counter, a fresh
                // start must not land on a generation whose entries are still stored.
                let start = unix_micros();
                match conn
                    .store(true, &self.generation_key, start.to_string().as_bytes(), 0)
                    .await?
                {
                    Stored::Stored => start,
                    // Another process created it first: use theirs.
                    Stored::NotStored => match conn.get(&self.generation_key, max).await? {
                        Some(raw) => parse_generation(&raw)?,
                        None => return Err(CallError::BadGeneration("vanished".into())),
                    },
                }
            }
        };
        self.remember_generation(value);
        Ok(value)
    }

    fn cached_generation(&self) -> Option<u64> {
        let g = (*self.generation.lock().ok()?)?;
        (g.read_at.elapsed() < self.cfg.generation_refresh).then_some(g.value)
    }

    fn remember_generation(&self, value: u64) {
        if let Ok(mut g) = self.generation.lock() {
            *g = Some(Generation {
                value,
                read_at: Instant::now(),
            });
        }
    }

    fn item_key(&self, generation: u64, key: &str) -> String {
        format!(
            "{}:{generation}:{}",
            self.cfg.namespace,
            blake3::hash(key.as_bytes()).to_hex()
        )
    }

    fn log_failure(&self, op: &'static str, key: Option<&str>, e: &CallError) {
        let err = match e {
            CallError::Timeout => Error::new(
                ErrorKind::Timeout,
                format!("no answer within {:?}", self.cfg.timeout),
            ),
            CallError::Proto(ProtoError::Io(io)) => Error::new(
                ErrorKind::Unavailable,
                format!("memcached unreachable: {io}"),
            ),
            CallError::Proto(ProtoError::Closed) => {
                Error::new(ErrorKind::Unavailable, "memcached closed the connection")
            }
            CallError::Proto(p) => Error::unexpected(p.to_string()),
            CallError::BadGeneration(why) => {
                Error::unexpected(format!("bad namespace generation: {why}"))
            }
        };
        let err = err
            .with_operation("memcached.call")
            .with_context("op", op)
            .with_context("server", format!("{}:{}", self.cfg.host, self.cfg.port))
            .with_context("namespace", &self.cfg.namespace);
        tracing::warn!(
            op,
            key = key.map(short_key).unwrap_or_default(),
            error = %err,
            "memcached node cache call failed; treated as a miss"
        );
    }
}

fn parse_generation(raw: &[u8]) -> Result<u64, CallError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| CallError::BadGeneration(String::from_utf8_lossy(raw).into_owned()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// memcached's `exptime` for `ttl`: 0 = never; whole seconds rounded up (a sub-second TTL must
/// not become "never"); above 30 days an absolute unix time, as the protocol requires.
pub fn memcached_exptime(ttl: Duration, now_unix: u64) -> u64 {
    if ttl.is_zero() {
        return 0;
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if secs > THIRTY_DAYS {
        now_unix + secs
    } else {
        secs
    }
}

/// Keys go into logs shortened: they can be long and hold anything.
fn short_key(key: &str) -> String {
    let mut s: String = key.chars().take(64).flat_map(char::escape_debug).collect();
    if key.chars().nth(64).is_some() {
        s.push_str("...");
    }
    s
}

#[async_trait]
impl NodeCache for MemcachedNodeCache {
    fn name(&self) -> &'static str {
        "memcached"
    }

    async fn get(&self, key: &str) -> Result<Option<CacheValue>> {
        let max = self.cfg.max_item_bytes;
        let raw = self
            .call(|mut c, cache| async move {
                let gen = cache.generation(c.conn()).await?;
                let raw = c.conn().get(&cache.item_key(gen, key), max).await?;
                c.release();
                Ok(raw)
            })
            .await;
        let raw = match raw {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.log_failure("get", Some(key), &e);
                return Ok(None);
            }
        };
        match codec::decode_envelope(&raw) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                tracing::warn!(key = short_key(key), error = %e,
                    "memcached node cache value unreadable; treated as a miss");
                Ok(None)
            }
        }
    }

    async fn set(&self, key: &str, value: CacheValue, ttl: Duration) -> Result<()> {
        let data = codec::encode_envelope(&value);
        // Key length is bounded (namespace ≤ 128 + generation ≤ 20 + 64 hex + 2).
        let item = data.len() + MAX_NAMESPACE_LEN + 86 + ITEM_OVERHEAD;
        if item > self.cfg.max_item_bytes {
            tracing::info!(
                key = short_key(key),
                encoded_bytes = data.len(),
                max_item_bytes = self.cfg.max_item_bytes,
                "value too large for memcached; not cached"
            );
            return Ok(());
        }
        let exptime = memcached_exptime(ttl, unix_now());
        let data = &data;
        let outcome = self
            .call(|mut c, cache| async move {
                let gen = cache.generation(c.conn()).await?;
                let stored = c
                    .conn()
                    .store(false, &cache.item_key(gen, key), data, exptime)
                    .await?;
                c.release();
                Ok(stored)
            })
            .await;
        match outcome {
            Ok(Stored::Stored) => {}
            Ok(Stored::NotStored) => {
                tracing::info!(key = short_key(key), "memcached did not store the value")
            }
            Err(CallError::Proto(ProtoError::Server(line))) if line.contains("too large") => {
                tracing::info!(
                    key = short_key(key),
                    encoded_bytes = data.len(),
                    reply = %line,
                    "memcached refused the value as too large; not cached"
                );
            }
            Err(e) => self.log_failure("set", Some(key), &e),
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let outcome = self
            .call(|mut c, cache| async move {
                let gen = cache.generation(c.conn()).await?;
                c.conn().delete(&cache.item_key(gen, key)).await?;
                c.release();
                Ok(())
            })
            .await;
        if let Err(e) = outcome {
            self.log_failure("delete", Some(key), &e);
        }
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        let outcome = self
            .call(|mut c, cache| async move {
                let next = match c.conn().incr(&cache.generation_key).await? {
                    Some(n) => n,
                    None => {
                        // No counter (never created, or evicted): any fresh start is a new
                        // generation, since generations start from the clock.
                        let start = unix_micros();
                        let key = &cache.generation_key;
                        match c
                            .conn()
                            .store(true, key, start.to_string().as_bytes(), 0)
                            .await?
                        {
                            Stored::Stored => start,
                            Stored::NotStored => c
                                .conn()
                                .incr(key)
                                .await?
                                .ok_or_else(|| CallError::BadGeneration("vanished".into()))?,
                        }
                    }
                };
                c.release();
                cache.remember_generation(next);
                Ok(next)
            })
            .await;
        match outcome {
            Ok(generation) => tracing::info!(
                namespace = %self.cfg.namespace, generation, "memcached node cache cleared"
            ),
            Err(e) => self.log_failure("clear", None, &e),
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exptime_follows_the_thirty_day_rule() {
        let now = 1_700_000_000;
        assert_eq!(memcached_exptime(Duration::ZERO, now), 0);
        assert_eq!(memcached_exptime(Duration::from_millis(10), now), 1);
        assert_eq!(memcached_exptime(Duration::from_secs(3600), now), 3600);
        assert_eq!(
            memcached_exptime(Duration::from_secs(THIRTY_DAYS), now),
            THIRTY_DAYS
        );
        assert_eq!(
            memcached_exptime(Duration::from_secs(THIRTY_DAYS + 1), now),
            now + THIRTY_DAYS + 1
        );
    }

    #[test]
    fn config_is_validated() {
        let ok = MemcachedConfig::new("127.0.0.1", 11211);
        assert!(ok.validate().is_ok());
        for bad in [
            MemcachedConfig {
                host: String::new(),
                ..ok.clone()
            },
            MemcachedConfig {
                port: 0,
                ..ok.clone()
            },
            MemcachedConfig {
                namespace: "has space".into(),
                ..ok.clone()
            },
            MemcachedConfig {
                namespace: "x".repeat(129),
                ..ok.clone()
            },
            MemcachedConfig {
                namespace: String::new(),
                ..ok.clone()
            },
            MemcachedConfig {
                pool_size: 0,
                ..ok.clone()
            },
            MemcachedConfig {
                timeout: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert_eq!(
                bad.validate().unwrap_err().kind(),
                ErrorKind::ConfigInvalid,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn item_keys_fit_memcached_rules_for_any_input() {
        let cfg = MemcachedConfig {
            namespace: "n".repeat(MAX_NAMESPACE_LEN),
            ..MemcachedConfig::new("h", 1)
        };
        let cache = MemcachedNodeCache {
            pool: Pool::new("h".into(), 1, 1),
            generation: Mutex::new(None),
            generation_key: String::new(),
            cfg,
        };
        for key in ["", "a b\r\nc", &"x".repeat(10_000), "ünï\0"] {
            let k = cache.item_key(u64::MAX, key);
            assert!(k.len() < 250, "{}", k.len());
            assert!(k.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}
