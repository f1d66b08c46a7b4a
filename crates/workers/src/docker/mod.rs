//! The Docker strategy: one hardened container per job, running `nodetool worker` from the image
//! `nodetool docker build-image` made; the request frame goes to the container's stdin and event
//! frames come back on its stdout (the shared [`crate::protocol`]); streamed inputs and call
//! replies are frames on the same stdin, written by one writer task
//! ([`crate::protocol::pump_frames`]). The container's storage, temp storage, node cache and asset
//! records are the parent's, served by a [`CallHandler`] beside the frame reader
//! ([`DockerStrategy::with_services`]): the container keeps network `none` and gets no
//! credentials.
//!
//! - [`DockerConfig`]: limits, user, network, mounts and pull policy, from settings.
//! - [`DockerStrategy`]: [`ExecutionStrategy`] over bollard, plus [`DockerStrategy::reap_leftovers`].
//! - [`image`]: the `FROM scratch` worker image (binary + its shared libraries).

pub mod config;
pub mod image;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, JobId, Result};
use nodetool_engine::EventSink;

use crate::calls::{CallHandler, CallScope, WorkerServices};
use crate::protocol::{WorkerStdin, MAX_FRAME_BYTES};
use crate::session::{self, Exit, Session, StderrTail, WorkerControl};
use nodetool_exec::sink::TrackingSink;
use nodetool_exec::strategy::{
    Capabilities, ExecutionStrategy, JobError, JobHandle, JobSpec, StrategyKind, WorkerRef,
};

/// The engine client crate, re-exported so callers need not pin its version.
pub use bollard;
pub use config::{instance_id, DockerConfig, PullPolicy, INSTANCE_LABEL, JOB_LABEL, OWNER_LABEL};

/// How long a finished worker gets to exit after its outcome frame (or EOF) before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Bytes of the worker's stderr kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

/// Per-job choices beyond [`JobSpec`] (which has no Docker fields).
#[derive(Debug, Clone, Default)]
pub struct DockerJobOptions {
    /// Image to run instead of [`DockerConfig::image`] (a request's `docker_image`).
    pub image: Option<String>,
    /// Network granted to this job (`host` is refused). `None`: the config's (default `none`).
    pub network: Option<String>,
}

/// Runs each job in its own container. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct DockerStrategy {
    docker: Docker,
    config: Arc<DockerConfig>,
    /// Images known to be present, so the per-job path skips an inspect round trip.
    present: Mutex<HashSet<String>>,
    /// What containers get through calls (their storage, cache and asset records).
    services: Option<WorkerServices>,
}

fn engine_unavailable(
    socket: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "the docker execution strategy cannot reach the Docker engine at unix://{} \
             (is the daemon running, and may this user open the socket?)",
            socket.display()
        ),
    )
    .with_operation("docker.connect")
    .with_context("socket", socket.display())
    .with_source(source)
}

/// A bollard client for the engine at `socket`, with the API version negotiated (the engine
/// may be older than bollard's default). An absent engine is an `Unavailable` error naming the
/// strategy and the socket.
pub async fn connect_engine(socket: &Path) -> Result<Docker> {
    let path = socket.display().to_string();
    let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|e| engine_unavailable(socket, e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| engine_unavailable(socket, e))
}

fn missing_image(image: &str, policy: PullPolicy, why: Option<String>) -> Error {
    let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
    Error::new(
        ErrorKind::NotFound,
        format!(
            "docker image {image} is not present (pull policy {policy}){why}; \
             build it with `nodetool docker build-image --tag {image}`"
        ),
    )
    .with_operation("docker.image")
    .with_context("image", image)
}

fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

