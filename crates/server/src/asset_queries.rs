//! The asset views the NodeTool app reads besides `/api/assets` (its tRPC `assets.children`,
//! `recursive`, `search`, `byFilename`), as REST routes the tRPC procedures call:
//!
//! - `GET /api/assets/{id}/children?limit=` → `{assets: [{id, name, content_type}], next: null}`
//!   (`id` may be the user's home, whose id is the user id).
//! - `GET /api/assets/{id}/recursive` → `{assets}`: everything below the folder, full records,
//!   breadth first.
//! - `GET /api/assets/search?query=&content_type=&page_size=&workflow_id=` → `{assets,
//!   next_cursor, total_count, is_global_search}`: the caller's assets whose name contains
//!   `query` (case-insensitive).
//! - `GET /api/assets/by-filename/{filename}` → the caller's first asset with exactly that name.
//!
//! Per user like the rest of the assets API: another user's folder is "not found". Search and
//! by-filename scan at most [`MAX_SCAN`] of the caller's records.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use nodetool_core::{AssetQuery, AssetRecord};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::assets::{descendants, find, into_dto, store};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Most records one search or by-filename call looks at.
pub const MAX_SCAN: usize = 10_000;
const PAGE: usize = 1000;
const MAX_QUERY: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/assets/search", get(search))
        .route("/api/assets/by-filename/{filename}", get(by_filename))
        .route("/api/assets/{id}/children", get(children))
        .route("/api/assets/{id}/recursive", get(recursive))
}

/// `id` must be the caller's home or one of their folders.
async fn folder(state: &AppState, user: &str, id: &str) -> ApiResult<()> {
    if id == user {
        return Ok(());
    }
    let row = find(state, user, id).await?;
    if !row.is_folder() {
        return Err(ApiError::bad_request(format!("asset {id} is not a folder")));
    }
    Ok(())
}

/// The caller's records matching `query` (all pages, at most [`MAX_SCAN`]) for which `keep`
/// holds.
async fn scan(
    state: &AppState,
    mut query: AssetQuery,
    keep: impl Fn(&AssetRecord) -> bool,
) -> ApiResult<Vec<AssetRecord>> {
    let store = store(state);
    let mut out = Vec::new();
    let mut seen = 0;
    loop {
        let page = store.list(&query).await?;
        seen += page.assets.len();
        out.extend(page.assets.into_iter().filter(|r| keep(r)));
        match page.next {
            Some(next) if seen < MAX_SCAN => query.cursor = Some(next),
            _ => return Ok(out),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ChildrenQuery {
    limit: Option<usize>,
}

pub(crate) async fn children(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<ChildrenQuery>,
) -> ApiResult<Json<Value>> {
    folder(&state, user.as_str(), &id).await?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_SCAN);
    let page = store(&state)
        .list(&AssetQuery::children(user.as_str(), &id, limit))
        .await?;
    let assets: Vec<Value> = page
        .assets
        .iter()
        .map(|a| json!({"id": a.id, "name": a.name, "content_type": a.content_type}))
        .collect();
    Ok(Json(json!({"assets": assets, "next": null})))
}

pub(crate) async fn recursive(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    folder(&state, user.as_str(), &id).await?;
    let ids = descendants(&state, user.as_str(), &id).await?;
    let storage = state.resources.asset_storage()?;
    let mut assets = Vec::with_capacity(ids.len());
    for asset_id in ids {
        match find(&state, user.as_str(), &asset_id).await {
            Ok(row) => assets.push(into_dto(row, storage.as_ref()).await),
            // Deleted meanwhile.
            Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(json!({ "assets": assets })))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    query: Option<String>,
    content_type: Option<String>,
    page_size: Option<usize>,
    workflow_id: Option<String>,
}

pub(crate) async fn search(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let needle = q.query.unwrap_or_default().trim().to_lowercase();
    if needle.is_empty() {
        return Err(ApiError::bad_request("search needs a non-empty query"));
    }
    if needle.len() > MAX_QUERY {
        return Err(ApiError::bad_request(format!(
            "a search query is at most {MAX_QUERY} bytes"
        )));
    }
    let limit = q.page_size.unwrap_or(100).clamp(1, PAGE);
    let query = AssetQuery {
        user_id: user.to_string(),
        content_type: q.content_type.filter(|c| !c.is_empty()),
        workflow_id: q.workflow_id.clone().filter(|w| !w.is_empty()),
        limit: PAGE,
        ..AssetQuery::default()
    };
    let matched = scan(&state, query, |r| r.name.to_lowercase().contains(&needle)).await?;
    let total = matched.len();
    let storage = state.resources.asset_storage()?;
    let mut assets = Vec::with_capacity(limit.min(total));
    for row in matched.into_iter().take(limit) {
        assets.push(into_dto(row, storage.as_ref()).await);
    }
    Ok(Json(json!({
        "assets": assets,
        "next_cursor": null,
        "total_count": total,
        "is_global_search": q.workflow_id.is_none(),
    })))
}

pub(crate) async fn by_filename(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(filename): Path<String>,
) -> ApiResult<Json<crate::assets::AssetDto>> {
    let query = AssetQuery {
        user_id: user.to_string(),
        limit: PAGE,
        ..AssetQuery::default()
    };
    let row = scan(&state, query, |r| r.name == filename)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no asset named {filename:?}")))?;
    let storage = state.resources.asset_storage()?;
    Ok(Json(into_dto(row, storage.as_ref()).await))
}
