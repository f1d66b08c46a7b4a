//! HTTP `Range` and validator headers of object serving (`nodetool_server::http`): `parse_range`,
//! `ByteRange::resolve` against object sizes, and `If-None-Match` / `If-Modified-Since` /
//! `If-Range` / ETag handling with fuzzed header values.
#![no_main]

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use nodetool_core::{ObjectMeta, StorageKey};
use nodetool_server::http::{
    etag_header, if_range_matches, not_modified, parse_range, RangeRequest,
};

fuzz_target!(|data: &[u8]| {
    // First 8 bytes: the object size; the rest: the header value.
    if data.len() < 8 {
        return;
    }
    let (size, rest) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    match parse_range(value) {
        RangeRequest::One(range) => {
            // What we print is what we parse.
            assert_eq!(parse_range(&range.to_string()), RangeRequest::One(range));
            for size in [size, 0, 1, size / 2, u64::MAX] {
                if let Ok(r) = range.resolve(size) {
                    assert!(r.start < r.end && r.end <= size, "{range} on {size}: {r:?}");
                }
            }
        }
        RangeRequest::Full | RangeRequest::Invalid => {}
    }
    let meta = ObjectMeta {
        key: StorageKey::new("fuzz/object.bin").expect("key"),
        size,
        last_modified: chrono::DateTime::from_timestamp((size % (1 << 34)) as i64, 0)
            .unwrap_or_default(),
        etag: Some(value.to_owned()),
        content_type: None,
    };
    if let Some(tag) = etag_header(&meta) {
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() >= 3,
            "{tag:?}"
        );
    }
    let Ok(hv) = HeaderValue::from_bytes(rest) else {
        return;
    };
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(name, hv.clone());
        let _ = not_modified(&headers, &meta);
        let _ = if_range_matches(&headers, &meta);
    }
});
