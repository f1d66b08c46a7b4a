//! The subprocess strategy: one `nodetool worker` child per job, in its own process group, with
//! rlimits from the job's `resource_limits`, an environment allow-list, a scratch directory
//! removed afterwards, and SIGTERM → grace → SIGKILL cancellation of the whole group. Streamed
//! inputs travel as frames on the worker's stdin ([`RemoteInputs`](crate::protocol::RemoteInputs)).
//! The worker's storage, temp storage, node cache and asset records are the parent's: its calls
//! are served by a [`CallHandler`] beside the frame reader, with the strategy's
//! [`WorkerServices`] ([`SubprocessStrategy::with_services`]), so the environment carries no
//! storage or cache settings at all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::EventSink;

use crate::calls::{CallHandler, CallScope, WorkerServices};
use crate::protocol::{WorkerStdin, MAX_FRAME_BYTES};
use crate::session::{self, signal_name, Exit, Session, StderrTail, WorkerControl};
use crate::sink::TrackingSink;
use crate::strategy::{
    Capabilities, ExecutionStrategy, JobError, JobHandle, JobSpec, ResourceLimits, StrategyKind,
    WorkerRef,
};

/// Environment variables a worker may inherit (see [`allowed_env`]): locale, search path and
/// logging only. No setting reaches a worker — not storage, cache, database nor config-dir ones —
/// because it reads none: its resources come from the parent through calls.
pub const ENV_ALLOW_LIST: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "RUST_BACKTRACE",
    "RUST_LOG",
];

/// Keeps the variables of `env` a worker may see: [`ENV_ALLOW_LIST`], minus anything in
/// `secret_names` (the settings registry's secret names) and anything whose name suggests a
/// credential (a second line of defence should the list ever grow).
pub fn allowed_env(
    env: &BTreeMap<String, String>,
    secret_names: &[&str],
) -> BTreeMap<String, String> {
    let looks_secret = |k: &str| {
        let k = k.to_ascii_uppercase();
        ["SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL"]
            .iter()
            .any(|w| k.contains(w))
    };
    env.iter()
        .filter(|(k, _)| ENV_ALLOW_LIST.contains(&k.as_str()))
        .filter(|(k, _)| !secret_names.contains(&k.as_str()) && !looks_secret(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How to start workers.
#[derive(Debug, Clone)]
pub struct SubprocessConfig {
    /// The `nodetool` binary (`std::env::current_exe()` in the server; the test binary's path in
    /// tests).
    pub program: PathBuf,
    /// Arguments before nothing else: `["worker"]`.
    pub args: Vec<String>,
    /// The whole environment of the child (it starts from an empty one). Build it with
    /// [`allowed_env`]; `TMPDIR` is set to the job's scratch directory on top.
    pub env: BTreeMap<String, String>,
    /// Where per-job scratch directories go (default: the system temp dir).
    pub scratch_root: Option<PathBuf>,
    /// SIGTERM → SIGKILL grace period.
    pub grace: Duration,
    /// Largest frame accepted from a worker.
    pub max_frame_bytes: usize,
    /// How much of the worker's stderr is kept for error messages.
    pub stderr_tail_bytes: usize,
}

impl SubprocessConfig {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: vec!["worker".to_owned()],
            env: BTreeMap::new(),
            scratch_root: None,
            grace: Duration::from_secs(5),
            max_frame_bytes: MAX_FRAME_BYTES,
            stderr_tail_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug)]
pub struct SubprocessStrategy {
    config: Arc<SubprocessConfig>,
    services: Option<WorkerServices>,
}

impl SubprocessStrategy {
    /// Workers of a strategy without [`WorkerServices`] get no storage, cache or asset records
    /// (their storage and asset operations fail with `unsupported`); give it the parent's with
    /// [`SubprocessStrategy::with_services`].
    pub fn new(config: SubprocessConfig) -> Self {
        Self {
            config: Arc::new(config),
            services: None,
        }
    }

    /// Lends `services` (the parent's storages, node cache and asset records) to every worker.
    pub fn with_services(mut self, services: WorkerServices) -> Self {
        self.services = Some(services);
        self
    }

    pub fn config(&self) -> &SubprocessConfig {
        &self.config
    }
}

fn start_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unavailable, msg)
        .with_operation("exec.subprocess.start")
        .set_temporary(false)
}

