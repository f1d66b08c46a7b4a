//! Request guards that run before authentication, on every route (`/ws` included):
//!
//! - **Host** (DNS rebinding): under `AUTH_PROVIDER` none/local, unless `nodetool serve
//!   --allow-remote`, only loopback `Host` values are served (`localhost`, `127.0.0.0/8`,
//!   `[::1]`, any port); anything else is 421. Without an ambient credential a rebinding page
//!   could otherwise drive the API as user "1".
//! - **Origin** (CSRF, cross-site WebSocket hijacking): under none/local, a state-changing
//!   request (not GET/HEAD/OPTIONS) and every `/ws*` upgrade with an `Origin` must come from the
//!   server's own origin or one in `ALLOWED_ORIGINS`, else 403. No `Origin` is a non-browser
//!   client and passes. Bearer-token providers are not affected: a token is not sent by a
//!   browser on its own.
//! - **JSON bodies**: a POST/PUT/PATCH with a body must say `Content-Type: application/json`
//!   (or `+json`) except the raw-bytes storage PUTs and the multipart asset upload, so no HTML
//!   form (urlencoded, multipart, text/plain) reaches a JSON route (415). JSON bodies are capped
//!   at `NODETOOL_MAX_JSON_BODY_BYTES` (413), declared or streamed.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};

use crate::error::ApiError;
use crate::{AppState, Authenticator};

/// The guards, on a request that has not been routed yet: the request to route (a JSON body
/// capped) or the answer that refuses it. Runs in [`crate::edge::EdgeLayer`].
pub(crate) fn check(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let local = matches!(state.auth, Authenticator::Local);
    let host = request_host(&req);
    if local && state.options.loopback_hosts_only {
        if let Some(h) = host {
            if !is_loopback_host(h) {
                return Err(ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected_request",
                    format!(
                        "this server (AUTH_PROVIDER=local) answers only for localhost, 127.0.0.1 \
                         or [::1], not Host `{}`",
                        h.to_ascii_lowercase()
                    ),
                ));
            }
        }
    }
    let method = req.method().clone();
    let path = req.uri().path();
    let changes_state = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if local && (changes_state || path == "/ws" || path.starts_with("/ws/")) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(origin, host, &state.options.allowed_origins) {
                return Err(ApiError::forbidden(format!(
                    "cross-origin request from `{origin}` refused; add it to ALLOWED_ORIGINS to allow it"
                ))
                .with_kind("cross_origin"));
            }
        }
    }
    if matches!(method, Method::POST | Method::PUT | Method::PATCH)
        && has_body(req.headers())
        && !takes_raw_body(&method, path)
    {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "this route takes a JSON body: send Content-Type: application/json",
            ));
        }
        let max = state.options.max_json_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(json_too_large(max));
        }
        // A chunked body is cut off at the cap while it streams; the JSON extractor then
        // answers 413.
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        return Ok(req.map(|b| Body::new(http_body_util::Limited::new(b, limit))));
    }
    Ok(req)
}

fn json_too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the JSON body is larger than the {max}-byte limit (NODETOOL_MAX_JSON_BODY_BYTES)"),
    )
}

/// `Host`, or the authority of an absolute URI (HTTP/2 `:authority`), trimmed (any case).
fn request_host(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map(str::trim)
}

/// `localhost`, an IPv4 loopback address or `[::1]`, with or without a port, in any case.
/// Allocation-free: it runs on every request.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, tail)) if tail.strip_prefix(':').is_some_and(valid_port) => inside,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The digits of a port number (`7777`, not `:7777`).
fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.parse::<u16>().is_ok()
}

/// Same origin as `host` (either scheme: both are this server), or listed.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = nodetool_config::normalize_origin(origin) else {
        // `null` (sandboxed frames, file://) and malformed values are never ours.
        return false;
    };
    if allowed.contains(&origin) {
        return true;
    }
    host.is_some_and(|h| {
        ["http", "https"].iter().any(|scheme| {
            nodetool_config::normalize_origin(&format!("{scheme}://{h}")).as_deref()
                == Some(origin.as_str())
        })
    })
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Routes whose body is not JSON: storage PUTs (the object's bytes, any type) and the
/// multipart asset upload.
fn takes_raw_body(method: &Method, path: &str) -> bool {
    (method == Method::PUT && (path.starts_with("/api/storage/") || path.starts_with("/storage/")))
        || (method == Method::POST && path.trim_end_matches('/') == "/api/assets")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:7777",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:7777",
            "localhost.",
            "LocalHost.:80",
            " 127.0.0.1:7777 ",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:7777",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "[::2]:80",
            "10.0.0.1",
            "localhost:99999",
            "localhost:",
            "[::1]x",
            "[::1]:",
            "[::1]:http",
            "[::1",
            "127.0.0.1:-1",
            ":7777",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let allowed = vec!["http://localhost:3000".to_owned()];
        assert!(origin_allowed(
            "http://127.0.0.1:7777",
            Some("127.0.0.1:7777"),
            &[]
        ));
        assert!(origin_allowed(
            "http://localhost:3000",
            Some("127.0.0.1:7777"),
            &allowed
        ));
        assert!(!origin_allowed(
            "http://evil.com",
            Some("127.0.0.1:7777"),
            &allowed
        ));
        assert!(!origin_allowed("null", Some("127.0.0.1:7777"), &allowed));
        assert!(!origin_allowed(
            "http://127.0.0.1:7778",
            Some("127.0.0.1:7777"),
            &[]
        ));
    }
}
