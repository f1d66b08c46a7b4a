//! Workflow versions and autosave: NodeTool's `WorkflowVersion` (a numbered snapshot of a
//! workflow's graph, `save_type` `manual` or `autosave`), in the server's database
//! (`nodetool_workflow_versions`, migration `20260103000200`).
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
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::{Row, SqlitePool};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
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

/// Removes every version of `workflow_id` (its workflow was deleted).
pub(crate) async fn delete_all(pool: &SqlitePool, workflow_id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM nodetool_workflow_versions WHERE workflow_id = ?")
        .bind(workflow_id)
        .execute(pool)
        .await?;
    Ok(())
}

fn version_json(row: &sqlx::sqlite::SqliteRow) -> ApiResult<Value> {
    let parse = |col: &str| -> ApiResult<Value> {
        let text: Option<String> = row.try_get(col)?;
        Ok(text
            .map(|t| serde_json::from_str(&t).unwrap_or(Value::Null))
            .unwrap_or(Value::Null))
    };
    let created: DateTime<Utc> = row.try_get("created_at")?;
    Ok(json!({
        "id": row.try_get::<String, _>("id")?,
        "workflow_id": row.try_get::<String, _>("workflow_id")?,
        "user_id": row.try_get::<String, _>("user_id")?,
        "name": row.try_get::<Option<String>, _>("name")?,
        "description": row.try_get::<Option<String>, _>("description")?,
        "graph": parse("graph")?,
        "version": row.try_get::<i64, _>("version")?,
        "save_type": row.try_get::<String, _>("save_type")?,
        "autosave_metadata": parse("autosave_metadata")?,
        "created_at": created,
    }))
}

/// Inserts the next version of `workflow_id` (one statement, so two saves never share a
/// number) and returns its row.
#[allow(clippy::too_many_arguments)]
async fn insert_version(
    pool: &SqlitePool,
    workflow_id: &str,
    user: &str,
    save_type: &str,
    name: Option<&str>,
    description: Option<&str>,
    graph: &str,
    autosave_metadata: Option<&Value>,
) -> ApiResult<sqlx::sqlite::SqliteRow> {
    let id = nodetool_core::id::new_id();
    sqlx::query(
        "INSERT INTO nodetool_workflow_versions (id, workflow_id, user_id, version, save_type, \
         name, description, graph, autosave_metadata, created_at) \
         SELECT ?, ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?, ? \
         FROM nodetool_workflow_versions WHERE workflow_id = ?",
    )
    .bind(&id)
    .bind(workflow_id)
    .bind(user)
    .bind(save_type)
    .bind(name)
    .bind(description)
    .bind(graph)
    .bind(autosave_metadata.map(Value::to_string))
    .bind(Utc::now())
    .bind(workflow_id)
    .execute(pool)
    .await?;
    Ok(
        sqlx::query("SELECT * FROM nodetool_workflow_versions WHERE id = ?")
            .bind(&id)
            .fetch_one(pool)
            .await?,
    )
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
    owned(&state.db, &user, &id, "versioned").await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIST}, got {limit}"
        )));
    }
    let rows = sqlx::query(
        "SELECT * FROM nodetool_workflow_versions WHERE workflow_id = ? \
         ORDER BY version DESC LIMIT ?",
    )
    .bind(&id)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let versions = rows
        .iter()
        .map(version_json)
        .collect::<ApiResult<Vec<_>>>()?;
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
    let row = owned(&state.db, &user, &id, "versioned").await?;
    let graph: String = row.try_get("graph")?;
    let v = insert_version(
        &state.db,
        &id,
        &user,
        "manual",
        body.name.as_deref(),
        body.description.as_deref(),
        &graph,
        None,
    )
    .await?;
    Ok(Json(version_json(&v)?))
}

/// The version of `workflow_id` named by `v`: its id, else its number.
async fn find_version(
    pool: &SqlitePool,
    workflow_id: &str,
    v: &str,
) -> ApiResult<sqlx::sqlite::SqliteRow> {
    let number = v.parse::<i64>().ok();
    sqlx::query(
        "SELECT * FROM nodetool_workflow_versions WHERE workflow_id = ? \
         AND (id = ? OR version = ?) ORDER BY id = ? DESC LIMIT 1",
    )
    .bind(workflow_id)
    .bind(v)
    .bind(number)
    .bind(v)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("version {v} of workflow {workflow_id} not found")))
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
    owned(&state.db, &user, &id, "versioned").await?;
    Ok(Json(version_json(
        &find_version(&state.db, &id, &v).await?,
    )?))
}

pub(crate) async fn delete_version(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, v)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owned(&state.db, &user, &id, "versioned").await?;
    let row = find_version(&state.db, &id, &v).await?;
    let vid: String = row.try_get("id")?;
    sqlx::query("DELETE FROM nodetool_workflow_versions WHERE id = ?")
        .bind(&vid)
        .execute(&state.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workflow a version id belongs to (tRPC's `versions.delete` names only the version).
pub(crate) async fn workflow_of_version(pool: &SqlitePool, version_id: &str) -> ApiResult<String> {
    sqlx::query_scalar("SELECT workflow_id FROM nodetool_workflow_versions WHERE id = ?")
        .bind(version_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("version {version_id} not found")))
}

pub(crate) async fn restore_version(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, v)): Path<(String, String)>,
) -> ApiResult<Json<WorkflowDto>> {
    version_number(&v)?;
    owned(&state.db, &user, &id, "restored").await?;
    let version = find_version(&state.db, &id, &v).await?;
    let graph: String = version.try_get("graph")?;
    sqlx::query(
        "UPDATE nodetool_workflows SET graph = ?, updated_at = ? WHERE id = ? AND user_id = ?",
    )
    .bind(&graph)
    .bind(Utc::now())
    .bind(&id)
    .bind(&user)
    .execute(&state.db)
    .await?;
    let row = owned(&state.db, &user, &id, "restored").await?;
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
    let row = owned(&state.db, &user, &id, "autosaved").await?;
    let updated_at: DateTime<Utc> = row.try_get("updated_at")?;
    if !body.force {
        let last: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT created_at FROM nodetool_workflow_versions \
             WHERE workflow_id = ? AND save_type = 'autosave' ORDER BY version DESC LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&state.db)
        .await?;
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
    sqlx::query(
        "UPDATE nodetool_workflows SET graph = ?, name = COALESCE(?, name), \
         description = COALESCE(?, description), access = COALESCE(?, access), updated_at = ? \
         WHERE id = ? AND user_id = ?",
    )
    .bind(&graph_text)
    .bind(&body.name)
    .bind(&body.description)
    .bind(access)
    .bind(now)
    .bind(&id)
    .bind(&user)
    .execute(&state.db)
    .await?;
    let saved = owned(&state.db, &user, &id, "autosaved").await?;
    let name: String = saved.try_get("name")?;
    let description: String = saved.try_get("description")?;
    let v = insert_version(
        &state.db,
        &id,
        &user,
        "autosave",
        Some(&name),
        Some(&description),
        &graph_text,
        body.autosave_metadata.as_ref(),
    )
    .await?;
    let pruned = sqlx::query(
        "DELETE FROM nodetool_workflow_versions WHERE workflow_id = ? AND save_type = 'autosave' \
         AND id NOT IN (SELECT id FROM nodetool_workflow_versions WHERE workflow_id = ? \
         AND save_type = 'autosave' ORDER BY version DESC LIMIT ?)",
    )
    .bind(&id)
    .bind(&id)
    .bind(keep)
    .execute(&state.db)
    .await?
    .rows_affected();
    let version = version_json(&v)?;
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
