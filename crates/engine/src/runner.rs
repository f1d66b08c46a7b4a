//! The dataflow runner: one tokio task per node, a bounded inbox per input handle, `on_any` /
//! `zip_all` batching, streaming, output collection, fail-fast, cancellation and timeouts, and
//! node-output caching. Input nodes may be fed from outside while the job runs
//! ([`RunOptions::input_streams`], see [`crate::inputs`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use nodetool_core::{CacheValue, Error, ErrorKind, Result};

use crate::context::{EngineResources, JobShared, ProcessingContext};
use crate::control::{ControlInbox, ControlMsg, ControlPlane};
use crate::events::{Event, EventPoster, EventSink, JobUpdate, NodeUpdate, Status};
use crate::graph::{EdgeType, Graph, SyncMode};
use crate::inputs::{Feeds, InputStreams};
use crate::node::{Emitter, InMsg, Inbox, NodeImpl, NodeInputs, NodeKind, Route};
use crate::quiet::Quiet;
use crate::registry::Registry;
use crate::validate::validate;

/// Knobs for one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Consult and fill the node cache for cacheable nodes (`--no-cache` turns it off).
    pub use_cache: bool,
    /// Limit for one firing of any node (`None`: no limit).
    pub node_timeout: Option<Duration>,
    /// Limit for the whole job (`None`: no limit).
    pub job_timeout: Option<Duration>,
    /// Items an input handle buffers before its producer waits.
    pub inbox_capacity: usize,
    /// Secrets nodes may look up (`ProcessingContext::secret`).
    pub secrets: BTreeMap<String, String>,
    /// Feed input nodes from outside while the job runs: with `Some`, every input node whose
    /// name has no param streams the values pushed through this handle and ends when its stream
    /// is ended (see [`crate::inputs`]). `None`: input nodes emit their param or default once.
    pub input_streams: Option<InputStreams>,
    /// Pause the job from outside ([`crate::pause`] has the semantics); `None`: never paused.
    pub pause: Option<crate::pause::PauseGate>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            use_cache: true,
            node_timeout: None,
            job_timeout: None,
            inbox_capacity: 8,
            secrets: BTreeMap::new(),
            input_streams: None,
            pause: None,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job_id: String,
    pub user_id: String,
    pub workflow_id: String,
    pub graph: Graph,
    /// `{input node name: value}`.
    pub params: Map<String, Value>,
}

impl RunRequest {
    /// A request with a fresh job id, user "1" (the local user) and no params.
    pub fn new(graph: Graph) -> Self {
        Self {
            job_id: nodetool_core::id::new_id(),
            user_id: "1".to_owned(),
            workflow_id: String::new(),
            graph,
            params: Map::new(),
        }
    }

