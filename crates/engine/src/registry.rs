//! The node registry: NodeTool type name → implementation, plus the types NodeTool ships that
//! this process cannot run, each with what would enable it.
//!
//! A type is in one of three states:
//! - **registered**: an implementation ([`Registry::register`]), native, provider-backed or
//!   bridged to Python (its [`NodeSpec::origin`](crate::node::NodeSpec) says which);
//! - **known but unavailable** ([`Registry::mark_unavailable`]): a NodeTool type with no
//!   implementation here; validation says precisely what enables it, never "unknown";
//! - **unknown**: neither (a typo, or a type NodeTool does not ship).
//!
//! Registering a type replaces its catalog entry, whatever the order of the two calls.
//! An alias ([`Registry::alias`]) is a second name for a registered type. A whole catalog can be
//! handed over unbuilt ([`Registry::defer_unavailable`]): its entries are made the first time an
//! unavailable type is looked up, which a worker running a graph of native types never does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::graph::Node;
use crate::node::{NodeImpl, NodeSpec};

/// What a known but unavailable type needs before it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// A Python node: runs through the Python worker bridge.
    Python,
    /// An AI node that needs a model provider (and its key).
    Provider,
    /// Not implemented in this runtime, and no bridge can run it.
    Missing,
}

impl Requirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Python => "python",
            Requirement::Provider => "provider",
            Requirement::Missing => "missing",
        }
    }
}

type Explain = Arc<dyn Fn(&Node) -> String + Send + Sync>;

/// A NodeTool type this process knows but cannot run, and why.
#[derive(Clone)]
pub struct Unavailable {
    pub node_type: String,
    pub requirement: Requirement,
    /// The NodeTool package that ships the type (e.g. `nodetool-base`), if known.
    pub package: Option<String>,
    /// Its declared properties and outputs, when NodeTool's metadata gives them
    /// ([`Unavailable::spec`]).
    spec: Option<Arc<LazySpec>>,
    explain: Explain,
}

/// A spec built on first use: a process registers hundreds of catalog types and looks at the
/// specs of few (a worker, none), so building them all would be most of its start-up.
type LazySpec = std::sync::LazyLock<NodeSpec, Box<dyn FnOnce() -> NodeSpec + Send>>;

impl Unavailable {
    /// An entry whose explanation is the same for every node of the type.
    pub fn new(
        node_type: impl Into<String>,
        requirement: Requirement,
        why: impl Into<String>,
    ) -> Self {
        let why = why.into();
        Self {
            node_type: node_type.into(),
            requirement,
            package: None,
            spec: None,
            explain: Arc::new(move |_| why.clone()),
        }
    }

    /// An entry whose explanation depends on the node (e.g. the provider its `model` names).
    pub fn explained_by(
        node_type: impl Into<String>,
        requirement: Requirement,
        explain: impl Fn(&Node) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            node_type: node_type.into(),
            requirement,
            package: None,
            spec: None,
            explain: Arc::new(explain),
        }
    }

    pub fn with_package(mut self, package: impl Into<String>) -> Self {
        self.package = Some(package.into());
        self
    }

    pub fn with_spec(self, spec: NodeSpec) -> Self {
        self.with_spec_from(move || spec)
    }

    /// [`Unavailable::with_spec`], built by `make` the first time it is asked for.
    pub fn with_spec_from(mut self, make: impl FnOnce() -> NodeSpec + Send + 'static) -> Self {
        self.spec = Some(Arc::new(LazySpec::new(Box::new(make))));
        self
    }

    /// Its declared properties and outputs, when NodeTool's metadata gives them (`docs/nodes.md`
    /// and `nodetool nodes TYPE` list them).
    pub fn spec(&self) -> Option<&NodeSpec> {
        self.spec.as_deref().map(|lazy| &**lazy)
    }

    /// What enables this type, for one node of a graph: a full sentence that names the
    /// setting or package to install.
    pub fn explain(&self, node: &Node) -> String {
        (self.explain)(node)
    }
}

impl fmt::Debug for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unavailable")
            .field("node_type", &self.node_type)
            .field("requirement", &self.requirement)
            .field("package", &self.package)
            .finish_non_exhaustive()
    }
}

/// Makes catalog entries for [`Registry::defer_unavailable`].
type MakeEntries = Arc<dyn Fn(&Registry) -> Vec<Unavailable> + Send + Sync>;

