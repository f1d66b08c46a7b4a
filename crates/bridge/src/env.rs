//! The Python worker's environment: built from an allow-list, never inherited whole.
//!
//! Secrets never go into it: a node's API keys travel per request, and only the keys it declares
//! in `required_settings` ([`crate::node`]). This matters doubly because the worker's
//! `get_secret` falls back to `os.environ`.

use std::collections::BTreeMap;

/// Variables the worker may inherit: search paths, locale, the Python environment it runs in,
/// model caches and device selection. Nothing that configures storage, databases or auth.
pub const WORKER_ENV_ALLOW_LIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    // Where the interpreter finds node packs.
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    // Which namespaces the worker loads (nodetool-core's own variable).
    "NODETOOL_WORKER_NAMESPACES",
    "NODETOOL_BRIDGE_BLOB_CHUNK_SIZE",
    // Model caches and offline switches.
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "TRANSFORMERS_OFFLINE",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    // Devices and threads.
    "CUDA_VISIBLE_DEVICES",
    "PYTORCH_ENABLE_MPS_FALLBACK",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    // TLS roots for packs that call HTTPS APIs.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
];

/// Whether a variable name looks like a credential: a second line of defence should the list
/// ever grow.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL"]
        .iter()
        .any(|w| n.contains(w))
}

/// The worker's environment: the allow-listed variables of `env`, minus `secret_names` (the
/// settings registry's secrets) and anything secret-looking, plus the frame cap (so the worker
/// enforces the same one) and unbuffered output (so its stderr lines arrive as written).
pub fn worker_env(
    env: &BTreeMap<String, String>,
    secret_names: &[&str],
    max_frame_bytes: usize,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| WORKER_ENV_ALLOW_LIST.contains(&k.as_str()))
        .filter(|(k, _)| !secret_names.contains(&k.as_str()) && !looks_secret(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(
        "NODETOOL_BRIDGE_MAX_FRAME_SIZE".to_owned(),
        max_frame_bytes.to_string(),
    );
    out.insert("PYTHONUNBUFFERED".to_owned(), "1".to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_non_secret_variables_pass() {
        let env: BTreeMap<String, String> = [
            ("PATH", "/usr/bin"),
            ("PYTHONPATH", "/packs"),
            ("OPENAI_API_KEY", "sk-1"),
            ("HF_TOKEN", "hf_1"),
            ("S3_SECRET_ACCESS_KEY", "x"),
            ("SUPABASE_URL", "https://x"),
            ("HOME", "/home/u"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let out = worker_env(&env, &["HOME"], 1024);
        assert_eq!(out.get("PATH").map(String::as_str), Some("/usr/bin"));
        assert_eq!(out.get("PYTHONPATH").map(String::as_str), Some("/packs"));
        assert_eq!(
            out.get("NODETOOL_BRIDGE_MAX_FRAME_SIZE")
                .map(String::as_str),
            Some("1024")
        );
        for gone in [
            "OPENAI_API_KEY",
            "HF_TOKEN",
            "S3_SECRET_ACCESS_KEY",
            "SUPABASE_URL",
            "HOME",
        ] {
            assert!(!out.contains_key(gone), "{gone} leaked");
        }
    }
}
