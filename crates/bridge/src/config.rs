//! How the bridge starts and supervises its workers. Plain data: the CLI fills it from
//! `nodetool_config::PythonSettings` and builds [`BridgeConfig::env`] with
//! [`crate::env::worker_env`]; this crate reads no environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::frame::DEFAULT_MAX_FRAME_BYTES;

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The interpreter that has nodetool-core and the node packs (`NODETOOL_PYTHON`).
    pub python: PathBuf,
    /// Worker processes (`NODETOOL_PYTHON_WORKERS`). The first starts with the bridge; the others
    /// when every running one is busy. Each worker runs many requests at once.
    pub workers: usize,
    /// The worker's whole environment (it starts from an empty one).
    pub env: BTreeMap<String, String>,
    /// The worker's working directory (`None`: ours).
    pub cwd: Option<PathBuf>,
    /// Largest frame either way (`NODETOOL_BRIDGE_MAX_FRAME_SIZE`; pass the same value in
    /// `env`, which [`crate::env::worker_env`] does, so the worker enforces it too).
    pub max_frame_bytes: usize,
    /// From spawn to a `discover` answer.
    pub startup_timeout: Duration,
    /// How often a worker with requests in flight is asked `worker.status`.
    pub health_interval: Duration,
    /// How long it has to answer before it is considered hung and restarted.
    pub health_timeout: Duration,
    /// stderr lines kept per worker for error messages.
    pub stderr_lines: usize,
    /// Largest result blob accepted over the chunked transfer.
    pub max_result_blob_bytes: u64,
    /// First delay before restarting a worker that died young; doubles per failure.
    pub restart_backoff: Duration,
    /// Longest delay between restarts.
    pub max_restart_backoff: Duration,
}

impl BridgeConfig {
    pub fn new(python: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
            workers: 1,
            env: BTreeMap::new(),
            cwd: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            startup_timeout: Duration::from_secs(60),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(30),
            stderr_lines: 50,
            max_result_blob_bytes: 2 * 1024 * 1024 * 1024,
            restart_backoff: Duration::from_millis(250),
            max_restart_backoff: Duration::from_secs(30),
        }
    }
}
