//! `docs/nodes.md`: every node type the registry knows, its properties and outputs, and whether
//! it is native, provider-backed, Python-bridged or missing, against the types NodeTool's bundled
//! examples use. `nodetool nodes --markdown` prints it; `tests/nodes/docs.rs` keeps the checked-in file
//! equal to what the registry says.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nodetool_engine::graph::Node;
use nodetool_engine::node::{NodeOrigin, NodeSpec};
use nodetool_engine::registry::{Registry, Requirement};

/// Where a type stands in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Runs here, in Rust.
    Native,
    /// Runs here, calling a model provider.
    Provider,
    /// Runs through the Python worker bridge.
    Python,
    /// Needs a provider that is not built in: only the Python bridge runs it today.
    NeedsProvider,
    /// A Python node: only the Python bridge runs it.
    NeedsPython,
    /// Not known at all.
    Missing,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Native => "native",
            Status::Provider => "provider",
            Status::Python => "python (bridged)",
            Status::NeedsProvider => "provider (not built in: Python bridge)",
            Status::NeedsPython => "python (needs the bridge)",
            Status::Missing => "missing",
        }
    }
}

/// A type's status, spec (when known) and what enables it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub node_type: String,
    pub status: Status,
    pub spec: Option<NodeSpec>,
    /// For a type that does not run here: what enables it (for a node without properties).
    pub needs: Option<String>,
    /// The registered type an alias stands for.
    pub alias_of: Option<String>,
}

fn blank_node(t: &str) -> Node {
    Node {
        id: "node".to_owned(),
        parent_id: None,
        node_type: t.to_owned(),
        data: Default::default(),
        ui_properties: None,
        dynamic_properties: Default::default(),
        dynamic_outputs: Default::default(),
        sync_mode: Default::default(),
    }
}

/// The entry of one type name.
pub fn entry(registry: &Registry, node_type: &str) -> Entry {
    if let Some(imp) = registry.get(node_type) {
        let spec = imp.spec().clone();
        let status = match spec.origin {
            NodeOrigin::Native => Status::Native,
            NodeOrigin::Provider => Status::Provider,
            NodeOrigin::Python => Status::Python,
        };
        let alias_of = (spec.node_type != node_type).then(|| spec.node_type.clone());
        return Entry {
            node_type: node_type.to_owned(),
            status,
            spec: Some(spec),
            needs: None,
            alias_of,
        };
    }
    if let Some(u) = registry.unavailable(node_type) {
        return Entry {
            node_type: node_type.to_owned(),
            status: match u.requirement {
                Requirement::Provider => Status::NeedsProvider,
                Requirement::Python => Status::NeedsPython,
                Requirement::Missing => Status::Missing,
            },
            spec: u.spec().cloned(),
            needs: Some(u.explain(&blank_node(node_type))),
            alias_of: None,
        };
    }
    Entry {
        node_type: node_type.to_owned(),
        status: Status::Missing,
        spec: None,
        needs: Some("not a type this runtime or NodeTool's catalogue knows".to_owned()),
        alias_of: None,
    }
}

/// Every type the registry knows (registered, aliases, catalogued), in name order.
pub fn entries(registry: &Registry) -> Vec<Entry> {
    let mut names: Vec<String> = registry
        .types()
        .map(str::to_owned)
        .chain(registry.aliases().map(|(a, _)| a.to_owned()))
        .chain(registry.unavailable_types().map(|u| u.node_type.clone()))
        .collect();
    names.sort();
    names.dedup();
    names.iter().map(|t| entry(registry, t)).collect()
}

