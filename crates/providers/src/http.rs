//! The HTTP layer every client shares: retries with backoff that honour `retry-after` and
//! rate-limit headers, connect and idle timeouts, a hard cap on response bytes, the mapping of
//! statuses to error kinds, an SSE reader, and scrubbing of the API key from anything shown.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tracing::Instrument;

use nodetool_core::{Error, ErrorKind, Result};

/// Timeouts, retries and limits of one provider client.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    /// TCP + TLS connect.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for response headers or the next bytes of a body.
    pub idle_timeout: Duration,
    /// Retries after the first attempt, for transient failures before any answer byte.
    pub max_retries: u32,
    /// First backoff; doubled per retry, with jitter, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A `retry-after` longer than this fails at once (with the wait in the message) instead of
    /// holding the job.
    pub max_retry_wait: Duration,
    /// Hard cap on the bytes of one response, streamed or not.
    pub max_response_bytes: u64,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_retries: 2,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            max_retry_wait: Duration::from_secs(60),
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Who is being called, for error messages.
#[derive(Clone)]
pub(crate) struct Target {
    /// NodeTool provider id.
    pub provider: String,
    /// The setting that holds the key, named in permission errors.
    pub key_setting: &'static str,
    /// The key itself, only to scrub it from provider messages; never printed.
    pub secret: Option<String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider)
            .field("key_setting", &self.key_setting)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Target {
    /// `text` with the key replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.secret {
            Some(s) if s.len() >= 4 && text.contains(s.as_str()) => text.replace(s.as_str(), "***"),
            _ => text.to_owned(),
        }
    }
}

/// A reqwest client with the options applied, and the retry loop.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    pub opts: HttpOptions,
    pub target: Target,
}

