//! `nodetool run` with AI nodes: `--model-override` retargets a saved workflow, keys come from
//! the settings, a missing key is refused before the job starts, `settings show` masks keys.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use nodetool_testkit::openai_peer::OpenAiPeer;
use nodetool_testkit::scripted::Reply;
use serde_json::json;

const KEY: &str = "sk-cli-test-KEY-777";

fn nodetool(dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodetool"))
        .args(args)
        .env_clear()
        .env("HOME", dir)
        .env("NODETOOL_CONFIG_DIR", dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn workflow(dir: &std::path::Path) -> std::path::PathBuf {
    let wf = json!({"id": "wf", "name": "agent", "graph": {"nodes": [
        {"id": "a", "type": "nodetool.agents.Agent", "data": {"model": {"type": "language_model"}, "prompt": "hi"}},
        {"id": "o", "type": "nodetool.output.Output", "data": {"name": "answer"}}],
        "edges": [{"id": "e", "source": "a", "sourceHandle": "text", "target": "o", "targetHandle": "value"}]}});
    let path = dir.join("agent.json");
    std::fs::write(&path, wf.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn run_retargets_models_and_names_missing_keys() {
    let peer = OpenAiPeer::start(&["gpt-test"]).await;
    peer.script().set_default(Reply::text("Hi from the peer."));
    let dir = tempfile::tempdir().unwrap();
    let file = workflow(dir.path());
    let file = file.to_str().unwrap();
    let base = peer.base_url();
    let vars = [("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", KEY)];

    // Without a model the job is refused before it starts, pointing at --model-override.
    let out = tokio::task::spawn_blocking({
        let (d, f) = (dir.path().to_owned(), file.to_owned());
        move || nodetool(&d, &["run", &f], &[])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Select a model") && err.contains("--model-override"),
        "{err}"
    );

    // The flag retargets the saved file's empty model ref.
    let out = tokio::task::spawn_blocking({
        let (d, f) = (dir.path().to_owned(), file.to_owned());
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move || {
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            nodetool(
                &d,
                &[
                    "run",
                    &f,
                    "--model-override",
                    "language_model=openai:gpt-test",
                ],
                &vars,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["answer"], json!(["Hi from the peer."]));
    assert_eq!(
        peer.script().received()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    // The setting does the same; a provider without its key is named.
    let out = tokio::task::spawn_blocking({
        let (d, f) = (dir.path().to_owned(), file.to_owned());
        move || {
            nodetool(
                &d,
                &["run", &f],
                &[(
                    "NODETOOL_MODEL_OVERRIDE",
                    "language_model=anthropic:claude-x",
                )],
            )
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");

    // settings show masks the key.
    let out = nodetool(dir.path(), &["settings", "show", "--secrets"], &vars);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
}
