//! Calls from a worker to its parent (DESIGN §5): the worker asks its parent for storage,
//! temp-storage, node-cache and asset-record operations and gets the answers back, so a worker
//! needs neither network access nor credentials, and the parent enforces the job owner's scope.
//!
//! - [`client`] is the worker's side: a [`CallClient`] multiplexes calls over the worker's stdout
//!   (each [`ChildFrame::Call`](crate::protocol::ChildFrame::Call) has a `call_id`; the parent's
//!   [`ParentFrame::Reply`](crate::protocol::ParentFrame::Reply) with the same id completes it,
//!   in any order), and [`RemoteStorage`], [`RemoteNodeCache`] and [`RemoteAssetStore`] implement
//!   the core traits over it. [`client::remote_resources`] builds a worker's `EngineResources`.
//! - [`handler`] is the parent's side: one [`CallHandler`] per job serves calls concurrently
//!   (at most [`MAX_CALLS_IN_FLIGHT`]; beyond that a call is refused at once with `rate limited`,
//!   so a slow call never holds up the job's events) with the parent's [`WorkerServices`].
//!
//! Operations (`op` of a call; `args` and the reply's `result` are JSON objects; chunk bytes,
//! at most the offer's `max_chunk_bytes` per call, travel raw as the frame's attachment when the
//! offer has `binary_chunks` — an upload chunk's on the call, a download chunk's on the reply
//! to a `download_next` with `binary: true` — and as base64 `data` otherwise):
//!
//! | op | args | result |
//! |---|---|---|
//! | `storage.upload_open` | `role`, `key`, `content_type?` | `{upload}` |
//! | `storage.upload_chunk` | `upload`, `offset`, `data` (or the attachment) | `null` |
//! | `storage.upload_commit` | `upload` | object meta |
//! | `storage.upload_abort` | `upload` | `null` |
//! | `storage.download_open` | `role`, `key`, `range?` | `{download, meta, start, end}` |
//! | `storage.download_next` | `download`, `binary?` | `{offset, data, done}` (`data` as the attachment with `binary`) |
//! | `storage.download_close` | `download` | `null` |
//! | `storage.metadata` | `role`, `key` | object meta or `null` |
//! | `storage.delete` | `role`, `key` | `null` |
//! | `storage.list` | `role`, `prefix` | `[object meta]` |
//! | `storage.url` / `storage.presigned_url` | `role`, `key` (`expires_secs`) | URL string |
//! | `cache.get` | `key` | `{value}` (cache envelope, base64) or `null` |
//! | `cache.set` | `key`, `value`, `ttl_secs` | `null` |
//! | `cache.delete` | `key` | `null` |
//! | `cache.clear` | — | refused (`permission denied`): the cache is shared by every user |
//! | `assets.create` / `assets.update` | `record` | `null` |
//! | `assets.get` / `assets.delete` | `id` | record or `null` / `bool` |
//! | `assets.list` | `query` (no user) | `{assets, next}` |
//!
//! Bytes stream in bounded memory. An upload is a session: `open`, then `chunk`s in order (each
//! answered once the parent's `Storage::upload` has room for it, so backpressure crosses the
//! pipe), then `commit` (the object appears atomically) or `abort`. A session the worker leaves
//! open when its job ends — it died, was killed, or reported its outcome — is aborted, so no
//! partial object is ever visible. A download is a session of `next` calls, each answered with
//! the following chunk of one backend stream; it ends by itself at `done`.
//!
//! Scope ([`CallScope`]): asset records are created, read, listed, updated and deleted for the
//! job's user only — a user id sent by the worker is ignored, and a record's `job_id` is the
//! job's. Storage keys go through [`CallScope::check_key`]: today's single-user auth providers
//! own the whole store ([`KeyScope::WholeStore`]); a multi-user deployment
//! ([`KeyScope::UserPrefix`]) restricts a job to `{user_id}/…` (its temp objects are
//! `{user_id}/jobs/{job_id}/…`), the rule the HTTP storage routes and threaded jobs apply. Node-cache keys are not restricted: they
//! are content hashes that include the user id (`nodetool_cache::node_cache_key`).

pub mod client;
pub mod handler;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use nodetool_core::{
    AssetPage, AssetQuery, AssetRecord, Error, ErrorKind, JobId, ObjectMeta, Result, StorageInfo,
    StorageKey, UserId,
};

use nodetool_exec::strategy::JobSpec;

pub use client::{CallClient, RemoteAssetStore, RemoteNodeCache, RemoteStorage};
pub use handler::{CallHandler, WorkerServices};

/// Calls one job's worker may have in flight at once (the worker waits for a slot; the parent
/// refuses calls beyond it).
pub const MAX_CALLS_IN_FLIGHT: usize = 16;

