//! The nodetool-nodes integration tests, one binary: linking a binary per file dominated the
//! build. Each module was one file, and
//! `cargo test -p nodetool-nodes --test nodes <module>::` runs its tests.

mod common;

mod ai_examples;
mod ai_nodes;
mod asset_nodes;
mod conformance;
mod control_edges;
mod docs;
mod dynamic_inputs;
mod fixtures;
mod http_folder_nodes;
mod image_nodes;
mod limits;
mod media_refs;
mod metadata;
mod runner;
mod sqlite_nodes;
mod stream_inputs;
mod test_nodes_feature;
mod validation;
mod video_nodes;
