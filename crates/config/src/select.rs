//! Backend selection: pure functions from [`Settings`] to a plan plus the reason it was chosen
//! (what `nodetool storage info` prints). The storage crates build backends from the plans; only
//! this module knows every backend and the rules between them (DESIGN.md §3, seed 000).

use std::path::PathBuf;
use std::time::Duration;

use nodetool_core::{Error, ErrorKind, Result};

use crate::parse::{self, is_path_like};
use crate::Settings;

/// Which storage backend to build, with everything it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoragePlan {
    /// Process-wide in-memory storage (`ENV=test`).
    Memory { base_url: String },
    /// Files under `root`; URLs are `{base_url}/{key}`, served by the API. Small objects are
    /// kept in memory after a read, up to `read_cache_bytes` (`FILE_READ_CACHE_BYTES`).
    File {
        root: PathBuf,
        base_url: String,
        read_cache_bytes: u64,
    },
    S3 {
        bucket: String,
        /// Key prefix inside the bucket (`"temp/"` when temp shares the asset bucket).
        root: Option<String>,
        region: String,
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        /// URLs become `https://{public_domain}/{root}{key}`; presigned GETs when `None`.
        public_domain: Option<String>,
        timeout: Duration,
    },
    Supabase {
        url: String,
        key: String,
        bucket: String,
    },
}

impl StoragePlan {
    /// `memory`, `file`, `s3` or `supabase`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            StoragePlan::Memory { .. } => "memory",
            StoragePlan::File { .. } => "file",
            StoragePlan::S3 { .. } => "s3",
            StoragePlan::Supabase { .. } => "supabase",
        }
    }
}

/// Which node cache to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachePlan {
    Memory {
        max_bytes: u64,
        default_ttl: Duration,
    },
    Memcached {
        host: String,
        port: u16,
        default_ttl: Duration,
    },
}

/// A plan and why it was chosen, in words for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<T> {
    pub plan: T,
    pub reason: String,
}

/// Asset storage, first match wins: `ENV=test` → memory; `SUPABASE_URL` and `SUPABASE_KEY` →
/// Supabase; an S3 key or `use_s3` → S3; otherwise local files.
pub fn asset_storage(s: &Settings, use_s3: bool) -> Result<Selection<StoragePlan>> {
    if s.is_test() {
        return Ok(Selection {
            plan: StoragePlan::Memory {
                base_url: storage_base_url(s),
            },
            reason: test_reason(s, use_s3),
        });
    }
    if let Some((url, key)) = supabase(s) {
        let bucket = supabase_bucket(s, "ASSET_BUCKET", &s.asset_bucket)?;
        return Ok(Selection {
            reason: format!(
                "{}; Supabase bucket {bucket:?}",
                set_because(s, &["SUPABASE_URL", "SUPABASE_KEY"])
            ),
            plan: StoragePlan::Supabase {
                url: url.to_string(),
                key: key.to_string(),
                bucket,
            },
        });
    }
    if let Some(why) = s3_trigger(s, use_s3)? {
        let bucket = s3_bucket(s, "ASSET_BUCKET", &s.asset_bucket)?;
        let mut reason = format!("{why}; S3 bucket {bucket:?}");
        append_s3_details(s, &mut reason, s.asset_domain.as_deref(), "ASSET_DOMAIN");
        return Ok(Selection {
            plan: s3_plan(s, bucket, None, s.asset_domain.clone()),
            reason,
        });
    }
    let (root, why) = asset_folder(s);
    Ok(Selection {
        reason: format!(
            "no Supabase or S3 credentials set: local files under {} ({why})",
            root.display()
        ),
        plan: StoragePlan::File {
            root,
            base_url: storage_base_url(s),
            read_cache_bytes: s.file_read_cache_bytes,
        },
    })
}

