//! Loading settings from a fake environment and a temporary config directory: precedence,
//! defaults, malformed values, YAML errors, aliases and masking.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodetool_config::{
    mask, registry, AuthProvider, Environment, SettingSource, Settings, Sources, SECRETS_FILE,
    SETTINGS_FILE,
};
use nodetool_core::ErrorKind;

struct Fixture {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: BTreeMap::new(),
        }
    }

    fn env(mut self, pairs: &[(&str, &str)]) -> Self {
        for (k, v) in pairs {
            self.env.insert(k.to_string(), v.to_string());
        }
        self
    }

    fn settings_yaml(self, text: &str) -> Self {
        std::fs::write(self.dir.path().join(SETTINGS_FILE), text).unwrap();
        self
    }

    fn secrets_yaml(self, text: &str) -> Self {
        std::fs::write(self.dir.path().join(SECRETS_FILE), text).unwrap();
        self
    }

    fn sources(&self) -> Sources {
        Sources::new(self.env.clone(), self.dir.path())
    }

    fn load(&self) -> Settings {
        Settings::load(&self.sources()).unwrap()
    }

    fn load_err(&self) -> String {
        let err = Settings::load(&self.sources()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
        err.to_string()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

#[test]
fn defaults_with_no_env_and_no_files() {
    let fx = Fixture::new();
    let s = fx.load();
    assert_eq!(s.env, Environment::Development);
    assert!(!s.is_test() && !s.is_production() && s.is_development());
    assert_eq!(s.asset_bucket, "assets");
    assert_eq!(s.s3_region, "us-east-1");
    assert_eq!(s.s3_timeout, Duration::from_secs(30));
    assert_eq!(s.auth_provider, AuthProvider::Local);
    assert_eq!(s.db_path, fx.path("nodetool.db"));
    assert_eq!(s.config_dir(), fx.dir.path());
    assert_eq!(s.asset_temp_ttl, Duration::from_secs(86_400));
    assert_eq!(s.node_cache_max_bytes, 268_435_456);
    assert_eq!(s.node_cache_ttl, Duration::from_secs(3600));
    assert_eq!(s.uri_cache_ttl, Duration::from_secs(300));
    assert_eq!(
        s.thread_pool_size,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    assert_eq!(s.docker_user, "1000:1000");
    assert_eq!(s.subprocess_warm_workers, 2);
    assert!(!s.enable_terminal_ws);
    assert_eq!(s.memcache_port, None);
    // Docker jobs are limited with no setting at all: the host's CPUs, half its memory up to
    // 8 GiB, 512 processes; and `settings show` prints each default.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(s.docker_cpu_limit, cpus as f64);
    assert_eq!(s.docker_pids_limit, 512);
    let total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let half = (total_kib * 1024 / 2).min(8 << 30);
    assert!(
        s.docker_memory_limit <= half && half - s.docker_memory_limit < 1 << 20,
        "memory default {} for a host of {total_kib} KiB",
        s.docker_memory_limit
    );
    assert_eq!(
        s.docker_memory_limit,
        nodetool_config::docker_defaults().memory_bytes
    );
    for (name, shown) in [
        ("DOCKER_PIDS_LIMIT", "512".to_owned()),
        ("DOCKER_CPU_LIMIT", cpus.to_string()),
        (
            "DOCKER_MEMORY_LIMIT",
            format!("{}m", s.docker_memory_limit >> 20),
        ),
    ] {
        assert_eq!(
            s.entry(name).unwrap().value.as_deref(),
            Some(shown.as_str()),
            "{name}"
        );
    }
    assert_eq!(s.docker_allowed_images, None);
    assert_eq!(s.max_workflow_threads, None);
    assert_eq!(s.job_timeout, None);
    assert!(s.server_auth_tokens().is_empty());
    for e in s.entries() {
        assert_eq!(e.source, SettingSource::Default, "{}", e.name);
    }
}

#[test]
fn entries_follow_the_registry() {
    let fx = Fixture::new().env(&[("S3_ACCESS_KEY_ID", "AKIAEXAMPLEKEY1234")]);
    let s = fx.load();
    let entries = s.entries();
    let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
    let registered: Vec<&str> = registry().iter().map(|d| d.name).collect();
    assert_eq!(names, registered);
    for (e, d) in entries.iter().zip(registry()) {
        assert_eq!(e.secret, d.secret, "{}", e.name);
        assert_eq!(e.description, d.description);
        assert!(!e.description.contains('\n'), "{}: one line", e.name);
    }
    let key = s.entry("S3_ACCESS_KEY_ID").unwrap();
    assert!(key.secret);
    assert_eq!(key.source, SettingSource::Env);
    assert_eq!(key.value.as_deref(), Some("AKIAEXAMPLEKEY1234"));
    assert_eq!(key.display_value(false).as_deref(), Some("****1234"));
    assert_eq!(
        key.display_value(true).as_deref(),
        Some("AKIAEXAMPLEKEY1234")
    );
    // Non-secrets are never masked.
    let region = s.entry("S3_REGION").unwrap();
    assert_eq!(region.display_value(false).as_deref(), Some("us-east-1"));
}

#[test]
fn every_registered_default_is_valid_for_its_type() {
    // Loading with nothing set parses every default; this guards the registry against typos.
    let s = Fixture::new().load();
    let entries = s.entries();
    for d in registry() {
        let e = entries.iter().find(|e| e.name == d.name).unwrap();
        assert_eq!(
            e.value.is_some(),
            d.default != nodetool_config::DefaultValue::None,
            "{}",
            d.name
        );
    }
}

/// Every combination of levels for a few keys: the highest level that sets a key wins.
#[test]
fn precedence_env_then_secrets_then_settings_then_default() {
    let keys = [
        ("S3_REGION", "us-east-1"),
        ("ASSET_BUCKET", "assets"),
        ("MEMCACHE_PORT", ""),
        ("SUPABASE_KEY", ""),
    ];
    for mask_bits in 0..8u8 {
        let (in_env, in_secrets, in_settings) =
            (mask_bits & 1 != 0, mask_bits & 2 != 0, mask_bits & 4 != 0);
        let mut fx = Fixture::new();
        let mut secrets = String::new();
        let mut settings = String::new();
        for (i, (key, _)) in keys.iter().enumerate() {
            // Distinct values per level so the winner is identifiable; ports must parse.
            if in_env {
                fx = fx.env(&[(key, &format!("{}", 1000 + i))]);
            }
            if in_secrets {
                secrets.push_str(&format!("{key}: '{}'\n", 2000 + i));
            }
            if in_settings {
                settings.push_str(&format!("{key}: {}\n", 3000 + i));
            }
        }
        let fx = fx.secrets_yaml(&secrets).settings_yaml(&settings);
        let s = fx.load();
        for (i, (key, default)) in keys.iter().enumerate() {
            let e = s.entry(key).unwrap();
            let (want_value, want_source) = if in_env {
                (Some(format!("{}", 1000 + i)), SettingSource::Env)
            } else if in_secrets {
                (
                    Some(format!("{}", 2000 + i)),
                    SettingSource::SecretsFile(fx.path(SECRETS_FILE)),
                )
            } else if in_settings {
                (
                    Some(format!("{}", 3000 + i)),
                    SettingSource::SettingsFile(fx.path(SETTINGS_FILE)),
                )
            } else {
                (
                    (!default.is_empty()).then(|| default.to_string()),
                    SettingSource::Default,
                )
            };
            assert_eq!(e.value, want_value, "{key} with levels {mask_bits:03b}");
            assert_eq!(e.source, want_source, "{key} with levels {mask_bits:03b}");
        }
        // The typed fields agree with the entries.
        assert_eq!(
            s.memcache_port.map(|p| p.to_string()),
            s.entry("MEMCACHE_PORT").unwrap().value
        );
        assert_eq!(
            Some(s.s3_region.clone()),
            s.entry("S3_REGION").unwrap().value
        );
    }
}

#[test]
fn empty_values_count_as_unset() {
    let fx = Fixture::new()
        .env(&[("S3_REGION", ""), ("ASSET_BUCKET", "   "), ("ENV", "")])
        .secrets_yaml("S3_REGION: ''\nASSET_BUCKET:\n")
        .settings_yaml("S3_REGION: eu-west-1\n");
    let s = fx.load();
    assert_eq!(s.s3_region, "eu-west-1");
    assert_eq!(
        s.source_of("S3_REGION"),
        Some(&SettingSource::SettingsFile(fx.path(SETTINGS_FILE)))
    );
    assert_eq!(s.asset_bucket, "assets");
    assert_eq!(s.source_of("ASSET_BUCKET"), Some(&SettingSource::Default));
    assert_eq!(s.env, Environment::Development);
}

#[test]
fn typed_values_parse() {
    let fx = Fixture::new()
        .env(&[
            ("HOME", "/home/u"),
            ("ENV", "Production"),
            ("AUTH_PROVIDER", "static"),
            ("SERVER_AUTH_TOKEN", "old-token, new-token"),
            ("DOCKER_CPU_LIMIT", "1.5"),
            ("DOCKER_SHM_SIZE", "512m"),
            ("DOCKER_PIDS_LIMIT", "-1"),
            ("DOCKER_GPU_DEVICES", "0, 1"),
            ("DOCKER_IMAGE", "localhost:5000/nodetool-worker:0.1.0"),
            ("ASSET_FOLDER", "~/nt-assets"),
            ("JOB_TIMEOUT_SECONDS", "5m"),
            ("SUBPROCESS_WARM_WORKERS", "0"),
            ("NODETOOL_API_URL", "https://api.example.com/"),
            ("ASSET_DOMAIN", "cdn.example.com/"),
        ])
        .settings_yaml(
            "NODETOOL_ENABLE_TERMINAL_WS: yes\nMAX_WORKFLOW_THREADS: 4\nMEMCACHE_PORT: 11211\n\
             NODE_CACHE_MAX_BYTES: 64m\nTHREAD_POOL_SIZE: 3\n",
        );
    let s = fx.load();
    assert!(s.is_production());
    assert_eq!(s.auth_provider, AuthProvider::Static);
    assert_eq!(s.server_auth_tokens(), vec!["old-token", "new-token"]);
    assert_eq!(s.docker_cpu_limit, 1.5);
    assert_eq!(s.docker_shm_size, Some(512 * 1024 * 1024));
    assert_eq!(s.docker_pids_limit, -1);
    assert_eq!(
        s.docker_gpu_devices,
        Some(vec!["0".to_string(), "1".to_string()])
    );
    assert_eq!(
        s.docker_image.as_deref(),
        Some("localhost:5000/nodetool-worker:0.1.0")
    );
    assert_eq!(s.asset_folder, Some(PathBuf::from("/home/u/nt-assets")));
    assert_eq!(s.job_timeout, Some(Duration::from_secs(300)));
    assert_eq!(s.subprocess_warm_workers, 0, "0 turns the pool off");
    assert_eq!(
        s.nodetool_api_url.as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(s.asset_domain.as_deref(), Some("cdn.example.com"));
    assert!(s.enable_terminal_ws);
    assert_eq!(s.max_workflow_threads, Some(4));
    assert_eq!(s.memcache_port, Some(11211));
    assert_eq!(s.node_cache_max_bytes, 64 << 20);
    assert_eq!(s.thread_pool_size, 3);
}

#[test]
fn docker_mem_limit_is_an_alias() {
    let fx = Fixture::new().env(&[("DOCKER_MEM_LIMIT", "2g")]);
    let s = fx.load();
    assert_eq!(s.docker_memory_limit, 2 * 1024 * 1024 * 1024);
    let e = s.entry("DOCKER_MEMORY_LIMIT").unwrap();
    assert_eq!(e.via_alias, Some("DOCKER_MEM_LIMIT"));
    assert_eq!(e.source, SettingSource::Env);
    assert_eq!(
        s.entry("DOCKER_MEM_LIMIT").unwrap().name,
        "DOCKER_MEMORY_LIMIT"
    );

    // Within one level the canonical name wins over the alias.
    let s = Fixture::new()
        .env(&[("DOCKER_MEM_LIMIT", "2g"), ("DOCKER_MEMORY_LIMIT", "1g")])
        .load();
    assert_eq!(s.docker_memory_limit, 1 << 30);
    assert_eq!(s.entry("DOCKER_MEMORY_LIMIT").unwrap().via_alias, None);

    // A higher level beats a lower one whatever the name.
    let s = Fixture::new()
        .env(&[("DOCKER_MEM_LIMIT", "256m")])
        .settings_yaml("DOCKER_MEMORY_LIMIT: 4g\n")
        .load();
    assert_eq!(s.docker_memory_limit, 256 << 20);

    // Errors name the variable the user actually set.
    let msg = Fixture::new()
        .env(&[("DOCKER_MEM_LIMIT", "lots")])
        .load_err();
    assert!(
        msg.contains("DOCKER_MEM_LIMIT=lots from the environment is not a size"),
        "{msg}"
    );
}

/// A malformed value names the variable, the value and where it came from, for every kind.
#[test]
fn malformed_values_name_variable_and_source() {
    let cases: &[(&str, &str, &str)] = &[
        ("MEMCACHE_PORT", "abc", "is not a port number"),
        ("MEMCACHE_PORT", "70000", "is not a port number"),
        ("NODETOOL_ENABLE_TERMINAL_WS", "maybe", "is not a boolean"),
        ("DOCKER_SHM_SIZE", "big", "is not a size"),
        ("NODE_CACHE_TTL", "1 week", "is not a duration"),
        (
            "THREAD_POOL_SIZE",
            "0",
            "is not a whole number of at least 1",
        ),
        ("DOCKER_PIDS_LIMIT", "1.5", "is not a whole number"),
        (
            "SUBPROCESS_WARM_WORKERS",
            "-1",
            "is not a worker count from 0 to 64",
        ),
        (
            "SUBPROCESS_WARM_WORKERS",
            "65",
            "is not a worker count from 0 to 64",
        ),
        ("DOCKER_CPU_LIMIT", "-2", "is not a positive number of CPUs"),
        (
            "S3_ENDPOINT_URL",
            "localhost:9000",
            "is not an http:// or https:// URL",
        ),
        (
            "ENV",
            "staging",
            "is not one of development, production, test",
        ),
        (
            "AUTH_PROVIDER",
            "ldap",
            "is not one of none, local, static, supabase",
        ),
        ("DOCKER_GPU_DEVICES", ",", "is not a comma-separated list"),
        (
            "DOCKER_IMAGE",
            "nodetool-worker",
            "is not a tagged image reference",
        ),
        (
            "DOCKER_IMAGE",
            "nodetool-worker:latest",
            "uses the :latest tag",
        ),
        (
            "DOCKER_ALLOWED_IMAGES",
            "nodetool-worker:*, other:latest",
            "lists \"other:latest\", which uses the :latest tag",
        ),
        (
            "NODETOOL_STORAGE_PUBLIC_URL",
            "files",
            "is not an http(s) URL or a path",
        ),
    ];
    for (name, value, why) in cases {
        let from_env = Fixture::new().env(&[(name, value)]).load_err();
        let want = format!("{name}={value} from the environment {why}");
        assert!(from_env.contains(&want), "want {want:?} in {from_env:?}");

        let fx = Fixture::new().settings_yaml(&format!("{name}: '{value}'\n"));
        let from_file = fx.load_err();
        let want = format!(
            "{name}={value} from {} {why}",
            fx.path(SETTINGS_FILE).display()
        );
        assert!(from_file.contains(&want), "want {want:?} in {from_file:?}");

        let fx = Fixture::new().secrets_yaml(&format!("{name}: '{value}'\n"));
        let from_secrets = fx.load_err();
        let want = format!(
            "{name}={value} from {} {why}",
            fx.path(SECRETS_FILE).display()
        );
        assert!(
            from_secrets.contains(&want),
            "want {want:?} in {from_secrets:?}"
        );
    }
}

#[test]
fn a_good_value_at_a_higher_level_hides_a_bad_one_below() {
    let s = Fixture::new()
        .env(&[("MEMCACHE_PORT", "11211")])
        .settings_yaml("MEMCACHE_PORT: abc\n")
        .load();
    assert_eq!(s.memcache_port, Some(11211));
}

#[test]
fn secret_values_are_masked_in_errors() {
    let value = "short-key-1234";
    let msg = Fixture::new()
        .env(&[("NODETOOL_URL_SIGNING_KEY", value)])
        .load_err();
    assert!(!msg.contains(value), "{msg}");
    assert!(
        msg.contains(&format!(
            "NODETOOL_URL_SIGNING_KEY={} from the environment is too short",
            mask(value)
        )),
        "{msg}"
    );
}

#[test]
fn debug_output_masks_secrets() {
    let secret = "sb-service-role-abcdefgh-9876";
    let s = Fixture::new()
        .env(&[
            ("SUPABASE_KEY", secret),
            ("SUPABASE_URL", "https://p.supabase.co"),
        ])
        .load();
    let debug = format!("{s:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("****9876"), "{debug}");
    assert!(debug.contains("https://p.supabase.co"), "{debug}");
}

#[test]
fn yaml_errors_name_the_file() {
    for (file, text) in [
        (SETTINGS_FILE, "ASSET_BUCKET: [a, b]\n"),
        (SETTINGS_FILE, "ASSET_BUCKET: 'x\n"),
        (SECRETS_FILE, "- S3_ACCESS_KEY_ID\n"),
        (SECRETS_FILE, "S3_ACCESS_KEY_ID: {a: b}\n"),
    ] {
        let fx = Fixture::new();
        std::fs::write(fx.path(file), text).unwrap();
        let msg = fx.load_err();
        let path = fx.path(file).display().to_string();
        assert!(msg.contains(&path), "{file} {text:?}: {msg}");
    }
}

#[test]
fn unreadable_file_names_the_file() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.path(SETTINGS_FILE)).unwrap();
    let msg = fx.load_err();
    assert!(
        msg.contains(&fx.path(SETTINGS_FILE).display().to_string()),
        "{msg}"
    );
}

#[test]
fn lookup_answers_for_unregistered_names() {
    let fx = Fixture::new()
        .env(&[("OPENAI_API_KEY", "from-env"), ("EMPTY_ONE", "")])
        .secrets_yaml("OPENAI_API_KEY: from-secrets\nHF_TOKEN: hf-secret\nEMPTY_ONE: set\n")
        .settings_yaml("HF_TOKEN: hf-settings\nLOCAL_ONLY: 42\n");
    let s = fx.load();
    assert_eq!(
        s.lookup("OPENAI_API_KEY"),
        Some(("from-env", SettingSource::Env))
    );
    assert_eq!(
        s.lookup("HF_TOKEN"),
        Some((
            "hf-secret",
            SettingSource::SecretsFile(fx.path(SECRETS_FILE))
        ))
    );
    assert_eq!(
        s.lookup("LOCAL_ONLY"),
        Some(("42", SettingSource::SettingsFile(fx.path(SETTINGS_FILE))))
    );
    assert_eq!(
        s.lookup("EMPTY_ONE"),
        Some(("set", SettingSource::SecretsFile(fx.path(SECRETS_FILE))))
    );
    assert_eq!(s.lookup("NOT_THERE"), None);
}

#[test]
fn sources_from_env_uses_the_override_dir() {
    let fx = Fixture::new().settings_yaml("S3_REGION: ap-south-1\n");
    let mut env = BTreeMap::new();
    env.insert(
        "NODETOOL_CONFIG_DIR".to_string(),
        fx.dir.path().display().to_string(),
    );
    env.insert("HOME".to_string(), "/nonexistent-home".to_string());
    let sources = Sources::from_env(env).unwrap();
    assert_eq!(sources.config_dir, fx.dir.path());
    let s = Settings::load(&sources).unwrap();
    assert_eq!(s.s3_region, "ap-south-1");
    assert_eq!(s.settings_path(), fx.path(SETTINGS_FILE).as_path());
    assert_eq!(s.secrets_path(), Path::new(&fx.path(SECRETS_FILE)));
}

#[test]
fn db_path_default_follows_the_config_dir_and_can_be_set() {
    let fx = Fixture::new();
    assert_eq!(fx.load().db_path, fx.path("nodetool.db"));
    let s = Fixture::new()
        .env(&[("HOME", "/home/u"), ("DB_PATH", "~/db/nt.sqlite")])
        .load();
    assert_eq!(s.db_path, PathBuf::from("/home/u/db/nt.sqlite"));
}

#[test]
fn allowed_strategies_default_by_auth_provider_and_parse() {
    let all = vec!["threaded", "subprocess", "docker"];
    for provider in ["none", "local", "static"] {
        let s = Fixture::new().env(&[("AUTH_PROVIDER", provider)]).load();
        assert_eq!(s.allowed_strategies, all, "AUTH_PROVIDER={provider}");
    }
    // Multi-user auth: jobs never run inside the server process unless the operator says so.
    let s = Fixture::new().env(&[("AUTH_PROVIDER", "supabase")]).load();
    assert_eq!(s.allowed_strategies, vec!["subprocess"]);
    let s = Fixture::new()
        .env(&[
            ("AUTH_PROVIDER", "supabase"),
            ("ALLOWED_STRATEGIES", " Docker , subprocess,docker"),
        ])
        .load();
    assert_eq!(s.allowed_strategies, vec!["docker", "subprocess"]);
    let s = Fixture::new()
        .env(&[("ALLOWED_STRATEGIES", "threaded")])
        .load();
    assert_eq!(s.allowed_strategies, vec!["threaded"]);

    for bad in ["threaded,inline", "gpu", ",,"] {
        let err = Fixture::new()
            .env(&[("ALLOWED_STRATEGIES", bad)])
            .load_err();
        assert!(err.contains("ALLOWED_STRATEGIES"), "{bad}: {err}");
    }
    let err = Fixture::new()
        .env(&[("ALLOWED_STRATEGIES", "threaded,inline")])
        .load_err();
    assert!(err.contains("\"inline\""), "{err}");
}

#[test]
fn database_url_is_a_postgres_url_shown_without_its_password() {
    assert_eq!(Fixture::new().load().database.database_url, None);

    let url = "postgres://app:hunter2-secret@db.internal:5432/nodetool?sslmode=require";
    let fx = Fixture::new().secrets_yaml(&format!("DATABASE_URL: \"{url}\"\n"));
    let s = fx.load();
    assert_eq!(s.database.database_url.as_deref(), Some(url));
    let e = s.entry("DATABASE_URL").unwrap();
    assert!(e.secret);
    assert_eq!(
        e.display_value(false).as_deref(),
        Some("postgres://app:****@db.internal:5432/nodetool?sslmode=require")
    );
    assert_eq!(e.display_value(true).as_deref(), Some(url));
    for shown in [format!("{s:?}"), format!("{:?}", s.database)] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
    }
    assert!(Fixture::new()
        .env(&[("DATABASE_URL", "postgresql://localhost/x")])
        .load()
        .database
        .database_url
        .is_some());

    for bad in [
        "mysql://app:hunter2-secret@db/nodetool",
        "sqlite:///var/lib/nodetool.db",
        "postgres://app:hunter2-secret@db:99999/nodetool",
        "hunter2-secret",
    ] {
        let err = Fixture::new().env(&[("DATABASE_URL", bad)]).load_err();
        assert!(err.contains("DATABASE_URL"), "{bad}: {err}");
        assert!(!err.contains("hunter2-secret"), "{bad}: {err}");
    }
}

#[test]
fn job_execution_queue_needs_database_url() {
    use nodetool_config::database::JobExecution;
    let s = Fixture::new().load();
    assert_eq!(s.database.job_execution, JobExecution::Local);
    assert_eq!(s.database.job_max_attempts, 2);
    assert_eq!(s.database.job_queue_max_running, None);
    assert_eq!(
        s.database.job_claim_timeout,
        std::time::Duration::from_secs(300)
    );
    let err = Fixture::new().env(&[("JOB_EXECUTION", "queue")]).load_err();
    assert!(
        err.contains("JOB_EXECUTION=queue needs DATABASE_URL"),
        "{err}"
    );
    let s = Fixture::new()
        .env(&[
            ("JOB_EXECUTION", "queue"),
            ("DATABASE_URL", "postgresql://localhost/x"),
            ("JOB_LEASE_SECONDS", "3"),
            ("JOB_QUEUE_MAX_RUNNING", "5"),
            ("JOB_CLAIM_TIMEOUT_SECONDS", "2m"),
        ])
        .load();
    assert_eq!(s.database.job_execution, JobExecution::Queue);
    assert_eq!(s.database.job_lease, std::time::Duration::from_secs(3));
    assert_eq!(s.database.job_queue_max_running, Some(5));
    assert_eq!(
        s.database.job_claim_timeout,
        std::time::Duration::from_secs(120)
    );
    let err = Fixture::new()
        .env(&[("JOB_QUEUE_MAX_RUNNING", "lots")])
        .load_err();
    assert!(err.contains("JOB_QUEUE_MAX_RUNNING"), "{err}");
    let err = Fixture::new()
        .env(&[("JOB_EXECUTION", "cluster")])
        .load_err();
    assert!(err.contains("JOB_EXECUTION"), "{err}");
}
