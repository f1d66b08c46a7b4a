//! Python node types in the engine's registry, beside the native ones.

use std::sync::Arc;

use nodetool_engine::Registry;

use crate::bridge::PythonBridge;
use crate::node::python_nodes;

/// What [`register_python_nodes`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registered {
    /// Python types now in the registry.
    pub added: Vec<String>,
    /// Python types left out because a Rust-native type of the same name is registered.
    pub shadowed: Vec<String>,
}

/// The validation hint while the bridge is off (`NODETOOL_PYTHON` unset).
pub const ENABLE_HINT: &str = "if it is a Python node, set NODETOOL_PYTHON to a Python \
     interpreter that has nodetool-core and the node's pack installed (`nodetool python doctor` \
     checks the setup)";

/// Registers every node type of `bridge`'s inventory that `registry` does not already run: a
/// Rust-native type of the same name wins. (A "known but unavailable" catalog entry is not a
/// registered type, so a Python type replaces it.) Unknown types get a validation hint that
/// names the worker and its load errors.
pub fn register_python_nodes(registry: &mut Registry, bridge: &PythonBridge) -> Registered {
    let mut out = Registered::default();
    let mut nodes = python_nodes(bridge);
    nodes.sort_by(|a, b| a.metadata().node_type.cmp(&b.metadata().node_type));
    for node in nodes {
        let name = node.metadata().node_type.clone();
        if registry.get(&name).is_some() {
            out.shadowed.push(name);
        } else {
            registry.register(node as Arc<dyn nodetool_engine::NodeImpl>);
            out.added.push(name);
        }
    }
    if !out.shadowed.is_empty() {
        tracing::debug!(types = ?out.shadowed, "python node types shadowed by native ones");
    }
    let discovery = bridge.discovery();
    let mut hint = format!(
        "the Python worker ({}) does not provide it either ({} Python node types",
        bridge.config().python.display(),
        discovery.nodes.len()
    );
    if discovery.load_errors.is_empty() {
        hint.push(')');
    } else {
        let errors: Vec<String> = discovery
            .load_errors
            .iter()
            .take(3)
            .map(ToString::to_string)
            .collect();
        hint.push_str(&format!(
            "; {} module(s) failed to load: {}{})",
            discovery.load_errors.len(),
            errors.join("; "),
            if discovery.load_errors.len() > 3 {
                "; ..."
            } else {
                ""
            }
        ));
    }
    registry.set_unknown_type_hint(hint);
    out
}

/// Marks `registry` as having no bridge: unknown types say how to enable one.
pub fn mark_bridge_disabled(registry: &mut Registry) {
    registry.set_unknown_type_hint(ENABLE_HINT);
}

/// Marks `registry` as having a configured bridge that could not start: unknown types say why.
pub fn mark_bridge_failed(registry: &mut Registry, error: &nodetool_core::Error) {
    let first = error.to_string();
    let first = first.lines().next().unwrap_or_default().to_owned();
    registry.set_unknown_type_hint(format!(
        "Python nodes are unavailable because the Python worker did not start: {first} \
         (`nodetool python doctor` shows the details)"
    ));
}
