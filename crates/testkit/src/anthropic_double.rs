//! A double of Anthropic's Messages API (`POST /v1/messages`, version `2023-06-01`), since no
//! Anthropic server runs here. It answers scripted [`Reply`](crate::scripted::Reply)s in the
//! published wire format: with `stream: true` the SSE event sequence `message_start`,
//! `content_block_start`, `ping`, `content_block_delta` (`text_delta`, `input_json_delta`),
//! `content_block_stop`, `message_delta` (stop reason, output usage), `message_stop`, each as an
//! `event:` + `data:` pair; without it one `message` object. Errors are `{"type": "error",
//! "error": {"type", "message"}}` with the documented types per status (400
//! `invalid_request_error`, 401 `authentication_error`, 404 `not_found_error`, 429
//! `rate_limit_error`, 500 `api_error`, 529 `overloaded_error`). A missing `x-api-key` is 401;
//! a model outside the known list is 404 `not_found_error` (`model: …`).
//!
//! The official `anthropic` SDK parses what it sends in the tests (`sdk::check_anthropic`), so
//! the double cannot drift from the API.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::scripted::{
    header_pairs, json_response, pieces, serve, sse_response, Received, Reply, Script,
};

/// A running double; stops when dropped.
#[derive(Debug)]
pub struct AnthropicDouble {
    addr: SocketAddr,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AnthropicDouble {
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

impl AnthropicDouble {
    /// Accepts `api_key` and serves `models`.
    pub async fn start(api_key: &str, models: &[&str]) -> Self {
        let script = Script::default();
        let state = DoubleState {
            script: script.clone(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            api_key: api_key.to_owned(),
        };
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(state);
        let (addr, task) = serve(app).await;
        Self { addr, script, task }
    }

    /// What `ANTHROPIC_BASE_URL` takes (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self) -> &Script {
        &self.script
    }
}

fn error(code: u16, message: &str, headers: &[(String, String)]) -> Response {
    let etype = match code {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json_response(
        code,
        &json!({"type": "error", "error": {"type": etype, "message": message}}),
        headers,
    )
}

async fn messages(State(s): State<DoubleState>, req: Request) -> Response {
    let headers = header_pairs(req.headers());
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(req.into_body(), 32 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let received = Received {
        path: "/v1/messages".into(),
        headers,
        body: body.clone(),
    };
    if key != s.api_key {
        s.script.record(received);
        return error(401, "invalid x-api-key", &[]);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        s.script.record(received);
        return error(400, "max_tokens: Field required", &[]);
    }
    if !s.models.contains(&model) {
        s.script.record(received);
        return error(404, &format!("model: {model}"), &[]);
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let input_tokens = body
        .get("messages")
        .map(|m| m.to_string().len() as u64 / 4)
        .unwrap_or(1);
    match s.script.next(received) {
        Reply::Status {
            code,
            message,
            headers,
        } => error(code, &message, &headers),
        reply if !stream => json_response(200, &message(&model, &reply, input_tokens), &[]),
        reply => {
            let (frames, stall) = events(&model, &reply, input_tokens);
            sse_response(frames, stall)
        }
    }
}

fn ev(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn start_event(model: &str, input_tokens: u64) -> String {
    ev(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_test_01", "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
    )
}

fn text_block(index: u64, text: &str, out: &mut Vec<String>) -> u64 {
    out.push(ev(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
    ));
    let mut n = 0;
    for p in pieces(text) {
        n += 1;
        out.push(ev(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    out.push(ev(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    ));
    n
}

fn events(model: &str, reply: &Reply, input_tokens: u64) -> (Vec<String>, bool) {
    let mut out = vec![start_event(model, input_tokens)];
    out.push(ev("ping", &json!({"type": "ping"})));
    let mut output = 1u64;
    let stop = match reply {
        Reply::Text(t) => {
            output += text_block(0, t, &mut out);
            "end_turn"
        }
        Reply::ToolCall {
            text,
            name,
            arguments,
        } => {
            let mut index = 0;
            if !text.is_empty() {
                output += text_block(0, text, &mut out);
                index = 1;
            }
            out.push(ev(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": "toolu_test_01", "name": name, "input": {}}}),
            ));
            for p in pieces(arguments) {
                output += 1;
                out.push(ev(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": p}}),
                ));
            }
            out.push(ev(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            "tool_use"
        }
        Reply::Malformed => {
            out.push(
                "event: content_block_start\ndata: {\"type\": \"content_block_st\n\n".to_owned(),
            );
            return (out, false);
        }
        Reply::Truncated(t) => {
            out.push(ev(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ));
            for p in pieces(t) {
                out.push(ev(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": p}}),
                ));
            }
            return (out, false);
        }
        Reply::Stall => return (out, true),
        Reply::Status { .. } => return (out, false),
    };
    out.push(ev(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": output}}),
    ));
    out.push(ev("message_stop", &json!({"type": "message_stop"})));
    (out, false)
}

fn message(model: &str, reply: &Reply, input_tokens: u64) -> Value {
    let (content, stop) = match reply {
        Reply::ToolCall {
            text,
            name,
            arguments,
        } => {
            let input: Value = serde_json::from_str(arguments).unwrap_or(json!({}));
            let mut blocks = Vec::new();
            if !text.is_empty() {
                blocks.push(json!({"type": "text", "text": text}));
            }
            blocks.push(
                json!({"type": "tool_use", "id": "toolu_test_01", "name": name, "input": input}),
            );
            (Value::Array(blocks), "tool_use")
        }
        Reply::Text(t) | Reply::Truncated(t) => (json!([{"type": "text", "text": t}]), "end_turn"),
        _ => (json!([{"type": "text", "text": ""}]), "end_turn"),
    };
    json!({"id": "msg_test_01", "type": "message", "role": "assistant", "model": model,
           "content": content, "stop_reason": stop, "stop_sequence": null,
           "usage": {"input_tokens": input_tokens, "output_tokens": 8}})
}
