//! The nodetool-cli integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-cli --test cli <module>::` runs its tests.
//!
//! `multi_host` and `test_docker_runners_e2e` stay binaries of their own (their docs say why).

mod support;

mod ai_run;
mod bundled_examples;
mod cli;
mod event_replay;
mod hardening;
mod job_limits;
mod multi_user;
mod outcome_durability;
mod postgres_jobs;
mod python_bridge;
mod queue_workers;
mod restart_reaper;
mod run_fixtures;
mod serve;
mod serve_hardening;
mod tracing_otlp;
mod ws_pause;
