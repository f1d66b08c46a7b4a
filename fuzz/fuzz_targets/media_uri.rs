//! Media refs' URIs (`nodetool_engine::media`): `classify_uri`, `parse_data_uri` (with its size
//! limit), `file_uri_path`, `normalize_lexically` and `inline_bytes`. All pure.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use nodetool_engine::media::{
    classify_uri, file_uri_path, inline_bytes, normalize_lexically, parse_data_uri, preview,
    UriKind,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the data-URI limit, so the limit logic is fuzzed too.
    let (limit, rest) = match data.split_first() {
        Some((b, rest)) => (u64::from(*b) * 16, rest),
        None => return,
    };
    let Ok(uri) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = preview(uri);
    match classify_uri(uri) {
        Ok(UriKind::Data(d)) => {
            if let Ok(parsed) = parse_data_uri(d, limit) {
                assert!(parsed.bytes.len() as u64 <= limit, "limit {limit} exceeded");
                assert!(!parsed.media_type.is_empty());
            }
        }
        Ok(UriKind::File(path)) => {
            assert!(!path.as_os_str().is_empty());
        }
        Ok(_) | Err(_) => {}
    }
    if let Ok(parsed) = parse_data_uri(uri, limit) {
        assert!(parsed.bytes.len() as u64 <= limit, "limit {limit} exceeded");
    }
    if let Ok(path) = file_uri_path(uri) {
        assert!(!path.as_os_str().is_empty());
        assert!(!path.to_string_lossy().contains('\0'));
    }
    let path = Path::new(uri);
    let norm = normalize_lexically(path);
    assert!(
        norm.components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir)),
        "{norm:?} still has . or .."
    );
    assert_eq!(normalize_lexically(&norm), norm, "not idempotent");
    if path.is_absolute() {
        assert!(norm.is_absolute(), "{norm:?} escaped the root");
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(uri) {
        if let Ok(bytes) = inline_bytes(&v, limit) {
            assert!(bytes.len() as u64 <= limit);
        }
    }
});
