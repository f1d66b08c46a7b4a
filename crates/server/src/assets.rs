//! `/api/assets`: NodeTool's asset API, per user, records in the shared [`AssetStore`]
//! (`nodetool_assets`, SQLite), blobs in asset storage.
//!
//! Row and blob stay consistent: on create the blob is written first and the row inserted after
//! (a failed insert deletes the blob again); on delete the blob goes first and the row after, so a
//! failure never leaves a row pointing at nothing. Blobs live at `{user_id}/{asset_id}.{ext}`,
//! the key is stored in the row, so a content-type change never orphans a blob. A `user_id` in
//! a request body is ignored: the caller is always the authenticated user.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use nodetool_core::assets::FOLDER;
use nodetool_core::storage::extension_for;
use nodetool_core::{AssetQuery, AssetRecord, AssetStore, Error, PutOptions, Storage, StorageKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::storage_routes::{serve_object, too_large};
use crate::AppState;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// The `json` form field is metadata: a megabyte is plenty.
const MAX_JSON_FIELD: usize = 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/assets", get(list).post(create))
        .route("/api/assets/{id}", get(get_one).put(update).delete(delete))
        .route("/api/assets/{id}/download", get(download))
        // Uploads are streamed to storage with our own limit (NODETOOL_MAX_UPLOAD_BYTES).
        .layer(DefaultBodyLimit::disable())
}

/// NodeTool's `Asset` DTO (reference §6.2).
#[derive(Debug, Serialize)]
pub(crate) struct AssetDto {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    user_id: String,
    workflow_id: Option<String>,
    parent_id: String,
    name: String,
    content_type: String,
    size: Option<i64>,
    metadata: Option<Value>,
    created_at: String,
    updated_at: String,
    duration: Option<f64>,
    node_id: Option<String>,
    job_id: Option<String>,
    etag: String,
    get_url: Option<String>,
    thumb_url: Option<String>,
}

