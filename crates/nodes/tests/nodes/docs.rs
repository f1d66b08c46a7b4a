//! `docs/nodes.md` is what the registry says, and every type NodeTool's bundled examples use is
//! known (native, or catalogued with what enables it): never "unknown".

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::PathBuf;

use nodetool_nodes::docs::{self, Status};

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/nodes.md")
}

#[test]
fn docs_nodes_md_matches_the_registry() {
    let registry = nodetool_nodes::registry();
    let uses = docs::example_uses(&common::shared_dir().join("examples/nodetool-base")).unwrap();
    let want = docs::markdown(&registry, &uses);
    if std::env::var_os("NODETOOL_BLESS").is_some() {
        std::fs::write(doc_path(), &want).unwrap();
    }
    let got = std::fs::read_to_string(doc_path()).unwrap_or_default();
    assert!(
        got == want,
        "docs/nodes.md is out of date with the registry: regenerate it with \
         `NODETOOL_BLESS=1 cargo test -p nodetool-nodes --test nodes docs::` (or `nodetool nodes --markdown`)"
    );
}

#[test]
fn every_type_the_examples_use_is_known() {
    let registry = nodetool_nodes::registry();
    let uses = docs::example_uses(&common::shared_dir().join("examples/nodetool-base")).unwrap();
    assert!(
        uses.len() >= 100,
        "the 69 examples use 102 types, found {}",
        uses.len()
    );
    let unknown: Vec<&String> = uses
        .keys()
        .filter(|t| docs::entry(&registry, t).status == Status::Missing)
        .collect();
    assert!(unknown.is_empty(), "unknown to this build: {unknown:?}");
}
