//! `Settings::reload_server_auth_tokens`: re-reading the files for a token rotation, with the
//! environment captured at load.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use nodetool_config::{SettingSource, Settings, Sources, SECRETS_FILE, SETTINGS_FILE};
use nodetool_core::ErrorKind;

fn load(dir: &std::path::Path, env: &[(&str, &str)]) -> Settings {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(&Sources::new(env, dir)).unwrap()
}

#[test]
fn picks_up_a_rewritten_secrets_file() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join(SECRETS_FILE);
    std::fs::write(&secrets, "SERVER_AUTH_TOKEN: old-token\n").unwrap();
    let settings = load(dir.path(), &[]);
    assert_eq!(settings.server_auth_tokens(), vec!["old-token"]);

    std::fs::write(&secrets, "SERVER_AUTH_TOKEN: new-token, older-token \n").unwrap();
    let (tokens, source) = settings.reload_server_auth_tokens().unwrap();
    assert_eq!(tokens, vec!["new-token", "older-token"]);
    assert_eq!(source, SettingSource::SecretsFile(secrets.clone()));
    // The loaded value itself is not changed.
    assert_eq!(settings.server_auth_tokens(), vec!["old-token"]);

    std::fs::remove_file(&secrets).unwrap();
    let (tokens, source) = settings.reload_server_auth_tokens().unwrap();
    assert!(tokens.is_empty(), "{tokens:?}");
    assert_eq!(source, SettingSource::Default);
}

#[test]
fn precedence_is_the_same_as_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(SETTINGS_FILE),
        "SERVER_AUTH_TOKEN: from-settings\n",
    )
    .unwrap();
    let settings = load(dir.path(), &[]);
    std::fs::write(
        dir.path().join(SECRETS_FILE),
        "SERVER_AUTH_TOKEN: from-secrets\n",
    )
    .unwrap();
    let (tokens, source) = settings.reload_server_auth_tokens().unwrap();
    assert_eq!(
        tokens,
        vec!["from-secrets"],
        "secrets.yaml beats settings.yaml"
    );
    assert_eq!(source.label(), SECRETS_FILE);

    // A value from the environment keeps winning: the files cannot override it.
    let with_env = load(dir.path(), &[("SERVER_AUTH_TOKEN", "from-env")]);
    std::fs::write(dir.path().join(SECRETS_FILE), "SERVER_AUTH_TOKEN: other\n").unwrap();
    let (tokens, source) = with_env.reload_server_auth_tokens().unwrap();
    assert_eq!(tokens, vec!["from-env"]);
    assert_eq!(source, SettingSource::Env);
}

#[test]
fn a_broken_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = load(dir.path(), &[]);
    let secrets = dir.path().join(SECRETS_FILE);
    std::fs::write(&secrets, "SERVER_AUTH_TOKEN: [a, b]\n").unwrap();
    let err = settings.reload_server_auth_tokens().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(
        err.to_string().contains(&secrets.display().to_string()),
        "{err}"
    );
}
