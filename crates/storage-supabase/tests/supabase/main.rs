//! The nodetool-storage-supabase integration tests, one binary: linking a binary per file
//! dominated the build. Each module was one file, and
//! `cargo test -p nodetool-storage-supabase --test supabase <module>::` runs its tests.

mod double_fidelity;
mod supabase;
