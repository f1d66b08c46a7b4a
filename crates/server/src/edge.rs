//! The layer every request passes before it is routed: the [guards](crate::guard) (Host,
//! Origin, JSON bodies), then [body pacing](crate::body_timeout).
//!
//! One hand-written tower layer instead of two `from_fn` middlewares: each of those cost a
//! state clone, a boxed future and a `Next` per request, about 1 µs of a 4 KiB GET
//! (docs/bench/one-job-path.md). A request that needs neither (no body, allowed Host) goes
//! through with no allocation.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::body_timeout::{self, Pacer};
use crate::{guard, AppState};

/// See the [module docs](self).
#[derive(Clone)]
pub struct EdgeLayer {
    state: AppState,
}

impl EdgeLayer {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`EdgeLayer`] wraps around the routes.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Paced first, so the guard's JSON cap wraps the paced body and keeps its 413.
        let (req, pacer) = body_timeout::pace(req, self.state.options.body_timeout);
        match guard::check(&self.state, req) {
            Ok(req) => EdgeFuture::Routed {
                inner: self.inner.call(req),
                pacer,
            },
            Err(refused) => EdgeFuture::Refused {
                answer: std::future::ready(Ok(refused.into_response())),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Edge`].
    #[project = EdgeProj]
    pub enum EdgeFuture<F> {
        Routed { #[pin] inner: F, pacer: Option<Pacer> },
        Refused { #[pin] answer: Ready<Result<Response, Infallible>> },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EdgeProj::Routed { inner, pacer } => {
                let response = ready!(inner.poll(cx));
                Poll::Ready(match pacer.take() {
                    Some(pacer) => response.map(|r| pacer.finish(r)),
                    None => response,
                })
            }
            EdgeProj::Refused { answer } => answer.poll(cx),
        }
    }
}
