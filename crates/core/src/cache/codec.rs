//! The one binary encoding of a [`CacheValue`]: canonical (so it can be hashed into a cache key)
//! and self-delimiting (so it can be stored and read back).
//!
//! Why our own format rather than msgpack or postcard: the value type is a closed enum of eight
//! variants, the cache key needs a canonical byte form with explicit type tags anyway (msgpack
//! picks the smallest integer width and has two string forms, so "equal value, equal bytes" would
//! need care), and a decoder we own is easy to make safe against hostile input: every length is
//! checked against the bytes that remain before anything is allocated, and nesting is bounded.
//!
//! Layout (all integers little-endian):
//!
//! | tag  | variant | body                                              |
//! |------|---------|---------------------------------------------------|
//! | 0x00 | Null    | —                                                 |
//! | 0x01 | false   | —                                                 |
//! | 0x02 | true    | —                                                 |
//! | 0x03 | Int     | i64 (8 bytes)                                     |
//! | 0x04 | Float   | f64 bit pattern (8 bytes), so NaN and -0.0 are exact |
//! | 0x05 | String  | u64 byte length, UTF-8 bytes                      |
//! | 0x06 | Bytes   | u64 byte length, bytes                            |
//! | 0x07 | List    | u64 item count, items                             |
//! | 0x08 | Map     | u64 entry count, (u64 key length, key, value)* in ascending key-byte order |
//!
//! A stored value is wrapped in an envelope: [`MAGIC`], one version byte ([`VERSION`]), then the
//! encoded value. A reader that sees another magic or version treats the entry as a miss.

use std::collections::BTreeMap;

use crate::{CacheValue, Error, ErrorKind, Result};
use bytes::Bytes;

/// First bytes of every stored value ("NodeTool Cache Value").
pub const MAGIC: &[u8; 4] = b"NTCV";
/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Deepest nesting a decoder accepts; deeper input is refused, not a stack overflow.
pub const MAX_DEPTH: usize = 128;

const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_INT: u8 = 3;
const T_FLOAT: u8 = 4;
const T_STRING: u8 = 5;
const T_BYTES: u8 = 6;
const T_LIST: u8 = 7;
const T_MAP: u8 = 8;

/// Where encoded bytes go: a buffer, or straight into a hasher (no intermediate copy for keys).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for blake3::Hasher {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

pub(crate) fn put_len(out: &mut impl Sink, len: usize) {
    out.put(&(len as u64).to_le_bytes());
}

/// Length-prefixed bytes.
pub(crate) fn put_str(out: &mut impl Sink, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.put(bytes);
}

/// Writes the canonical encoding of `value`.
pub(crate) fn encode_into(out: &mut impl Sink, value: &CacheValue) {
    match value {
        CacheValue::Null => out.put(&[T_NULL]),
        CacheValue::Bool(false) => out.put(&[T_FALSE]),
        CacheValue::Bool(true) => out.put(&[T_TRUE]),
        CacheValue::Int(i) => {
            out.put(&[T_INT]);
            out.put(&i.to_le_bytes());
        }
        CacheValue::Float(f) => {
            out.put(&[T_FLOAT]);
            out.put(&f.to_bits().to_le_bytes());
        }
        CacheValue::String(s) => {
            out.put(&[T_STRING]);
            put_str(out, s.as_bytes());
        }
        CacheValue::Bytes(b) => {
            out.put(&[T_BYTES]);
            put_str(out, b);
        }
        CacheValue::List(items) => {
            out.put(&[T_LIST]);
            put_len(out, items.len());
            for item in items {
                encode_into(out, item);
            }
        }
        CacheValue::Map(map) => {
            // BTreeMap<String, _> iterates in ascending key-byte order: canonical by construction.
            out.put(&[T_MAP]);
            put_len(out, map.len());
            for (k, v) in map {
                put_str(out, k.as_bytes());
                encode_into(out, v);
            }
        }
    }
}

/// The canonical encoding of `value`, without envelope.
pub fn encode(value: &CacheValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.approx_size().min(1 << 20));
    encode_into(&mut out, value);
    out
}

/// `value` in the versioned storage envelope.
pub fn encode_envelope(value: &CacheValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + value.approx_size().min(1 << 20));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    encode_into(&mut out, value);
    out
}

/// Reads a value out of a storage envelope. Another magic or version, or a malformed body, is an
/// `Err` (kind `Unsupported` for a foreign version, `InvalidInput` otherwise); callers log it and
/// treat it as a miss.
pub fn decode_envelope(bytes: &[u8]) -> Result<CacheValue> {
    let fail = |kind, msg: &str| {
        Error::new(kind, msg.to_owned())
            .with_operation("cache.decode")
            .with_context("len", bytes.len())
    };
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(fail(
            ErrorKind::InvalidInput,
            "not a nodetool cache value (bad magic)",
        ));
    };
    match rest.split_first() {
        Some((&VERSION, body)) => decode(body),
        Some((v, _)) => Err(fail(
            ErrorKind::Unsupported,
            &format!("cache value has encoding version {v}, this build reads {VERSION}"),
        )),
        None => Err(fail(ErrorKind::InvalidInput, "truncated cache value")),
    }
}

