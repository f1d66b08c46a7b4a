//! One Python worker process and the connection to it: spawn, readiness, handshake,
//! multiplexed requests by `request_id`, cancellation, the v5 chunked blob transfer, a health
//! check while requests are in flight, and clear errors when the process dies.
//!
//! Tasks per worker (all on the bridge's runtime): a writer (frames in order to stdin), a reader
//! (frames from stdout, routed to their request), a stderr reader (a bounded ring of recent
//! lines, the readiness signal), a waiter (owns the child; kills it on request) and a health
//! checker. Whatever ends the connection — exit, a broken frame, a failed health check — marks it
//! dead once, and every request still in flight then fails with an error that names its node,
//! the cause, the exit status and the last stderr lines.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rmpv::Value as Mp;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, Result};

use crate::config::BridgeConfig;
use crate::frame::{decode_frame, map_get, read_frame, Message, OutFrame};
use crate::metadata::Discovery;

/// The bridge protocol version this runtime speaks (nodetool-core 0.8.2's).
pub const PROTOCOL_VERSION: u32 = 6;

/// The oldest worker protocol accepted. Version 4 brought the run identity (`node_id`,
/// `job_id`, ...) and `job.start`/`job.end`; an older worker cannot attribute executions to a
/// run, so `job.end` could never release the models a job loaded.
pub const MIN_PROTOCOL_VERSION: u32 = 4;

/// Protocol version of the `chunked-v1` result blob transfer.
const CHUNKED_BLOBS_SINCE: u32 = 5;

/// The readiness line the worker prints on stderr.
const READY_LINE: &str = "NODETOOL_STDIO_READY";

/// Longest stderr line kept (a worker printing binary garbage has no newlines).
const MAX_STDERR_LINE: usize = 2000;

fn err(kind: ErrorKind, op: &'static str, message: impl Into<String>) -> Error {
    Error::new(kind, message).with_operation(op)
}

/// The worker's recent stderr lines.
#[derive(Debug)]
struct StderrLog {
    lines: Mutex<VecDeque<String>>,
    cap: usize,
}

impl StderrLog {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == self.cap {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).cloned().collect()
    }
}

/// Why a connection ended, filled in once.
#[derive(Debug, Default)]
struct Death {
    reason: Option<String>,
    exit: Option<String>,
}

/// A live (or dead) connection to one worker process.
#[derive(Debug)]
pub(crate) struct Connection {
    pub slot: usize,
    pub generation: u64,
    pub pid: Option<u32>,
    pub started: Instant,
    max_frame_bytes: usize,
    writer: mpsc::UnboundedSender<OutFrame>,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
    next_id: AtomicU64,
    stderr: Arc<StderrLog>,
    dead: CancellationToken,
    death: Mutex<Death>,
    /// Becomes true once the child has been reaped and its stderr drained.
    exited: watch::Receiver<bool>,
    kill: CancellationToken,
    inflight: AtomicUsize,
    discovery: std::sync::OnceLock<Arc<Discovery>>,
    /// Jobs this worker has seen `job.start` for.
    jobs: Mutex<HashSet<String>>,
}

impl Connection {
    /// Starts a worker and completes the handshake (readiness, `discover`, version check).
    /// Runs on `handle` so that the child's pipes and tasks belong to the bridge's runtime,
    /// whichever runtime the caller is on.
    pub async fn start(
        config: Arc<BridgeConfig>,
        slot: usize,
        generation: u64,
        handle: tokio::runtime::Handle,
    ) -> Result<Arc<Connection>> {
        let h = handle.clone();
        handle
            .spawn(async move { Self::start_here(&config, slot, generation, h).await })
            .await
            .map_err(|e| {
                err(
                    ErrorKind::Unexpected,
                    "bridge.start",
                    format!("the worker start task failed: {e}"),
                )
            })?
    }

    async fn start_here(
        config: &BridgeConfig,
        slot: usize,
        generation: u64,
        handle: tokio::runtime::Handle,
    ) -> Result<Arc<Connection>> {
        const OP: &str = "bridge.start";
        let python = &config.python;
        let mut cmd = tokio::process::Command::new(python);
        cmd.args(["-m", "nodetool.worker", "--stdio"])
            .env_clear()
            .envs(&config.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &config.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| spawn_error(python, e))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(err(
                ErrorKind::Unexpected,
                OP,
                "the worker's pipes are missing",
            ));
        };
        {
            use std::os::fd::AsRawFd;
            grow_pipe(stdin.as_raw_fd());
            grow_pipe(stdout.as_raw_fd());
        }

