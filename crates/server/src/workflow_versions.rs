//! Workflow versions and autosave: NodeTool's `WorkflowVersion` (a numbered snapshot of a
//! workflow's graph, `save_type` `manual` or `autosave`), in the workflow store
//! ([`WorkflowStore`]: `nodetool_workflow_versions`, migration `20260103000200`).
//!
//! - `GET /api/workflows/{id}/versions?limit=` → `{versions}`, newest first.
//! - `POST /api/workflows/{id}/versions` `{name?, description?}`: a manual version of the
//!   current graph.
//! - `GET /api/workflows/{id}/versions/{version}`: one version by number.
//! - `DELETE /api/workflows/{id}/versions/{version}`: by version id (NodeTool's) or number.
//! - `POST /api/workflows/{id}/versions/{version}/restore`: the workflow's graph becomes the
//!   version's; answers the workflow.
//! - `POST|PUT /api/workflows/{id}/autosave` `{graph, name?, description?, access?, force?,
//!   max_versions?, autosave_metadata?}`: saves the graph on the workflow and records an
//!   `autosave` version, keeping the newest `max_versions` autosaves (default 10, at most
//!   [`MAX_AUTOSAVES`]; manual versions are never pruned). Within [`AUTOSAVE_INTERVAL`] of the
//!   previous autosave nothing is saved (`skipped: true`) unless `force`: the interval is read
//!   from the table, so it holds across restarts and server processes.
//!
//! Versions are the owner's: another user's public workflow is 403 here (it is readable, its
//! history is not), a private one 404. Versions go with their workflow on delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::workflow_store::{NewVersion, VersionRow, WorkflowPatch, WorkflowStore};
use crate::workflows::{check_graph, owned, row_to_dto, WorkflowDto};
use crate::AppState;

/// Most autosaves kept per workflow, whatever `max_versions` asks.
pub const MAX_AUTOSAVES: i64 = 100;
const DEFAULT_AUTOSAVES: i64 = 10;
/// Autosaves closer together than this are skipped unless forced (NodeTool's 30 s).
pub const AUTOSAVE_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
const MAX_LIST: i64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/workflows/{id}/versions",
            get(list_versions).post(create_version),
        )
        .route(
            "/api/workflows/{id}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/api/workflows/{id}/versions/{version}/restore",
            post(restore_version),
        )
        .route("/api/workflows/{id}/autosave", post(autosave).put(autosave))
}

fn version_json(row: &VersionRow) -> Value {
    let parse = |text: Option<&str>| {
        text.map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    };
    json!({
        "id": row.id,
        "workflow_id": row.workflow_id,
        "user_id": row.user_id,
        "name": row.name,
        "description": row.description,
        "graph": parse(Some(&row.graph)),
        "version": row.version,
        "save_type": row.save_type,
        "autosave_metadata": parse(row.autosave_metadata.as_deref()),
        "created_at": row.created_at,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<i64>,
}

pub(crate) async fn list_versions(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    owned(&state.workflows, user.as_str(), &id, "versioned").await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIST}, got {limit}"
        )));
    }
    let rows = state.workflows.list_versions(&id, limit).await?;
    let versions: Vec<Value> = rows.iter().map(version_json).collect();
    Ok(Json(json!({ "versions": versions })))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateBody {
    name: Option<String>,
    description: Option<String>,
}

pub(crate) async fn create_version(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    body: Option<Json<CreateBody>>,
) -> ApiResult<Json<Value>> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let row = owned(&state.workflows, user.as_str(), &id, "versioned").await?;
    let v = state
        .workflows
        .insert_version(&NewVersion {
            workflow_id: &id,
            user_id: user.as_str(),
            save_type: "manual",
            name: body.name.as_deref(),
            description: body.description.as_deref(),
            graph: &row.graph,
            autosave_metadata: None,
        })
        .await?;
    Ok(Json(version_json(&v)))
}

/// The version of `workflow_id` named by `v`: its id, else its number.
async fn find_version(store: &WorkflowStore, workflow_id: &str, v: &str) -> ApiResult<VersionRow> {
    store.find_version(workflow_id, v).await?.ok_or_else(|| {
        ApiError::not_found(format!("version {v} of workflow {workflow_id} not found"))
    })
}

