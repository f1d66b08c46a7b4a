//! Supabase Storage errors mapped to [`ErrorKind`].
//!
//! The storage server answers HTTP 400 for almost every error and puts the real code in the JSON
//! body's `statusCode`, a *string* (`"404"`, `"409"`, ...). So the body decides the kind; the HTTP
//! status is only the fallback (5xx, 416, gateway errors, non-JSON bodies).

use nodetool_core::{Error, ErrorKind};
use reqwest::StatusCode;
use serde::Deserialize;

/// The fields of a Supabase Storage error body. Every field is optional: gateways and proxies
/// answer with other shapes, and Fastify's own 404 carries a numeric `statusCode`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ApiErrorBody {
    #[serde(default, rename = "statusCode")]
    pub status_code: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

impl ApiErrorBody {
    /// Parses an error body; anything that is not a JSON object yields an empty body, so a
    /// proxy's HTML page cannot break error handling.
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The status the server meant: the body's `statusCode` (string or number) when present.
    fn effective_status(&self, http: StatusCode) -> u16 {
        let from_body = match &self.status_code {
            Some(serde_json::Value::String(s)) => s.trim().parse::<u16>().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        };
        from_body.unwrap_or(http.as_u16())
    }
}

/// Builds the error for a non-success answer. `body` is the (possibly empty, possibly
/// truncated) response body.
pub(crate) fn api_error(
    operation: &'static str,
    http: StatusCode,
    body: &[u8],
    bucket: &str,
    host: &str,
) -> Error {
    let parsed = ApiErrorBody::parse(body);
    let status = parsed.effective_status(http);
    let code = parsed.code.clone().unwrap_or_default();
    let server_message = parsed
        .message
        .clone()
        .or_else(|| parsed.error.clone())
        .unwrap_or_else(|| {
            // Non-JSON body: show its start, it is usually the most useful thing we have.
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                http.canonical_reason().unwrap_or("no body").to_owned()
            } else {
                text.chars().take(200).collect()
            }
        });

    let (kind, message) = match (status, code.as_str()) {
        // A private bucket looks missing to a key that is not accepted as the service role,
        // so this is a configuration problem, not a missing object.
        (_, "NoSuchBucket") => (
            ErrorKind::ConfigInvalid,
            format!(
                "Supabase bucket '{bucket}' not found at {host}: check the bucket name, and that \
                 SUPABASE_KEY is the service-role key (a private bucket looks missing to other keys)"
            ),
        ),
        (404, _) => (ErrorKind::NotFound, server_message.clone()),
        (401 | 403, _) => (
            ErrorKind::PermissionDenied,
            format!("Supabase at {host} refused SUPABASE_KEY: {server_message}"),
        ),
        (409, _) => (ErrorKind::AlreadyExists, server_message.clone()),
        (413, _) => (ErrorKind::TooLarge, server_message.clone()),
        (416, _) => (ErrorKind::RangeNotSatisfiable, server_message.clone()),
        (429, _) => (ErrorKind::RateLimited, server_message.clone()),
        (400 | 405 | 411 | 414 | 415 | 422, _) => (ErrorKind::InvalidInput, server_message.clone()),
        (502..=504, _) => (
            ErrorKind::Unavailable,
            format!("Supabase at {host} is unavailable: {server_message}"),
        ),
        (500..=599, _) => (
            ErrorKind::Unexpected,
            format!("Supabase at {host} failed: {server_message}"),
        ),
        _ => (
            ErrorKind::Unexpected,
            format!("unexpected answer from Supabase at {host}: {server_message}"),
        ),
    };
    let mut err = Error::new(kind, message)
        .with_operation(operation)
        .with_context("bucket", bucket)
        .with_context("http_status", http.as_u16());
    if status != http.as_u16() {
        err = err.with_context("status", status);
    }
    if !code.is_empty() {
        err = err.with_context("code", code);
    }
    if (500..=599).contains(&status) {
        err = err.set_temporary(true);
    }
    err
}

/// Maps a transport failure (DNS, refused connection, TLS, timeout, broken body).
pub(crate) fn transport_error(operation: &'static str, host: &str, err: reqwest::Error) -> Error {
    let (kind, message) = if err.is_timeout() {
        (
            ErrorKind::Timeout,
            format!("Supabase at {host} did not answer in time (check SUPABASE_URL)"),
        )
    } else if err.is_connect() {
        (
            ErrorKind::Unavailable,
            format!("could not connect to Supabase at {host} (check SUPABASE_URL)"),
        )
    } else {
        (
            ErrorKind::Unavailable,
            format!("connection to Supabase at {host} failed (check SUPABASE_URL)"),
        )
    };
    Error::new(kind, message)
        .with_operation(operation)
        .set_temporary(true)
        .with_source(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kind(http: u16, body: &str) -> ErrorKind {
        api_error(
            "t",
            StatusCode::from_u16(http).unwrap(),
            body.as_bytes(),
            "b",
            "h",
        )
        .kind()
    }

    #[test]
    fn body_status_code_wins_over_http_status() {
        assert_eq!(
            kind(
                400,
                r#"{"statusCode":"404","error":"not_found","message":"Object not found","code":"NoSuchKey"}"#
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(
                400,
                r#"{"statusCode":"409","error":"Duplicate","message":"The resource already exists","code":"KeyAlreadyExists"}"#
            ),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(
                400,
                r#"{"statusCode":"413","error":"Payload too large","message":"x","code":"EntityTooLarge"}"#
            ),
            ErrorKind::TooLarge
        );
        assert_eq!(
            kind(
                400,
                r#"{"statusCode":"416","error":"x","message":"x","code":"S3Error"}"#
            ),
            ErrorKind::RangeNotSatisfiable
        );
        assert_eq!(
            kind(
                404,
                r#"{"message":"Route GET:/x not found","error":"Not Found","statusCode":404}"#
            ),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(
                400,
                r#"{"statusCode":"400","error":"InvalidKey","message":"Invalid key: x","code":"InvalidKey"}"#
            ),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn auth_errors_name_the_key_variable() {
        let err = api_error(
            "t",
            StatusCode::BAD_REQUEST,
            br#"{"statusCode":"403","error":"Unauthorized","message":"signature verification failed","code":"AccessDenied"}"#,
            "b",
            "example.supabase.co",
        );
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("SUPABASE_KEY"), "{err}");
        assert_eq!(
            kind(401, r#"{"message":"Invalid API key"}"#),
            ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn missing_bucket_is_a_configuration_error() {
        let err = api_error(
            "t",
            StatusCode::BAD_REQUEST,
            br#"{"statusCode":"404","error":"Bucket not found","message":"Bucket not found","code":"NoSuchBucket"}"#,
            "assets",
            "h",
        );
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("'assets'"), "{err}");
    }

    #[test]
    fn non_json_and_server_errors() {
        let err = api_error(
            "t",
            StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
            "b",
            "h",
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_temporary());
        assert!(err.to_string().contains("bad gateway"), "{err}");
        let err = api_error("t", StatusCode::INTERNAL_SERVER_ERROR, b"", "b", "h");
        assert_eq!(err.kind(), ErrorKind::Unexpected);
        assert!(err.is_temporary());
        assert_eq!(kind(429, "slow down"), ErrorKind::RateLimited);
        assert_eq!(kind(400, "not json"), ErrorKind::InvalidInput);
        assert_eq!(kind(418, "[1,2]"), ErrorKind::Unexpected);
    }
}
