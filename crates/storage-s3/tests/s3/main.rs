//! The nodetool-storage-s3 integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-storage-s3 --test s3 <module>::` runs its tests.

mod common;

mod behaviour;
mod s3_specific;