impl Transport {
    pub fn new(opts: HttpOptions, target: Target) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.idle_timeout)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Unexpected, "cannot build the HTTP client")
                    .with_source(e)
                    .with_operation("provider.client")
            })?;
        Ok(Self {
            client,
            opts,
            target,
        })
    }

    /// Sends the request `build` makes, retrying transient failures (connection errors,
    /// timeouts, 408, 409, 429, 5xx) up to `max_retries` times with backoff; a `retry-after` /
    /// rate-limit reset header sets the wait. Returns a response with a success status.
    pub async fn send(
        &self,
        op: &'static str,
        model: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        // One `provider` span per call (retries included), a child of the node's; the server
        // gets its context as `traceparent`, so its own spans join the job's trace.
        let span = tracing::info_span!(
            target: "nodetool::trace",
            "provider",
            provider = %self.target.provider,
            op,
            model,
        );
        let traceparent = nodetool_core::trace::traceparent_of(&span).map(|t| t.to_string());
        self.send_attempts(op, model, build, traceparent.as_deref())
            .instrument(span)
            .await
    }

    async fn send_attempts(
        &self,
        op: &'static str,
        model: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        traceparent: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0u32;
        loop {
            let mut request = build(&self.client);
            if let Some(tp) = traceparent {
                request = request.header("traceparent", tp);
            }
            let (err, wait) = match request.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
                    let err = self.status_error(op, model, status, &body);
                    (err, retry_after(&headers))
                }
                Err(e) => (self.transport_error(op, &e), None),
            };
            if !err.is_temporary() || attempt >= self.opts.max_retries {
                return Err(err.with_context("attempts", attempt + 1));
            }
            let wait = wait.unwrap_or_else(|| backoff(&self.opts, attempt));
            if wait > self.opts.max_retry_wait {
                return Err(err.with_context("retry_after_seconds", wait.as_secs_f64()));
            }
            tracing::info!(
                provider = %self.target.provider,
                op,
                attempt = attempt + 1,
                wait_ms = wait.as_millis() as u64,
                error = %err,
                "provider call failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The JSON body of a response, read under the byte cap.
    pub async fn json(&self, op: &'static str, resp: reqwest::Response) -> Result<Value> {
        let bytes = self.bytes(op, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!(
                    "{} sent a response that is not valid JSON: {e}",
                    self.target.provider
                ),
            )
            .with_operation(op)
        })
    }

    /// The whole body under the byte cap.
    pub async fn bytes(&self, op: &'static str, resp: reqwest::Response) -> Result<Bytes> {
        let cap = self.opts.max_response_bytes;
        let mut body = resp.bytes_stream();
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(op, &e))?;
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(too_large(&self.target.provider, cap).with_operation(op));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Server-sent events of a response, under the byte cap and the idle timeout.
    pub fn sse(&self, op: &'static str, resp: reqwest::Response) -> SseReader {
        SseReader {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            received: 0,
            cap: self.opts.max_response_bytes,
            data: String::new(),
            has_data: false,
            event: String::new(),
            ended: false,
            op,
            transport: self.clone(),
        }
    }

    pub fn transport_error(&self, op: &'static str, e: &reqwest::Error) -> Error {
        let provider = &self.target.provider;
        // reqwest's Display names the URL; our URLs never carry keys, but scrub anyway.
        let detail = self.target.scrub(&error_chain(e));
        if e.is_timeout() {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "{provider} did not answer within {:.0}s ({detail})",
                    self.opts.idle_timeout.as_secs_f64()
                ),
            )
            .with_operation(op)
        } else if e.is_connect() {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot connect to {provider}: {detail}"),
            )
            .with_operation(op)
        } else if e.is_body() || e.is_decode() {
            Error::new(
                ErrorKind::Unavailable,
                format!("{provider} broke off the response: {detail}"),
            )
            .with_operation(op)
        } else {
            Error::new(
                ErrorKind::Unavailable,
                format!("request to {provider} failed: {detail}"),
            )
            .with_operation(op)
        }
    }

    /// Maps a failed status and the provider's error body to a kind and a message.
    pub fn status_error(
        &self,
        op: &'static str,
        model: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Error {
        let provider = &self.target.provider;
        let said = self.target.scrub(&provider_message(body));
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        };
        let code = status.as_u16();
        let (kind, message) = match code {
            401 | 403 => (
                ErrorKind::PermissionDenied,
                format!(
                    "{provider} refused the credentials (HTTP {code}); check {}{said}",
                    self.target.key_setting
                ),
            ),
            400 if said.to_ascii_lowercase().contains("api key") => (
                ErrorKind::PermissionDenied,
                format!(
                    "{provider} refused the credentials (HTTP 400); check {}{said}",
                    self.target.key_setting
                ),
            ),
            404 if !model.is_empty() => (
                ErrorKind::InvalidInput,
                format!("model `{model}` does not exist at {provider} (HTTP 404){said}"),
            ),
            400 | 422 if mentions_missing_model(&said) => (
                ErrorKind::InvalidInput,
                format!("model `{model}` does not exist at {provider} (HTTP {code}){said}"),
            ),
            404 => (
                ErrorKind::NotFound,
                format!("{provider}: not found (HTTP 404){said}"),
            ),
            400 | 422 => (
                ErrorKind::InvalidInput,
                format!("{provider} rejected the request (HTTP {code}){said}"),
            ),
            413 => (
                ErrorKind::TooLarge,
                format!("{provider}: request too large (HTTP 413){said}"),
            ),
            408 => (
                ErrorKind::Timeout,
                format!("{provider}: request timeout (HTTP 408){said}"),
            ),
            429 => (
                ErrorKind::RateLimited,
                format!("{provider} is rate limiting requests (HTTP 429){said}"),
            ),
            409 | 500..=599 => (
                ErrorKind::Unavailable,
                format!("{provider} failed (HTTP {code}){said}"),
            ),
            _ => (
                ErrorKind::Unexpected,
                format!("{provider} answered HTTP {code}{said}"),
            ),
        };
        let temporary = matches!(code, 408 | 409 | 429 | 500..=599);
        Error::new(kind, message)
            .set_temporary(temporary)
            .with_operation(op)
            .with_context("status", code)
    }
}

fn mentions_missing_model(said: &str) -> bool {
    let s = said.to_ascii_lowercase();
    s.contains("model")
        && (s.contains("not found") || s.contains("does not exist") || s.contains("not_found"))
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) fn too_large(provider: &str, cap: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("{provider} sent more than the {cap}-byte response limit"),
    )
}

