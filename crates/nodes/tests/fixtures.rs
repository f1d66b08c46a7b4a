//! Runs every fixture under `tests/fixtures/` (NodeTool workflow files with results derived by
//! hand from NodeTool's node implementations; see `tests/fixtures/README.md`) through
//! `Engine::run`, and reports every mismatch at once.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "fixtures/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use nodetool_core::StorageKey;
use nodetool_engine::{parse_workflow, Engine, EngineResources, Event, RunOptions, Status};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Downloads an image ref from the run's temp or asset storage and decodes it to RGB8.
async fn fetch_rgb(res: &EngineResources, image: &Value) -> Result<(u32, u32, Vec<u8>), String> {
    let uri = image["uri"].as_str().unwrap_or_default();
    let (storage, key) = if let Some(k) = uri.strip_prefix("temp://") {
        (&res.temp_storage, k)
    } else if let Some(k) = uri.strip_prefix("asset://") {
        (&res.asset_storage, k)
    } else {
        return Err(format!("not a stored image ref: {image}"));
    };
    let key = StorageKey::new(key).map_err(|e| e.to_string())?;
    let got = storage
        .download(&key, None)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = nodetool_core::storage::collect(got.body)
        .await
        .map_err(|e| e.to_string())?;
    let img = image::load_from_memory(&bytes).map_err(|e| e.to_string())?;
    let rgb = img.to_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw()))
}

#[tokio::test]
async fn every_fixture_matches_nodetool() {
    let cases = support::cases(&root());
    assert!(
        cases.len() >= 30,
        "expected the fixture set under {}, found {} case(s)",
        root().display(),
        cases.len()
    );
    let res = common::test_resources().await;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let opts = || RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };

    let mut problems = Vec::new();
    for case in &cases {
        let wf = match parse_workflow(&case.workflow_text()) {
            Ok(wf) => wf,
            Err(e) => {
                problems.push(format!("{}: workflow does not load: {e}", case.name));
                continue;
            }
        };
        let (outcome, events) =
            common::run(&engine, wf.graph, Value::Object(case.params()), opts()).await;
        let error = outcome
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        problems.extend(case.compare(outcome.status.as_str(), &outcome.result, &error));

        if outcome.status == Status::Completed {
            for (name, specs) in case.image_outputs() {
                let Some(Value::Array(items)) = outcome.result.get(&name) else {
                    continue; // already reported by compare()
                };
                for (i, (item, spec)) in items.iter().zip(&specs).enumerate() {
                    let label = format!("{}: image `{name}`[{i}]", case.name);
                    match fetch_rgb(&res, item).await {
                        Ok((w, h, rgb)) => {
                            problems.extend(support::check_pixels(&label, spec, w, h, &rgb));
                        }
                        Err(e) => problems.push(format!("{label}: {e}")),
                    }
                }
            }
        }

        if let Some(Value::Object(want)) = case.expected.get("previews") {
            let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for e in &events {
                if let Event::PreviewUpdate(p) = &e.event {
                    got.entry(p.node_id.clone())
                        .or_default()
                        .push(p.value.clone());
                }
            }
            let want: BTreeMap<String, Vec<Value>> = want
                .iter()
                .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
                .collect();
            if got != want {
                problems.push(format!("{}: previews {got:?}, want {want:?}", case.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatch(es) over {} fixture runs:\n  - {}",
        problems.len(),
        cases.len(),
        problems.join("\n  - ")
    );
}

/// Node namespaces without a fixture here, and where they are tested instead.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    // Asset save/load nodes need an asset store and folders: tests/asset_nodes.rs.
    ("nodetool.text.SaveText", "asset_nodes.rs"),
    ("nodetool.image.SaveImage", "asset_nodes.rs"),
    ("nodetool.image.LoadImageAssets", "asset_nodes.rs"),
    ("nodetool.text.LoadTextAssets", "asset_nodes.rs"),
    ("nodetool.audio.LoadAudioAssets", "asset_nodes.rs"),
    ("nodetool.agents.Agent", "ai_nodes.rs"),
    ("nodetool.agents.ResearchAgent", "ai_nodes.rs"),
    ("nodetool.agents.Summarizer", "ai_nodes.rs"),
    ("nodetool.agents.Extractor", "ai_nodes.rs"),
    ("nodetool.agents.Classifier", "ai_nodes.rs"),
    ("anthropic.agents.ClaudeAgent", "ai_nodes.rs"),
    ("nodetool.generators.ListGenerator", "ai_nodes.rs"),
    ("nodetool.generators.DataGenerator", "ai_nodes.rs"),
    (
        "nodetool.generators.StructuredOutputGenerator",
        "ai_nodes.rs",
    ),
    ("nodetool.generators.ChartGenerator", "ai_nodes.rs"),
    ("nodetool.audio.TextToSpeech", "ai_nodes.rs"),
];

/// Every node family (namespace) the registry has is used by at least one fixture. The
/// `lib.image.*` and `lib.pillow.__init__.*` names are aliases of `lib.pillow.*` and do not
/// count as families.
#[test]
fn fixtures_cover_every_node_family() {
    let used: BTreeSet<String> = support::cases(&root())
        .iter()
        .flat_map(|c| {
            let wf: Value = serde_json::from_str(&c.workflow_text()).unwrap();
            wf["graph"]["nodes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n["type"].as_str().map(str::to_owned))
        })
        .collect();
    let family = |t: &str| {
        t.rsplit_once('.')
            .map_or(t.to_owned(), |(ns, _)| ns.to_owned())
    };
    let used_families: BTreeSet<String> = used.iter().map(|t| family(t)).collect();
    let registry = nodetool_nodes::registry();
    let elsewhere: BTreeSet<&str> = COVERED_ELSEWHERE.iter().map(|(t, _)| *t).collect();
    let missing: BTreeSet<String> = registry
        .types()
        .filter(|t| {
            !t.starts_with("lib.image.")
                && !t.starts_with("lib.pillow.__init__.")
                && !elsewhere.contains(t)
        })
        .map(family)
        .filter(|f| !used_families.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "node families without a fixture: {missing:?}"
    );
    for t in &used {
        assert!(
            registry.get(t).is_some() || t == "nodetool.text.Concatt",
            "fixture uses {t}, which the registry does not have"
        );
    }
}
