//! Runs every fixture under `tests/fixtures/` (NodeTool workflow files with results derived by
//! hand from NodeTool's node implementations; see `tests/fixtures/README.md`) through
//! `Engine::run`, and reports every mismatch at once.

#![allow(clippy::unwrap_used)]

use crate::common;
use nodetool_testkit::fixtures as support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use nodetool_core::StorageKey;
use nodetool_engine::{parse_workflow, Engine, EngineResources, Event, RunOptions, Status};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The bytes of a stored ref (temp or asset storage).
async fn fetch_bytes(res: &EngineResources, value: &Value) -> Result<Vec<u8>, String> {
    let uri = value["uri"].as_str().unwrap_or_default();
    let (storage, key) = if let Some(k) = uri.strip_prefix("temp://") {
        (&res.temp_storage, k)
    } else if let Some(k) = uri.strip_prefix("asset://") {
        (&res.asset_storage, k)
    } else {
        return Err(format!("not a stored ref: {value}"));
    };
    let key = StorageKey::new(key).map_err(|e| e.to_string())?;
    let got = storage
        .download(&key, None)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = nodetool_core::storage::collect(got.body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(bytes.to_vec())
}

/// ffprobe's view of a media file: per stream its type, codec, size, decoded frame count,
/// sample rate and channels, and the container's duration.
fn probe(path: &std::path::Path) -> Result<(Vec<Value>, f64), String> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,nb_read_frames,sample_rate,channels:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    Ok((
        v["streams"].as_array().cloned().unwrap_or_default(),
        duration,
    ))
}

/// Every frame of a video's first video stream as RGB8.
fn frames_rgb(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ])
        .output()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}

/// Compares a produced media file with the recorded one: the same streams (type, codec, size,
/// frame count, sample rate, channels), durations within 0.05 s, and for video every decoded
/// frame within the spec's tolerance.
fn check_media(
    label: &str,
    spec: &Value,
    got: &std::path::Path,
    want: &std::path::Path,
) -> Vec<String> {
    let (Ok((gs, gd)), Ok((ws, wd))) = (probe(got), probe(want)) else {
        return vec![format!(
            "{label}: cannot probe {} or {}",
            got.display(),
            want.display()
        )];
    };
    let key = |s: &Value| {
        serde_json::json!([
            s["codec_type"],
            s["codec_name"],
            s["width"],
            s["height"],
            s["nb_read_frames"],
            s["sample_rate"],
            s["channels"]
        ])
    };
    let (gk, wk): (Vec<Value>, Vec<Value>) =
        (gs.iter().map(key).collect(), ws.iter().map(key).collect());
    let mut problems = Vec::new();
    if gk != wk {
        problems.push(format!("{label}: streams {gk:?}, want {wk:?}"));
    }
    if (gd - wd).abs() > 0.05 {
        problems.push(format!("{label}: duration {gd}, want {wd}"));
    }
    let video = ws.iter().find(|s| s["codec_type"] == "video");
    if let (Some(v), true) = (video, problems.is_empty()) {
        let (w, h) = (
            v["width"].as_u64().unwrap_or(0) as u32,
            v["height"].as_u64().unwrap_or(0) as u32,
        );
        match (frames_rgb(got), frames_rgb(want)) {
            (Ok(g), Ok(x)) => {
                let frame = (w * h * 3) as usize;
                for (i, (a, b)) in g.chunks(frame).zip(x.chunks(frame)).enumerate() {
                    problems.extend(support::compare_rgb(
                        &format!("{label} frame {i}"),
                        spec,
                        (w, h),
                        a,
                        (w, h),
                        b,
                    ));
                }
            }
            (Err(e), _) | (_, Err(e)) => problems.push(format!("{label}: decoding: {e}")),
        }
    }
    problems
}

