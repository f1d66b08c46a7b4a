//! `/api/workflows`: NodeTool's workflow store, per user, in the server's database (SQLite or
//! PostgreSQL: [`WorkflowStore`]).
//!
//! - `GET /api/workflows?limit=&cursor=` lists the caller's workflows, newest first, as
//!   `{workflows, next}` (`next` is the cursor of the following page or `""`).
//! - `POST /api/workflows` creates one from NodeTool's `WorkflowRequest`.
//! - `GET /api/workflows/{id}`: the caller's own, or anyone's with `access: "public"`.
//! - `PUT /api/workflows/{id}` updates the caller's own, or creates it under that id (the app
//!   saves a new workflow by the id it made up); a public workflow of another user is
//!   readable, not writable (403); a private one is "not found" (404), as is every other
//!   user's object anywhere in the API.
//! - `DELETE /api/workflows/{id}`: the caller's own only.
//!
//! A graph is saved as the editor sends it, problems and all: NodeTool autosaves drafts, so
//! validation belongs to running, not saving. It must be a JSON object with `nodes` and `edges`
//! arrays (else 400), and at most [`MAX_GRAPH_BYTES`]. A `user_id` in a body is ignored.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::SqlitePool;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
pub use crate::workflow_store::{WorkflowPatch, WorkflowRow, WorkflowStore};
use crate::AppState;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// A graph larger than this is refused: the bundled examples are under 100 KiB.
pub const MAX_GRAPH_BYTES: usize = 8 * 1024 * 1024;
const ACCESS: &[&str] = &["private", "public"];

/// Another user's public workflow: readable, so the refusal says why (unlike a private one,
/// which is "not found").
fn not_owner(id: &str, verb: &str) -> ApiError {
    ApiError::forbidden(format!(
        "workflow {id} is public: readable by everyone, {verb} by its owner only"
    ))
}

/// Applies the workflow migrations to the server's pool (idempotent).
pub async fn migrate(pool: &SqlitePool) -> nodetool_core::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    // The asset and job stores keep their migrations in the same database.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.map_err(|e| {
        nodetool_core::Error::new(
            nodetool_core::ErrorKind::Unexpected,
            "workflow store migration failed",
        )
        .with_operation("workflows.migrate")
        .with_source(e)
    })
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/workflows", get(list).post(create))
        .route(
            "/api/workflows/{id}",
            get(get_one).put(put_one).delete(delete_one),
        )
}

/// NodeTool's `Workflow` DTO.
#[derive(Debug, Serialize)]
pub(crate) struct WorkflowDto {
    id: String,
    user_id: String,
    access: String,
    name: String,
    description: String,
    tags: Vec<String>,
    thumbnail: Option<String>,
    thumbnail_url: Option<String>,
    graph: Value,
    settings: Option<Value>,
    run_mode: Option<String>,
    tool_name: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// NodeTool's `WorkflowRequest`; unknown fields (a `user_id`, say) are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct WorkflowRequest {
    name: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
    access: Option<String>,
    thumbnail: Option<String>,
    graph: Option<Value>,
    settings: Option<Value>,
    run_mode: Option<String>,
    tool_name: Option<String>,
    /// Create from an example (NodeTool's create-from-example flow; also `?from_example_name=`
    /// on `POST /api/workflows`): its graph when the request has none, or an empty one.
    #[serde(default)]
    from_example_name: Option<String>,
    #[serde(default)]
    from_example_package: Option<String>,
}

/// `POST /api/workflows?from_example_package=&from_example_name=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FromExample {
    from_example_name: Option<String>,
    from_example_package: Option<String>,
}

impl WorkflowRequest {
    fn check(&self) -> ApiResult<()> {
        if let Some(access) = &self.access {
            if !ACCESS.contains(&access.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "access must be one of {ACCESS:?}, got {access:?}"
                )));
            }
        }
        if let Some(graph) = &self.graph {
            check_graph(graph)?;
        }
        if self.name.as_deref().is_some_and(|n| n.len() > 1024) {
            return Err(ApiError::bad_request("name is longer than 1024 bytes"));
        }
        Ok(())
    }
}

pub(crate) fn check_graph(graph: &Value) -> ApiResult<()> {
    let ok = graph.get("nodes").is_some_and(Value::is_array)
        && graph.get("edges").is_some_and(Value::is_array);
    if !ok {
        return Err(ApiError::bad_request(
            "graph must be a JSON object with `nodes` and `edges` arrays",
        ));
    }
    let size = serde_json::to_vec(graph).map_or(0, |b| b.len());
    if size > MAX_GRAPH_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("graph is {size} bytes; the limit is {MAX_GRAPH_BYTES}"),
        ));
    }
    Ok(())
}

