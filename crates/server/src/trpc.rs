//! tRPC at `/trpc`, as the NodeTool web client's `httpBatchLink` (`methodOverride: "POST"`,
//! no transformer) calls it, over the SAME handlers as the REST routes: every procedure below
//! builds the REST handler's extractors from its input and calls that handler, so a procedure
//! and its route cannot drift apart (validation, per-user scoping, errors).
//!
//! Wire format (tRPC v10/v11 without superjson):
//! - `GET /trpc/a.b?input=<json>` or `POST /trpc/a.b` with the input as the body → `{"result":
//!   {"data": …}}` or `{"error": shape}` with the error's HTTP status.
//! - `?batch=1`: the path is `a.b,c.d`, the input an object `{"0": …, "1": …}` (in `input=` for
//!   GET, the body for POST); the answer is an array of those items, in order, the calls run
//!   concurrently; HTTP 200 when all succeed, the common status when all fail alike, else 207.
//! - POST runs queries and mutations (`methodOverride`); GET runs queries only (a mutation by
//!   GET is `METHOD_NOT_SUPPORTED`).
//! - Errors have tRPC's default shape plus NodeTool's formatter fields: `{message, code:
//!   <JSON-RPC code>, data: {code: "NOT_FOUND", httpStatus, path, apiCode: null, zodError:
//!   null}}`. An unknown procedure is `NOT_FOUND` ("No procedure found on path …"); an input
//!   that is not JSON is `PARSE_ERROR`; a batch input that is not an object, a batch larger than
//!   [`MAX_BATCH`], several paths without `batch=1`, or an input of the wrong shape are
//!   `BAD_REQUEST`. A request-level error (nothing could be called) is one error object, not
//!   an array. A body over `NODETOOL_MAX_JSON_BODY_BYTES` is refused with 413 by the
//!   server-wide guard when its length is declared (the API's error shape: tRPC never sees
//!   it); a chunked one is cut off at the cap and answered here as `PAYLOAD_TOO_LARGE`.
//!
//! Procedures: `workflows.{list,get,create,update,delete,autosave,examples}`,
//! `workflows.versions.{list,create,restore,delete}`, `assets.{list,get,update,delete,children,
//! recursive,search,byFilename}`, `jobs.{list,runningAll,get,delete,cancel}`, `storage.signUrl`.
//! Authentication is the API's (the auth middleware runs first; a missing token is the REST
//! 401).

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nodetool_core::UserId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::{
    asset_queries, assets, job_queries, jobs, workflow_examples, workflow_versions, workflows,
    AppState,
};

/// Most calls one batch may carry (the web client batches far fewer).
pub const MAX_BATCH: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new().route("/trpc/{*path}", get(handle).post(handle))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Query,
    Mutation,
}

/// The procedures and their kinds.
fn kind_of(path: &str) -> Option<Kind> {
    use Kind::*;
    Some(match path {
        "workflows.list"
        | "workflows.get"
        | "workflows.examples"
        | "workflows.versions.list"
        | "assets.list"
        | "assets.get"
        | "assets.children"
        | "assets.recursive"
        | "assets.search"
        | "assets.byFilename"
        | "jobs.list"
        | "jobs.runningAll"
        | "jobs.get"
        | "storage.signUrl" => Query,
        "workflows.create"
        | "workflows.update"
        | "workflows.delete"
        | "workflows.autosave"
        | "workflows.versions.create"
        | "workflows.versions.restore"
        | "workflows.versions.delete"
        | "assets.update"
        | "assets.delete"
        | "jobs.delete"
        | "jobs.cancel" => Mutation,
        _ => return None,
    })
}

/// An error on its way to tRPC's shape.
#[derive(Debug)]
struct TrpcError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

impl TrpcError {
    fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            name,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn parse(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PARSE_ERROR", message)
    }

