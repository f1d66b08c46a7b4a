//! [`PythonBridge`]: a pool of supervised Python workers owned by one process.
//!
//! The first worker starts with the bridge (its `discover` is the node inventory); the others
//! start when every running worker is busy. A request goes to the least busy live worker. A
//! worker that dies is replaced on the next request; one that died young waits out a backoff
//! that doubles per failure (`restart_backoff` .. `max_restart_backoff`), so a pack that crashes
//! the interpreter at once cannot spin the CPU. The process and its jobs carry on either way.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use nodetool_core::{Error, ErrorKind, Result};

use crate::config::BridgeConfig;
use crate::metadata::Discovery;
use crate::worker::{Connection, ExecuteRequest, Execution};

/// A worker that dies within this long of starting counts as a failed start for the backoff.
const YOUNG: Duration = Duration::from_secs(30);

/// Where a node's declared secret comes from when its job has none: the process's settings
/// (environment > secrets.yaml), supplied by the binary. Only names a node declares in
/// `required_settings` are ever looked up.
pub trait SecretSource: Send + Sync + fmt::Debug {
    fn secret(&self, name: &str) -> Option<String>;
}

/// The process's Python workers. Cheap to clone; dropping the last clone kills the workers
/// (use [`PythonBridge::shutdown`] to let them finish).
#[derive(Debug, Clone)]
pub struct PythonBridge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<BridgeConfig>,
    handle: tokio::runtime::Handle,
    slots: Vec<Slot>,
    discovery: RwLock<Arc<Discovery>>,
    generation: AtomicU64,
    secrets: Option<Arc<dyn SecretSource>>,
}

#[derive(Debug, Default)]
struct Slot {
    index: usize,
    current: Mutex<Option<Arc<Connection>>>,
    starting: tokio::sync::Mutex<Restarts>,
}