/// Temp storage mirrors assets: `ENV=test` → memory; Supabase with `ASSET_TEMP_BUCKET` →
/// Supabase; S3 when assets use S3 (`ASSET_TEMP_BUCKET`, else the asset bucket under `temp/`);
/// otherwise local files under `{config_dir}/temp`.
pub fn temp_storage(s: &Settings, use_s3: bool) -> Result<Selection<StoragePlan>> {
    let base_url = format!("{}/temp", storage_base_url(s));
    if s.is_test() {
        return Ok(Selection {
            plan: StoragePlan::Memory { base_url },
            reason: test_reason(s, use_s3),
        });
    }
    let root = s.config_dir().join("temp");
    if let Some((url, key)) = supabase(s) {
        let Some(temp_bucket) = &s.asset_temp_bucket else {
            return Ok(Selection {
                reason: format!(
                    "Supabase is configured but ASSET_TEMP_BUCKET is not set: local files under {}",
                    root.display()
                ),
                plan: StoragePlan::File {
                    root,
                    base_url,
                    read_cache_bytes: s.file_read_cache_bytes,
                },
            });
        };
        let bucket = supabase_bucket(s, "ASSET_TEMP_BUCKET", temp_bucket)?;
        return Ok(Selection {
            reason: format!(
                "{}; Supabase bucket {bucket:?}",
                set_because(s, &["SUPABASE_URL", "SUPABASE_KEY", "ASSET_TEMP_BUCKET"])
            ),
            plan: StoragePlan::Supabase {
                url: url.to_string(),
                key: key.to_string(),
                bucket,
            },
        });
    }
    if let Some(why) = s3_trigger(s, use_s3)? {
        let (plan, mut reason) = match &s.asset_temp_bucket {
            Some(temp_bucket) => {
                let bucket = s3_bucket(s, "ASSET_TEMP_BUCKET", temp_bucket)?;
                let reason = format!("{why}; S3 bucket {bucket:?} (ASSET_TEMP_BUCKET)");
                (
                    s3_plan(s, bucket, None, s.asset_temp_domain.clone()),
                    reason,
                )
            }
            None => {
                let bucket = s3_bucket(s, "ASSET_BUCKET", &s.asset_bucket)?;
                let reason = format!(
                    "{why}; ASSET_TEMP_BUCKET is not set, so the asset bucket {bucket:?} under temp/"
                );
                // The asset domain serves the whole asset bucket, temp/ included.
                let domain = s.asset_temp_domain.clone().or(s.asset_domain.clone());
                (s3_plan(s, bucket, Some("temp/".into()), domain), reason)
            }
        };
        let (domain, var) = match (&s.asset_temp_domain, &s.asset_temp_bucket) {
            (Some(d), _) => (Some(d.as_str()), "ASSET_TEMP_DOMAIN"),
            (None, None) => (s.asset_domain.as_deref(), "ASSET_DOMAIN"),
            (None, Some(_)) => (None, "ASSET_TEMP_DOMAIN"),
        };
        append_s3_details(s, &mut reason, domain, var);
        return Ok(Selection { plan, reason });
    }
    Ok(Selection {
        reason: format!(
            "no Supabase or S3 credentials set: local files under {}",
            root.display()
        ),
        plan: StoragePlan::File {
            root,
            base_url,
            read_cache_bytes: s.file_read_cache_bytes,
        },
    })
}

/// Node cache: memcached when `MEMCACHE_HOST` and `MEMCACHE_PORT` are both set, else in-process.
pub fn node_cache(s: &Settings) -> Selection<CachePlan> {
    let default_ttl = s.node_cache_ttl;
    match (&s.memcache_host, s.memcache_port) {
        (Some(host), Some(port)) => Selection {
            reason: format!(
                "{}: memcached at {host}:{port}",
                set_because(s, &["MEMCACHE_HOST", "MEMCACHE_PORT"])
            ),
            plan: CachePlan::Memcached {
                host: host.clone(),
                port,
                default_ttl,
            },
        },
        (host, port) => {
            let why = match (host, port) {
                (Some(_), None) => "MEMCACHE_HOST is set but MEMCACHE_PORT is not",
                (None, Some(_)) => "MEMCACHE_PORT is set but MEMCACHE_HOST is not",
                _ => "MEMCACHE_HOST and MEMCACHE_PORT are not set",
            };
            Selection {
                reason: format!(
                    "{why}: in-process cache of {} bytes",
                    s.node_cache_max_bytes
                ),
                plan: CachePlan::Memory {
                    max_bytes: s.node_cache_max_bytes,
                    default_ttl,
                },
            }
        }
    }
}

/// Base URL of file/memory asset storage: `NODETOOL_STORAGE_PUBLIC_URL`, else
/// `{NODETOOL_API_URL}/api/storage`, else the relative `/api/storage`. No trailing slash.
pub fn storage_base_url(s: &Settings) -> String {
    if let Some(url) = &s.storage_public_url {
        return url.trim_end_matches('/').to_string();
    }
    match &s.nodetool_api_url {
        Some(api) => format!("{}/api/storage", api.trim_end_matches('/')),
        None => "/api/storage".to_string(),
    }
}

/// Where local asset files live: `ASSET_FOLDER`, else `ASSET_BUCKET` when it is a path, else
/// `{config_dir}/{ASSET_BUCKET}`; with a word on which rule applied.
pub fn asset_folder(s: &Settings) -> (PathBuf, &'static str) {
    if let Some(folder) = &s.asset_folder {
        return (folder.clone(), "ASSET_FOLDER");
    }
    if is_path_like(&s.asset_bucket) {
        return (
            parse::path(&s.asset_bucket, s.home()),
            "ASSET_BUCKET is a path",
        );
    }
    (
        s.config_dir().join(&s.asset_bucket),
        "ASSET_BUCKET inside the config directory",
    )
}

