//! The storage contract every backend (memory, file, S3, Supabase) keeps.
//!
//! The behaviour suite in `nodetool-testkit` (`storage_suite`) is the executable form of this
//! contract; a backend is done when it passes it.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};

use crate::error::{Error, ErrorKind, Result};
use crate::key::{StorageKey, StoragePrefix};

/// A stream of body chunks. Backends MUST produce and consume these in constant memory: no
/// backend buffers a whole object to serve or store it.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What a backend knows about one stored object, fetched in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectMeta {
    pub key: StorageKey,
    pub size: u64,
    /// Always UTC.
    pub last_modified: DateTime<Utc>,
    /// A strong validator: two objects with the same ETag under one key have the same bytes.
    pub etag: Option<String>,
    pub content_type: Option<String>,
}

/// Told the number of bytes a copy has moved since it was last called (for progress bars).
pub type Progress = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Options for an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Stored with the object and served back. When `None`, backends store the type guessed from
    /// the key's extension ([`guess_content_type`]).
    pub content_type: Option<String>,
}

impl PutOptions {
    pub fn content_type(content_type: impl Into<String>) -> Self {
        Self {
            content_type: Some(content_type.into()),
        }
    }

    /// The content type to store for `key`: the given one, else the extension's.
    pub fn effective_content_type(&self, key: &StorageKey) -> String {
        self.content_type
            .clone()
            .unwrap_or_else(|| guess_content_type(key.as_str()).to_owned())
    }
}

