//! The nodetool-config integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-config --test config <module>::` runs its tests.

mod load;
mod providers;
mod python;
mod reload;
mod select;
