//! Runs every recorded NodeTool conformance case and compares the result exactly, and the
//! per-node / per-edge event sequences (global order varies between runs in the original).
//!
//! Two sets: `shared/conformance` (recorded with the original for the first sessions) and
//! `tests/conformance` (recorded here with `tests/conformance/record.sh`, same format, plus an
//! optional `params.json` and the PNGs of saved images in `expected/`, compared pixel by pixel).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use nodetool_core::StorageKey;
use nodetool_engine::{parse_workflow, Engine, RunOptions, Status};
use serde_json::Value;

fn cases_in(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("workflow.json").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", dir.display());
    cases
}

/// Decodes a stored image ref (asset or temp storage) to RGB8.
async fn stored_rgb(engine: &Engine, image: &Value) -> Result<(u32, u32, Vec<u8>), String> {
    let res = engine.resources();
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

/// Removes what differs between runs from a result: ids and storage URIs of refs.
fn strip_refs(v: &Value) -> Value {
    match v {
        // SaveImage keeps alpha where NodeTool drops it (pixels are compared in RGB), so a
        // saved ref's `metadata.mode` may say RGBA where the original says RGB.
        Value::Object(m) if m.get("type") == Some(&Value::from("image")) => {
            let mut m = m.clone();
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.remove("mode");
            }
            strip_fields(&m)
        }
        Value::Object(m) => strip_fields(m),
        Value::Array(items) => Value::Array(items.iter().map(strip_refs).collect()),
        other => other.clone(),
    }
}

fn strip_fields(m: &serde_json::Map<String, Value>) -> Value {
    Value::Object(
        m.iter()
            // Ids, storage URIs, and the content type our refs add.
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "asset_id" | "uri" | "created_at" | "content_type"
                )
            })
            .map(|(k, x)| (k.clone(), strip_refs(x)))
            .collect(),
    )
}

