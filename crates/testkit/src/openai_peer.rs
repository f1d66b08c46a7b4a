//! A scripted OpenAI-compatible server: `POST /v1/chat/completions` answers the next
//! [`Reply`](crate::scripted::Reply) as the Chat Completions API does — `chat.completion.chunk`
//! SSE frames (role, content deltas, `tool_calls` deltas with index/id/name/argument pieces, a
//! finish chunk, the `include_usage` chunk with empty `choices`, `data: [DONE]`), or one
//! `chat.completion` object without `stream` — and errors as `{"error": {message, type, param,
//! code}}`. `GET /v1/models` lists the known models; a request naming another model gets the
//! API's 404 `model_not_found`.
//!
//! llama.cpp's server is the real OpenAI-compatible part of the tests; this peer exists for
//! what a random-weight model cannot do: a tool loop that calls a tool with valid arguments
//! and then answers, and provider faults on demand. Its frames are checked by the official
//! `openai` SDK (`sdk::check_openai`).

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::scripted::{
    header_pairs, json_response, pieces, serve, sse_response, Received, Reply, Script,
};

/// A running peer; stops when dropped.
#[derive(Debug)]
pub struct OpenAiPeer {
    addr: SocketAddr,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OpenAiPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct PeerState {
    script: Script,
    models: Vec<String>,
}

impl OpenAiPeer {
    /// Serves `models` (requests for others get 404 `model_not_found`).
    pub async fn start(models: &[&str]) -> Self {
        let script = Script::default();
        let state = PeerState {
            script: script.clone(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(list_models))
            .route("/v1/images/generations", post(image))
            .route("/v1/audio/transcriptions", post(transcribe))
            .route("/v1/audio/speech", post(speech))
            .with_state(state);
        let (addr, task) = serve(app).await;
        Self { addr, script, task }
    }

    /// The base URL clients use (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT` (what `LLAMA_CPP_URL`-style settings take).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self) -> &Script {
        &self.script
    }
}

/// A 1×1 PNG, what `/v1/images/generations` draws (as `b64_json`, as gpt-image-1 answers).
async fn image(State(s): State<PeerState>, req: Request) -> Response {
    use base64::Engine as _;
    let headers = header_pairs(req.headers());
    let bytes = axum::body::to_bytes(req.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    s.script.record(Received {
        path: "/v1/images/generations".into(),
        headers,
        body,
    });
    if !s.models.contains(&model) {
        return json_response(
            404,
            &error_body(404, &format!("The model `{model}` does not exist")),
            &[],
        );
    }
    let png = base64::engine::general_purpose::STANDARD.encode(crate::gemini_double::PIXEL_PNG);
    json_response(
        200,
        &json!({"created": CREATED, "data": [{"b64_json": png}],
        "usage": {"input_tokens": 10, "output_tokens": 272, "total_tokens": 282}}),
        &[],
    )
}

/// `/v1/audio/transcriptions` (multipart): `{"text": …}` naming the uploaded byte count.
async fn transcribe(State(s): State<PeerState>, req: Request) -> Response {
    let headers = header_pairs(req.headers());
    let bytes = axum::body::to_bytes(req.into_body(), 32 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let multipart = headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("multipart/form-data"));
    s.script.record(Received {
        path: "/v1/audio/transcriptions".into(),
        headers,
        body: json!({"bytes": bytes.len()}),
    });
    if !multipart {
        return json_response(400, &error_body(400, "expected multipart/form-data"), &[]);
    }
    json_response(
        200,
        &json!({"text": format!("transcribed {} bytes", bytes.len())}),
        &[],
    )
}

/// `/v1/audio/speech`: a few bytes of "MP3" (an ID3 header and silence).
async fn speech(State(s): State<PeerState>, req: Request) -> Response {
    let headers = header_pairs(req.headers());
    let bytes = axum::body::to_bytes(req.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    s.script.record(Received {
        path: "/v1/audio/speech".into(),
        headers,
        body,
    });
    let mut resp = Response::new(axum::body::Body::from(
        b"ID3\x03\x00\x00\x00\x00\x00\x00silence".to_vec(),
    ));
    resp.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("audio/mpeg"),
    );
    resp
}

async fn list_models(State(s): State<PeerState>) -> Response {
    let data: Vec<Value> = s
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "nodetool-test"}))
        .collect();
    json_response(200, &json!({"object": "list", "data": data}), &[])
}