        let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<OutFrame>();
        let (exited_tx, exited_rx) = watch::channel(false);
        let log = Arc::new(StderrLog {
            lines: Mutex::new(VecDeque::new()),
            cap: config.stderr_lines.max(1),
        });
        let conn = Arc::new(Connection {
            slot,
            generation,
            pid,
            started: Instant::now(),
            max_frame_bytes: config.max_frame_bytes,
            writer: writer_tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stderr: log.clone(),
            dead: CancellationToken::new(),
            death: Mutex::new(Death::default()),
            exited: exited_rx,
            kill: CancellationToken::new(),
            inflight: AtomicUsize::new(0),
            discovery: std::sync::OnceLock::new(),
            jobs: Mutex::new(HashSet::new()),
        });

        // stderr: the readiness line, then a ring of recent lines (and debug logs).
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let stderr_task = handle.spawn(read_stderr(stderr, log, ready_tx, pid));

        // The waiter owns the child: it reaps it, or kills it when asked.
        {
            let conn = conn.clone();
            handle.spawn(async move {
                let status = tokio::select! {
                    s = child.wait() => s,
                    _ = conn.kill.cancelled() => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                conn.mark_dead("exited");
                conn.set_exit(describe_exit(&status));
                // The last lines a dying worker printed are the useful ones.
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                let _ = exited_tx.send(true);
            });
        }

        // Writer: frames in order; a write error ends the connection.
        {
            let conn = conn.clone();
            let mut stdin = stdin;
            handle.spawn(async move {
                loop {
                    let frame = tokio::select! {
                        f = writer_rx.recv() => f,
                        _ = conn.dead.cancelled() => None,
                    };
                    let Some(frame) = frame else { break };
                    if let Err(e) = frame.write_to(&mut stdin).await {
                        conn.kill_with(format!("stopped reading its stdin ({e})"));
                        break;
                    }
                }
                // Dropping stdin is EOF for the worker: it finishes and exits.
            });
        }

        // Reader: frames from stdout, routed by request_id.
        {
            let conn = conn.clone();
            handle.spawn(async move { conn.read_loop(stdout).await });
        }

        // Health: a worker with requests in flight must keep answering `worker.status`.
        {
            let conn = conn.clone();
            let interval = config.health_interval;
            let timeout = config.health_timeout;
            handle.spawn(async move { conn.health_loop(interval, timeout).await });
        }

        // Readiness, then discover, within the startup timeout.
        let deadline = tokio::time::Instant::now() + config.startup_timeout;
        tokio::select! {
            r = ready_rx => if r.is_err() {
                // stderr closed without the line: the process is exiting.
                return Err(conn.startup_error(python, &conn.not_ready()).await);
            },
            _ = conn.dead.cancelled() => {
                return Err(conn.startup_error(python, &conn.not_ready()).await);
            }
            _ = tokio::time::sleep_until(deadline) => {
                conn.kill_with("did not get ready in time".to_owned());
                return Err(conn.startup_error(
                    python,
                    &format!(
                        "did not print {READY_LINE} within {}s (NODETOOL_PYTHON_STARTUP_TIMEOUT)",
                        config.startup_timeout.as_secs_f64()
                    ),
                ).await);
            }
        }
        let reply =
            match tokio::time::timeout_at(deadline, conn.call("discover", Mp::Map(vec![]))).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    conn.kill_with("failed the handshake".to_owned());
                    return Err(conn
                        .startup_error(python, &format!("failed the discover handshake: {e}"))
                        .await);
                }
                Err(_) => {
                    conn.kill_with("did not answer discover in time".to_owned());
                    return Err(conn
                        .startup_error(python, "did not answer discover in time")
                        .await);
                }
            };
        let discovery = match Discovery::parse(&reply.data) {
            Ok(d) => d,
            Err(e) => {
                conn.kill_with("sent an unreadable discover reply".to_owned());
                return Err(e);
            }
        };
        if discovery.protocol_version < MIN_PROTOCOL_VERSION {
            conn.kill_with("speaks too old a protocol".to_owned());
            return Err(err(
                ErrorKind::Unsupported,
                OP,
                format!(
                    "the Python worker at {} speaks bridge protocol {}, older than the {} this \
                     runtime needs: upgrade nodetool-core in that environment (pip install -U \
                     'nodetool-core>=0.8.2')",
                    python.display(),
                    discovery.protocol_version,
                    MIN_PROTOCOL_VERSION
                ),
            )
            .with_context("python", python.display()));
        }
        if discovery.protocol_version > PROTOCOL_VERSION {
            tracing::warn!(
                worker = discovery.protocol_version,
                ours = PROTOCOL_VERSION,
                "the Python worker speaks a newer bridge protocol; assuming it is backward compatible"
            );
        }
        let _ = conn.discovery.set(Arc::new(discovery));
        tracing::info!(
            slot,
            generation,
            pid = ?pid,
            "python worker ready"
        );
        Ok(conn)
    }

    pub fn discovery(&self) -> Arc<Discovery> {
        self.discovery.get().cloned().unwrap_or_default()
    }

    pub fn protocol_version(&self) -> u32 {
        self.discovery.get().map_or(0, |d| d.protocol_version)
    }

    pub fn is_alive(&self) -> bool {
        !self.dead.is_cancelled()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn stderr_tail(&self, n: usize) -> Vec<String> {
        self.stderr.tail(n)
    }

    /// Why the connection ended, if it has.
    pub fn death_reason(&self) -> Option<String> {
        let d = self.death.lock().unwrap_or_else(|p| p.into_inner());
        d.reason.as_ref().map(|r| match &d.exit {
            Some(exit) => format!("{r} ({exit})"),
            None => r.clone(),
        })
    }

    fn mark_dead(&self, reason: &str) {
        {
            let mut d = self.death.lock().unwrap_or_else(|p| p.into_inner());
            if d.reason.is_none() {
                d.reason = Some(reason.to_owned());
            }
        }
        self.dead.cancel();
        // Requests in flight see their channel close and ask why.
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn set_exit(&self, exit: String) {
        let mut d = self.death.lock().unwrap_or_else(|p| p.into_inner());
        d.exit = Some(exit);
    }

    /// Ends the connection for `reason` and kills the process.
    pub fn kill_with(&self, reason: String) {
        tracing::warn!(slot = self.slot, pid = ?self.pid, %reason, "stopping python worker");
        self.mark_dead(&reason);
        self.kill.cancel();
    }

    /// Closes stdin (the worker finishes what it has and exits) and waits up to `grace`, then
    /// kills it.
    pub async fn shutdown(&self, grace: Duration) {
        self.mark_dead("was shut down");
        let mut exited = self.exited.clone();
        if tokio::time::timeout(grace, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            self.kill.cancel();
        }
    }

    fn next_request_id(&self) -> String {
        format!(
            "nt{}-{}-{}",
            self.slot,
            self.generation,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn register(&self) -> Result<(String, mpsc::UnboundedReceiver<Message>)> {
        let id = self.next_request_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `mark_dead` clears it with, so no request is left waiting.
        if self.dead.is_cancelled() {
            return Err(err(
                ErrorKind::Unavailable,
                "bridge.send",
                format!(
                    "the Python worker {}",
                    self.death_reason().unwrap_or_else(|| "is gone".to_owned())
                ),
            ));
        }
        pending.insert(id.clone(), tx);
        Ok((id, rx))
    }

    fn forget(&self, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn send(&self, frame: OutFrame) -> Result<()> {
        frame.check_size(self.max_frame_bytes)?;
        self.writer.send(frame).map_err(|_| {
            err(
                ErrorKind::Unavailable,
                "bridge.send",
                "the Python worker's stdin is closed",
            )
        })
    }

    /// One request with one reply (`discover`, `worker.status`, `job.*`): the reply, or its
    /// `error` as an error.
    pub async fn call(&self, kind: &str, data: Mp) -> Result<Message> {
        let (id, mut rx) = self.register()?;
        if let Err(e) = self.send(OutFrame::message(kind, Some(&id), &data)) {
            self.forget(&id);
            return Err(e);
        }
        let reply = rx.recv().await;
        self.forget(&id);
        match reply {
            Some(m) if m.kind == "error" => Err(err(
                ErrorKind::Unexpected,
                "bridge.call",
                format!(
                    "the Python worker refused `{kind}`: {}",
                    map_get(&m.data, "error")
                        .and_then(Mp::as_str)
                        .unwrap_or("(no message)")
                ),
            )),
            Some(m) => Ok(m),
            None => Err(self.lost(&format!("`{kind}`")).await),
        }
    }

    /// The error for a request whose worker went away: cause, exit status, recent stderr.
    pub async fn lost(&self, what: &str) -> Error {
        let mut exited = self.exited.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), exited.wait_for(|e| *e)).await;
        let reason = self
            .death_reason()
            .unwrap_or_else(|| "stopped answering".to_owned());
        let mut message = format!("the Python worker {reason} while running {what}");
        let tail = self.stderr_tail(12);
        if tail.is_empty() {
            message.push_str("; it printed nothing on stderr");
        } else {
            message.push_str("; its last stderr lines:\n");
            message.push_str(&tail.join("\n"));
        }
        err(ErrorKind::Unavailable, "bridge.execute", message)
    }

    /// "exited before it was ready", or what else ended it first (garbage on stdout).
    fn not_ready(&self) -> String {
        let reason = self
            .death
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reason
            .clone()
            .unwrap_or_else(|| "exited".to_owned());
        format!("{reason} before it was ready")
    }

    async fn startup_error(&self, python: &Path, what: &str) -> Error {
        let mut exited = self.exited.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), exited.wait_for(|e| *e)).await;
        let exit = self
            .death
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .exit
            .clone()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        let tail = self.stderr_tail(12);
        let hint = if tail
            .iter()
            .any(|l| l.contains("No module named") && l.contains("nodetool"))
        {
            "; this interpreter has no nodetool-core: install it there (pip install \
             nodetool-core==0.8.2) or point NODETOOL_PYTHON at one that has it"
        } else {
            ""
        };
        let stderr = if tail.is_empty() {
            "; it printed nothing on stderr".to_owned()
        } else {
            format!("; its last stderr lines:\n{}", tail.join("\n"))
        };
        err(
            ErrorKind::Unavailable,
            "bridge.start",
            format!(
                "the Python worker `{} -m nodetool.worker --stdio` {what}{exit}{hint}{stderr}",
                python.display()
            ),
        )
        .with_context("python", python.display())
        // A broken interpreter stays broken: retrying the same start does not help.
        .set_temporary(false)
    }

    async fn read_loop<R: AsyncRead + Unpin>(self: Arc<Self>, mut stdout: R) {
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut stdout, self.max_frame_bytes) => f,
                _ = self.dead.cancelled() => return,
            };
            let payload = match frame {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.mark_dead("exited");
                    return;
                }
                Err(e) => {
                    self.kill_with(format!("broke the frame protocol on stdout: {e}"));
                    return;
                }
            };
            let msg = match decode_frame(&payload) {
                Ok(m) => m,
                Err(e) => {
                    // A worker whose stdout carries anything but frames cannot be trusted with
                    // the requests in flight: end it, and they fail with this cause.
                    self.kill_with(format!("sent an unreadable frame: {e}"));
                    return;
                }
            };
            let target = msg.request_id.as_ref().and_then(|id| {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .cloned()
            });
            match target {
                Some(tx) => {
                    let _ = tx.send(msg);
                }
                None if msg.request_id.is_none() && msg.kind == "error" => {
                    tracing::warn!(
                        slot = self.slot,
                        error = ?map_get(&msg.data, "error").and_then(Mp::as_str),
                        "python worker reported a protocol error"
                    );
                }
                // Late replies to cancelled or timed-out requests.
                None => tracing::debug!(
                    kind = %msg.kind,
                    request_id = ?msg.request_id,
                    "reply for no pending request"
                ),
            }
        }
    }

    async fn health_loop(self: Arc<Self>, interval: Duration, timeout: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.dead.cancelled() => return,
            }
            if self.inflight() == 0 {
                continue;
            }
            let probe = tokio::time::timeout(timeout, self.call("worker.status", Mp::Map(vec![])));
            match probe.await {
                Ok(_) => {}
                Err(_) => {
                    self.kill_with(format!(
                        "did not answer a health check within {}s (NODETOOL_PYTHON_HEALTH_TIMEOUT) \
                         and was stopped; a node blocking its event loop (synchronous work in an \
                         async method) looks like this",
                        timeout.as_secs_f64()
                    ));
                    return;
                }
            }
        }
    }

    /// `job.start` the first time a job runs a node on this worker (protocol v4+). The boundary
    /// is bookkeeping, not part of the node: nothing waits for it.
    pub fn ensure_job(&self, job_id: &str, workflow_id: &str, user_id: &str) {
        if job_id.is_empty() || self.protocol_version() < 4 {
            return;
        }
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            // Jobs nobody ended (a caller without job.end) must not pile up forever; a job seen
            // again after this just gets a second, harmless job.start.
            if jobs.len() >= 4096 {
                jobs.clear();
            }
            if !jobs.insert(job_id.to_owned()) {
                return;
            }
        }
        let data = identity_map(&[
            ("job_id", job_id),
            ("workflow_id", workflow_id),
            ("user_id", user_id),
        ]);
        // Not waited for: the worker attributes an execution to its job by the execute's own
        // `job_id` (job.start only triggers one reclaim pass), so a round trip per job would buy
        // nothing. Its reply finds no pending request and is dropped.
        let id = self.next_request_id();
        if let Err(e) = self.send(OutFrame::message("job.start", Some(&id), &data)) {
            tracing::debug!(job_id, error = %e, "job.start not sent");
        }
    }

    /// `job.end` for a job this worker has seen (so its models can be released).
    pub async fn end_job(&self, job_id: &str, reason: &str) {
        let known = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id);
        if !known || !self.is_alive() {
            return;
        }
        let data = identity_map(&[("job_id", job_id), ("reason", reason)]);
        match tokio::time::timeout(Duration::from_secs(10), self.call("job.end", data)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(job_id, error = %e, "job.end failed"),
            Err(_) => tracing::debug!(job_id, "job.end timed out"),
        }
    }

    /// Sends an `execute` / `execute.stream` request.
    pub fn execute(self: &Arc<Self>, req: &ExecuteRequest) -> Result<Execution> {
        let (id, rx) = self.register()?;
        let chunked = !req.stream && self.protocol_version() >= CHUNKED_BLOBS_SINCE;
        let frame = req.encode(&id, chunked);
        if let Err(e) = self.send(frame) {
            self.forget(&id);
            return Err(e.with_context("node", &req.label));
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(Execution {
            conn: self.clone(),
            request_id: id,
            rx,
            label: req.label.clone(),
            node_type: req.node_type.clone(),
            max_blob_bytes: req.max_result_blob_bytes,
            open_blob: None,
            blobs: HashMap::new(),
            done: false,
        })
    }

    fn cancel(&self, request_id: &str) {
        if self.is_alive() {
            let _ = self.send(OutFrame::message(
                "cancel",
                Some(request_id),
                &Mp::Map(vec![]),
            ));
        }
    }
}

