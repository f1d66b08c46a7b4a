//! Table-driven tests of the backend selection rules (DESIGN.md §3, seed 000): one row per rule,
//! first match wins.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nodetool_config::{
    asset_storage, node_cache, storage_base_url, temp_storage, CachePlan, Settings, Sources,
    StoragePlan,
};
use nodetool_core::ErrorKind;

type Vars = &'static [(&'static str, &'static str)];

const SUPA: &[(&str, &str)] = &[
    ("SUPABASE_URL", "https://proj.supabase.co"),
    ("SUPABASE_KEY", "service-role-key-0001"),
];
const S3_KEYS: &[(&str, &str)] = &[
    ("S3_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
    (
        "S3_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
];

fn load(dir: &tempfile::TempDir, groups: &[&[(&str, &str)]]) -> Settings {
    let env: BTreeMap<String, String> = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(&Sources::new(env, dir.path())).unwrap()
}

/// What a row expects, with `{cfg}` standing for the config directory.
#[derive(Debug)]
enum Want {
    Memory(&'static str),
    File(&'static str, &'static str),
    S3 {
        bucket: &'static str,
        root: Option<&'static str>,
        domain: Option<&'static str>,
    },
    Supabase(&'static str),
    Error(&'static str),
}

struct Row {
    name: &'static str,
    env: &'static [&'static [(&'static str, &'static str)]],
    use_s3: bool,
    want: Want,
    /// Text the reason (or error) must contain.
    reason: &'static str,
}

fn check(
    rows: &[Row],
    select: fn(&Settings, bool) -> nodetool_core::Result<nodetool_config::Selection<StoragePlan>>,
) {
    for row in rows {
        let dir = tempfile::tempdir().unwrap();
        let s = load(&dir, row.env);
        let cfg = |p: &str| PathBuf::from(p.replace("{cfg}", &dir.path().display().to_string()));
        let got = select(&s, row.use_s3);
        let sel = match (&row.want, got) {
            (Want::Error(var), Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{}", row.name);
                let msg = err.to_string();
                assert!(msg.contains(var), "{}: {msg}", row.name);
                assert!(msg.contains(row.reason), "{}: {msg}", row.name);
                continue;
            }
            (want, Err(err)) => panic!("{}: want {want:?}, got error {err}", row.name),
            (Want::Error(_), Ok(sel)) => panic!("{}: want an error, got {sel:?}", row.name),
            (_, Ok(sel)) => sel,
        };
        assert!(
            sel.reason.contains(row.reason),
            "{}: reason {:?} lacks {:?}",
            row.name,
            sel.reason,
            row.reason
        );
        match (&row.want, &sel.plan) {
            (Want::Memory(url), StoragePlan::Memory { base_url }) => {
                assert_eq!(base_url, url, "{}", row.name)
            }
            (Want::File(root_want, url), StoragePlan::File { root, base_url, .. }) => {
                assert_eq!(root, &cfg(root_want), "{}", row.name);
                assert_eq!(base_url, url, "{}", row.name);
            }
            (
                Want::S3 {
                    bucket,
                    root,
                    domain,
                },
                StoragePlan::S3 {
                    bucket: b,
                    root: r,
                    public_domain,
                    region,
                    endpoint,
                    access_key_id,
                    secret_access_key,
                    timeout,
                },
            ) => {
                assert_eq!(b, bucket, "{}", row.name);
                assert_eq!(r.as_deref(), *root, "{}", row.name);
                assert_eq!(public_domain.as_deref(), *domain, "{}", row.name);
                assert_eq!(region, &s.s3_region);
                assert_eq!(endpoint, &s.s3_endpoint_url);
                assert_eq!(access_key_id, &s.s3_access_key_id);
                assert_eq!(secret_access_key, &s.s3_secret_access_key);
                assert_eq!(*timeout, s.s3_timeout);
            }
            (
                Want::Supabase(bucket),
                StoragePlan::Supabase {
                    url,
                    key,
                    bucket: b,
                },
            ) => {
                assert_eq!(b, bucket, "{}", row.name);
                assert_eq!(Some(url), s.supabase_url.as_ref());
                assert_eq!(Some(key), s.supabase_key.as_ref());
            }
            (want, plan) => panic!("{}: want {want:?}, got {plan:?}", row.name),
        }
    }
}

#[test]
fn asset_storage_rules() {
    let rows = [
        Row {
            name: "test mode",
            env: &[&[("ENV", "test")]],
            use_s3: false,
            want: Want::Memory("/api/storage"),
            reason: "ENV=test",
        },
        Row {
            name: "test mode beats everything, even use_s3",
            env: &[&[("ENV", "test")], SUPA, S3_KEYS],
            use_s3: true,
            want: Want::Memory("/api/storage"),
            reason: "ignored in test mode",
        },
        Row {
            name: "supabase",
            env: &[SUPA],
            use_s3: false,
            want: Want::Supabase("assets"),
            reason: "SUPABASE_URL (env) and SUPABASE_KEY (env) are set",
        },
        Row {
            name: "supabase beats s3",
            env: &[SUPA, S3_KEYS, &[("ASSET_BUCKET", "media")]],
            use_s3: true,
            want: Want::Supabase("media"),
            reason: "SUPABASE_KEY",
        },
        Row {
            name: "supabase url alone is not supabase",
            env: &[&[("SUPABASE_URL", "https://proj.supabase.co")]],
            use_s3: false,
            want: Want::File("{cfg}/assets", "/api/storage"),
            reason: "local files",
        },
        Row {
            name: "supabase bucket cannot be a path",
            env: &[SUPA, &[("ASSET_BUCKET", "/data/assets")]],
            use_s3: false,
            want: Want::Error("ASSET_BUCKET=/data/assets from the environment"),
            reason: "not a Supabase bucket name",
        },
        Row {
            name: "s3 by keys",
            env: &[S3_KEYS],
            use_s3: false,
            want: Want::S3 {
                bucket: "assets",
                root: None,
                domain: None,
            },
            reason: "presigned URLs (ASSET_DOMAIN is not set)",
        },
        Row {
            name: "s3 with endpoint, region and domain",
            env: &[
                S3_KEYS,
                &[
                    ("ASSET_BUCKET", "media.prod"),
                    ("ASSET_DOMAIN", "cdn.example.com"),
                    ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
                    ("S3_REGION", "eu-central-1"),
                    ("S3_TIMEOUT_SECONDS", "5"),
                ],
            ],
            use_s3: false,
            want: Want::S3 {
                bucket: "media.prod",
                root: None,
                domain: Some("cdn.example.com"),
            },
            reason: "at http://127.0.0.1:9000; URLs on https://cdn.example.com",
        },
        Row {
            name: "s3 forced without credentials",
            env: &[],
            use_s3: true,
            want: Want::S3 {
                bucket: "assets",
                root: None,
                domain: None,
            },
            reason: "neither S3_ACCESS_KEY_ID nor S3_SECRET_ACCESS_KEY is set",
        },
        Row {
            name: "one s3 key without the other",
            env: &[&[("S3_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")]],
            use_s3: false,
            want: Want::Error("S3_SECRET_ACCESS_KEY is not"),
            reason: "S3_ACCESS_KEY_ID is set (from the environment)",
        },
        Row {
            name: "only the secret key",
            env: &[&[("S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")]],
            use_s3: true,
            want: Want::Error("S3_ACCESS_KEY_ID is not"),
            reason: "S3 needs both",
        },
        Row {
            name: "s3 bucket cannot be a path",
            env: &[S3_KEYS, &[("ASSET_BUCKET", "./assets")]],
            use_s3: false,
            want: Want::Error("ASSET_BUCKET=./assets"),
            reason: "is a folder path, but S3 storage was selected",
        },
        Row {
            name: "s3 bucket name must be valid",
            env: &[S3_KEYS, &[("ASSET_BUCKET", "My_Bucket")]],
            use_s3: false,
            want: Want::Error("ASSET_BUCKET=My_Bucket"),
            reason: "not a valid S3 bucket name",
        },
        Row {
            name: "nothing set: files under the config dir",
            env: &[],
            use_s3: false,
            want: Want::File("{cfg}/assets", "/api/storage"),
            reason: "ASSET_BUCKET inside the config directory",
        },
        Row {
            name: "production alone does not force s3 (seeds win over Python)",
            env: &[&[("ENV", "production")]],
            use_s3: false,
            want: Want::File("{cfg}/assets", "/api/storage"),
            reason: "local files",
        },
        Row {
            name: "bucket name as folder name",
            env: &[&[("ASSET_BUCKET", "media")]],
            use_s3: false,
            want: Want::File("{cfg}/media", "/api/storage"),
            reason: "local files",
        },
        Row {
            name: "bucket as absolute path",
            env: &[&[("ASSET_BUCKET", "/srv/nodetool/assets")]],
            use_s3: false,
            want: Want::File("/srv/nodetool/assets", "/api/storage"),
            reason: "ASSET_BUCKET is a path",
        },
        Row {
            name: "bucket as home path",
            env: &[&[("ASSET_BUCKET", "~/nt"), ("HOME", "/home/u")]],
            use_s3: false,
            want: Want::File("/home/u/nt", "/api/storage"),
            reason: "ASSET_BUCKET is a path",
        },
        Row {
            name: "asset folder beats bucket path",
            env: &[&[("ASSET_FOLDER", "/mnt/assets"), ("ASSET_BUCKET", "/srv/x")]],
            use_s3: false,
            want: Want::File("/mnt/assets", "/api/storage"),
            reason: "ASSET_FOLDER",
        },
        Row {
            name: "api url makes absolute storage urls",
            env: &[&[("NODETOOL_API_URL", "http://localhost:7777/")]],
            use_s3: false,
            want: Want::File("{cfg}/assets", "http://localhost:7777/api/storage"),
            reason: "local files",
        },
        Row {
            name: "public storage url beats api url",
            env: &[&[
                ("NODETOOL_API_URL", "http://localhost:7777"),
                (
                    "NODETOOL_STORAGE_PUBLIC_URL",
                    "https://files.example.com/s/",
                ),
            ]],
            use_s3: false,
            want: Want::File("{cfg}/assets", "https://files.example.com/s"),
            reason: "local files",
        },
        Row {
            name: "memory uses the same base url",
            env: &[&[("ENV", "test"), ("NODETOOL_API_URL", "http://h:1")]],
            use_s3: false,
            want: Want::Memory("http://h:1/api/storage"),
            reason: "in-memory",
        },
    ];
    check(&rows, asset_storage);
}

#[test]
fn temp_storage_rules() {
    let rows = [
        Row {
            name: "test mode",
            env: &[&[("ENV", "test")], SUPA, &[("ASSET_TEMP_BUCKET", "tmp")]],
            use_s3: false,
            want: Want::Memory("/api/storage/temp"),
            reason: "ENV=test",
        },
        Row {
            name: "supabase with a temp bucket",
            env: &[SUPA, &[("ASSET_TEMP_BUCKET", "assets-temp")]],
            use_s3: false,
            want: Want::Supabase("assets-temp"),
            reason: "ASSET_TEMP_BUCKET (env) are set",
        },
        Row {
            name: "supabase without a temp bucket falls back to files",
            env: &[SUPA],
            use_s3: false,
            want: Want::File("{cfg}/temp", "/api/storage/temp"),
            reason: "Supabase is configured but ASSET_TEMP_BUCKET is not set",
        },
        Row {
            name: "supabase assets with s3 keys and no temp bucket: still files",
            env: &[SUPA, S3_KEYS],
            use_s3: false,
            want: Want::File("{cfg}/temp", "/api/storage/temp"),
            reason: "ASSET_TEMP_BUCKET is not set",
        },
        Row {
            name: "s3 temp bucket and domain",
            env: &[
                S3_KEYS,
                &[
                    ("ASSET_TEMP_BUCKET", "nt-temp"),
                    ("ASSET_TEMP_DOMAIN", "tmp.example.com"),
                    ("ASSET_DOMAIN", "cdn.example.com"),
                ],
            ],
            use_s3: false,
            want: Want::S3 {
                bucket: "nt-temp",
                root: None,
                domain: Some("tmp.example.com"),
            },
            reason: "URLs on https://tmp.example.com",
        },
        Row {
            name: "s3 temp bucket without a temp domain presigns",
            env: &[
                S3_KEYS,
                &[
                    ("ASSET_TEMP_BUCKET", "nt-temp"),
                    ("ASSET_DOMAIN", "cdn.example.com"),
                ],
            ],
            use_s3: false,
            want: Want::S3 {
                bucket: "nt-temp",
                root: None,
                domain: None,
            },
            reason: "presigned URLs (ASSET_TEMP_DOMAIN is not set)",
        },
        Row {
            name: "s3 without a temp bucket: asset bucket under temp/",
            env: &[
                S3_KEYS,
                &[
                    ("ASSET_BUCKET", "media"),
                    ("ASSET_DOMAIN", "cdn.example.com"),
                ],
            ],
            use_s3: false,
            want: Want::S3 {
                bucket: "media",
                root: Some("temp/"),
                domain: Some("cdn.example.com"),
            },
            reason: "ASSET_TEMP_BUCKET is not set, so the asset bucket \"media\" under temp/",
        },
        Row {
            name: "s3 forced without a temp bucket",
            env: &[],
            use_s3: true,
            want: Want::S3 {
                bucket: "assets",
                root: Some("temp/"),
                domain: None,
            },
            reason: "S3 forced",
        },
        Row {
            name: "s3 temp bucket must be valid",
            env: &[S3_KEYS, &[("ASSET_TEMP_BUCKET", "Temp Bucket")]],
            use_s3: false,
            want: Want::Error("ASSET_TEMP_BUCKET=Temp Bucket"),
            reason: "not a valid S3 bucket name",
        },
        Row {
            name: "nothing set",
            env: &[&[("ASSET_TEMP_BUCKET", "ignored-without-cloud")]],
            use_s3: false,
            want: Want::File("{cfg}/temp", "/api/storage/temp"),
            reason: "local files",
        },
        Row {
            name: "temp urls follow the public url",
            env: &[&[("NODETOOL_STORAGE_PUBLIC_URL", "/files/")]],
            use_s3: false,
            want: Want::File("{cfg}/temp", "/files/temp"),
            reason: "local files",
        },
        Row {
            name: "temp urls follow the api url",
            env: &[&[("NODETOOL_API_URL", "https://nt.example.com")]],
            use_s3: false,
            want: Want::File("{cfg}/temp", "https://nt.example.com/api/storage/temp"),
            reason: "local files",
        },
    ];
    check(&rows, temp_storage);
}

#[test]
fn node_cache_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(Vars, bool, &str)] = &[
        (
            &[("MEMCACHE_HOST", "127.0.0.1"), ("MEMCACHE_PORT", "11211")],
            true,
            "memcached at 127.0.0.1:11211",
        ),
        (
            &[("MEMCACHE_HOST", "127.0.0.1")],
            false,
            "MEMCACHE_PORT is not",
        ),
        (&[("MEMCACHE_PORT", "11211")], false, "MEMCACHE_HOST is not"),
        (&[], false, "are not set"),
    ];
    for (env, memcached, reason) in cases {
        let s = load(
            &dir,
            &[
                env,
                &[("NODE_CACHE_TTL", "10m"), ("NODE_CACHE_MAX_BYTES", "1m")],
            ],
        );
        let sel = node_cache(&s);
        assert!(sel.reason.contains(reason), "{env:?}: {}", sel.reason);
        match (memcached, sel.plan) {
            (
                true,
                CachePlan::Memcached {
                    host,
                    port,
                    default_ttl,
                },
            ) => {
                assert_eq!(Some(host), s.memcache_host);
                assert_eq!(Some(port), s.memcache_port);
                assert_eq!(default_ttl, Duration::from_secs(600));
            }
            (
                false,
                CachePlan::Memory {
                    max_bytes,
                    default_ttl,
                },
            ) => {
                assert_eq!(max_bytes, 1 << 20);
                assert_eq!(default_ttl, Duration::from_secs(600));
            }
            (_, plan) => panic!("{env:?}: got {plan:?}"),
        }
    }
}

#[test]
fn reasons_name_the_file_a_trigger_came_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "SUPABASE_KEY: service-role-key-0001\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "SUPABASE_URL: https://proj.supabase.co\n",
    )
    .unwrap();
    let s = load(&dir, &[]);
    let sel = asset_storage(&s, false).unwrap();
    assert!(
        sel.reason
            .contains("SUPABASE_URL (settings.yaml) and SUPABASE_KEY (secrets.yaml) are set"),
        "{}",
        sel.reason
    );
    assert_eq!(sel.plan.backend_name(), "supabase");
    // Secrets never appear in a reason.
    assert!(!sel.reason.contains("service-role-key"), "{}", sel.reason);
}

#[test]
fn base_url_has_no_trailing_slash() {
    let dir = tempfile::tempdir().unwrap();
    for (env, want) in [
        (&[][..], "/api/storage"),
        (
            &[("NODETOOL_API_URL", "http://a:1///")][..],
            "http://a:1/api/storage",
        ),
        (
            &[("NODETOOL_STORAGE_PUBLIC_URL", "https://cdn.x/y//")][..],
            "https://cdn.x/y",
        ),
    ] {
        let s = load(&dir, &[env]);
        assert_eq!(storage_base_url(&s), want, "{env:?}");
    }
}
