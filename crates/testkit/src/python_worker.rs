//! The real Python worker for bridge tests: a venv with `nodetool-core` from PyPI (cached by
//! version under `~/.cache/nodetool-test/`, as `scripts/test` creates it) and the test node pack
//! in `fixtures/python` (`nodetool.nodes.bridgetest`).
//!
//! [`require`] finds the venv, or creates it once (`python3 -m venv` + `pip install`) when it is
//! missing and pip can reach PyPI; when neither works the test is skipped loudly, or fails under
//! `NODETOOL_TEST_REQUIRE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The worker package version the tests speak to.
pub const NODETOOL_CORE_VERSION: &str = "0.8.2";

/// The interpreter and the node pack path for one test.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// The venv's `bin/python`: the value for `NODETOOL_PYTHON`.
    pub python: PathBuf,
    /// The folder holding `nodetool/nodes/bridgetest`: the value for `PYTHONPATH`.
    pub packs: PathBuf,
}

impl PythonEnv {
    /// `PATH`, `HOME` and `PYTHONPATH` for a worker: what a test's bridge config needs.
    pub fn worker_env(&self) -> std::collections::BTreeMap<String, String> {
        let mut env = std::collections::BTreeMap::new();
        env.insert("PYTHONPATH".to_owned(), self.packs.display().to_string());
        for k in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(k) {
                env.insert(k.to_owned(), v);
            }
        }
        env
    }
}

/// The test node pack folder (on `PYTHONPATH` it provides `bridgetest.*` node types).
pub fn packs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")
}

/// `$NODETOOL_TEST_CACHE`, else `~/.cache/nodetool-test`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("NODETOOL_TEST_CACHE") {
        return Some(PathBuf::from(dir));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| PathBuf::from(h).join(".cache/nodetool-test"))
}

/// Where the venv for [`NODETOOL_CORE_VERSION`] lives.
pub fn venv_dir() -> Option<PathBuf> {
    cache_dir().map(|d| d.join(format!("venv-nodetool-core-{NODETOOL_CORE_VERSION}")))
}

/// Written once the venv is complete: a half-made venv (an interrupted pip) is rebuilt.
const READY_MARKER: &str = ".nodetool-ready";

fn usable(venv: &Path) -> bool {
    venv.join(READY_MARKER).exists() && venv.join("bin/python").exists()
}

fn create(venv: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(venv);
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "-q",
            &format!("nodetool-core=={NODETOOL_CORE_VERSION}"),
        ]),
        "pip install nodetool-core",
    )?;
    std::fs::write(venv.join(READY_MARKER), NODETOOL_CORE_VERSION)
        .map_err(|e| format!("marking the venv ready: {e}"))
}

static CREATING: Mutex<()> = Mutex::new(());

/// The venv's interpreter, creating the venv when it is missing. `Err` says why there is none.
pub fn python() -> Result<PathBuf, String> {
    let venv = venv_dir().ok_or("no HOME to put the test venv under")?;
    let _guard = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    if !usable(&venv) {
        eprintln!(
            "creating {} (nodetool-core=={NODETOOL_CORE_VERSION} from PyPI; scripts/test does this up front)",
            venv.display()
        );
        create(&venv)?;
    }
    Ok(venv.join("bin/python"))
}

/// The Python env for `test`, or `None` after a loud skip (a failure under
/// `NODETOOL_TEST_REQUIRE=1`).
pub fn require(test: &str) -> Option<PythonEnv> {
    match python() {
        Ok(python) => Some(PythonEnv {
            python,
            packs: packs_dir(),
        }),
        Err(why) => {
            crate::skip_or_fail(
                test,
                &format!("no Python with nodetool-core=={NODETOOL_CORE_VERSION}: {why}"),
            );
            None
        }
    }
}