impl DockerStrategy {
    /// Connects to the engine named by `config.socket` (checked now, so a missing engine is
    /// reported at start-up rather than at the first job).
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        config.validate()?;
        let docker = connect_engine(&config.socket).await?;
        Ok(Self {
            docker,
            config: Arc::new(config),
            present: Mutex::new(HashSet::new()),
            services: None,
        })
    }

    /// Lends `services` (the parent's storages, node cache and asset records) to every job
    /// container. Without them a container's storage and asset operations fail with
    /// `unsupported`.
    pub fn with_services(mut self, services: WorkerServices) -> Self {
        self.services = Some(services);
        self
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The engine client (tests inspect containers with it).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Makes sure `image` is present according to the pull policy. A missing image that cannot
    /// be pulled is a `NotFound` error naming `nodetool docker build-image`.
    pub async fn ensure_image(&self, image: &str) -> Result<()> {
        image::check_tag(image)?;
        let policy = self.config.pull_policy;
        if policy != PullPolicy::Always && self.is_known(image) {
            return Ok(());
        }
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if is_status(&e, 404) => false,
            Err(e) => return Err(engine_unavailable(&self.config.socket, e)),
        };
        match (policy, present) {
            (PullPolicy::Never, false) => return Err(missing_image(image, policy, None)),
            (PullPolicy::Never | PullPolicy::Missing, true) => {}
            (PullPolicy::Missing, false) | (PullPolicy::Always, _) => {
                if let Err(e) = self.pull(image).await {
                    return Err(missing_image(
                        image,
                        policy,
                        Some(format!("pull failed: {e}")),
                    ));
                }
            }
        }
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_owned());
        Ok(())
    }

    fn is_known(&self, image: &str) -> bool {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(image)
    }

    fn forget(&self, image: &str) {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(image);
    }

    async fn pull(&self, image: &str) -> std::result::Result<(), bollard::errors::Error> {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok(())
    }

    /// Removes the job containers (labelled [`JOB_LABEL`]) a previous process of this instance
    /// left, as [`reap_verdict`] decides: ours whose owner process is gone (running or not),
    /// and those of no instance (older versions) once they have exited. Another instance's
    /// containers on a shared engine, and a live process's (a `nodetool run` on the same config
    /// folder, say), are never touched. Returns how many were removed. The server calls this on
    /// start.
    pub async fn reap_leftovers(&self) -> Result<usize> {
        let mut filters = std::collections::HashMap::new();
        filters.insert("label".to_owned(), vec![JOB_LABEL.to_owned()]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_unavailable(&self.config.socket, e))?;
        let now = chrono::Utc::now().timestamp();
        let mut removed = 0;
        for c in list {
            let Some(id) = c.id else { continue };
            let label = |name: &str| c.labels.as_ref().and_then(|l| l.get(name)).cloned();
            let instance = label(config::INSTANCE_LABEL);
            let owner = label(config::OWNER_LABEL);
            let owner_alive = owner
                .as_deref()
                .is_some_and(nodetool_exec::reap::process_alive);
            let seen = Seen {
                instance: instance.as_deref(),
                owner_alive,
                state: c.state,
                age_secs: c.created.map(|t| now.saturating_sub(t)),
            };
            let force = match reap_verdict(&seen, self.config.instance_id.as_deref()) {
                Verdict::Keep(why) => {
                    tracing::debug!(container = %id, instance = ?instance, owner = ?owner, state = ?c.state, why, "job container left alone");
                    continue;
                }
                Verdict::Remove { force } => force,
            };
            match remove_reaped(&self.docker, &id, force).await {
                Ok(true) => removed += 1,
                Ok(false) => {
                    tracing::debug!(container = %id, "job container started or went away while being reaped; left alone")
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot reap a leftover job container")
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "reaped leftover job containers");
        }
        Ok(removed)
    }

    /// Removes job workspaces (`<workspace_root>/nodetool-job-*`) that no existing job
    /// container uses and that nothing has changed for `min_age` (a job about to create its
    /// container has a fresh one). A killed server's jobs leave theirs behind; the server calls
    /// this on start, after [`reap_leftovers`](Self::reap_leftovers), and so does
    /// `nodetool storage gc`. Returns how many it removed.
    pub async fn reap_workspaces(&self, min_age: Duration) -> Result<usize> {
        let mut filters = std::collections::HashMap::new();
        filters.insert("label".to_owned(), vec![JOB_LABEL.to_owned()]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let live: HashSet<String> = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_unavailable(&self.config.socket, e))?
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect();
        let root = self.config.workspace_root.clone();
        let removed = tokio::task::spawn_blocking(move || stale_workspaces(&root, &live, min_age))
            .await
            .map_err(|e| Error::unexpected("the workspace reaper failed").with_source(e))?;
        if removed > 0 {
            tracing::info!(removed, "removed job workspaces left by a previous run");
        }
        Ok(removed)
    }

    /// Starts `spec` with per-job Docker options (image, granted network).
    pub async fn start_with(
        &self,
        spec: JobSpec,
        sink: Arc<dyn EventSink>,
        options: DockerJobOptions,
    ) -> Result<JobHandle> {
        let mut config = (*self.config).clone();
        if let Some(net) = options.network {
            config::check_network(&net)?;
            config.network = Some(net);
        }
        // The embedding caller's choice (options) is trusted; a request's goes through the
        // allow-list.
        let image = match options.image {
            Some(image) => image,
            None => config.image_for(spec.docker_image.as_deref())?,
        };
        self.ensure_image(&image).await?;

        let workspace = prepare_workspace(&config, &spec.job_id).await?;
        let body = match config.container_body(&spec, &image, &workspace) {
            Ok(b) => b,
            Err(e) => {
                remove_workspace(workspace).await;
                return Err(e);
            }
        };
        let name = container_name(&spec.job_id);
        let create = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await;
        let id = match create {
            Ok(r) => r.id,
            Err(e) => {
                remove_workspace(workspace).await;
                if is_status(&e, 404) {
                    self.forget(&image);
                    return Err(missing_image(
                        &image,
                        config.pull_policy,
                        Some(e.to_string()),
                    ));
                }
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "the docker execution strategy cannot create the job container",
                )
                .with_operation("docker.create")
                .with_context("job_id", &spec.job_id)
                .with_context("image", &image)
                .with_source(e));
            }
        };
        let attached = async {
            let opts = AttachContainerOptionsBuilder::default()
                .stdin(true)
                .stdout(true)
                .stderr(true)
                .stream(true)
                .build();
            let attached = self.docker.attach_container(&id, Some(opts)).await?;
            self.docker
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await?;
            Ok::<_, bollard::errors::Error>(attached)
        }
        .await;
        let attached = match attached {
            Ok(a) => a,
            Err(e) => {
                if let Err(re) = remove_container(&self.docker, &id).await {
                    tracing::warn!(container = %id, error = %re, "cannot remove a container that failed to start");
                }
                remove_workspace(workspace).await;
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "the docker execution strategy cannot start the job container",
                )
                .with_operation("docker.start")
                .with_context("job_id", &spec.job_id)
                .with_context("container", &id)
                .with_source(e));
            }
        };
        tracing::debug!(job_id = %spec.job_id, container = %id, image = %image, "job container started");

        let cancel = CancellationToken::new();
        let job_id = spec.job_id.clone();
        let stdin = WorkerStdin::new(spec.has_input_feeds());
        let inputs = stdin.inputs.clone();
        let calls = self.services.as_ref().map(|services| {
            let scope = CallScope::for_job(&spec, services.keys);
            (
                services.offer(MAX_FRAME_BYTES),
                CallHandler::new(services.clone(), scope, stdin.tx.clone(), MAX_FRAME_BYTES),
            )
        });
        let tail = StderrTail::new(STDERR_TAIL);
        let control = ContainerControl {
            docker: self.docker.clone(),
            container: id.clone(),
            workspace,
            tail: tail.clone(),
        };
        let session = Session {
            sink: TrackingSink::new(spec.job_id.clone(), sink),
            spec,
            cancel: cancel.clone(),
            stdout: stdout_reader(attached.output, tail),
            stdin: attached.input,
            frames: stdin,
            calls,
            max_frame_bytes: MAX_FRAME_BYTES,
            grace: EXIT_GRACE,
            started: Instant::now(),
            what: "docker worker",
        };
        let task = tokio::spawn(async move { session::run(session, &control).await });
        let handle = JobHandle::new(job_id, cancel, task).with_worker(WorkerRef::Container(id));
        Ok(match inputs {
            Some(inputs) => handle.with_inputs(inputs),
            None => handle,
        })
    }
}

