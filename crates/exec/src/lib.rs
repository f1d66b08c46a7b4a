//! Job execution for NodeTool workflows: the manager, the job store and queue, the strategy
//! contract and the in-process strategy. The worker strategies (subprocess, Docker) and their
//! protocol live in `nodetool-workers`, so the manager and the server never compile a Docker
//! client.
//!
//! - [`strategy`]: the [`ExecutionStrategy`] contract, [`JobSpec`], [`JobOutcome`],
//!   [`RunJobRequest`].
//! - [`threaded`]: the engine on a dedicated thread pool.
//! - [`manager`]: [`JobExecutionManager`] (submit, get, list, cancel, wait, subscribe, shutdown).
//! - [`store`]: job records and job events in SQLite or PostgreSQL.
//! - [`queue`]: the durable queue on PostgreSQL (enqueue, claim, leases, fenced writes).
//! - [`work`]: [`work::QueueWorker`], the claim-and-run loop of `nodetool work`.
//! - [`event_log`]: batched writes of every job's events to the store, for replay after a restart.
//! - [`reap`]: finding and ending a dead server's worker processes.
//! - [`node_facts`]: [`NodeFacts`], each node type's input kind, idempotence and VRAM hint.

pub mod event_log;
pub mod manager;
pub mod node_facts;
pub mod node_stats;
pub mod queue;
pub mod reap;
mod replay;
pub mod scheduler;
pub mod sink;
pub mod store;
pub mod strategy;
pub mod threaded;
pub mod trace;
pub mod work;

pub use event_log::{EventLog, EventLogConfig};
pub use manager::{JobEvents, JobExecutionManager, ManagerConfig, QueueMode};
pub use node_facts::{NodeFacts, TypeFacts};
pub use store::{JobRecord, JobStore, PostgresOptions};
pub use strategy::{
    effective_time_limit, Capabilities, ExecutionStrategy, JobError, JobHandle, JobOutcome,
    JobSpec, PauseSupport, RequestLimits, ResourceLimits, RunJobRequest, StrategyKind,
    ValidRequest, WorkerRef, HARD_DEADLINE_GRACE,
};
