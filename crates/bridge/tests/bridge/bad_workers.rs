//! Interpreters that are not a (usable) NodeTool worker: each is a clear error, never a hang or
//! a panic. The misbehaving workers are `fixtures/fake_worker.py` run by the test venv's
//! interpreter; the old-protocol one is the real worker with its version patched down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nodetool_bridge::{BridgeConfig, ExecEvent, ExecuteRequest, PythonBridge};
use nodetool_core::{Error, ErrorKind};
use nodetool_testkit::python_worker::PythonEnv;

fn fake_worker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_worker.py")
}

/// A `python` that runs the fake worker in `mode` whatever its arguments.
fn fake(env: &PythonEnv, dir: &Path, mode: &str) -> BridgeConfig {
    let python = common::fake_python(
        dir,
        &format!(
            "#!/bin/sh\nexec {} {} {mode}\n",
            env.python.display(),
            fake_worker_script().display()
        ),
    );
    let mut cfg = common::config(env);
    cfg.python = python;
    cfg.startup_timeout = Duration::from_secs(5);
    cfg
}

async fn start_err(cfg: BridgeConfig) -> Error {
    tokio::time::timeout(Duration::from_secs(60), PythonBridge::start(cfg))
        .await
        .expect("start hung")
        .expect_err("start must fail")
}

async fn run_err(cfg: BridgeConfig) -> Error {
    let bridge = PythonBridge::start(cfg).await.expect("the fake handshakes");
    let req = ExecuteRequest {
        node_type: "fake.Node".into(),
        label: "node `n1` (fake.Node)".into(),
        max_result_blob_bytes: 1 << 20,
        ..Default::default()
    };
    let mut exec = bridge.execute(&req).await.expect("sent");
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match exec.next().await {
                Ok(Some(ExecEvent::Result(_))) | Ok(None) => {
                    panic!("the broken reply was accepted")
                }
                Ok(Some(_)) => continue,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("execute hung")
}

#[tokio::test]
async fn a_missing_interpreter_says_which_setting() {
    common::init_tracing();
    let cfg = BridgeConfig::new("/nonexistent/bin/python3");
    let err = start_err(cfg).await;
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    let text = err.to_string();
    assert!(
        text.contains("NODETOOL_PYTHON=/nonexistent/bin/python3"),
        "{text}"
    );
    assert!(text.contains("no such file"), "{text}");
}

#[tokio::test]
async fn an_interpreter_without_nodetool_core_says_to_install_it() {
    let Some(env) = common::python("an_interpreter_without_nodetool_core") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // -S: no site-packages, so no nodetool.
    let python = common::fake_python(
        dir.path(),
        &format!("#!/bin/sh\nexec {} -S \"$@\"\n", env.python.display()),
    );
    let mut cfg = common::config(&env);
    cfg.python = python;
    let text = start_err(cfg).await.to_string();
    assert!(text.contains("No module named"), "{text}");
    assert!(text.contains("pip install nodetool-core"), "{text}");
}

#[tokio::test]
async fn a_program_printing_garbage_on_stdout_is_refused() {
    let Some(env) = common::python("a_program_printing_garbage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = start_err(fake(&env, dir.path(), "garbage"))
        .await
        .to_string();
    assert!(text.contains("broke the frame protocol"), "{text}");
}

#[tokio::test]
async fn a_program_that_never_gets_ready_times_out() {
    let Some(env) = common::python("a_program_that_never_gets_ready") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fake(&env, dir.path(), "never_ready");
    cfg.startup_timeout = Duration::from_millis(1500);
    let text = start_err(cfg).await.to_string();
    assert!(
        text.contains("did not print NODETOOL_STDIO_READY within 1.5s"),
        "{text}"
    );
    assert!(text.contains("loading forever"), "stderr: {text}");
}

#[tokio::test]
async fn an_old_protocol_is_refused_with_an_upgrade_hint() {
    let Some(env) = common::python("an_old_protocol_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let err = start_err(fake(&env, dir.path(), "old")).await;
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let text = err.to_string();
    assert!(
        text.contains("speaks bridge protocol 3, older than the 4"),
        "{text}"
    );
    assert!(text.contains("upgrade nodetool-core"), "{text}");

    // And the real worker, patched to report version 3 before its protocol module loads.
    let patched = common::fake_python(
        dir.path(),
        &format!(
            "#!/bin/sh\nexec {} -c 'import sys, runpy, nodetool.worker as w; w.BRIDGE_PROTOCOL_VERSION = 3; sys.argv = [\"nodetool.worker\", \"--stdio\"]; runpy.run_module(\"nodetool.worker\", run_name=\"__main__\")'\n",
            env.python.display()
        ),
    );
    let mut cfg = common::config(&env);
    cfg.python = patched;
    let text = start_err(cfg).await.to_string();
    assert!(text.contains("speaks bridge protocol 3"), "{text}");
}

#[tokio::test]
async fn a_malformed_discover_reply_is_refused() {
    let Some(env) = common::python("a_malformed_discover_reply") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = start_err(fake(&env, dir.path(), "malformed_discover"))
        .await
        .to_string();
    assert!(text.contains("unreadable frame"), "{text}");
}

#[tokio::test]
async fn broken_replies_fail_the_request_clearly() {
    let Some(env) = common::python("broken_replies_fail_the_request") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (mode, expect) in [
        ("malformed", "sent an unreadable frame"),
        ("unknown_reply", "replied with a `surprise` frame"),
        ("oversized", "exceeds the bridge frame cap"),
        ("bad_sha", "failed its SHA-256 check"),
        ("silent_exit", "exit code 7"),
    ] {
        let err = run_err(fake(&env, dir.path(), mode)).await;
        let text = err.to_string();
        assert!(text.contains(expect), "{mode}: {text}");
        assert!(
            text.contains("node `n1` (fake.Node)"),
            "{mode} names the node: {text}"
        );
    }
}
