//! The node registry: NodeTool type name → implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::NodeImpl;

/// Node types by NodeTool type name. Cheap to share (`Arc<Registry>`); build once per process.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Arc<dyn NodeImpl>>,
}

impl Registry {
    /// An empty registry (tests that want only their own nodes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node type.
    pub fn register(&mut self, node: Arc<dyn NodeImpl>) {
        self.nodes.insert(node.spec().node_type.clone(), node);
    }

    pub fn get(&self, node_type: &str) -> Option<&Arc<dyn NodeImpl>> {
        self.nodes.get(node_type)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Up to three registered types close to `node_type`: same class name in another namespace
    /// first, then by edit distance of the whole name and of the class name.
    pub fn suggest(&self, node_type: &str) -> Vec<String> {
        let wanted = node_type.to_ascii_lowercase();
        let wanted_class = class_name(&wanted);
        let mut scored: Vec<(usize, &str)> = self
            .nodes
            .keys()
            .filter_map(|t| {
                let lower = t.to_ascii_lowercase();
                let class = class_name(&lower);
                let score = if class == wanted_class {
                    0
                } else {
                    let full = levenshtein(&lower, &wanted);
                    let cls = levenshtein(class, wanted_class) + 1;
                    full.min(cls)
                };
                let limit = (wanted_class.len() / 3).max(2);
                (score <= limit).then_some((score, t.as_str()))
            })
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(3)
            .map(|(_, t)| t.to_owned())
            .collect()
    }
}

fn class_name(t: &str) -> &str {
    t.rsplit('.').next().unwrap_or(t)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_and_other_namespaces() {
        let mut r = Registry::new();
        for t in [
            "nodetool.text.Concat",
            "nodetool.text.FormatText",
            "nodetool.list.Length",
        ] {
            r.register(Arc::new(crate::node::FnNode::new(
                crate::node::NodeSpec::new(t, t),
                |_| Ok(serde_json::Value::Null),
            )));
        }
        assert!(r
            .suggest("nodetool.text.Concatt")
            .contains(&"nodetool.text.Concat".to_owned()));
        assert_eq!(
            r.suggest("nodetool.strings.FormatText")
                .first()
                .map(String::as_str),
            Some("nodetool.text.FormatText")
        );
        assert!(r.suggest("totally.unrelated.Thing").is_empty());
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
