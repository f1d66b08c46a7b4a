//! The Python node bridge: NodeTool Python node packs run under our engine through the official
//! worker, `python -m nodetool.worker --stdio` from nodetool-core (bridge protocol 6; versions
//! below [`MIN_PROTOCOL_VERSION`] are refused).
//!
//! - [`frame`]: the stdio transport (length-prefixed msgpack; [`frame::decode_frame`] is the
//!   fuzz target).
//! - [`PythonBridge`]: a pool of supervised workers (readiness, `discover`, multiplexed
//!   requests, `cancel`, `job.start`/`job.end`, the v5 chunked blob transfer with SHA-256, a
//!   health check, restart with backoff).
//! - [`PythonNode`]: a discovered node type as an engine node; refs travel as blobs and come
//!   back into temp storage, streaming nodes stream, progress and updates become events.
//! - [`register_python_nodes`]: the node types join the registry; native types win.
//! - [`env::worker_env`]: the worker's environment, from an allow-list; secrets go per request.
//!
//! This crate reads no environment: the binary builds a [`BridgeConfig`] from the settings.

pub mod bridge;
pub mod config;
pub mod convert;
pub mod env;
mod events;
pub mod frame;
pub mod metadata;
pub mod node;
pub mod registry;
pub mod worker;

pub use bridge::{BridgeStatus, PythonBridge, SecretSource, WorkerState};
pub use config::BridgeConfig;
pub use metadata::{Discovery, LoadError, NodeMetadata};
pub use node::PythonNode;
pub use registry::{mark_bridge_disabled, mark_bridge_failed, register_python_nodes, Registered};
pub use worker::{
    BlobInput, ExecEvent, ExecuteRequest, Execution, Outputs, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
