//! Job execution for NodeTool workflows.
//!
//! - [`strategy`]: the [`ExecutionStrategy`] contract, [`JobSpec`], [`JobOutcome`],
//!   [`RunJobRequest`].
//! - [`protocol`]: length-prefixed frames between a parent and `nodetool worker`.
//! - [`calls`]: the worker's storage, cache and asset-record calls to its parent: the worker's
//!   [`calls::CallClient`] and remote backends, the parent's [`calls::CallHandler`].
//! - [`threaded`]: the engine on a dedicated thread pool.
//! - `session`: one worker session (request, frames, calls, cancel, hard deadline, outcome)
//!   shared by the subprocess and Docker strategies.
//! - [`subprocess`]: one `nodetool worker` child per job, rlimits, process group.
//! - [`worker`]: the child side of the protocol (what `nodetool worker` runs).
//! - [`docker`]: one container per job.
//! - [`manager`]: [`JobExecutionManager`] (submit, get, list, cancel, wait, subscribe, shutdown).
//! - [`store`]: job records and job events in SQLite or PostgreSQL.
//! - [`queue`]: the durable queue on PostgreSQL (enqueue, claim, leases, fenced writes).
//! - [`work`]: [`work::QueueWorker`], the claim-and-run loop of `nodetool work`.
//! - [`event_log`]: batched writes of every job's events to the store, for replay after a restart.

pub mod calls;
pub mod docker;
pub mod event_log;
pub mod manager;
pub mod node_stats;
pub mod protocol;
pub mod queue;
pub mod reap;
mod replay;
pub mod scheduler;
mod session;
pub mod sink;
pub mod store;
pub mod strategy;
pub mod subprocess;
pub mod threaded;
pub mod trace;
pub mod vram;
pub mod work;
pub mod worker;

pub use calls::{KeyScope, WorkerServices};
pub use event_log::{EventLog, EventLogConfig};
pub use manager::{InputNodeTypes, JobEvents, JobExecutionManager, ManagerConfig, QueueMode};
pub use store::{JobRecord, JobStore, PostgresOptions};
pub use strategy::{
    effective_time_limit, Capabilities, ExecutionStrategy, JobError, JobHandle, JobOutcome,
    JobSpec, PauseSupport, RequestLimits, ResourceLimits, RunJobRequest, StrategyKind,
    ValidRequest, WorkerRef, HARD_DEADLINE_GRACE,
};
