//! The worker strategies: a job run in another process, as a `nodetool worker` child or in a
//! container, spoken to over one framed protocol. The contract they implement
//! ([`nodetool_exec::ExecutionStrategy`]) and the manager that drives them live in
//! `nodetool-exec`.
//!
//! - [`protocol`]: length-prefixed frames between a parent and `nodetool worker`.
//! - [`calls`]: the worker's storage, cache and asset-record calls to its parent: the worker's
//!   [`calls::CallClient`] and remote backends, the parent's [`calls::CallHandler`].
//! - `session`: one worker session (request, frames, calls, cancel, hard deadline, outcome)
//!   shared by the subprocess and Docker strategies.
//! - [`subprocess`]: one `nodetool worker` child per job, rlimits, process group.
//! - [`worker`]: the child side of the protocol (what `nodetool worker` runs).
//! - [`docker`]: one container per job.

pub mod calls;
pub mod docker;
pub mod protocol;
mod session;
pub mod subprocess;
pub mod worker;

pub use calls::{KeyScope, WorkerServices};