    pub fn with_params(mut self, params: Map<String, Value>) -> Self {
        self.params = params;
        self
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub job_id: String,
    /// `Completed`, `Failed` or `Cancelled`.
    pub status: Status,
    /// `{output name: [values...]}`, one entry per value that reached the output node.
    pub result: Map<String, Value>,
    /// The failure: the first failing node's error, a validation error, or a job timeout.
    pub error: Option<Error>,
    /// The node whose failure failed the job.
    pub failed_node: Option<String>,
    pub duration: Duration,
}

/// Runs workflows. Cheap to share; one per process is enough.
#[derive(Debug, Clone)]
pub struct Engine {
    registry: Arc<Registry>,
    resources: EngineResources,
}

/// Cut long error texts in events, as NodeTool does.
const MAX_ERROR_CHARS: usize = 1000;

/// How long nodes get to end once a job is cancelled before the run abandons them.
pub const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn cut(s: String) -> String {
    if s.chars().count() <= MAX_ERROR_CHARS {
        s
    } else {
        s.chars().take(MAX_ERROR_CHARS).collect()
    }
}

struct NodePlan {
    id: String,
    /// The type the graph names (an alias runs its target's implementation).
    node_type: String,
    imp: Arc<dyn NodeImpl>,
    sync_mode: SyncMode,
    props: Map<String, Value>,
    handles: Vec<String>,
    sticky: Vec<bool>,
    cacheable: bool,
    inbox: Inbox,
    emitter: Emitter,
    /// A streamed input node: the values pushed from outside, and the slot they go out on.
    feed: Option<(mpsc::Receiver<Value>, String)>,
    /// Quiescence tracking, in graphs with feedback inputs.
    quiet: Option<Arc<Quiet>>,
    /// A controlled node: it runs once per control event instead of once per input batch.
    control: Option<ControlInbox>,
    dynamic_outputs: Map<String, Value>,
    /// Firings answered from the node cache.
    cache_hits: u64,
}

/// The first failure of a job; later ones are only logged.
#[derive(Debug, Default)]
struct FirstFailure(Mutex<Option<(Option<String>, Error)>>);

impl FirstFailure {
    fn set(&self, node: Option<String>, err: Error) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((node, err));
            true
        } else {
            false
        }
    }

    fn take(&self) -> Option<(Option<String>, Error)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Engine {
    pub fn new(registry: Arc<Registry>, resources: EngineResources) -> Self {
        Self {
            registry,
            resources,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn resources(&self) -> &EngineResources {
        &self.resources
    }

    /// Validates a graph and params without running anything.
    pub fn validate(&self, graph: &Graph, params: &Map<String, Value>) -> Result<()> {
        validate(graph, &self.registry, params).map_err(Error::from)
    }

    /// Runs a workflow to the end. Never panics and never hangs on a node that honours
    /// cancellation: failures, timeouts and cancellation all come back as a [`RunOutcome`].
    /// Events go to `sink`; `cancel` cancels the job from outside.
    pub async fn run(
        &self,
        req: RunRequest,
        opts: RunOptions,
        sink: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let started = Instant::now();
        let poster = Arc::new(EventPoster::new(req.job_id.clone(), sink));
        let job_update = |status: Status| JobUpdate {
            status,
            workflow_id: Some(req.workflow_id.clone()),
            message: None,
            result: None,
            error: None,
            traceback: None,
            run_state: None,
            duration: None,
            peak_memory_bytes: None,
        };
        poster.post(Event::JobUpdate(job_update(Status::Running)));
        // Pausing and resuming show as job_updates (one when the job starts paused).
        let pause_events = opts.pause.clone().map(|gate| {
            let poster = poster.clone();
            let workflow_id = req.workflow_id.clone();
            let mut changes = gate.subscribe();
            let update = move |paused: bool| {
                let (status, message) = if paused {
                    (Status::Paused, "Job paused")
                } else {
                    (Status::Running, "Job resumed")
                };
                poster.post(Event::JobUpdate(JobUpdate {
                    status,
                    workflow_id: Some(workflow_id.clone()),
                    message: Some(message.to_owned()),
                    result: None,
                    error: None,
                    traceback: None,
                    run_state: None,
                    duration: None,
                    peak_memory_bytes: None,
                }));
            };
            if gate.is_paused() {
                update(true);
            }
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let paused = *changes.borrow_and_update();
                    update(paused);
                }
            })
        });

        let job_cancel = cancel.child_token();
        let failure = Arc::new(FirstFailure::default());
        let shared = Arc::new(JobShared {
            job_id: req.job_id.clone(),
            user_id: req.user_id.clone(),
            workflow_id: req.workflow_id.clone(),
            cancel: job_cancel.clone(),
            poster: poster.clone(),
            // Every storage access of this job is scoped to its user.
            resources: self.resources.for_owner(if req.user_id.is_empty() {
                "anonymous"
            } else {
                &req.user_id
            }),
            secrets: Arc::new(opts.secrets.clone()),
            use_cache: opts.use_cache,
            results: Mutex::new(Map::new()),
            control: OnceLock::new(),
            memory: Mutex::new(HashMap::new()),
            pause: opts.pause.clone(),
        });

        // Streams another run already took are refused, and never opened or closed by this one.
        let streams = match &opts.input_streams {
            Some(s) if !s.claim() => {
                failure.set(
                    None,
                    Error::invalid_input("these input streams already belong to another run")
                        .with_operation("engine.run"),
                );
                None
            }
            other => other.clone(),
        };
        let checked = validate(&req.graph, &self.registry, &req.params).and_then(|()| {
            crate::validate::preflight(&req.graph, &self.registry, &self.resources, &opts.secrets)
        });
        let plans = match checked.map_err(Error::from) {
            Ok(()) if opts.input_streams.is_some() && streams.is_none() => None,
            Ok(()) => Some(self.plan(&req, &opts, &poster, &job_cancel)),
            Err(e) => Some(Err(e)),
        };
        match plans {
            None => {}
            Some(Err(err)) => {
                failure.set(None, err);
            }
            Some(Ok((plans, feeds, control))) => {
                let _ = shared.control.set(control);
                if let Some(s) = &streams {
                    s.open(feeds);
                }
                self.execute(plans, &shared, &opts, &failure, &job_cancel)
                    .await
            }
        }

        if let Some(task) = pause_events {
            task.abort();
        }
        let duration = started.elapsed();
        let result = std::mem::take(&mut *shared.results.lock().unwrap_or_else(|p| p.into_inner()));
        let (status, error, failed_node) = match failure.take() {
            Some((node, err)) => (Status::Failed, Some(err), node),
            None if cancel.is_cancelled() => (Status::Cancelled, None, None),
            None => (Status::Completed, None, None),
        };
        // Closed before the terminal event, so a client that sees it and pushes gets an error.
        if let Some(s) = &streams {
            s.close(format!(
                "job {} is no longer running ({})",
                req.job_id,
                status.as_str()
            ));
        }
        let mut update = job_update(status);
        update.duration = Some(duration.as_secs_f64());
        match status {
            Status::Completed => {
                update.message = Some(format!("Workflow {} completed", req.job_id));
                update.result = Some(result.clone());
            }
            Status::Cancelled => update.message = Some("Job cancelled".to_owned()),
            _ => {
                let text = match (&failed_node, &error) {
                    (Some(node), Some(e)) => format!("node {node}: {e}"),
                    (None, Some(e)) => e.to_string(),
                    _ => String::new(),
                };
                update.error = Some(cut(text));
            }
        }
        poster.post(Event::JobUpdate(update));
        RunOutcome {
            job_id: req.job_id,
            status,
            result,
            error,
            failed_node,
            duration,
        }
    }

    /// Builds inboxes, routes and resolved literal properties for every runnable node, and the
    /// feeds of streamed input nodes.
    fn plan(
        &self,
        req: &RunRequest,
        opts: &RunOptions,
        poster: &Arc<EventPoster>,
        cancel: &CancellationToken,
    ) -> Result<(Vec<NodePlan>, Feeds, ControlPlane)> {
        let graph = &req.graph;
        let (control_plane, mut control_routes, mut control_inboxes) =
            ControlPlane::build(graph, &self.registry);
        let data_edges: Vec<&crate::graph::Edge> = graph
            .edges
            .iter()
            .filter(|e| e.edge_type == EdgeType::Data)
            .collect();
        let input_name = |n: &crate::graph::Node| n.input_name().to_owned();
        // Streamed (see `crate::inputs`): with input streams, every streaming input node, and
        // with `all_unset` streams every input node whose name has no param as well.
        let fed: HashSet<&str> = match &opts.input_streams {
            Some(streams) => graph
                .nodes
                .iter()
                .filter(|n| {
                    self.registry.get(&n.node_type).is_some_and(|i| {
                        let spec = i.spec();
                        spec.kind == NodeKind::Input
                            && (spec.streaming
                                || (streams.streams_unset_inputs()
                                    && !req.params.contains_key(&input_name(n))))
                    })
                })
                .map(|n| n.id.as_str())
                .collect(),
            None => HashSet::new(),
        };
        let streaming = streaming_edges(graph, &self.registry, &fed);
        let mut feeds = Feeds::new();

        struct Wiring {
            tx: mpsc::UnboundedSender<InMsg>,
            rx: Option<mpsc::UnboundedReceiver<InMsg>>,
            handles: Vec<String>,
            capacity: Vec<Arc<Semaphore>>,
            sticky: Vec<bool>,
        }
        let mut wiring: HashMap<&str, Wiring> = HashMap::new();
        let mut routes: HashMap<&str, Vec<(String, Vec<Route>)>> = HashMap::new();
        let capacity = opts.inbox_capacity.max(1);
        for (i, edge) in data_edges.iter().enumerate() {
            let w = wiring.entry(edge.target.as_str()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                Wiring {
                    tx,
                    rx: Some(rx),
                    handles: Vec::new(),
                    capacity: Vec::new(),
                    sticky: Vec::new(),
                }
            });
            let handle = w.handles.len();
            w.handles.push(edge.target_handle.clone());
            let sem = Arc::new(Semaphore::new(capacity));
            w.capacity.push(sem.clone());
            w.sticky.push(!streaming.contains(&i));
            let route = Route {
                edge_id: edge.display_id(),
                handle,
                tx: w.tx.clone(),
                capacity: sem,
                counter: 0,
            };
            let slots = routes.entry(edge.source.as_str()).or_default();
            match slots.iter_mut().find(|(s, _)| *s == edge.source_handle) {
                Some((_, list)) => list.push(route),
                None => slots.push((edge.source_handle.clone(), vec![route])),
            }
        }

        // Graphs with a feedback loop track quiescence (see `crate::quiet`).
        let specs = || {
            graph
                .nodes
                .iter()
                .filter_map(|n| self.registry.get(&n.node_type))
                .filter(|i| i.spec().kind != NodeKind::Inert)
        };
        let quiet = specs()
            .any(|i| !i.spec().feedback.is_empty())
            .then(|| Quiet::new(specs().count()));
        let mut plans = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let imp = self.registry.get(&node.node_type).cloned().ok_or_else(|| {
                Error::invalid_input(format!("unknown node type {}", node.node_type))
            })?;
            let spec = imp.spec();
            if spec.kind == NodeKind::Inert {
                continue;
            }
            let (handles, capacity_sems, sticky, rx) = match wiring.remove(node.id.as_str()) {
                Some(mut w) => (
                    w.handles,
                    w.capacity,
                    w.sticky,
                    w.rx.take()
                        .ok_or_else(|| Error::unexpected("inbox taken twice"))?,
                ),
                None => (
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    mpsc::unbounded_channel().1,
                ),
            };
            // Literal properties: declared defaults, then `data`, then dynamic properties;
            // wired handles are left out (wired inputs beat literals).
            let mut props = Map::new();
            for input in &spec.inputs {
                props.insert(input.name.clone(), input.default.clone());
            }
            for (k, v) in node.data.iter().chain(node.dynamic_properties.iter()) {
                props.insert(k.clone(), v.clone());
            }
            // Nulled in place rather than removed, so a wired dynamic input keeps its position
            // among the node's properties (dynamic inputs are ordered, e.g. Concat's).
            for h in &handles {
                if let Some(v) = props.get_mut(h) {
                    *v = Value::Null;
                }
            }
            let mut feed = None;
            if spec.kind == NodeKind::Input {
                let name = input_name(node);
                if let Some(v) = req.params.get(&name) {
                    props.insert("value".to_owned(), v.clone());
                }
                if fed.contains(node.id.as_str()) {
                    let slot = spec
                        .outputs
                        .first()
                        .map_or("output", |o| o.name.as_str())
                        .to_owned();
                    let type_name = spec
                        .input_spec("value")
                        .map_or("any", |i| i.type_name.as_str());
                    // A streaming input opens with its param or non-null literal value, as in
                    // NodeTool; other streamed inputs wait for the first push.
                    let first = spec
                        .streaming
                        .then(|| props.get("value").cloned())
                        .flatten()
                        .filter(|v| !v.is_null());
                    let rx = feeds.add(&name, &slot, type_name, capacity, first);
                    feed = Some((rx, slot));
                } else if opts.input_streams.is_some() {
                    feeds.add_fixed(&name);
                }
            }
            let has_streaming_input = sticky.iter().any(|s| !s);
            let control = control_inboxes.remove(&node.id);
            let control_out = control_routes.remove(&node.id).unwrap_or_default();
            // A cache hit replays data outputs only, so nodes on control edges always run.
            let cacheable = opts.use_cache
                && spec.cacheable
                && !spec.streaming
                && !has_streaming_input
                && control.is_none()
                && control_out.is_empty();
            let mut emitter = Emitter::new(
                spec.streaming || feed.is_some(),
                routes.remove(node.id.as_str()).unwrap_or_default(),
                control_out,
                poster.clone(),
                req.workflow_id.clone(),
                cancel.clone(),
            );
            let mut inbox = Inbox::new(handles.clone(), rx, capacity_sems, cancel.clone());
            if let Some(q) = &quiet {
                emitter.set_quiet(q.clone());
                inbox.set_quiet(q.clone());
            }
            plans.push(NodePlan {
                id: node.id.clone(),
                node_type: node.node_type.clone(),
                sync_mode: node.sync_mode,
                imp,
                props,
                handles,
                sticky,
                cacheable,
                inbox,
                emitter,
                feed,
                quiet: quiet.clone(),
                control,
                dynamic_outputs: node.dynamic_outputs.clone(),
                cache_hits: 0,
            });
        }
        for name in req.params.keys() {
            let known = graph.nodes.iter().any(|n| {
                self.registry
                    .get(&n.node_type)
                    .is_some_and(|i| i.spec().kind == NodeKind::Input)
                    && n.input_name() == name.as_str()
            });
            if !known {
                tracing::warn!(job_id = %req.job_id, param = %name, "param matches no input node; ignored");
            }
        }
        Ok((plans, feeds, control_plane))
    }

    async fn execute(
        &self,
        plans: Vec<NodePlan>,
        shared: &Arc<JobShared>,
        opts: &RunOptions,
        failure: &Arc<FirstFailure>,
        job_cancel: &CancellationToken,
    ) {
        let mut set = JoinSet::new();
        let mut task_nodes = HashMap::new();
        for plan in plans {
            let ctx = ProcessingContext::new(
                shared.clone(),
                &plan.id,
                &plan.node_type,
                &plan.imp.spec().title,
            )
            .with_dynamic_outputs(plan.dynamic_outputs.clone());
            let failure = failure.clone();
            let job_cancel = job_cancel.clone();
            let node_timeout = opts.node_timeout;
            let ttl = shared.resources.node_cache_ttl;
            let node_id = plan.id.clone();
            // A child of the job's span (the caller's current one); exported by the binary's
            // OpenTelemetry layer when one is installed.
            let span = tracing::info_span!(
                target: "nodetool::trace",
                "node",
                node_id = %plan.id,
                node_type = %plan.node_type,
                firings = tracing::field::Empty,
                cache_hits = tracing::field::Empty,
                cpu_ms = tracing::field::Empty,
                bytes_read = tracing::field::Empty,
                bytes_written = tracing::field::Empty,
            );
            let handle = set.spawn(
                async move {
                    run_actor(plan, ctx, node_timeout, ttl, failure, job_cancel).await;
                }
                .instrument(span),
            );
            task_nodes.insert(handle.id(), node_id);
        }

        let deadline = opts
            .job_timeout
            .map(|d| (d, tokio::time::Instant::now() + d));
        // Once the job is cancelled (failure, timeout or caller), nodes get CANCEL_GRACE to
        // end; a node stuck in code that never yields is then abandoned, so the run (and the
        // job's slot) always ends.
        let mut abandon_at: Option<tokio::time::Instant> = None;
        loop {
            if abandon_at.is_none() && job_cancel.is_cancelled() {
                abandon_at = Some(tokio::time::Instant::now() + CANCEL_GRACE);
            }
            let next = tokio::select! {
                r = set.join_next_with_id() => r,
                _ = async {
                    match deadline {
                        Some((_, at)) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if !job_cancel.is_cancelled() => {
                    let limit = deadline.map(|(d, _)| d).unwrap_or_default();
                    failure.set(None, job_timeout_error(limit));
                    job_cancel.cancel();
                    continue;
                }
                _ = job_cancel.cancelled(), if abandon_at.is_none() => continue,
                _ = async {
                    match abandon_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::warn!(
                        job_id = %shared.job_id,
                        live_tasks = set.len(),
                        "nodes ignored cancellation for {}s; abandoning them",
                        CANCEL_GRACE.as_secs()
                    );
                    set.abort_all();
                    set.detach_all();
                    break;
                }
            };
            match next {
                None => break,
                Some(Ok(_)) => {}
                Some(Err(join_err)) => {
                    // Panics are caught inside the actor; this is a last resort (e.g. abort).
                    let node = task_nodes.get(&join_err.id()).cloned();
                    failure.set(
                        node,
                        Error::unexpected(format!("node task ended abnormally: {join_err}")),
                    );
                    job_cancel.cancel();
                }
            }
        }
    }
}

/// The error of a job that ran past its time limit. Strategies that end such a job themselves
/// (a worker killed at the hard deadline) report this same error, so a time-out reads the same
/// whatever ran the job.
pub fn job_timeout_error(limit: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{JOB_TIMEOUT_WORDS} {:.3}s", limit.as_secs_f64()),
    )
    .with_operation("engine.run")
}

