//! The nodetool-runtime integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-runtime --test runtime <module>::` runs its tests.

mod cache_stats;
mod http_guard;
mod resources;
