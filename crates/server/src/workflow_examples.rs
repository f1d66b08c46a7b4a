//! Example workflows served from a folder of NodeTool workflow JSON files
//! (`NODETOOL_EXAMPLES_DIR`; unset, `./examples` when the working directory has one).
//!
//! - `GET /api/workflows/examples` → `{workflows, next: null}`: NodeTool's list entries (the
//!   `Workflow` shape, `access: "public"`, an empty graph, `id` = the file name).
//! - `GET /api/workflows/examples/search?query=` → the same, filtered by name, description
//!   or tag (case-insensitive substring).
//! - `GET /api/workflows/examples/{package}/{name}` → one example with its graph; `name` is
//!   the example's `name` or its file stem, `package` its `package_name` (default
//!   [`DEFAULT_PACKAGE`], the package the app asks for).
//!
//! `created_at`/`updated_at` are the file's modification time. Files are read per request (the folder is small and may change under a running server);
//! a file that is not a JSON object is skipped with a debug log. Without a folder the list is
//! empty. Any authenticated user may read them.

use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The package an example belongs to when its file names none: NodeTool's base package, which
/// the app's create-from-example flow asks for by default.
pub const DEFAULT_PACKAGE: &str = "nodetool-base";
/// Example files larger than this are skipped.
const MAX_EXAMPLE_BYTES: u64 = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/workflows/examples", get(list))
        .route("/api/workflows/examples/search", get(search))
        .route("/api/workflows/examples/{package}/{name}", get(one))
}

/// One example file: its name and its parsed JSON.
struct Example {
    file: String,
    body: Value,
    /// The file's modification time: `created_at` and `updated_at`.
    modified: DateTime<Utc>,
}

impl Example {
    fn name(&self) -> String {
        self.body
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.file.trim_end_matches(".json").to_owned())
    }

    fn package(&self) -> &str {
        self.body
            .get("package_name")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_PACKAGE)
    }

    fn text(&self, key: &str) -> String {
        self.body
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn tags(&self) -> Vec<String> {
        self.body
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// NodeTool's `Workflow` shape; `graph` only when `with_graph`.
    fn to_json(&self, with_graph: bool) -> Value {
        let graph = if with_graph {
            self.body
                .get("graph")
                .cloned()
                .unwrap_or_else(|| json!({"nodes": [], "edges": []}))
        } else {
            json!({"nodes": [], "edges": []})
        };
        json!({
            "id": self.file,
            "access": "public",
            "created_at": self.modified,
            "updated_at": self.modified,
            "name": self.name(),
            "tool_name": null,
            "description": self.text("description"),
            "tags": self.tags(),
            "thumbnail": null,
            "thumbnail_url": null,
            "graph": graph,
            "input_schema": null,
            "output_schema": null,
            "settings": self.body.get("settings").cloned().unwrap_or(Value::Null),
            "package_name": self.package(),
            "path": null,
            "run_mode": self.body.get("run_mode").cloned().unwrap_or(Value::Null),
            "workspace_id": null,
            "required_providers": null,
            "required_models": null,
            "html_app": null,
            "app_doc": null,
            "etag": null,
        })
    }

    fn matches(&self, query: &str) -> bool {
        query.is_empty()
            || self.name().to_lowercase().contains(query)
            || self.text("description").to_lowercase().contains(query)
            || self.tags().iter().any(|t| t.to_lowercase().contains(query))
    }
}

/// The examples folder: configured, or `./examples` when it exists.
pub fn default_dir(configured: Option<&FsPath>) -> Option<PathBuf> {
    match configured {
        Some(dir) => Some(dir.to_path_buf()),
        None => {
            let here = PathBuf::from("examples");
            here.is_dir().then_some(here)
        }
    }
}

async fn load(dir: Option<&FsPath>) -> ApiResult<Vec<Example>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "the examples folder does not exist");
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(ApiError::from(
                nodetool_core::Error::from(e).with_operation("examples.read_dir"),
            ))
        }
    };
    let mut out = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| ApiError::from(nodetool_core::Error::from(e).with_operation("examples")))?
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        let path = entry.path();
        let modified = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() && m.len() <= MAX_EXAMPLE_BYTES => m
                .modified()
                .map(DateTime::<Utc>::from)
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            _ => {
                tracing::debug!(file = %file, "skipping an example that is not a small file");
                continue;
            }
        };
        let parsed = tokio::fs::read(&path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(Value::is_object);
        match parsed {
            Some(body) => out.push(Example {
                file,
                body,
                modified,
            }),
            None => tracing::debug!(file = %file, "skipping an example that is not a JSON object"),
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    AuthUser(_user): AuthUser,
) -> ApiResult<Json<Value>> {
    let examples = load(state.options.examples_dir.as_deref()).await?;
    let workflows: Vec<Value> = examples.iter().map(|e| e.to_json(false)).collect();
    Ok(Json(json!({"workflows": workflows, "next": null})))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    query: Option<String>,
}

pub(crate) async fn search(
    State(state): State<AppState>,
    AuthUser(_user): AuthUser,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let query = q.query.unwrap_or_default().trim().to_lowercase();
    let examples = load(state.options.examples_dir.as_deref()).await?;
    let workflows: Vec<Value> = examples
        .iter()
        .filter(|e| e.matches(&query))
        .map(|e| e.to_json(false))
        .collect();
    Ok(Json(json!({"workflows": workflows, "next": null})))
}

/// The example `name` of `package` in the Workflow shape with its graph; 404 if none.
pub(crate) async fn find(state: &AppState, package: &str, name: &str) -> ApiResult<Value> {
    let examples = load(state.options.examples_dir.as_deref()).await?;
    examples
        .iter()
        .find(|e| {
            e.package() == package
                && (e.name() == name || e.file.trim_end_matches(".json") == name || e.file == name)
        })
        .map(|e| e.to_json(true))
        .ok_or_else(|| {
            ApiError::not_found(format!("example {name:?} not found in package {package:?}"))
        })
}

pub(crate) async fn one(
    State(state): State<AppState>,
    AuthUser(_user): AuthUser,
    Path((package, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(find(&state, &package, &name).await?))
}