#[derive(Debug, Default)]
struct Restarts {
    /// Consecutive failed or short-lived starts.
    failures: u32,
    last_start: Option<Instant>,
    starts: u64,
    last_error: Option<String>,
    last_death: Option<String>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|c| c.is_alive())
    }

    /// A live connection, starting (or restarting, after the backoff) the worker if needed.
    async fn connect(&self, inner: &Inner) -> Result<Arc<Connection>> {
        let mut st = self.starting.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let old = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(old) = old {
            let death = old.death_reason().unwrap_or_else(|| "stopped".to_owned());
            tracing::warn!(slot = self.index, pid = ?old.pid, %death, "python worker is gone; restarting it");
            st.last_death = Some(death);
            if old.started.elapsed() < YOUNG {
                st.failures += 1;
            } else {
                st.failures = 0;
            }
        }
        if st.failures > 0 {
            let exp = st.failures.saturating_sub(1).min(16);
            let delay = inner
                .config
                .restart_backoff
                .saturating_mul(1u32 << exp)
                .min(inner.config.max_restart_backoff);
            let since = st.last_start.map_or(delay, |t| t.elapsed());
            if since < delay {
                tokio::time::sleep(delay - since).await;
            }
        }
        st.last_start = Some(Instant::now());
        st.starts += 1;
        let generation = inner.generation.fetch_add(1, Ordering::Relaxed);
        match Connection::start(
            inner.config.clone(),
            self.index,
            generation,
            inner.handle.clone(),
        )
        .await
        {
            Ok(conn) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                st.last_error = None;
                inner.adopt(&conn);
                Ok(conn)
            }
            Err(e) => {
                st.failures += 1;
                st.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

impl Inner {
    /// Takes a (re)started worker's inventory, saying what changed: node types that vanished
    /// will fail with a clear error when a job names them.
    fn adopt(&self, conn: &Connection) {
        let new = conn.discovery();
        let mut current = self.discovery.write().unwrap_or_else(|p| p.into_inner());
        if !current.nodes.is_empty() {
            let old: BTreeSet<&str> = current.nodes.iter().map(|n| n.node_type.as_str()).collect();
            let now: BTreeSet<&str> = new.nodes.iter().map(|n| n.node_type.as_str()).collect();
            let gone: Vec<&&str> = old.difference(&now).collect();
            let added: Vec<&&str> = now.difference(&old).collect();
            if !gone.is_empty() || !added.is_empty() {
                tracing::warn!(
                    gone = ?gone,
                    added = ?added,
                    "the restarted python worker has different node types; a restart of this \
                     process picks up new ones"
                );
            }
        }
        *current = new;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(c) = slot.live() {
                c.kill_with("stopped with its bridge".to_owned());
            }
        }
    }
}

impl PythonBridge {
    /// Starts the first worker and reads its node inventory. Errors say what is wrong with the
    /// interpreter (missing, no nodetool-core, not a worker, too old a protocol).
    pub async fn start(config: BridgeConfig) -> Result<PythonBridge> {
        Self::start_with(config, None).await
    }

    /// [`start`](Self::start) with where declared secrets come from when a job has none.
    pub async fn start_with(
        config: BridgeConfig,
        secrets: Option<Arc<dyn SecretSource>>,
    ) -> Result<PythonBridge> {
        let workers = config.workers.max(1);
        let inner = Arc::new(Inner {
            config: Arc::new(config),
            handle: tokio::runtime::Handle::current(),
            slots: (0..workers)
                .map(|index| Slot {
                    index,
                    ..Slot::default()
                })
                .collect(),
            discovery: RwLock::new(Arc::new(Discovery::default())),
            generation: AtomicU64::new(1),
            secrets,
        });
        inner.slots[0].connect(&inner).await?;
        Ok(PythonBridge { inner })
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }

    /// The node inventory of the latest worker start.
    pub fn discovery(&self) -> Arc<Discovery> {
        self.inner
            .discovery
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The process-level value of a declared secret (see [`SecretSource`]).
    pub fn secret(&self, name: &str) -> Option<String> {
        self.inner.secrets.as_ref().and_then(|s| s.secret(name))
    }

    /// The least busy live worker; an idle slot is started in the background when all are
    /// busy, and when none is alive this waits for a (re)start.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let inner = &self.inner;
        let mut best: Option<Arc<Connection>> = None;
        let mut idle: Option<&Slot> = None;
        for slot in &inner.slots {
            match slot.live() {
                Some(c) => {
                    if best.as_ref().is_none_or(|b| c.inflight() < b.inflight()) {
                        best = Some(c);
                    }
                }
                None => {
                    idle.get_or_insert(slot);
                }
            }
        }
        match (best, idle) {
            (Some(c), Some(slot)) if c.inflight() > 0 => {
                // Busy: grow the pool for the next request, serve this one now.
                if let Ok(guard) = slot.starting.try_lock() {
                    drop(guard);
                    let me = self.inner.clone();
                    let index = slot.index;
                    self.inner.handle.spawn(async move {
                        if let Err(e) = me.slots[index].connect(&me).await {
                            tracing::warn!(slot = index, error = %e, "could not start another python worker");
                        }
                    });
                }
                Ok(c)
            }
            (Some(c), _) => Ok(c),
            (None, Some(slot)) => slot.connect(inner).await,
            (None, None) => Err(Error::new(
                ErrorKind::Unexpected,
                "the python bridge has no worker slots",
            )),
        }
    }

    /// Sends one node execution to a worker. The request is cancelled on the worker when the
    /// returned [`Execution`] is dropped before its end.
    pub async fn execute(&self, request: &ExecuteRequest) -> Result<Execution> {
        // A worker can die between being picked and being written to: try a fresh one once.
        let mut last = None;
        for _ in 0..2 {
            let conn = self
                .connection()
                .await
                .map_err(|e| e.with_context("node", &request.label))?;
            conn.ensure_job(&request.job_id, &request.workflow_id, &request.user_id);
            match conn.execute(request) {
                Ok(exec) => return Ok(exec),
                Err(e) if !conn.is_alive() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::unexpected("no python worker")))
    }

    /// Tells every worker that ran nodes of `job_id` that the job is over (`job.end`, protocol
    /// v4), so it can release the models they loaded. `reason`: completed, failed, cancelled.
    pub async fn end_job(&self, job_id: &str, reason: &str) {
        for slot in &self.inner.slots {
            if let Some(c) = slot.live() {
                c.end_job(job_id, reason).await;
            }
        }
    }

    /// Recent stderr lines of every worker, oldest worker first.
    pub fn recent_stderr(&self, lines: usize) -> Vec<String> {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.current.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .flat_map(|c| c.stderr_tail(lines))
            .collect()
    }

    /// The pids of the running workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.live().and_then(|c| c.pid))
            .collect()
    }

    /// A snapshot for `nodetool python doctor`: each worker's state and its `worker.status`.
    pub async fn status(&self) -> BridgeStatus {
        let discovery = self.discovery();
        let mut workers = Vec::new();
        for slot in &self.inner.slots {
            let conn = slot
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut w = WorkerState {
                slot: slot.index,
                ..WorkerState::default()
            };
            // A slot in the middle of a (re)start is reported as such, not waited for.
            match slot.starting.try_lock() {
                Ok(st) => {
                    w.starts = st.starts;
                    w.last_error = st.last_error.clone();
                    w.last_death = st.last_death.clone();
                }
                Err(_) => w.starting = true,
            }
            if let Some(c) = conn {
                w.pid = c.pid;
                w.alive = c.is_alive();
                w.inflight = c.inflight();
                w.uptime_secs = c.started.elapsed().as_secs_f64();
                if w.alive {
                    let probe = tokio::time::timeout(
                        self.inner.config.health_timeout,
                        c.call("worker.status", rmpv::Value::Map(vec![])),
                    )
                    .await;
                    match probe {
                        Ok(Ok(m)) => w.worker_status = Some(crate::convert::to_json(&m.data)),
                        Ok(Err(e)) => w.last_error = Some(e.to_string()),
                        Err(_) => w.last_error = Some("worker.status timed out".to_owned()),
                    }
                } else {
                    w.last_death = c.death_reason();
                }
            }
            workers.push(w);
        }
        BridgeStatus {
            python: self.inner.config.python.display().to_string(),
            protocol_version: discovery.protocol_version,
            node_count: discovery.nodes.len(),
            namespaces: discovery.namespaces(),
            load_errors: discovery
                .load_errors
                .iter()
                .map(ToString::to_string)
                .collect(),
            workers,
        }
    }

    /// Lets every worker finish what it runs (closing its stdin), for up to `grace`, then kills
    /// what is left.
    pub async fn shutdown(&self, grace: Duration) {
        for slot in &self.inner.slots {
            if let Some(c) = slot.live() {
                c.shutdown(grace).await;
            }
        }
    }
}

/// One worker slot in a [`BridgeStatus`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerState {
    pub slot: usize,
    pub pid: Option<u32>,
    pub alive: bool,
    /// Being started or restarted right now.
    pub starting: bool,
    pub inflight: usize,
    pub uptime_secs: f64,
    /// Starts of this slot, the first included.
    pub starts: u64,
    pub last_error: Option<String>,
    pub last_death: Option<String>,
    /// The worker's own `worker.status` answer.
    pub worker_status: Option<serde_json::Value>,
}

/// What `nodetool python doctor` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeStatus {
    pub python: String,
    pub protocol_version: u32,
    pub node_count: usize,
    /// Node types per top-level namespace.
    pub namespaces: Vec<(String, usize)>,
    pub load_errors: Vec<String>,
    pub workers: Vec<WorkerState>,
}