/// `error.message` (OpenAI, Anthropic, Gemini), `message`, `detail`, or the start of the body.
fn provider_message(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let found = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("error"));
        if let Some(m) = found {
            return match m {
                Value::String(s) => cut(s, 500),
                other => cut(&other.to_string(), 500),
            };
        }
    }
    cut(&String::from_utf8_lossy(body), 300)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.trim().to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>().trim())
    }
}

async fn read_limited(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Exponential backoff with full jitter in the upper half: `base * 2^attempt`, capped.
fn backoff(opts: &HttpOptions, attempt: u32) -> Duration {
    let exp = opts
        .backoff_base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let capped = exp.min(opts.backoff_max);
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    capped.mul_f64(jitter)
}

/// How long the provider asked us to wait: `retry-after-ms`, `retry-after` (seconds or an HTTP
/// date), then OpenAI's `x-ratelimit-reset-requests` / `-tokens` (`1s`, `6m0s`, `250ms`).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 {
                return Some(Duration::from_secs_f64(secs));
            }
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| get(h).and_then(parse_go_duration))
        .max()
}

/// `1h2m3.5s`, `6m0s`, `20ms`, `1.5s`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Reads server-sent events off a body, under the byte cap.
pub(crate) struct SseReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    received: u64,
    cap: u64,
    data: String,
    has_data: bool,
    event: String,
    ended: bool,
    op: &'static str,
    transport: Transport,
}

impl fmt::Debug for SseReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseReader")
            .field("received", &self.received)
            .field("ended", &self.ended)
            .finish()
    }
}

impl SseReader {
    /// The next event; `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(ev) = self.line(&line) {
                    return Ok(Some(ev));
                }
                continue;
            }
            if self.ended {
                // A last line without newline, then whatever event it completes.
                if !self.buf.is_empty() {
                    let line = std::mem::take(&mut self.buf);
                    if let Some(ev) = self.line(&line) {
                        return Ok(Some(ev));
                    }
                }
                return Ok(self.dispatch());
            }
            match self.body.next().await {
                None => self.ended = true,
                Some(Err(e)) => return Err(self.transport.transport_error(self.op, &e)),
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    if self.received > self.cap {
                        return Err(too_large(&self.transport.target.provider, self.cap)
                            .with_operation(self.op));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_owned(),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if !self.has_data && self.event.is_empty() {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event: std::mem::take(&mut self.event),
            data: std::mem::take(&mut self.data),
        })
    }

    /// An event's data as JSON, or an error naming the provider.
    pub fn parse(&self, ev: &SseEvent) -> Result<Value> {
        serde_json::from_str(&ev.data).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!(
                    "{} sent a malformed stream event (not JSON: {e}): {}",
                    self.transport.target.provider,
                    cut(&self.transport.target.scrub(&ev.data), 200)
                ),
            )
            .with_operation(self.op)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
        h.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static("1.5s"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(360)));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut d = HeaderMap::new();
        d.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&d), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let opts = HttpOptions::default();
        for attempt in 0..20 {
            let d = backoff(&opts, attempt);
            assert!(d <= opts.backoff_max, "{d:?}");
        }
        assert!(backoff(&opts, 0) <= opts.backoff_base);
    }

    #[test]
    fn provider_messages_are_found_and_cut() {
        assert_eq!(
            provider_message(br#"{"error": {"message": "bad model", "type": "x"}}"#),
            "bad model"
        );
        assert_eq!(provider_message(br#"{"detail": "nope"}"#), "nope");
        assert_eq!(provider_message(b"<html>oops</html>"), "<html>oops</html>");
        let target = Target {
            provider: "openai".into(),
            key_setting: "OPENAI_API_KEY",
            secret: Some("sk-abcdef".into()),
        };
        assert_eq!(
            target.scrub("Incorrect key sk-abcdef given"),
            "Incorrect key *** given"
        );
        assert!(!format!("{target:?}").contains("sk-abcdef"));
    }
}
