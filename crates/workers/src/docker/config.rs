//! [`DockerConfig`] (plain data, from settings) and the hardened container definition built
//! from it for one job.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount, MountTypeEnum};

use nodetool_core::{Error, Result};

use nodetool_exec::strategy::{JobSpec, ResourceLimits};

/// The label every job container carries (`nodetool.job_id=<id>`); reaping looks for it.
pub const JOB_LABEL: &str = "nodetool.job_id";

/// The label naming the server instance that made a job container (`nodetool.instance=<id>`):
/// on a shared Docker engine a server reaps only its own containers.
pub const INSTANCE_LABEL: &str = "nodetool.instance";

/// The label naming the process that made a job container (`nodetool.owner=<pid>:<start>`, as
/// [`nodetool_exec::reap::this_process`] says it): two processes can share an instance id (a
/// server and a `nodetool run` on one config folder), and a restarting server must not take the
/// other's live job for its own leftover.
pub const OWNER_LABEL: &str = "nodetool.owner";

/// This runtime's instance id, kept next to its database (`{DB_PATH}.instance`) so that it
/// survives restarts; created (a new UUIDv7) the first time.
pub fn instance_id(db_path: &std::path::Path) -> Result<String> {
    let path = std::path::PathBuf::from(format!("{}.instance", db_path.display()));
    let io_err = |e: std::io::Error| {
        Error::from(e)
            .with_operation("docker.instance_id")
            .with_context("file", path.display())
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let id = nodetool_core::id::new_id();
    std::fs::write(&path, format!("{id}\n")).map_err(io_err)?;
    Ok(id)
}

/// Where the job's workspace is mounted in the container.
pub const WORKSPACE_IN_CONTAINER: &str = "/workspace";

/// Where the asset folder is mounted (read-only) when storage is local.
pub const ASSETS_IN_CONTAINER: &str = "/assets";

/// When to pull the job image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Never pull: a missing image is an error naming `nodetool docker build-image`.
    Never,
    /// Pull only when the image is not present locally.
    #[default]
    Missing,
    /// Pull before every first use (fails without a registry).
    Always,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Never => "never",
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PullPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "never" => Ok(PullPolicy::Never),
            "missing" | "if-not-present" | "if_not_present" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            other => Err(Error::config(format!(
                "unknown docker pull policy {other:?}: expected never, missing or always"
            ))
            .with_operation("docker.config")),
        }
    }
}

/// Everything the Docker strategy needs, as plain data. Build with [`DockerConfig::from_settings`]
/// (or by hand in tests) and adjust fields before [`super::DockerStrategy::connect`].
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// Unix socket of the engine.
    pub socket: PathBuf,
    /// Image for jobs that do not name one (`DOCKER_IMAGE`; default [`super::image::default_image`]).
    pub image: String,
    /// `DOCKER_ALLOWED_IMAGES`: the images a request's `docker_image` may name besides
    /// [`DockerConfig::image`] (always allowed). An entry ending in `*` matches by prefix
    /// (`nodetool-worker:*`). Empty: requests may name only the default image.
    pub allowed_images: Vec<String>,
    pub pull_policy: PullPolicy,
    /// `DOCKER_CPU_LIMIT`, in CPUs (→ `NanoCpus`).
    pub cpu_limit: Option<f64>,
    /// `DOCKER_MEMORY_LIMIT` in bytes (→ `Memory`, and `MemorySwap` equal so there is no swap).
    pub memory_limit: Option<u64>,
    /// `DOCKER_SHM_SIZE` in bytes.
    pub shm_size: Option<u64>,
    /// `DOCKER_PIDS_LIMIT`.
    pub pids_limit: Option<i64>,
    /// `DOCKER_USER` (`uid:gid`); root is refused.
    pub user: String,
    /// `DOCKER_GPU_DEVICES` (`--gpus "device=0,1"` semantics). `None` or empty: no GPU.
    pub gpu_devices: Option<Vec<String>>,
    /// The network jobs are granted. `None`: `none` (no network at all). `host` is refused.
    pub network: Option<String>,
    /// Host directory under which each job gets `<job_id>/`, mounted at `/workspace`.
    pub workspace_root: PathBuf,
    /// The local asset folder, mounted read-only at `/assets` (only for file storage); under
    /// [`KeyScope::UserPrefix`] only the job's user's `{user}/` folder is (when it exists).
    pub asset_folder: Option<PathBuf>,
    /// This server's instance id ([`instance_id`]), put on every container as
    /// [`INSTANCE_LABEL`]; `None`: containers carry none, and only exited ones are reaped.
    pub instance_id: Option<String>,
    /// Which keys a user owns (the auth provider's [`KeyScope`]).
    pub key_scope: nodetool_core::KeyScope,
    /// Size of the `/tmp` tmpfs, in bytes.
    pub tmp_size: u64,
    /// Run `docker-init` as PID 1, so the worker sees signals like any process does.
    pub init: bool,
    /// Non-secret environment variables passed to the worker (secrets travel in the request
    /// frame, never here; storage and cache need none: the worker uses the parent's).
    pub env: Vec<(String, String)>,
}

