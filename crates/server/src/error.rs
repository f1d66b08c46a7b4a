//! [`ApiError`]: the one place where an error kind becomes an HTTP status.
//!
//! The body is always `{"error": {"kind": "...", "message": "..."}}`. For server-side failures
//! (5xx) the message is generic and the cause is only logged, so backend details never leak.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nodetool_core::{Error, ErrorKind};

/// An error on its way to becoming a response. Boxed: it travels in every handler's `Result`.
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// Logged, never sent.
    cause: Option<Error>,
    /// Extra headers, e.g. `Content-Range: bytes */size` on a 416.
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            kind,
            message: message.into(),
            cause: None,
            headers: Vec::new(),
        }))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 401 with `WWW-Authenticate: Bearer`, as RFC 6750 asks.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"nodetool\""),
        )
    }

    pub fn internal(cause: Error) -> Self {
        Self::from(cause)
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Replaces the wire kind (`{"error": {"kind"}}`), keeping the status.
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.0.kind = kind;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The wire kind (`{"error": {"kind"}}`).
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// Logs the error as a response would (a 5xx with its cause at `error`), for transports
    /// that answer in their own shape (tRPC).
    pub fn log(&self) {
        let this = &self.0;
        match (&this.cause, this.status.is_server_error()) {
            (Some(cause), true) => {
                tracing::error!(status = this.status.as_u16(), error = %cause, "request failed")
            }
            (Some(cause), false) => {
                tracing::debug!(status = this.status.as_u16(), error = %cause, "request refused")
            }
            (None, _) => {
                tracing::debug!(status = this.status.as_u16(), message = %this.message, "request refused")
            }
        }
    }
}

/// The HTTP status and wire kind for an error kind: the one table in [`crate::wire`].
pub fn status_for(kind: ErrorKind) -> (StatusCode, &'static str) {
    let w = crate::wire::wire_error(kind);
    (w.status, w.code)
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        // A limit of ours that says when to come back (the job manager's per-user queue):
        // 429 with `Retry-After`, and the message, which names the limit and nothing else.
        if err.kind() == ErrorKind::RateLimited {
            if let Some(secs) = err
                .context_value("retry_after")
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                let message = err.message().to_owned();
                return Self(Box::new(Inner {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "rate_limited",
                    message,
                    cause: Some(err),
                    headers: vec![(header::RETRY_AFTER, secs)],
                }));
            }
        }
        let (status, kind) = status_for(err.kind());
        let message = if status.is_server_error() || status == StatusCode::FORBIDDEN {
            // Backend errors name buckets, paths and credentials variables: log them, send a
            // generic line.
            match status {
                StatusCode::FORBIDDEN => "the storage backend refused the operation".to_owned(),
                StatusCode::SERVICE_UNAVAILABLE => {
                    "a backend is unavailable; retry later".to_owned()
                }
                StatusCode::NOT_IMPLEMENTED => "not supported by this backend".to_owned(),
                // The cause is the operator's to fix and names no path or secret: say it.
                StatusCode::INSUFFICIENT_STORAGE => format!(
                    "insufficient storage: {}; nothing was stored",
                    storage_full_cause(&err)
                ),
                _ => "internal server error".to_owned(),
            }
        } else {
            err.message().to_owned()
        };
        Self(Box::new(Inner {
            status,
            kind,
            message,
            cause: Some(err),
            headers: Vec::new(),
        }))
    }
}

/// The store's own words for being full (an S3 error's `<Message>`), or the OS's (`No space
/// left on device`, `Disk quota exceeded`, `File too large`), without the path or key the
/// error's context carries.
fn storage_full_cause(err: &Error) -> String {
    if let Some(words) = err.context_value(nodetool_core::error::STORE_SAYS) {
        return format!("the storage backend says: {words}");
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::QuotaExceeded => "the disk quota is exceeded".to_owned(),
                std::io::ErrorKind::FileTooLarge => {
                    "the file is too large for the storage".to_owned()
                }
                _ => "no space left on the storage device".to_owned(),
            };
        }
        source = s.source();
    }
    "the storage backend is out of space".to_owned()
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::from(
            Error::new(ErrorKind::Unexpected, "database error")
                .with_operation("db")
                .with_source(err),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let this = *self.0;
        let body = serde_json::json!({
            "error": { "kind": this.kind, "message": this.message }
        });
        let mut response = (this.status, axum::Json(body)).into_response();
        for (name, value) in this.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