/// Pipes hold 64 KiB by default: a 64 MiB blob would cross in 1024 round trips of the two
/// processes. 1 MiB (Linux's default `pipe-max-size`) cuts that 16-fold; failure just keeps
/// the default.
fn grow_pipe(fd: std::os::fd::RawFd) {
    const PIPE_BYTES: i32 = 1024 * 1024;
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES)) {
        tracing::debug!(error = %e, "cannot grow the worker pipe");
    }
}

fn identity_map(pairs: &[(&str, &str)]) -> Mp {
    Mp::Map(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (Mp::from(*k), Mp::from(*v)))
            .collect(),
    )
}

fn spawn_error(python: &Path, e: std::io::Error) -> Error {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "not executable".to_owned(),
        _ => e.to_string(),
    };
    Error::new(
        ErrorKind::ConfigInvalid,
        format!(
            "NODETOOL_PYTHON={}: cannot start it ({why}); point NODETOOL_PYTHON at a Python \
             interpreter that has nodetool-core and your node packs installed",
            python.display()
        ),
    )
    .with_operation("bridge.start")
    .with_source(e)
}

fn describe_exit(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Err(e) => format!("its exit status is unknown: {e}"),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            _ => "ended".to_owned(),
        },
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

async fn read_stderr<R: AsyncRead + Unpin>(
    mut stderr: R,
    log: Arc<StderrLog>,
    ready: oneshot::Sender<()>,
    pid: Option<u32>,
) {
    let mut ready = Some(ready);
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>, ready: &mut Option<oneshot::Sender<()>>| {
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        line.clear();
        if text.trim() == READY_LINE {
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            return;
        }
        if !text.is_empty() {
            tracing::debug!(target: "nodetool_bridge::python", pid = ?pid, "{text}");
            log.push(text);
        }
    };
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line, &mut ready);
            } else if line.len() < MAX_STDERR_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut ready);
    }
}

