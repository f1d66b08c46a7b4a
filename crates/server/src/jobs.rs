//! The jobs API under `/api/jobs`: submit, list, get, cancel, and the job's events as SSE (or
//! NDJSON).
//!
//! Every route is scoped to the authenticated user: another user's job is 404, exactly like a
//! job that does not exist, so ids cannot be probed. A `user_id` in a request body is ignored.
//!
//! Events: each SSE event is `id: <seq>`, `event: <type>`, `data: <json envelope>`. A client that
//! reconnects with `Last-Event-ID: <seq>` (or `?since_seq=<seq>`) gets exactly the events after
//! that seq, then live ones; the stream ends after the job's terminal `job_update`. A slow
//! reader never slows the job: the manager's subscription resyncs from its replay buffer, and a
//! reader that fell further behind than that buffer gets an `event: lag` naming the seqs it
//! missed (`missed_from_seq`..=`missed_to_seq`) instead of a silent gap.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use nodetool_core::{JobId, UserId};
use nodetool_exec::{JobEvents, JobExecutionManager, JobRecord, RunJobRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
pub use crate::wire::is_terminal;
use crate::wire::{follow, Control, FinalUpdate, Followed, JobList, JobView};
use crate::AppState;

/// How often an idle SSE stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most jobs one list call returns.
const MAX_LIST: u32 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", post(submit).get(list))
        .route("/api/jobs/{id}", get(get_job).delete(cancel))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/events", get(events))
}

/// The manager, or 503 when this server runs without one.
pub(crate) fn manager(state: &AppState) -> ApiResult<&JobExecutionManager> {
    state.jobs.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "job execution is not enabled on this server",
        )
    })
}

/// A job id from a URL path. One that breaks the id rule ([`JobId::parse`]) names no job, so
/// it gets the same 404 as an unknown id.
pub(crate) fn path_job_id(raw: &str) -> ApiResult<JobId> {
    JobId::parse(raw).map_err(|_| ApiError::not_found("no such job"))
}

/// The job if `user` owns it; 404 otherwise (also for other users' jobs).
pub(crate) async fn owned_job(
    manager: &JobExecutionManager,
    job_id: &JobId,
    user: &UserId,
) -> ApiResult<JobRecord> {
    match manager.get(job_id).await? {
        Some(rec) if rec.user_id == *user => Ok(rec),
        _ => Err(ApiError::not_found("no such job")),
    }
}

/// The one submit path of every REST entry point (`POST /api/jobs`, a stored workflow's
/// `run`): the manager validates and starts the job for `user`.
pub(crate) async fn submit_request(
    manager: &JobExecutionManager,
    mut request: RunJobRequest,
    user: &UserId,
) -> ApiResult<JobId> {
    // The client job id is `/ws`'s (NodeTool's web client); REST allocates one, as before.
    request.job_id = None;
    // `request.user_id` is ignored by the manager; the authenticated user owns the job.
    manager.submit(request, user).await.map_err(|e| {
        // The manager's refusals (ALLOWED_STRATEGIES) are the caller's to read, unlike a
        // backend's PermissionDenied, whose text the generic mapping hides.
        if e.kind() == nodetool_core::ErrorKind::PermissionDenied {
            ApiError::forbidden(e.message())
        } else {
            ApiError::from(e)
        }
    })
}

/// A request's W3C `traceparent` header, as sent (the manager ignores a malformed one).
pub(crate) fn traceparent_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[derive(Debug, Deserialize)]
struct SubmitQuery {
    #[serde(default)]
    stream: bool,
}