fn test_reason(s: &Settings, use_s3: bool) -> String {
    let mut reason = format!("ENV=test (from {}): in-memory storage", source(s, "ENV"));
    if use_s3 {
        reason.push_str(" (forcing S3 is ignored in test mode)");
    }
    reason
}

fn supabase(s: &Settings) -> Option<(&str, &str)> {
    Some((s.supabase_url.as_deref()?, s.supabase_key.as_deref()?))
}

/// Why S3 is selected, or `None` when it is not. One key without the other cannot sign requests,
/// so that is an error naming the missing variable rather than a later authentication failure.
fn s3_trigger(s: &Settings, use_s3: bool) -> Result<Option<String>> {
    match (&s.s3_access_key_id, &s.s3_secret_access_key) {
        (Some(_), Some(_)) => Ok(Some(set_because(
            s,
            &["S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"],
        ))),
        (Some(_), None) | (None, Some(_)) => {
            let (set, missing) = if s.s3_access_key_id.is_some() {
                ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")
            } else {
                ("S3_SECRET_ACCESS_KEY", "S3_ACCESS_KEY_ID")
            };
            Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "{set} is set (from {}) but {missing} is not; S3 needs both, or neither \
                     to use ambient credentials",
                    source(s, set)
                ),
            )
            .with_operation("config.select_storage")
            .with_context("setting", missing))
        }
        (None, None) if use_s3 => Ok(Some(
            "S3 forced (use_s3) but neither S3_ACCESS_KEY_ID nor S3_SECRET_ACCESS_KEY is set: \
             relying on the endpoint's anonymous access or ambient (IAM) credentials"
                .to_string(),
        )),
        (None, None) => Ok(None),
    }
}

fn s3_plan(
    s: &Settings,
    bucket: String,
    root: Option<String>,
    public_domain: Option<String>,
) -> StoragePlan {
    StoragePlan::S3 {
        bucket,
        root,
        region: s.s3_region.clone(),
        endpoint: s.s3_endpoint_url.clone(),
        access_key_id: s.s3_access_key_id.clone(),
        secret_access_key: s.s3_secret_access_key.clone(),
        public_domain,
        timeout: s.s3_timeout,
    }
}

fn append_s3_details(s: &Settings, reason: &mut String, domain: Option<&str>, domain_var: &str) {
    match &s.s3_endpoint_url {
        Some(endpoint) => reason.push_str(&format!(" at {endpoint}")),
        None => reason.push_str(&format!(" on AWS ({})", s.s3_region)),
    }
    match domain {
        Some(d) => reason.push_str(&format!("; URLs on https://{d}")),
        None => reason.push_str(&format!("; presigned URLs ({domain_var} is not set)")),
    }
}

/// S3 bucket names: 3–63 lowercase letters, digits, '.' or '-', starting and ending alphanumeric.
fn s3_bucket(s: &Settings, var: &'static str, bucket: &str) -> Result<String> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len())
        && ok_chars
        && ends_ok(bucket.chars().next())
        && ends_ok(bucket.chars().last())
    {
        return Ok(bucket.to_string());
    }
    let why = if is_path_like(bucket) {
        "is a folder path, but S3 storage was selected; set ASSET_FOLDER for local files and \
         ASSET_BUCKET to a bucket name"
    } else {
        "is not a valid S3 bucket name (3-63 lowercase letters, digits, '.' or '-')"
    };
    Err(bucket_error(s, var, bucket, why))
}

fn supabase_bucket(s: &Settings, var: &'static str, bucket: &str) -> Result<String> {
    if bucket.contains('/') || is_path_like(bucket) {
        return Err(bucket_error(
            s,
            var,
            bucket,
            "is not a Supabase bucket name (Supabase storage was selected)",
        ));
    }
    Ok(bucket.to_string())
}

fn bucket_error(s: &Settings, var: &'static str, bucket: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("{var}={bucket} from {} {why}", source(s, var)),
    )
    .with_operation("config.select_storage")
    .with_context("setting", var)
}

/// "SUPABASE_URL (settings.yaml) and SUPABASE_KEY (env) are set".
fn set_because(s: &Settings, vars: &[&str]) -> String {
    let parts: Vec<String> = vars
        .iter()
        .map(|v| format!("{v} ({})", label(s, v)))
        .collect();
    let joined = match parts.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => String::new(),
    };
    format!(
        "{joined} {}",
        if vars.len() == 1 { "is set" } else { "are set" }
    )
}

fn source(s: &Settings, var: &str) -> String {
    s.source_of(var)
        .map(ToString::to_string)
        .unwrap_or_else(|| "an unknown source".into())
}

fn label(s: &Settings, var: &str) -> &'static str {
    s.source_of(var).map(|src| src.label()).unwrap_or("?")
}
