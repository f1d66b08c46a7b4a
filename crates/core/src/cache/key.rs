//! The node-cache key: the one place that decides when two node runs are "the same".

use crate::CacheValue;

use super::codec::{encode_into, put_str};

/// blake3 `derive_key` context: separates these digests from any other blake3 use, and names the
/// layout version. Change the `v1` if the layout below ever changes.
const KEY_CONTEXT: &str = "nodetool node-cache key v1";

/// The cache key of a node run: 64 lowercase hex characters.
///
/// `blake3` (in `derive_key` mode with a fixed context) over the length-prefixed `user_id`,
/// `node_type` and `node_version`, then the canonical encoding of `inputs` (see
/// [`super::codec`]: explicit type tags, length-prefixed strings, map keys in byte order, floats
/// by bit pattern). No process-local state (no seeded hash, no `Debug` output) goes in, so every
/// process on every machine computes the same key for the same node and inputs.
///
/// `inputs` are the node's resolved input values (the properties after upstream values were
/// assigned). Callers MUST replace every asset or `memory://` reference in them with the content
/// digest of the bytes it points to (e.g. `{"type": "image", "digest": "blake3:<hex>"}`), so that a
/// changed asset under the same id misses and the same bytes under two ids hit.
/// `node_version` is the node type's implementation version: bump it when a node's behaviour
/// changes and its old cached outputs become wrong.
pub fn node_cache_key(
    user_id: &str,
    node_type: &str,
    node_version: &str,
    inputs: &CacheValue,
) -> String {
    let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    put_str(&mut hasher, user_id.as_bytes());
    put_str(&mut hasher, node_type.as_bytes());
    put_str(&mut hasher, node_version.as_bytes());
    encode_into(&mut hasher, inputs);
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn inputs() -> CacheValue {
        CacheValue::map([
            ("width", CacheValue::Int(512)),
            ("scale", CacheValue::Float(1.5)),
            ("prompt", "a cat".into()),
        ])
    }

    #[test]
    fn follows_the_documented_layout() {
        // Built by hand from the layout in the docs, so a change to the encoding (which would
        // make every deployed cache miss) fails here rather than silently.
        fn lp(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        let mut expected = Vec::new();
        lp(&mut expected, b"user-1");
        lp(&mut expected, b"nodetool.image.Resize");
        lp(&mut expected, b"3");
        expected.push(0x08); // map of 3, keys in byte order: prompt, scale, width
        expected.extend_from_slice(&3u64.to_le_bytes());
        lp(&mut expected, b"prompt");
        expected.push(0x05);
        lp(&mut expected, b"a cat");
        lp(&mut expected, b"scale");
        expected.push(0x04);
        expected.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        lp(&mut expected, b"width");
        expected.push(0x03);
        expected.extend_from_slice(&512i64.to_le_bytes());
        let want = blake3::Hasher::new_derive_key("nodetool node-cache key v1")
            .update(&expected)
            .finalize()
            .to_hex()
            .to_string();

        let key = node_cache_key("user-1", "nodetool.image.Resize", "3", &inputs());
        assert_eq!(key, want);
        assert_eq!(key.len(), 64);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn map_insertion_order_does_not_matter() {
        let a = CacheValue::map([("a", CacheValue::Int(1)), ("b", CacheValue::Int(2))]);
        let b = CacheValue::map([("b", CacheValue::Int(2)), ("a", CacheValue::Int(1))]);
        assert_eq!(
            node_cache_key("u", "t", "1", &a),
            node_cache_key("u", "t", "1", &b)
        );
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = node_cache_key("u", "t", "1", &inputs());
        assert_ne!(base, node_cache_key("u2", "t", "1", &inputs()));
        assert_ne!(base, node_cache_key("u", "t2", "1", &inputs()));
        assert_ne!(base, node_cache_key("u", "t", "2", &inputs()));
        assert_ne!(base, node_cache_key("u", "t", "1", &CacheValue::Null));
        // Boundaries between the string parts are unambiguous.
        assert_ne!(
            node_cache_key("ab", "c", "1", &CacheValue::Null),
            node_cache_key("a", "bc", "1", &CacheValue::Null)
        );
        // Int and Float of the same number are different inputs.
        assert_ne!(
            node_cache_key("u", "t", "1", &CacheValue::Int(1)),
            node_cache_key("u", "t", "1", &CacheValue::Float(1.0))
        );
    }
}
