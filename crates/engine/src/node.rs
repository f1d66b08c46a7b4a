//! The node contract: what a node type declares ([`NodeSpec`]) and does ([`NodeImpl`]), the
//! values it gets ([`NodeInputs`]), where it sends results ([`Emitter`]) and, for nodes that
//! drain their inputs themselves, the [`Inbox`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, Result};

use crate::context::ProcessingContext;
use crate::control::{
    parse_control_value, ControlEvent, ControlMsg, ControlRoute, CONTROL_HANDLE, CONTROL_OUTPUT,
};
use crate::events::{EdgeStatus, EdgeUpdate, Event, EventPoster};
use crate::quiet::Quiet;

/// What role a node plays for the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// An ordinary node.
    Normal,
    /// A workflow input: its `value` is replaced by the job param named by its `name`.
    Input,
    /// A workflow output: every value it receives goes into `result[name]`.
    Output,
    /// Does nothing and is not run (Comment, Group).
    Inert,
}

/// Where a registered node type's implementation comes from (`docs/nodes.md` shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NodeOrigin {
    /// Rust code in this binary.
    #[default]
    Native,
    /// Rust code that calls a model provider (needs its key or server).
    Provider,
    /// A Python node run through the Python worker bridge.
    Python,
}

impl NodeOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeOrigin::Native => "native",
            NodeOrigin::Provider => "provider",
            NodeOrigin::Python => "python",
        }
    }
}

/// One declared input (property).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    /// NodeTool type name, e.g. `str`, `int`, `list[any]`.
    pub type_name: String,
    /// Used when neither `data` nor an edge gives a value.
    pub default: Value,
    /// The node cannot run without a non-null value (from `data` or an edge).
    pub required: bool,
}

/// One declared output slot.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub type_name: String,
}

/// Everything the engine knows about a node type before running it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Fully qualified NodeTool type, e.g. `nodetool.text.Concat`.
    pub node_type: String,
    /// Human title, NodeTool's `node_name` in events (e.g. "Concatenate Text").
    pub title: String,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// A generator: `process` emits many items, each routed downstream immediately.
    pub streaming: bool,
    /// Drains its inbox itself through [`NodeImpl::run_stream`] (Output, Collect).
    pub consumes_stream: bool,
    /// Outputs may be memoised in the node cache. Opt-in: side effects and cheap nodes say no.
    pub cacheable: bool,
    /// Running it twice is harmless (no side effect outside the job: no asset or file written,
    /// no HTTP POST, no provider call). Opt-in, and implied by [`NodeSpec::cacheable`]: a queued
    /// job whose worker is lost is retried only when every node is (see [`NodeSpec::is_idempotent`]).
    pub idempotent: bool,
    /// Accepts properties it does not declare (`dynamic_properties`).
    pub dynamic: bool,
    /// May emit on output handles it does not declare (NodeTool's `supportsDynamicOutputs`:
    /// e.g. `Prompt` forwards each variable on a handle of its name).
    pub dynamic_outputs: bool,
    /// Implementation version, part of the cache key: bump it when behaviour changes.
    pub version: String,
    pub kind: NodeKind,
    /// Inputs that may close a cycle (a loop's feedback, NodeTool's `Loop.next`/`condition`):
    /// edges into them are left out of the cycle check, and the runner reports quiescence to
    /// graphs that have them ([`Inbox::next_or_quiet`]).
    pub feedback: Vec<String>,
    pub origin: NodeOrigin,
    /// What the node does, for the app's node menu (NodeTool's `description`; may be empty).
    pub description: String,
    /// GPU memory its weights need (NodeTool's `requires_vram_gb`, from a Python node's
    /// `get_required_vram_gb`); `None`: no hint. Scheduling compares it with what a process
    /// offers (`NODETOOL_VRAM_GB`).
    pub requires_vram_gb: Option<f64>,
}