    /// The JSON-RPC number tRPC sends for each code name.
    fn json_rpc_code(&self) -> i64 {
        match self.name {
            "PARSE_ERROR" => -32700,
            "BAD_REQUEST" => -32600,
            "UNAUTHORIZED" => -32001,
            "FORBIDDEN" => -32003,
            "NOT_FOUND" => -32004,
            "METHOD_NOT_SUPPORTED" => -32005,
            "TIMEOUT" => -32008,
            "CONFLICT" => -32009,
            "PRECONDITION_FAILED" => -32012,
            "PAYLOAD_TOO_LARGE" => -32013,
            "UNSUPPORTED_MEDIA_TYPE" => -32015,
            "UNPROCESSABLE_CONTENT" => -32022,
            "TOO_MANY_REQUESTS" => -32029,
            _ => -32603,
        }
    }

    fn shape(&self, path: Option<&str>) -> Value {
        json!({
            "message": self.message,
            "code": self.json_rpc_code(),
            "data": {
                "code": self.name,
                "httpStatus": self.status.as_u16(),
                "path": path,
                "apiCode": null,
                "zodError": null,
            },
        })
    }
}

impl From<ApiError> for TrpcError {
    fn from(e: ApiError) -> Self {
        e.log();
        let status = e.status();
        let name = match status {
            StatusCode::BAD_REQUEST | StatusCode::RANGE_NOT_SATISFIABLE => "BAD_REQUEST",
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_SUPPORTED",
            StatusCode::CONFLICT => "CONFLICT",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE_CONTENT",
            StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
            StatusCode::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
            s if s.is_client_error() => "BAD_REQUEST",
            _ => "INTERNAL_SERVER_ERROR",
        };
        Self::new(status, name, e.message())
    }
}

type CallResult = Result<Value, TrpcError>;

/// The input as the handler's argument type; the wrong shape is `BAD_REQUEST` naming the
/// procedure.
fn arg<T: DeserializeOwned>(path: &str, input: &Value) -> Result<T, TrpcError> {
    let input = if input.is_null() {
        json!({})
    } else {
        input.clone()
    };
    serde_json::from_value(input)
        .map_err(|e| TrpcError::bad_request(format!("invalid input for {path}: {e}")))
}

/// A required string field of the input (`id`, `version_id` …).
fn field(path: &str, input: &Value, name: &str) -> Result<String, TrpcError> {
    match input.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(TrpcError::bad_request(format!(
            "invalid input for {path}: `{name}` is required"
        ))),
    }
}

/// The input without `keys` (the fields that go in the path), as a body.
fn body_without(input: &Value, keys: &[&str]) -> Value {
    let mut map = input.as_object().cloned().unwrap_or_default();
    for k in keys {
        map.remove(*k);
    }
    Value::Object(map)
}

fn ok<T: serde::Serialize>(r: ApiResult<Json<T>>) -> CallResult {
    let Json(v) = r?;
    serde_json::to_value(v).map_err(|e| {
        TrpcError::from(ApiError::from(
            nodetool_core::Error::unexpected("unserializable response").with_source(e),
        ))
    })
}

fn ok_unit(r: ApiResult<StatusCode>) -> CallResult {
    r?;
    Ok(json!({"ok": true}))
}

#[derive(Debug, Deserialize)]
struct SignUrlInput {
    key: String,
}

/// `storage.signUrl {key}` → `{url}`: the URL the asset API puts in `get_url` (signed when
/// the server signs URLs). A key outside the caller's prefix (multi-user providers) is "not
/// found", as NodeTool answers.
async fn sign_url(state: &AppState, user: &UserId, input: SignUrlInput) -> ApiResult<Json<Value>> {
    let key = nodetool_core::StorageKey::new(input.key)
        .map_err(|e| ApiError::bad_request(e.message().to_owned()))?;
    if !state.auth.is_single_user() && key.segments().next() != Some(user.as_str()) {
        return Err(ApiError::not_found("object not found"));
    }
    let url = state.resources.asset_storage()?.url(&key).await?;
    Ok(Json(json!({ "url": url })))
}

