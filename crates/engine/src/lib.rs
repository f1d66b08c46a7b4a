//! The NodeTool workflow engine.
//!
//! - [`graph`]: NodeTool graph JSON and workflow files ([`parse_workflow`]).
//! - [`validate()`]: every problem of a graph, before anything runs.
//! - [`node`]: the node contract ([`NodeImpl`], [`NodeSpec`]) and the [`registry`] a run looks
//!   node types up in (the built-in library is the `nodetool-nodes` crate).
//! - [`runner`]: [`Engine::run`], one tokio task per node with bounded per-handle inboxes.
//! - [`inputs`]: [`InputStreams`], values pushed into a running job's input nodes.
//! - [`media`]: media refs (every URI form) and their policy (caps, file roots, HTTP contract).
//! - [`events`]: NodeTool's typed messages with `job_id` and `seq`.
//! - [`context`]: the [`ProcessingContext`] nodes run with.
//! - [`control`]: control edges (controllers that run other nodes on demand).
//! - [`pause`]: [`PauseGate`], holding a running job's nodes between node boundaries.
//!
//! The engine names no storage or cache backend: it takes them as trait objects in
//! [`EngineResources`].

pub mod context;
pub mod control;
pub mod events;
pub mod graph;
pub mod inputs;
pub mod limits;
pub mod media;
pub mod metadata;
pub mod meter;
pub mod node;
pub mod pause;
pub mod pyfmt;
mod quiet;
pub mod registry;
pub mod runner;
pub mod types;
pub mod validate;

pub use context::{AssetPlacement, EngineResources, Extensions, Media, ProcessingContext};
pub use control::{parse_control_value, ControlCommand, ControlEvent};
pub use events::{Event, EventEnvelope, EventPoster, EventSink, NullSink, Status, VecSink};
pub use graph::{parse_workflow, Edge, EdgeType, Graph, Node, SyncMode, Workflow};
pub use inputs::InputStreams;
pub use media::{HttpFetch, HttpRequest, HttpResponse, MediaPolicy, MediaServices};
pub use node::{
    Emitter, FnNode, Inbox, InputSpec, NodeImpl, NodeInputs, NodeKind, NodeOrigin, NodeSpec,
    OutputSpec, Preflight, Wake,
};
pub use pause::PauseGate;
pub use registry::{Registry, Requirement, Unavailable};
pub use runner::{
    is_job_timeout_message, job_timeout_error, Engine, RunOptions, RunOutcome, RunRequest,
};
pub use validate::{preflight, validate, Problem, ProblemKind, ValidationError};
