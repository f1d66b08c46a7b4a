//! The doubles answer as the real APIs do: the official SDKs (`openai`, `anthropic`,
//! `google-genai`, from PyPI via `scripts/ai-test-env`) parse and validate every frame they
//! send — text and tool-call answers, streamed and not — and get the scripted content back.
#![allow(clippy::unwrap_used)]

use nodetool_testkit::ai_env::{ai_env, AiEnv};
use nodetool_testkit::anthropic_double::AnthropicDouble;
use nodetool_testkit::gemini_double::GeminiDouble;
use nodetool_testkit::openai_peer::OpenAiPeer;
use nodetool_testkit::scripted::Reply;
use nodetool_testkit::skip_or_fail;
use serde_json::json;

const KEY: &str = "sk-test-key";

fn env_or_skip(test: &str) -> Option<AiEnv> {
    match ai_env() {
        Ok(env) => Some(env),
        Err(why) => {
            skip_or_fail(test, &why);
            None
        }
    }
}

#[tokio::test]
async fn openai_sdk_parses_the_peer() {
    let Some(env) = env_or_skip("openai_sdk_parses_the_peer") else {
        return;
    };
    let peer = OpenAiPeer::start(&["gpt-test"]).await;
    let messages = json!([{"role": "user", "content": "hi"}]);

    peer.script().set_default(Reply::text("Hello, world!"));
    let out = env
        .check_openai(&peer.base_url(), "gpt-test", &json!({"messages": messages}))
        .await
        .unwrap();
    assert_eq!(out["text"], "Hello, world!");
    assert_eq!(out["finish_reason"], "stop");
    assert!(out["chunks"].as_u64().unwrap() > 3);
    assert!(
        out["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{out}"
    );

    peer.script().set_default(Reply::ToolCall {
        text: String::new(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    });
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "w",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let out = env
        .check_openai(
            &peer.base_url(),
            "gpt-test",
            &json!({"messages": messages, "tools": tools}),
        )
        .await
        .unwrap();
    assert_eq!(out["finish_reason"], "tool_calls");
    assert_eq!(out["tool_calls"][0]["name"], "get_weather");
    assert_eq!(out["tool_calls"][0]["arguments"], r#"{"city": "Paris"}"#);
}

#[tokio::test]
async fn anthropic_sdk_parses_the_double() {
    let Some(env) = env_or_skip("anthropic_sdk_parses_the_double") else {
        return;
    };
    let double = AnthropicDouble::start(KEY, &["claude-test"]).await;
    let req = json!({"model": "claude-test", "max_tokens": 64,
                     "messages": [{"role": "user", "content": "hi"}]});

    double
        .script()
        .set_default(Reply::text("Hello from Claude."));
    let out = env
        .check_anthropic(&double.base_url(), KEY, &req)
        .await
        .unwrap();
    assert_eq!(out["text"], "Hello from Claude.");
    assert_eq!(out["plain_text"], "Hello from Claude.");
    assert_eq!(out["stop_reason"], "end_turn");
    let events: Vec<&str> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    // The SDK drops `ping` events itself.
    assert!(events.contains(&"message_delta") && events.contains(&"content_block_delta"));
    assert!(out["usage"]["output_tokens"].as_u64().unwrap() > 1);

    double.script().set_default(Reply::ToolCall {
        text: "Checking.".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    });
    let mut with_tools = req.clone();
    with_tools["tools"] = json!([{"name": "get_weather", "description": "w",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let out = env
        .check_anthropic(&double.base_url(), KEY, &with_tools)
        .await
        .unwrap();
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(out["text"], "Checking.");
    assert_eq!(out["tool_uses"][0]["name"], "get_weather");
    assert_eq!(out["tool_uses"][0]["input"]["city"], "Paris");

    // Errors are the API's error objects: the SDK raises its typed exceptions.
    double.script().set_default(Reply::rate_limited(1.0));
    let err = env
        .check_anthropic(&double.base_url(), KEY, &req)
        .await
        .unwrap_err();
    assert!(err.contains("RateLimitError"), "{err}");
    let err = env
        .check_anthropic(
            &double.base_url(),
            KEY,
            &json!({"model": "nope", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .unwrap_err();
    assert!(err.contains("NotFoundError"), "{err}");
    let err = env
        .check_anthropic(&double.base_url(), "wrong", &req)
        .await
        .unwrap_err();
    assert!(err.contains("AuthenticationError"), "{err}");
}

#[tokio::test]
async fn gemini_sdk_parses_the_double() {
    let Some(env) = env_or_skip("gemini_sdk_parses_the_double") else {
        return;
    };
    let double = GeminiDouble::start(KEY, &["gemini-test"]).await;
    let req = json!({"contents": "hi"});

    double
        .script()
        .set_default(Reply::text("Hello from Gemini."));
    let out = env
        .check_gemini(&double.base_url(), KEY, "gemini-test", &req)
        .await
        .unwrap();
    assert_eq!(out["text"], "Hello from Gemini.");
    assert_eq!(out["plain_text"], "Hello from Gemini.");
    assert_eq!(out["finish_reason"], "STOP");
    assert!(out["chunks"].as_u64().unwrap() > 1);
    assert!(
        out["usage"]["prompt_token_count"].as_u64().unwrap() > 0,
        "{out}"
    );

    double
        .script()
        .set_default(Reply::tool("get_weather", r#"{"city": "Paris"}"#));
    let out = env
        .check_gemini(&double.base_url(), KEY, "gemini-test", &req)
        .await
        .unwrap();
    assert_eq!(out["function_calls"][0]["name"], "get_weather");
    assert_eq!(out["function_calls"][0]["args"]["city"], "Paris");

    double
        .script()
        .set_default(Reply::status(429, "Resource has been exhausted"));
    let err = env
        .check_gemini(&double.base_url(), KEY, "gemini-test", &req)
        .await
        .unwrap_err();
    assert!(
        err.contains("429") && err.contains("RESOURCE_EXHAUSTED"),
        "{err}"
    );
    let err = env
        .check_gemini(&double.base_url(), KEY, "nope", &req)
        .await
        .unwrap_err();
    assert!(err.contains("404") && err.contains("NOT_FOUND"), "{err}");
}