const JOB_TIMEOUT_WORDS: &str = "job exceeded its time limit of";

/// Whether a job's error text (`job_update.error`, a job record's `error`) is the job time-out
/// of [`job_timeout_error`], whichever strategy reported it.
pub fn is_job_timeout_message(text: &str) -> bool {
    text.contains(JOB_TIMEOUT_WORDS)
}

/// Which data edges carry streams: every edge reachable from a streaming (generator) node or a
/// streamed input node (`fed`), stopping at nodes that collect a stream into one value. Indexes
/// into the data edges.
fn streaming_edges(graph: &Graph, registry: &Registry, fed: &HashSet<&str>) -> HashSet<usize> {
    let data_edges: Vec<&crate::graph::Edge> = graph
        .edges
        .iter()
        .filter(|e| e.edge_type == EdgeType::Data)
        .collect();
    let mut out_edges: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in data_edges.iter().enumerate() {
        out_edges.entry(e.source.as_str()).or_default().push(i);
    }
    let spec_of = |id: &str| {
        graph
            .node(id)
            .and_then(|n| registry.get(&n.node_type))
            .map(|imp| imp.spec().clone())
    };
    let mut marked = HashSet::new();
    let mut queue: VecDeque<&str> = graph
        .nodes
        .iter()
        .filter(|n| fed.contains(n.id.as_str()) || spec_of(&n.id).is_some_and(|s| s.streaming))
        .map(|n| n.id.as_str())
        .collect();
    let mut seen: HashSet<&str> = queue.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        for &i in out_edges.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            marked.insert(i);
            let target = data_edges[i].target.as_str();
            let collects = spec_of(target).is_some_and(|s| s.consumes_stream && !s.streaming);
            if !collects && seen.insert(target) {
                queue.push_back(target);
            }
        }
    }
    marked
}