/// Largest payload of one upload chunk or download chunk (before base64).
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Upload and download sessions one job may hold open at once.
pub const MAX_OPEN_TRANSFERS: usize = 32;

/// Largest page `assets.list` returns.
pub const MAX_ASSET_PAGE: usize = 1000;

/// Operation names (the `op` of a call).
pub mod op {
    pub const UPLOAD_OPEN: &str = "storage.upload_open";
    pub const UPLOAD_CHUNK: &str = "storage.upload_chunk";
    pub const UPLOAD_COMMIT: &str = "storage.upload_commit";
    pub const UPLOAD_ABORT: &str = "storage.upload_abort";
    pub const DOWNLOAD_OPEN: &str = "storage.download_open";
    pub const DOWNLOAD_NEXT: &str = "storage.download_next";
    pub const DOWNLOAD_CLOSE: &str = "storage.download_close";
    pub const METADATA: &str = "storage.metadata";
    pub const DELETE: &str = "storage.delete";
    pub const LIST: &str = "storage.list";
    pub const URL: &str = "storage.url";
    pub const PRESIGNED_URL: &str = "storage.presigned_url";
    pub const CACHE_GET: &str = "cache.get";
    pub const CACHE_SET: &str = "cache.set";
    pub const CACHE_DELETE: &str = "cache.delete";
    pub const CACHE_CLEAR: &str = "cache.clear";
    pub const ASSET_CREATE: &str = "assets.create";
    pub const ASSET_GET: &str = "assets.get";
    pub const ASSET_LIST: &str = "assets.list";
    pub const ASSET_UPDATE: &str = "assets.update";
    pub const ASSET_DELETE: &str = "assets.delete";
}

pub(crate) fn encode_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn decode_b64(text: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::invalid_input(format!("bytes in a call are not valid base64: {e}")))
}

/// Which of the parent's storages a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Asset,
    Temp,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Asset => "asset",
            Role::Temp => "temp",
        }
    }
}

/// An error that crossed the pipe: kind (by name, `ErrorKind::as_str`), message, retryability
/// and the parent's operation, so the worker rebuilds an [`Error`] a caller can branch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub temporary: bool,
    /// The operation that failed on the parent's side (`file.upload`, `worker.call`...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
}

impl CallError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            kind: kind.as_str().to_owned(),
            temporary: Error::new(kind, "").is_temporary(),
            message,
            operation: String::new(),
        }
    }

    /// Everything of `err` but its kind and operation goes into the message (context and
    /// source included), so nothing the parent knew is lost.
    pub fn from_error(err: &Error) -> Self {
        let mut message = err.message().to_owned();
        if !err.context().is_empty() {
            let ctx: Vec<String> = err
                .context()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            message.push_str(&format!(" ({})", ctx.join(", ")));
        }
        if let Some(source) = std::error::Error::source(err) {
            message.push_str(&format!(": {source}"));
        }
        Self {
            kind: err.kind().as_str().to_owned(),
            message,
            temporary: err.is_temporary(),
            operation: err.operation().to_owned(),
        }
    }

    pub fn error_kind(&self) -> ErrorKind {
        nodetool_core::ErrorKind::from_name(&self.kind)
    }

    /// The error as the worker reports it; the parent's operation is kept as context.
    pub fn to_error(&self) -> Error {
        let err = Error::new(self.error_kind(), self.message.clone()).set_temporary(self.temporary);
        if self.operation.is_empty() {
            err
        } else {
            err.with_context("parent_op", &self.operation)
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// What the parent lends a worker, sent in the request frame (absent: the parent serves no
/// calls, and the worker's storage, cache and records fail with `unsupported`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceOffer {
    pub asset_storage: StorageDescription,
    pub temp_storage: StorageDescription,
    /// The parent's node-cache backend (`memory`, `memcached`).
    pub node_cache: String,
    /// TTL the parent gives cached node outputs.
    pub node_cache_ttl_secs: f64,
    /// The parent has an asset record store (else saving and listing assets is unsupported, as
    /// in a threaded job of the same parent).
    pub asset_records: bool,
    /// Largest chunk payload per call; the worker splits uploads accordingly.
    pub max_chunk_bytes: usize,
    /// Calls the worker may have in flight.
    pub max_calls_in_flight: usize,
    /// The parent takes and gives chunk bytes as frame attachments (no base64). Absent from
    /// older parents, whose workers then send base64.
    #[serde(default)]
    pub binary_chunks: bool,
    /// The parent's key scope, so the worker's engine lays out keys (a job's temp objects
    /// under `{user}/jobs/{job}/` in a multi-user process) as the parent will check them.
    #[serde(default)]
    pub key_scope: KeyScope,
}

/// A storage as the worker sees it through its parent (`StorageInfo` over the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageDescription {
    pub scheme: String,
    pub location: String,
    #[serde(default)]
    pub presign: bool,
    #[serde(default)]
    pub durable: bool,
}