/// A byte range as HTTP expresses it (RFC 9110 §14.1.2), resolved against the object size by
/// [`ByteRange::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`: from `start` to `end`, both inclusive.
    Bounded { start: u64, end: u64 },
    /// `bytes=a-`: from `start` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The half-open byte range this selects in an object of `size` bytes.
    ///
    /// An end past the object is clamped (RFC 9110). A start at or past the end, or an empty
    /// suffix, is [`ErrorKind::RangeNotSatisfiable`].
    pub fn resolve(self, size: u64) -> Result<Range<u64>> {
        let unsatisfiable = || {
            Error::new(
                ErrorKind::RangeNotSatisfiable,
                format!("range {self} is outside an object of {size} bytes"),
            )
        };
        match self {
            ByteRange::Bounded { start, end } if start <= end && start < size => {
                Ok(start..end.saturating_add(1).min(size))
            }
            ByteRange::From(start) if start < size => Ok(start..size),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Ok(size.saturating_sub(n)..size),
            ByteRange::Bounded { start, end } if start > end => Err(Error::invalid_input(format!(
                "range {self} ends before it starts"
            ))),
            _ => Err(unsatisfiable()),
        }
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::Bounded { start, end } => write!(f, "bytes={start}-{end}"),
            ByteRange::From(start) => write!(f, "bytes={start}-"),
            ByteRange::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

/// A started download: the object's metadata, the byte range being sent, and the body.
pub struct Download {
    pub meta: ObjectMeta,
    /// The half-open range of the object that `body` yields; `0..size` without a range.
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl Download {
    /// Reads the whole body into memory. For tests and small objects only.
    pub async fn into_bytes(self) -> Result<Bytes> {
        collect(self.body).await
    }
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What a backend can do beyond the required operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StorageCapabilities {
    /// [`Storage::presigned_url`] gives a URL that works without our API in the path.
    pub presign: bool,
    /// Objects live outside this process (survive a restart, visible to other processes).
    pub durable: bool,
}

/// Describes a backend instance for `nodetool storage info`, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorageInfo {
    /// `memory`, `file`, `s3` or `supabase`.
    pub scheme: &'static str,
    /// Where objects go: a directory, `bucket@endpoint`, ...
    pub location: String,
    pub capabilities: StorageCapabilities,
}

/// Durable keyed blobs.
///
/// Contract (MUST unless marked SHOULD), checked by `nodetool_testkit::storage_suite`:
/// - `upload` stores the whole stream under `key`, replacing any previous object **atomically**:
///   readers see the old object or the new one, never a partial one. If the stream yields an
///   error, or the upload fails, the previous object (or absence) is left as it was.
/// - `upload` records the content type ([`PutOptions::effective_content_type`]) and it is
///   returned by `metadata` and `download`.
/// - `download` streams in constant memory, honours an optional [`ByteRange`], and fails with
///   [`ErrorKind::NotFound`] for a missing key and [`ErrorKind::RangeNotSatisfiable`] for a range
///   outside the object.
/// - `metadata` answers in one backend round trip; `Ok(None)` means missing. Times are UTC.
/// - `delete` is idempotent: deleting a missing key is `Ok(())`.
/// - `list(prefix)` returns every object whose key starts with `prefix`, sorted by key; a
///   prefix that matches nothing gives an empty list.
/// - `url` builds the URL clients use to fetch the object (public or signed per backend); it
///   SHOULD NOT do I/O beyond signing.
/// - Errors carry the operation and the key in their context; errors from the network are
///   [`Error::is_temporary`] when a retry could succeed.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    fn info(&self) -> StorageInfo;

    async fn upload(
        &self,
        key: &StorageKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta>;

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download>;

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>>;

    async fn delete(&self, key: &StorageKey) -> Result<()>;

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>>;

    async fn url(&self, key: &StorageKey) -> Result<String>;

    /// Where the object's bytes live on this machine, for backends that keep each object as a
    /// local file, so that a caller copying it into another local file can let the kernel do
    /// the copy. Callers MUST only read through it and SHOULD open it once and read from that
    /// handle (an upload replaces the file atomically). `None`: the backend is not local, or
    /// the key is not one it would store (the normal calls then give the proper error).
    fn local_path(&self, key: &StorageKey) -> Option<std::path::PathBuf> {
        let _ = key;
        None
    }

    /// Removes what interrupted writes left behind (a killed process's partial uploads) that
    /// has not been touched for `older_than`, and returns how many leftovers it removed. Live
    /// writes are never older than that bound. The default has nothing to clean.
    async fn reap_interrupted(&self, older_than: std::time::Duration) -> Result<usize> {
        let _ = older_than;
        Ok(0)
    }

    /// Stores the rest of `file` (from its current position) as `key`, with the guarantees of
    /// [`upload`](Self::upload). Backends that keep each object as a local file SHOULD
    /// implement it so that the kernel does the copy; the default answers
    /// [`ErrorKind::Unsupported`], and the caller then streams the file through `upload`.
    /// `progress`, when given, hears of the bytes as they are copied.
    async fn upload_file(
        &self,
        key: &StorageKey,
        file: &std::fs::File,
        opts: PutOptions,
        progress: Option<Progress>,
    ) -> Result<ObjectMeta> {
        let _ = (file, opts, progress);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} storage cannot copy from a local file",
                self.info().scheme
            ),
        )
        .with_operation("storage.upload_file")
        .with_context("key", key))
    }

    /// A URL that fetches the object directly from the backend for `expires_in`, bypassing our
    /// API. Backends that cannot sign return [`ErrorKind::Unsupported`].
    async fn presigned_url(&self, key: &StorageKey, expires_in: Duration) -> Result<String> {
        let _ = expires_in;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} storage cannot presign URLs", self.info().scheme),
        )
        .with_operation("storage.presigned_url")
        .with_context("key", key))
    }

    async fn upload_bytes(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.upload(key, once(bytes), opts).await
    }

    async fn download_bytes(&self, key: &StorageKey) -> Result<Bytes> {
        self.download(key, None).await?.into_bytes().await
    }

    async fn exists(&self, key: &StorageKey) -> Result<bool> {
        Ok(self.metadata(key).await?.is_some())
    }

    async fn size(&self, key: &StorageKey) -> Result<u64> {
        Ok(self.require_metadata(key).await?.size)
    }

    async fn mtime(&self, key: &StorageKey) -> Result<DateTime<Utc>> {
        Ok(self.require_metadata(key).await?.last_modified)
    }

    /// `metadata`, with a missing key as [`ErrorKind::NotFound`].
    async fn require_metadata(&self, key: &StorageKey) -> Result<ObjectMeta> {
        self.metadata(key)
            .await?
            .ok_or_else(|| not_found(self.info().scheme, key))
    }
}

/// The NotFound error every backend returns for a missing key.
pub fn not_found(scheme: &str, key: &StorageKey) -> Error {
    Error::not_found(format!("no object at key '{key}' in {scheme} storage"))
        .with_context("key", key)
}

