//! Storage keys and the URL forms they travel in: `StorageKey`/`StoragePrefix` validation, the
//! server's route decoding (axum percent-decodes `{*key}`, then `StorageKey::new`) and signed-URL
//! path decoding, URL building (`join_url`), URL signing, and Supabase's `!XX` name escaping.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nodetool_core::url::join_url;
use nodetool_core::{StorageKey, StoragePrefix};
use nodetool_storage::signing::{decoded_path, UrlSigner};
use nodetool_storage_supabase::{decode_name, encode_name};

fn check_key(key: &StorageKey) {
    let s = key.as_str();
    assert!(!s.is_empty() && s.len() <= 1024, "bad length: {s:?}");
    assert!(!s.contains('\\'), "backslash accepted: {s:?}");
    assert!(
        !s.chars().any(|c| c.is_ascii_control()),
        "control char accepted: {s:?}"
    );
    for seg in s.split('/') {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "traversal segment accepted: {s:?}"
        );
    }
    // A built URL decodes back to exactly the key: nothing in a key can change the route.
    let url = join_url("http://127.0.0.1:7777/api/storage/", key);
    assert_eq!(decoded_path(&url), format!("/api/storage/{s}"), "url {url}");
    assert!(
        !url["http://".len()..].contains(['?', '#', ' ']),
        "url {url}"
    );
    // A URL we sign verifies against the path the server decodes.
    let signer = UrlSigner::new(&[7u8; 32], Duration::from_secs(600)).expect("signer");
    let now = chrono::Utc::now();
    let signed = signer.sign_url(&url, now);
    let query = signed.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut expires = "";
    let mut sig = "";
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = v,
            Some(("sig", v)) => sig = v,
            _ => {}
        }
    }
    let path = nodetool_server::auth::signed_path(&signed).expect("a storage path");
    signer
        .verify(&path, expires, sig, now)
        .expect("a freshly signed URL verifies");
    // Supabase names: the escape round-trips, and only characters Supabase accepts are sent.
    let name = encode_name(s);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/!.*'() &$=@;:+,?-".contains(&b)),
        "unsafe supabase name {name:?}"
    );
    assert_eq!(decode_name(&name).as_deref(), Some(s));
}

/// True when `name` has a `!` followed by two hex digits (an escape `encode_name` could write).
fn has_escape(name: &str) -> bool {
    let b = name.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'!'
            && b.len() > i + 2
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = StorageKey::new(s) {
        check_key(&key);
        let _ = key.file_name();
        assert_eq!(key.segments().count(), s.split('/').count());
    }
    if let Ok(prefix) = StoragePrefix::new(s) {
        if let Ok(key) = StorageKey::new(format!("{}x", prefix.as_str())) {
            assert!(prefix.matches(&key));
            if !prefix.is_empty() {
                if let Some(rest) = key.strip_prefix(&prefix) {
                    assert_eq!(rest.as_str(), "x");
                }
            }
        }
    }
    // The route's `{*key}`, as axum hands it over: percent-decoded, UTF-8.
    if let Ok(decoded) = percent_encoding::percent_decode_str(s).decode_utf8() {
        if let Ok(key) = StorageKey::new(decoded.as_ref()) {
            check_key(&key);
        }
    }
    // Signed-URL paths: whatever arrives, a covered path is under /api/storage/.
    if let Some(path) = nodetool_server::auth::signed_path(s) {
        assert!(path.starts_with("/api/storage/"), "{path:?}");
    }
    let _ = decoded_path(s);
    // Names other clients wrote: a `!` without two hex digits after it is kept as it is.
    let decoded = decode_name(s);
    if !has_escape(s) {
        assert_eq!(
            decoded.as_deref(),
            Some(s),
            "a name without escapes changed"
        );
    }
});