/// Decodes one canonical value that must span all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<CacheValue> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let value = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(r.error("trailing bytes after the value"));
    }
    Ok(value)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, msg: &str) -> Error {
        Error::invalid_input(format!("malformed cache value: {msg}"))
            .with_operation("cache.decode")
            .with_context("offset", self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.error("truncated"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A length or count, refused unless `len * min_item` bytes are still there, so hostile
    /// input cannot make us allocate more than it sent.
    fn len(&mut self, min_item: usize) -> Result<usize> {
        let len = self.u64()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if len.saturating_mul(min_item as u64) > remaining {
            return Err(self.error("length exceeds the data"));
        }
        Ok(len as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.len(1)?;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| self.error("string is not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<CacheValue> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let tag = self.take(1)?[0];
        Ok(match tag {
            T_NULL => CacheValue::Null,
            T_FALSE => CacheValue::Bool(false),
            T_TRUE => CacheValue::Bool(true),
            T_INT => CacheValue::Int(self.u64()? as i64),
            T_FLOAT => CacheValue::Float(f64::from_bits(self.u64()?)),
            T_STRING => CacheValue::String(self.string()?),
            T_BYTES => {
                let n = self.len(1)?;
                CacheValue::Bytes(Bytes::copy_from_slice(self.take(n)?))
            }
            T_LIST => {
                let n = self.len(1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                CacheValue::List(items)
            }
            T_MAP => {
                // Each entry is at least a key length (8) and a tag (1).
                let n = self.len(9)?;
                let mut map = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string()?;
                    let v = self.value(depth + 1)?;
                    map.insert(k, v);
                }
                CacheValue::Map(map)
            }
            other => return Err(self.error(&format!("unknown type tag {other:#04x}"))),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> CacheValue {
        CacheValue::map([
            ("null", CacheValue::Null),
            ("t", true.into()),
            ("f", false.into()),
            ("int", CacheValue::Int(i64::MIN)),
            ("nan", CacheValue::Float(f64::NAN)),
            ("negzero", CacheValue::Float(-0.0)),
            ("s", "ünï\0code".into()),
            ("b", CacheValue::from(vec![0u8, 1, 255])),
            (
                "l",
                CacheValue::List(vec![
                    CacheValue::Int(1),
                    CacheValue::map([("x", 2.5.into())]),
                ]),
            ),
        ])
    }

    #[test]
    fn round_trips_every_variant_bit_exactly() {
        let v = sample();
        let back = decode_envelope(&encode_envelope(&v)).unwrap();
        // NaN != NaN, so compare encodings: they are bit-exact.
        assert_eq!(encode(&back), encode(&v));
        let CacheValue::Map(m) = back else { panic!() };
        assert!(matches!(m["negzero"], CacheValue::Float(f) if f.to_bits() == (-0.0f64).to_bits()));
    }

    #[test]
    fn type_tags_keep_equal_looking_values_apart() {
        assert_ne!(encode(&CacheValue::Int(1)), encode(&CacheValue::Float(1.0)));
        assert_ne!(
            encode(&"ab".into()),
            encode(&CacheValue::from(b"ab".to_vec()))
        );
        // Length prefixes: ["ab","c"] vs ["a","bc"].
        let a = CacheValue::List(vec!["ab".into(), "c".into()]);
        let b = CacheValue::List(vec!["a".into(), "bc".into()]);
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn foreign_version_and_magic_are_refused() {
        let mut bytes = encode_envelope(&"x".into());
        bytes[4] = VERSION + 1;
        assert_eq!(
            decode_envelope(&bytes).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert!(decode_envelope(b"\x80\x04pickle").is_err());
        assert!(decode_envelope(b"NTCV").is_err());
        assert!(decode_envelope(b"").is_err());
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics_or_huge_allocations() {
        let cases: Vec<Vec<u8>> = vec![
            vec![T_STRING, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![T_LIST, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            vec![T_MAP, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            vec![T_STRING, 2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0x28],
            vec![T_INT, 1, 2],
            vec![0x42],
            vec![T_NULL, T_NULL],
            [T_LIST, 1, 0, 0, 0, 0, 0, 0, 0].repeat(200),
        ];
        for case in cases {
            assert!(decode(&case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn truncations_of_a_valid_value_are_all_errors() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