impl NodeSpec {
    pub fn new(node_type: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            node_type: node_type.into(),
            title: title.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            streaming: false,
            consumes_stream: false,
            cacheable: false,
            idempotent: false,
            dynamic: false,
            dynamic_outputs: false,
            version: "1".to_owned(),
            kind: NodeKind::Normal,
            feedback: Vec::new(),
            origin: NodeOrigin::Native,
            description: String::new(),
            requires_vram_gb: None,
        }
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// An optional input with a default.
    pub fn input(mut self, name: &str, type_name: &str, default: Value) -> Self {
        self.inputs.push(InputSpec {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            default,
            required: false,
        });
        self
    }

    /// An input that must be given (literal or wired).
    pub fn required(mut self, name: &str, type_name: &str) -> Self {
        self.inputs.push(InputSpec {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            default: Value::Null,
            required: true,
        });
        self
    }

    pub fn output(mut self, name: &str, type_name: &str) -> Self {
        self.outputs.push(OutputSpec {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
        });
        self
    }

    pub fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }

    pub fn consumes_stream(mut self) -> Self {
        self.consumes_stream = true;
        self
    }

    /// Memoisable outputs; a cacheable node is pure, so idempotent too.
    pub fn cacheable(mut self) -> Self {
        self.cacheable = true;
        self.idempotent = true;
        self
    }

    /// Safe to run again after a lost worker (see [`NodeSpec::idempotent`]).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Whether a rerun of this node is harmless: marked so (or cacheable), or a workflow input,
    /// output or inert node; never a Python-bridged node (its effects are not known here).
    pub fn is_idempotent(&self) -> bool {
        match (self.origin, self.kind) {
            (NodeOrigin::Python, _) => false,
            (_, NodeKind::Input | NodeKind::Output | NodeKind::Inert) => true,
            _ => self.idempotent,
        }
    }

    pub fn dynamic(mut self) -> Self {
        self.dynamic = true;
        self
    }

    pub fn dynamic_outputs(mut self) -> Self {
        self.dynamic_outputs = true;
        self
    }

    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    pub fn kind(mut self, kind: NodeKind) -> Self {
        self.kind = kind;
        self
    }

    /// Marks input `name` as a feedback input (see [`NodeSpec::feedback`]).
    pub fn feedback(mut self, name: &str) -> Self {
        self.feedback.push(name.to_owned());
        self
    }

    pub fn origin(mut self, origin: NodeOrigin) -> Self {
        self.origin = origin;
        self
    }

    pub fn input_spec(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    pub fn output_spec(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// What a node may check before its job starts ([`NodeImpl::preflight`]).
#[derive(Debug)]
pub struct Preflight<'a> {
    pub node_id: &'a str,
    /// The node's literal properties (declared defaults, `data`, dynamic properties); wired
    /// inputs are absent.
    pub props: &'a NodeInputs,
    /// Inputs that have an edge (their values are only known when the job runs).
    pub wired: &'a [String],
    pub dynamic_outputs: &'a Map<String, Value>,
    pub resources: &'a crate::context::EngineResources,
    pub secrets: &'a std::collections::BTreeMap<String, String>,
}

/// A node type's behaviour. Object-safe: the registry holds `Arc<dyn NodeImpl>`, one instance per
/// type shared by every job, so implementations keep no per-run state in `self`.
#[async_trait]
pub trait NodeImpl: Send + Sync + fmt::Debug + 'static {
    fn spec(&self) -> &NodeSpec;

    /// Problems that would fail this node, found before the job starts: a missing API key
    /// (naming the setting), no model selected, a service this process lacks. Each message
    /// becomes a validation problem; the default finds none. Must not do I/O.
    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        let _ = node;
        Vec::new()
    }

    /// One firing: read `inputs`, emit outputs. A streaming node may emit the same slot many
    /// times; every emit of a streaming node reaches downstream before `emit` returns.
    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()>;

    /// For `consumes_stream` nodes: called once; drains `inbox` itself. `props` holds the literal
    /// (unwired) properties.
    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        let _ = (ctx, props, inbox, out);
        Err(Error::new(
            ErrorKind::Unsupported,
            "this node does not consume streams",
        ))
    }
}

