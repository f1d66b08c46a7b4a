//! The subprocess strategy: one `nodetool worker` child per job, in its own process group, with
//! rlimits from the job's `resource_limits`, an environment allow-list, a scratch directory
//! removed afterwards, and SIGTERM → grace → SIGKILL cancellation of the whole group. Streamed
//! inputs travel as frames on the worker's stdin ([`RemoteInputs`](crate::protocol::RemoteInputs)).
//! The worker's storage, temp storage, node cache and asset records are the parent's: its calls
//! are served by a [`CallHandler`] beside the frame reader, with the strategy's
//! [`WorkerServices`] ([`SubprocessStrategy::with_services`]), so the environment carries no
//! storage or cache settings at all.
//!
//! Warm pool ([`SubprocessConfig::warm_workers`], `SUBPROCESS_WARM_WORKERS`): that many workers
//! are started ahead of jobs and wait, blocked on their stdin, for their request. A job takes the
//! oldest live one and the pool refills in the background. Invariants:
//! - one job per process: a warm worker runs exactly one job and exits, like a cold one; it is
//!   never handed back, so a process never sees two jobs, let alone two users.
//! - nothing job-specific is fixed at spawn: the environment ([`SubprocessConfig::env`]) is the
//!   strategy's, the same for every job; the scratch directory (cwd and `TMPDIR`) is made for the
//!   worker, which is the job's since the worker has one job; the job's rlimits are put on the
//!   running process (`prlimit`) before its request is written, and a limit that cannot be put
//!   there sends the job to a cold worker instead; the user's scope, secrets and trace context
//!   travel in the request as for a cold worker.
//! - the one job-specific variable a cold spawn sets, [`WORKER_JOB_ENV`](nodetool_exec::reap::WORKER_JOB_ENV)
//!   (who the process is, for a restarted parent's reaper), cannot be set on a warm worker; it
//!   carries [`WARM_WORKER_ENV`](nodetool_exec::reap::WARM_WORKER_ENV) (its server) instead, and the
//!   reaper kills warm workers whose server is gone.
//! - every warm worker has `MIMALLOC_ARENA_EAGER_COMMIT=0` (a cold one only with a memory limit):
//!   idle workers stay small, and a memory limit put on later counts only what the job allocates.
//! - idle workers are killed when the strategy is dropped or shut down; they also exit by
//!   themselves when their stdin closes (their server died).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::EventSink;

use crate::calls::{CallHandler, CallScope, WorkerServices};
use crate::protocol::{WorkerStdin, MAX_FRAME_BYTES};
use crate::session::{self, signal_name, Exit, Session, StderrTail, WorkerControl};
use nodetool_exec::sink::TrackingSink;
use nodetool_exec::strategy::{
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
    /// Idle workers kept started ahead of jobs (`SUBPROCESS_WARM_WORKERS` in the server); 0: every
    /// job starts its own worker. A warm worker still runs one job only (see the module docs).
    pub warm_workers: usize,
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
            // Off unless asked: a library user gets no processes it did not start a job for.
            warm_workers: 0,
        }
    }
}

#[derive(Debug)]
pub struct SubprocessStrategy {
    config: Arc<SubprocessConfig>,
    services: Option<WorkerServices>,
    pool: Option<WarmPool>,
}

impl SubprocessStrategy {
    /// Workers of a strategy without [`WorkerServices`] get no storage, cache or asset records
    /// (their storage and asset operations fail with `unsupported`); give it the parent's with
    /// [`SubprocessStrategy::with_services`]. With [`SubprocessConfig::warm_workers`] above 0 the
    /// pool starts filling now when called inside a Tokio runtime, else at the first job.
    pub fn new(config: SubprocessConfig) -> Self {
        let config = Arc::new(config);
        let pool = (config.warm_workers > 0).then(|| WarmPool::new(config.clone()));
        if let Some(pool) = &pool {
            pool.ensure_refilling();
        }
        Self {
            config,
            services: None,
            pool,
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

    /// The pids of the idle warm workers, oldest first (diagnostics and tests).
    pub fn warm_pids(&self) -> Vec<u32> {
        self.pool
            .as_ref()
            .map(|p| p.shared.lock().idle.iter().map(|w| w.pid).collect())
            .unwrap_or_default()
    }

    /// A live warm worker with `spec`'s limits on it, if the pool has one.
    fn warm_worker(&self, spec: &JobSpec) -> Option<Worker> {
        let pool = self.pool.as_ref()?;
        pool.ensure_refilling();
        let worker = pool.take()?;
        if let Err(e) = apply_rlimits(worker.pid, &spec.resource_limits) {
            // A limit that cannot be put on the running process is not dropped: the job starts
            // cold, where the limits are set before exec (and fail the start if they cannot be).
            tracing::warn!(
                job_id = %spec.job_id,
                pid = worker.pid,
                error = %e,
                "cannot put the job's limits on a warm worker; starting a cold one"
            );
            discard(worker);
            return None;
        }
        Some(worker)
    }
}

fn start_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unavailable, msg)
        .with_operation("exec.subprocess.start")
        .set_temporary(false)
}

