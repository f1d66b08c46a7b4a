//! The worker strategies' integration tests, one binary: `cargo test -p nodetool-workers --test
//! workers test_pause::` runs one module.

mod docker_image;
mod test_docker_job_execution;
mod test_manager_restart;
mod test_pause;
mod test_stream_input;
mod test_subprocess_job_execution;
mod test_worker_calls;
mod test_worker_services;
