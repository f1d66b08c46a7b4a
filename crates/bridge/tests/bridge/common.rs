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
pub fn fake_python(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python");
    std::fs::write(&path, script).expect("write fake python");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

pub fn shared<T>(v: T) -> Arc<T> {
    Arc::new(v)
}
