//! Slow request bodies (slowloris on the body, not the headers): a body must deliver at least
//! [`MIN_BYTES_PER_WINDOW`] bytes in every `SERVER_BODY_TIMEOUT` window, or its request is
//! answered `408 Request Timeout` with `Connection: close` and the connection is freed. The
//! header timeout of the accept loop covers the head; this covers what follows it.
//!
//! The body is wrapped before any handler reads it; the handler sees a read error (an upload
//! aborts and keeps the old object), and this layer replaces whatever it answered with the 408.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::time::Instant;

use crate::error::ApiError;

/// Bytes a body must deliver per window (16 KiB per 30 s by default: about 550 B/s).
pub const MIN_BYTES_PER_WINDOW: u64 = 16 * 1024;

/// Watches one paced body; [`Pacer::finish`] turns the handler's answer into the 408 if the
/// body was too slow.
#[derive(Debug)]
pub struct Pacer {
    fired: Arc<AtomicBool>,
    window: Duration,
}

/// `req` with its body paced by `window`, and the pacer to finish its response with. A request
/// with no body (upgrades included: their frames have their own rules), or a zero window, is
/// left as it is.
pub(crate) fn pace(req: Request, window: Duration) -> (Request, Option<Pacer>) {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    if !has_body || window.is_zero() {
        return (req, None);
    }
    let fired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::from_stream(paced(body, window, fired.clone()));
    (
        Request::from_parts(parts, body),
        Some(Pacer { fired, window }),
    )
}

impl Pacer {
    /// `response`, or the 408 (with `Connection: close`) if the body was too slow.
    pub(crate) fn finish(self, response: Response) -> Response {
        if !self.fired.load(Ordering::Acquire) {
            return response;
        }
        tracing::info!(
            window_secs = self.window.as_secs_f64(),
            "request body too slow; answered 408 and closing the connection"
        );
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body was too slow: less than {MIN_BYTES_PER_WINDOW} bytes in {} s \
                 (SERVER_BODY_TIMEOUT)",
                self.window.as_secs()
            ),
        )
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        .into_response()
    }
}

/// `body` as a stream that fails once a window passes with fewer than
/// [`MIN_BYTES_PER_WINDOW`] bytes (the last, short window of a finished body never fails).
fn paced(
    body: Body,
    window: Duration,
    fired: Arc<AtomicBool>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    struct Pace {
        inner: axum::body::BodyDataStream,
        start: Instant,
        bytes: u64,
        window: Duration,
        fired: Arc<AtomicBool>,
        done: bool,
    }
    let pace = Pace {
        inner: body.into_data_stream(),
        start: Instant::now(),
        bytes: 0,
        window,
        fired,
        done: false,
    };
    futures::stream::unfold(pace, |mut p| async move {
        if p.done {
            return None;
        }
        loop {
            let deadline = p.start + p.window;
            match tokio::time::timeout_at(deadline, p.inner.next()).await {
                Ok(Some(Ok(chunk))) => {
                    p.bytes += chunk.len() as u64;
                    if Instant::now() >= deadline {
                        if p.bytes < MIN_BYTES_PER_WINDOW {
                            break;
                        }
                        p.start = Instant::now();
                        p.bytes = 0;
                    }
                    return Some((Ok(chunk), p));
                }
                Ok(Some(Err(e))) => {
                    p.done = true;
                    return Some((Err(std::io::Error::other(e)), p));
                }
                Ok(None) => return None,
                Err(_) if p.bytes >= MIN_BYTES_PER_WINDOW => {
                    p.start = Instant::now();
                    p.bytes = 0;
                }
                Err(_) => break,
            }
        }
        p.fired.store(true, Ordering::Release);
        p.done = true;
        Some((
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body was too slow (SERVER_BODY_TIMEOUT)",
            )),
            p,
        ))
    })
}
