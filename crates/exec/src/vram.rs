//! VRAM hints (NodeTool's `requires_vram_gb`, on a node type's [`nodetool_engine::NodeSpec`])
//! against what a process offers (`NODETOOL_VRAM_GB`): every entry point — the manager's
//! submit (REST, `/ws`), `nodetool run`, a queue worker's claim — asks the same question.

use std::collections::HashMap;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{Graph, Registry};

/// The node types of `registry` that carry a VRAM hint, aliases included.
pub fn hints(registry: &Registry) -> HashMap<String, f64> {
    registry
        .types()
        .chain(registry.aliases().map(|(alias, _)| alias))
        .filter_map(|t| Some((t.to_owned(), registry.get(t)?.spec().requires_vram_gb?)))
        .collect()
}

/// The node of `graph` with the largest hint: (node id, type, GB). NodeTool's worker frees
/// VRAM between nodes, so the largest one is the job's need.
pub fn need<'g>(graph: &'g Graph, hints: &HashMap<String, f64>) -> Option<(&'g str, &'g str, f64)> {
    graph
        .nodes
        .iter()
        .filter_map(|n| {
            let gb = *hints.get(n.node_type.as_str())?;
            Some((n.id.as_str(), n.node_type.as_str(), gb))
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

/// `Unsupported`, naming the node, its type and both figures, when `graph` needs more VRAM
/// than `offered`; `None` offered: not checked.
pub fn check(graph: &Graph, hints: &HashMap<String, f64>, offered: Option<f64>) -> Result<()> {
    let (Some(offered), Some((node, node_type, need))) = (offered, need(graph, hints)) else {
        return Ok(());
    };
    if need <= offered {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "node `{node}` ({node_type}) needs {need} GB of GPU memory (its requires_vram_gb) and \
             this process offers {offered} GB (NODETOOL_VRAM_GB): run the job where \
             NODETOOL_VRAM_GB is at least {need}"
        ),
    )
    .with_operation("jobs.submit")
    .with_context("node_id", node)
    .with_context("requires_vram_gb", need)
    .with_context("vram_gb", offered))
}
