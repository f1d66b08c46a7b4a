//! `POST /api/workflows/{id}/run`: runs a stored workflow by id, as NodeTool's route does.
//!
//! The body is NodeTool's `{params, background}` plus any of our `RunJobRequest` fields
//! (`execution_strategy`, `resource_limits`, `use_cache` …); a `graph` in it is ignored: the
//! stored graph runs. The job goes through the manager's one submit path
//! ([`crate::jobs::submit_request`]), so it is listed, streamed (`/api/jobs/{id}/events`, `/ws
//! reconnect_job`) and cancelled like any other.
//!
//! - `background: false` (the default) waits for the job and answers NodeTool's run payload
//!   `{job_id, workflow_id, status, outputs, error, background}`.
//! - `background: true` answers at once with the job (`{job_id, id, workflow_id, status,
//!   background: true, …}`); poll `GET /api/jobs/{id}`.
//!
//! The caller may run their own workflows and public ones (which then run as the caller);
//! another user's private workflow is "not found".

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use nodetool_exec::RunJobRequest;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{manager, owned_job, submit_request};
use crate::wire::JobView;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/workflows/{id}/run", post(run))
}

/// NodeTool's `workflowRunBody` with our job request fields beside it.
#[derive(Debug, Deserialize)]
pub(crate) struct RunBody {
    #[serde(default)]
    background: bool,
    #[serde(flatten)]
    request: RunJobRequest,
}

pub(crate) async fn run(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Option<Json<RunBody>>,
) -> ApiResult<Json<Value>> {
    let manager = manager(&state)?;
    let (background, mut request) = match body {
        Some(Json(b)) => (b.background, b.request),
        None => (false, RunJobRequest::default()),
    };
    if let Some(tp) = crate::jobs::traceparent_header(&headers) {
        request.traceparent = Some(tp);
    }
    request.workflow_id = Some(id.clone());
    request.graph = None;
    crate::workflows::resolve_stored_graph(&state.workflows, user.as_str(), &mut request)
        .await
        .map_err(ApiError::from)?;
    let job_id = submit_request(manager, request, &user).await?;
    tracing::info!(%job_id, workflow_id = %id, user = %user, background, "stored workflow submitted");
    if background {
        let rec = owned_job(manager, &job_id, &user).await?;
        let mut out = serde_json::to_value(JobView::of(&rec)).map_err(|e| {
            ApiError::from(nodetool_core::Error::unexpected(format!(
                "cannot encode a job: {e}"
            )))
        })?;
        out["job_id"] = json!(job_id);
        out["background"] = json!(true);
        return Ok(Json(out));
    }
    let rec = manager.wait(&job_id).await?;
    Ok(Json(json!({
        "job_id": rec.id,
        "workflow_id": rec.workflow_id,
        "status": rec.status.as_str(),
        "outputs": rec.result.clone().unwrap_or_else(|| json!({})),
        "error": rec.error,
        "background": false,
    })))
}