#[async_trait]
impl ExecutionStrategy for SubprocessStrategy {
    fn name(&self) -> StrategyKind {
        StrategyKind::Subprocess
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_crashes: true,
            memory_limit: true,
            os_limits: true,
            isolated_env: true,
        }
    }

    async fn start(&self, spec: JobSpec, sink: Arc<dyn EventSink>) -> Result<JobHandle> {
        self.admit(&spec)?;
        let cfg = self.config.clone();
        let mut builder = tempfile::Builder::new();
        builder.prefix("nodetool-job-");
        let scratch = match &cfg.scratch_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .map_err(|e| {
            start_err("cannot create the job's scratch directory")
                .with_context("job_id", &spec.job_id)
                .with_source(e)
        })?;

        let mut cmd = Command::new(&cfg.program);
        cmd.args(&cfg.args)
            .env_clear()
            .envs(&cfg.env)
            .env("TMPDIR", scratch.path())
            // Who this process is, for a restarted parent's reaper (`crate::reap`).
            .env(crate::reap::WORKER_JOB_ENV, &spec.job_id)
            .current_dir(scratch.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if spec.resource_limits.memory_bytes.is_some() {
            // mimalloc (the binary's allocator) maps its 1 GiB arena read-write up front when the
            // kernel overcommits, which RLIMIT_DATA counts in full; committed on demand instead,
            // the limit counts only what the job allocates.
            cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", "0");
        }
        set_rlimits(&mut cmd, &spec.resource_limits);
        let mut child = cmd.spawn().map_err(|e| {
            start_err(format!("cannot start the worker {}", cfg.program.display()))
                .with_context("job_id", &spec.job_id)
                .with_source(e)
        })?;
        let pid = child
            .id()
            .ok_or_else(|| start_err("the worker exited at once"))?;

        let cancel = CancellationToken::new();
        let job_id = spec.job_id.clone();
        let token = cancel.clone();
        let stdin = WorkerStdin::new(spec.has_input_feeds());
        let inputs = stdin.inputs.clone();
        let calls = self.services.as_ref().map(|services| {
            let scope = CallScope::for_job(&spec, services.keys);
            (
                services.offer(cfg.max_frame_bytes),
                CallHandler::new(
                    services.clone(),
                    scope,
                    stdin.tx.clone(),
                    cfg.max_frame_bytes,
                ),
            )
        });
        let (Some(worker_in), Some(worker_out)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(start_err("the worker's stdin or stdout is not a pipe"));
        };
        // stderr: a bounded tail for error messages.
        let tail = StderrTail::new(cfg.stderr_tail_bytes);
        let stderr_task = child.stderr.take().map(|mut err| {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = err.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    tail.push(&chunk[..n]);
                }
            })
        });
        let control = GroupControl {
            pid,
            child: tokio::sync::Mutex::new(child),
            tail,
            stderr_task: Mutex::new(stderr_task),
            memory_limited: spec.resource_limits.memory_bytes.is_some(),
        };
        let session = Session {
            sink: TrackingSink::new(spec.job_id.clone(), sink),
            spec,
            cancel: token,
            stdout: worker_out,
            stdin: worker_in,
            frames: stdin,
            calls,
            max_frame_bytes: cfg.max_frame_bytes,
            grace: cfg.grace,
            started: Instant::now(),
            what: "worker",
        };
        let task = tokio::spawn(async move {
            let outcome = session::run(session, &control).await;
            drop(scratch);
            outcome
        });
        let handle = JobHandle::new(job_id, cancel, task).with_worker(WorkerRef::Pid(pid));
        Ok(match inputs {
            Some(inputs) => handle.with_inputs(inputs),
            None => handle,
        })
    }
}

