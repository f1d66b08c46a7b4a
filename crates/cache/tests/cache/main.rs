//! The nodetool-cache integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-cache --test cache <module>::` runs its tests.

mod memcached;
mod memory;