/// A node's resolved property values for one firing, with typed getters whose errors name the
/// property and the type found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInputs {
    values: Map<String, Value>,
}

fn kind_of(v: &Value) -> &'static str {
    crate::types::type_of(v)
}

fn wrong_type(name: &str, want: &str, got: &Value) -> Error {
    Error::invalid_input(format!(
        "input `{name}` must be {want}, got {} ({})",
        kind_of(got),
        truncate(&got.to_string(), 80)
    ))
    .with_context("input", name)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl NodeInputs {
    pub fn new(values: Map<String, Value>) -> Self {
        Self { values }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.values
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.values
    }

    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    /// The raw value; `Null` when absent.
    pub fn value(&self, name: &str) -> Value {
        self.values.get(name).cloned().unwrap_or(Value::Null)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }

    /// A string; `null` or absent reads as "" (NodeTool's default for text properties).
    pub fn str(&self, name: &str) -> Result<String> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(wrong_type(name, "str", v)),
        }
    }

    /// A string, with numbers and booleans printed (for text-ish inputs typed `any`).
    pub fn text(&self, name: &str) -> String {
        match self.get(name) {
            None => String::new(),
            Some(v) => value_to_text(v),
        }
    }

    pub fn i64(&self, name: &str) -> Result<i64> {
        match self.get(name) {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(i),
                // A whole float is accepted as an int (JSON writers print 3.0).
                None => n
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
                    .ok_or_else(|| wrong_type(name, "int", &Value::Number(n.clone()))),
            },
            Some(v) => Err(wrong_type(name, "int", v)),
            None => Err(
                Error::invalid_input(format!("input `{name}` is required (int)"))
                    .with_context("input", name),
            ),
        }
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.i64(name).map(Some),
        }
    }

    pub fn f64(&self, name: &str) -> Result<f64> {
        match self.get(name) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| wrong_type(name, "float", &Value::Number(n.clone()))),
            Some(v) => Err(wrong_type(name, "float", v)),
            None => Err(
                Error::invalid_input(format!("input `{name}` is required (float)"))
                    .with_context("input", name),
            ),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(wrong_type(name, "bool", v)),
        }
    }

    /// A list; `null` or absent reads as empty.
    pub fn list(&self, name: &str) -> Result<Vec<Value>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(v) => Err(wrong_type(name, "list", v)),
        }
    }

    /// A dict; `null` or absent reads as empty.
    pub fn dict(&self, name: &str) -> Result<Map<String, Value>> {
        match self.get(name) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(v) => Err(wrong_type(name, "dict", v)),
        }
    }
}

/// How Python's `str()` prints a JSON-ish value (used where NodeTool formats values as text).
pub fn value_to_text(v: &Value) -> String {
    match v {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => crate::pyfmt::python_json(other),
    }
}

/// A message in a node's inbox, for nodes that read it raw ([`Inbox::next_msg`]).
#[derive(Debug)]
pub enum InMsg {
    Item {
        handle: usize,
        value: Value,
        // Held while the item is buffered: the handle's capacity is what backpressures producers.
        permit: Option<OwnedSemaphorePermit>,
    },
    End {
        handle: usize,
    },
}

/// The sending half of one edge.
#[derive(Debug)]
pub(crate) struct Route {
    pub edge_id: String,
    pub handle: usize,
    pub tx: mpsc::UnboundedSender<InMsg>,
    pub capacity: Arc<Semaphore>,
    pub counter: u64,
}

/// Where a node's outputs go. Buffered nodes' emits are held until the firing succeeds (so a
/// failing node sends nothing half-done); streaming nodes' emits are routed at once.
#[derive(Debug)]
pub struct Emitter {
    immediate: bool,
    routes: Vec<(String, Vec<Route>)>,
    /// This node's outgoing control edges (it is a controller).
    control: Vec<ControlRoute>,
    pending: Vec<(String, Value)>,
    last: Map<String, Value>,
    poster: Arc<EventPoster>,
    workflow_id: String,
    cancel: CancellationToken,
    finished: bool,
    quiet: Option<Arc<Quiet>>,
    /// Firings started (a node's `process` runs, or its cached outputs replay, once each).
    firings: u64,
}