impl DockerConfig {
    /// Defaults: the local socket, image `nodetool-worker:<version>`, pull policy `missing`, the
    /// settings' default limits (pids 512, the host's CPUs, half the host's memory up to 8 GiB:
    /// [`nodetool_config::docker_defaults`]), user 1000:1000, no GPU, no network, 64 MiB `/tmp`.
    pub fn new(workspace_root: impl Into<PathBuf>) -> Self {
        let limits = nodetool_config::docker_defaults();
        Self {
            socket: PathBuf::from("/var/run/docker.sock"),
            image: super::image::default_image(),
            allowed_images: Vec::new(),
            pull_policy: PullPolicy::Missing,
            cpu_limit: Some(limits.cpus),
            memory_limit: Some(limits.memory_bytes),
            shm_size: None,
            pids_limit: Some(limits.pids),
            user: "1000:1000".to_owned(),
            gpu_devices: None,
            network: None,
            workspace_root: workspace_root.into(),
            asset_folder: None,
            key_scope: nodetool_core::KeyScope::WholeStore,
            instance_id: None,
            tmp_size: 64 * 1024 * 1024,
            init: true,
            env: Vec::new(),
        }
    }

    /// From the `DOCKER_*` settings. `asset_folder` is the folder to mount when storage is
    /// local (the caller knows which storage it built); `workspace_root` holds job workspaces.
    pub fn from_settings(
        settings: &nodetool_config::Settings,
        workspace_root: impl Into<PathBuf>,
        asset_folder: Option<PathBuf>,
    ) -> Result<Self> {
        let mut c = Self::new(workspace_root);
        if let Some(image) = &settings.docker_image {
            c.image = image.clone();
        }
        c.allowed_images = settings.docker_allowed_images.clone().unwrap_or_default();
        c.cpu_limit = Some(settings.docker_cpu_limit);
        c.memory_limit = Some(settings.docker_memory_limit);
        c.shm_size = settings.docker_shm_size;
        c.pids_limit = Some(settings.docker_pids_limit);
        c.user = settings.docker_user.clone();
        c.gpu_devices = settings.docker_gpu_devices.clone();
        c.pull_policy = settings.docker_pull_policy.parse()?;
        c.asset_folder = asset_folder;
        c.key_scope = nodetool_core::KeyScope::for_auth(settings.auth_provider.is_multi_user());
        c.validate()?;
        Ok(c)
    }

    /// [`DockerConfig::from_settings`] with the runtime's layout: job workspaces under
    /// `{config_dir}/workspaces` (created), and the asset folder mounted read-only when assets
    /// are local files (seed 000: the asset folder is mounted into Docker jobs).
    pub fn for_runtime(settings: &nodetool_config::Settings) -> Result<Self> {
        let asset_folder = match nodetool_config::asset_storage(settings, false)?.plan {
            nodetool_config::StoragePlan::File { root, .. } => Some(root),
            _ => None,
        };
        let workspaces = settings.config_dir().join("workspaces");
        let instance = instance_id(&settings.db_path)?;
        std::fs::create_dir_all(&workspaces).map_err(|e| {
            nodetool_core::Error::from(e)
                .with_operation("docker.config")
                .with_context("dir", workspaces.display())
        })?;
        let mut c = Self::from_settings(settings, workspaces, asset_folder)?;
        c.instance_id = Some(instance);
        // With no network, a worker's spans reach the collector through us (protocol docs, 7).
        c.env.extend(settings.telemetry.worker_env());
        Ok(c)
    }

