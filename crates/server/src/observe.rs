//! The outermost layer: counts every request in the metrics and traces it.
//!
//! A hand-written tower layer rather than `from_fn` plus tower-http's `TraceLayer`: those two
//! cost a state clone, a boxed future, a second body wrapper and two clock reads per request,
//! about 1.5 µs of the 14 µs of CPU a 4 KiB GET took (docs/bench/server.md). Here the clock is
//! read only when DEBUG is on for this module.
//!
//! What it records: `nodetool_http_requests_total`; `nodetool_http_requests_in_flight` until the
//! response body is finished or dropped (a streaming download counts until its last byte); and
//! `nodetool_open_streams{kind}` for SSE and NDJSON responses, recognised by content type. Each
//! request runs in a DEBUG span `request{method, uri}` and ends with a DEBUG event carrying the
//! status and latency. Failures log their cause where they become responses ([`crate::ApiError`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use tracing::Span;

use crate::metrics::{InFlight, Metrics, OpenStream, StreamKind};

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ObserveLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let in_flight = self.metrics.request_started();
        let span =
            tracing::debug_span!("request", method = %req.method(), uri = %RedactedUri(req.uri()));
        let start = (!span.is_disabled()).then(Instant::now);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ObserveFuture {
            inner,
            state: Some(Pending {
                in_flight,
                metrics: self.metrics.clone(),
                span,
                start,
            }),
        }
    }
}

struct Pending {
    in_flight: InFlight,
    metrics: Arc<Metrics>,
    span: Span,
    start: Option<Instant>,
}

pin_project_lite::pin_project! {
    /// The response future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        state: Option<Pending>,
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state {
            Some(pending) => {
                let _entered = pending.span.enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        let Some(pending) = this.state.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(result.map(|response| {
            if let Some(start) = pending.start {
                let _entered = pending.span.enter();
                tracing::debug!(
                    status = response.status().as_u16(),
                    latency_us = start.elapsed().as_micros() as u64,
                    "response"
                );
            }
            let stream = stream_kind(&response).map(|kind| pending.metrics.open_stream(kind));
            let (parts, body) = response.into_parts();
            let body = axum::body::Body::new(GuardedBody {
                inner: body,
                _in_flight: pending.in_flight,
                _stream: stream,
            });
            Response::from_parts(parts, body)
        }))
    }
}

/// The stream kind of a response by its content type, if it is an event stream.
fn stream_kind(response: &Response) -> Option<StreamKind> {
    let ct = response
        .headers()
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    if ct.starts_with("text/event-stream") {
        Some(StreamKind::Sse)
    } else if ct.starts_with("application/x-ndjson") {
        Some(StreamKind::Ndjson)
    } else {
        None
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds the request's metric guards until it is finished or dropped.
    struct GuardedBody {
        #[pin]
        inner: axum::body::Body,
        _in_flight: InFlight,
        _stream: Option<OpenStream>,
    }
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Query parameters whose values are credentials (`/ws?api_key=`, signed URLs' `sig`, OAuth
/// style tokens): never logged.
const SECRET_PARAMS: &[&str] = &[
    "api_key",
    "apikey",
    "key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "sig",
    "signature",
    "password",
    "secret",
    "auth",
    "authorization",
];

/// A URI as logs show it: the values of [`SECRET_PARAMS`] replaced by `REDACTED`.
#[derive(Debug)]
pub struct RedactedUri<'a>(pub &'a axum::http::Uri);

impl std::fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(query) = self.0.query() else {
            return write!(f, "{}", self.0);
        };
        let path = self.0.path();
        if let (Some(scheme), Some(authority)) = (self.0.scheme_str(), self.0.authority()) {
            write!(f, "{scheme}://{authority}")?;
        }
        write!(f, "{path}?{}", redact_query(query))
    }
}

/// `query` with the value of every credential-like parameter replaced by `REDACTED`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            let secret = SECRET_PARAMS
                .iter()
                .any(|s| decoded.eq_ignore_ascii_case(s));
            if secret && !value.is_empty() {
                format!("{name}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn query_secrets_are_redacted() {
        let uri: axum::http::Uri = "/ws?api_key=s3cr3t&x=1&API%5Fkey=t&sig=abc&expires=9"
            .parse()
            .unwrap_or_default();
        let shown = super::RedactedUri(&uri).to_string();
        assert_eq!(
            shown,
            "/ws?api_key=REDACTED&x=1&API%5Fkey=REDACTED&sig=REDACTED&expires=9"
        );
        let plain: axum::http::Uri = "/api/jobs".parse().unwrap_or_default();
        assert_eq!(super::RedactedUri(&plain).to_string(), "/api/jobs");
    }
}