impl Emitter {
    pub(crate) fn new(
        immediate: bool,
        routes: Vec<(String, Vec<Route>)>,
        control: Vec<ControlRoute>,
        poster: Arc<EventPoster>,
        workflow_id: String,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            immediate,
            routes,
            control,
            pending: Vec::new(),
            last: Map::new(),
            poster,
            workflow_id,
            cancel,
            finished: false,
            quiet: None,
            firings: 0,
        }
    }

    /// Counts this node's items in flight for quiescence (graphs with feedback inputs).
    pub(crate) fn set_quiet(&mut self, quiet: Arc<Quiet>) {
        self.quiet = Some(quiet);
    }

    /// Sends `value` on output `slot`. Waits while a downstream inbox is full; fails with
    /// [`ErrorKind::Cancelled`] when the job is cancelled meanwhile.
    pub async fn emit(&mut self, slot: &str, value: Value) -> Result<()> {
        // Every value a node outputs is within the engine's caps, so chains that grow a value
        // (a list extended with itself, text concatenated with itself) stop at the first
        // node past the cap instead of exhausting memory further down.
        crate::limits::check_value(format_args!("output {slot:?}"), &value)?;
        if self.is_control_slot(slot) {
            // Control events are not results: never in `last_values` (nor the node cache).
            if self.immediate {
                self.route(slot, &value).await?;
            } else {
                self.pending.push((slot.to_owned(), value));
            }
            return Ok(());
        }
        if self.immediate {
            self.route(slot, &value).await?;
            self.last.insert(slot.to_owned(), value);
        } else {
            self.last.insert(slot.to_owned(), value.clone());
            self.pending.push((slot.to_owned(), value));
        }
        Ok(())
    }

    /// An emitter that routes nowhere and keeps what is emitted: for running a node inside
    /// another one (an agent calling a node as a tool). Read it with [`Emitter::take_emitted`].
    pub fn capture(ctx: &ProcessingContext) -> Self {
        Self::new(
            false,
            Vec::new(),
            Vec::new(),
            ctx.job.poster.clone(),
            ctx.workflow_id().to_owned(),
            ctx.cancellation().clone(),
        )
    }

    /// Everything emitted so far, in order, as `(slot, value)`.
    pub fn take_emitted(&mut self) -> Vec<(String, Value)> {
        self.take_pending()
    }

    /// The last value emitted per slot in this firing (NodeTool's node_update `result`).
    pub fn last_values(&self) -> &Map<String, Value> {
        &self.last
    }

    /// Firings started so far.
    pub(crate) fn firings(&self) -> u64 {
        self.firings
    }

    pub(crate) fn start_firing(&mut self) {
        self.firings += 1;
        self.last = Map::new();
        self.pending.clear();
    }

    pub(crate) fn take_pending(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.pending)
    }

    /// Whether `slot` carries control events: NodeTool's two control outputs, or the source
    /// handle of one of this node's control edges.
    pub fn is_control_slot(&self, slot: &str) -> bool {
        slot == CONTROL_HANDLE
            || slot == CONTROL_OUTPUT
            || self.control.iter().any(|r| r.slot == slot)
    }

    /// Whether an edge starts at output `slot` (an emit there reaches someone).
    pub fn is_wired(&self, slot: &str) -> bool {
        self.routes.iter().any(|(s, r)| s == slot && !r.is_empty())
    }

    /// Whether this node has outgoing control edges.
    pub fn is_controller(&self) -> bool {
        !self.control.is_empty()
    }

    /// Sends a control event along this node's control edges: those starting at `slot`, every
    /// one for `__control_output__`, or only the one to the event's `target_node_id`.
    fn route_control(&mut self, slot: &str, value: &Value) -> Result<()> {
        let command = parse_control_value(value).map_err(|e| e.with_context("output", slot))?;
        let mut sent_to: Vec<String> = Vec::new();
        let mut matched = false;
        for route in &self.control {
            let wanted = match &command.target {
                Some(t) => *t == route.target,
                None => slot == CONTROL_OUTPUT || route.slot == slot,
            };
            // One event per target, even when two edges join the same pair.
            if !wanted || sent_to.contains(&route.target) {
                continue;
            }
            matched = true;
            sent_to.push(route.target.clone());
            let msg = match &command.event {
                ControlEvent::Run(properties) => ControlMsg::Run {
                    properties: properties.clone(),
                    reply: None,
                },
                ControlEvent::Stop => ControlMsg::Stop,
            };
            // A closed queue means the target has finished: nobody wants the event. NodeTool
            // posts no `message_sent` for control edges, only their `drained`.
            let _ = route.tx.send(msg);
        }
        if let (Some(target), false) = (&command.target, matched) {
            return Err(Error::invalid_input(format!(
                "control event for node `{target}`, which this node does not control"
            ))
            .with_operation("control.route")
            .with_context("target", target.clone()));
        }
        Ok(())
    }

    pub(crate) async fn route(&mut self, slot: &str, value: &Value) -> Result<()> {
        if self.is_control_slot(slot) {
            return self.route_control(slot, value);
        }
        let Some((_, routes)) = self.routes.iter_mut().find(|(s, _)| s == slot) else {
            return Ok(());
        };
        for route in routes.iter_mut() {
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    return Err(Error::new(ErrorKind::Cancelled, "job cancelled"));
                }
                p = route.capacity.clone().acquire_owned() => p,
            };
            // A closed semaphore means the consumer finished: nobody wants the value.
            let Ok(permit) = permit else { continue };
            if let Some(q) = &self.quiet {
                q.sent();
            }
            let sent = route.tx.send(InMsg::Item {
                handle: route.handle,
                value: value.clone(),
                permit: Some(permit),
            });
            if let (Err(_), Some(q)) = (sent, &self.quiet) {
                q.taken();
            }
            route.counter += 1;
            self.poster.post(Event::EdgeUpdate(EdgeUpdate {
                workflow_id: self.workflow_id.clone(),
                edge_id: route.edge_id.clone(),
                status: EdgeStatus::MessageSent,
                counter: Some(route.counter),
            }));
        }
        Ok(())
    }

    /// End of stream on every outgoing edge. Idempotent.
    pub(crate) fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut ended: Vec<&str> = Vec::new();
        for route in &self.control {
            if !ended.contains(&route.target.as_str()) {
                ended.push(route.target.as_str());
                let _ = route.tx.send(ControlMsg::End);
            }
            self.poster.post(Event::EdgeUpdate(EdgeUpdate {
                workflow_id: self.workflow_id.clone(),
                edge_id: route.edge_id.clone(),
                status: EdgeStatus::Drained,
                counter: None,
            }));
        }
        for (_, routes) in &self.routes {
            for route in routes {
                let _ = route.tx.send(InMsg::End {
                    handle: route.handle,
                });
                self.poster.post(Event::EdgeUpdate(EdgeUpdate {
                    workflow_id: self.workflow_id.clone(),
                    edge_id: route.edge_id.clone(),
                    status: EdgeStatus::Drained,
                    counter: None,
                }));
            }
        }
    }
}

