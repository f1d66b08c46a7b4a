//! Asset records: the rows behind NodeTool's assets (name, folder, content type, blob key), and
//! the [`AssetStore`] contract that keeps them.
//!
//! Blobs live in a [`Storage`](crate::Storage); records live in an `AssetStore`. Whoever writes
//! both (the assets API, `ProcessingContext::create_asset`) keeps them consistent: the blob is
//! written before its record is created, and deleted before its record is.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Result;
use crate::key::StorageKey;

/// The `content_type` of a folder (NodeTool's convention): a record without a blob.
pub const FOLDER: &str = "folder";

/// One asset or folder of one user (NodeTool's `nodetool_assets` row).
#[derive(Debug, Clone, PartialEq)]
pub struct AssetRecord {
    /// UUIDv7 hex ([`crate::id::new_id`]): ids sort by creation time and serve as the cursor.
    pub id: String,
    pub user_id: String,
    pub workflow_id: Option<String>,
    /// The containing folder's id; a user's home folder has the user's id.
    pub parent_id: String,
    pub name: String,
    pub content_type: String,
    /// Blob size in bytes; `None` for folders.
    pub size: Option<i64>,
    /// Free-form JSON metadata.
    pub metadata: Option<Value>,
    /// Seconds, for audio and video.
    pub duration: Option<f64>,
    pub node_id: Option<String>,
    pub job_id: Option<String>,
    /// The blob's key in asset storage, stored rather than derived so a content-type change never
    /// orphans the blob; `None` for folders.
    pub storage_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AssetRecord {
    /// A record with the required fields, no optional ones, and both timestamps set to now.
    pub fn new(
        id: impl Into<String>,
        user_id: impl Into<String>,
        parent_id: impl Into<String>,
        name: impl Into<String>,
        content_type: impl Into<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: id.into(),
            user_id: user_id.into(),
            workflow_id: None,
            parent_id: parent_id.into(),
            name: name.into(),
            content_type: content_type.into(),
            size: None,
            metadata: None,
            duration: None,
            node_id: None,
            job_id: None,
            storage_key: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn is_folder(&self) -> bool {
        self.content_type == FOLDER
    }

    /// The blob's key, if the record has a valid one.
    pub fn key(&self) -> Option<StorageKey> {
        self.storage_key
            .as_deref()
            .and_then(|k| StorageKey::new(k).ok())
    }
}

/// Which records [`AssetStore::list`] returns: one user's, filtered, one page after a cursor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssetQuery {
    pub user_id: String,
    /// Only the direct children of this folder.
    pub parent_id: Option<String>,
    /// Only records whose content type starts with this (`"image"` finds `image/png`).
    pub content_type: Option<String>,
    pub workflow_id: Option<String>,
    pub node_id: Option<String>,
    pub job_id: Option<String>,
    /// Only records with an id greater than this (the `next` of the previous page).
    pub cursor: Option<String>,
    /// Page size; 0 is taken as 1.
    pub limit: usize,
}

impl AssetQuery {
    /// The children of `parent_id`, first page of `limit`.
    pub fn children(user_id: &str, parent_id: &str, limit: usize) -> Self {
        Self {
            user_id: user_id.to_owned(),
            parent_id: Some(parent_id.to_owned()),
            limit,
            ..Self::default()
        }
    }
}

/// One page of [`AssetStore::list`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssetPage {
    pub assets: Vec<AssetRecord>,
    /// The cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Where asset records live. Object-safe; held as `Arc<dyn AssetStore>`.
///
/// Records are per user: every method takes the user, and a record of another user behaves
/// exactly like a missing one (existence is not disclosed). A store checks no folder structure
/// (that a parent exists and is a folder, that a folder does not move below itself): the caller
/// does, because it decides what to report. Timestamps MAY come back truncated to the
/// microsecond (PostgreSQL's precision).
///
/// The behaviour suite (`crates/assets/tests/store.rs`) runs every implementation: SQLite and
/// PostgreSQL.
#[async_trait]
pub trait AssetStore: Send + Sync + fmt::Debug + 'static {
    /// Adds `record`.
    ///
    /// MUST fail with `AlreadyExists` if a record with the same id exists (for any user) and
    /// leave the existing one unchanged. MUST be atomic: after an error no part of the record is
    /// visible.
    async fn create(&self, record: &AssetRecord) -> Result<()>;

    /// The user's record `id`.
    ///
    /// MUST return `Ok(None)` when there is none or it belongs to another user.
    async fn get(&self, user_id: &str, id: &str) -> Result<Option<AssetRecord>>;

    /// The user's records matching every filter of `query`, in ascending id order, at most
    /// `query.limit` of them.
    ///
    /// MUST set `next` to the last returned id when more records match, and to `None` otherwise,
    /// so that following `next` visits every matching record exactly once. SHOULD answer a
    /// `(user, parent)` listing from an index.
    async fn list(&self, query: &AssetQuery) -> Result<AssetPage>;

    /// Writes the mutable fields of `record` (`name`, `parent_id`, `content_type`, `metadata`,
    /// `updated_at`) to the stored record with the same id and user: rename, move, retype.
    ///
    /// MUST fail with `NotFound` when there is no such record for that user. MUST NOT change
    /// `id`, `user_id`, `storage_key`, `size` or `created_at`.
    async fn update(&self, record: &AssetRecord) -> Result<()>;

    /// Removes the user's record `id`; `Ok(true)` if it existed.
    ///
    /// MUST be idempotent: deleting a missing record is `Ok(false)`. MUST NOT touch the blob
    /// (the caller deletes it first) nor any child record.
    async fn delete(&self, user_id: &str, id: &str) -> Result<bool>;
}
