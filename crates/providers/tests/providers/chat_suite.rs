//! The `ChatProvider` contract, run against every implementation: the OpenAI-compatible client
//! against the scripted OpenAI peer, the Anthropic client against the Anthropic double, the
//! Gemini client against the Gemini double (each double checked by the official SDK in
//! `sdk_checks.rs`), plus the real llama.cpp server in `llama_cpp.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nodetool_core::ErrorKind;
use nodetool_providers::{
    collect, ChatProvider, ChatRequest, HttpOptions, Message, ProviderSet, ProviderSettings,
    StopReason, StreamItem, ToolChoice, ToolSpec,
};
use nodetool_testkit::anthropic_double::AnthropicDouble;
use nodetool_testkit::gemini_double::GeminiDouble;
use nodetool_testkit::openai_peer::OpenAiPeer;
use nodetool_testkit::scripted::{Reply, Script};
use serde_json::json;

const KEY: &str = "sk-test-SECRET-0123456789";
const MODEL: &str = "test-model";

/// Fast retries and short timeouts, so fault cases finish quickly.
fn fast_http() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_millis(800),
        max_retries: 2,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        max_retry_wait: Duration::from_secs(5),
        max_response_bytes: 1024 * 1024,
    }
}

/// One implementation under test: its provider id, the settings that reach it, its script.
struct Target {
    provider: &'static str,
    settings: BTreeMap<String, String>,
    script: Script,
    _keep: Box<dyn std::any::Any>,
}

async fn openai_target() -> Target {
    let peer = OpenAiPeer::start(&[MODEL]).await;
    Target {
        provider: "openai",
        settings: [
            ("OPENAI_BASE_URL".to_owned(), peer.base_url()),
            ("OPENAI_API_KEY".to_owned(), KEY.to_owned()),
        ]
        .into(),
        script: peer.script().clone(),
        _keep: Box::new(peer),
    }
}

async fn anthropic_target() -> Target {
    let double = AnthropicDouble::start(KEY, &[MODEL]).await;
    Target {
        provider: "anthropic",
        settings: [
            ("ANTHROPIC_BASE_URL".to_owned(), double.base_url()),
            ("ANTHROPIC_API_KEY".to_owned(), KEY.to_owned()),
        ]
        .into(),
        script: double.script().clone(),
        _keep: Box::new(double),
    }
}

async fn gemini_target() -> Target {
    let double = GeminiDouble::start(KEY, &[MODEL]).await;
    Target {
        provider: "gemini",
        settings: [
            ("GEMINI_BASE_URL".to_owned(), double.base_url()),
            ("GEMINI_API_KEY".to_owned(), KEY.to_owned()),
        ]
        .into(),
        script: double.script().clone(),
        _keep: Box::new(double),
    }
}

impl Target {
    fn provider_with(
        &self,
        http: HttpOptions,
        overrides: &[(&str, &str)],
    ) -> Arc<dyn ChatProvider> {
        let mut values = self.settings.clone();
        for (k, v) in overrides {
            values.insert((*k).to_owned(), (*v).to_owned());
        }
        let set = ProviderSet::new(ProviderSettings::new(values, http));
        set.chat(self.provider, &|_: &str| None).unwrap()
    }

    fn provider(&self) -> Arc<dyn ChatProvider> {
        self.provider_with(fast_http(), &[])
    }
}

fn request(text: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        MODEL,
        vec![Message::system("Be brief."), Message::user(text)],
    );
    r.max_tokens = Some(64);
    r
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "The weather in a city".into(),
        input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