/// Runs one procedure for `user`.
async fn call(state: &AppState, user: &UserId, path: &str, input: Value) -> CallResult {
    let s = || State(state.clone());
    let u = || AuthUser(user.clone());
    let id = || field(path, &input, "id");
    match path {
        "workflows.list" => ok(workflows::list(s(), u(), Query(arg(path, &input)?)).await),
        "workflows.get" => ok(workflows::get_one(s(), u(), Path(id()?)).await),
        "workflows.create" => ok(workflows::create(
            s(),
            u(),
            Query(Default::default()),
            Json(arg(path, &input)?),
        )
        .await),
        "workflows.update" => {
            let body = body_without(&input, &["id"]);
            ok(workflows::put_one(s(), u(), Path(id()?), Json(arg(path, &body)?)).await)
        }
        "workflows.delete" => ok_unit(workflows::delete_one(s(), u(), Path(id()?)).await),
        "workflows.autosave" => {
            let body = body_without(&input, &["id"]);
            ok(workflow_versions::autosave(s(), u(), Path(id()?), Json(arg(path, &body)?)).await)
        }
        "workflows.examples" => {
            ok(workflow_examples::search(s(), u(), Query(arg(path, &input)?)).await)
        }
        "workflows.versions.list" => {
            let q = arg(path, &body_without(&input, &["id"]))?;
            ok(workflow_versions::list_versions(s(), u(), Path(id()?), Query(q)).await)
        }
        "workflows.versions.create" => {
            let body = arg(path, &body_without(&input, &["id"]))?;
            ok(workflow_versions::create_version(s(), u(), Path(id()?), Some(Json(body))).await)
        }
        "workflows.versions.restore" => {
            let version = field(path, &input, "version")?;
            ok(workflow_versions::restore_version(s(), u(), Path((id()?, version))).await)
        }
        "workflows.versions.delete" => {
            let version = field(path, &input, "version_id")?;
            let workflow = match field(path, &input, "id") {
                Ok(w) => w,
                Err(_) => {
                    workflow_versions::workflow_of_version(&state.workflows, &version).await?
                }
            };
            ok_unit(workflow_versions::delete_version(s(), u(), Path((workflow, version))).await)
        }
        "assets.list" => ok(assets::list(s(), u(), Query(arg(path, &input)?)).await),
        "assets.get" => ok(assets::get_one(s(), u(), Path(id()?)).await),
        "assets.update" => {
            let body = body_without(&input, &["id"]);
            ok(assets::update(s(), u(), Path(id()?), Json(arg(path, &body)?)).await)
        }
        "assets.delete" => ok(assets::delete(s(), u(), Path(id()?)).await),
        "assets.children" => {
            let q = arg(path, &body_without(&input, &["id"]))?;
            ok(asset_queries::children(s(), u(), Path(id()?), Query(q)).await)
        }
        "assets.recursive" => ok(asset_queries::recursive(s(), u(), Path(id()?)).await),
        "assets.search" => ok(asset_queries::search(s(), u(), Query(arg(path, &input)?)).await),
        "assets.byFilename" => {
            let name = field(path, &input, "filename")?;
            ok(asset_queries::by_filename(s(), u(), Path(name)).await)
        }
        "jobs.list" => ok(jobs::list(s(), u(), Query(arg(path, &input)?)).await),
        "jobs.runningAll" => ok(job_queries::running_all(s(), u()).await),
        "jobs.get" => ok(jobs::get_job(s(), u(), Path(id()?)).await),
        "jobs.delete" => ok(job_queries::delete_finished(s(), u(), Path(id()?)).await),
        "jobs.cancel" => {
            let id = id()?;
            let _cancelled = jobs::cancel(s(), u(), Path(id.clone())).await?;
            let rec =
                jobs::owned_job(jobs::manager(state)?, &jobs::path_job_id(&id)?, user).await?;
            Ok(job_queries::background_json(&rec))
        }
        "storage.signUrl" => ok(sign_url(state, user, arg(path, &input)?).await),
        _ => Err(TrpcError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("No procedure found on path \"{path}\""),
        )),
    }
}