fn have_ffmpeg() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|p| {
        std::process::Command::new(p)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
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
    let ffmpeg = have_ffmpeg();
    for case in &cases {
        if case.expected.get("requires").and_then(Value::as_str) == Some("ffmpeg") && !ffmpeg {
            nodetool_testkit::skip_or_fail(
                &format!("fixture {}", case.name),
                "ffmpeg and ffprobe are not installed (scripts/test installs Debian's ffmpeg)",
            );
            continue;
        }
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
                    match (fetch_rgb(&res, item).await, case.expected_png(spec)) {
                        (Ok((w, h, rgb)), Some(file)) => match image::open(&file) {
                            Ok(want) => {
                                let want = want.to_rgb8();
                                problems.extend(support::compare_rgb(
                                    &label,
                                    spec,
                                    (w, h),
                                    &rgb,
                                    (want.width(), want.height()),
                                    want.as_raw(),
                                ));
                            }
                            Err(e) => problems.push(format!("{label}: {}: {e}", file.display())),
                        },
                        (Ok((w, h, rgb)), None) => {
                            problems.extend(support::check_pixels(&label, spec, w, h, &rgb));
                        }
                        (Err(e), _) => problems.push(format!("{label}: {e}")),
                    }
                }
            }
        }

        if outcome.status == Status::Completed {
            for (name, specs) in case.media_outputs() {
                let Some(Value::Array(items)) = outcome.result.get(&name) else {
                    continue; // already reported by compare()
                };
                for (i, (item, spec)) in items.iter().zip(&specs).enumerate() {
                    let label = format!("{}: media `{name}`[{i}]", case.name);
                    let want = case.dir().join(spec["file"].as_str().unwrap_or_default());
                    match fetch_bytes(&res, item).await {
                        Ok(bytes) => {
                            let got = tempfile::NamedTempFile::new().unwrap();
                            std::fs::write(got.path(), bytes).unwrap();
                            problems.extend(check_media(&label, spec, got.path(), &want));
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
            // A `{"media": spec}` preview is a video or audio ref compared by its streams.
            let mut media = Vec::new();
            let mut plain_got = got.clone();
            let mut plain_want = want.clone();
            for (node, values) in &want {
                for (i, v) in values.iter().enumerate() {
                    if let Some(spec) = v.get("media") {
                        let got_value = got.get(node).and_then(|g| g.get(i)).cloned();
                        media.push((
                            format!("{}: preview {node}[{i}]", case.name),
                            spec.clone(),
                            got_value,
                        ));
                        if let Some(w) = plain_want.get_mut(node) {
                            w[i] = Value::Null;
                        }
                        if let Some(g) = plain_got.get_mut(node).and_then(|g| g.get_mut(i)) {
                            *g = Value::Null;
                        }
                    }
                }
            }
            if plain_got != plain_want {
                problems.push(format!("{}: previews {got:?}, want {want:?}", case.name));
            }
            for (label, spec, got_value) in media {
                let want_file = case.dir().join(spec["file"].as_str().unwrap_or_default());
                match got_value {
                    None => problems.push(format!("{label}: no such preview")),
                    Some(v) => match fetch_bytes(&res, &v).await {
                        Ok(bytes) => {
                            let got = tempfile::NamedTempFile::new().unwrap();
                            std::fs::write(got.path(), bytes).unwrap();
                            problems.extend(check_media(&label, &spec, got.path(), &want_file));
                        }
                        Err(e) => problems.push(format!("{label}: {e}")),
                    },
                }
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
    // Asset save/load nodes need an asset store and folders: tests/nodes/asset_nodes.rs.
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
/// `lib.image.*`, `nodetool.lib.*` and `lib.pillow.__init__.*` names are aliases of
/// `lib.pillow.*` and do not count as families.
#[test]
fn fixtures_cover_every_node_family() {
    // Fixtures, and the conformance cases recorded with the original (tests/conformance).
    let recorded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let recorded: Vec<String> = std::fs::read_dir(&recorded)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("workflow.json")).ok())
        .collect();
    let used: BTreeSet<String> = support::cases(&root())
        .iter()
        .map(|c| c.workflow_text())
        .chain(recorded)
        .flat_map(|text| {
            let wf: Value = serde_json::from_str(&text).unwrap();
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
                && !t.starts_with("nodetool.lib.")
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