/// `nodetool-job-<id>`: a [`JobId`] holds only letters, digits, `-` and `_`, all of which
/// Docker takes in a container name.
fn container_name(job_id: &JobId) -> String {
    format!("nodetool-job-{job_id}")
}

#[async_trait]
impl ExecutionStrategy for DockerStrategy {
    fn name(&self) -> StrategyKind {
        StrategyKind::Docker
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_crashes: true,
            memory_limit: true,
            // Only the pids limit of the OS limits maps onto a container.
            os_limits: false,
            isolated_env: true,
        }
    }

    fn admit(&self, spec: &JobSpec) -> Result<()> {
        self.config
            .image_for(spec.docker_image.as_deref())
            .map(drop)
    }

    async fn start(&self, spec: JobSpec, sink: Arc<dyn EventSink>) -> Result<JobHandle> {
        self.start_with(spec, sink, DockerJobOptions::default())
            .await
    }
}

/// A workspace untouched for this long whose container is gone belongs to no job.
pub const STALE_WORKSPACE: Duration = Duration::from_secs(120);

fn stale_workspaces(root: &Path, live: &HashSet<String>, min_age: Duration) -> usize {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %root.display(), error = %e, "cannot list job workspaces");
            }
            return 0;
        }
    };
    let cutoff = std::time::SystemTime::now()
        .checked_sub(min_age)
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with("nodetool-job-") || live.contains(&name) {
            continue;
        }
        // Not a link (never followed), a directory, and idle for `min_age`.
        let Ok(md) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !md.is_dir() || md.modified().map_or(true, |m| m > cutoff) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale job workspace")
            }
        }
    }
    removed
}