/// One call's item: `{"result": {"data": …}}` or `{"error": shape}`, with its status.
async fn item(
    state: &AppState,
    user: &UserId,
    method: &Method,
    path: &str,
    input: Value,
) -> (StatusCode, Value) {
    let result = match kind_of(path) {
        Some(Kind::Mutation) if method == Method::GET => Err(TrpcError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_SUPPORTED",
            format!("{path} is a mutation: send it with POST"),
        )),
        _ => call(state, user, path, input).await,
    };
    match result {
        Ok(data) => (StatusCode::OK, json!({"result": {"data": data}})),
        Err(e) => (e.status, json!({"error": e.shape(Some(path))})),
    }
}

fn query_param(raw: Option<&str>, name: &str) -> Option<String> {
    let raw = raw?;
    raw.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The request's inputs, one per path; `Err` when nothing can be called.
fn inputs(
    method: &Method,
    query: Option<&str>,
    body: &Bytes,
    batch: bool,
    paths: usize,
) -> Result<Vec<Value>, TrpcError> {
    let raw: Option<String> = if method == Method::GET {
        query_param(query, "input")
    } else if body.is_empty() {
        None
    } else {
        Some(
            std::str::from_utf8(body)
                .map_err(|_| TrpcError::parse("the request body is not UTF-8"))?
                .to_owned(),
        )
    };
    let parsed = match raw.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| TrpcError::parse(format!("the input is not JSON: {e}")))?,
        ),
    };
    if !batch {
        return Ok(vec![parsed.unwrap_or(Value::Null)]);
    }
    let map: Map<String, Value> = match parsed {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(TrpcError::bad_request(
                "\"input\" needs to be an object when doing a batch call",
            ))
        }
    };
    Ok((0..paths)
        .map(|i| map.get(&i.to_string()).cloned().unwrap_or(Value::Null))
        .collect())
}

async fn handle(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    body: axum::body::Body,
) -> Response {
    let batch = matches!(
        query_param(query.as_deref(), "batch").as_deref(),
        Some("1" | "true")
    );
    let fail = |e: TrpcError| (e.status, Json(json!({"error": e.shape(None)}))).into_response();
    let max = usize::try_from(state.options.max_json_body_bytes).unwrap_or(usize::MAX);
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            return fail(TrpcError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the request body is larger than {max} bytes"),
            ))
        }
    };
    let paths: Vec<&str> = path.split(',').collect();
    if !batch && paths.len() > 1 {
        return fail(TrpcError::bad_request(
            "several procedures need batch=1 (tRPC's batch envelope)",
        ));
    }
    if paths.len() > MAX_BATCH {
        return fail(TrpcError::bad_request(format!(
            "a batch carries at most {MAX_BATCH} calls, got {}",
            paths.len()
        )));
    }
    let inputs = match inputs(&method, query.as_deref(), &body, batch, paths.len()) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let calls = paths
        .iter()
        .zip(inputs)
        .map(|(p, input)| item(&state, &user, &method, p, input));
    let items: Vec<(StatusCode, Value)> = futures::future::join_all(calls).await;
    if !batch {
        let (status, body) = items.into_iter().next().unwrap_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": TrpcError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR", "no call").shape(None)}),
        ));
        return (status, Json(body)).into_response();
    }
    let first = items.first().map_or(StatusCode::OK, |(s, _)| *s);
    let status = if items.iter().all(|(s, _)| *s == first) {
        first
    } else {
        StatusCode::MULTI_STATUS
    };
    let body: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    (status, Json(Value::Array(body))).into_response()
}