/// A node's input handles that have edges, as one arrival-ordered queue with per-handle
/// capacity. Used by the runner's batching and by `consumes_stream` nodes.
#[derive(Debug)]
pub struct Inbox {
    names: Vec<String>,
    rx: mpsc::UnboundedReceiver<InMsg>,
    capacity: Vec<Arc<Semaphore>>,
    open: Vec<bool>,
    cancel: CancellationToken,
    // Items taken from the channel but not yet consumed (by `recv(handle)`).
    held: VecDeque<(usize, Value, Option<OwnedSemaphorePermit>)>,
    quiet: Option<Arc<Quiet>>,
}

/// What [`Inbox::next_or_quiet`] woke for.
#[derive(Debug)]
pub enum Wake {
    Msg(InMsg),
    /// Every handle has ended.
    Ended,
    /// The graph is quiescent: nothing will arrive unless this node sends something.
    Quiet,
}

impl Inbox {
    pub(crate) fn new(
        names: Vec<String>,
        rx: mpsc::UnboundedReceiver<InMsg>,
        capacity: Vec<Arc<Semaphore>>,
        cancel: CancellationToken,
    ) -> Self {
        let open = vec![true; names.len()];
        Self {
            names,
            rx,
            capacity,
            open,
            cancel,
            held: VecDeque::new(),
            quiet: None,
        }
    }

