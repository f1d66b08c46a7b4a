//! Where settings come from: the process environment and the config directory. Keeping these as a
//! plain value lets tests load settings from a fake environment and a temporary directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use nodetool_core::{Error, ErrorKind, Result};

/// The inputs of [`crate::Settings::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Environment variables (name → value).
    pub env: BTreeMap<String, String>,
    /// Folder holding `settings.yaml` and `secrets.yaml`, and the default home of data files.
    pub config_dir: PathBuf,
}

impl Sources {
    pub fn new(env: BTreeMap<String, String>, config_dir: impl Into<PathBuf>) -> Self {
        Self {
            env,
            config_dir: config_dir.into(),
        }
    }

    /// Reads the real process environment. This and [`crate::Settings::load`] are the only places
    /// in the workspace that look at the environment or the config files.
    pub fn from_process() -> Result<Self> {
        // Variables that are not valid UTF-8 cannot be settings; skip them rather than panic.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::from_env(env)
    }

    /// Takes the config directory from `NODETOOL_CONFIG_DIR` in `env`, else `$HOME/.config/nodetool`.
    pub fn from_env(env: BTreeMap<String, String>) -> Result<Self> {
        let config_dir = config_dir_from(&env).ok_or_else(|| {
            Error::new(
                ErrorKind::ConfigInvalid,
                "cannot find the config directory: set NODETOOL_CONFIG_DIR or HOME",
            )
            .with_operation("config.load")
        })?;
        Ok(Self { env, config_dir })
    }

    pub fn settings_path(&self) -> PathBuf {
        self.config_dir.join(SETTINGS_FILE)
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.config_dir.join(SECRETS_FILE)
    }
}

pub const SETTINGS_FILE: &str = "settings.yaml";
pub const SECRETS_FILE: &str = "secrets.yaml";
pub const CONFIG_DIR_VAR: &str = "NODETOOL_CONFIG_DIR";

fn config_dir_from(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(dir) = non_empty(env, CONFIG_DIR_VAR) {
        return Some(PathBuf::from(dir));
    }
    home_from(env).map(|home| home.join(".config").join("nodetool"))
}

pub(crate) fn home_from(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    non_empty(env, "HOME")
        .or_else(|| non_empty(env, "USERPROFILE"))
        .map(PathBuf::from)
}

fn non_empty<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SettingSource {
    Env,
    SecretsFile(PathBuf),
    SettingsFile(PathBuf),
    Default,
}

impl SettingSource {
    /// A short label for tables: `env`, `secrets.yaml`, `settings.yaml` or `default`.
    pub fn label(&self) -> &'static str {
        match self {
            SettingSource::Env => "env",
            SettingSource::SecretsFile(_) => SECRETS_FILE,
            SettingSource::SettingsFile(_) => SETTINGS_FILE,
            SettingSource::Default => "default",
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            SettingSource::SecretsFile(p) | SettingSource::SettingsFile(p) => Some(p),
            SettingSource::Env | SettingSource::Default => None,
        }
    }
}

/// Reads as the end of "X=1 from ...": `the environment`, the file's path, or `the default`.
impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingSource::Env => f.write_str("the environment"),
            SettingSource::SecretsFile(p) | SettingSource::SettingsFile(p) => {
                write!(f, "{}", p.display())
            }
            SettingSource::Default => f.write_str("the default"),
        }
    }
}

/// Reads a flat `KEY: value` YAML file. A missing file is an empty map; scalars are stringified;
/// null, empty and whitespace-only values are left out (they count as unset).
pub(crate) fn read_yaml_map(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("cannot read {}", path.display()),
            )
            .with_operation("config.load")
            .with_context("path", path.display())
            .with_source(e))
        }
    };
    parse_yaml_map(&text, path)
}

fn parse_yaml_map(text: &str, path: &Path) -> Result<BTreeMap<String, String>> {
    use serde_yaml::Value;
    let invalid = |msg: String| {
        Error::new(ErrorKind::ConfigInvalid, msg)
            .with_operation("config.load")
            .with_context("path", path.display())
    };
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|e| invalid(format!("cannot parse {} as YAML", path.display())).with_source(e))?;
    let mapping = match doc {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(m) => m,
        _ => {
            return Err(invalid(format!(
                "{} must be a map of KEY: value lines",
                path.display()
            )))
        }
    };
    let mut out = BTreeMap::new();
    for (key, value) in mapping {
        let key = scalar(&key).ok_or_else(|| {
            invalid(format!(
                "{} has a key that is not a plain name",
                path.display()
            ))
        })?;
        let value = match value {
            Value::Null => continue,
            other => scalar(&other).ok_or_else(|| {
                invalid(format!(
                    "{key} in {} must be a single value, not a list or map",
                    path.display()
                ))
            })?,
        };
        let value = value.trim();
        if !value.is_empty() {
            out.insert(key, value.to_string());
        }
    }
    Ok(out)
}

fn scalar(value: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn config_dir_prefers_override_then_home() {
        let s =
            Sources::from_env(env(&[("HOME", "/home/u"), (CONFIG_DIR_VAR, "/etc/nt")])).unwrap();
        assert_eq!(s.config_dir, PathBuf::from("/etc/nt"));
        let s = Sources::from_env(env(&[("HOME", "/home/u"), (CONFIG_DIR_VAR, "")])).unwrap();
        assert_eq!(s.config_dir, PathBuf::from("/home/u/.config/nodetool"));
        assert_eq!(
            s.settings_path(),
            PathBuf::from("/home/u/.config/nodetool/settings.yaml")
        );
        let err = Sources::from_env(env(&[])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("NODETOOL_CONFIG_DIR"), "{err}");
    }

    #[test]
    fn yaml_scalars_are_stringified_and_empties_dropped() {
        let text = "A: text\nB: 11211\nC: true\nD: 1.5\nE:\nF: ''\nG: '  '\n7: seven\n";
        let map = parse_yaml_map(text, Path::new("/x/settings.yaml")).unwrap();
        assert_eq!(
            map,
            env(&[
                ("A", "text"),
                ("B", "11211"),
                ("C", "true"),
                ("D", "1.5"),
                ("7", "seven")
            ])
        );
        assert!(parse_yaml_map("", Path::new("/x")).unwrap().is_empty());
        assert!(parse_yaml_map("# only a comment\n", Path::new("/x"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn yaml_errors_name_the_file() {
        let path = Path::new("/cfg/settings.yaml");
        for text in [
            "A: [1, 2]\n",
            "A: {b: 1}\n",
            "- a\n- b\n",
            "just a string\n",
            "A: 1\nA: 2\n",
            "A: 'unterminated\n",
            "[1]: x\n",
        ] {
            let err = parse_yaml_map(text, path).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{text:?}");
            assert!(
                err.to_string().contains("/cfg/settings.yaml"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn source_reads_well_in_a_sentence() {
        assert_eq!(SettingSource::Env.to_string(), "the environment");
        assert_eq!(
            SettingSource::SettingsFile("/c/settings.yaml".into()).to_string(),
            "/c/settings.yaml"
        );
        assert_eq!(
            SettingSource::SecretsFile("/c/secrets.yaml".into()).label(),
            "secrets.yaml"
        );
        assert_eq!(SettingSource::Default.label(), "default");
    }
}
