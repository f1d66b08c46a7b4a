//! Typed settings, loaded once from [`Sources`] with one precedence chain:
//! environment > `secrets.yaml` > `settings.yaml` > default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodetool_core::{Error, ErrorKind, Result};

use crate::parse::{self, mask, Parsed};
use crate::python::PythonSettings;
use crate::registry::{self, DefaultValue, SettingDef, ValueKind, REGISTRY};
use crate::sources::{self, SettingSource, Sources};

/// `ENV`: how the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Development,
    Production,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
            Environment::Test => "test",
        }
    }

    fn from_choice(s: &str) -> Self {
        match s {
            "production" => Environment::Production,
            "test" => Environment::Test,
            _ => Environment::Development,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `AUTH_PROVIDER`: how API callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthProvider {
    /// No auth; single user "1".
    None,
    /// Single user "1", loopback only unless explicitly allowed.
    Local,
    /// `SERVER_AUTH_TOKEN` bearer token(s).
    Static,
    /// JWTs checked against Supabase.
    Supabase,
}

impl AuthProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthProvider::None => "none",
            AuthProvider::Local => "local",
            AuthProvider::Static => "static",
            AuthProvider::Supabase => "supabase",
        }
    }

    /// Whether callers are distinct, untrusted users (each sees only their own data).
    pub fn is_multi_user(self) -> bool {
        self == AuthProvider::Supabase
    }

    fn from_choice(s: &str) -> Self {
        match s {
            "none" => AuthProvider::None,
            "static" => AuthProvider::Static,
            "supabase" => AuthProvider::Supabase,
            _ => AuthProvider::Local,
        }
    }
}

