//! The nodetool-server integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-server --test server <module>::` runs its tests.

mod common;
mod jobs_support;

mod ai_metrics;
mod app_examples;
mod app_workflows;
mod assets;
mod assets_app;
mod auth;
mod hardening;
mod jobs;
mod metrics;
mod sse_resume;
mod storage_routes;
mod terminal;
mod tls;
mod trpc;
mod wire_frames;
mod workflow_store;
mod workflows;
mod ws;
mod ws_backpressure;
mod ws_protocol;
mod ws_stream_input;