/// Every contract case against one target.
async fn suite(t: Target) {
    let p = t.provider();
    let name = t.provider;

    // Text streams in order and ends with exactly one Finish.
    t.script.push([Reply::text("The quick brown fox jumps.")]);
    let items: Vec<StreamItem> = p
        .stream(request("hi"))
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    let text: String = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "The quick brown fox jumps.", "{name}: streamed text");
    assert!(
        items
            .iter()
            .filter(|i| matches!(i, StreamItem::Text { .. }))
            .count()
            > 1,
        "{name}: text arrives in deltas"
    );
    let finishes: Vec<_> = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Finish { .. }))
        .collect();
    assert_eq!(finishes.len(), 1, "{name}: one finish");
    match items.last().unwrap() {
        StreamItem::Finish { stop_reason, usage } => {
            assert_eq!(*stop_reason, StopReason::EndTurn, "{name}");
            assert!(
                usage.input_tokens > 0 && usage.output_tokens > 0,
                "{name}: usage {usage:?}"
            );
        }
        other => panic!("{name}: last item is {other:?}"),
    }

    // The request carried the system prompt, the user text and the key in the right header.
    let sent = t.script.received().last().cloned().unwrap();
    let body = sent.body.to_string();
    assert!(
        body.contains("Be brief.") && body.contains("hi"),
        "{name}: {body}"
    );
    let auth_ok = match name {
        "openai" => sent.header("authorization") == Some(&format!("Bearer {KEY}")),
        "anthropic" => {
            sent.header("x-api-key") == Some(KEY)
                && sent.header("anthropic-version") == Some("2023-06-01")
        }
        _ => sent.header("x-goog-api-key") == Some(KEY),
    };
    assert!(auth_ok, "{name}: key header");
    assert!(
        !sent.path.contains(KEY),
        "{name}: the key is never in the URL"
    );

    // A tool call with valid arguments.
    t.script.push([Reply::ToolCall {
        text: "Let me check.".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    }]);
    let mut req = request("weather in Paris?");
    req.tools = vec![weather_tool()];
    req.tool_choice = ToolChoice::Auto;
    let resp = p.complete(req.clone()).await.unwrap();
    assert_eq!(resp.tool_calls.len(), 1, "{name}: one call");
    let call = &resp.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert_eq!(call.args["city"], "Paris", "{name}");
    assert!(call.invalid_arguments.is_none());
    assert!(!call.id.is_empty());
    assert_eq!(resp.stop_reason, StopReason::ToolUse, "{name}");
    assert_eq!(resp.text, "Let me check.", "{name}");
    let sent = t
        .script
        .received()
        .last()
        .cloned()
        .unwrap()
        .body
        .to_string();
    assert!(
        sent.contains("get_weather") && sent.contains("\"city\""),
        "{name}: tools sent"
    );

    // The tool result goes back and the conversation continues.
    let mut follow = req.clone();
    follow.messages.push(Message::assistant(
        resp.text.clone(),
        resp.tool_calls.clone(),
    ));
    follow
        .messages
        .push(Message::tool_result(call, r#"{"temp": 21}"#));
    t.script.push([Reply::text("It is 21 degrees.")]);
    let done = p.complete(follow).await.unwrap();
    assert_eq!(done.text, "It is 21 degrees.");
    let sent = t
        .script
        .received()
        .last()
        .cloned()
        .unwrap()
        .body
        .to_string();
    let answers_the_call = if name == "gemini" {
        sent.contains("functionResponse")
    } else {
        sent.contains(&call.id)
    };
    assert!(
        sent.contains("21") && answers_the_call,
        "{name}: tool result sent: {sent}"
    );

    // Invalid tool arguments are a call marked invalid, not an error. (Gemini sends parsed args.)
    if name != "gemini" {
        t.script
            .push([Reply::tool("get_weather", r#"{"city": "Par"#)]);
        let resp = p.complete(req.clone()).await.unwrap();
        assert_eq!(
            resp.tool_calls[0].invalid_arguments.as_deref(),
            Some(r#"{"city": "Par"#),
            "{name}"
        );
    }

    // 429 with retry-after, then success: retried, answered.
    let before = t.script.received().len();
    t.script
        .push([Reply::rate_limited(0.05), Reply::text("after the wait")]);
    let resp = p.complete(request("again")).await.unwrap();
    assert_eq!(resp.text, "after the wait", "{name}");
    assert_eq!(t.script.received().len() - before, 2, "{name}: one retry");

    // 429 on every attempt: RateLimited after max_retries + 1 attempts, marked temporary.
    let before = t.script.received().len();
    t.script.push([
        Reply::rate_limited(0.01),
        Reply::rate_limited(0.01),
        Reply::rate_limited(0.01),
    ]);
    let err = p.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{name}: {err}");
    assert!(err.is_temporary());
    assert_eq!(
        t.script.received().len() - before,
        3,
        "{name}: 1 + 2 retries"
    );
    assert_eq!(err.context_value("attempts"), Some("3"));

    // A retry-after over the limit fails at once instead of holding the job.
    let before = t.script.received().len();
    t.script.push([Reply::rate_limited(3600.0)]);
    let err = p.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(
        t.script.received().len() - before,
        1,
        "{name}: no wait of an hour"
    );
    assert!(
        err.to_string().contains("retry_after_seconds=3600"),
        "{err}"
    );

    // 500 twice then success; 500 always: Unavailable.
    t.script
        .push([Reply::status(500, "boom"), Reply::text("recovered")]);
    assert_eq!(
        p.complete(request("x")).await.unwrap().text,
        "recovered",
        "{name}"
    );
    t.script.push([
        Reply::status(503, "down"),
        Reply::status(500, "down"),
        Reply::status(502, "down"),
    ]);
    let err = p.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{name}: {err}");

    // A bad request is not retried.
    let before = t.script.received().len();
    t.script.push([Reply::status(400, "messages: bad")]);
    let err = p.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
    assert_eq!(t.script.received().len() - before, 1);
    assert!(err.to_string().contains("messages: bad"), "{err}");

    // Malformed JSON in the stream.
    t.script.push([Reply::Malformed]);
    let err = p.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected, "{name}: {err}");
    assert!(err.to_string().contains("malformed"), "{err}");

    // A stream cut before its end marker: partial text, then a truncation error.
    t.script.push([Reply::Truncated("half an ans".into())]);
    let mut s = p.stream(request("x")).await.unwrap();
    let mut got = String::new();
    let mut failure = None;
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamItem::Text { text }) => got.push_str(&text),
            Ok(StreamItem::Finish { .. }) => panic!("{name}: a truncated stream must not finish"),
            Ok(_) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    assert_eq!(got, "half an ans", "{name}");
    let err = failure.expect("truncation error");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{name}: {err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(
        s.next().await.is_none(),
        "{name}: the stream ends after its error"
    );

    // A model that does not exist.
    let mut req = request("x");
    req.model = "no-such-model".into();
    let err = p.complete(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
    assert!(err.to_string().contains("no-such-model"), "{err}");
    assert!(!err.is_temporary());

    // A stalled stream hits the idle timeout instead of hanging.
    t.script.push([Reply::Stall]);
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), p.complete(request("x")))
        .await
        .expect("the idle timeout ends a stalled stream")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{name}: {err}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // The byte cap.
    let small = HttpOptions {
        max_response_bytes: 2048,
        ..fast_http()
    };
    let capped = t.provider_with(small, &[]);
    t.script.push([Reply::Text("x".repeat(4000))]);
    let err = capped.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{name}: {err}");

    // Dropping the stream cancels: a stalled request dropped early leaves nothing running
    // that would consume the next scripted reply.
    t.script.push([Reply::Stall, Reply::text("next")]);
    let s = p.stream(request("x")).await.unwrap();
    drop(s);
    assert_eq!(
        p.complete(request("y")).await.unwrap().text,
        "next",
        "{name}"
    );

    // A refused key: PermissionDenied naming the setting; the key never shows.
    let wrong = "sk-wrong-KEY-9876543210";
    let key_setting = match name {
        "openai" => "OPENAI_API_KEY",
        "anthropic" => "ANTHROPIC_API_KEY",
        _ => "GEMINI_API_KEY",
    };
    let bad = t.provider_with(fast_http(), &[(key_setting, wrong)]);
    if name == "openai" {
        // The peer takes any bearer token; OpenAI's 401 (which echoes the key) is scripted.
        t.script.push([Reply::status(
            401,
            &format!("Incorrect API key provided: {wrong}"),
        )]);
    }
    // Anthropic answers 401 authentication_error; Gemini 400 INVALID_ARGUMENT "API key not valid".
    let err = bad.complete(request("x")).await.unwrap_err();
    check_denied(&err, key_setting, wrong);
    assert!(
        !format!("{bad:?}").contains(wrong),
        "{name}: Debug hides the key"
    );
    assert!(
        !format!("{p:?}").contains(KEY),
        "{name}: Debug hides the key"
    );
}

fn check_denied(err: &nodetool_core::Error, setting: &str, key: &str) {
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains(setting), "{text}");
    assert!(!text.contains(key), "the key leaked: {text}");
    assert!(!format!("{err:?}").contains(key));
}

#[tokio::test]
async fn openai_compatible_client_meets_the_contract() {
    suite(openai_target().await).await;
}

#[tokio::test]
async fn anthropic_client_meets_the_contract() {
    suite(anthropic_target().await).await;
}

#[tokio::test]
async fn gemini_client_meets_the_contract() {
    suite(gemini_target().await).await;
}

/// Captures every log line of the process (tracing at TRACE) to check that keys never appear.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_never_appear_in_logs_or_errors() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut errors = Vec::new();
    for t in [
        openai_target().await,
        anthropic_target().await,
        gemini_target().await,
    ] {
        let p = t.provider();
        // Retries log at INFO; failures, successes and refused keys all pass through here.
        t.script.push([
            Reply::status(500, &format!("echo {KEY}")),
            Reply::text("fine"),
            Reply::status(401, &format!("bad key {KEY}")),
            Reply::Malformed,
        ]);
        p.complete(request("x")).await.unwrap();
        errors.push(p.complete(request("x")).await.unwrap_err().to_string());
        errors.push(p.complete(request("x")).await.unwrap_err().to_string());
        errors.push(format!("{p:?}"));
    }
    // An unreachable server.
    let set = ProviderSet::new(ProviderSettings::new(
        [
            (
                "OPENAI_BASE_URL".to_owned(),
                "http://127.0.0.1:1/v1".to_owned(),
            ),
            ("OPENAI_API_KEY".to_owned(), KEY.to_owned()),
        ]
        .into(),
        fast_http(),
    ));
    errors.push(format!("{set:?}"));
    let p = set.chat("openai", &|_: &str| None).unwrap();
    let err = p.complete(request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    errors.push(err.to_string());

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("retrying"), "retries were logged: {logged}");
    for e in &errors {
        assert!(!e.contains(KEY), "key in an error: {e}");
    }
    assert!(!logged.contains(KEY), "key in the logs: {logged}");
}

#[tokio::test]
async fn job_secrets_beat_process_settings_and_missing_keys_are_named() {
    let double = AnthropicDouble::start(KEY, &[MODEL]).await;
    let set = ProviderSet::new(ProviderSettings::new(
        [
            ("ANTHROPIC_BASE_URL".to_owned(), double.base_url()),
            (
                "ANTHROPIC_API_KEY".to_owned(),
                "sk-process-WRONG".to_owned(),
            ),
        ]
        .into(),
        fast_http(),
    ));
    let job = |n: &str| (n == "ANTHROPIC_API_KEY").then(|| KEY.to_owned());
    let p = set.chat("anthropic", &job).unwrap();
    assert_eq!(
        collect(p.stream(request("x")).await.unwrap())
            .await
            .unwrap()
            .text,
        "Hello from the double."
    );
    let with_process_key = set.chat("anthropic", &|_: &str| None).unwrap();
    assert_eq!(
        with_process_key
            .complete(request("x"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );

    let empty = ProviderSet::new(ProviderSettings::default());
    let err = empty.chat("anthropic", &|_: &str| None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
    let err = empty.chat("gemini", &|_: &str| None).unwrap_err();
    assert!(err.to_string().contains("GEMINI_API_KEY"), "{err}");
}