impl fmt::Display for AuthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `settings show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingEntry {
    pub name: &'static str,
    /// The value as set (or the default, rendered); `None` when unset. Not masked: use [`mask`].
    pub value: Option<String>,
    pub source: SettingSource,
    pub description: &'static str,
    pub secret: bool,
    /// The older name the value was read under (e.g. `DOCKER_MEM_LIMIT`), if not the canonical one.
    pub via_alias: Option<&'static str>,
}

impl SettingEntry {
    /// The value for display: secrets masked unless `reveal`.
    pub fn display_value(&self, reveal: bool) -> Option<String> {
        match &self.value {
            Some(v) if self.secret && !reveal => Some(match registry::find(self.name) {
                Some(def) => parse::redact(def.kind, v),
                None => mask(v),
            }),
            other => other.clone(),
        }
    }
}

/// A setting's raw value and where it came from.
#[derive(Debug, Clone)]
struct Resolved {
    def: &'static SettingDef,
    raw: Option<String>,
    source: SettingSource,
    /// The name the value was found under (the canonical name or an alias).
    via: &'static str,
}

/// The non-default sources, kept so that [`Settings::lookup`] can answer for names outside the
/// registry (node secrets such as API keys) by the same precedence chain.
#[derive(Clone)]
struct Layers {
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    secrets_path: PathBuf,
    settings: BTreeMap<String, String>,
    settings_path: PathBuf,
}

impl Layers {
    fn get(&self, name: &str) -> Option<(&str, SettingSource)> {
        if let Some(v) = self.env.get(name) {
            return Some((v, SettingSource::Env));
        }
        if let Some(v) = self.secrets.get(name) {
            return Some((v, SettingSource::SecretsFile(self.secrets_path.clone())));
        }
        if let Some(v) = self.settings.get(name) {
            return Some((v, SettingSource::SettingsFile(self.settings_path.clone())));
        }
        None
    }

    /// Within one level the canonical name beats its aliases; a higher level beats both.
    fn resolve(&self, def: &'static SettingDef) -> Option<(String, SettingSource, &'static str)> {
        let names = std::iter::once(&def.name).chain(def.aliases.iter());
        let levels: [(&BTreeMap<String, String>, SettingSource); 3] = [
            (&self.env, SettingSource::Env),
            (
                &self.secrets,
                SettingSource::SecretsFile(self.secrets_path.clone()),
            ),
            (
                &self.settings,
                SettingSource::SettingsFile(self.settings_path.clone()),
            ),
        ];
        for (map, source) in levels {
            for name in names.clone() {
                if let Some(v) = map.get(*name) {
                    return Some((v.clone(), source, name));
                }
            }
        }
        None
    }
}

/// Every setting, typed. Load once with [`Settings::load`] and pass by reference (or `Arc`);
/// library crates take what they need from here and never read the environment themselves.
///
/// Fields are public for reading; [`Settings::entries`] reports what was loaded, so changing a
/// field afterwards is not reflected there.
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    pub env: Environment,
    pub asset_bucket: String,
    pub asset_domain: Option<String>,
    pub asset_temp_bucket: Option<String>,
    pub asset_temp_domain: Option<String>,
    pub asset_folder: Option<PathBuf>,
    pub s3_endpoint_url: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_region: String,
    pub s3_timeout: Duration,
    pub supabase_url: Option<String>,
    pub supabase_key: Option<String>,
    pub supabase_jwt_secret: Option<String>,
    pub nodetool_api_url: Option<String>,
    pub storage_public_url: Option<String>,
    pub max_upload_bytes: u64,
    pub file_read_cache_bytes: u64,
    pub url_signing_key: Option<String>,
    pub asset_temp_ttl: Duration,
    pub db_path: PathBuf,
    /// The job-event limits.
    pub database: crate::database::DatabaseSettings,
    /// Span export (OpenTelemetry).
    pub telemetry: crate::telemetry::TelemetrySettings,
    pub memcache_host: Option<String>,
    pub memcache_port: Option<u16>,
    pub node_cache_max_bytes: u64,
    pub node_cache_ttl: Duration,
    pub uri_cache_ttl: Duration,
    pub font_path: Option<PathBuf>,
    pub comfy_folder: Option<PathBuf>,
    pub chroma_path: Option<PathBuf>,
    pub auth_provider: AuthProvider,
    /// Raw value; see [`Settings::server_auth_tokens`] for the rotation list.
    pub server_auth_token: Option<String>,
    pub auth_cache_ttl: Duration,
    pub enable_terminal_ws: bool,
    pub thread_pool_size: usize,
    pub max_workflow_threads: Option<usize>,
    /// `MAX_JOBS_PER_USER`: jobs one user runs at once; `None`: only the total bounds them.
    pub max_jobs_per_user: Option<usize>,
    /// `NODETOOL_VRAM_GB`: GPU memory this process offers its jobs; `None`: hints unchecked.
    pub vram_gb: Option<f64>,
    /// `MAX_QUEUED_JOBS_PER_USER`: jobs one user may have waiting.
    pub max_queued_jobs_per_user: usize,
    pub job_timeout: Option<Duration>,
    /// `SUBPROCESS_WARM_WORKERS`: idle subprocess workers started ahead of jobs (0: none).
    pub subprocess_warm_workers: usize,
    /// `ALLOWED_STRATEGIES`, resolved: never empty, each one of
    /// [`STRATEGY_CHOICES`](crate::registry::STRATEGY_CHOICES), in the order given. Unset, the
    /// threaded strategy (jobs inside the server process) is left out under multi-user auth.
    pub allowed_strategies: Vec<&'static str>,
    pub docker_image: Option<String>,
    /// `DOCKER_ALLOWED_IMAGES`: images a request may name besides `docker_image`.
    pub docker_allowed_images: Option<Vec<String>>,
    /// CPUs (default: the host's, [`crate::docker_defaults`]).
    pub docker_cpu_limit: f64,
    /// Bytes (default: half the host's memory, at most 8 GiB).
    pub docker_memory_limit: u64,
    /// Bytes.
    pub docker_shm_size: Option<u64>,
    /// Default 512.
    pub docker_pids_limit: i64,
    pub docker_user: String,
    pub docker_gpu_devices: Option<Vec<String>>,
    /// `never`, `missing` or `always`.
    pub docker_pull_policy: &'static str,
    // nodes-b: settings of built-in node types.
    pub workspace_dir: Option<PathBuf>,
    pub ffmpeg_path: String,
    pub ffmpeg_timeout: Duration,
    /// Media refs and node HTTP fetches (the `NODETOOL_*` block at the end of the registry).
    pub media: crate::media::MediaSettings,
    /// The Python node bridge's block (`NODETOOL_PYTHON`, ...).
    pub python: PythonSettings,
    /// The HTTP server's hardening block (`ALLOWED_ORIGINS`, ...).
    pub server: crate::server::ServerSettings,

    config_dir: PathBuf,
    home: Option<PathBuf>,
    resolved: Vec<Resolved>,
    layers: Layers,
}

impl Settings {
    /// Loads and validates every setting. Missing files are fine; an unreadable or unparsable file,
    /// or a malformed value, is a `ConfigInvalid` error naming the setting and where it came from.
    pub fn load(sources: &Sources) -> Result<Settings> {
        let secrets_path = sources.secrets_path();
        let settings_path = sources.settings_path();
        let layers = Layers {
            env: sources
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.trim().to_string()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            secrets: sources::read_yaml_map(&secrets_path)?,
            settings: sources::read_yaml_map(&settings_path)?,
            secrets_path,
            settings_path,
        };
        warn_about_file_hygiene(&layers);
        let config_dir = sources.config_dir.clone();
        let resolved: Vec<Resolved> = REGISTRY
            .iter()
            .map(|def| match layers.resolve(def) {
                Some((raw, source, via)) => Resolved {
                    def,
                    raw: Some(raw),
                    source,
                    via,
                },
                None => Resolved {
                    def,
                    raw: default_raw(def.default, &config_dir),
                    source: SettingSource::Default,
                    via: def.name,
                },
            })
            .collect();
        // Validate everything up front so that the first error is the first in registry order,
        // whichever field happens to read it below.
        for r in &resolved {
            if let Some(raw) = &r.raw {
                parse::validate(r.def.kind, raw).map_err(|why| invalid(r, &why))?;
            }
        }
        let home = sources::home_from(&sources.env);
        let r = Reader {
            resolved: &resolved,
            home: home.as_deref(),
            config_dir: &config_dir,
        };
        let docker_image = r.get("DOCKER_IMAGE", check_image)?;
        let auth_provider = AuthProvider::from_choice(r.choice("AUTH_PROVIDER")?);
        let url_signing_key = r.get("NODETOOL_URL_SIGNING_KEY", check_signing_key)?;
        let settings = Settings {
            env: Environment::from_choice(r.choice("ENV")?),
            asset_bucket: r.require("ASSET_BUCKET", text)?,
            asset_domain: r.get("ASSET_DOMAIN", domain)?,
            asset_temp_bucket: r.get("ASSET_TEMP_BUCKET", text)?,
            asset_temp_domain: r.get("ASSET_TEMP_DOMAIN", domain)?,
            asset_folder: r.path("ASSET_FOLDER")?,
            s3_endpoint_url: r.get("S3_ENDPOINT_URL", parse::url)?,
            s3_access_key_id: r.get("S3_ACCESS_KEY_ID", text)?,
            s3_secret_access_key: r.get("S3_SECRET_ACCESS_KEY", text)?,
            s3_region: r.require("S3_REGION", text)?,
            s3_timeout: r.require("S3_TIMEOUT_SECONDS", parse::seconds)?,
            supabase_url: r.get("SUPABASE_URL", parse::url)?,
            supabase_key: r.get("SUPABASE_KEY", text)?,
            supabase_jwt_secret: r.get("SUPABASE_JWT_SECRET", text)?,
            nodetool_api_url: r.get("NODETOOL_API_URL", parse::url)?,
            storage_public_url: r.get("NODETOOL_STORAGE_PUBLIC_URL", parse::url_or_path)?,
            max_upload_bytes: r.require("NODETOOL_MAX_UPLOAD_BYTES", parse::size)?,
            file_read_cache_bytes: r.require("FILE_READ_CACHE_BYTES", parse::size)?,
            url_signing_key,
            asset_temp_ttl: r.require("ASSET_TEMP_TTL", parse::seconds)?,
            db_path: r
                .path("DB_PATH")?
                .unwrap_or_else(|| config_dir.join("nodetool.db")),
            database: crate::database::DatabaseSettings::read(&r)?,
            telemetry: crate::telemetry::TelemetrySettings::read(&r)?,
            memcache_host: r.get("MEMCACHE_HOST", text)?,
            memcache_port: r.get("MEMCACHE_PORT", parse::port)?,
            node_cache_max_bytes: r.require("NODE_CACHE_MAX_BYTES", parse::size)?,
            node_cache_ttl: r.require("NODE_CACHE_TTL", parse::seconds)?,
            uri_cache_ttl: r.require("URI_CACHE_TTL", parse::seconds)?,
            font_path: r.path("FONT_PATH")?,
            comfy_folder: r.path("COMFY_FOLDER")?,
            chroma_path: r.path("CHROMA_PATH")?,
            auth_provider,
            server_auth_token: r.get("SERVER_AUTH_TOKEN", text)?,
            auth_cache_ttl: r.require("AUTH_CACHE_TTL", parse::seconds)?,
            enable_terminal_ws: r.require("NODETOOL_ENABLE_TERMINAL_WS", parse::boolean)?,
            thread_pool_size: r.require("THREAD_POOL_SIZE", parse::count)?,
            max_workflow_threads: r.get("MAX_WORKFLOW_THREADS", parse::count)?,
            max_jobs_per_user: r.get("MAX_JOBS_PER_USER", parse::count)?,
            vram_gb: r.get("NODETOOL_VRAM_GB", parse::gigabytes)?,
            max_queued_jobs_per_user: r.require("MAX_QUEUED_JOBS_PER_USER", parse::count)?,
            job_timeout: r.get("JOB_TIMEOUT_SECONDS", parse::seconds)?,
            subprocess_warm_workers: r.require("SUBPROCESS_WARM_WORKERS", warm_workers)?,
            allowed_strategies: match r.get("ALLOWED_STRATEGIES", parse::strategies)? {
                Some(list) => list,
                None if auth_provider.is_multi_user() => vec!["subprocess"],
                None => crate::registry::STRATEGY_CHOICES.to_vec(),
            },
            docker_image,
            docker_allowed_images: r.get("DOCKER_ALLOWED_IMAGES", allowed_images)?,
            docker_cpu_limit: r.require("DOCKER_CPU_LIMIT", parse::cpus)?,
            docker_memory_limit: r.require("DOCKER_MEMORY_LIMIT", parse::size)?,
            docker_shm_size: r.get("DOCKER_SHM_SIZE", parse::size)?,
            docker_pids_limit: r.require("DOCKER_PIDS_LIMIT", parse::integer)?,
            docker_user: r.require("DOCKER_USER", text)?,
            docker_gpu_devices: r.get("DOCKER_GPU_DEVICES", parse::list)?,
            docker_pull_policy: r.choice("DOCKER_PULL_POLICY")?,
            workspace_dir: r.path("NODETOOL_WORKSPACE_DIR")?,
            ffmpeg_path: r.require("FFMPEG_PATH", text)?,
            ffmpeg_timeout: r.require("FFMPEG_TIMEOUT_SECONDS", parse::seconds)?,
            media: crate::media::MediaSettings::read(&r)?,
            python: PythonSettings {
                interpreter: r.path("NODETOOL_PYTHON")?,
                workers: r.require("NODETOOL_PYTHON_WORKERS", parse::count)?,
                max_frame_bytes: r.require("NODETOOL_BRIDGE_MAX_FRAME_SIZE", frame_size)?,
                startup_timeout: r.require("NODETOOL_PYTHON_STARTUP_TIMEOUT", parse::seconds)?,
                health_timeout: r.require("NODETOOL_PYTHON_HEALTH_TIMEOUT", parse::seconds)?,
            },
            server: crate::server::ServerSettings::read(&r)?,
            config_dir: config_dir.clone(),
            home,
            resolved,
            layers,
        };
        Ok(settings)
    }

    /// Every registered setting in registry order, with value and source. Unmasked: render
    /// secrets with [`SettingEntry::display_value`] or [`mask`].
    pub fn entries(&self) -> Vec<SettingEntry> {
        self.resolved.iter().map(entry_of).collect()
    }

    /// The entry for one registered setting (canonical name or alias).
    pub fn entry(&self, name: &str) -> Option<SettingEntry> {
        let def = registry::find(name)?;
        self.resolved
            .iter()
            .find(|r| r.def.name == def.name)
            .map(entry_of)
    }

    /// Where a registered setting's value came from (`Default` also when it is unset).
    pub fn source_of(&self, name: &str) -> Option<&SettingSource> {
        let def = registry::find(name)?;
        self.resolved
            .iter()
            .find(|r| r.def.name == def.name)
            .map(|r| &r.source)
    }

    /// Any name, registered or not (e.g. a node's `OPENAI_API_KEY`), by the same precedence:
    /// environment > secrets.yaml > settings.yaml. No defaults; empty values count as unset.
    pub fn lookup(&self, name: &str) -> Option<(&str, SettingSource)> {
        self.layers.get(name)
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    pub fn settings_path(&self) -> &Path {
        &self.layers.settings_path
    }

    pub fn secrets_path(&self) -> &Path {
        &self.layers.secrets_path
    }

    /// `HOME` as the environment gave it, for expanding `~` in paths.
    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    pub fn is_test(&self) -> bool {
        self.env == Environment::Test
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    pub fn is_development(&self) -> bool {
        self.env == Environment::Development
    }

    /// The accepted static bearer tokens: `SERVER_AUTH_TOKEN` split on commas, so a token can be
    /// rotated by listing old and new together.
    pub fn server_auth_tokens(&self) -> Vec<&str> {
        self.server_auth_token
            .as_deref()
            .map(split_tokens)
            .unwrap_or_default()
    }

    /// Re-reads `secrets.yaml` and `settings.yaml` and resolves `SERVER_AUTH_TOKEN` again by the
    /// usual precedence, against the environment captured at load (a process's environment does
    /// not change under it, so an environment value keeps winning over the files). Returns the
    /// tokens, split as [`Settings::server_auth_tokens`] splits them (empty when unset), and where
    /// they came from. Nothing else is re-read: this lets `nodetool serve` rotate the static token
    /// without a restart.
    pub fn reload_server_auth_tokens(&self) -> Result<(Vec<String>, SettingSource)> {
        let layers = Layers {
            env: self.layers.env.clone(),
            secrets: sources::read_yaml_map(&self.layers.secrets_path)?,
            secrets_path: self.layers.secrets_path.clone(),
            settings: sources::read_yaml_map(&self.layers.settings_path)?,
            settings_path: self.layers.settings_path.clone(),
        };
        let def = registry::find("SERVER_AUTH_TOKEN").ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "SERVER_AUTH_TOKEN is not registered")
                .with_operation("config.reload")
        })?;
        Ok(match layers.resolve(def) {
            Some((raw, source, _)) => (
                split_tokens(&raw).into_iter().map(str::to_owned).collect(),
                source,
            ),
            None => (Vec::new(), SettingSource::Default),
        })
    }
}

fn split_tokens(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Lists settings with their sources, secrets masked, so that logging a `Settings` leaks nothing.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        map.entry(&"config_dir", &self.config_dir.display());
        for e in self.entries() {
            if let Some(v) = e.display_value(false) {
                map.entry(&e.name, &format_args!("{v} ({})", e.source.label()));
            }
        }
        map.finish()
    }
}

fn entry_of(r: &Resolved) -> SettingEntry {
    SettingEntry {
        name: r.def.name,
        value: r.raw.clone(),
        source: r.source.clone(),
        description: r.def.description,
        secret: r.def.secret,
        via_alias: (r.via != r.def.name).then_some(r.via),
    }
}

fn default_raw(default: DefaultValue, config_dir: &Path) -> Option<String> {
    match default {
        DefaultValue::None => None,
        DefaultValue::Value(v) => Some(v.to_string()),
        DefaultValue::CpuCount => Some(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string(),
        ),
        DefaultValue::HalfHostMemory => {
            Some(format!("{}m", crate::docker_defaults().memory_bytes >> 20))
        }
        DefaultValue::InConfigDir(name) => Some(config_dir.join(name).display().to_string()),
    }
}

/// What a Docker job gets when no `DOCKER_*` limit is set: the strongest isolation is safe by
/// default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DockerDefaults {
    /// The CPUs this process may use.
    pub cpus: f64,
    /// Half the host's memory, at most [`DOCKER_MEMORY_CAP`] (2 GiB when `/proc/meminfo` is
    /// unreadable).
    pub memory_bytes: u64,
    pub pids: i64,
}

/// The most memory a Docker job gets by default, however large the host.
pub const DOCKER_MEMORY_CAP: u64 = 8 << 30;

/// The default Docker job limits on this host (`DOCKER_CPU_LIMIT`, `DOCKER_MEMORY_LIMIT`,
/// `DOCKER_PIDS_LIMIT`).
pub fn docker_defaults() -> DockerDefaults {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let memory_bytes = host_memory_bytes()
        .map(|total| (total / 2).min(DOCKER_MEMORY_CAP))
        .unwrap_or(2 << 30)
        // Whole MiB, so `settings show` prints it exactly.
        & !((1 << 20) - 1);
    DockerDefaults {
        cpus,
        memory_bytes,
        pids: 512,
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Each entry a valid image reference (`name:tag`, never `latest`), or a prefix ending in `*`.
fn allowed_images(raw: &str) -> Parsed<Vec<String>> {
    let items = parse::list(raw)?;
    for item in &items {
        if item.ends_with('*') {
            continue;
        }
        check_image(item).map_err(|why| format!("lists {item:?}, which {why}"))?;
    }
    Ok(items)
}

/// `NAME=value from SOURCE why`, with secret values masked.
fn invalid(r: &Resolved, why: &str) -> Error {
    let raw = r.raw.as_deref().unwrap_or("");
    let shown = if r.def.secret {
        parse::redact(r.def.kind, raw)
    } else {
        raw.to_string()
    };
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("{}={} from {} {}", r.via, shown, r.source, why),
    )
    .with_operation("config.load")
    .with_context("setting", r.def.name)
}

/// Typed access to the resolved values during [`Settings::load`].
pub(crate) struct Reader<'a> {
    resolved: &'a [Resolved],
    pub(crate) home: Option<&'a Path>,
    config_dir: &'a Path,
}

impl Reader<'_> {
    fn find(&self, name: &str) -> Result<&Resolved> {
        self.resolved
            .iter()
            .find(|r| r.def.name == name)
            .ok_or_else(|| Error::unexpected(format!("setting {name} is not registered")))
    }

    pub(crate) fn get<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Result<Option<T>> {
        let r = self.find(name)?;
        match &r.raw {
            None => Ok(None),
            Some(raw) => parse(raw).map(Some).map_err(|why| invalid(r, &why)),
        }
    }

    /// For settings with a default, which therefore always have a value.
    pub(crate) fn require<T>(&self, name: &str, parse: impl Fn(&str) -> Parsed<T>) -> Result<T> {
        self.get(name, parse)?
            .ok_or_else(|| Error::unexpected(format!("setting {name} has no default")))
    }

    pub(crate) fn choice(&self, name: &str) -> Result<&'static str> {
        let r = self.find(name)?;
        match r.def.kind {
            ValueKind::Choice(choices) => self.require(name, |raw| parse::choice(raw, choices)),
            _ => Err(Error::unexpected(format!("setting {name} is not a choice"))),
        }
    }

    fn path(&self, name: &str) -> Result<Option<PathBuf>> {
        let r = self.find(name)?;
        if r.source == SettingSource::Default {
            if let DefaultValue::InConfigDir(file) = r.def.default {
                return Ok(Some(self.config_dir.join(file)));
            }
        }
        self.get(name, |raw| Ok(parse::path(raw, self.home)))
    }
}

/// `SUBPROCESS_WARM_WORKERS`: each is a whole process kept idle, so a bound keeps a typo
/// (`2000`) from starting thousands.
fn warm_workers(raw: &str) -> Parsed<usize> {
    let n = parse::integer(raw)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= 64)
        .ok_or_else(|| "is not a worker count from 0 to 64".to_owned())
}

fn text(raw: &str) -> Parsed<String> {
    Ok(raw.to_string())
}

/// `ASSET_DOMAIN`-style values: a host (and optional path) that URLs are built on; trailing
/// slashes removed so that `https://{domain}/{key}` has exactly one slash.
fn domain(raw: &str) -> Parsed<String> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.chars().any(char::is_whitespace) {
        return Err("is not a domain (e.g. cdn.example.com)".into());
    }
    Ok(trimmed.to_string())
}

