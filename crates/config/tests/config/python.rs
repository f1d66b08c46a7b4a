//! The Python bridge's settings block: defaults, parsing, bad values, and the round trip through
//! a child's environment.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nodetool_config::{PythonSettings, Settings, Sources, PYTHON_SETTINGS};

fn load(vars: &[(&str, &str)]) -> nodetool_core::Result<Settings> {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::load(&Sources::new(env, dir.path()))
}

#[test]
fn defaults_mean_no_bridge() {
    let p = load(&[]).unwrap().python;
    assert_eq!(p.interpreter, None);
    assert_eq!(p.workers, 1);
    assert_eq!(p.max_frame_bytes, 256 * 1024 * 1024);
    assert_eq!(p.startup_timeout, Duration::from_secs(60));
    assert_eq!(p.health_timeout, Duration::from_secs(30));
}

#[test]
fn values_parse_and_show_in_settings() {
    let s = load(&[
        ("HOME", "/home/u"),
        ("NODETOOL_PYTHON", "~/venv/bin/python"),
        ("NODETOOL_PYTHON_WORKERS", "3"),
        ("NODETOOL_BRIDGE_MAX_FRAME_SIZE", "64m"),
        ("NODETOOL_PYTHON_HEALTH_TIMEOUT", "2m"),
    ])
    .unwrap();
    assert_eq!(
        s.python.interpreter,
        Some(PathBuf::from("/home/u/venv/bin/python"))
    );
    assert_eq!(s.python.workers, 3);
    assert_eq!(s.python.max_frame_bytes, 64 * 1024 * 1024);
    assert_eq!(s.python.health_timeout, Duration::from_secs(120));
    for name in PYTHON_SETTINGS {
        let e = s.entry(name).unwrap();
        assert!(!e.secret, "{name} is not a secret");
    }
}

#[test]
fn bad_values_name_the_setting() {
    for (k, v) in [
        ("NODETOOL_PYTHON_WORKERS", "0"),
        ("NODETOOL_BRIDGE_MAX_FRAME_SIZE", "1k"),
        ("NODETOOL_BRIDGE_MAX_FRAME_SIZE", "8g"),
        ("NODETOOL_PYTHON_STARTUP_TIMEOUT", "soon"),
    ] {
        let err = load(&[(k, v)]).unwrap_err().to_string();
        assert!(err.contains(k), "{k}={v}: {err}");
    }
}

#[test]
fn a_child_reads_the_block_from_the_variables_it_was_given() {
    let s = load(&[
        ("NODETOOL_PYTHON", "/opt/py/bin/python"),
        ("NODETOOL_PYTHON_WORKERS", "2"),
    ])
    .unwrap();
    let mut env: BTreeMap<String, String> = s.python.to_env().into_iter().collect();
    // Anything else in the child's environment is ignored.
    env.insert("OPENAI_API_KEY".into(), "sk-x".into());
    let back = PythonSettings::from_env(&env).unwrap();
    assert_eq!(back, s.python);
    assert_eq!(
        PythonSettings::from_env(&BTreeMap::new())
            .unwrap()
            .interpreter,
        None
    );
}
