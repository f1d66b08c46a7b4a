//! Shared by the bridge tests: the real worker's config, engines with native and Python nodes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use nodetool_bridge::{BridgeConfig, PythonBridge};
use nodetool_testkit::python_worker::{self, PythonEnv};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The real worker with the test node pack, or `None` after a loud skip.
pub fn python(test: &str) -> Option<PythonEnv> {
    init_tracing();
    python_worker::require(test)
}

pub fn config(env: &PythonEnv) -> BridgeConfig {
    let mut cfg = BridgeConfig::new(&env.python);
    cfg.env = nodetool_bridge::env::worker_env(&env.worker_env(), &[], cfg.max_frame_bytes);
    cfg.health_interval = Duration::from_millis(200);
    cfg.restart_backoff = Duration::from_millis(50);
    cfg
}

pub async fn bridge(env: &PythonEnv) -> PythonBridge {
    PythonBridge::start(config(env))
        .await
        .expect("start the python bridge")
}

/// Writes `script` as an executable `python`-named wrapper in `dir` (a fake interpreter).
///
/// A child process writes it: had this process held the file open for writing, a child that
/// another test thread forked in that moment would inherit the descriptor until its exec, and
/// starting the script would fail with ETXTBSY ("Text file busy").
pub fn fake_python(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("python");
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("start sh to write the fake python");
    writer
        .stdin
        .take()
        .expect("its stdin")
        .write_all(script.as_bytes())
        .expect("write the fake python");
    assert!(
        writer.wait().expect("sh").success(),
        "writing {path:?} failed"
    );
    path
}

pub fn shared<T>(v: T) -> Arc<T> {
    Arc::new(v)
}
