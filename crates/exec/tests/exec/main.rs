//! The exec crate's integration tests, one binary: `cargo test -p nodetool-exec --test exec
//! test_job_queue::` runs one module.

mod test_job_queue;
mod test_job_store;
mod test_threaded_job_execution;
