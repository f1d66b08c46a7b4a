//! What the job path needs to know of each node type, read once from the registry the strategies
//! run: whether it is an input and streams (NodeTool's streamed-input rule), whether a rerun
//! cannot harm (a queued job's retry), and its VRAM hint (NodeTool's `requires_vram_gb`, against
//! `NODETOOL_VRAM_GB`). One table, so the three cannot disagree about a type or its aliases, and
//! every entry point — the manager's submit (REST, `/ws`), `nodetool run`, a queue worker's
//! claim — asks the same question.

use std::collections::HashMap;
use std::sync::Arc;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::node::NodeKind;
use nodetool_engine::{Graph, Registry};

/// One node type's facts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TypeFacts {
    /// An input node: `Some(true)` when it streams (`RealtimeAudioInput`).
    pub input: Option<bool>,
    /// [`nodetool_engine::NodeSpec::is_idempotent`].
    pub idempotent: bool,
    /// [`nodetool_engine::NodeSpec::requires_vram_gb`].
    pub vram_gb: Option<f64>,
}

/// The facts of every type of a registry, aliases included. Empty (the default): no type is an
/// input, none is idempotent, none needs VRAM.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts(Arc<HashMap<String, TypeFacts>>);

impl NodeFacts {
    pub fn from_registry(registry: &Registry) -> Self {
        registry
            .types()
            .chain(registry.aliases().map(|(alias, _)| alias))
            .filter_map(|t| {
                let spec = registry.get(t)?.spec();
                let facts = TypeFacts {
                    input: (spec.kind == NodeKind::Input).then_some(spec.streaming),
                    idempotent: spec.is_idempotent(),
                    vram_gb: spec.requires_vram_gb,
                };
                Some((t.to_owned(), facts))
            })
            .collect()
    }

    pub fn get(&self, node_type: &str) -> Option<&TypeFacts> {
        self.0.get(node_type)
    }

    /// Whether `graph` has a streaming input node.
    pub fn any_streaming(&self, graph: &Graph) -> bool {
        graph
            .nodes
            .iter()
            .any(|n| self.get(&n.node_type).and_then(|f| f.input) == Some(true))
    }

    /// Whether a job of `graph` gets input feeds: its request's `streaming_inputs` when it says,
    /// else NodeTool's rule (it has a streaming input node).
    pub fn fed(&self, streaming_inputs: Option<bool>, graph: &Graph) -> bool {
        streaming_inputs.unwrap_or_else(|| self.any_streaming(graph))
    }

    /// The names of `graph`'s input nodes.
    pub fn input_names(&self, graph: &Graph) -> Vec<String> {
        graph
            .nodes
            .iter()
            .filter(|n| self.get(&n.node_type).is_some_and(|f| f.input.is_some()))
            .map(|n| n.input_name().to_owned())
            .collect()
    }

    /// Whether every node of `graph` is of a type a rerun cannot harm (an unknown type can).
    pub fn all_idempotent(&self, graph: &Graph) -> bool {
        graph
            .nodes
            .iter()
            .all(|n| self.get(&n.node_type).is_some_and(|f| f.idempotent))
    }

    /// The node of `graph` with the largest VRAM hint: (node id, type, GB). NodeTool's worker
    /// frees VRAM between nodes, so the largest one is the job's need.
    pub fn vram_need<'g>(&self, graph: &'g Graph) -> Option<(&'g str, &'g str, f64)> {
        graph
            .nodes
            .iter()
            .filter_map(|n| {
                let gb = self.get(&n.node_type)?.vram_gb?;
                Some((n.id.as_str(), n.node_type.as_str(), gb))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2))
    }

    /// `Unsupported`, naming the node, its type and both figures, when `graph` needs more VRAM
    /// than `offered`; `None` offered: not checked.
    pub fn check_vram(&self, graph: &Graph, offered: Option<f64>) -> Result<()> {
        let (Some(offered), Some((node, node_type, need))) = (offered, self.vram_need(graph))
        else {
            return Ok(());
        };
        if need <= offered {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "node `{node}` ({node_type}) needs {need} GB of GPU memory (its requires_vram_gb) \
                 and this process offers {offered} GB (NODETOOL_VRAM_GB): run the job where \
                 NODETOOL_VRAM_GB is at least {need}"
            ),
        )
        .with_operation("jobs.submit")
        .with_context("node_id", node)
        .with_context("requires_vram_gb", need)
        .with_context("vram_gb", offered))
    }
}

impl FromIterator<(String, TypeFacts)> for NodeFacts {
    fn from_iter<I: IntoIterator<Item = (String, TypeFacts)>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_table_knows_inputs_idempotence_and_aliases() {
        let registry = nodetool_nodes::registry();
        let facts = NodeFacts::from_registry(&registry);
        let realtime = facts
            .get("nodetool.input.RealtimeAudioInput")
            .expect("realtime");
        assert_eq!(realtime.input, Some(true));
        let text = facts
            .get("nodetool.input.StringInput")
            .expect("string input");
        assert_eq!(text.input, Some(false));
        assert!(text.idempotent, "inputs are idempotent");
        let sleep = facts.get("nodetool.test.Sleep").expect("test node");
        assert_eq!(sleep.input, None);
        let mut aliases = 0;
        for (alias, target) in registry.aliases() {
            assert_eq!(
                facts.get(alias),
                facts.get(target),
                "alias {alias} of {target}"
            );
            aliases += 1;
        }
        assert!(aliases > 0, "the registry has aliases to check");
        assert!(facts.get("no.such.Node").is_none());
    }

    #[test]
    fn a_graph_is_idempotent_only_when_every_node_is_known_and_idempotent() {
        let facts: NodeFacts = [
            (
                "a".to_owned(),
                TypeFacts {
                    idempotent: true,
                    ..TypeFacts::default()
                },
            ),
            ("b".to_owned(), TypeFacts::default()),
        ]
        .into_iter()
        .collect();
        let graph = |types: &[&str]| -> Graph {
            let nodes: Vec<_> = types
                .iter()
                .enumerate()
                .map(|(i, t)| serde_json::json!({"id": format!("n{i}"), "type": t}))
                .collect();
            serde_json::from_value(serde_json::json!({"nodes": nodes, "edges": []})).expect("graph")
        };
        assert!(facts.all_idempotent(&graph(&["a", "a"])));
        assert!(!facts.all_idempotent(&graph(&["a", "b"])));
        assert!(!facts.all_idempotent(&graph(&["a", "unknown"])));
    }
}
