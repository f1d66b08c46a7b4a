//! Every engine fixture (`crates/nodes/tests/fixtures/`) through the `nodetool run` binary: the
//! printed result JSON (or, for failing cases, the exit code and the error on stderr) must match
//! the expected file. Pixels of image outputs are checked by the engine's `fixtures` test; here
//! the run uses in-memory storage (ENV=test), so an image output is checked to be an image ref.

use nodetool_testkit::fixtures as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nodes/tests/fixtures")
}

fn nodetool_run(
    config_dir: &Path,
    workflow: &Path,
    params: &Map<String, Value>,
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
    cmd.arg("run").arg(workflow).arg("--no-cache");
    if !params.is_empty() {
        cmd.arg("--params")
            .arg(Value::Object(params.clone()).to_string());
    }
    cmd.env_clear()
        .env("HOME", config_dir)
        .env("NODETOOL_CONFIG_DIR", config_dir)
        .env("ENV", "test")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run nodetool")
}

#[test]
fn nodetool_run_prints_every_fixture_result() {
    let cases = support::cases(&fixtures_root());
    assert!(
        cases.len() >= 30,
        "expected the fixture set under {}, found {} case(s)",
        fixtures_root().display(),
        cases.len()
    );
    let config = tempfile::tempdir().expect("tempdir");

    let mut problems = Vec::new();
    for case in &cases {
        let out = nodetool_run(config.path(), &case.workflow, &case.params());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (status, result) = match out.status.code() {
            Some(0) => match serde_json::from_str::<Value>(&stdout) {
                Ok(Value::Object(m)) => ("completed", m),
                _ => {
                    problems.push(format!(
                        "{}: exit 0 but stdout is not a JSON object: {stdout}",
                        case.name
                    ));
                    continue;
                }
            },
            Some(1) => ("failed", Map::new()),
            other => {
                problems.push(format!(
                    "{}: unexpected exit {other:?}; stderr: {stderr}",
                    case.name
                ));
                continue;
            }
        };
        problems.extend(case.compare(status, &result, &stderr));
        for (name, _) in case.image_outputs() {
            for item in result
                .get(&name)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if item["type"] != "image" || !item["uri"].is_string() {
                    problems.push(format!(
                        "{}: output `{name}` is not an image ref: {item}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatch(es) over {} `nodetool run` fixture runs:\n  - {}",
        problems.len(),
        cases.len(),
        problems.join("\n  - ")
    );
}
