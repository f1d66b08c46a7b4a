//! A double of the Gemini API (`v1beta`), since no Gemini server runs here:
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` answers scripted
//! [`Reply`](crate::scripted::Reply)s as `data:` frames of `GenerateContentResponse` objects
//! (`candidates[].content.parts[]` with `text` or `functionCall`, `finishReason` on the last,
//! `usageMetadata`, `modelVersion`, `responseId`) with no end marker; `:generateContent` answers
//! one such object (with `inlineData` for image models, whose id contains `image`). Errors are
//! `{"error": {"code", "message", "status"}}` with the documented statuses (400
//! `INVALID_ARGUMENT`, 403 `PERMISSION_DENIED`, 404 `NOT_FOUND`, 429 `RESOURCE_EXHAUSTED`, 500
//! `INTERNAL`, 503 `UNAVAILABLE`). The key travels in `x-goog-api-key` (or `?key=`).
//!
//! The official `google-genai` SDK parses what it sends in the tests (`sdk::check_gemini`).

use std::net::SocketAddr;

use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::scripted::{
    header_pairs, json_response, pieces, serve, sse_response, Received, Reply, Script,
};

/// A 1×1 PNG, what the image models "draw".
pub const PIXEL_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// A running double; stops when dropped.
#[derive(Debug)]
pub struct GeminiDouble {
    addr: SocketAddr,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GeminiDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct DoubleState {
    script: Script,
    models: Vec<String>,
    api_key: String,
}

impl GeminiDouble {
    pub async fn start(api_key: &str, models: &[&str]) -> Self {
        let script = Script::default();
        let state = DoubleState {
            script: script.clone(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            api_key: api_key.to_owned(),
        };
        let app = Router::new()
            .route("/v1beta/models/{call}", post(call))
            .with_state(state);
        let (addr, task) = serve(app).await;
        Self { addr, script, task }
    }

    /// What `GEMINI_BASE_URL` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self) -> &Script {
        &self.script
    }
}

fn error(code: u16, message: &str, headers: &[(String, String)]) -> Response {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    json_response(
        code,
        &json!({"error": {"code": code, "message": message, "status": status}}),
        headers,
    )
}

async fn call(
    State(s): State<DoubleState>,
    Path(call): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    req: Request,
) -> Response {
    let headers = header_pairs(req.headers());
    let key = req
        .headers()
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("key").cloned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(req.into_body(), 32 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let received = Received {
        path: format!("/v1beta/models/{call}"),
        headers,
        body: body.clone(),
    };
    let Some((model, method)) = call.split_once(':') else {
        s.script.record(received);
        return error(404, "method not found", &[]);
    };
    if key != s.api_key {
        s.script.record(received);
        return error(400, "API key not valid. Please pass a valid API key.", &[]);
    }
    if !s.models.iter().any(|m| m == model) {
        s.script.record(received);
        return error(
            404,
            &format!("models/{model} is not found for API version v1beta, or is not supported for generateContent."),
            &[],
        );
    }
    let prompt_tokens = body
        .get("contents")
        .map(|c| c.to_string().len() as u64 / 4)
        .unwrap_or(1);
    match (s.script.next(received), method) {
        (
            Reply::Status {
                code,
                message,
                headers,
            },
            _,
        ) => error(code, &message, &headers),
        (reply, "streamGenerateContent") => {
            let (frames, stall) = frames(model, &reply, prompt_tokens);
            sse_response(frames, stall)
        }
        (reply, "generateContent") => json_response(200, &whole(model, &reply, prompt_tokens), &[]),
        _ => error(404, "method not found", &[]),
    }
}

fn usage(prompt: u64, out: u64) -> Value {
    json!({"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out})
}

fn response(model: &str, parts: Value, finish: Option<&str>, usage: Value) -> Value {
    let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        cand["finishReason"] = json!(f);
    }
    json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": model,
           "responseId": "resp-test-01"})
}

fn data(v: &Value) -> String {
    format!("data: {v}\r\n\r\n")
}

fn frames(model: &str, reply: &Reply, prompt: u64) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    match reply {
        Reply::Text(t) => {
            let ps = pieces(t);
            let n = ps.len();
            for (i, p) in ps.into_iter().enumerate() {
                let last = i + 1 == n;
                out.push(data(&response(
                    model,
                    json!([{"text": p}]),
                    last.then_some("STOP"),
                    usage(prompt, i as u64 + 1),
                )));
            }
            if n == 0 {
                out.push(data(&response(
                    model,
                    json!([{"text": ""}]),
                    Some("STOP"),
                    usage(prompt, 0),
                )));
            }
        }
        Reply::ToolCall {
            text,
            name,
            arguments,
        } => {
            if !text.is_empty() {
                out.push(data(&response(
                    model,
                    json!([{"text": text}]),
                    None,
                    usage(prompt, 1),
                )));
            }
            // Gemini sends function calls whole; args that are not JSON arrive as a string.
            let args: Value =
                serde_json::from_str(arguments).unwrap_or_else(|_| json!({"raw": arguments}));
            out.push(data(&response(
                model,
                json!([{"functionCall": {"name": name, "args": args}}]),
                Some("STOP"),
                usage(prompt, 2),
            )));
        }
        Reply::Malformed => {
            out.push(data(&response(
                model,
                json!([{"text": "Hi"}]),
                None,
                usage(prompt, 1),
            )));
            out.push("data: {\"candidates\": [{\"content\": \r\n\r\n".to_owned());
        }
        Reply::Truncated(t) => {
            for p in pieces(t) {
                out.push(data(&response(
                    model,
                    json!([{"text": p}]),
                    None,
                    usage(prompt, 1),
                )));
            }
        }
        Reply::Stall => {
            out.push(data(&response(
                model,
                json!([{"text": "…"}]),
                None,
                usage(prompt, 1),
            )));
            return (out, true);
        }
        Reply::Status { .. } => {}
    }
    (out, false)
}

fn whole(model: &str, reply: &Reply, prompt: u64) -> Value {
    if model.contains("image") {
        let png = base64::engine::general_purpose::STANDARD.encode(PIXEL_PNG);
        return response(
            model,
            json!([{"text": "Here is your image."}, {"inlineData": {"mimeType": "image/png", "data": png}}]),
            Some("STOP"),
            usage(prompt, 1290),
        );
    }
    let parts = match reply {
        Reply::ToolCall {
            name, arguments, ..
        } => {
            let args: Value = serde_json::from_str(arguments).unwrap_or(json!({}));
            json!([{"functionCall": {"name": name, "args": args}}])
        }
        Reply::Text(t) | Reply::Truncated(t) => json!([{"text": t}]),
        _ => json!([{"text": ""}]),
    };
    response(model, parts, Some("STOP"), usage(prompt, 8))
}