/// Images must carry a tag (or digest) other than `latest`, so that a workflow does not drift.
fn check_image(raw: &str) -> Parsed<String> {
    // The tag follows the last ':' of the last path segment (a registry host may carry a port).
    let last = raw.rsplit('/').next().unwrap_or(raw);
    if last.contains('@') {
        return Ok(raw.to_string());
    }
    match last.split_once(':') {
        Some((name, tag)) if !name.is_empty() && !tag.is_empty() && tag != "latest" => {
            Ok(raw.to_string())
        }
        Some((_, "latest")) => {
            Err("uses the :latest tag; name a fixed tag so that workflows do not drift".into())
        }
        _ => Err("is not a tagged image reference (e.g. nodetool-worker:0.1.0)".into()),
    }
}

/// A frame length prefix is 32 bits; below 1 MiB no node result fits.
fn frame_size(raw: &str) -> Parsed<u64> {
    let n = parse::size(raw)?;
    if !(1024 * 1024..=u64::from(u32::MAX)).contains(&n) {
        return Err("must be between 1 MiB and 4 GiB".into());
    }
    Ok(n)
}

fn check_signing_key(raw: &str) -> Parsed<String> {
    if raw.chars().count() < 16 {
        return Err("is too short for a signing key (at least 16 characters)".into());
    }
    Ok(raw.to_string())
}

/// Secrets belong in secrets.yaml, and secrets.yaml should not be readable by others. Both are
/// warnings, not errors: the values still work.
fn warn_about_file_hygiene(layers: &Layers) {
    for def in REGISTRY.iter().filter(|d| d.secret) {
        if layers.settings.contains_key(def.name) {
            tracing::warn!(
                setting = def.name,
                path = %layers.settings_path.display(),
                "secret stored in settings.yaml; move it to secrets.yaml"
            );
        }
    }
    #[cfg(unix)]
    if !layers.secrets.is_empty() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&layers.secrets_path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %layers.secrets_path.display(),
                    "secrets.yaml is readable by other users; chmod 600 it"
                );
            }
        }
    }
}
