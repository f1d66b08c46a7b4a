//! NodeTool's AI nodes run through the engine against real sockets: the scripted OpenAI peer
//! (a full agent tool loop, faults on demand), the Anthropic and Gemini doubles (checked by the
//! official SDKs in `crates/providers/tests/providers/sdk_checks.rs`), and a real llama.cpp server.
//! Every case checks what a user gets: outputs, `chunk`/`tool_call_update`/`prediction`
//! events, and clear failures before or during the job.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::get;
use nodetool_config::{Settings, Sources};
use nodetool_engine::{
    Engine, EngineResources, Event, EventEnvelope, RunOptions, RunOutcome, Status,
};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_testkit::anthropic_double::AnthropicDouble;
use nodetool_testkit::gemini_double::GeminiDouble;
use nodetool_testkit::openai_peer::OpenAiPeer;
use nodetool_testkit::scripted::Reply;
use serde_json::{json, Value};

const MODEL: &str = "gpt-test";
const KEY: &str = "sk-node-test-KEY-42";

async fn resources(env: &[(&str, &str)]) -> (EngineResources, Arc<Resources>) {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    vars.insert("NODETOOL_AI_MAX_RETRIES".into(), "2".into());
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::load(&Sources::new(vars, dir.path())).unwrap();
    let resources = Arc::new(Resources::new(settings, ResourceOptions::default()));
    (resources.engine_resources().await.unwrap(), resources)
}

async fn engine_for(env: &[(&str, &str)]) -> (Engine, Arc<Resources>) {
    let (res, resources) = resources(env).await;
    (
        Engine::new(Arc::new(nodetool_nodes::registry()), res),
        resources,
    )
}

async fn peer_engine() -> (OpenAiPeer, Engine, Arc<Resources>) {
    let peer = OpenAiPeer::start(&[MODEL, "gpt-image-test", "whisper-test", "tts-test"]).await;
    let (engine, res) = engine_for(&[
        ("OPENAI_BASE_URL", &peer.base_url()),
        ("OPENAI_API_KEY", KEY),
    ])
    .await;
    (peer, engine, res)
}

fn model() -> Value {
    json!({"type": "language_model", "provider": "openai", "id": MODEL})
}

fn output(id: &str, name: &str) -> (String, &'static str, Value) {
    (
        id.to_owned(),
        "nodetool.output.Output",
        json!({"name": name}),
    )
}

async fn run(
    engine: &Engine,
    nodes: Vec<(String, &str, Value)>,
    edges: &[(&str, &str, &str, &str)],
) -> (RunOutcome, Vec<EventEnvelope>) {
    let nodes: Vec<(&str, &str, Value)> = nodes
        .iter()
        .map(|(a, b, c)| (a.as_str(), *b, c.clone()))
        .collect();
    common::run(
        engine,
        common::graph(&nodes, edges),
        json!({}),
        RunOptions::default(),
    )
    .await
}

fn events_of<'a>(events: &'a [EventEnvelope], ty: &str) -> Vec<&'a Event> {
    events
        .iter()
        .map(|e| &e.event)
        .filter(|e| e.type_name() == ty)
        .collect()
}

fn started_nodes(events: &[EventEnvelope]) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.event, Event::NodeUpdate(n) if n.status == Status::Running))
        .count()
}

