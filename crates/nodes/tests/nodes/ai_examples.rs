//! The bundled NodeTool examples that use AI nodes run end to end against a real llama.cpp
//! server (the tiny random-weight model), their model refs rewritten by
//! `language_model=llama_cpp:tiny` (what `nodetool run --model-override` does), the files
//! untouched. An example qualifies when every node type it uses is in the registry, it fetches
//! nothing from the internet, and every model it needs is a language model (llama.cpp draws no
//! images).
//!
//! The model's text is nonsense, so an example either completes or fails where NodeTool fails
//! on such output (no `<LIST_ITEM>` tags, no JSON for structured outputs); it never fails for a
//! missing setting, a connection problem or a hang, and every AI node reaches the server.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodetool_config::{Settings, Sources};
use nodetool_engine::{parse_workflow, Engine, Event, RunOptions, Status};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_testkit::llama_server::LlamaServer;
use nodetool_testkit::skip_or_fail;
use serde_json::{json, Value};

fn examples_dir() -> PathBuf {
    let beside =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/examples/nodetool-base");
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/examples/nodetool-base")
    }
}

/// Failures NodeTool itself reports for model output it cannot use.
const MODEL_OUTPUT_FAILURES: &[&str] = &[
    "<LIST_ITEM>",
    "did not return",
    "JSON object",
    "no field",
    "Plotly",
    "step cap",
];

#[tokio::test]
async fn bundled_ai_examples_run_against_llama_cpp() {
    let server = match LlamaServer::start().await {
        Ok(s) => s,
        Err(why) => return skip_or_fail("bundled_ai_examples_run_against_llama_cpp", &why),
    };
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = [
        ("ENV".to_owned(), "test".to_owned()),
        ("LLAMA_CPP_URL".to_owned(), server.root_url()),
    ]
    .into();
    let settings = Settings::load(&Sources::new(env, dir.path())).unwrap();
    let resources = Resources::new(settings, ResourceOptions::default());
    // A workspace for the examples that keep a SQLite database (Flashcard Generator).
    let workspace = tempfile::tempdir().unwrap();
    let node_settings = nodetool_nodes::NodeSettings {
        workspace_dir: Some(workspace.path().to_owned()),
        ..Default::default()
    };
    let registry = nodetool_nodes::registry_with(&node_settings);
    let engine = Engine::new(
        Arc::new(nodetool_nodes::registry_with(&node_settings)),
        resources.engine_resources().await.unwrap(),
    );
    let overrides =
        nodetool_nodes::ai::parse_model_overrides(&["language_model=llama_cpp:tiny"]).unwrap();

    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("shared/examples/nodetool-base beside the repo")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut ran = Vec::new();
    let mut completed = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut wf = parse_workflow(&text).unwrap();
        let types: Vec<&str> = wf
            .graph
            .nodes
            .iter()
            .map(|n| n.node_type.as_str())
            .collect();
        let uses_ai = types
            .iter()
            .any(|t| t.contains(".agents.") || t.contains(".generators."));
        let all_known = types.iter().all(|t| registry.get(t).is_some());
        // This machine has no internet: examples that fetch pages or feeds cannot run here.
        let offline = types
            .iter()
            .all(|t| !t.starts_with("lib.http.") && !t.starts_with("lib.rss."));
        let only_language = wf.graph.nodes.iter().all(|n| {
            n.data.values().all(|v| {
                let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
                !ty.ends_with("_model") || ty == "language_model"
            })
        });
        let no_control = wf
            .graph
            .edges
            .iter()
            .all(|e| e.edge_type == nodetool_engine::EdgeType::Data);
        if !(uses_ai && all_known && offline && only_language && no_control) {
            continue;
        }
        nodetool_nodes::ai::apply_model_overrides(&mut wf.graph, &overrides);
        // A random model rarely stops by itself: cap each answer at 64 tokens (in memory; the
        // examples ask for up to 8192, minutes of grammar-constrained sampling on 2 cores).
        for node in &mut wf.graph.nodes {
            if node.data.contains_key("max_tokens") {
                node.data.insert("max_tokens".into(), json!(64));
            }
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let opts = RunOptions {
            job_timeout: Some(Duration::from_secs(120)),
            ..RunOptions::default()
        };
        let (outcome, events) = common::run(&engine, wf.graph, json!({}), opts).await;
        let predictions = events
            .iter()
            .filter(|e| matches!(e.event, Event::Prediction(_)))
            .count();
        let chunks = events
            .iter()
            .filter(|e| matches!(e.event, Event::Chunk(_)))
            .count();
        match outcome.status {
            Status::Completed => completed += 1,
            Status::Failed => {
                let err = outcome.error.as_ref().unwrap().to_string();
                assert!(
                    MODEL_OUTPUT_FAILURES.iter().any(|m| err.contains(m)),
                    "{name}: failed for a reason other than the random model's output: {err}"
                );
            }
            other => panic!("{name}: ended {other}"),
        }
        assert!(predictions > 0, "{name}: the model was called");
        // A run that failed early may have stopped at a node that does not stream (a
        // structured-output generator); a completed one streamed its agents' text.
        if outcome.status == Status::Completed {
            assert!(chunks > 0, "{name}: streamed chunks");
        }
        eprintln!("{name}: {} ({predictions} model calls)", outcome.status);
        ran.push(name);
    }
    assert!(ran.len() >= 3, "examples that qualify: {ran:?}");
    assert!(completed >= 1, "at least one example completes: {ran:?}");
}
