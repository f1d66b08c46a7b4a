//! `GET /api/nodes/metadata`: NodeTool's `NodeMetadata` of every node type this server runs
//! (native and Python-bridged), the list the app's node menu and editor are built from. The
//! body is rendered once at start (the registry does not change while serving) and served with
//! an ETag, so the app's reload on every tab is a 304.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use crate::AppState;

/// The rendered metadata array and its ETag.
#[derive(Clone, Debug)]
pub struct MetadataBody {
    body: Bytes,
    etag: Arc<str>,
}

impl Default for MetadataBody {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl MetadataBody {
    pub fn new(metadata: &[serde_json::Value]) -> Self {
        // Serialising `Value`s cannot fail.
        let body = Bytes::from(serde_json::to_vec(metadata).unwrap_or_else(|_| b"[]".to_vec()));
        let etag = format!("\"{}\"", &blake3::hash(&body).to_hex()[..32]);
        Self {
            body,
            etag: etag.into(),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/nodes/metadata", get(metadata))
}

async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let m = &state.node_metadata;
    let etag = HeaderValue::from_str(&m.etag).unwrap_or(HeaderValue::from_static("\"0\""));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == &*m.etag || t.trim() == "*")
        });
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        m.body.clone(),
    )
        .into_response()
}