#[tokio::test]
async fn agent_runs_a_full_tool_loop_and_streams_chunks() {
    // A page for the browser tool, on a real socket.
    let app = axum::Router::new().route(
        "/page",
        get(|| async { "<html><body><h1>Secret word</h1><p>otter</p></body></html>" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page = format!("http://{}/page", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (peer, engine, res) = peer_engine().await;
    peer.script().push([
        Reply::ToolCall {
            text: "Let me look.".into(),
            name: "browser".into(),
            arguments: json!({"url": page}).to_string(),
        },
        Reply::text("The secret word is otter."),
    ]);
    let (outcome, events) = run(
        &engine,
        vec![
            (
                "agent".into(),
                "nodetool.agents.Agent",
                json!({"model": model(), "prompt": "What is the word?",
                "tools": [{"type": "tool_name", "name": "browser"}], "max_tokens": 100}),
            ),
            output("out", "text"),
            output("chunks", "chunks"),
        ],
        &[
            ("agent", "text", "out", "value"),
            ("agent", "chunk", "chunks", "value"),
        ],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["text"], json!(["The secret word is otter."]));

    // The tool ran, its answer went back to the model with the call's id.
    let sent = peer.script().received();
    assert_eq!(sent.len(), 2);
    let second = sent[1].body.to_string();
    assert!(
        second.contains("otter") && second.contains("call_test_1"),
        "{second}"
    );
    assert!(second.contains("\"role\":\"tool\""), "{second}");
    let tool_updates = events_of(&events, "tool_call_update");
    assert_eq!(tool_updates.len(), 1);
    if let Event::ToolCallUpdate(t) = tool_updates[0] {
        assert_eq!(t.name, "browser");
        assert_eq!(t.node_id.as_deref(), Some("agent"));
        assert_eq!(t.args["url"], json!(page));
    }

    // chunk events carry the node id and the deltas; the last one is `done`.
    let chunks: Vec<&nodetool_engine::events::Chunk> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Chunk(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c.node_id.as_deref() == Some("agent") && c.content_type == "text"));
    let text: String = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(text, "Let me look.The secret word is otter.");
    assert!(chunks.last().unwrap().done);
    // The `chunk` output carries NodeTool chunk values.
    let streamed = outcome.result["chunks"].as_array().unwrap();
    assert!(streamed.len() > 3);
    assert_eq!(streamed[0]["type"], "chunk");

    // Two model calls: two predictions with tokens and the provider's names.
    let predictions = events_of(&events, "prediction");
    assert_eq!(predictions.len(), 2);
    if let Event::Prediction(p) = predictions[1] {
        assert_eq!(p.provider.as_deref(), Some("openai"));
        assert_eq!(p.model.as_deref(), Some(MODEL));
        assert_eq!(p.node_type.as_deref(), Some("nodetool.agents.Agent"));
        assert_eq!(p.status, "completed");
        assert!(p.output_tokens > 0 && p.input_tokens > 0);
        assert_eq!(p.total_tokens, p.input_tokens + p.output_tokens);
    }
    // And the process's usage meter (what /metrics renders).
    let text = res.providers().meter().render_prometheus();
    assert!(
        text.contains(&format!(
            "nodetool_provider_calls_total{{provider=\"openai\",model=\"{MODEL}\"}} 2"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn invalid_tool_arguments_and_unknown_tools_are_answered_not_fatal() {
    let (peer, engine, _) = peer_engine().await;
    peer.script().push([
        Reply::tool("browser", r#"{"url": "http://exa"#),
        Reply::tool("no_such_tool", "{}"),
        Reply::text("I give up."),
    ]);
    let (outcome, _) = run(
        &engine,
        vec![
            (
                "agent".into(),
                "nodetool.agents.Agent",
                json!({"model": model(), "prompt": "go",
                "tools": [{"type": "tool_name", "name": "browser"}]}),
            ),
            output("out", "text"),
        ],
        &[("agent", "text", "out", "value")],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    let sent = peer.script().received();
    assert!(
        sent[1]
            .body
            .to_string()
            .contains("Invalid arguments for browser"),
        "{}",
        sent[1].body
    );
    assert!(
        sent[2]
            .body
            .to_string()
            .contains("Unknown tool: no_such_tool"),
        "{}",
        sent[2].body
    );
}

#[tokio::test]
async fn an_agent_that_loops_stops_at_the_step_cap() {
    let (peer, engine, _) = peer_engine().await;
    peer.script()
        .set_default(Reply::tool("browser", r#"{"url": "ftp://nowhere"}"#));
    let (outcome, _) = run(
        &engine,
        vec![(
            "agent".into(),
            "nodetool.agents.Agent",
            json!({"model": model(), "prompt": "loop",
            "tools": [{"type": "tool_name", "name": "browser"}]}),
        )],
        &[],
    )
    .await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("step cap") && err.contains("32"), "{err}");
    assert_eq!(
        peer.script().received().len(),
        nodetool_nodes::ai::agents::MAX_AGENT_STEPS
    );
}

#[tokio::test]
async fn missing_keys_and_models_fail_validation_before_the_job_starts() {
    let (engine, _) = engine_for(&[]).await;
    let (outcome, events) = run(
        &engine,
        vec![
            ("a".into(), "nodetool.agents.Agent", json!({"model": {"type": "language_model", "provider": "anthropic", "id": "claude-x"}, "prompt": "hi"})),
            ("s".into(), "nodetool.agents.Summarizer", json!({"model": {"type": "language_model"}, "text": "x"})),
            ("i".into(), "nodetool.image.TextToImage", json!({"model": {"type": "image_model", "provider": "gemini", "id": "g"}, "prompt": "p"})),
            ("l".into(), "nodetool.generators.ListGenerator", json!({"model": {"type": "language_model", "provider": "llama_cpp", "id": "tiny"}})),
        ],
        &[],
    )
    .await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap().to_string();
    for needle in [
        "ANTHROPIC_API_KEY",
        "Select a model",
        "GEMINI_API_KEY",
        "LLAMA_CPP_URL",
        "--model-override",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    assert_eq!(started_nodes(&events), 0, "nothing ran");

    // A job's secret is enough.
    let peer = OpenAiPeer::start(&["claude-x"]).await;
    let (engine, _) = engine_for(&[]).await;
    let opts = RunOptions {
        secrets: [
            ("OPENAI_API_KEY".to_owned(), KEY.to_owned()),
            ("OPENAI_BASE_URL".to_owned(), peer.base_url()),
        ]
        .into(),
        ..RunOptions::default()
    };
    let g = common::graph(
        &[(
            "a",
            "nodetool.agents.Agent",
            json!({"model": {"type": "language_model", "provider": "openai", "id": "claude-x"}, "prompt": "hi"}),
        )],
        &[],
    );
    let (outcome, _) = common::run(&engine, g, json!({}), opts).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(
        peer.script().received()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn workers_without_providers_refuse_ai_nodes_before_the_job_starts() {
    let (mut res, _) = resources(&[("OPENAI_API_KEY", KEY)]).await;
    res.extensions = Default::default();
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res);
    let (outcome, events) = run(
        &engine,
        vec![(
            "a".into(),
            "nodetool.agents.Agent",
            json!({"model": model(), "prompt": "hi"}),
        )],
        &[],
    )
    .await;
    let err = outcome.error.unwrap().to_string();
    assert!(
        err.contains("threaded strategy") && err.contains("no credentials"),
        "{err}"
    );
    assert_eq!(started_nodes(&events), 0);
}

#[tokio::test]
async fn provider_faults_fail_the_job_cleanly_or_retry() {
    let (peer, engine, res) = peer_engine().await;
    let agent = || {
        vec![
            (
                "a".into(),
                "nodetool.agents.Agent",
                json!({"model": model(), "prompt": "hi"}),
            ),
            output("o", "text"),
        ]
    };
    let edges = [("a", "text", "o", "value")];

    peer.script()
        .push([Reply::rate_limited(0.05), Reply::text("ok after 429")]);
    let (outcome, _) = run(&engine, agent(), &edges).await;
    assert_eq!(outcome.result["text"], json!(["ok after 429"]));

    for (replies, needle) in [
        (
            vec![
                Reply::status(500, "boom"),
                Reply::status(500, "boom"),
                Reply::status(500, "boom"),
            ],
            "HTTP 500",
        ),
        (vec![Reply::Malformed], "malformed"),
        (vec![Reply::Truncated("half".into())], "truncated"),
    ] {
        peer.script().push(replies);
        let (outcome, events) = run(&engine, agent(), &edges).await;
        assert_eq!(outcome.status, Status::Failed);
        let err = outcome.error.unwrap().to_string();
        assert!(err.contains(needle), "{needle} in {err}");
        assert!(!err.contains(KEY));
        let failed: Vec<_> = events_of(&events, "prediction")
            .into_iter()
            .filter(|e| matches!(e, Event::Prediction(p) if p.status == "failed"))
            .collect();
        assert_eq!(failed.len(), 1, "{needle}: the failed call is reported");
    }
    // A model that does not exist.
    let (outcome, _) = run(
        &engine,
        vec![("a".into(), "nodetool.agents.Agent", json!({"model": {"type": "language_model", "provider": "openai", "id": "gpt-none"}, "prompt": "hi"}))],
        &[],
    )
    .await;
    let err = outcome.error.unwrap().to_string();
    assert!(
        err.contains("gpt-none") && err.contains("does not exist"),
        "{err}"
    );
    let text = res.providers().meter().render_prometheus();
    assert!(
        text.contains("nodetool_provider_errors_total{provider=\"openai\",model=\"gpt-none\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn list_and_data_generators_stream_items_as_they_parse() {
    let (peer, engine, _) = peer_engine().await;
    peer.script().push([Reply::text(
        "Here:\n<LIST_ITEM>The **Dark** Knight</LIST_ITEM>\n<LIST_ITEM>Inception</LIST_ITEM>",
    )]);
    let (outcome, events) = run(
        &engine,
        vec![
            (
                "g".into(),
                "nodetool.generators.ListGenerator",
                json!({"model": model(), "prompt": "2 films"}),
            ),
            output("items", "items"),
            output("idx", "idx"),
        ],
        &[
            ("g", "item", "items", "value"),
            ("g", "index", "idx", "value"),
        ],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(
        outcome.result["items"],
        json!(["The Dark Knight", "Inception"])
    );
    assert_eq!(outcome.result["idx"], json!([0, 1]));
    // The first item went downstream while the model was still streaming.
    let first_item = events
        .iter()
        .position(
            |e| matches!(&e.event, Event::OutputUpdate(o) if o.value == json!("The Dark Knight")),
        )
        .unwrap();
    let last_chunk = events
        .iter()
        .rposition(|e| matches!(&e.event, Event::Chunk(c) if !c.content.is_empty()))
        .unwrap();
    assert!(first_item < last_chunk, "streamed, not collected");

    peer.script().push([Reply::text("no tags at all")]);
    let (outcome, _) = run(
        &engine,
        vec![(
            "g".into(),
            "nodetool.generators.ListGenerator",
            json!({"model": model(), "prompt": "x"}),
        )],
        &[],
    )
    .await;
    assert!(outcome.error.unwrap().to_string().contains("<LIST_ITEM>"));

    peer.script().push([Reply::text(
        "| name | color |\n|---|---|\n| carrot | orange |\n| pea | green |\n",
    )]);
    let (outcome, _) = run(
        &engine,
        vec![
            ("d".into(), "nodetool.generators.DataGenerator", json!({"model": model(), "prompt": "veggies",
                "columns": {"type": "record_type", "columns": [{"name": "name", "data_type": "string"}, {"name": "color", "data_type": "string"}]}})),
            output("rec", "rec"),
            output("df", "df"),
        ],
        &[("d", "record", "rec", "value"), ("d", "dataframe", "df", "value")],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(
        outcome.result["rec"],
        json!([{"name": "carrot", "color": "orange"}, {"name": "pea", "color": "green"}])
    );
    assert_eq!(
        outcome.result["df"][0]["data"],
        json!([["carrot", "orange"], ["pea", "green"]])
    );
}

#[tokio::test]
async fn structured_outputs_extractor_and_classifier_with_cache() {
    let (peer, engine, _) = peer_engine().await;
    let mut g = common::graph(
        &[
            (
                "s",
                "nodetool.generators.StructuredOutputGenerator",
                json!({"model": model(), "instructions": "a hero"}),
            ),
            ("o1", "nodetool.output.Output", json!({"name": "name"})),
            ("o2", "nodetool.output.Output", json!({"name": "level"})),
        ],
        &[("s", "name", "o1", "value"), ("s", "level", "o2", "value")],
    );
    g.nodes[0].dynamic_outputs =
        serde_json::from_value(json!({"name": {"type": "str"}, "level": {"type": "int"}})).unwrap();
    peer.script().push([Reply::text(
        "```json\n{\"name\": \"Ayla\", \"level\": 7}\n```",
    )]);
    let (outcome, _) = common::run(&engine, g.clone(), json!({}), RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["name"], json!(["Ayla"]));
    assert_eq!(outcome.result["level"], json!([7]));
    let sent = peer.script().received().last().unwrap().body.clone();
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"]["properties"]["level"]["type"],
        "integer"
    );

    // A missing field fails clearly.
    peer.script().push([Reply::text("{\"name\": \"Ayla\"}")]);
    let (outcome, _) = common::run(&engine, g, json!({}), RunOptions::default()).await;
    assert!(outcome
        .error
        .unwrap()
        .to_string()
        .contains("no field `level`"));

    // Classifier: temperature 0, so the second identical run is served from the node cache.
    let classify = || {
        vec![
            (
                "c".into(),
                "nodetool.agents.Classifier",
                json!({"model": model(), "text": "cheap pills!!!", "categories": ["spam", "work", "other"]}),
            ),
            output("o", "label"),
        ]
    };
    peer.script()
        .push([Reply::text("{\"category\": \"SPAM\"}")]);
    let before = peer.script().received().len();
    let (outcome, events) = run(&engine, classify(), &[("c", "output", "o", "value")]).await;
    assert_eq!(outcome.result["label"], json!(["spam"]));
    assert_eq!(events_of(&events, "prediction").len(), 1);
    let (outcome, events) = run(&engine, classify(), &[("c", "output", "o", "value")]).await;
    assert_eq!(outcome.result["label"], json!(["spam"]));
    assert_eq!(
        peer.script().received().len() - before,
        1,
        "cached: one call for two runs"
    );
    assert!(
        events_of(&events, "prediction").is_empty(),
        "a cached answer costs nothing"
    );
    assert_eq!(
        peer.script().received().last().unwrap().body["temperature"],
        0.0
    );

    // --no-cache (RunOptions::use_cache = false) neither reads nor fills the model-call cache.
    let before = peer.script().received().len();
    peer.script()
        .push([Reply::text("{\"category\": \"work\"}")]);
    let owned = classify();
    let nodes: Vec<(&str, &str, Value)> = owned
        .iter()
        .map(|(a, b, c)| (a.as_str(), *b, c.clone()))
        .collect();
    let no_cache = RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };
    let (outcome, _) = common::run(
        &engine,
        common::graph(&nodes, &[("c", "output", "o", "value")]),
        json!({}),
        no_cache,
    )
    .await;
    assert_eq!(outcome.result["label"], json!(["work"]));
    assert_eq!(
        peer.script().received().len() - before,
        1,
        "not served from the cache"
    );

    // Too few categories.
    let (outcome, _) = run(
        &engine,
        vec![(
            "c".into(),
            "nodetool.agents.Classifier",
            json!({"model": model(), "text": "x", "categories": ["one"]}),
        )],
        &[],
    )
    .await;
    assert!(outcome
        .error
        .unwrap()
        .to_string()
        .contains("At least 2 categories"));
}

#[tokio::test]
async fn anthropic_and_gemini_models_run_agents() {
    let anthropic = AnthropicDouble::start(KEY, &["claude-test"]).await;
    let gemini = GeminiDouble::start(KEY, &["gemini-test", "gemini-image-test"]).await;
    let (engine, _) = engine_for(&[
        ("ANTHROPIC_BASE_URL", &anthropic.base_url()),
        ("ANTHROPIC_API_KEY", KEY),
        ("GEMINI_BASE_URL", &gemini.base_url()),
        ("GEMINI_API_KEY", KEY),
    ])
    .await;
    anthropic.script().push([
        Reply::ToolCall {
            text: String::new(),
            name: "browser".into(),
            arguments: r#"{"url": "ftp://x"}"#.into(),
        },
        Reply::text("Claude says hi."),
    ]);
    gemini.script().push([Reply::text("Gemini says hi.")]);
    let (outcome, _) = run(
        &engine,
        vec![
            ("a".into(), "nodetool.agents.Agent", json!({"model": {"type": "language_model", "provider": "anthropic", "id": "claude-test"},
                "system": "Be nice.", "prompt": "hi", "tools": [{"type": "tool_name", "name": "browser"}]})),
            ("g".into(), "nodetool.agents.Summarizer", json!({"model": {"type": "language_model", "provider": "gemini", "id": "gemini-test"}, "text": "long text"})),
            ("img".into(), "nodetool.image.TextToImage", json!({"model": {"type": "image_model", "provider": "gemini", "id": "gemini-image-test"}, "prompt": "a cat"})),
            output("oa", "a"),
            output("og", "g"),
            output("oi", "img"),
        ],
        &[("a", "text", "oa", "value"), ("g", "text", "og", "value"), ("img", "output", "oi", "value")],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["a"], json!(["Claude says hi."]));
    assert_eq!(outcome.result["g"], json!(["Gemini says hi."]));
    let sent = anthropic.script().received();
    assert_eq!(sent[0].body["system"], "Be nice.");
    assert_eq!(
        sent[1].body["messages"][2]["content"][0]["type"],
        "tool_result"
    );
    let image = &outcome.result["img"][0];
    assert_eq!(image["type"], "image");
    assert!(image["uri"].as_str().unwrap().starts_with("temp://"));
}

#[tokio::test]
async fn image_speech_and_transcription_nodes_call_openai_endpoints() {
    let (peer, engine, _) = peer_engine().await;
    let (outcome, _) = run(
        &engine,
        vec![
            ("img".into(), "nodetool.image.TextToImage", json!({"model": {"type": "image_model", "provider": "openai", "id": "gpt-image-test"}, "prompt": "a cat", "width": 1024, "height": 1024})),
            ("tts".into(), "nodetool.audio.TextToSpeech", json!({"model": {"type": "tts_model", "provider": "openai", "id": "tts-test"}, "text": "hello"})),
            ("asr".into(), "nodetool.text.AutomaticSpeechRecognition", json!({"model": {"type": "asr_model", "provider": "openai", "id": "whisper-test"}})),
            output("oi", "img"),
            output("ot", "text"),
        ],
        &[("img", "output", "oi", "value"), ("tts", "audio", "asr", "audio"), ("asr", "text", "ot", "value")],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert!(outcome.result["text"][0]
        .as_str()
        .unwrap()
        .starts_with("transcribed"));
    let sent = peer.script().received();
    let img = sent
        .iter()
        .find(|r| r.path == "/v1/images/generations")
        .unwrap();
    assert_eq!(img.body["size"], "1024x1024");
    let speech = sent.iter().find(|r| r.path == "/v1/audio/speech").unwrap();
    assert_eq!(speech.body["input"], "hello");
    assert_eq!(speech.body["voice"], "alloy");
}

#[tokio::test]
async fn model_overrides_retarget_saved_workflows() {
    let (peer, engine, _) = peer_engine().await;
    let mut g = common::graph(
        &[(
            "a",
            "nodetool.agents.Agent",
            json!({"model": {"type": "language_model"}, "prompt": "hi"}),
        )],
        &[],
    );
    let overrides =
        nodetool_nodes::ai::parse_model_overrides(&[format!("language_model=openai:{MODEL}")])
            .unwrap();
    assert_eq!(
        nodetool_nodes::ai::apply_model_overrides(&mut g, &overrides),
        1
    );
    let (outcome, _) = common::run(&engine, g, json!({}), RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(peer.script().received()[0].body["model"], MODEL);
}

#[tokio::test]
async fn extractor_chart_research_and_claude_agent() {
    let (peer, engine, _) = peer_engine().await;
    // Extractor: dynamic output fields from the model's JSON.
    let mut g = common::graph(
        &[
            (
                "x",
                "nodetool.agents.Extractor",
                json!({"model": model(), "text": "Ada Lovelace, born 1815"}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "year"})),
        ],
        &[("x", "born", "o", "value")],
    );
    g.nodes[0].dynamic_outputs = serde_json::from_value(json!({"born": {"type": "int"}})).unwrap();
    peer.script().push([Reply::text("{\"born\": 1815}")]);
    let (outcome, _) = common::run(&engine, g, json!({}), RunOptions::default()).await;
    assert_eq!(outcome.result["year"], json!([1815]), "{:?}", outcome.error);

    // ChartGenerator: a Plotly figure.
    peer.script().push([Reply::text(
        r#"{"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4]}], "layout": {"title": "t"}}"#,
    )]);
    let (outcome, _) = run(
        &engine,
        vec![
            (
                "c".into(),
                "nodetool.generators.ChartGenerator",
                json!({"model": model(), "prompt": "line"}),
            ),
            output("o", "chart"),
        ],
        &[("c", "output", "o", "value")],
    )
    .await;
    assert_eq!(
        outcome.result["chart"][0]["type"], "plotly_config",
        "{:?}",
        outcome.error
    );
    assert_eq!(
        outcome.result["chart"][0]["config"]["data"][0]["type"],
        "scatter"
    );

    // ResearchAgent: google_search is left out without SERPAPI_API_KEY; browser stays.
    let mut g = common::graph(
        &[
            (
                "r",
                "nodetool.agents.ResearchAgent",
                json!({"model": model(), "objective": "find facts"}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "summary"})),
        ],
        &[("r", "summary", "o", "value")],
    );
    g.nodes[0].dynamic_outputs =
        serde_json::from_value(json!({"summary": {"type": "str"}})).unwrap();
    peer.script()
        .push([Reply::text("{\"summary\": \"facts\"}")]);
    let (outcome, events) = common::run(&engine, g, json!({}), RunOptions::default()).await;
    assert_eq!(
        outcome.result["summary"],
        json!(["facts"]),
        "{:?}",
        outcome.error
    );
    let tools = peer.script().received().last().unwrap().body["tools"].clone();
    assert_eq!(tools.as_array().unwrap().len(), 1, "{tools}");
    assert_eq!(tools[0]["function"]["name"], "browser");
    assert!(events
        .iter()
        .any(|e| matches!(&e.event, Event::LogUpdate(l) if l.content.contains("SERPAPI_API_KEY"))));

    // ClaudeAgent: a Messages-style tool loop capped by max_turns; Claude Code's local tools
    // are refused before the job starts.
    peer.script().push([Reply::text("Done.")]);
    let (outcome, _) = run(
        &engine,
        vec![
            ("c".into(), "anthropic.agents.ClaudeAgent", json!({"model": model(), "prompt": "research", "allowed_tools": [], "max_turns": 3})),
            output("o", "text"),
        ],
        &[("c", "text", "o", "value")],
    )
    .await;
    assert_eq!(
        outcome.result["text"],
        json!(["Done."]),
        "{:?}",
        outcome.error
    );
    peer.script()
        .set_default(Reply::tool("nodetool_image_TextToImage", "{}"));
    let (outcome, _) = run(
        &engine,
        vec![(
            "c".into(),
            "anthropic.agents.ClaudeAgent",
            json!({"model": model(), "prompt": "loop", "allowed_tools": [], "max_turns": 3}),
        )],
        &[],
    )
    .await;
    assert!(outcome.error.unwrap().to_string().contains("3 steps"));
    let (outcome, events) = run(
        &engine,
        vec![(
            "c".into(),
            "anthropic.agents.ClaudeAgent",
            json!({"model": model(), "prompt": "x", "allowed_tools": ["Bash"]}),
        )],
        &[],
    )
    .await;
    assert!(outcome
        .error
        .unwrap()
        .to_string()
        .contains("Claude Code CLI tools"));
    assert_eq!(started_nodes(&events), 0);
}

#[tokio::test]
async fn agents_call_nodes_exposed_as_tools() {
    let (peer, engine, _) = peer_engine().await;
    peer.script().push([
        Reply::tool("nodetool_image_TextToImage", &json!({"model": {"type": "image_model", "provider": "openai", "id": "gpt-image-test"}, "prompt": "a fox"}).to_string()),
        Reply::text("Here is your fox."),
    ]);
    let (outcome, _) = run(
        &engine,
        vec![
            (
                "a".into(),
                "nodetool.agents.Agent",
                json!({"model": model(), "prompt": "draw a fox",
                "tools": [{"type": "tool_name", "name": "nodetool_image_TextToImage"}]}),
            ),
            output("o", "text"),
        ],
        &[("a", "text", "o", "value")],
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    let sent = peer.script().received();
    let first = &sent[0].body;
    assert_eq!(
        first["tools"][0]["function"]["name"],
        "nodetool_image_TextToImage"
    );
    assert!(first["tools"][0]["function"]["parameters"]["properties"]["prompt"].is_object());
    assert!(sent
        .iter()
        .any(|r| r.path == "/v1/images/generations" && r.body["prompt"] == "a fox"));
    let answer = sent.last().unwrap().body.to_string();
    assert!(
        answer.contains("nodetool.image.TextToImage") && answer.contains("temp://"),
        "{answer}"
    );
}

#[tokio::test]
async fn agents_drive_the_nodes_behind_their_control_edges_as_tools() {
    // Agent ──control──▶ "Shout It" (ToUppercase) ──▶ output. The model calls the control tool
    // with a property override; the controlled node runs with it, its outputs go back to the
    // model and downstream; with no call the node never runs.
    let (peer, engine, _) = peer_engine().await;
    peer.script().push([
        Reply::tool("shout_it", &json!({"text": "quiet words"}).to_string()),
        Reply::text("Done shouting."),
    ]);
    let graph: nodetool_engine::Graph = serde_json::from_value(json!({
        "nodes": [
            {"id": "agent", "type": "nodetool.agents.Agent",
             "data": {"model": model(), "prompt": "shout something"}},
            {"id": "up", "type": "nodetool.text.ToUppercase", "data": {"text": "default"},
             "ui_properties": {"title": "Shout It"}},
            {"id": "loud", "type": "nodetool.output.Output", "data": {"name": "loud"}},
            {"id": "answer", "type": "nodetool.output.Output", "data": {"name": "answer"}},
        ],
        "edges": [
            {"id": "c1", "source": "agent", "sourceHandle": "__control__", "target": "up",
             "targetHandle": "__control__", "edge_type": "control"},
            {"id": "e1", "source": "up", "sourceHandle": "output", "target": "loud",
             "targetHandle": "value"},
            {"id": "e2", "source": "agent", "sourceHandle": "text", "target": "answer",
             "targetHandle": "value"},
        ],
    }))
    .unwrap();
    let (outcome, events) = common::run(&engine, graph, json!({}), RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["loud"], json!(["QUIET WORDS"]));
    assert_eq!(outcome.result["answer"], json!(["Done shouting."]));

    let sent = peer.script().received();
    assert_eq!(sent.len(), 2);
    let tools = sent[0].body["tools"].as_array().unwrap();
    let tool = tools
        .iter()
        .find(|t| t["function"]["name"] == "shout_it")
        .unwrap_or_else(|| panic!("no control tool offered: {tools:?}"));
    let params = &tool["function"]["parameters"];
    assert_eq!(params["properties"]["text"]["type"], "string");
    assert_eq!(params["required"], json!([]));
    // The controlled node's outputs are the tool's answer.
    let answer = sent[1].body.to_string();
    assert!(answer.contains("QUIET WORDS"), "{answer}");
    assert_eq!(events_of(&events, "tool_call_update").len(), 1);
}
