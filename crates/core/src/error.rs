//! The one error type of the library crates, shaped like OpenDAL's: a kind the caller branches on,
//! a retryability flag, the operation that failed, key/value context and the underlying cause.
//!
//! Only the HTTP edge turns a kind into a status code; only the CLI turns it into an exit message.

use std::fmt;

/// What went wrong, as far as a caller needs to branch on it. On the wire (serde) a kind is its
/// snake_case name (`not_found`, `invalid_input`, …); the server's one table maps it to an HTTP
/// status and a wire error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object, job or record does not exist.
    NotFound,
    /// The target already exists and the operation refuses to overwrite it.
    AlreadyExists,
    /// The caller passed something malformed (a traversal key, a bad range, a wrong type).
    InvalidInput,
    /// A byte range lies outside the object (HTTP 416).
    RangeNotSatisfiable,
    /// A payload is over a configured limit.
    TooLarge,
    /// The storage has no room left (disk full, quota, file size limit): HTTP 507.
    StorageFull,
    /// Configuration is missing or malformed; the message names the setting.
    ConfigInvalid,
    /// Credentials were refused by a backend; the message names the variable to check.
    PermissionDenied,
    /// The backend asked us to slow down.
    RateLimited,
    /// The operation did not finish within its deadline.
    Timeout,
    /// The operation was cancelled by its caller.
    Cancelled,
    /// The backend cannot do this at all (e.g. sign a URL).
    Unsupported,
    /// The backend could not be reached (connection refused, DNS, TLS).
    Unavailable,
    /// Anything else: a bug, or a backend answer we did not expect.
    Unexpected,
}

impl ErrorKind {
    /// Every kind, for lookups by name.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidInput,
        ErrorKind::RangeNotSatisfiable,
        ErrorKind::TooLarge,
        ErrorKind::StorageFull,
        ErrorKind::ConfigInvalid,
        ErrorKind::PermissionDenied,
        ErrorKind::RateLimited,
        ErrorKind::Timeout,
        ErrorKind::Cancelled,
        ErrorKind::Unsupported,
        ErrorKind::Unavailable,
        ErrorKind::Unexpected,
    ];

    /// The kind [`ErrorKind::as_str`] names; `Unexpected` for a name this build does not know
    /// (an error that crossed a process boundary from a newer peer).
    pub fn from_name(name: &str) -> ErrorKind {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or(ErrorKind::Unexpected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::RangeNotSatisfiable => "range not satisfiable",
            ErrorKind::TooLarge => "too large",
            ErrorKind::StorageFull => "insufficient storage",
            ErrorKind::ConfigInvalid => "invalid configuration",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unexpected => "unexpected error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Context key for a storage backend's own words on why it is full (MinIO's "minimum free
/// drive threshold"): shown to the client with a `507`, so it MUST carry no key, path,
/// endpoint or credential.
pub const STORE_SAYS: &str = "store_says";

/// An error with kind, retryability, operation, context and source.
///
/// Build with [`Error::new`] and the `with_*` methods:
/// `Error::new(ErrorKind::NotFound, "no such object").with_operation("file.download").with_context("key", key)`.
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: &'static str,
    context: Vec<(&'static str, String)>,
    temporary: bool,
    source: Option<Source>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            operation: "",
            context: Vec::new(),
            // Timeouts, unavailability and rate limits are the usual transient failures.
            temporary: matches!(
                kind,
                ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::RateLimited
            ),
            source: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ConfigInvalid, message)
    }

    /// The operation that failed, e.g. `"s3.upload"`. Only the first one set is kept, so the
    /// innermost layer names it.
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        if self.operation.is_empty() {
            self.operation = operation;
        }
        self
    }

    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Marks the error as worth retrying (or not).
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn operation(&self) -> &'static str {
        self.operation
    }

    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.operation.is_empty() {
            write!(f, "{}: ", self.operation)?;
        }
        write!(f, "{}", self.kind)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str(")")?;
        }
        if self.temporary {
            f.write_str(" [temporary]")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug is what `anyhow` and test failures print: make it the readable form.
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidInput,
            Io::TimedOut => ErrorKind::Timeout,
            Io::StorageFull | Io::QuotaExceeded | Io::FileTooLarge => ErrorKind::StorageFull,
            Io::ConnectionRefused | Io::ConnectionReset | Io::ConnectionAborted => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Unexpected,
        };
        Error::new(kind, "").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name_and_an_unknown_name_is_unexpected() {
        for kind in ErrorKind::ALL {
            // A new variant stops this match compiling: list it here and in ALL.
            match kind {
                ErrorKind::NotFound
                | ErrorKind::AlreadyExists
                | ErrorKind::InvalidInput
                | ErrorKind::RangeNotSatisfiable
                | ErrorKind::TooLarge
                | ErrorKind::StorageFull
                | ErrorKind::ConfigInvalid
                | ErrorKind::PermissionDenied
                | ErrorKind::RateLimited
                | ErrorKind::Timeout
                | ErrorKind::Cancelled
                | ErrorKind::Unsupported
                | ErrorKind::Unavailable
                | ErrorKind::Unexpected => assert_eq!(ErrorKind::from_name(kind.as_str()), kind),
            }
        }
        assert_eq!(ErrorKind::from_name("on fire"), ErrorKind::Unexpected);
    }

    #[test]
    fn display_carries_operation_context_and_source() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::new(ErrorKind::Unexpected, "write failed")
            .with_operation("file.upload")
            .with_operation("ignored.outer")
            .with_context("key", "a/b.png")
            .with_source(io);
        assert_eq!(
            err.to_string(),
            "file.upload: unexpected error: write failed (key=a/b.png): disk on fire"
        );
        assert_eq!(err.context_value("key"), Some("a/b.png"));
    }

    #[test]
    fn transient_kinds_default_to_temporary() {
        assert!(Error::new(ErrorKind::Timeout, "").is_temporary());
        assert!(!Error::new(ErrorKind::NotFound, "").is_temporary());
        assert!(!Error::new(ErrorKind::Timeout, "")
            .set_temporary(false)
            .is_temporary());
    }

    #[test]
    fn io_not_found_maps_to_not_found() {
        let err: Error = std::io::Error::from(std::io::ErrorKind::NotFound).into();
        assert!(err.is_not_found());
    }
}