/// Creates `<workspace_root>/<job_id>`, owned by the container user so the job can write to it.
async fn prepare_workspace(config: &DockerConfig, job_id: &JobId) -> Result<PathBuf> {
    let dir = config.workspace_root.join(container_name(job_id));
    let owner = config::numeric_user(&config.user);
    let d = dir.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&d)?;
        use std::os::unix::fs::PermissionsExt;
        let chowned =
            owner.is_some_and(|(u, g)| std::os::unix::fs::chown(&d, Some(u), Some(g)).is_ok());
        // Without the right to chown (not root), the directory must be writable by anyone.
        let mode = if chowned { 0o700 } else { 0o777 };
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
    })
    .await
    .map_err(|e| Error::unexpected("the workspace task failed").with_source(e))?
    .map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            "cannot create the job's workspace directory",
        )
        .with_operation("docker.workspace")
        .with_context("path", dir.display())
        .with_source(e)
    })?;
    Ok(dir)
}

async fn remove_workspace(dir: PathBuf) {
    let d = dir.clone();
    let res = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d)).await;
    if let Ok(Err(e)) = res {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove a job workspace");
        }
    }
}

/// What the reaper knows about a labelled job container.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    instance: Option<&'a str>,
    /// Its [`OWNER_LABEL`] names a process that still runs.
    owner_alive: bool,
    state: Option<ContainerSummaryStateEnum>,
    /// Seconds since it was created.
    age_secs: Option<i64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep(&'static str),
    /// `force`: kill it if it runs. Without, the engine refuses a container that started in
    /// the meantime, which is then left alone.
    Remove {
        force: bool,
    },
}