/// A started worker process with its pipes, before and during its one job.
struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: ChildStdout,
    tail: Arc<StderrTail>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// The job's cwd and `TMPDIR`, removed once the worker is done.
    scratch: tempfile::TempDir,
}

/// Whom a worker is started for.
enum StartFor<'a> {
    /// Cold, for this job: its id and limits are fixed at exec.
    Job(&'a JobSpec),
    /// Warm, for a job to come, by the server of this [`nodetool_exec::reap::this_process`] identity.
    Pool(&'a str),
}

/// Starts a worker in its own process group, with a fresh scratch directory; must run inside a
/// Tokio runtime (the stderr reader).
fn spawn_worker(cfg: &SubprocessConfig, start_for: StartFor<'_>) -> Result<Worker> {
    let job_id = match &start_for {
        StartFor::Job(spec) => spec.job_id.as_str(),
        StartFor::Pool(_) => "",
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix("nodetool-job-");
    let scratch = match &cfg.scratch_root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .map_err(|e| {
        start_err("cannot create the job's scratch directory")
            .with_context("job_id", job_id)
            .with_source(e)
    })?;

    let mut cmd = Command::new(&cfg.program);
    cmd.args(&cfg.args)
        .env_clear()
        .envs(&cfg.env)
        .env("TMPDIR", scratch.path())
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    match start_for {
        StartFor::Job(spec) => {
            // Who this process is, for a restarted parent's reaper (`nodetool_exec::reap`).
            cmd.env(nodetool_exec::reap::WORKER_JOB_ENV, spec.job_id.as_str());
            if spec.resource_limits.memory_bytes.is_some() {
                // mimalloc (the binary's allocator) maps its 1 GiB arena read-write up front when
                // the kernel overcommits, which RLIMIT_DATA counts in full; committed on demand
                // instead, the limit counts only what the job allocates.
                cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", "0");
            }
            set_rlimits(&mut cmd, &spec.resource_limits);
        }
        StartFor::Pool(server) => {
            // Its job (and so a memory limit) is not known yet; committed on demand, the idle
            // worker also stays small.
            cmd.env(nodetool_exec::reap::WARM_WORKER_ENV, server)
                .env("MIMALLOC_ARENA_EAGER_COMMIT", "0");
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        start_err(format!("cannot start the worker {}", cfg.program.display()))
            .with_context("job_id", job_id)
            .with_source(e)
    })?;
    let pid = child
        .id()
        .ok_or_else(|| start_err("the worker exited at once"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
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
    Ok(Worker {
        child,
        pid,
        stdin,
        stdout,
        tail,
        stderr_task,
        scratch,
    })
}

/// Kills a worker that will run no job (its group: it may have started something) and removes
/// its scratch directory.
fn discard(worker: Worker) {
    signal_group(worker.pid, Signal::SIGKILL);
    if let Some(t) = &worker.stderr_task {
        t.abort();
    }
    // `kill_on_drop` kills the pid again, harmlessly; the runtime reaps it.
    drop(worker);
}

/// The warm workers: started ahead of jobs, each handed to exactly one job.
struct WarmPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    cfg: Arc<SubprocessConfig>,
    /// This server, as warm workers' [`nodetool_exec::reap::WARM_WORKER_ENV`] names it.
    server: String,
    state: Mutex<PoolState>,
    /// A job took a worker (or found dead ones): refill.
    wake: tokio::sync::Notify,
    closed: CancellationToken,
    refilling: AtomicBool,
}

#[derive(Default)]
struct PoolState {
    /// Oldest first: the one most surely done starting.
    idle: VecDeque<Worker>,
    closed: bool,
}

impl fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("WarmPool")
            .field("want", &self.shared.cfg.warm_workers)
            .field("idle", &state.idle.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self) -> usize {
        let state = self.lock();
        if state.closed {
            return 0;
        }
        self.cfg.warm_workers.saturating_sub(state.idle.len())
    }

    /// Kills the idle workers and stops the refill; jobs start cold from now on.
    fn close(&self) {
        let idle: Vec<Worker> = {
            let mut state = self.lock();
            state.closed = true;
            state.idle.drain(..).collect()
        };
        self.closed.cancel();
        for worker in idle {
            discard(worker);
        }
    }
}

impl WarmPool {
    fn new(cfg: Arc<SubprocessConfig>) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                cfg,
                server: nodetool_exec::reap::this_process(),
                state: Mutex::default(),
                wake: tokio::sync::Notify::new(),
                closed: CancellationToken::new(),
                refilling: AtomicBool::new(false),
            }),
        }
    }

    /// Starts the refill task once, when there is a runtime to run it.
    fn ensure_refilling(&self) {
        if self.shared.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(refill(self.shared.clone()));
            }
            Err(_) => self.shared.refilling.store(false, Ordering::Release),
        }
    }

    /// The oldest live idle worker, taken out of the pool for good; dead ones (killed or crashed
    /// while idle) are thrown away. Wakes the refill either way.
    fn take(&self) -> Option<Worker> {
        let mut dead = Vec::new();
        let live = {
            let mut state = self.shared.lock();
            let mut live = None;
            while let Some(mut worker) = state.idle.pop_front() {
                match worker.child.try_wait() {
                    // Not reaped yet is not alive: a worker killed a moment ago shows up as
                    // exiting in `/proc` before `waitpid` reports it.
                    Ok(None) if !nodetool_exec::reap::exiting(worker.pid) => {
                        live = Some(worker);
                        break;
                    }
                    _ => dead.push(worker),
                }
            }
            live
        };
        for worker in dead {
            tracing::info!(
                pid = worker.pid,
                "a warm worker died while idle; replacing it"
            );
            discard(worker);
        }
        self.shared.wake.notify_one();
        live
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Keeps the pool at [`SubprocessConfig::warm_workers`] idle workers until it is closed.
async fn refill(shared: Arc<PoolShared>) {
    let mut failures: u32 = 0;
    loop {
        while shared.missing() > 0 {
            match spawn_worker(&shared.cfg, StartFor::Pool(&shared.server)) {
                Ok(worker) => {
                    failures = 0;
                    let refused = {
                        let mut state = shared.lock();
                        if state.closed {
                            Some(worker)
                        } else {
                            state.idle.push_back(worker);
                            None
                        }
                    };
                    if let Some(worker) = refused {
                        discard(worker);
                        return;
                    }
                }
                Err(e) => {
                    // Jobs still start (cold, and fail clearly if workers cannot start at all);
                    // retry later rather than spin.
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(100u64 << failures.min(7));
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot pre-start a warm worker");
                    tokio::select! {
                        _ = shared.closed.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        tokio::select! {
            _ = shared.closed.cancelled() => return,
            _ = shared.wake.notified() => {}
        }
    }
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
        let worker = match self.warm_worker(&spec) {
            Some(worker) => worker,
            None => spawn_worker(&cfg, StartFor::Job(&spec))?,
        };
        let Worker {
            child,
            pid,
            stdin: worker_in,
            stdout: worker_out,
            tail,
            stderr_task,
            scratch,
        } = worker;

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

    fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shared.close();
        }
    }
}

/// The rlimits `limits` asks for.
fn wanted_rlimits(limits: &ResourceLimits) -> Vec<(nix::sys::resource::Resource, u64)> {
    use nix::sys::resource::Resource;
    [
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
    .collect()
}

/// Puts the job's rlimits on a running warm worker (before its request is written, so the job
/// runs under them from its first instruction). What the worker used while starting counts as it
/// does for a cold worker, whose limits apply from exec: its memory already mapped (RLIMIT_DATA
/// refuses only growth beyond the limit) and the CPU time of its start.
#[allow(unsafe_code)]
fn apply_rlimits(pid: u32, limits: &ResourceLimits) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range"))?;
    for (resource, value) in wanted_rlimits(limits) {
        let limit = libc::rlimit64 {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: prlimit64(2) only reads `limit`, a live local, and writes nothing (the old
        // limit pointer is null).
        let rc = unsafe { libc::prlimit64(pid, resource as _, &limit, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets rlimits in the child between fork and exec.
#[allow(unsafe_code)]
fn set_rlimits(cmd: &mut Command, limits: &ResourceLimits) {
    use nix::sys::resource::setrlimit;
    let wanted = wanted_rlimits(limits);
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
