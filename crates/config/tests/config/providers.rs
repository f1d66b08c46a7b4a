//! The AI provider block: NodeTool's names, secrets flagged (masked in `settings show` and
//! `Debug`), defaults, typed HTTP knobs, model overrides.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use nodetool_config::{registry, Settings, Sources, PROVIDER_SETTINGS};

fn load(env: &[(&str, &str)]) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::load(&Sources::new(env, dir.path())).unwrap()
}

#[test]
fn provider_settings_are_registered_with_nodetool_names_and_keys_are_secret() {
    for name in PROVIDER_SETTINGS {
        let def = registry().iter().find(|d| d.name == *name);
        assert!(def.is_some(), "{name} is registered");
        assert_eq!(def.unwrap().secret, name.ends_with("_KEY"), "{name}");
    }
    let key = "sk-abcdefghijklmnop-SECRET";
    let s = load(&[("OPENAI_API_KEY", key), ("ANTHROPIC_API_KEY", key)]);
    let e = s.entry("OPENAI_API_KEY").unwrap();
    assert!(e.secret);
    assert!(!e.display_value(false).unwrap().contains(key));
    assert!(!format!("{s:?}").contains(key), "Debug masks keys");
    let v = s.provider_values();
    assert_eq!(v.values["OPENAI_API_KEY"], key);
    assert!(!format!("{v:?}").contains(key), "Debug lists names only");
    // Defaults come along; unset settings do not.
    assert_eq!(v.values["OLLAMA_API_URL"], "http://127.0.0.1:11434");
    assert!(!v.values.contains_key("LLAMA_CPP_URL"));
    assert_eq!(v.connect_timeout, Duration::from_secs(10));
    assert_eq!(v.idle_timeout, Duration::from_secs(120));
    assert_eq!(v.max_retries, 2);
    assert_eq!(v.max_response_bytes, 64 * 1024 * 1024);
}

#[test]
fn provider_knobs_parse_and_bad_urls_are_refused() {
    let s = load(&[
        ("LLAMA_CPP_URL", "http://127.0.0.1:8080/"),
        ("NODETOOL_AI_IDLE_TIMEOUT", "5s"),
        ("NODETOOL_AI_MAX_RETRIES", "0"),
        ("NODETOOL_AI_MAX_RESPONSE_BYTES", "1m"),
        (
            "NODETOOL_MODEL_OVERRIDE",
            "language_model=llama_cpp:tiny, image_model=openai:gpt-image-1",
        ),
    ]);
    let v = s.provider_values();
    assert_eq!(v.values["LLAMA_CPP_URL"], "http://127.0.0.1:8080/");
    assert_eq!(v.idle_timeout, Duration::from_secs(5));
    assert_eq!(v.max_retries, 0);
    assert_eq!(v.max_response_bytes, 1024 * 1024);
    assert_eq!(
        v.model_overrides,
        [
            "language_model=llama_cpp:tiny",
            "image_model=openai:gpt-image-1"
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> =
        [("OLLAMA_API_URL".to_owned(), "not a url".to_owned())].into();
    let err = Settings::load(&Sources::new(env, dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("OLLAMA_API_URL"), "{err}");
}
