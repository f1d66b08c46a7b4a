//! The nodetool-providers integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-providers --test providers <module>::` runs its tests.

mod chat_suite;
mod llama_cpp;
mod sdk_checks;