/// Node types by NodeTool type name. Cheap to share (`Arc<Registry>`); build once per process.
#[derive(Clone, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Arc<dyn NodeImpl>>,
    /// Alias → registered type name.
    aliases: BTreeMap<String, String>,
    /// Entries given to [`Registry::mark_unavailable`].
    unavailable: BTreeMap<String, Unavailable>,
    /// Catalogs not built yet ([`Registry::defer_unavailable`]).
    deferred: Vec<MakeEntries>,
    /// `unavailable` plus what `deferred` makes, built on the first lookup; every change to
    /// the registry resets it.
    resolved: OnceLock<BTreeMap<String, Unavailable>>,
    /// Appended to validation's "unknown node type" problems that have no close suggestion.
    unknown_hint: Option<String>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("nodes", &self.nodes.len())
            .field("aliases", &self.aliases.len())
            .field("unavailable", &self.unavailable.len())
            .field("deferred_catalogs", &self.deferred.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry (tests that want only their own nodes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node type; a catalog entry or alias of the same name is dropped.
    pub fn register(&mut self, node: Arc<dyn NodeImpl>) {
        let name = node.spec().node_type.clone();
        self.resolved = OnceLock::new();
        self.unavailable.remove(&name);
        self.aliases.remove(&name);
        self.nodes.insert(name, node);
    }

    /// Makes `alias` a second name of the registered type `target` (NodeTool renamed some
    /// types; old workflows keep the old name). Ignored when `target` is not registered or
    /// `alias` is a registered type of its own.
    pub fn alias(&mut self, alias: impl Into<String>, target: &str) {
        let alias = alias.into();
        if self.nodes.contains_key(&alias) || !self.nodes.contains_key(target) {
            return;
        }
        self.resolved = OnceLock::new();
        self.unavailable.remove(&alias);
        self.aliases.insert(alias, target.to_owned());
    }

    /// Records a NodeTool type this process cannot run. Ignored for a type that is registered
    /// (a real implementation always wins).
    pub fn mark_unavailable(&mut self, entry: Unavailable) {
        if self.get(&entry.node_type).is_some() {
            return;
        }
        self.resolved = OnceLock::new();
        self.unavailable.insert(entry.node_type.clone(), entry);
    }

    /// [`Registry::mark_unavailable`] for every entry `make` returns, called the first time an
    /// unavailable type is looked up (not at all by a process that never looks one up). Entries
    /// of types registered by then are ignored, and an entry given to `mark_unavailable` wins
    /// over a deferred one of the same name. `make` gets the registry to ask which types are
    /// registered; it MUST NOT look up unavailable types (that would wait on itself).
    pub fn defer_unavailable(
        &mut self,
        make: impl Fn(&Registry) -> Vec<Unavailable> + Send + Sync + 'static,
    ) {
        self.resolved = OnceLock::new();
        self.deferred.push(Arc::new(make));
    }

    /// Every unavailable entry, the deferred catalogs built on first use.
    fn resolved(&self) -> &BTreeMap<String, Unavailable> {
        if self.deferred.is_empty() {
            return &self.unavailable;
        }
        self.resolved.get_or_init(|| {
            let mut all = BTreeMap::new();
            for make in &self.deferred {
                for entry in make(self) {
                    if self.get(&entry.node_type).is_none() {
                        all.insert(entry.node_type.clone(), entry);
                    }
                }
            }
            for (name, entry) in &self.unavailable {
                all.insert(name.clone(), entry.clone());
            }
            all
        })
    }

    /// What would make more node types available (e.g. how to enable the Python bridge), said
    /// by validation for an unknown type with no close match.
    pub fn set_unknown_type_hint(&mut self, hint: impl Into<String>) {
        self.unknown_hint = Some(hint.into());
    }

    pub fn unknown_type_hint(&self) -> Option<&str> {
        self.unknown_hint.as_deref()
    }

    /// The implementation of `node_type` (or of the type it is an alias of).
    pub fn get(&self, node_type: &str) -> Option<&Arc<dyn NodeImpl>> {
        match self.nodes.get(node_type) {
            Some(n) => Some(n),
            None => self.nodes.get(self.aliases.get(node_type)?),
        }
    }

    /// The catalog entry of a known type that cannot run here. A registered type has none
    /// (and asking about one builds no deferred catalog).
    pub fn unavailable(&self, node_type: &str) -> Option<&Unavailable> {
        if self.get(node_type).is_some() {
            return None;
        }
        self.resolved().get(node_type)
    }

    /// Registered types (not aliases), in name order.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Registered type names (not aliases), in name order.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// `(alias, target)` pairs, in alias order.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases.iter().map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// Catalog entries of known types that cannot run here, in name order.
    pub fn unavailable_types(&self) -> impl Iterator<Item = &Unavailable> {
        self.resolved().values()
    }

    /// Up to three registered types close to `node_type`: same class name in another namespace
    /// first, then by edit distance of the whole name and of the class name.
    pub fn suggest(&self, node_type: &str) -> Vec<String> {
        let wanted = node_type.to_ascii_lowercase();
        let wanted_class = class_name(&wanted);
        let mut scored: Vec<(usize, &str)> = self
            .nodes
            .keys()
            .chain(self.aliases.keys())
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
    use crate::node::FnNode;

    fn node(t: &str) -> Arc<dyn NodeImpl> {
        Arc::new(FnNode::new(NodeSpec::new(t, t), |_| {
            Ok(serde_json::Value::Null)
        }))
    }

    #[test]
    fn suggests_typos_and_other_namespaces() {
        let mut r = Registry::new();
        for t in [
            "nodetool.text.Concat",
            "nodetool.text.FormatText",
            "nodetool.list.Length",
        ] {
            r.register(node(t));
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

    #[test]
    fn a_real_implementation_replaces_the_catalog_entry_in_either_order() {
        let entry = |t: &str| Unavailable::new(t, Requirement::Python, "needs the bridge");
        let mut r = Registry::new();
        r.mark_unavailable(entry("a.B"));
        assert!(r.unavailable("a.B").is_some());
        r.register(node("a.B"));
        assert!(r.unavailable("a.B").is_none());
        assert!(r.get("a.B").is_some());

        r.register(node("c.D"));
        r.mark_unavailable(entry("c.D"));
        assert!(
            r.unavailable("c.D").is_none(),
            "registered first, then catalogued"
        );
    }

    #[test]
    fn a_deferred_catalog_is_built_on_the_first_lookup_of_an_unavailable_type_only() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let built = Arc::new(AtomicUsize::new(0));
        let count = built.clone();
        let mut r = Registry::new();
        r.register(node("native.A"));
        r.mark_unavailable(Unavailable::new("x.Eager", Requirement::Missing, "eager"));
        r.defer_unavailable(move |reg| {
            count.fetch_add(1, Ordering::SeqCst);
            assert!(reg.get("native.A").is_some());
            ["native.A", "x.Deferred", "x.Eager"]
                .map(|t| Unavailable::new(t, Requirement::Python, "deferred"))
                .into()
        });
        assert!(r.unavailable("native.A").is_none());
        assert_eq!(
            built.load(Ordering::SeqCst),
            0,
            "a registered type builds nothing"
        );

        let n: Node =
            serde_json::from_value(serde_json::json!({"id": "n", "type": "x.Deferred"})).unwrap();
        assert_eq!(
            r.unavailable("x.Deferred")
                .map(|u| u.explain(&n))
                .as_deref(),
            Some("deferred")
        );
        // An entry given to mark_unavailable wins; a registered type gets none.
        assert_eq!(
            r.unavailable("x.Eager").map(|u| u.explain(&n)).as_deref(),
            Some("eager")
        );
        let names: Vec<_> = r.unavailable_types().map(|u| u.node_type.clone()).collect();
        assert_eq!(names, ["x.Deferred", "x.Eager"]);
        assert_eq!(built.load(Ordering::SeqCst), 1, "built once");

        // A later registration drops the entry (and the catalog is made again).
        r.register(node("x.Deferred"));
        assert!(r.unavailable("x.Deferred").is_none());
        assert_eq!(r.unavailable_types().count(), 1);
        assert_eq!(built.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn aliases_resolve_to_their_target() {
        let mut r = Registry::new();
        r.register(node("lib.pillow.enhance.Brightness"));
        r.mark_unavailable(Unavailable::new(
            "nodetool.lib.pillow.enhance.Brightness",
            Requirement::Python,
            "x",
        ));
        r.alias(
            "nodetool.lib.pillow.enhance.Brightness",
            "lib.pillow.enhance.Brightness",
        );
        r.alias("x.Missing", "no.such.Target");
        let got = r.get("nodetool.lib.pillow.enhance.Brightness").unwrap();
        assert_eq!(got.spec().node_type, "lib.pillow.enhance.Brightness");
        assert!(r
            .unavailable("nodetool.lib.pillow.enhance.Brightness")
            .is_none());
        assert!(r.get("x.Missing").is_none());
        assert_eq!(r.len(), 1, "aliases are not types of their own");
    }
}