/// `on_any` / `zip_all` batching over a node's inbox.
struct Batcher {
    mode: SyncMode,
    sticky: Vec<bool>,
    latest: Vec<Option<Value>>,
    queues: Vec<VecDeque<(Value, Option<OwnedSemaphorePermit>)>>,
    ended: Vec<bool>,
    fired: bool,
}

impl Batcher {
    fn new(mode: SyncMode, sticky: Vec<bool>) -> Self {
        let n = sticky.len();
        Self {
            mode,
            sticky,
            latest: vec![None; n],
            queues: (0..n).map(|_| VecDeque::new()).collect(),
            ended: vec![false; n],
            fired: false,
        }
    }

    fn snapshot(&self) -> Vec<Value> {
        self.latest
            .iter()
            .map(|v| v.clone().unwrap_or(Value::Null))
            .collect()
    }

    /// The input values of the next firing, `None` when the node is done.
    async fn next(&mut self, inbox: &mut Inbox) -> Result<Option<Vec<Value>>> {
        if self.latest.is_empty() {
            // No wired inputs: fire exactly once.
            let first = !self.fired;
            self.fired = true;
            return Ok(first.then(Vec::new));
        }
        match self.mode {
            SyncMode::OnAny => self.next_on_any(inbox).await,
            SyncMode::ZipAll => self.next_zip_all(inbox).await,
        }
    }