fn fields(items: &[(String, String)]) -> String {
    if items.is_empty() {
        return "—".to_owned();
    }
    items
        .iter()
        .map(|(n, t)| format!("`{n}`: {}", t.replace('|', "\\|")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The whole document. `example_uses` is `{type: number of uses}` over the bundled examples.
pub fn markdown(registry: &Registry, example_uses: &BTreeMap<String, usize>) -> String {
    // The reference describes production builds, which have no `nodetool.test.*` nodes.
    let all: Vec<Entry> = entries(registry)
        .into_iter()
        .filter(|e| !e.node_type.starts_with("nodetool.test."))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Node types\n\n\
         Generated from the registry by `nodetool nodes --markdown` (`crates/nodes/src/docs.rs`);\n\
         `crates/nodes/tests/nodes/docs.rs` fails when this file and the registry disagree (rerun it\n\
         with `NODETOOL_BLESS=1` to rewrite the file).\n\n\
         Status: **native** runs here in Rust; **provider** runs here and calls a model provider;\n\
         **python (bridged)** runs through the Python worker; **provider (not built in)** and\n\
         **python (needs the bridge)** are NodeTool types with no implementation here yet: a\n\
         workflow using one fails validation with the sentence in the last column (run it through\n\
         the Python bridge, `NODETOOL_PYTHON`); **missing** is unknown to this build.\n"
    );
    let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
    for e in &all {
        *counts.entry(e.status).or_default() += 1;
    }
    let _ = writeln!(out, "## Summary\n\n| Status | Types |\n| --- | --- |");
    for (status, n) in &counts {
        let _ = writeln!(out, "| {} | {n} |", status.label());
    }

    let used: Vec<Entry> = example_uses.keys().map(|t| entry(registry, t)).collect();
    let mut by_status: BTreeMap<Status, usize> = BTreeMap::new();
    for e in &used {
        *by_status.entry(e.status).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "\n## The bundled examples\n\n{} types are used by NodeTool's bundled example workflows \
         (`shared/examples/nodetool-base`, {} uses): {}.\n",
        used.len(),
        example_uses.values().sum::<usize>(),
        by_status
            .iter()
            .map(|(s, n)| format!("{n} {}", s.label()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "| Type | Uses | Status | Needs |\n| --- | --- | --- | --- |"
    );
    for e in &used {
        let needs = match (&e.alias_of, &e.needs) {
            (Some(target), _) => format!("older name of `{target}`"),
            (None, Some(n)) => cell(n),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {needs} |",
            e.node_type,
            example_uses.get(&e.node_type).copied().unwrap_or(0),
            e.status.label()
        );
    }

    let _ = writeln!(
        out,
        "\n## Every type\n\n| Type | Status | Properties | Outputs |\n| --- | --- | --- | --- |"
    );
    for e in &all {
        let (props, outs) = match (&e.alias_of, &e.spec) {
            (Some(target), _) => (format!("alias of `{target}`"), String::new()),
            (None, Some(spec)) => {
                let props: Vec<(String, String)> = spec
                    .inputs
                    .iter()
                    .map(|i| (i.name.clone(), i.type_name.clone()))
                    .collect();
                let outs: Vec<(String, String)> = spec
                    .outputs
                    .iter()
                    .map(|o| (o.name.clone(), o.type_name.clone()))
                    .collect();
                let mut p = fields(&props);
                if spec.dynamic {
                    p.push_str(" (+ dynamic)");
                }
                let mut o = fields(&outs);
                if spec.dynamic_outputs {
                    o.push_str(" (+ dynamic)");
                }
                (p, o)
            }
            (None, None) => ("—".to_owned(), "—".to_owned()),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {props} | {outs} |",
            e.node_type,
            e.status.label()
        );
    }
    out
}

/// `{type: uses}` over every workflow file (`*.json` with a `graph`) in `dir`.
pub fn example_uses(dir: &std::path::Path) -> std::io::Result<BTreeMap<String, usize>> {
    let mut uses = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let Ok(wf) = nodetool_engine::parse_workflow(&text) else {
            continue;
        };
        for n in wf.graph.nodes {
            *uses.entry(n.node_type).or_default() += 1;
        }
    }
    Ok(uses)
}