/// Sets rlimits in the child between fork and exec.
#[allow(unsafe_code)]
fn set_rlimits(cmd: &mut Command, limits: &ResourceLimits) {
    use nix::sys::resource::{setrlimit, Resource};
    let wanted: Vec<(Resource, u64)> = [
        // RLIMIT_DATA (Linux >= 4.7: private writable mappings, i.e. heap and anonymous mmap)
        // measures what a job allocates; RLIMIT_AS also counted the ~1.2 GiB of address space
        // the idle worker merely reserves (allocator arena, thread stacks' guard areas), so a
        // 256 MiB limit could not allocate 100 MiB.
        (Resource::RLIMIT_DATA, limits.memory_bytes),
        (Resource::RLIMIT_CPU, limits.cpu_seconds),
        (Resource::RLIMIT_FSIZE, limits.file_size_bytes),
        (Resource::RLIMIT_NOFILE, limits.open_files),
        (Resource::RLIMIT_NPROC, limits.processes),
    ]
    .into_iter()
    .filter_map(|(r, v)| v.map(|v| (r, v)))
    .collect();
    if wanted.is_empty() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec. It only reads the `wanted` vector
    // allocated before the fork and calls setrlimit(2), which is async-signal-safe; it neither
    // allocates nor takes locks.
    unsafe {
        cmd.pre_exec(move || {
            for (resource, value) in &wanted {
                setrlimit(*resource, *value, *value).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pid as i32), signal) {
        // ESRCH: the group is already gone.
        tracing::debug!(pid, %signal, error = %e, "killpg failed");
    }
}

/// The subprocess side of a [`session`]: the worker's process group.
struct GroupControl {
    pid: u32,
    child: tokio::sync::Mutex<Child>,
    tail: Arc<StderrTail>,
    stderr_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    memory_limited: bool,
}

#[async_trait]
impl WorkerControl for GroupControl {
    async fn terminate(&self) {
        signal_group(self.pid, Signal::SIGTERM);
    }

    async fn kill(&self) {
        signal_group(self.pid, Signal::SIGKILL);
    }

    async fn wait_exit(&self, grace: Duration) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.lock().await;
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(r) => r.ok(),
            Err(_) => {
                signal_group(self.pid, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        status
            .map(|s| Exit {
                code: s.code(),
                signal: s.signal(),
            })
            .unwrap_or_default()
    }

    async fn crashed(&self, exit: &Exit) -> JobError {
        // stderr is complete once the worker is gone; wait briefly for its last bytes.
        let task = self
            .stderr_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        crash_error(exit, &self.tail.text(), self.memory_limited)
    }

    async fn cleanup(&self) {
        // Whatever is left of the group (grandchildren) goes with the job.
        signal_group(self.pid, Signal::SIGKILL);
    }
}

/// The error for a worker that ended without an outcome frame.
fn crash_error(exit: &Exit, stderr: &str, memory_limited: bool) -> JobError {
    let last_line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let detail = if last_line.is_empty() {
        String::new()
    } else {
        format!(": {last_line}")
    };
    let alloc_failed = stderr.contains("memory allocation of") || stderr.contains("out of memory");
    if !exit.known() {
        return JobError::new(
            ErrorKind::Unexpected,
            format!("the worker vanished{detail}"),
        );
    }
    match (exit.code, exit.signal) {
        (_, Some(sig)) => {
            let name = signal_name(sig);
            let oom = alloc_failed || (memory_limited && sig == Signal::SIGKILL as i32);
            if oom {
                // The allocator's own line says how much was asked for; a panic note after it
                // says nothing.
                let detail = stderr
                    .lines()
                    .rev()
                    .find(|l| l.contains("memory allocation of") || l.contains("out of memory"))
                    .map(|l| format!(": {}", l.trim()))
                    .unwrap_or(detail);
                let hint = if memory_limited {
                    "; raise resource_limits.memory_mb"
                } else {
                    ""
                };
                JobError::new(
                    ErrorKind::TooLarge,
                    format!("the worker ran out of memory (killed by {name}){detail}{hint}"),
                )
            } else {
                JobError::new(
                    ErrorKind::Unexpected,
                    format!("the worker crashed (killed by {name}){detail}"),
                )
            }
        }
        (Some(code), _) => JobError::new(
            ErrorKind::Unexpected,
            format!("the worker exited with code {code} before reporting an outcome{detail}"),
        ),
        _ => JobError::new(ErrorKind::Unexpected, format!("the worker ended{detail}")),
    }
}