    /// Fire once every handle has a value, then on every later arrival with the latest values.
    async fn next_on_any(&mut self, inbox: &mut Inbox) -> Result<Option<Vec<Value>>> {
        loop {
            match inbox.next_msg().await? {
                None => return Ok(None),
                Some(InMsg::End { handle }) => {
                    self.ended[handle] = true;
                    if !self.fired && self.latest[handle].is_none() {
                        // This handle will never get a value, so the node can never fire.
                        return Ok(None);
                    }
                }
                Some(InMsg::Item { handle, value, .. }) => {
                    self.latest[handle] = Some(value);
                    if self.fired || self.latest.iter().all(Option::is_some) {
                        self.fired = true;
                        return Ok(Some(self.snapshot()));
                    }
                }
            }
        }
    }

    /// One fresh item per streaming handle per firing; non-streaming ("sticky") handles reuse
    /// their last value. Stops when a streaming handle is exhausted.
    async fn next_zip_all(&mut self, inbox: &mut Inbox) -> Result<Option<Vec<Value>>> {
        let n = self.latest.len();
        loop {
            let fresh = self.queues.iter().any(|q| !q.is_empty());
            let ready = (0..n).all(|h| {
                !self.queues[h].is_empty() || (self.sticky[h] && self.latest[h].is_some())
            });
            if ready && fresh {
                for h in 0..n {
                    if let Some((v, _permit)) = self.queues[h].pop_front() {
                        self.latest[h] = Some(v);
                    }
                }
                self.fired = true;
                return Ok(Some(self.snapshot()));
            }
            let exhausted = (0..n).any(|h| {
                self.ended[h]
                    && self.queues[h].is_empty()
                    && (!self.sticky[h] || self.latest[h].is_none())
            });
            if exhausted || self.ended.iter().all(|e| *e) {
                return Ok(None);
            }
            match inbox.next_msg().await? {
                None => self.ended.iter_mut().for_each(|e| *e = true),
                Some(InMsg::End { handle }) => self.ended[handle] = true,
                Some(InMsg::Item {
                    handle,
                    value,
                    permit,
                }) => self.queues[handle].push_back((value, permit)),
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn node_update(
    ctx: &ProcessingContext,
    title: &str,
    status: Status,
    props: Option<&Map<String, Value>>,
    result: Option<Map<String, Value>>,
    error: Option<String>,
) -> Event {
    // A `running` update opens a firing; the update that ends it says what it cost.
    let resources = match status {
        Status::Running => {
            ctx.meter.begin();
            None
        }
        s if s.is_terminal() => Some(ctx.meter.end()),
        _ => None,
    };
    Event::NodeUpdate(NodeUpdate {
        node_id: ctx.node_id().to_owned(),
        node_name: title.to_owned(),
        node_type: ctx.node_type().to_owned(),
        status,
        error,
        result,
        properties: props.cloned(),
        workflow_id: Some(ctx.workflow_id().to_owned()),
        resources,
    })
}

/// One node's task: batch inputs, fire, route outputs; on the way out always end its outgoing
/// streams and stop accepting input, whatever happened.
async fn run_actor(
    mut plan: NodePlan,
    ctx: ProcessingContext,
    node_timeout: Option<Duration>,
    cache_ttl: Duration,
    failure: Arc<FirstFailure>,
    job_cancel: CancellationToken,
) {
    let title = plan.imp.spec().title.clone();
    let mut timed = CpuTimed::new(
        AssertUnwindSafe(actor_body(&mut plan, &ctx, node_timeout, cache_ttl)).catch_unwind(),
        ctx.meter.clone(),
    );
    let outcome = (&mut timed).await;
    let cpu = timed.spent;
    drop(timed);
    // The node's span (the current one) says what it did, for traces.
    let span = tracing::Span::current();
    span.record("firings", plan.emitter.firings());
    span.record("cache_hits", plan.cache_hits);
    span.record("cpu_ms", cpu.as_secs_f64() * 1000.0);
    let (read, written) = ctx.meter.totals();
    span.record("bytes_read", read);
    span.record("bytes_written", written);
    let outcome = match outcome {
        Ok(r) => r,
        Err(panic) => Err(Error::unexpected(format!(
            "node panicked: {}",
            panic_message(panic.as_ref())
        ))
        .with_operation("node.process")),
    };
    plan.inbox.close();
    plan.emitter.finish();
    if let Some(q) = &plan.quiet {
        q.finished();
    }
    if let Err(err) = outcome {
        let cancelled = err.kind() == ErrorKind::Cancelled && job_cancel.is_cancelled();
        if cancelled {
            ctx.post(node_update(
                &ctx,
                &title,
                Status::Cancelled,
                None,
                None,
                None,
            ));
        } else {
            let err = err
                .with_context("node_id", plan.id.clone())
                .with_context("node_type", plan.imp.spec().node_type.clone());
            ctx.post(node_update(
                &ctx,
                &title,
                Status::Failed,
                None,
                None,
                Some(cut(err.to_string())),
            ));
            tracing::debug!(job_id = %ctx.job_id(), node_id = %plan.id, error = %err, "node failed");
            if failure.set(Some(plan.id.clone()), err) {
                // Fail fast: the first failure stops every other node.
                job_cancel.cancel();
            }
        }
    }
}

async fn guarded<T>(
    ctx: &ProcessingContext,
    timeout: Option<Duration>,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let limited = async {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "node exceeded its time limit of {:.3}s",
                        limit.as_secs_f64()
                    ),
                )
                .with_operation("node.process")
            })?,
            None => fut.await,
        }
    };
    tokio::select! {
        biased;
        _ = ctx.cancellation().cancelled() => Err(Error::new(ErrorKind::Cancelled, "job cancelled")),
        r = limited => r,
    }
}

