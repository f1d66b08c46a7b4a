//! `/metrics` reports AI model calls: a job whose agent calls a (scripted) OpenAI-compatible
//! server shows up in `nodetool_provider_calls_total` and the token counters.
#![allow(clippy::unwrap_used)]

use crate::jobs_support;
use nodetool_testkit::ids::uid;

use std::time::Duration;

use jobs_support::start;
use nodetool_testkit::openai_peer::OpenAiPeer;
use nodetool_testkit::scripted::Reply;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_calls_show_in_metrics() {
    let peer = OpenAiPeer::start(&["gpt-test"]).await;
    peer.script().set_default(Reply::text("hello"));
    let s = start("local").await;
    let graph = json!({"nodes": [{"id": "a", "type": "nodetool.agents.Agent",
        "data": {"model": {"type": "language_model", "provider": "openai", "id": "gpt-test"}, "prompt": "hi"}}],
        "edges": []});
    let request: nodetool_exec::RunJobRequest =
        serde_json::from_value(json!({"graph": graph, "execution_strategy": "threaded"})).unwrap();
    // The job's secrets carry the provider URL and key, as NodeTool's per-user secrets do.
    let secrets = [
        ("OPENAI_BASE_URL".to_owned(), peer.base_url()),
        ("OPENAI_API_KEY".to_owned(), "sk-metrics".to_owned()),
    ]
    .into();
    s.manager
        .submit_with_secrets(request, &uid("1"), secrets)
        .await
        .unwrap();
    let series = "nodetool_provider_calls_total{provider=\"openai\",model=\"gpt-test\"} 1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = s
            .client
            .get(s.u("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == series) {
            assert!(text.contains("nodetool_provider_tokens_total{provider=\"openai\",model=\"gpt-test\",direction=\"output\"}"));
            assert!(text.contains("# TYPE nodetool_provider_cost_credits_total counter"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {series} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
