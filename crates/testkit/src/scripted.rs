//! What the AI doubles answer, turn by turn: a queue of [`Reply`]s shared by the OpenAI peer,
//! the Anthropic double and the Gemini double, and the requests they received.
//!
//! Each double renders a reply in its own wire format (chunk JSON, SSE event sequence, status
//! and error body) exactly as its API documents; the faults (`Status`, `Malformed`,
//! `Truncated`, `Stall`) are what a misbehaving provider does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A text answer, streamed in pieces of a few characters.
    Text(String),
    /// A tool call with its raw argument text (which may be invalid JSON on purpose), optionally
    /// after some text.
    ToolCall {
        text: String,
        name: String,
        arguments: String,
    },
    /// An HTTP error with the provider's error body for this status, and extra headers
    /// (e.g. `retry-after`).
    Status {
        code: u16,
        message: String,
        headers: Vec<(String, String)>,
    },
    /// A stream whose second event is not JSON.
    Malformed,
    /// Some text, then the connection closes without the end marker.
    Truncated(String),
    /// Headers and one event, then silence (for idle timeouts); the body never ends.
    Stall,
}

impl Reply {
    pub fn text(t: &str) -> Self {
        Reply::Text(t.to_owned())
    }

    pub fn tool(name: &str, arguments: &str) -> Self {
        Reply::ToolCall {
            text: String::new(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }
    }

    pub fn status(code: u16, message: &str) -> Self {
        Reply::Status {
            code,
            message: message.to_owned(),
            headers: Vec::new(),
        }
    }

    /// A 429 that asks for a retry after `seconds`.
    pub fn rate_limited(seconds: f64) -> Self {
        Reply::Status {
            code: 429,
            message: "Rate limit reached; slow down".to_owned(),
            headers: vec![("retry-after".to_owned(), format!("{seconds}"))],
        }
    }
}

/// A received request.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The queue of replies and the log of requests; the default reply answers when it is empty.
#[derive(Debug, Clone)]
pub struct Script {
    inner: Arc<Mutex<ScriptState>>,
}

#[derive(Debug)]
struct ScriptState {
    replies: VecDeque<Reply>,
    default: Reply,
    received: Vec<Received>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(ScriptState {
                replies: VecDeque::new(),
                default: Reply::text("Hello from the double."),
                received: Vec::new(),
            })),
        }
    }
}

impl Script {
    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues replies, answered in order.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().replies.extend(replies);
    }

    /// What answers once the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn remaining(&self) -> usize {
        self.lock().replies.len()
    }

    /// Logs a request that gets no scripted reply (e.g. an unknown model).
    pub fn record(&self, received: Received) {
        self.lock().received.push(received);
    }

    /// Logs a request and takes the next reply.
    pub fn next(&self, received: Received) -> Reply {
        let mut s = self.lock();
        s.received.push(received);
        s.replies.pop_front().unwrap_or_else(|| s.default.clone())
    }
}

/// Splits text into stream pieces of up to 4 characters.
pub fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

/// An SSE body from ready-made frames; with `stall`, the body stays open after them.
pub fn sse_response(frames: Vec<String>, stall: bool) -> Response {
    let stream = futures::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<Bytes, std::io::Error>(Bytes::from(f))),
    );
    let body = if stall {
        use futures::StreamExt;
        let forever = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<Bytes, std::io::Error>(Bytes::new())
        });
        Body::from_stream(stream.chain(forever))
    } else {
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// A JSON response with `status` and extra headers.
pub fn json_response(status: u16, body: &Value, headers: &[(String, String)]) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// Headers of a request as pairs.
pub fn header_pairs(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

/// Binds an axum router on a free loopback port and serves it until the handle is dropped.
pub(crate) async fn serve(
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("AI double stopped: {e}");
        }
    });
    (addr, task)
}
