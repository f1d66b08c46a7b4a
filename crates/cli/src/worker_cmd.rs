//! `nodetool worker` (hidden): the child side of the subprocess/Docker worker protocol. Reads one
//! length-prefixed request frame on stdin, writes event frames and an outcome frame on stdout,
//! and asks its parent for storage, cache and asset records through call frames (see
//! `nodetool_exec::protocol`); SIGTERM cancels the job. It loads no settings: a worker needs no
//! configuration and no credentials.

use std::process::ExitCode;

pub async fn run() -> anyhow::Result<ExitCode> {
    nodetool_exec::worker::run_worker().await?;
    Ok(ExitCode::SUCCESS)
}