fn etag(row: &AssetRecord) -> String {
    let metadata = row.metadata.as_ref().map(Value::to_string);
    let mut h = Sha256::new();
    for part in [
        row.id.as_str(),
        row.name.as_str(),
        row.parent_id.as_str(),
        row.content_type.as_str(),
        metadata.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(row.updated_at.to_rfc3339().as_bytes());
    h.update(row.size.unwrap_or(-1).to_le_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) async fn into_dto(row: AssetRecord, storage: &dyn Storage) -> AssetDto {
    let get_url = match row.key() {
        Some(key) => match storage.url(&key).await {
            Ok(url) => Some(url),
            Err(e) => {
                tracing::warn!(asset = %row.id, error = %e, "cannot build an asset URL");
                None
            }
        },
        None => None,
    };
    let thumb_url =
        crate::asset_thumbs::thumb_key(&row).map(|_| format!("/api/assets/{}/thumbnail", row.id));
    AssetDto {
        kind: "asset",
        etag: etag(&row),
        created_at: row.created_at.to_rfc3339(),
        updated_at: row.updated_at.to_rfc3339(),
        id: row.id,
        user_id: row.user_id,
        workflow_id: row.workflow_id,
        parent_id: row.parent_id,
        name: row.name,
        content_type: row.content_type,
        size: row.size,
        metadata: row.metadata,
        duration: row.duration,
        node_id: row.node_id,
        job_id: row.job_id,
        thumb_url,
        get_url,
    }
}

/// The record store over the server's database.
pub(crate) fn store(state: &AppState) -> Arc<dyn AssetStore> {
    state.assets.clone()
}

/// The user's root folder: NodeTool gives "Home" the user's id.
pub(crate) fn home_folder(user: &str) -> AssetRecord {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    AssetRecord {
        created_at: epoch,
        updated_at: epoch,
        ..AssetRecord::new(user, user, "", "Home", FOLDER)
    }
}

pub(crate) async fn find(state: &AppState, user: &str, id: &str) -> ApiResult<AssetRecord> {
    // Other users' assets are "not found", not "forbidden": existence is not disclosed.
    store(state)
        .get(user, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such asset"))
}

/// `parent_id` must be the user's home or one of their folders.
async fn check_parent(state: &AppState, user: &str, parent_id: &str) -> ApiResult<()> {
    if parent_id == user {
        return Ok(());
    }
    let parent = find(state, user, parent_id)
        .await
        .map_err(|_| ApiError::not_found("parent folder not found"))?;
    if !parent.is_folder() {
        return Err(ApiError::bad_request("parent_id is not a folder"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    parent_id: Option<String>,
    content_type: Option<String>,
    workflow_id: Option<String>,
    node_id: Option<String>,
    job_id: Option<String>,
    cursor: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AssetList {
    /// The cursor for the next page; `null` on the last page.
    next: Option<String>,
    assets: Vec<AssetDto>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<AssetList>> {
    let page = q.page_size.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let no_filter = q.parent_id.is_none()
        && q.content_type.is_none()
        && q.workflow_id.is_none()
        && q.node_id.is_none()
        && q.job_id.is_none();
    let parent_id = if no_filter {
        Some(user.to_string())
    } else {
        q.parent_id.clone()
    };
    let query = AssetQuery {
        user_id: user.to_string(),
        parent_id,
        content_type: q.content_type,
        workflow_id: q.workflow_id,
        node_id: q.node_id,
        job_id: q.job_id,
        cursor: q.cursor.filter(|c| !c.is_empty()),
        limit: page as usize,
    };
    let found = store(&state).list(&query).await?;
    let (rows, next) = (found.assets, found.next);
    let storage = state.resources.asset_storage()?;
    let mut assets = Vec::with_capacity(rows.len());
    for row in rows {
        assets.push(into_dto(row, storage.as_ref()).await);
    }
    Ok(Json(AssetList { next, assets }))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<AssetDto>> {
    let row = if id == user {
        home_folder(user.as_str())
    } else {
        find(&state, user.as_str(), &id).await?
    };
    let storage = state.resources.asset_storage()?;
    Ok(Json(into_dto(row, storage.as_ref()).await))
}

/// NodeTool's `AssetCreateRequest`; unknown fields (a `user_id`, say) are ignored.
#[derive(Debug, Default, Deserialize)]
struct CreateRequest {
    workflow_id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    content_type: Option<String>,
    metadata: Option<Value>,
    duration: Option<f64>,
    node_id: Option<String>,
    job_id: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    mut form: Multipart,
) -> ApiResult<Response> {
    let id = nodetool_core::id::new_id();
    let storage = state.resources.asset_storage()?;
    let mut request: Option<CreateRequest> = None;
    let mut blob: Option<(StorageKey, nodetool_core::ObjectMeta)> = None;
    // The upload's own file name: the asset's name when no `json` field names one.
    let mut file_name: Option<String> = None;

    let parsed: ApiResult<()> = async {
        while let Some(mut field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
        {
            match field.name() {
                Some("json") => {
                    let mut buf = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(|e| {
                        ApiError::bad_request(format!("malformed multipart body: {e}"))
                    })? {
                        buf.extend_from_slice(&chunk);
                        if buf.len() > MAX_JSON_FIELD {
                            return Err(ApiError::bad_request("the json field is too large"));
                        }
                    }
                    request = Some(serde_json::from_slice(&buf).map_err(|e| {
                        ApiError::bad_request(format!("the json field is not a valid asset: {e}"))
                    })?);
                }
                Some("file") => {
                    if blob.is_some() {
                        return Err(ApiError::bad_request("only one file per asset"));
                    }
                    // The `json` field may come before or after (or not at all): a type it
                    // named first wins, else the part's own type, else its file name's.
                    file_name = field.file_name().map(str::to_owned);
                    let content_type = request
                        .as_ref()
                        .and_then(|r| r.content_type.clone())
                        .filter(|t| !t.is_empty() && t != FOLDER)
                        .or_else(|| field.content_type().map(str::to_owned))
                        .or_else(|| {
                            field
                                .file_name()
                                .map(|n| nodetool_core::storage::guess_content_type(n).to_owned())
                        })
                        .unwrap_or_else(|| nodetool_core::storage::OCTET_STREAM.to_owned());
                    let ext = extension_for(&content_type).unwrap_or("bin");
                    let key = StorageKey::new(format!("{user}/{id}.{ext}"))?;
                    let meta = stream_field(
                        &mut field,
                        storage.as_ref(),
                        &key,
                        &content_type,
                        state.options.max_upload_bytes,
                    )
                    .await?;
                    blob = Some((key, meta));
                }
                // Unknown fields are skipped (multer discards the rest of the part).
                _ => {}
            }
        }
        Ok(())
    }
    .await;

    let result = async {
        parsed?;
        // Without a `json` field the file alone makes the asset (named after the upload, in
        // the caller's home); with neither there is nothing to create.
        if request.is_none() && blob.is_none() {
            return Err(ApiError::bad_request(
                "an asset upload needs a file field, a json field, or both",
            ));
        }
        let mut req = request.unwrap_or_default();
        if req.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            req.name = file_name.clone();
        }
        let parent_id = req.parent_id.clone().unwrap_or_else(|| user.to_string());
        check_parent(&state, user.as_str(), &parent_id).await?;
        let content_type = match (&blob, req.content_type.as_deref()) {
            (Some((_, meta)), _) => meta
                .content_type
                .clone()
                .unwrap_or_else(|| nodetool_core::storage::OCTET_STREAM.to_owned()),
            (None, Some(ct)) if !ct.is_empty() => ct.to_owned(),
            (None, _) => FOLDER.to_owned(),
        };
        if content_type != FOLDER && blob.is_none() {
            return Err(ApiError::bad_request(
                "a file field is required unless content_type is \"folder\"",
            ));
        }
        let now = Utc::now();
        let row = AssetRecord {
            id: id.clone(),
            user_id: user.to_string(),
            workflow_id: req.workflow_id,
            parent_id,
            name: req
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.clone()),
            content_type,
            size: blob
                .as_ref()
                .map(|(_, m)| i64::try_from(m.size).unwrap_or(i64::MAX)),
            metadata: req.metadata,
            duration: req.duration,
            node_id: req.node_id,
            job_id: req.job_id,
            storage_key: blob.as_ref().map(|(k, _)| k.to_string()),
            created_at: now,
            updated_at: now,
        };
        store(&state).create(&row).await?;
        Ok(row)
    }
    .await;

    match result {
        Ok(row) => Ok((
            StatusCode::CREATED,
            Json(into_dto(row, storage.as_ref()).await),
        )
            .into_response()),
        Err(e) => {
            // No row was committed: remove the blob so nothing is orphaned.
            if let Some((key, _)) = &blob {
                if let Err(de) = storage.delete(key).await {
                    tracing::warn!(key = %key, error = %de, "could not remove the blob of a failed asset upload");
                }
            }
            Err(e)
        }
    }
}

/// Streams one multipart field into storage without buffering it. The field borrows the form,
/// so it is fed through a small channel to the (`'static`) storage stream in the same task.
async fn stream_field(
    field: &mut axum::extract::multipart::Field<'_>,
    storage: &dyn Storage,
    key: &StorageKey,
    content_type: &str,
    max: u64,
) -> ApiResult<nodetool_core::ObjectMeta> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<nodetool_core::Result<bytes::Bytes>>(2);
    let upload = storage.upload(key, rx.boxed(), PutOptions::content_type(content_type));
    let feed = async move {
        let mut seen: u64 = 0;
        loop {
            let item = match field.chunk().await {
                Ok(Some(chunk)) => {
                    seen = seen.saturating_add(chunk.len() as u64);
                    if seen > max {
                        Err(too_large(max))
                    } else {
                        Ok(chunk)
                    }
                }
                Ok(None) => return,
                Err(e) => Err(Error::invalid_input("the uploaded file could not be read")
                    .with_operation("assets.upload")
                    .with_source(e)),
            };
            let stop = item.is_err();
            // A closed channel means the upload already failed; it reports why.
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    };
    let (meta, ()) = tokio::join!(upload, feed);
    Ok(meta?)
}

/// NodeTool's `AssetUpdateRequest` (rename, move, retype, metadata). `user_id` is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateRequest {
    name: Option<String>,
    parent_id: Option<String>,
    content_type: Option<String>,
    metadata: Option<Value>,
}

pub(crate) async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Json(req): Json<UpdateRequest>,
) -> ApiResult<Json<AssetDto>> {
    let mut row = find(&state, user.as_str(), &id).await?;
    if let Some(name) = req
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
    {
        row.name = name;
    }
    if let Some(parent) = req.parent_id.filter(|p| !p.is_empty()) {
        if parent != row.parent_id {
            check_parent(&state, user.as_str(), &parent).await?;
            if row.is_folder()
                && descendants(&state, user.as_str(), &row.id)
                    .await?
                    .contains(&parent)
                || parent == row.id
            {
                return Err(ApiError::bad_request(
                    "a folder cannot be moved into itself or its descendants",
                ));
            }
            row.parent_id = parent;
        }
    }
    if let Some(ct) = req.content_type.filter(|c| !c.is_empty()) {
        if (ct == FOLDER) != row.is_folder() {
            return Err(ApiError::bad_request(
                "an asset cannot change between folder and file",
            ));
        }
        row.content_type = ct;
    }
    if let Some(metadata) = req.metadata {
        row.metadata = Some(metadata);
    }
    row.updated_at = Utc::now();
    store(&state).update(&row).await?;
    let storage = state.resources.asset_storage()?;
    Ok(Json(into_dto(row, storage.as_ref()).await))
}

/// Every asset below `id`, breadth first.
pub(crate) async fn descendants(state: &AppState, user: &str, id: &str) -> ApiResult<Vec<String>> {
    let store = store(state);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([id.to_owned()]);
    while let Some(parent) = queue.pop_front() {
        let mut query = AssetQuery::children(user, &parent, MAX_PAGE as usize);
        loop {
            let page = store.list(&query).await?;
            for child in page.assets {
                if seen.insert(child.id.clone()) {
                    out.push(child.id.clone());
                    queue.push_back(child.id);
                }
            }
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub(crate) struct Deleted {
    deleted_asset_ids: Vec<String>,
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let root = find(&state, user.as_str(), &id).await?;
    let storage = state.resources.asset_storage()?;
    // Deepest first, so a failure part-way leaves no child under a missing folder.
    let mut ids = descendants(&state, user.as_str(), &root.id).await?;
    ids.reverse();
    ids.push(root.id.clone());
    let mut deleted = Vec::with_capacity(ids.len());
    for asset_id in ids {
        let row = match find(&state, user.as_str(), &asset_id).await {
            Ok(row) => row,
            // Deleted concurrently: nothing left to do for it.
            Err(e) if e.status() == StatusCode::NOT_FOUND => continue,
            Err(e) => return Err(e),
        };
        if let Some(key) = row.key() {
            // Blob first: if this fails the row (and the blob) stay, consistent.
            storage
                .delete(&key)
                .await
                .map_err(|e| ApiError::from(e.with_context("asset", &row.id)))?;
        }
        if let Some(thumb) = crate::asset_thumbs::thumb_key(&row) {
            // A cached thumbnail: regenerated on demand, so a failure here only leaves a file.
            if let Err(e) = storage.delete(&thumb).await {
                tracing::warn!(asset = %row.id, error = %e, "could not remove an asset's thumbnail");
            }
        }
        store(&state).delete(user.as_str(), &row.id).await?;
        deleted.push(row.id);
    }
    Ok(Json(Deleted {
        deleted_asset_ids: deleted,
    }))
}

/// The asset's bytes, with ranges and validators, as an attachment named after the asset.
async fn download(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = find(&state, user.as_str(), &id).await?;
    let key = row
        .key()
        .ok_or_else(|| ApiError::bad_request("a folder has no content to download"))?;
    let storage = state.resources.asset_storage()?;
    let mut response = serve_object(&state, storage.as_ref(), &key, &method, &headers).await?;
    let ext = key
        .file_name()
        .rsplit_once('.')
        .map(|(_, e)| e)
        .unwrap_or("bin");
    let mut name = row.name.clone();
    if !name.to_ascii_lowercase().ends_with(&format!(".{ext}")) {
        name = format!("{name}.{ext}");
    }
    let encoded = percent_encoding::utf8_percent_encode(&name, nodetool_core::url::SEGMENT);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
