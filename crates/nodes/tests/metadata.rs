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