/// A container of no instance that was created and never started is taken for a leftover only
/// after this long: until then it is an older server's job about to start.
const STALE_CREATED_SECS: i64 = 3600;

/// Which leftover job containers a starting server removes.
fn reap_verdict(seen: &Seen<'_>, mine: Option<&str>) -> Verdict {
    use ContainerSummaryStateEnum as S;
    match (seen.instance, mine) {
        (Some(theirs), Some(mine)) if theirs == mine => {
            if seen.owner_alive {
                Verdict::Keep("made by a process of this instance that still runs")
            } else {
                Verdict::Remove { force: true }
            }
        }
        (Some(_), _) => Verdict::Keep("another instance's"),
        (None, _) => match seen.state {
            Some(S::EXITED | S::DEAD) => Verdict::Remove { force: false },
            Some(S::CREATED) if seen.age_secs.is_some_and(|a| a > STALE_CREATED_SECS) => {
                Verdict::Remove { force: false }
            }
            // Running, paused, restarting, being removed, or created a moment ago (about to
            // start): an older server's live job, for all we know.
            _ => Verdict::Keep("of no instance and not known to have ended"),
        },
    }
}

/// Removes a reaped container; `Ok(false)`: it was gone already or (not forced) it started.
async fn remove_reaped(
    docker: &Docker,
    id: &str,
    force: bool,
) -> std::result::Result<bool, bollard::errors::Error> {
    if force {
        return remove_container(docker, id).await.map(|()| true);
    }
    let opts = RemoveContainerOptionsBuilder::default().v(true).build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(true),
        // 409: running now (or being removed by a concurrent reap); 404: gone.
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn remove_container(
    docker: &Docker,
    id: &str,
) -> std::result::Result<(), bollard::errors::Error> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        // Already gone (or being removed by a concurrent reap): nothing left to do.
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e),
    }
}

type Output = Pin<
    Box<dyn futures::Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The Docker side of a [`session`]: one job container and its workspace.
struct ContainerControl {
    docker: Docker,
    container: String,
    workspace: PathBuf,
    tail: Arc<StderrTail>,
}

impl ContainerControl {
    async fn signal(&self, signal: &str) {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        if let Err(e) = self
            .docker
            .kill_container(&self.container, Some(opts))
            .await
        {
            // 409: not running any more, which is what we wanted.
            if !is_status(&e, 409) && !is_status(&e, 404) {
                tracing::warn!(container = %self.container, signal, error = %e, "cannot signal a job container");
            }
        }
    }
}

#[async_trait]
impl WorkerControl for ContainerControl {
    async fn terminate(&self) {
        self.signal("SIGTERM").await;
    }

    async fn kill(&self) {
        self.signal("SIGKILL").await;
    }

    async fn wait_exit(&self, grace: Duration) -> Exit {
        let wait = async {
            let mut s = self.docker.wait_container(
                &self.container,
                None::<bollard::query_parameters::WaitContainerOptions>,
            );
            match s.next().await {
                Some(Ok(r)) => Some(r.status_code),
                // bollard reports a non-zero exit as an error carrying the code.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Some(code)
                }
                _ => None,
            }
        };
        match tokio::time::timeout(grace, wait).await {
            Ok(code) => code.map(Exit::from_shell_code).unwrap_or_default(),
            Err(_) => {
                self.kill().await;
                Exit::default()
            }
        }
    }

    async fn crashed(&self, exit: &Exit) -> JobError {
        let state = self
            .docker
            .inspect_container(
                &self.container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|c| c.state);
        let oom = state.as_ref().and_then(|s| s.oom_killed).unwrap_or(false);
        if oom {
            return JobError::new(
                ErrorKind::TooLarge,
                "the job ran out of memory: the docker worker was killed by the container's \
                 memory limit (out of memory; raise DOCKER_MEMORY_LIMIT or resource_limits.memory_mb)",
            );
        }
        let exit = if exit.known() {
            *exit
        } else {
            state
                .as_ref()
                .and_then(|s| s.exit_code)
                .map(Exit::from_shell_code)
                .unwrap_or_default()
        };
        JobError::new(
            ErrorKind::Unexpected,
            format!(
                "the docker worker {exit} before reporting an outcome (the job crashed){}",
                stderr_hint(&self.tail)
            ),
        )
    }

    async fn cleanup(&self) {
        if let Err(e) = remove_container(&self.docker, &self.container).await {
            tracing::warn!(container = %self.container, error = %e, "cannot remove a job container");
        }
        remove_workspace(self.workspace.clone()).await;
    }
}

