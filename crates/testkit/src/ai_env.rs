//! What `scripts/ai-test-env` installs (cached by version under `~/.cache/nodetool-test/ai`):
//! a venv with `llama-cpp-python[server]` built once from source, the official `openai`,
//! `anthropic` and `google-genai` SDKs, and the tiny random-weight GGUF model of
//! `shared/tools/tiny_gguf.py`. Plus the SDK checks: a Python script that calls a double (or
//! peer) through an official SDK, validates every frame with the SDK's own types and prints
//! what it parsed as JSON.

use std::path::PathBuf;

use serde_json::Value;

/// The installed AI test environment.
#[derive(Debug, Clone)]
pub struct AiEnv {
    pub python: PathBuf,
    pub model: PathBuf,
}

/// `~/.cache/nodetool-test/ai`.
pub fn root() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/nodetool-test/ai"))
}

/// The environment, or `None` (with the reason) when `scripts/ai-test-env` has not run.
pub fn ai_env() -> Result<AiEnv, String> {
    let root = root().ok_or("HOME is not set")?;
    let python = root.join("venv/bin/python");
    let model = root.join("tiny.gguf");
    if !root.join("venv/.stamp").is_file() || !python.is_file() {
        return Err(format!(
            "{} is missing: run scripts/ai-test-env (scripts/test does)",
            root.join("venv").display()
        ));
    }
    if !model.is_file() {
        return Err(format!(
            "{} is missing: run scripts/ai-test-env",
            model.display()
        ));
    }
    Ok(AiEnv { python, model })
}

impl AiEnv {
    /// Runs `script` with `args`; its last stdout line is JSON. An error carries stderr.
    pub async fn run_python(&self, script: &str, args: &[&str]) -> Result<Value, String> {
        let out = tokio::process::Command::new(&self.python)
            .arg("-c")
            .arg(script)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("spawn {}: {e}", self.python.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "python failed ({}):\n{stderr}\n{stdout}",
                out.status
            ));
        }
        let last = stdout.lines().last().unwrap_or("");
        serde_json::from_str(last)
            .map_err(|e| format!("python printed no JSON ({e}): {stdout}\n{stderr}"))
    }

    /// Streams one chat completion through the `openai` SDK (`base_url`, `model`, the messages
    /// and tools as JSON), validating every chunk as `ChatCompletionChunk` and accumulating them
    /// with the SDK's stream helper; returns `{text, tool_calls, finish_reason, chunks, usage}`.
    pub async fn check_openai(
        &self,
        base_url: &str,
        model: &str,
        request: &Value,
    ) -> Result<Value, String> {
        self.run_python(OPENAI_CHECK, &[base_url, model, &request.to_string()])
            .await
    }

    /// Streams one message through the `anthropic` SDK: validates every raw event as
    /// `RawMessageStreamEvent`, accumulates with `messages.stream` and fetches the same request
    /// without streaming (validated as `Message`); returns `{text, tool_uses, stop_reason,
    /// events, usage, plain_text}`.
    pub async fn check_anthropic(
        &self,
        base_url: &str,
        api_key: &str,
        request: &Value,
    ) -> Result<Value, String> {
        self.run_python(ANTHROPIC_CHECK, &[base_url, api_key, &request.to_string()])
            .await
    }

    /// Streams one request through `google-genai` (which validates each
    /// `GenerateContentResponse`) and sends it once more without streaming; returns `{text,
    /// function_calls, finish_reason, chunks, usage, plain_text}`.
    pub async fn check_gemini(
        &self,
        base_url: &str,
        api_key: &str,
        model: &str,
        request: &Value,
    ) -> Result<Value, String> {
        self.run_python(
            GEMINI_CHECK,
            &[base_url, api_key, model, &request.to_string()],
        )
        .await
    }
}

const OPENAI_CHECK: &str = r#"
import json, sys
import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletion
base_url, model, req = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
kwargs = dict(model=model, messages=req["messages"])
if req.get("tools"):
    kwargs["tools"] = req["tools"]
if req.get("max_tokens"):
    kwargs["max_tokens"] = req["max_tokens"]
chunks = 0
usage = None
for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
    ChatCompletionChunk.model_validate(chunk.to_dict())
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.to_dict()
with client.chat.completions.stream(**kwargs) as stream:
    for _ in stream:
        pass
    try:
        final = stream.get_final_completion()
    except openai.LengthFinishReasonError as e:
        final = e.completion
ChatCompletion.model_validate(final.to_dict())
msg = final.choices[0].message
calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in (msg.tool_calls or [])]
print(json.dumps({"text": msg.content or "", "tool_calls": calls, "finish_reason": final.choices[0].finish_reason,
                  "chunks": chunks, "usage": usage}))
"#;

const ANTHROPIC_CHECK: &str = r#"
import json, sys
import anthropic
from pydantic import TypeAdapter
from anthropic.types import RawMessageStreamEvent, Message
base_url, key, req = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)
adapter = TypeAdapter(RawMessageStreamEvent)
events = []
for ev in client.messages.create(stream=True, **req):
    adapter.validate_python(ev.to_dict())
    events.append(ev.type)
with client.messages.stream(**req) as stream:
    for _ in stream:
        pass
    final = stream.get_final_message()
Message.model_validate(final.to_dict())
plain = client.messages.create(**req)
Message.model_validate(plain.to_dict())
text = "".join(b.text for b in final.content if b.type == "text")
uses = [{"id": b.id, "name": b.name, "input": b.input} for b in final.content if b.type == "tool_use"]
print(json.dumps({"text": text, "tool_uses": uses, "stop_reason": final.stop_reason, "events": events,
                  "usage": final.usage.to_dict(),
                  "plain_text": "".join(b.text for b in plain.content if b.type == "text")}))
"#;

const GEMINI_CHECK: &str = r#"
import json, sys
from google import genai
from google.genai import types
base_url, key, model, req = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta"))
config = types.GenerateContentConfig(**req.get("config", {})) if req.get("config") else None
text, calls, finish, chunks, usage = "", [], None, 0, None
for chunk in client.models.generate_content_stream(model=model, contents=req["contents"], config=config):
    types.GenerateContentResponse.model_validate(chunk.model_dump())
    chunks += 1
    cand = chunk.candidates[0]
    for part in (cand.content.parts or []):
        if part.text:
            text += part.text
        if part.function_call:
            calls.append({"name": part.function_call.name, "args": part.function_call.args})
    if cand.finish_reason:
        finish = cand.finish_reason.value
    if chunk.usage_metadata:
        usage = chunk.usage_metadata.model_dump(exclude_none=True)
plain = client.models.generate_content(model=model, contents=req["contents"], config=config)
print(json.dumps({"text": text, "function_calls": calls, "finish_reason": finish, "chunks": chunks,
                  "usage": usage, "plain_text": plain.text or ""}))
"#;