async fn actor_body(
    plan: &mut NodePlan,
    ctx: &ProcessingContext,
    node_timeout: Option<Duration>,
    cache_ttl: Duration,
) -> Result<()> {
    let imp = plan.imp.clone();
    let spec = imp.spec();
    let title = spec.title.clone();
    let props = NodeInputs::new(plan.props.clone());

    if let Some((rx, slot)) = plan.feed.take() {
        return feed_body(plan, ctx, &title, &props, rx, &slot).await;
    }
    if let Some(control) = plan.control.take() {
        return controlled_body(plan, ctx, &title, &props, control, node_timeout).await;
    }

    if spec.consumes_stream {
        ctx.pause_point().await?;
        ctx.post(node_update(
            ctx,
            &title,
            Status::Running,
            Some(props.as_map()),
            None,
            None,
        ));
        plan.emitter.start_firing();
        guarded(
            ctx,
            node_timeout,
            imp.run_stream(ctx, &props, &mut plan.inbox, &mut plan.emitter),
        )
        .await?;
        let result = plan.emitter.last_values().clone();
        ctx.post(node_update(
            ctx,
            &title,
            Status::Completed,
            Some(props.as_map()),
            Some(result),
            None,
        ));
        return route_pending(&mut plan.emitter).await;
    }

    let mut batcher = Batcher::new(plan.sync_mode, plan.sticky.clone());
    while let Some(values) = batcher.next(&mut plan.inbox).await? {
        ctx.pause_point().await?;
        let mut inputs = props.clone();
        for (h, v) in plan.handles.iter().zip(values) {
            inputs.set(h.clone(), v);
        }
        ctx.post(node_update(
            ctx,
            &title,
            Status::Running,
            Some(inputs.as_map()),
            None,
            None,
        ));
        plan.emitter.start_firing();

        let key = plan.cacheable.then(|| {
            nodetool_core::node_cache_key(
                ctx.user_id(),
                &spec.node_type,
                &spec.version,
                &CacheValue::from(&Value::Object(inputs.as_map().clone())),
            )
        });
        let mut hit = false;
        if let Some(key) = &key {
            let found = ctx.node_cache().get(key).await;
            ctx.meter.cache(match &found {
                Ok(Some(CacheValue::Map(_))) => crate::meter::CacheOutcome::Hit,
                _ => crate::meter::CacheOutcome::Miss,
            });
            match found {
                Ok(Some(CacheValue::Map(outputs))) => {
                    for (slot, v) in outputs {
                        plan.emitter.emit(&slot, cache_to_json(v)).await?;
                    }
                    hit = true;
                    plan.cache_hits += 1;
                }
                Ok(_) => {}
                // Lossy by contract: an error is a miss.
                Err(e) => tracing::warn!(error = %e, "node cache get failed; treating as a miss"),
            }
        }
        if !hit {
            guarded(
                ctx,
                node_timeout,
                imp.process(ctx, &inputs, &mut plan.emitter),
            )
            .await?;
            if let Some(key) = &key {
                let value = CacheValue::from(&Value::Object(plan.emitter.last_values().clone()));
                if let Err(e) = ctx.node_cache().set(key, value, cache_ttl).await {
                    tracing::warn!(error = %e, "node cache set failed; not cached");
                }
            }
        }
        let result = plan.emitter.last_values().clone();
        ctx.post(node_update(
            ctx,
            &title,
            Status::Completed,
            Some(inputs.as_map()),
            Some(result),
            None,
        ));
        route_pending(&mut plan.emitter).await?;
    }
    Ok(())
}