    /// Checks what Docker would otherwise accept silently: a root user, host networking,
    /// nonsensical limits.
    pub fn validate(&self) -> Result<()> {
        check_user(&self.user)?;
        if let Some(net) = &self.network {
            check_network(net)?;
        }
        if let Some(cpu) = self.cpu_limit {
            if !(cpu.is_finite() && cpu > 0.0) {
                return Err(cfg_err(format!("DOCKER_CPU_LIMIT must be > 0, got {cpu}")));
            }
        }
        if let Some(p) = self.pids_limit {
            if p < 1 {
                return Err(cfg_err(format!("DOCKER_PIDS_LIMIT must be >= 1, got {p}")));
            }
        }
        for (name, v) in [
            ("DOCKER_MEMORY_LIMIT", self.memory_limit),
            ("DOCKER_SHM_SIZE", self.shm_size),
        ] {
            if v.is_some_and(|b| b == 0 || b > i64::MAX as u64) {
                return Err(cfg_err(format!("{name} must be > 0 bytes")));
            }
        }
        if let Some(ids) = &self.gpu_devices {
            if let Some(bad) = ids.iter().find(|d| d.trim().is_empty() || d.contains(',')) {
                return Err(cfg_err(format!(
                    "DOCKER_GPU_DEVICES has an empty or malformed device id {bad:?}"
                )));
            }
        }
        Ok(())
    }

