//! `nodetool run` on each of NodeTool's 69 bundled example workflows (`shared/examples/
//! nodetool-base`) with no provider, no Python bridge and no network: each prints its outputs, or
//! an error that says what to configure — a validation error whose every problem names the
//! setting, key or package that enables the node, or a node's own clear failure. Never "unknown
//! node type", never a panic, never a hang.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn examples_dir() -> PathBuf {
    match std::env::var_os("NODETOOL_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
    .join("examples/nodetool-base")
}

/// Examples that need nothing external: they must complete (with these params).
fn must_complete() -> Vec<(&'static str, Value)> {
    // Image Enhance's input image is an asset of its author's store; give it one inline.
    let png: &[u8] = include_bytes!("../../../nodes/tests/conformance/uri_http/files/rgba.png");
    vec![
        ("Conditional Logic Engine.json", json!({})),
        (
            "Image Enhance.json",
            json!({"image": {"type": "image", "data": png}}),
        ),
    ]
}

/// Words that say what to configure.
const CONFIGURE: &[&str] = &[
    "NODETOOL_PYTHON",
    "_API_KEY",
    "NODETOOL_FILE_ROOTS",
    "nodetool-",
    // An AI node whose example names no model: the flag that picks one.
    "--model-override",
];

#[test]
fn every_bundled_example_runs_or_says_what_to_configure() {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("examples not found at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        69,
        "the 69 bundled examples under {}",
        dir.display()
    );
    let config = tempfile::tempdir().expect("tempdir");
    let complete = must_complete();
    let mut problems = Vec::new();
    let mut outcomes = [0usize; 3];
    for file in &files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let params = complete
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.arg("run").arg(file).arg("--timeout").arg("60");
        if let Some(p) = &params {
            cmd.arg("--params").arg(p.to_string());
        }
        let started = Instant::now();
        let out = cmd
            .env_clear()
            .env("HOME", config.path())
            .env("NODETOOL_CONFIG_DIR", config.path())
            .env("ENV", "test")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("run nodetool");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if started.elapsed() > Duration::from_secs(90) {
            problems.push(format!("{name}: took {:?}", started.elapsed()));
        }
        let all = format!("{stdout}{stderr}");
        if all.contains("unknown node type") || all.contains("panicked") {
            problems.push(format!("{name}: {all}"));
            continue;
        }
        match out.status.code() {
            Some(0) => {
                outcomes[0] += 1;
                if !matches!(serde_json::from_str::<Value>(&stdout), Ok(Value::Object(_))) {
                    problems.push(format!("{name}: exit 0 without a JSON result: {stdout}"));
                }
            }
            _ if params.is_some() => {
                problems.push(format!("{name} must complete: {stderr}"));
            }
            _ if stderr.contains("workflow.validate") => {
                outcomes[1] += 1;
                for line in stderr.lines().filter(|l| l.trim_start().starts_with("- ")) {
                    if !CONFIGURE.iter().any(|w| line.contains(w)) {
                        problems.push(format!(
                            "{name}: a problem that names nothing to configure: {line}"
                        ));
                    }
                }
            }
            _ => {
                // A node's own failure at run time (e.g. a URL that cannot be reached here):
                // it must name the node.
                outcomes[2] += 1;
                if !stderr.contains("error: node ") {
                    problems.push(format!("{name}: unclear failure: {stderr}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "bundled examples: {} completed, {} need configuration, {} failed at run time",
        outcomes[0], outcomes[1], outcomes[2]
    );
}