/// A media blob sent with a request: one ref's bytes, or a list property's.
#[derive(Debug, Clone)]
pub enum BlobInput {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl BlobInput {
    pub fn len(&self) -> usize {
        match self {
            BlobInput::One(b) => b.len(),
            BlobInput::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One node execution to send.
#[derive(Debug, Clone, Default)]
pub struct ExecuteRequest {
    pub node_type: String,
    /// How errors name the node: "node `n2` (bridgetest.basic.Echo)".
    pub label: String,
    pub fields: Vec<(String, Mp)>,
    pub secrets: Vec<(String, String)>,
    pub blobs: Vec<(String, BlobInput)>,
    /// `execute.stream`: items arrive as `chunk`s.
    pub stream: bool,
    pub node_id: String,
    pub job_id: String,
    pub workflow_id: String,
    pub user_id: String,
    pub requires_vram_gb: Option<f64>,
    /// Largest result blob accepted.
    pub max_result_blob_bytes: u64,
}

impl ExecuteRequest {
    fn encode(&self, request_id: &str, chunked: bool) -> OutFrame {
        let kind = if self.stream {
            "execute.stream"
        } else {
            "execute"
        };
        OutFrame::build(kind, Some(request_id), |f| {
            let identity: Vec<(&str, &str)> = [
                ("node_id", self.node_id.as_str()),
                ("job_id", self.job_id.as_str()),
                ("workflow_id", self.workflow_id.as_str()),
                ("user_id", self.user_id.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
            let n = 4
                + identity.len()
                + usize::from(chunked)
                + usize::from(self.requires_vram_gb.is_some());
            f.map_len(n as u32);
            f.str("node_type");
            f.str(&self.node_type);
            f.str("fields");
            f.map_len(self.fields.len() as u32);
            for (k, v) in &self.fields {
                f.str(k);
                f.value(v);
            }
            f.str("secrets");
            f.map_len(self.secrets.len() as u32);
            for (k, v) in &self.secrets {
                f.str(k);
                f.str(v);
            }
            f.str("blobs");
            f.map_len(self.blobs.len() as u32);
            for (k, blob) in &self.blobs {
                f.str(k);
                match blob {
                    BlobInput::One(b) => f.bin(b),
                    BlobInput::Many(items) => {
                        f.array_len(items.len() as u32);
                        for b in items {
                            f.bin(b);
                        }
                    }
                }
            }
            for (k, v) in identity {
                f.str(k);
                f.str(v);
            }
            if chunked {
                f.str("blob_transfer");
                f.str("chunked-v1");
            }
            if let Some(gb) = self.requires_vram_gb {
                f.str("requires_vram_gb");
                f.value(&Mp::F64(gb));
            }
        })
    }
}

/// A node's outputs: slot values (msgpack; refs carry `blob://` uris) and their blobs by slot.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub values: Vec<(String, Mp)>,
    pub blobs: HashMap<String, Bytes>,
}

/// What an execution reports.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    Progress {
        progress: f64,
        total: f64,
        message: Option<String>,
    },
    /// A serialized update message (`log_update`, `preview_update`, ...), by its `type`.
    Update(Mp),
    /// One item of a streaming node.
    Chunk(Outputs),
    /// The final outputs (empty for `execute.stream`).
    Result(Outputs),
}

#[derive(Debug)]
struct OpenBlob {
    name: String,
    size: u64,
    buf: BytesMut,
    digest: Sha256,
}

/// One request in flight. Dropping it before the end sends `cancel` to the worker.
#[derive(Debug)]
pub struct Execution {
    conn: Arc<Connection>,
    request_id: String,
    rx: mpsc::UnboundedReceiver<Message>,
    label: String,
    node_type: String,
    max_blob_bytes: u64,
    open_blob: Option<OpenBlob>,
    blobs: HashMap<String, Bytes>,
    done: bool,
}

impl Execution {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The worker process's pid.
    pub fn worker_pid(&self) -> Option<u32> {
        self.conn.pid
    }

    /// The next event; `Ok(None)` after the result. A worker `error`, a broken blob transfer, an
    /// unknown reply type or a lost worker is an error (and the request is over).
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let Some(msg) = self.rx.recv().await else {
                self.finish();
                return Err(self.conn.lost(&self.label).await);
            };
            match self.handle(msg) {
                Ok(Some(ev)) => {
                    if matches!(ev, ExecEvent::Result(_)) {
                        self.finish();
                    }
                    return Ok(Some(ev));
                }
                Ok(None) => continue,
                Err(e) => {
                    // The worker may still be running it: tell it to stop.
                    self.conn.cancel(&self.request_id);
                    self.finish();
                    return Err(e);
                }
            }
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.conn.forget(&self.request_id);
            self.conn.inflight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn protocol(&self, message: String) -> Error {
        err(
            ErrorKind::Unexpected,
            "bridge.execute",
            format!("{}: {message}", self.label),
        )
    }

    fn handle(&mut self, msg: Message) -> Result<Option<ExecEvent>> {
        let data = &msg.data;
        match msg.kind.as_str() {
            "progress" => {
                let num = |k| map_get(data, k).and_then(as_number);
                Ok(Some(ExecEvent::Progress {
                    progress: num("progress").unwrap_or(0.0),
                    total: num("total").unwrap_or(100.0),
                    message: map_get(data, "message")
                        .and_then(Mp::as_str)
                        .map(str::to_owned),
                }))
            }
            "update" => Ok(Some(ExecEvent::Update(msg.data))),
            "chunk" => Ok(Some(ExecEvent::Chunk(self.outputs(msg.data)?))),
            "result" => {
                if let Some(open) = &self.open_blob {
                    return Err(self.protocol(format!(
                        "the result arrived while blob `{}` was still being sent",
                        open.name
                    )));
                }
                let mut outputs = self.outputs(msg.data)?;
                for (name, bytes) in self.blobs.drain() {
                    outputs.blobs.insert(name, bytes);
                }
                Ok(Some(ExecEvent::Result(outputs)))
            }
            "error" => Err(python_error(&self.label, &self.node_type, data)),
            "blob.start" => {
                if self.open_blob.is_some() {
                    return Err(self.protocol("a blob started before the last one ended".into()));
                }
                let name = blob_name(data).ok_or_else(|| self.protocol("blob.start without a name".into()))?;
                let size = map_get(data, "size")
                    .and_then(Mp::as_u64)
                    .ok_or_else(|| self.protocol(format!("blob `{name}` has no size")))?;
                if size > self.max_blob_bytes {
                    return Err(err(
                        ErrorKind::TooLarge,
                        "bridge.execute",
                        format!(
                            "{}: result blob `{name}` of {size} bytes exceeds the limit of {} bytes",
                            self.label, self.max_blob_bytes
                        ),
                    ));
                }
                // A declared size is a promise, not proof: cap the up-front allocation.
                let cap = size.min(64 * 1024 * 1024) as usize;
                self.open_blob = Some(OpenBlob {
                    name,
                    size,
                    buf: BytesMut::with_capacity(cap),
                    digest: Sha256::new(),
                });
                Ok(None)
            }
            "blob.chunk" => {
                let mut open = self
                    .open_blob
                    .take()
                    .ok_or_else(|| self.protocol("blob.chunk before blob.start".into()))?;
                let name = blob_name(data).unwrap_or_default();
                let offset = map_get(data, "offset").and_then(Mp::as_u64);
                let Some(Mp::Binary(bytes)) = map_get(data, "bytes") else {
                    return Err(self.protocol(format!("blob.chunk of `{name}` carries no bytes")));
                };
                if name != open.name || offset != Some(open.buf.len() as u64) {
                    return Err(self.protocol(format!(
                        "blob chunk out of order (blob `{name}` at offset {offset:?}, expected `{}` at {})",
                        open.name,
                        open.buf.len()
                    )));
                }
                if open.buf.len() as u64 + bytes.len() as u64 > open.size {
                    return Err(self.protocol(format!(
                        "blob `{name}` is larger than its declared {} bytes",
                        open.size
                    )));
                }
                open.digest.update(bytes);
                open.buf.extend_from_slice(bytes);
                self.open_blob = Some(open);
                Ok(None)
            }
            "blob.end" => {
                let open = self
                    .open_blob
                    .take()
                    .ok_or_else(|| self.protocol("blob.end before blob.start".into()))?;
                let name = blob_name(data).unwrap_or_default();
                let size = map_get(data, "size").and_then(Mp::as_u64);
                let sha = map_get(data, "sha256").and_then(Mp::as_str).unwrap_or("");
                let got = hex(&open.digest.finalize());
                if name != open.name || size != Some(open.buf.len() as u64) || size != Some(open.size) {
                    return Err(self.protocol(format!(
                        "blob `{}` ended with {} of {} bytes",
                        open.name,
                        open.buf.len(),
                        open.size
                    )));
                }
                if !sha.eq_ignore_ascii_case(&got) {
                    return Err(self.protocol(format!(
                        "blob `{name}` failed its SHA-256 check (sent {sha}, received {got})"
                    )));
                }
                self.blobs.insert(name, open.buf.freeze());
                Ok(None)
            }
            other => Err(self.protocol(format!(
                "the worker replied with a `{other}` frame, which bridge protocol {PROTOCOL_VERSION} \
                 does not have (worker speaks {})",
                self.conn.protocol_version()
            ))),
        }
    }

    fn outputs(&self, data: Mp) -> Result<Outputs> {
        let Mp::Map(entries) = data else {
            return Err(self.protocol("a result without a data map".into()));
        };
        let mut out = Outputs::default();
        for (k, v) in entries {
            match (k.as_str(), v) {
                (Some("outputs"), Mp::Map(values)) => {
                    out.values = values
                        .into_iter()
                        .map(|(k, v)| (crate::convert::key_text(&k), v))
                        .collect();
                }
                (Some("blobs"), Mp::Map(blobs)) => {
                    for (name, b) in blobs {
                        if let Mp::Binary(b) = b {
                            out.blobs
                                .insert(crate::convert::key_text(&name), Bytes::from(b));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled or timed out on our side: the worker should stop too.
            self.conn.cancel(&self.request_id);
            self.finish();
        }
    }
}

fn blob_name(data: &Mp) -> Option<String> {
    map_get(data, "name")
        .and_then(Mp::as_str)
        .map(str::to_owned)
}

fn as_number(v: &Mp) -> Option<f64> {
    v.as_f64().or_else(|| v.as_i64().map(|i| i as f64))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A worker `error` reply as an error: the exception line and where it was raised, from the
/// traceback.
fn python_error(label: &str, node_type: &str, data: &Mp) -> Error {
    let error = map_get(data, "error")
        .and_then(Mp::as_str)
        .unwrap_or("(no message)");
    let traceback = map_get(data, "traceback")
        .and_then(Mp::as_str)
        .unwrap_or("");
    if let Some(rest) = error.strip_prefix("Unknown node type:") {
        return err(
            ErrorKind::NotFound,
            "bridge.execute",
            format!(
                "{label}: the Python worker no longer provides node type `{}` (it did when it was \
                 discovered; the worker was probably restarted with different node packs)",
                rest.trim()
            ),
        )
        .with_context("node_type", node_type);
    }
    let lines: Vec<&str> = traceback.lines().filter(|l| !l.trim().is_empty()).collect();
    let exception = lines.last().map(|l| l.trim()).unwrap_or(error);
    let location = lines
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with("File \""))
        .map(|l| format!("\n  at {}", l.trim()))
        .unwrap_or_default();
    let message = if exception.contains(error) || error.is_empty() {
        format!("{label} raised {exception}{location}")
    } else {
        format!("{label} raised {exception}: {error}{location}")
    };
    err(ErrorKind::Unexpected, "bridge.execute", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_errors_name_the_exception_and_where() {
        let data = Mp::Map(vec![
            (Mp::from("error"), Mp::from("boom")),
            (
                Mp::from("traceback"),
                Mp::from(
                    "Traceback (most recent call last):\n  File \"/x/executor.py\", line 1, in run\n  File \"/p/basic.py\", line 9, in process\n    raise ValueError(\"boom\")\nValueError: boom\n",
                ),
            ),
        ]);
        let e = python_error("node `n1` (a.B)", "a.B", &data);
        let text = e.to_string();
        assert!(
            text.contains("node `n1` (a.B) raised ValueError: boom"),
            "{text}"
        );
        assert!(text.contains("basic.py\", line 9"), "{text}");
        let gone = Mp::Map(vec![(
            Mp::from("error"),
            Mp::from("Unknown node type: a.B"),
        )]);
        assert_eq!(python_error("n", "a.B", &gone).kind(), ErrorKind::NotFound);
    }

    #[test]
    fn execute_frames_carry_identity_and_blobs() {
        let req = ExecuteRequest {
            node_type: "a.B".into(),
            fields: vec![("x".into(), Mp::from(1))],
            secrets: vec![("K".into(), "v".into())],
            blobs: vec![(
                "image".into(),
                BlobInput::One(Bytes::from(vec![1u8; 70_000])),
            )],
            node_id: "n1".into(),
            job_id: "j1".into(),
            ..Default::default()
        };
        let msg = decode_frame(&req.encode("r1", true).to_vec()).expect("decode");
        assert_eq!(msg.kind, "execute");
        assert_eq!(msg.field("node_id").and_then(Mp::as_str), Some("n1"));
        assert_eq!(
            msg.field("workflow_id"),
            None,
            "empty identity keys are omitted"
        );
        assert_eq!(
            msg.field("blob_transfer").and_then(Mp::as_str),
            Some("chunked-v1")
        );
        let blobs = msg.field("blobs").expect("blobs");
        assert!(matches!(map_get(blobs, "image"), Some(Mp::Binary(b)) if b.len() == 70_000));
    }
}
