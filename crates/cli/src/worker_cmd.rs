//! `nodetool worker` (hidden): the child side of the subprocess/Docker worker protocol. Reads one
//! length-prefixed request frame on stdin, writes event frames and an outcome frame on stdout,
//! and asks its parent for storage, cache and asset records through call frames (see
//! `nodetool_workers::protocol`); SIGTERM cancels the job. It loads no settings: a worker needs no
//! configuration and no credentials.

use std::process::ExitCode;

pub async fn run() -> anyhow::Result<ExitCode> {
    // The built-in nodes, and a Python worker of its own for a job that names Python types.
    let registry = crate::python_cmd::WorkerRegistry::from_process()?;
    let result = nodetool_workers::worker::run_worker_with(registry.clone()).await;
    registry.shutdown().await;
    result?;
    Ok(ExitCode::SUCCESS)
}
