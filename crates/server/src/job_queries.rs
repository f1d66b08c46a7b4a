//! The job views the NodeTool app asks for besides `/api/jobs`: `GET /api/jobs/running/all`
//! (the caller's unfinished jobs as NodeTool's `BackgroundJobResponse`) and deleting a
//! finished job from the history (tRPC `jobs.delete`).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use nodetool_exec::JobRecord;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{manager, owned_job};
use crate::AppState;

/// NodeTool pages 500 jobs and keeps the running ones.
const RUNNING_SCAN: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/jobs/running/all", get(running_all))
}

/// NodeTool's `BackgroundJobResponse`.
pub(crate) fn background_json(r: &JobRecord) -> Value {
    let done = r.status.is_terminal();
    json!({
        "job_id": r.id,
        "status": r.status.as_str(),
        "workflow_id": r.workflow_id,
        "created_at": r.created_at,
        "is_running": !done,
        "is_completed": done,
    })
}

pub(crate) async fn running_all(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<Value>> {
    let jobs = manager(&state)?.list(&user, RUNNING_SCAN).await?;
    Ok(Json(Value::Array(
        jobs.iter()
            .filter(|j| !j.status.is_terminal())
            .map(background_json)
            .collect(),
    )))
}

/// Removes a finished job of the caller's from the history. A job that has not ended is
/// refused (409: cancel it first), so a running job never loses its record.
pub(crate) async fn delete_finished(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = crate::jobs::path_job_id(&id)?;
    let rec = owned_job(manager(&state)?, &id, &user).await?;
    if !rec.status.is_terminal() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!("job {id} is {}; cancel it first", rec.status.as_str()),
        ));
    }
    if !manager(&state)?.delete_ended(&id, &user).await? {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    tracing::info!(job_id = %id, user = %user, "finished job deleted from the history");
    Ok(Json(json!({"ok": true})))
}