/// A stream of one chunk.
pub fn once(bytes: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(bytes) }).boxed()
}

/// Concatenates a stream. For tests and small objects only.
pub async fn collect(mut body: ByteStream) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

/// Content type for a key from its extension, case-insensitively; `application/octet-stream`
/// when unknown.
pub fn guess_content_type(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    let Some((_, ext)) = name.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    let ext = ext.to_ascii_lowercase();
    MIME_TABLE
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or(OCTET_STREAM, |(_, m)| m)
}

/// The preferred extension (without dot) for a content type, the inverse of
/// [`guess_content_type`]. Parameters such as `; charset=utf-8` are ignored.
pub fn extension_for(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    MIME_TABLE
        .iter()
        .find(|(_, m)| *m == essence)
        .map(|(e, _)| *e)
}

/// First key segments that belong to the runtime, never to a user: `jobs/{job_id}/` holds jobs'
/// temp objects, `temp` is the storage routes' temp mount, `.nodetool` file storage's own
/// folder. A user id equal to one of them would share those keys, so auth refuses it.
pub const RESERVED_USER_IDS: &[&str] = &["jobs", "temp", ".nodetool"];

pub const OCTET_STREAM: &str = "application/octet-stream";

/// One bidirectional table: the first row for a type is its preferred extension.
const MIME_TABLE: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("bmp", "image/bmp"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("svg", "image/svg+xml"),
    ("ico", "image/x-icon"),
    ("avif", "image/avif"),
    ("mp3", "audio/mpeg"),
    ("wav", "audio/wav"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("flac", "audio/flac"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("opus", "audio/opus"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("webm", "video/webm"),
    ("mov", "video/quicktime"),
    ("avi", "video/x-msvideo"),
    ("mkv", "video/x-matroska"),
    ("ogv", "video/ogg"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("json", "application/json"),
    ("jsonl", "application/jsonl"),
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("wasm", "application/wasm"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("glb", "model/gltf-binary"),
    ("gltf", "model/gltf+json"),
    ("obj", "model/obj"),
    ("stl", "model/stl"),
    ("safetensors", OCTET_STREAM),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_per_rfc_9110() {
        let size = 100;
        assert_eq!(
            ByteRange::Bounded { start: 0, end: 9 }
                .resolve(size)
                .unwrap(),
            0..10
        );
        assert_eq!(
            ByteRange::Bounded {
                start: 90,
                end: 500
            }
            .resolve(size)
            .unwrap(),
            90..100
        );
        assert_eq!(ByteRange::From(99).resolve(size).unwrap(), 99..100);
        assert_eq!(ByteRange::Suffix(10).resolve(size).unwrap(), 90..100);
        assert_eq!(ByteRange::Suffix(500).resolve(size).unwrap(), 0..100);
        for bad in [
            ByteRange::From(100),
            ByteRange::Bounded {
                start: 100,
                end: 200,
            },
            ByteRange::Suffix(0),
        ] {
            assert_eq!(
                bad.resolve(size).unwrap_err().kind(),
                ErrorKind::RangeNotSatisfiable,
                "{bad}"
            );
        }
        assert_eq!(
            ByteRange::Suffix(1).resolve(0).unwrap_err().kind(),
            ErrorKind::RangeNotSatisfiable
        );
        assert_eq!(
            ByteRange::Bounded { start: 5, end: 4 }
                .resolve(size)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn content_types_are_case_insensitive_and_invertible() {
        assert_eq!(guess_content_type("a/B.PNG"), "image/png");
        assert_eq!(guess_content_type("x.jpeg"), "image/jpeg");
        assert_eq!(guess_content_type("x.ogg"), "audio/ogg");
        assert_eq!(guess_content_type("x.xml"), "application/xml");
        assert_eq!(guess_content_type("noext"), OCTET_STREAM);
        assert_eq!(guess_content_type("dir.d/noext"), OCTET_STREAM);
        assert_eq!(extension_for("image/jpeg"), Some("jpg"));
        assert_eq!(extension_for("Text/Plain; charset=utf-8"), Some("txt"));
        assert_eq!(extension_for("application/x-unknown"), None);
    }
}
