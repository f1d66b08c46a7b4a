//! A stand-alone `nodetool worker` for this crate's tests and benchmarks (the real binary's
//! `nodetool worker` runs the same [`nodetool_workers::worker::run_worker`]).

use std::process::ExitCode;

// As in the `nodetool` binary (mimalloc; template renders stop at their memory budget), so
// the benchmarks measure the worker users run.
#[global_allocator]
static GLOBAL: nodetool_alloc::Budgeted<mimalloc::MiMalloc> =
    nodetool_alloc::Budgeted::new(mimalloc::MiMalloc);

fn main() -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(nodetool_workers::worker::run_worker());
    // Do not wait for the blocking stdin reader.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
