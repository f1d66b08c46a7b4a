//! `nodetool worker` (hidden): the child side of the subprocess/Docker worker protocol. Reads one
//! length-prefixed request frame on stdin, writes event frames and an outcome frame on stdout
//! (see `nodetool_exec::protocol`); SIGTERM cancels the job.

use std::process::ExitCode;

pub async fn run() -> anyhow::Result<ExitCode> {
    let settings = crate::load_settings()?;
    nodetool_exec::worker::run_worker(settings).await?;
    Ok(ExitCode::SUCCESS)
}