pub(crate) fn row_to_dto(row: &WorkflowRow) -> ApiResult<WorkflowDto> {
    let parse = |col: &str, text: Option<&str>| -> ApiResult<Option<Value>> {
        text.map(|t| {
            serde_json::from_str(t).map_err(|e| {
                ApiError::from(
                    nodetool_core::Error::unexpected(format!("stored workflow {col} is not JSON"))
                        .with_source(e),
                )
            })
        })
        .transpose()
    };
    let tags: Vec<String> = parse("tags", Some(&row.tags))?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    Ok(WorkflowDto {
        id: row.id.clone(),
        user_id: row.user_id.clone(),
        access: row.access.clone(),
        name: row.name.clone(),
        description: row.description.clone(),
        tags,
        thumbnail_url: row.thumbnail.clone(),
        thumbnail: row.thumbnail.clone(),
        graph: parse("graph", Some(&row.graph))?
            .unwrap_or_else(|| json!({"nodes": [], "edges": []})),
        settings: parse("settings", row.settings.as_deref())?,
        run_mode: row.run_mode.clone(),
        tool_name: row.tool_name.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The row `id` as the caller may see it: their own or a public one; anything else is
/// "not found" (never "forbidden": that would confirm another user's id exists).
pub(crate) async fn visible(store: &WorkflowStore, user: &str, id: &str) -> ApiResult<WorkflowRow> {
    store
        .visible(user, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))
}

/// The row `id` if `user` owns it. Another user's public workflow is 403 (the caller can see
/// it, so the refusal says why: `verb` names what only the owner may do); a private one, or none,
/// is 404.
pub(crate) async fn owned(
    store: &WorkflowStore,
    user: &str,
    id: &str,
    verb: &str,
) -> ApiResult<WorkflowRow> {
    let row = visible(store, user, id).await?;
    if row.user_id != user {
        return Err(not_owner(id, verb));
    }
    Ok(row)
}

/// `run_job {workflow_id}` without a `graph` (on `/ws`, and `POST /api/workflows/{id}/run`):
/// fills `request.graph` from the stored workflow the caller may read (their own, or a public
/// one, which then runs as the caller). A request that carries a graph is left alone; one
/// with neither stays as it is, for the manager's own "needs a graph" refusal. Another user's
/// private workflow is "not found", as everywhere.
pub async fn resolve_stored_graph(
    store: &WorkflowStore,
    user: &str,
    request: &mut nodetool_exec::RunJobRequest,
) -> nodetool_core::Result<()> {
    if request.graph.is_some() {
        return Ok(());
    }
    let Some(id) = request.workflow_id.clone().filter(|id| !id.is_empty()) else {
        return Ok(());
    };
    let row = visible(store, user, &id).await.map_err(|e| {
        if e.status() == StatusCode::NOT_FOUND {
            nodetool_core::Error::not_found(e.message().to_owned())
        } else {
            nodetool_core::Error::new(nodetool_core::ErrorKind::Unavailable, "database error")
        }
        .with_operation("workflows.resolve_graph")
    })?;
    let graph = serde_json::from_str(&row.graph).map_err(|e| {
        nodetool_core::Error::invalid_input(format!(
            "stored workflow {id} has a graph that cannot run: {e}"
        ))
        .with_operation("workflows.resolve_graph")
    })?;
    request.graph = Some(graph);
    Ok(())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    let cursor = q.cursor.filter(|c| !c.is_empty());
    // Newest first: ids are UUIDv7 (or client ids, which sort among them by their text).
    let rows = state
        .workflows
        .list(user.as_str(), cursor.as_deref(), Some(limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    let mut workflows = Vec::new();
    for row in rows.iter().take(limit as usize) {
        workflows.push(row_to_dto(row)?);
    }
    let next = if more {
        workflows.last().map(|w| w.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Json(json!({"workflows": workflows, "next": next})))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(from): Query<FromExample>,
    Json(mut req): Json<WorkflowRequest>,
) -> ApiResult<Json<WorkflowDto>> {
    req.check()?;
    let name = req.from_example_name.take().or(from.from_example_name);
    let package = req
        .from_example_package
        .take()
        .or(from.from_example_package);
    let empty = req.graph.as_ref().is_none_or(|g| {
        g.get("nodes")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    });
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        if empty {
            let package =
                package.unwrap_or_else(|| crate::workflow_examples::DEFAULT_PACKAGE.to_owned());
            let example = crate::workflow_examples::find(&state, &package, &name).await?;
            req.graph = example.get("graph").cloned();
            req.check()?;
        }
    }
    let id = nodetool_core::id::new_id();
    insert(&state.workflows, user.as_str(), &id, req).await?;
    let row = visible(&state.workflows, user.as_str(), &id).await?;
    Ok(Json(row_to_dto(&row)?))
}

async fn insert(
    store: &WorkflowStore,
    user: &str,
    id: &str,
    req: WorkflowRequest,
) -> ApiResult<()> {
    let now = Utc::now();
    let graph = req
        .graph
        .unwrap_or_else(|| json!({"nodes": [], "edges": []}));
    store
        .insert(&WorkflowRow {
            id: id.to_owned(),
            user_id: user.to_owned(),
            access: req.access.unwrap_or_else(|| "private".to_owned()),
            name: req.name.unwrap_or_else(|| "Untitled".to_owned()),
            description: req.description.unwrap_or_default(),
            tags: serde_json::to_string(&req.tags.unwrap_or_default())
                .unwrap_or_else(|_| "[]".into()),
            thumbnail: req.thumbnail,
            graph: graph.to_string(),
            settings: req.settings.as_ref().map(Value::to_string),
            run_mode: req.run_mode,
            tool_name: req.tool_name,
            created_at: now,
            updated_at: now,
        })
        .await?;
    Ok(())
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowDto>> {
    let row = visible(&state.workflows, user.as_str(), &id).await?;
    Ok(Json(row_to_dto(&row)?))
}

pub(crate) async fn put_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Json(req): Json<WorkflowRequest>,
) -> ApiResult<Json<WorkflowDto>> {
    req.check()?;
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::bad_request(
            "a workflow id is 1-128 characters of letters, digits, '-' and '_'",
        ));
    }
    let owner = state.workflows.owner_of(&id).await?;
    match owner {
        None => insert(&state.workflows, user.as_str(), &id, req).await?,
        Some((owner, _)) if owner == user => {
            let patch = WorkflowPatch {
                name: req.name,
                description: req.description,
                tags: req.tags.as_ref().map(|t| json!(t).to_string()),
                access: req.access,
                thumbnail: req.thumbnail,
                graph: req.graph.as_ref().map(Value::to_string),
                settings: req.settings.as_ref().map(Value::to_string),
                run_mode: req.run_mode,
                tool_name: req.tool_name,
            };
            state
                .workflows
                .update(user.as_str(), &id, &patch, Utc::now())
                .await?;
        }
        Some((_, access)) if access == "public" => return Err(not_owner(&id, "changed")),
        Some(_) => return Err(ApiError::not_found(format!("workflow {id} not found"))),
    }
    let row = visible(&state.workflows, user.as_str(), &id).await?;
    Ok(Json(row_to_dto(&row)?))
}

pub(crate) async fn delete_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.workflows.delete(user.as_str(), &id).await? {
        // Someone else's public workflow: visible, so say why it cannot go.
        return Err(match visible(&state.workflows, user.as_str(), &id).await {
            Ok(_) => not_owner(&id, "deleted"),
            Err(e) => e,
        });
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The store as `nodetool workflows` uses it (the same rows the routes serve).
pub mod store {
    use super::*;

    /// The caller's workflows, newest first, as NodeTool `Workflow` JSON.
    pub async fn list(store: &WorkflowStore, user: &str) -> nodetool_core::Result<Vec<Value>> {
        let rows = store.list(user, None, None).await?;
        rows.iter().map(|r| to_value(row_to_dto(r))).collect()
    }

    /// One workflow the caller may read.
    pub async fn get(store: &WorkflowStore, user: &str, id: &str) -> nodetool_core::Result<Value> {
        let row = visible(store, user, id).await.map_err(|e| {
            // "Not found" stays that; anything else (the database) is not the caller's fault.
            let err = if e.status() == StatusCode::NOT_FOUND {
                nodetool_core::Error::not_found(e.message().to_owned())
            } else {
                let kind = nodetool_core::ErrorKind::Unavailable;
                nodetool_core::Error::new(kind, e.message().to_owned())
            };
            err.with_operation("workflows.get")
        })?;
        to_value(row_to_dto(&row))
    }

    /// Imports a NodeTool workflow file (a saved `Workflow` or a bare `{nodes, edges}`) as a
    /// new workflow of `user`; returns its id.
    pub async fn import(
        store: &WorkflowStore,
        user: &str,
        file: &Value,
    ) -> nodetool_core::Result<String> {
        let graph = file.get("graph").cloned().unwrap_or_else(|| file.clone());
        let text = |k: &str| file.get(k).and_then(Value::as_str).map(str::to_owned);
        let req = WorkflowRequest {
            name: text("name"),
            description: text("description"),
            tags: file
                .get("tags")
                .and_then(|t| serde_json::from_value(t.clone()).ok()),
            access: Some("private".to_owned()),
            thumbnail: None,
            graph: Some(graph),
            settings: file.get("settings").cloned().filter(|v| !v.is_null()),
            run_mode: text("run_mode"),
            tool_name: text("tool_name"),
            from_example_name: None,
            from_example_package: None,
        };
        let invalid = |e: ApiError| {
            nodetool_core::Error::invalid_input(e.message().to_owned())
                .with_operation("workflows.import")
        };
        req.check().map_err(invalid)?;
        let id = nodetool_core::id::new_id();
        insert(store, user, &id, req).await.map_err(invalid)?;
        Ok(id)
    }

    fn to_value(dto: ApiResult<WorkflowDto>) -> nodetool_core::Result<Value> {
        let dto = dto.map_err(|e| nodetool_core::Error::unexpected(e.message().to_owned()))?;
        serde_json::to_value(dto).map_err(|e| nodetool_core::Error::unexpected(e.to_string()))
    }
}
