//! HTTP details of object serving: `Range` (RFC 9110 §14), validators and conditional requests
//! (§13), and the headers every object response carries.

use axum::http::{header, HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use nodetool_core::{ByteRange, ObjectMeta};

/// What a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, another unit, several ranges, or an `If-Range` that no longer matches:
    /// send the whole object (RFC 9110 allows ignoring these).
    Full,
    One(ByteRange),
    /// Syntactically a byte range but invalid (`bytes=9-3`): 416.
    Invalid,
}

/// Parses a `Range` header value.
pub fn parse_range(value: &str) -> RangeRequest {
    let Some(spec) = value
        .trim()
        .strip_prefix("bytes=")
        .or_else(|| value.trim().strip_prefix("Bytes="))
    else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        // Multipart/byteranges is not implemented; a full 200 is a valid answer.
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.trim(), last.trim()) {
        ("", n) if digits(n) => n.parse().map_or(RangeRequest::Full, |n| {
            RangeRequest::One(ByteRange::Suffix(n))
        }),
        (a, "") if digits(a) => a.parse().map_or(RangeRequest::Full, |a| {
            RangeRequest::One(ByteRange::From(a))
        }),
        (a, b) if digits(a) && digits(b) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(start), Ok(end)) if start <= end => {
                RangeRequest::One(ByteRange::Bounded { start, end })
            }
            (Ok(_), Ok(_)) => RangeRequest::Invalid,
            // Past u64: no object is that large, so a start there is unsatisfiable.
            _ => RangeRequest::Invalid,
        },
        _ => RangeRequest::Full,
    }
}

/// The strong ETag to send, quoted. Backends give bare or quoted tags; a weak one is not a
/// strong validator, so it is not used for ranges.
pub fn etag_header(meta: &ObjectMeta) -> Option<String> {
    let raw = meta.etag.as_deref()?.trim();
    if raw.is_empty() || raw.starts_with("W/") {
        return None;
    }
    let bare = raw.trim_matches('"');
    if bare.is_empty() || bare.contains('"') {
        return None;
    }
    Some(format!("\"{bare}\""))
}

fn http_date(t: DateTime<Utc>) -> String {
    let secs = u64::try_from(t.timestamp()).unwrap_or(0);
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// `If-None-Match` (weak comparison) or, without it, `If-Modified-Since` (second precision; a
/// malformed date is ignored). True when the client's copy is current: answer 304.
pub fn not_modified(headers: &HeaderMap, meta: &ObjectMeta) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        let Some(ours) = meta
            .etag
            .as_deref()
            .map(|e| e.trim().trim_start_matches("W/").trim_matches('"'))
        else {
            return inm.trim() == "*";
        };
        return inm
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == ours);
    }
    let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let Ok(ims) = ims.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    // HTTP dates have whole seconds: compare at that precision.
    u64::try_from(meta.last_modified.timestamp()).is_ok_and(|ours| ours <= ims.as_secs())
}

/// Whether `If-Range` (if present) still matches, so the `Range` may be honoured.
pub fn if_range_matches(headers: &HeaderMap, meta: &ObjectMeta) -> bool {
    let Some(value) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') {
        // Strong comparison only.
        return etag_header(meta).as_deref() == Some(value);
    }
    httpdate::parse_http_date(value)
        .ok()
        .and_then(|d| d.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|d| u64::try_from(meta.last_modified.timestamp()) == Ok(d.as_secs()))
}

/// Validator and type headers shared by 200, 206, 304 and HEAD answers.
pub fn object_headers(headers: &mut HeaderMap, meta: &ObjectMeta, with_type: bool) {
    if let Some(etag) = etag_header(meta) {
        if let Ok(v) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(meta.last_modified)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    // Objects are per user: shared caches must not keep them; browsers revalidate by ETag.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if with_type {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let content_type = meta
            .content_type
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| {
                nodetool_core::storage::guess_content_type(meta.key.as_str()).to_owned()
            });
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
    }
}

/// Whether a browser would run or render something active (script, markup) from this type.
/// Only known-passive types are inline-safe; anything else (HTML, SVG, XML, JS, PDF, unknown)
/// counts as active, so a new dangerous type is not missed.
pub fn is_active_content(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let passive = match t.split_once('/') {
        Some(("image", sub)) => !sub.contains("svg") && !sub.contains("xml"),
        Some(("audio" | "video" | "font", _)) => true,
        Some(("text", "plain" | "csv" | "markdown" | "tab-separated-values")) => true,
        Some(("application", "json" | "octet-stream" | "zip" | "gzip" | "x-ndjson")) => true,
        _ => false,
    };
    !passive
}

/// Headers on every response that carries user content: no sniffing into an active type, a
/// sandbox (no script, no same-origin access) whatever the type, and active types downloaded
/// instead of rendered from the API origin unless `inline_active` (the request came through
/// the separate content domain, `NODETOOL_CONTENT_DOMAIN`).
pub fn user_content_headers(headers: &mut HeaderMap, inline_active: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'; media-src 'self'"),
    );
    let active = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(is_active_content);
    if active && !inline_active {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn active_types() {
        for t in [
            "text/html",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "application/javascript",
            "text/javascript",
            "application/pdf",
            "",
            "weird",
        ] {
            assert!(super::is_active_content(t), "{t}");
        }
        for t in [
            "image/png",
            "video/mp4",
            "text/plain; charset=utf-8",
            "application/json",
        ] {
            assert!(!super::is_active_content(t), "{t}");
        }
    }

    use super::*;

    #[test]
    fn range_syntax() {
        use ByteRange::*;
        assert_eq!(
            parse_range("bytes=0-0"),
            RangeRequest::One(Bounded { start: 0, end: 0 })
        );
        assert_eq!(parse_range("bytes=5-"), RangeRequest::One(From(5)));
        assert_eq!(parse_range("bytes=-1"), RangeRequest::One(Suffix(1)));
        assert_eq!(parse_range("bytes=9-3"), RangeRequest::Invalid);
        assert_eq!(parse_range("bytes=0-1,4-5"), RangeRequest::Full);
        assert_eq!(parse_range("items=0-1"), RangeRequest::Full);
        assert_eq!(parse_range("bytes=a-b"), RangeRequest::Full);
        assert_eq!(parse_range("bytes=-"), RangeRequest::Full);
    }
}