async fn submit(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    Json(mut request): Json<RunJobRequest>,
) -> ApiResult<Response> {
    let manager = manager(&state)?;
    if let Some(tp) = traceparent_header(&headers) {
        request.traceparent = Some(tp);
    }
    let job_id = submit_request(manager, request, &user).await?;
    if q.stream {
        let events = manager.subscribe(&job_id, 0)?;
        tracing::info!(%job_id, user = %user, "job submitted (streaming)");
        return Ok(stream_response(&headers, Some(events), 0, None));
    }
    let rec = owned_job(manager, &job_id, &user).await?;
    tracing::info!(%job_id, user = %user, "job submitted");
    Ok(Json(JobView::of(&rec)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
    /// Only this workflow's jobs (NodeTool's `workflow_id` filter), among the newest `limit`.
    workflow_id: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<JobList>> {
    let manager = manager(&state)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let mut jobs = manager.list(&user, limit).await?;
    if let Some(wf) = q.workflow_id.as_deref().filter(|w| !w.is_empty()) {
        jobs.retain(|j| j.workflow_id == wf);
    }
    Ok(Json(JobList {
        jobs: jobs.iter().map(JobView::of).collect(),
        next_start_key: None,
    }))
}

pub(crate) async fn get_job(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let rec = owned_job(manager(&state)?, &path_job_id(&id)?, &user).await?;
    Ok(Json(JobView::of(&rec)))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let manager = manager(&state)?;
    let id = path_job_id(&id)?;
    owned_job(manager, &id, &user).await?;
    let was_live = manager.cancel(&id).await?;
    tracing::info!(job_id = %id, user = %user, was_live, "job cancel requested");
    Ok(Json(json!({
        "id": id,
        "status": if was_live { "cancelled" } else { "not_found_or_completed" },
    })))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    since_seq: Option<u64>,
}

async fn events(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let manager = manager(&state)?;
    let id = path_job_id(&id)?;
    let rec = owned_job(manager, &id, &user).await?;
    let since = last_event_id(&headers).or(q.since_seq).unwrap_or_default();
    match manager.subscribe(&id, since) {
        Ok(events) => Ok(stream_response(&headers, Some(events), since, None)),
        // Ended and evicted from memory: the record is all there is.
        Err(e) if e.kind() == nodetool_core::ErrorKind::NotFound => Ok(stream_response(
            &headers,
            None,
            since,
            Some(JobView::of(&rec).final_update()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `Last-Event-ID` as a seq; a malformed one is ignored (the client gets everything kept).
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"))
}

/// A [`follow`]ed item with its type name, as SSE and NDJSON write it.
fn sse_parts(item: &Followed) -> (&'static str, serde_json::Result<Vec<u8>>) {
    match item {
        Followed::Event(e) => (e.event.type_name(), serde_json::to_vec(e.as_ref())),
        // The same `{"type": "lag", ...}` as `/ws` sends.
        Followed::Lag(notice) => ("lag", serde_json::to_vec(&Control::Lag(notice.clone()))),
        Followed::Final(u) => ("job_update", serde_json::to_vec(u)),
    }
}

fn stream_response(
    headers: &HeaderMap,
    events: Option<JobEvents>,
    since: u64,
    tail: Option<FinalUpdate>,
) -> Response {
    use futures::StreamExt;
    let stream = follow(events, since, tail);
    if wants_ndjson(headers) {
        let lines = stream.map(|item| {
            let mut line = sse_parts(&item).1.unwrap_or_else(|e| {
                format!(r#"{{"type":"error","message":"unserializable event: {e}"}}"#).into_bytes()
            });
            line.push(b'\n');
            Ok::<_, Infallible>(Bytes::from(line))
        });
        let mut resp = axum::body::Body::from_stream(lines).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return resp;
    }
    let sse = stream.map(|item| {
        let (name, data) = sse_parts(&item);
        let ev = data.map(|bytes| {
            let ev = SseEvent::default()
                .event(name)
                .data(String::from_utf8_lossy(&bytes));
            // Only real events carry an id, so `Last-Event-ID` stays at the last one.
            match &item {
                Followed::Event(e) => ev.id(e.seq.to_string()),
                _ => ev,
            }
        });
        Ok::<_, Infallible>(ev.unwrap_or_else(|e| {
            SseEvent::default().event("error").data(format!(
                r#"{{"type":"error","message":"unserializable event: {e}"}}"#
            ))
        }))
    });
    Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
