//! JSON (the engine's values) ↔ MessagePack (the bridge's values).
//!
//! Binary never travels inside values in either direction: refs go as `blobs` and come back as
//! blobs ([`crate::node`]). What is left here is the lossless part, plus the few msgpack values
//! JSON has no form for: a timestamp extension becomes its RFC 3339 text, any other extension
//! `null` (as the worker's own decoder does), a non-finite float `null`, a non-string map key its
//! JSON text.

use rmpv::Value as Mp;
use serde_json::{Map, Number, Value as Json};

/// A JSON value as msgpack.
pub fn to_msgpack(v: &Json) -> Mp {
    match v {
        Json::Null => Mp::Nil,
        Json::Bool(b) => Mp::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else {
                Mp::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Mp::from(s.as_str()),
        Json::Array(items) => Mp::Array(items.iter().map(to_msgpack).collect()),
        Json::Object(map) => Mp::Map(
            map.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// A msgpack value as JSON. Binary becomes a list of byte values (NodeTool's JSON form of
/// bytes); callers that can store it as a blob do so before this is reached.
pub fn to_json(v: &Mp) -> Json {
    match v {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => Json::from(i),
            (None, Some(u)) => Json::from(u),
            _ => Json::Null,
        },
        Mp::F32(f) => float(f64::from(*f)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => match s.as_str() {
            Some(s) => Json::String(s.to_owned()),
            None => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        },
        Mp::Binary(b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        Mp::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Mp::Map(entries) => Json::Object(to_json_map(entries)),
        Mp::Ext(-1, data) => timestamp(data).map_or(Json::Null, Json::String),
        Mp::Ext(..) => Json::Null,
    }
}

/// A msgpack map's entries as a JSON object.
pub fn to_json_map(entries: &[(Mp, Mp)]) -> Map<String, Json> {
    entries
        .iter()
        .map(|(k, v)| (key_text(k), to_json(v)))
        .collect()
}

/// A map key as text: strings as they are, anything else as its JSON form.
pub fn key_text(k: &Mp) -> String {
    match k {
        Mp::String(s) => s
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => to_json(other).to_string(),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// The msgpack timestamp extension (32, 64 or 96 bit) as RFC 3339 UTC text.
fn timestamp(data: &[u8]) -> Option<String> {
    let (secs, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..12].try_into().ok()?),
            u32::from_be_bytes(data[0..4].try_into().ok()?),
        ),
        _ => return None,
    };
    if nanos >= 1_000_000_000 {
        return None;
    }
    Some(rfc3339(secs, nanos))
}

/// Civil date from days since the epoch (Howard Hinnant's algorithm).
fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if nanos == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips() {
        let v = json!({"a": [1, -2, 3.5, true, null, "x"], "b": {"c": 18446744073709551615u64}});
        assert_eq!(to_json(&to_msgpack(&v)), v);
    }

    #[test]
    fn msgpack_only_values_have_a_json_form() {
        assert_eq!(to_json(&Mp::F64(f64::NAN)), Json::Null);
        assert_eq!(to_json(&Mp::Binary(vec![1, 2])), json!([1, 2]));
        assert_eq!(to_json(&Mp::Ext(5, vec![0])), Json::Null);
        assert_eq!(
            to_json(&Mp::Map(vec![(Mp::from(1), Mp::from("one"))])),
            json!({"1": "one"})
        );
        // 2024-01-02T03:04:05Z as a 32-bit timestamp.
        let secs: u32 = 1_704_164_645;
        assert_eq!(
            to_json(&Mp::Ext(-1, secs.to_be_bytes().to_vec())),
            json!("2024-01-02T03:04:05Z")
        );
        let v64: u64 = (500u64 << 34) | u64::from(secs);
        assert_eq!(
            to_json(&Mp::Ext(-1, v64.to_be_bytes().to_vec())),
            json!("2024-01-02T03:04:05.000000500Z")
        );
    }
}