    /// Reports this node's waits for quiescence (graphs with feedback inputs).
    pub(crate) fn set_quiet(&mut self, quiet: Arc<Quiet>) {
        self.quiet = Some(quiet);
    }

    /// The next channel message, the actor counted as parked while it waits.
    async fn wait_rx(&mut self) -> Result<Option<InMsg>> {
        let parked = self.quiet.as_ref().map(Quiet::park);
        let msg = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {
                return Err(Error::new(ErrorKind::Cancelled, "job cancelled"));
            }
            m = self.rx.recv() => m,
        };
        drop(parked);
        if let (Some(InMsg::Item { .. }), Some(q)) = (&msg, &self.quiet) {
            q.taken();
        }
        Ok(msg)
    }

    /// Like [`next_msg`](Self::next_msg), but also wakes when the graph is quiescent (only in
    /// graphs with feedback inputs; elsewhere it never reports `Quiet`).
    pub async fn next_or_quiet(&mut self) -> Result<Wake> {
        if !self.held.is_empty() || self.quiet.is_none() || !self.open.iter().any(|o| *o) {
            return Ok(match self.next_msg().await? {
                Some(m) => Wake::Msg(m),
                None => Wake::Ended,
            });
        }
        let quiet = self.quiet.clone();
        let Some(quiet) = quiet else {
            return Ok(Wake::Ended);
        };
        let msg = tokio::select! {
            biased;
            m = self.wait_rx() => m?,
            _ = quiet.wait() => return Ok(Wake::Quiet),
        };
        Ok(match self.mark(msg) {
            Some(m) => Wake::Msg(m),
            None => Wake::Ended,
        })
    }

    /// Records a handle's end; `None` (every producer gone) ends every handle.
    fn mark(&mut self, msg: Option<InMsg>) -> Option<InMsg> {
        match msg {
            Some(InMsg::End { handle }) => {
                if let Some(o) = self.open.get_mut(handle) {
                    *o = false;
                }
                Some(InMsg::End { handle })
            }
            Some(item) => Some(item),
            None => {
                self.open.iter_mut().for_each(|o| *o = false);
                None
            }
        }
    }

    /// Names of the wired handles, in index order.
    pub fn handles(&self) -> &[String] {
        &self.names
    }

    pub fn handle_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn is_open(&self, handle: usize) -> bool {
        self.open.get(handle).copied().unwrap_or(false)
    }

    /// The next raw message, `None` once every handle has ended: for nodes that must see each
    /// handle's end (ForEach-style control nodes).
    pub async fn next_msg(&mut self) -> Result<Option<InMsg>> {
        if let Some((handle, value, permit)) = self.held.pop_front() {
            return Ok(Some(InMsg::Item {
                handle,
                value,
                permit,
            }));
        }
        if !self.open.iter().any(|o| *o) {
            return Ok(None);
        }
        let msg = self.wait_rx().await?;
        Ok(self.mark(msg))
    }

    /// The next message already waiting, without blocking (`None`: nothing waiting).
    pub(crate) fn try_next_msg(&mut self) -> Option<InMsg> {
        if let Some((handle, value, permit)) = self.held.pop_front() {
            return Some(InMsg::Item {
                handle,
                value,
                permit,
            });
        }
        match self.rx.try_recv() {
            Ok(InMsg::End { handle }) => {
                if let Some(o) = self.open.get_mut(handle) {
                    *o = false;
                }
                Some(InMsg::End { handle })
            }
            Ok(item) => Some(item),
            Err(_) => None,
        }
    }

    /// The next item on any handle in arrival order, `None` once every handle has ended.
    pub async fn recv_any(&mut self) -> Result<Option<(String, Value)>> {
        loop {
            match self.next_msg().await? {
                None => return Ok(None),
                Some(InMsg::End { .. }) => continue,
                Some(InMsg::Item { handle, value, .. }) => {
                    let name = self.names.get(handle).cloned().unwrap_or_default();
                    return Ok(Some((name, value)));
                }
            }
        }
    }

    /// The next item on `handle`, `None` when it has ended (or is not wired). Items arriving on
    /// other handles meanwhile are kept for later calls.
    pub async fn recv(&mut self, handle: &str) -> Result<Option<Value>> {
        let Some(idx) = self.handle_index(handle) else {
            return Ok(None);
        };
        if let Some(pos) = self.held.iter().position(|(h, _, _)| *h == idx) {
            let (_, value, _) = self.held.remove(pos).unwrap_or((idx, Value::Null, None));
            return Ok(Some(value));
        }
        loop {
            if !self.open[idx] {
                return Ok(None);
            }
            let msg = self.wait_rx().await?;
            match msg {
                None => {
                    self.open.iter_mut().for_each(|o| *o = false);
                    return Ok(None);
                }
                Some(InMsg::End { handle }) => {
                    if let Some(o) = self.open.get_mut(handle) {
                        *o = false;
                    }
                }
                Some(InMsg::Item {
                    handle,
                    value,
                    permit,
                }) => {
                    if handle == idx {
                        return Ok(Some(value));
                    }
                    self.held.push_back((handle, value, permit));
                }
            }
        }
    }

    /// Refuses further items: producers blocked on a full handle give up instead of waiting on
    /// a consumer that has stopped.
    pub(crate) fn close(&mut self) {
        for sem in &self.capacity {
            sem.close();
        }
        self.held.clear();
        self.rx.close();
        self.drain();
    }

    /// Drops what is left in the channel, counting the items for quiescence.
    fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            if let (InMsg::Item { .. }, Some(q)) = (&msg, &self.quiet) {
                q.taken();
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        for sem in &self.capacity {
            sem.close();
        }
        self.rx.close();
        self.drain();
    }
}