/// stdout of the attach stream as bytes; stderr goes to the (bounded) tail buffer.
fn stdout_reader(output: Output, tail: Arc<StderrTail>) -> impl AsyncRead + Unpin + Send {
    let stdout = output.filter_map(move |item| {
        let out = match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                Some(Ok(message))
            }
            Ok(LogOutput::StdErr { message }) => {
                tail.push(&message);
                None
            }
            Ok(LogOutput::StdIn { .. }) => None,
            Err(e) => Some(Err(std::io::Error::other(e))),
        };
        futures::future::ready(out)
    });
    tokio_util::io::StreamReader::new(Box::pin(stdout).map(|r: std::io::Result<Bytes>| r))
}

fn stderr_hint(tail: &StderrTail) -> String {
    let text = tail.text();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; worker stderr (tail): {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::{reap_verdict, Seen, Verdict, STALE_CREATED_SECS};
    use bollard::models::ContainerSummaryStateEnum as S;

    fn seen(instance: Option<&str>, owner_alive: bool, state: S, age: i64) -> Seen<'_> {
        Seen {
            instance,
            owner_alive,
            state: Some(state),
            age_secs: Some(age),
        }
    }

    #[test]
    fn ours_is_removed_unless_its_process_still_runs() {
        let mine = Some("me");
        for state in [S::RUNNING, S::EXITED, S::CREATED] {
            assert_eq!(
                reap_verdict(&seen(Some("me"), false, state, 5), mine),
                Verdict::Remove { force: true },
                "{state:?}"
            );
            assert!(matches!(
                reap_verdict(&seen(Some("me"), true, state, 5), mine),
                Verdict::Keep(_)
            ));
        }
    }

    #[test]
    fn another_instance_is_never_touched() {
        for mine in [Some("me"), None] {
            for state in [S::RUNNING, S::EXITED, S::DEAD, S::CREATED] {
                assert!(matches!(
                    reap_verdict(&seen(Some("them"), false, state, 99_999), mine),
                    Verdict::Keep(_)
                ));
            }
        }
    }

    #[test]
    fn no_instance_is_removed_only_once_ended_and_never_by_force() {
        let mine = Some("me");
        for state in [S::EXITED, S::DEAD] {
            assert_eq!(
                reap_verdict(&seen(None, false, state, 1), mine),
                Verdict::Remove { force: false }
            );
        }
        // A container created a moment ago is about to start: a concurrent start is not a
        // leftover (a restarting server used to kill it).
        for state in [
            S::CREATED,
            S::RUNNING,
            S::PAUSED,
            S::RESTARTING,
            S::REMOVING,
        ] {
            assert!(
                matches!(
                    reap_verdict(&seen(None, false, state, 1), mine),
                    Verdict::Keep(_)
                ),
                "{state:?}"
            );
        }
        assert_eq!(
            reap_verdict(&seen(None, false, S::CREATED, STALE_CREATED_SECS + 1), mine),
            Verdict::Remove { force: false }
        );
        let unknown = Seen {
            instance: None,
            owner_alive: false,
            state: None,
            age_secs: None,
        };
        assert!(matches!(reap_verdict(&unknown, mine), Verdict::Keep(_)));
    }
}