/// A controlled node: waits until each wired data input has a value (or has ended), then runs
/// once per `run` control event with the event's properties over its inputs, until `stop` or
/// until every controller has finished. Data that arrives meanwhile replaces the cached input.
async fn controlled_body(
    plan: &mut NodePlan,
    ctx: &ProcessingContext,
    title: &str,
    props: &NodeInputs,
    mut control: ControlInbox,
    node_timeout: Option<Duration>,
) -> Result<()> {
    let imp = plan.imp.clone();
    let spec = imp.spec();
    let n = plan.handles.len();
    let mut latest: Vec<Option<Value>> = vec![None; n];
    let mut ended = vec![false; n];
    let take = |msg: InMsg, latest: &mut Vec<Option<Value>>, ended: &mut Vec<bool>| match msg {
        InMsg::Item { handle, value, .. } => latest[handle] = Some(value),
        InMsg::End { handle } => ended[handle] = true,
    };
    while (0..n).any(|h| latest[h].is_none() && !ended[h]) {
        match plan.inbox.next_msg().await? {
            Some(msg) => take(msg, &mut latest, &mut ended),
            None => break,
        }
    }
    let mut finished_controllers = 0;
    loop {
        let msg = tokio::select! {
            biased;
            _ = ctx.cancellation().cancelled() => {
                return Err(Error::new(ErrorKind::Cancelled, "job cancelled"));
            }
            m = control.rx.recv() => m,
        };
        let (properties, reply) = match msg {
            None | Some(ControlMsg::Stop) => break,
            Some(ControlMsg::End) => {
                finished_controllers += 1;
                if finished_controllers >= control.controllers {
                    break;
                }
                continue;
            }
            Some(ControlMsg::Run { properties, reply }) => (properties, reply),
        };
        ctx.pause_point().await?;
        while let Some(msg) = plan.inbox.try_next_msg() {
            take(msg, &mut latest, &mut ended);
        }
        let outcome = async {
            let mut inputs = props.clone();
            for (h, v) in plan.handles.iter().zip(&latest) {
                if let Some(v) = v {
                    inputs.set(h.clone(), v.clone());
                }
            }
            for (name, value) in properties {
                if !spec.dynamic && spec.input_spec(&name).is_none() {
                    return Err(Error::invalid_input(format!(
                        "control event sets property `{name}`, which {} does not have",
                        spec.node_type
                    ))
                    .with_operation("control.run")
                    .with_context("property", name));
                }
                inputs.set(name, value);
            }
            ctx.post(node_update(
                ctx,
                title,
                Status::Running,
                Some(inputs.as_map()),
                None,
                None,
            ));
            plan.emitter.start_firing();
            guarded(
                ctx,
                node_timeout,
                imp.process(ctx, &inputs, &mut plan.emitter),
            )
            .await?;
            let result = plan.emitter.last_values().clone();
            ctx.post(node_update(
                ctx,
                title,
                Status::Completed,
                Some(inputs.as_map()),
                Some(result.clone()),
                None,
            ));
            route_pending(&mut plan.emitter).await?;
            Ok(result)
        }
        .await;
        match (outcome, reply) {
            (Ok(result), Some(reply)) => {
                let _ = reply.send(Ok(result));
            }
            (Ok(_), None) => {}
            (Err(e), Some(reply)) => {
                let _ = reply.send(Err(Error::new(
                    e.kind(),
                    format!("controlled node `{}` failed: {e}", plan.id),
                )
                .with_operation("control.run")));
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        }
    }
    Ok(())
}

/// A streamed input node: each value pushed from outside goes downstream at once; the node ends
/// when its stream ends. No node timeout applies: the wait is for the client, and the job's own
/// time limit and cancellation still do.
async fn feed_body(
    plan: &mut NodePlan,
    ctx: &ProcessingContext,
    title: &str,
    props: &NodeInputs,
    mut rx: mpsc::Receiver<Value>,
    slot: &str,
) -> Result<()> {
    ctx.post(node_update(
        ctx,
        title,
        Status::Running,
        Some(props.as_map()),
        None,
        None,
    ));
    plan.emitter.start_firing();
    loop {
        let next = tokio::select! {
            biased;
            _ = ctx.cancellation().cancelled() => {
                return Err(Error::new(ErrorKind::Cancelled, "job cancelled"));
            }
            v = rx.recv() => v,
        };
        let Some(value) = next else { break };
        plan.emitter.emit(slot, value).await?;
    }
    let result = plan.emitter.last_values().clone();
    ctx.post(node_update(
        ctx,
        title,
        Status::Completed,
        Some(props.as_map()),
        Some(result),
        None,
    ));
    Ok(())
}

async fn route_pending(emitter: &mut Emitter) -> Result<()> {
    for (slot, value) in emitter.take_pending() {
        emitter.route(&slot, &value).await?;
    }
    Ok(())
}

fn cache_to_json(v: CacheValue) -> Value {
    match v {
        CacheValue::Null => Value::Null,
        CacheValue::Bool(b) => Value::Bool(b),
        CacheValue::Int(i) => Value::from(i),
        CacheValue::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        CacheValue::String(s) => Value::String(s),
        CacheValue::Bytes(b) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
        CacheValue::List(items) => Value::Array(items.into_iter().map(cache_to_json).collect()),
        CacheValue::Map(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, cache_to_json(v))).collect())
        }
    }
}

/// The time the node's own code ran, summed over its polls: each poll's duration on the
/// monotonic clock (vDSO, ~20 ns). A poll runs on one thread without yielding, so this is the
/// CPU time the node's code took unless the OS preempted that thread mid-poll (or the node
/// blocked it, which async code must not); work the node hands to other threads (e.g.
/// `spawn_blocking`) is not in it. The thread's own CPU clock would be exact but is a syscall
/// that takes the run-queue lock, two per poll: it cost a streaming node ~0.5 µs per item and a
/// third of a trivial job's engine time (docs/bench/engine.md).
/// Each poll's time also goes to the node's meter, for its firings' figures.
struct CpuTimed<F> {
    inner: std::pin::Pin<Box<F>>,
    spent: Duration,
    meter: Arc<crate::meter::NodeMeter>,
}

impl<F> CpuTimed<F> {
    fn new(inner: F, meter: Arc<crate::meter::NodeMeter>) -> Self {
        Self {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
            meter,
        }
    }
}

impl<F: std::future::Future> std::future::Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let start = Instant::now();
        let poll = self.inner.as_mut().poll(cx);
        let d = start.elapsed();
        self.spent += d;
        self.meter.add_cpu(d);
        poll
    }
}
