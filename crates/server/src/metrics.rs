//! `/metrics` in the Prometheus text format, rendered by hand from a few counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Process-wide counters of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests_total: AtomicU64,
    requests_in_flight: AtomicI64,
    /// (operation, status code) → count.
    storage_ops: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Metrics {
    pub fn storage_op(&self, op: &'static str, status: StatusCode) {
        let mut ops = self.storage_ops.lock().unwrap_or_else(|p| p.into_inner());
        *ops.entry((op, status.as_u16())).or_default() += 1;
    }

    pub fn requests_in_flight(&self) -> i64 {
        self.requests_in_flight.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP nodetool_http_requests_total HTTP requests received.\n\
             # TYPE nodetool_http_requests_total counter\n\
             nodetool_http_requests_total {}",
            self.requests_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nodetool_http_requests_in_flight HTTP requests being served, open streams included.\n\
             # TYPE nodetool_http_requests_in_flight gauge\n\
             nodetool_http_requests_in_flight {}",
            self.requests_in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP nodetool_storage_operations_total Storage route requests by operation and status.\n\
             # TYPE nodetool_storage_operations_total counter"
        );
        let ops = self.storage_ops.lock().unwrap_or_else(|p| p.into_inner());
        for ((op, status), n) in ops.iter() {
            let _ = writeln!(
                out,
                "nodetool_storage_operations_total{{op=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

/// Decrements the in-flight gauge when the response body is done (or dropped), so a streaming
/// download counts until its last byte.
struct InFlight(std::sync::Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let metrics = state.metrics.clone();
    metrics.requests_total.fetch_add(1, Ordering::Relaxed);
    metrics.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(metrics);
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::Body::new(GuardedBody {
        inner: body,
        _guard: guard,
    });
    Response::from_parts(parts, body)
}

pin_project_lite::pin_project! {
    struct GuardedBody {
        #[pin]
        inner: axum::body::Body,
        _guard: InFlight,
    }
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub async fn render(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