    /// The image a job runs: [`DockerConfig::image`] when the request names none, else the
    /// request's `docker_image` if it is the default image or [`DockerConfig::allowed_images`]
    /// admits it. A malformed or disallowed image is an `InvalidInput` error naming the
    /// setting; nothing falls back silently to another image.
    pub fn image_for(&self, requested: Option<&str>) -> Result<String> {
        let Some(image) = requested else {
            return Ok(self.image.clone());
        };
        super::image::check_tag(image)?;
        let allowed = image == self.image
            || self
                .allowed_images
                .iter()
                .any(|a| match a.strip_suffix('*') {
                    Some(prefix) => image.starts_with(prefix),
                    None => image == a,
                });
        if allowed {
            return Ok(image.to_owned());
        }
        let permitted = std::iter::once(self.image.as_str())
            .chain(self.allowed_images.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ");
        // InvalidInput, not PermissionDenied: the caller can fix it, and the message (which
        // names only images, no secret) reaches them.
        Err(Error::invalid_input(format!(
            "docker_image {image:?} is not allowed here: jobs may run {permitted} \
             (the operator lists more in DOCKER_ALLOWED_IMAGES)"
        ))
        .with_operation("docker.image")
        .with_context("image", image))
    }

    /// The effective memory limit for a job: the smaller of the setting and the request's.
    pub fn memory_for(&self, limits: &ResourceLimits) -> Option<u64> {
        min_some(self.memory_limit, limits.memory_bytes)
    }

    /// The effective pids limit for a job: the smaller of the setting and the request's
    /// `processes`.
    pub fn pids_for(&self, limits: &ResourceLimits) -> Option<i64> {
        let req = limits
            .processes
            .map(|p| i64::try_from(p).unwrap_or(i64::MAX));
        min_some(self.pids_limit, req)
    }

    /// The container definition for one job: every hardening setting in one place so the unit
    /// tests can assert them without an engine.
    pub fn container_body(
        &self,
        spec: &JobSpec,
        image: &str,
        workspace_dir: &std::path::Path,
    ) -> Result<ContainerCreateBody> {
        self.validate()?;
        let network = match &self.network {
            Some(n) => {
                check_network(n)?;
                n.clone()
            }
            None => "none".to_owned(),
        };
        let mut mounts = vec![Mount {
            target: Some(WORKSPACE_IN_CONTAINER.to_owned()),
            source: Some(workspace_dir.display().to_string()),
            typ: Some(MountTypeEnum::BIND),
            read_only: Some(false),
            ..Default::default()
        }];
        let assets = match (&self.asset_folder, self.key_scope) {
            (Some(all), nodetool_core::KeyScope::WholeStore) => Some(all.clone()),
            // Another user's files are not even in the container.
            (Some(all), nodetool_core::KeyScope::UserPrefix) => {
                let owner = if spec.user_id.as_str().is_empty() {
                    "anonymous"
                } else {
                    spec.user_id.as_str()
                };
                Some(all.join(owner)).filter(|d| d.is_dir())
            }
            (None, _) => None,
        };
        if let Some(assets) = &assets {
            mounts.push(Mount {
                target: Some(ASSETS_IN_CONTAINER.to_owned()),
                source: Some(assets.display().to_string()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        for m in &mounts {
            if m.source.as_deref().is_some_and(is_docker_socket) {
                return Err(cfg_err("refusing to mount the Docker socket into a job"));
            }
        }
        let memory = self
            .memory_for(&spec.resource_limits)
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let device_requests = self
            .gpu_devices
            .as_ref()
            .filter(|d| !d.is_empty())
            .map(|ids| {
                // One id per entry: `--gpus "device=0,1"` means devices 0 and 1.
                vec![DeviceRequest {
                    driver: Some(String::new()),
                    count: None,
                    device_ids: Some(ids.iter().map(|d| d.trim().to_owned()).collect()),
                    capabilities: Some(vec![vec!["gpu".to_owned()]]),
                    options: None,
                }]
            });
        let mut tmpfs = HashMap::new();
        tmpfs.insert(
            "/tmp".to_owned(),
            format!("rw,nosuid,nodev,noexec,size={},mode=1777", self.tmp_size),
        );
        let host = HostConfig {
            nano_cpus: self.cpu_limit.map(|c| (c * 1e9).round() as i64),
            memory,
            // Equal to memory: no swap, so a job over its limit is OOM-killed instead of thrashing.
            memory_swap: memory,
            shm_size: self.shm_size.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            pids_limit: self.pids_for(&spec.resource_limits),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            network_mode: Some(network),
            ipc_mode: Some("private".to_owned()),
            privileged: Some(false),
            device_requests,
            mounts: Some(mounts),
            init: Some(self.init),
            auto_remove: Some(false),
            ..Default::default()
        };
        let mut labels = HashMap::new();
        labels.insert(JOB_LABEL.to_owned(), spec.job_id.to_string());
        if let Some(instance) = &self.instance_id {
            labels.insert(INSTANCE_LABEL.to_owned(), instance.clone());
        }
        labels.insert(OWNER_LABEL.to_owned(), nodetool_exec::reap::this_process());
        // Home and scratch live in the workspace and the tmpfs (the root is read-only). Nothing
        // else: the worker reads no settings, and its storage, cache and asset records are the
        // parent's, through calls. The asset folder stays mounted read-only (DESIGN §5) for nodes
        // that read asset files on disk.
        let mut env = vec![
            format!("HOME={WORKSPACE_IN_CONTAINER}"),
            "TMPDIR=/tmp".to_owned(),
        ];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        Ok(ContainerCreateBody {
            image: Some(image.to_owned()),
            user: Some(self.user.clone()),
            env: Some(env),
            labels: Some(labels),
            working_dir: Some(WORKSPACE_IN_CONTAINER.to_owned()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            // Our attach ending closes the worker's stdin, which the worker takes as "parent gone".
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(self.network.is_none()),
            host_config: Some(host),
            ..Default::default()
        })
    }
}

fn min_some<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::config(msg).with_operation("docker.config")
}

fn is_docker_socket(path: &str) -> bool {
    path.ends_with("docker.sock") || path == "/var/run" || path == "/run"
}

/// `host` shares the host's network stack with untrusted code: refused, whatever grants it.
pub fn check_network(network: &str) -> Result<()> {
    let n = network.trim();
    if n.eq_ignore_ascii_case("host") || n.to_ascii_lowercase().starts_with("container:") {
        return Err(cfg_err(format!(
            "network mode {n:?} is refused for jobs: use none (the default) or a dedicated network"
        ))
        .with_context("network", n));
    }
    if n.is_empty() {
        return Err(cfg_err("the granted network name is empty"));
    }
    Ok(())
}

/// Root (by name or uid 0) is refused: jobs run unprivileged.
pub fn check_user(user: &str) -> Result<()> {
    let uid = user.split(':').next().unwrap_or("").trim();
    if uid.is_empty() || uid == "0" || uid.eq_ignore_ascii_case("root") {
        return Err(cfg_err(format!(
            "DOCKER_USER {user:?} would run jobs as root; use an unprivileged uid:gid such as 1000:1000"
        )));
    }
    Ok(())
}

/// `uid:gid` as numbers, when the user is given numerically (used to chown the workspace).
pub fn numeric_user(user: &str) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, g),
        None => (user, user),
    };
    Some((u.trim().parse().ok()?, g.trim().parse().ok()?))
}