impl StorageDescription {
    pub fn from_info(info: &StorageInfo) -> Self {
        Self {
            scheme: info.scheme.to_owned(),
            location: info.location.clone(),
            presign: info.capabilities.presign,
            durable: info.capabilities.durable,
        }
    }

    /// Back to a `StorageInfo`; a scheme this build does not know reads as `remote`.
    pub fn to_info(&self) -> StorageInfo {
        let scheme = match self.scheme.as_str() {
            "memory" => "memory",
            "file" => "file",
            "s3" => "s3",
            "supabase" => "supabase",
            _ => "remote",
        };
        StorageInfo {
            scheme,
            location: format!("{} (through the parent)", self.location),
            capabilities: nodetool_core::StorageCapabilities {
                presign: self.presign,
                durable: self.durable,
            },
        }
    }
}

/// `ObjectMeta` over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

impl From<&ObjectMeta> for WireMeta {
    fn from(m: &ObjectMeta) -> Self {
        Self {
            key: m.key.to_string(),
            size: m.size,
            last_modified: m.last_modified,
            etag: m.etag.clone(),
            content_type: m.content_type.clone(),
        }
    }
}

impl WireMeta {
    pub fn into_meta(self) -> Result<ObjectMeta> {
        Ok(ObjectMeta {
            key: StorageKey::new(self.key)?,
            size: self.size,
            last_modified: self.last_modified,
            etag: self.etag,
            content_type: self.content_type,
        })
    }
}

/// `ByteRange` over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireRange {
    Bounded { start: u64, end: u64 },
    From { start: u64 },
    Suffix { len: u64 },
}

impl From<nodetool_core::ByteRange> for WireRange {
    fn from(r: nodetool_core::ByteRange) -> Self {
        use nodetool_core::ByteRange as B;
        match r {
            B::Bounded { start, end } => WireRange::Bounded { start, end },
            B::From(start) => WireRange::From { start },
            B::Suffix(len) => WireRange::Suffix { len },
        }
    }
}

impl From<WireRange> for nodetool_core::ByteRange {
    fn from(r: WireRange) -> Self {
        use nodetool_core::ByteRange as B;
        match r {
            WireRange::Bounded { start, end } => B::Bounded { start, end },
            WireRange::From { start } => B::From(start),
            WireRange::Suffix { len } => B::Suffix(len),
        }
    }
}

