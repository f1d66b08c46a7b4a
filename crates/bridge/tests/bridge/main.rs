//! The nodetool-bridge integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-bridge --test bridge <module>::` runs its tests.

mod common;

mod bad_workers;
mod bridge;
mod engine;
