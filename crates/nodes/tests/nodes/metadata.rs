//! NodeTool's `NodeMetadata` of native types, as `GET /api/nodes/metadata` serves it: snapshots
//! pin the shape (a change shows up as a reviewed diff), and every registered type renders.

use nodetool_engine::metadata::{node_metadata, registry_metadata};
use nodetool_nodes::ai::tools::EXPOSED_NODE_TYPES;

#[test]
fn metadata_shapes_are_pinned() {
    let registry = nodetool_nodes::registry();
    for t in [
        "nodetool.text.Concat",
        "nodetool.control.ForEach",
        "nodetool.agents.Agent",
        "nodetool.image.TextToImage",
    ] {
        let spec = registry.get(t).unwrap_or_else(|| panic!("{t}")).spec();
        let m = node_metadata(spec, EXPOSED_NODE_TYPES.contains(&t), &[]);
        insta::assert_json_snapshot!(t, m);
    }
}

#[test]
fn every_registered_type_renders_once() {
    let registry = nodetool_nodes::registry();
    let all = registry_metadata(&registry, &|t| EXPOSED_NODE_TYPES.contains(&t));
    let types: Vec<&str> = registry.types().collect();
    assert_eq!(all.len(), types.len());
    for (m, t) in all.iter().zip(&types) {
        assert_eq!(m["node_type"], *t);
        assert!(m["properties"].is_array() && m["outputs"].is_array(), "{m}");
        assert!(
            !m["title"].as_str().unwrap_or("").is_empty(),
            "{t} has no title"
        );
    }
}

/// What a lost queue worker may rerun (issue 13): function nodes (their output depends on their
/// inputs only) and workflow inputs are idempotent; nodes that save assets or call a model are not.
#[test]
fn function_nodes_are_idempotent_and_effectful_nodes_are_not() {
    let registry = nodetool_nodes::registry();
    let idempotent = |t: &str| {
        registry
            .get(t)
            .unwrap_or_else(|| panic!("{t}"))
            .spec()
            .is_idempotent()
    };
    for t in [
        "nodetool.boolean.Compare",
        "nodetool.math.Add",
        "nodetool.input.StringInput",
    ] {
        assert!(idempotent(t), "{t} should be idempotent");
    }
    for t in [
        "nodetool.image.SaveImage",
        "nodetool.text.SaveText",
        "nodetool.agents.Agent",
        "nodetool.image.TextToImage",
    ] {
        assert!(!idempotent(t), "{t} must not be rerun after a lost worker");
    }
}