/// `AssetRecord` over the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAsset {
    pub id: String,
    /// Ignored by the parent, which files every record under the job's user.
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub workflow_id: Option<String>,
    pub parent_id: String,
    pub name: String,
    pub content_type: String,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub storage_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&AssetRecord> for WireAsset {
    fn from(r: &AssetRecord) -> Self {
        Self {
            id: r.id.clone(),
            user_id: r.user_id.clone(),
            workflow_id: r.workflow_id.clone(),
            parent_id: r.parent_id.clone(),
            name: r.name.clone(),
            content_type: r.content_type.clone(),
            size: r.size,
            metadata: r.metadata.clone(),
            duration: r.duration,
            node_id: r.node_id.clone(),
            job_id: r.job_id.clone(),
            storage_key: r.storage_key.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<WireAsset> for AssetRecord {
    fn from(w: WireAsset) -> Self {
        Self {
            id: w.id,
            user_id: w.user_id,
            workflow_id: w.workflow_id,
            parent_id: w.parent_id,
            name: w.name,
            content_type: w.content_type,
            size: w.size,
            metadata: w.metadata,
            duration: w.duration,
            node_id: w.node_id,
            job_id: w.job_id,
            storage_key: w.storage_key,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// `AssetQuery` without its user (the parent puts in the job's).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WireQuery {
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: usize,
}

impl From<&AssetQuery> for WireQuery {
    fn from(q: &AssetQuery) -> Self {
        Self {
            parent_id: q.parent_id.clone(),
            content_type: q.content_type.clone(),
            workflow_id: q.workflow_id.clone(),
            node_id: q.node_id.clone(),
            job_id: q.job_id.clone(),
            cursor: q.cursor.clone(),
            limit: q.limit,
        }
    }
}

impl WireQuery {
    /// The query for `user_id`, its page capped at [`MAX_ASSET_PAGE`].
    pub fn for_user(self, user_id: &str) -> AssetQuery {
        AssetQuery {
            user_id: user_id.to_owned(),
            parent_id: self.parent_id,
            content_type: self.content_type,
            workflow_id: self.workflow_id,
            node_id: self.node_id,
            job_id: self.job_id,
            cursor: self.cursor,
            limit: self.limit.clamp(1, MAX_ASSET_PAGE),
        }
    }
}

/// `AssetPage` over the wire.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WirePage {
    pub assets: Vec<WireAsset>,
    #[serde(default)]
    pub next: Option<String>,
}

impl From<&AssetPage> for WirePage {
    fn from(p: &AssetPage) -> Self {
        Self {
            assets: p.assets.iter().map(WireAsset::from).collect(),
            next: p.next.clone(),
        }
    }
}

impl From<WirePage> for AssetPage {
    fn from(p: WirePage) -> Self {
        Self {
            assets: p.assets.into_iter().map(AssetRecord::from).collect(),
            next: p.next,
        }
    }
}

/// Which storage keys a job's worker may touch: the process's one rule (see the module docs).
pub use nodetool_core::KeyScope;

/// The job a [`CallHandler`] serves: its owner, its id, and the key rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope {
    /// The owner of every record the worker touches (the engine's rule: `anonymous` for a job
    /// without a user).
    pub user_id: UserId,
    pub job_id: JobId,
    pub keys: KeyScope,
}

impl CallScope {
    pub fn for_job(spec: &JobSpec, keys: KeyScope) -> Self {
        let user_id = if spec.user_id.as_str().is_empty() {
            UserId::new("anonymous")
        } else {
            spec.user_id.clone()
        };
        Self {
            user_id,
            job_id: spec.job_id.clone(),
            keys,
        }
    }

    /// May the job touch `key` in `role` storage? `PermissionDenied` naming the key if not.
    pub fn check_key(&self, role: Role, key: &StorageKey) -> Result<()> {
        self.check(role, key.as_str(), "key")
    }

    /// May the job list under `prefix`? Under [`KeyScope::UserPrefix`] the prefix must lie
    /// within one of the job's prefixes (an empty prefix would list everyone's keys).
    pub fn check_prefix(&self, role: Role, prefix: &str) -> Result<()> {
        self.check(role, prefix, "prefix")
    }

    fn check(&self, role: Role, path: &str, what: &'static str) -> Result<()> {
        if self.keys.permits(self.user_id.as_str(), path) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{what} {path:?} is outside this job's part of {} storage ({}/)",
                role.as_str(),
                self.user_id
            ),
        )
        .with_operation("worker.call.scope")
        .with_context(what, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(keys: KeyScope) -> CallScope {
        CallScope {
            user_id: UserId::new("u1"),
            job_id: JobId::parse("j1").unwrap(),
            keys,
        }
    }

    fn key(k: &str) -> StorageKey {
        StorageKey::new(k).unwrap()
    }

    #[test]
    fn whole_store_allows_every_key() {
        let s = scope(KeyScope::WholeStore);
        for k in ["u2/a.txt", "u1/a.txt", "x"] {
            assert!(s.check_key(Role::Asset, &key(k)).is_ok(), "{k}");
        }
        assert!(s.check_prefix(Role::Asset, "").is_ok());
    }

    #[test]
    fn user_prefix_keeps_a_job_inside_its_user() {
        let s = scope(KeyScope::UserPrefix);
        assert!(s.check_key(Role::Asset, &key("u1/a.txt")).is_ok());
        for k in ["u2/a.txt", "u1", "u10/a.txt", "jobs/j1/x"] {
            let err = s.check_key(Role::Asset, &key(k)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{k}");
        }
        // A job's temp objects are under its user's folder; the shared `jobs/` area is no
        // user's (a user id cannot be `jobs`).
        assert!(s.check_key(Role::Temp, &key("u1/jobs/j1/x")).is_ok());
        assert!(s.check_key(Role::Temp, &key("jobs/j1/x")).is_err());
        assert!(s.check_key(Role::Temp, &key("u2/jobs/j1/x")).is_err());
        assert!(s.check_prefix(Role::Asset, "u1/").is_ok());
        assert!(s.check_prefix(Role::Asset, "").is_err());
        assert!(s.check_prefix(Role::Asset, "u").is_err());
    }

    #[test]
    fn errors_keep_kind_retryability_and_detail_across_the_pipe() {
        let err = Error::new(ErrorKind::Unavailable, "bucket unreachable")
            .with_operation("s3.upload")
            .with_context("key", "u1/a.txt");
        let wire = CallError::from_error(&err);
        let json = serde_json::to_string(&wire).unwrap();
        let back: CallError = serde_json::from_str(&json).unwrap();
        let rebuilt = back.to_error();
        assert_eq!(rebuilt.kind(), ErrorKind::Unavailable);
        assert!(rebuilt.is_temporary());
        assert!(rebuilt.message().contains("key=u1/a.txt"), "{rebuilt}");
        assert_eq!(rebuilt.context_value("parent_op"), Some("s3.upload"));
        // An error from an older parent (kind and message only) still decodes.
        let old: CallError =
            serde_json::from_str(r#"{"kind": "not found", "message": "gone"}"#).unwrap();
        assert_eq!(old.to_error().kind(), ErrorKind::NotFound);
    }
}
