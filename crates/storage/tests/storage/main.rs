//! The nodetool-storage integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-storage --test storage <module>::` runs its tests.

mod behaviour;
mod read_cache;
mod symlinks;