/// The largest per-channel difference allowed for an image output: 0 unless the case's
/// `tolerance.json` (`{output: n, "why": ...}`) says otherwise, as it does for lossy formats
/// whose decoders round differently (libjpeg in Pillow, zune-jpeg here).
fn tolerance(case: &Path, output: &str) -> u8 {
    std::fs::read_to_string(case.join("tolerance.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get(output).and_then(Value::as_u64))
        .map_or(0, |n| n.min(255) as u8)
}

/// `{{CASE_DIR}}` and `{{HTTP}}` in params, as `record.sh` replaces them.
fn placeholders(params: &Value, case: &Path, base_url: Option<&str>) -> Value {
    let text = params.to_string();
    let dir = std::fs::canonicalize(case).unwrap();
    let text = text.replace("{{CASE_DIR}}", &dir.display().to_string());
    let text = match base_url {
        Some(url) => text.replace("{{HTTP}}", url),
        None => text,
    };
    serde_json::from_str(&text).unwrap()
}

async fn check_case(engine: &Engine, case: &Path, base_url: Option<&str>) -> Vec<String> {
    let mut failures = Vec::new();
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let wf = parse_workflow(&std::fs::read_to_string(case.join("workflow.json")).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("outputs.json")).unwrap()).unwrap();
    let params: Value = std::fs::read_to_string(case.join("params.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    let params = placeholders(&params, case, base_url);
    let recorded: Vec<Value> = std::fs::read_to_string(case.join("events.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let (outcome, events) = run(engine, wf.graph.clone(), params, RunOptions::default()).await;
    let want_status = expected["status"].as_str().unwrap();
    if outcome.status.as_str() != want_status {
        failures.push(format!(
            "{name}: status {} != {want_status} ({:?})",
            outcome.status, outcome.error
        ));
        return failures;
    }
    // Every event is well-formed: job id, seq 1..=n in order, terminal job_update last.
    let ours = to_values(&events);
    for (i, e) in ours.iter().enumerate() {
        assert_eq!(e["job_id"], Value::String(outcome.job_id.clone()), "{name}");
        assert_eq!(e["seq"], Value::from(i as u64 + 1), "{name}");
    }
    assert_eq!(ours.last().unwrap()["type"], "job_update", "{name}");
    if outcome.status != Status::Completed {
        return failures;
    }
    let images: BTreeMap<String, Vec<String>> = expected
        .get("images")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let files = v.as_array().cloned().unwrap_or_default();
                    (
                        k.clone(),
                        files
                            .iter()
                            .filter_map(|f| f.as_str().map(str::to_owned))
                            .collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let got = Value::Object(outcome.result.clone());
    if strip_refs(&got) != strip_refs(&expected["result"]) {
        failures.push(format!(
            "{name}: result\n  got  {got}\n  want {}",
            expected["result"]
        ));
    }
    for (output, files) in &images {
        let values = outcome.result.get(output).and_then(Value::as_array);
        for (i, file) in files.iter().enumerate() {
            let Some(value) = values.and_then(|v| v.get(i)) else {
                failures.push(format!("{name}: no image {output}[{i}]"));
                continue;
            };
            let want = image::open(case.join(file)).unwrap().to_rgb8();
            match stored_rgb(engine, value).await {
                Ok((w, h, rgb)) => {
                    if (w, h) != want.dimensions() {
                        failures.push(format!(
                            "{name}: image {output}[{i}] is {w}x{h}, recorded {:?}",
                            want.dimensions()
                        ));
                    } else {
                        let diffs: Vec<u8> = rgb
                            .iter()
                            .zip(want.as_raw())
                            .map(|(a, b)| a.abs_diff(*b))
                            .collect();
                        let worst = diffs.iter().copied().max().unwrap_or(0);
                        let allowed = tolerance(case, output);
                        if worst > allowed {
                            failures.push(format!(
                                "{name}: image {output}[{i}]: {} of {} channel values differ, by \
                                 up to {worst} (allowed {allowed})",
                                diffs.iter().filter(|d| **d > 0).count(),
                                rgb.len()
                            ));
                        }
                    }
                }
                Err(e) => failures.push(format!("{name}: image {output}[{i}]: {e}")),
            }
        }
    }

    let want_nodes = per_node_sequences(&recorded);
    let got_nodes = per_node_sequences(&ours);
    for (node, seq) in &want_nodes {
        if got_nodes.get(node) != Some(seq) {
            failures.push(format!(
                "{name}: node {node} events {:?} != recorded {seq:?}",
                got_nodes.get(node)
            ));
        }
    }
    // Nodes the original reports nothing for are its input nodes (dispatched, not run).
    for node in got_nodes.keys().filter(|n| !want_nodes.contains_key(*n)) {
        let t = &wf.graph.node(node).unwrap().node_type;
        if !t.starts_with("nodetool.input.") {
            failures.push(format!("{name}: unexpected events for node {node} ({t})"));
        }
    }
    let want_edges: BTreeMap<_, _> = per_edge_counters(&recorded);
    let got_edges = per_edge_counters(&ours);
    if want_edges != got_edges {
        failures.push(format!(
            "{name}: edge counters {got_edges:?} != recorded {want_edges:?}"
        ));
    }
    // Output updates: same values per output, in order.
    let outputs = |evs: &[Value]| -> BTreeMap<String, Vec<Value>> {
        let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for e in evs.iter().filter(|e| e["type"] == "output_update") {
            m.entry(e["output_name"].as_str().unwrap().to_owned())
                .or_default()
                .push(serde_json::json!([
                    strip_refs(&e["value"]),
                    e["output_type"]
                ]));
        }
        m
    };
    if outputs(&recorded) != outputs(&ours) {
        failures.push(format!(
            "{name}: output_update values/types differ:\n  got  {:?}\n  want {:?}",
            outputs(&ours),
            outputs(&recorded)
        ));
    }
    failures
}

async fn check_all(dir: &Path) {
    let engine = engine().await;
    let mut failures = Vec::new();
    for case in cases_in(dir) {
        if !case.join("files").is_dir() {
            failures.extend(check_case(&engine, &case, None).await);
            continue;
        }
        // Refs to the case's own files: served over HTTP on loopback (that one port allowed
        // by the guard), and readable as files (the case folder is a file root).
        let (url, _) = serve_dir(case.join("files")).await;
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let res = resources_with_media(
            vec![std::fs::canonicalize(&case).unwrap()],
            vec![("127.0.0.1".to_owned(), port)],
        )
        .await;
        let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res);
        failures.extend(check_case(&engine, &case, Some(&url)).await);
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_conformance_case_matches_the_recording() {
    check_all(&conformance_dir()).await;
}

#[tokio::test]
async fn every_case_recorded_here_matches_the_recording() {
    check_all(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")).await;
}
