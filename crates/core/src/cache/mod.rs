//! The node-output cache contract and the value it stores. Lossy by design: a cache may forget
//! anything at any time.

pub mod codec;
mod key;

pub use key::node_cache_key;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// A cached value: a node's outputs (a `Map` of output name → value) or any part of one.
///
/// JSON-like, plus raw `Bytes` so image or audio data is stored without base64. It is a closed,
/// typed tree: caches encode it with their own versioned format, never an executable one.
/// `Map` is a `BTreeMap`, so its order (by key bytes) is canonical: two equal values encode to the
/// same bytes, which the cache key relies on.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum CacheValue {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Bytes(#[serde(with = "bytes_serde")] Bytes),
    List(Vec<CacheValue>),
    Map(BTreeMap<String, CacheValue>),
}

impl CacheValue {
    /// A `Map` from `(name, value)` pairs, e.g. a node's outputs.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, CacheValue)>) -> Self {
        CacheValue::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Approximate heap size in bytes, used to weigh entries against a byte budget.
    pub fn approx_size(&self) -> usize {
        const NODE: usize = std::mem::size_of::<CacheValue>();
        match self {
            CacheValue::Null | CacheValue::Bool(_) | CacheValue::Int(_) | CacheValue::Float(_) => {
                NODE
            }
            CacheValue::String(s) => NODE + s.len(),
            CacheValue::Bytes(b) => NODE + b.len(),
            CacheValue::List(items) => NODE + items.iter().map(Self::approx_size).sum::<usize>(),
            CacheValue::Map(map) => {
                NODE + map
                    .iter()
                    .map(|(k, v)| k.len() + 24 + v.approx_size())
                    .sum::<usize>()
            }
        }
    }
}

impl From<bool> for CacheValue {
    fn from(v: bool) -> Self {
        CacheValue::Bool(v)
    }
}

impl From<i64> for CacheValue {
    fn from(v: i64) -> Self {
        CacheValue::Int(v)
    }
}

impl From<f64> for CacheValue {
    fn from(v: f64) -> Self {
        CacheValue::Float(v)
    }
}

impl From<&str> for CacheValue {
    fn from(v: &str) -> Self {
        CacheValue::String(v.to_owned())
    }
}

impl From<String> for CacheValue {
    fn from(v: String) -> Self {
        CacheValue::String(v)
    }
}

impl From<Bytes> for CacheValue {
    fn from(v: Bytes) -> Self {
        CacheValue::Bytes(v)
    }
}

impl From<Vec<u8>> for CacheValue {
    fn from(v: Vec<u8>) -> Self {
        CacheValue::Bytes(Bytes::from(v))
    }
}

impl From<Vec<CacheValue>> for CacheValue {
    fn from(v: Vec<CacheValue>) -> Self {
        CacheValue::List(v)
    }
}

impl From<BTreeMap<String, CacheValue>> for CacheValue {
    fn from(v: BTreeMap<String, CacheValue>) -> Self {
        CacheValue::Map(v)
    }
}

/// JSON numbers become `Int` when they fit an `i64`, else `Float` (so `u64` above `i64::MAX`
/// loses precision, as it would in JavaScript).
impl From<&serde_json::Value> for CacheValue {
    fn from(v: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => CacheValue::Null,
            J::Bool(b) => CacheValue::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => CacheValue::Int(i),
                None => CacheValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => CacheValue::String(s.clone()),
            J::Array(items) => CacheValue::List(items.iter().map(CacheValue::from).collect()),
            J::Object(map) => CacheValue::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), CacheValue::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<serde_json::Value> for CacheValue {
    fn from(v: serde_json::Value) -> Self {
        CacheValue::from(&v)
    }
}

/// `Bytes` as a serde byte string (core's `bytes` dependency has no serde feature).
mod bytes_serde {
    use bytes::Bytes;
    use serde::{de, Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string or a sequence of bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            // Self-describing text formats (JSON) hand bytes over as a sequence of numbers.
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes::from(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Memoised node outputs, shared by every job of a process (and, for a networked backend, by
/// every process that points at it).
///
/// Contract (checked for every implementation by `nodetool_testkit::cache_suite`):
/// - Keys are any `&str`, of any length and content; an implementation with key limits MUST map
///   keys itself (e.g. hash them) rather than refuse or truncate them.
/// - `get` of a key never set, deleted, expired or evicted MUST be `Ok(None)`. A hit MUST return a
///   value equal to the one `set` (an independent copy, not shared mutable state).
/// - `set` overwrites. `ttl` of `Duration::ZERO` means no expiry; otherwise the entry SHOULD be gone
///   once `ttl` has passed (a backend may round to whole seconds).
/// - Lossy: a backend failure (connection refused, timeout, garbage reply, undecodable or
///   foreign-version value, value over a size limit) MUST be logged with `tracing` (with its
///   cause) and reported as a miss (`Ok(None)`) or a skipped write (`Ok(())`). Implementations
///   SHOULD NOT return `Err` at all; callers MUST treat an `Err` as a miss and never fail a job
///   because of it.
/// - Every call SHOULD be bounded in time (milliseconds for a networked backend), so a hung
///   backend costs a job a miss, not a stall.
/// - `clear` MUST remove (or make unreachable) only this cache's entries, never other data
///   sharing the backend (no `flush_all`).
#[async_trait]
pub trait NodeCache: Send + Sync + fmt::Debug + 'static {
    /// Short backend name for logs and `storage info`, e.g. `"memory"` or `"memcached"`.
    fn name(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<CacheValue>>;
    async fn set(&self, key: &str, value: CacheValue, ttl: Duration) -> Result<()>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn clear(&self) -> Result<()>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_serde_with_bytes() {
        let v = CacheValue::map([
            ("image", CacheValue::from(vec![0u8, 255, 7])),
            ("n", CacheValue::Int(-3)),
            ("f", CacheValue::Float(0.5)),
            ("l", CacheValue::List(vec![CacheValue::Null, true.into()])),
        ]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<CacheValue>(&json).unwrap(), v);
    }

    #[test]
    fn from_json_keeps_integers_and_nesting() {
        let j = serde_json::json!({"a": [1, 2.5, "x", null, {"b": false}], "big": u64::MAX});
        let v = CacheValue::from(&j);
        let CacheValue::Map(m) = &v else {
            panic!("not a map: {v:?}")
        };
        assert_eq!(
            m["a"],
            CacheValue::List(vec![
                CacheValue::Int(1),
                CacheValue::Float(2.5),
                "x".into(),
                CacheValue::Null,
                CacheValue::map([("b", false.into())]),
            ])
        );
        assert_eq!(m["big"], CacheValue::Float(u64::MAX as f64));
    }

    #[test]
    fn approx_size_grows_with_content() {
        let small = CacheValue::from("a");
        let big = CacheValue::from("a".repeat(1000));
        assert!(big.approx_size() >= small.approx_size() + 999);
    }
}
