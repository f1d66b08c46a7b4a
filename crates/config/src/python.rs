//! The Python node bridge's settings, in one block: which interpreter runs NodeTool Python node
//! packs (`NODETOOL_PYTHON`; unset means no bridge), how many workers, the frame cap, and the
//! startup and health timeouts. `nodetool_bridge` reads none of this itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nodetool_core::Result;

/// The settings of this block, in registry order.
pub const PYTHON_SETTINGS: &[&str] = &[
    "NODETOOL_PYTHON",
    "NODETOOL_PYTHON_WORKERS",
    "NODETOOL_BRIDGE_MAX_FRAME_SIZE",
    "NODETOOL_PYTHON_STARTUP_TIMEOUT",
    "NODETOOL_PYTHON_HEALTH_TIMEOUT",
];

/// The Python bridge's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSettings {
    /// The interpreter that has nodetool-core and the node packs; `None`: no Python nodes.
    pub interpreter: Option<PathBuf>,
    /// Worker processes (each runs many nodes at once).
    pub workers: usize,
    /// Largest bridge frame either way, in bytes (the worker reads the same variable).
    pub max_frame_bytes: u64,
    /// From spawning a worker to its `discover` answer.
    pub startup_timeout: Duration,
    /// How long a busy worker may take to answer a health check before it is restarted.
    pub health_timeout: Duration,
}

impl PythonSettings {
    /// This block alone, from an environment map and no files: what a subprocess job's worker
    /// reads, given the variables [`PythonSettings::to_env`] made for it.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<PythonSettings> {
        let mine: BTreeMap<String, String> = env
            .iter()
            .filter(|(k, _)| PYTHON_SETTINGS.contains(&k.as_str()) || k.as_str() == "HOME")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // No config directory: only the variables count.
        let sources = crate::Sources::new(mine, "/nonexistent/nodetool-config");
        Ok(crate::Settings::load(&sources)?.python)
    }

    /// The variables that carry these settings to a child process (unset ones are left out).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(p) = &self.interpreter {
            out.push(("NODETOOL_PYTHON".to_owned(), p.display().to_string()));
        }
        out.push((
            "NODETOOL_PYTHON_WORKERS".to_owned(),
            self.workers.to_string(),
        ));
        out.push((
            "NODETOOL_BRIDGE_MAX_FRAME_SIZE".to_owned(),
            self.max_frame_bytes.to_string(),
        ));
        out.push((
            "NODETOOL_PYTHON_STARTUP_TIMEOUT".to_owned(),
            self.startup_timeout.as_secs().max(1).to_string(),
        ));
        out.push((
            "NODETOOL_PYTHON_HEALTH_TIMEOUT".to_owned(),
            self.health_timeout.as_secs().max(1).to_string(),
        ));
        out
    }
}