/// A node made of a synchronous function of its inputs with one `output` slot: most of the
/// built-in library.
pub struct FnNode {
    spec: NodeSpec,
    #[allow(clippy::type_complexity)]
    f: Arc<dyn Fn(&NodeInputs) -> Result<Value> + Send + Sync>,
}

/// Inputs weighing at least this much (items, plus text bytes / 64) run a function node on the
/// blocking pool: sorting or deduplicating a big list must not hold an async worker, where the
/// job's deadline and cancellation could not reach it. Small inputs stay inline (cheaper).
const BLOCKING_WEIGHT: usize = 4096;

impl FnNode {
    /// The spec is marked idempotent: the function sees only its inputs (no context, no
    /// storage, no provider), so running it again is harmless.
    pub fn new(
        spec: NodeSpec,
        f: impl Fn(&NodeInputs) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        Self {
            spec: spec.idempotent(),
            f: Arc::new(f),
        }
    }
}

impl fmt::Debug for FnNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnNode")
            .field("type", &self.spec.node_type)
            .finish()
    }
}

#[async_trait]
impl NodeImpl for FnNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let heavy = inputs
            .as_map()
            .values()
            .any(|v| crate::limits::weight_at_least(v, BLOCKING_WEIGHT));
        let v = if heavy {
            let f = self.f.clone();
            let inputs = inputs.clone();
            tokio::task::spawn_blocking(move || f(&inputs))
                .await
                .map_err(|e| Error::unexpected(format!("node function ended abnormally: {e}")))??
        } else {
            (self.f)(inputs)?
        };
        out.emit("output", v).await
    }
}
