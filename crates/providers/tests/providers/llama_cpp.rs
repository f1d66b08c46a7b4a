//! The OpenAI-compatible client against a real llama.cpp server (`llama-cpp-python[server]`,
//! the tiny random-weight GGUF model): streaming, seeds, `max_tokens`, real `tool_calls`
//! frames (whose random arguments exercise the invalid-arguments path), and the official
//! `openai` SDK parsing the same server, so client and SDK agree on the same frames.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use futures::StreamExt;
use nodetool_providers::{
    ChatProvider, ChatRequest, HttpOptions, Message, ProviderSet, ProviderSettings, StopReason,
    StreamItem, ToolChoice, ToolSpec,
};
use nodetool_testkit::llama_server::LlamaServer;
use nodetool_testkit::skip_or_fail;
use serde_json::json;

async fn server_or_skip(test: &str) -> Option<LlamaServer> {
    match LlamaServer::start().await {
        Ok(s) => Some(s),
        Err(why) => {
            skip_or_fail(test, &why);
            None
        }
    }
}

fn client(server: &LlamaServer) -> std::sync::Arc<dyn ChatProvider> {
    let settings: BTreeMap<String, String> =
        [("LLAMA_CPP_URL".to_owned(), server.root_url())].into();
    ProviderSet::new(ProviderSettings::new(settings, HttpOptions::default()))
        .chat("llama_cpp", &|_: &str| None)
        .unwrap()
}

fn request(seed: i64, max_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest::new(
        "tiny",
        vec![
            Message::system("You are terse."),
            Message::user("Say something."),
        ],
    );
    r.seed = Some(seed);
    r.temperature = Some(0.8);
    r.max_tokens = Some(max_tokens);
    r
}

#[tokio::test]
async fn llama_cpp_streams_honours_seeds_and_max_tokens() {
    let Some(server) = server_or_skip("llama_cpp_streams_honours_seeds_and_max_tokens").await
    else {
        return;
    };
    let p = client(&server);
    assert_eq!(p.provider_id(), "llama_cpp");

    let items: Vec<StreamItem> = p
        .stream(request(7, 12))
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    let deltas = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Text { .. }))
        .count();
    assert!(deltas >= 2, "streamed in deltas: {items:?}");
    assert!(
        matches!(
            items.last(),
            Some(StreamItem::Finish {
                stop_reason: StopReason::MaxTokens,
                ..
            })
        ),
        "12 tokens of a random model end at max_tokens: {:?}",
        items.last()
    );

    // Temperature 0 is greedy: the same request gives the same text (llama-cpp-python keeps
    // its sampler state across requests, so a seed alone does not repeat an answer).
    let greedy = || {
        let mut r = request(7, 12);
        r.temperature = Some(0.0);
        r
    };
    let a = p.complete(greedy()).await.unwrap().text;
    let b = p.complete(greedy()).await.unwrap().text;
    assert_eq!(a, b, "temperature 0 makes the answer reproducible");
    assert!(!a.is_empty());
    // One at a time: llama-cpp-python interrupts a running stream when a new request arrives.
    let mut texts = std::collections::BTreeSet::new();
    for seed in 100..104 {
        texts.insert(p.complete(request(seed, 12)).await.unwrap().text);
    }
    assert!(
        texts.len() > 1,
        "different seeds sample differently: {texts:?}"
    );

    // The cache key follows the request: same seed, same key.
    assert_eq!(
        request(7, 12).cache_key("llama_cpp"),
        request(7, 12).cache_key("llama_cpp")
    );
    assert_ne!(
        request(7, 12).cache_key("llama_cpp"),
        request(8, 12).cache_key("llama_cpp")
    );
}

#[tokio::test]
async fn llama_cpp_tool_calls_arrive_whole_and_bad_arguments_are_flagged() {
    let Some(server) =
        server_or_skip("llama_cpp_tool_calls_arrive_whole_and_bad_arguments_are_flagged").await
    else {
        return;
    };
    let p = client(&server);
    let mut req = request(3, 48);
    req.tools = vec![ToolSpec {
        name: "lookup".into(),
        description: "Look a word up".into(),
        input_schema: json!({"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}),
    }];
    req.tool_choice = ToolChoice::Tool("lookup".into());
    let resp = p.complete(req).await.unwrap();
    assert_eq!(resp.tool_calls.len(), 1, "{resp:?}");
    let call = &resp.tool_calls[0];
    assert_eq!(call.name, "lookup");
    assert!(!call.id.is_empty());
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    // Random weights: arguments that are not a JSON object are kept raw and flagged.
    if let Some(raw) = &call.invalid_arguments {
        assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw).is_err());
    }
}

#[tokio::test]
async fn openai_sdk_parses_the_llama_cpp_server() {
    let Some(server) = server_or_skip("openai_sdk_parses_the_llama_cpp_server").await else {
        return;
    };
    let out = server
        .env()
        .check_openai(
            &server.base_url(),
            "tiny",
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}),
        )
        .await
        .unwrap();
    assert!(out["chunks"].as_u64().unwrap() >= 2, "{out}");
    assert!(
        out["finish_reason"] == "stop" || out["finish_reason"] == "length",
        "{out}"
    );
}