fn error_body(code: u16, message: &str) -> Value {
    let (etype, ecode) = match code {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        400 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": etype, "param": null, "code": ecode}})
}

async fn chat(State(s): State<PeerState>, req: Request) -> Response {
    let headers = header_pairs(req.headers());
    let bytes = axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return json_response(
            400,
            &error_body(400, "We could not parse the JSON body of your request."),
            &[],
        );
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let received = Received {
        path: "/v1/chat/completions".into(),
        headers,
        body: body.clone(),
    };
    if !s.models.contains(&model) {
        s.script.record(received);
        return json_response(
            404,
            &error_body(
                404,
                &format!("The model `{model}` does not exist or you do not have access to it."),
            ),
            &[],
        );
    }
    let reply = s.script.next(received);
    let prompt_tokens = body
        .get("messages")
        .map(|m| m.to_string().len() as u64 / 4)
        .unwrap_or(0);
    match reply {
        Reply::Status {
            code,
            message,
            headers,
        } => json_response(code, &error_body(code, &message), &headers),
        other if !stream => json_response(200, &completion(&model, &other, prompt_tokens), &[]),
        other => {
            let (frames, stall) = chunks(&model, &other, include_usage, prompt_tokens);
            sse_response(frames, stall)
        }
    }
}

const ID: &str = "chatcmpl-nodetool-test";
const CREATED: u64 = 1_700_000_000;

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The SSE frames of a reply; `true` when the body must stay open after them.
fn chunks(model: &str, reply: &Reply, include_usage: bool, prompt: u64) -> (Vec<String>, bool) {
    let mut out = vec![frame(&chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    let mut completion = 0u64;
    let text_frames = |text: &str, out: &mut Vec<String>, completion: &mut u64| {
        for p in pieces(text) {
            *completion += 1;
            out.push(frame(&chunk(model, json!({"content": p}), None)));
        }
    };
    let finish = match reply {
        Reply::Text(t) => {
            text_frames(t, &mut out, &mut completion);
            "stop"
        }
        Reply::ToolCall {
            text,
            name,
            arguments,
        } => {
            text_frames(text, &mut out, &mut completion);
            out.push(frame(&chunk(
                model,
                json!({"tool_calls": [{"index": 0, "id": "call_test_1", "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                None,
            )));
            for p in pieces(arguments) {
                completion += 1;
                out.push(frame(&chunk(
                    model,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
                    None,
                )));
            }
            "tool_calls"
        }
        Reply::Malformed => {
            out.push("data: {\"id\": \"chatcmpl-x\", \"choices\": [{\"delta\": \n\n".to_owned());
            return (out, false);
        }
        Reply::Truncated(t) => {
            text_frames(t, &mut out, &mut completion);
            return (out, false);
        }
        Reply::Stall => return (out, true),
        Reply::Status { .. } => return (out, false),
    };
    out.push(frame(&chunk(model, json!({}), Some(finish))));
    if include_usage {
        out.push(frame(&json!({
            "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": "fp_test", "choices": [], "usage": usage(prompt, completion),
        })));
    }
    out.push("data: [DONE]\n\n".to_owned());
    (out, false)
}

fn completion(model: &str, reply: &Reply, prompt: u64) -> Value {
    let (content, tool_calls, finish) = match reply {
        Reply::ToolCall {
            text,
            name,
            arguments,
        } => (
            if text.is_empty() {
                Value::Null
            } else {
                json!(text)
            },
            json!([{"id": "call_test_1", "type": "function", "function": {"name": name, "arguments": arguments}}]),
            "tool_calls",
        ),
        Reply::Text(t) | Reply::Truncated(t) => (json!(t), Value::Null, "stop"),
        _ => (json!(""), Value::Null, "stop"),
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !tool_calls.is_null() {
        message["tool_calls"] = tool_calls;
    }
    json!({
        "id": ID, "object": "chat.completion", "created": CREATED, "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage(prompt, 8),
    })
}