fn version_number(v: &str) -> ApiResult<i64> {
    v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::bad_request(format!("a version number is an integer >= 1, got {v:?}"))
    })
}

pub(crate) async fn get_version(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    version_number(&v)?;
    owned(&state.workflows, user.as_str(), &id, "versioned").await?;
    Ok(Json(version_json(
        &find_version(&state.workflows, &id, &v).await?,
    )))
}

pub(crate) async fn delete_version(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, v)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owned(&state.workflows, user.as_str(), &id, "versioned").await?;
    let row = find_version(&state.workflows, &id, &v).await?;
    state.workflows.delete_version(&row.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workflow a version id belongs to (tRPC's `versions.delete` names only the version).
pub(crate) async fn workflow_of_version(
    store: &WorkflowStore,
    version_id: &str,
) -> ApiResult<String> {
    store
        .workflow_of_version(version_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {version_id} not found")))
}

pub(crate) async fn restore_version(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, v)): Path<(String, String)>,
) -> ApiResult<Json<WorkflowDto>> {
    version_number(&v)?;
    owned(&state.workflows, user.as_str(), &id, "restored").await?;
    let version = find_version(&state.workflows, &id, &v).await?;
    let patch = WorkflowPatch {
        graph: Some(version.graph),
        ..WorkflowPatch::default()
    };
    state
        .workflows
        .update(user.as_str(), &id, &patch, Utc::now())
        .await?;
    let row = owned(&state.workflows, user.as_str(), &id, "restored").await?;
    Ok(Json(row_to_dto(&row)?))
}

/// NodeTool's autosave body.
#[derive(Debug, Deserialize)]
pub(crate) struct AutosaveBody {
    graph: Option<Value>,
    name: Option<String>,
    description: Option<String>,
    access: Option<String>,
    #[serde(default)]
    force: bool,
    max_versions: Option<i64>,
    autosave_metadata: Option<Value>,
}

pub(crate) async fn autosave(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Json(body): Json<AutosaveBody>,
) -> ApiResult<Json<Value>> {
    let graph = body
        .graph
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("autosave needs a graph"))?;
    check_graph(graph)?;
    let keep = body.max_versions.unwrap_or(DEFAULT_AUTOSAVES);
    if !(1..=MAX_AUTOSAVES).contains(&keep) {
        return Err(ApiError::bad_request(format!(
            "max_versions must be between 1 and {MAX_AUTOSAVES}, got {keep}"
        )));
    }
    let row = owned(&state.workflows, user.as_str(), &id, "autosaved").await?;
    let updated_at = row.updated_at;
    if !body.force {
        let last = state.workflows.last_autosave_at(&id).await?;
        if last.is_some_and(|t| Utc::now() - t < AUTOSAVE_INTERVAL) {
            return Ok(Json(json!({
                "version": null,
                "message": "Autosave skipped (rate limited)",
                "skipped": true,
                "updated_at": updated_at,
            })));
        }
    }
    let access = body
        .access
        .as_deref()
        .filter(|a| matches!(*a, "public" | "private"));
    let graph_text = graph.to_string();
    let now = Utc::now();
    let patch = WorkflowPatch {
        graph: Some(graph_text.clone()),
        name: body.name.clone(),
        description: body.description.clone(),
        access: access.map(str::to_owned),
        ..WorkflowPatch::default()
    };
    state
        .workflows
        .update(user.as_str(), &id, &patch, now)
        .await?;
    let saved = owned(&state.workflows, user.as_str(), &id, "autosaved").await?;
    let v = state
        .workflows
        .insert_version(&NewVersion {
            workflow_id: &id,
            user_id: user.as_str(),
            save_type: "autosave",
            name: Some(&saved.name),
            description: Some(&saved.description),
            graph: &graph_text,
            autosave_metadata: body.autosave_metadata.as_ref().map(Value::to_string),
        })
        .await?;
    let pruned = state.workflows.prune_autosaves(&id, keep).await?;
    let version = version_json(&v);
    tracing::debug!(workflow_id = %id, version = %version["version"], pruned, "autosaved");
    Ok(Json(json!({
        "version": {
            "id": version["id"],
            "version": version["version"],
            "workflow_id": version["workflow_id"],
            "save_type": version["save_type"],
            "created_at": version["created_at"],
        },
        "message": "Autosaved successfully",
        "skipped": false,
        "updated_at": now,
    })))
}
