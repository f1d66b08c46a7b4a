//! Checks a graph (and a job's params) against the registry before anything runs, and lists
//! every problem, not just the first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use nodetool_core::{Error, ErrorKind};

use crate::control::{CONTROL_HANDLE, CONTROL_OUTPUT};
use crate::graph::{EdgeType, Graph};
use crate::node::NodeKind;
use crate::registry::Registry;
use crate::types;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    DuplicateNodeId,
    UnknownNodeType,
    /// A type NodeTool ships that this process cannot run; the message says what enables it.
    UnavailableNodeType,
    MissingNode,
    UnknownHandle,
    DuplicateEdge,
    Cycle,
    MissingInput,
    TypeMismatch,
    DuplicateInputName,
    Unsupported,
    BadParam,
    /// A node's own precondition failed (`NodeImpl::preflight`): a missing API key, no model.
    Requirement,
}

/// One thing wrong with a graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every problem found; converts into an [`ErrorKind::InvalidInput`] error listing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workflow has {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

impl From<ValidationError> for Error {
    fn from(v: ValidationError) -> Self {
        Error::new(ErrorKind::InvalidInput, v.to_string())
            .with_operation("workflow.validate")
            .with_context("problems", v.problems.len())
    }
}

fn problem(kind: ProblemKind, node: Option<&str>, edge: Option<&str>, msg: String) -> Problem {
    Problem {
        kind,
        node_id: node.map(str::to_owned),
        edge_id: edge.map(str::to_owned),
        message: msg,
    }
}

/// Type name of an output slot of a node, from its spec or its `dynamic_outputs`.
fn output_type(
    registry: &Registry,
    node: &crate::graph::Node,
    slot: &str,
) -> Option<Option<String>> {
    let imp = registry.get(&node.node_type)?;
    if let Some(o) = imp.spec().output_spec(slot) {
        return Some(Some(o.type_name.clone()));
    }
    if imp.spec().dynamic_outputs && !node.dynamic_outputs.contains_key(slot) {
        return Some(Some("any".to_owned()));
    }
    node.dynamic_outputs.get(slot).map(|meta| {
        meta.get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(Some("any".to_owned()))
    })
}

/// Validates `graph`; `params` are the job's input values (`{input name: value}`).
pub fn validate(
    graph: &Graph,
    registry: &Registry,
    params: &Map<String, Value>,
) -> Result<(), ValidationError> {
    let mut problems = Vec::new();

    let mut by_id: HashMap<&str, &crate::graph::Node> = HashMap::new();
    for node in &graph.nodes {
        if by_id.insert(node.id.as_str(), node).is_some() {
            problems.push(problem(
                ProblemKind::DuplicateNodeId,
                Some(&node.id),
                None,
                format!("node id `{}` is used more than once", node.id),
            ));
        }
        if let Some(entry) = registry.unavailable(&node.node_type) {
            problems.push(problem(
                ProblemKind::UnavailableNodeType,
                Some(&node.id),
                None,
                format!("node `{}`: {}", node.id, entry.explain(node)),
            ));
        } else if registry.get(&node.node_type).is_none() {
            let hint = registry.suggest(&node.node_type);
            let hint = if hint.is_empty() {
                registry
                    .unknown_type_hint()
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default()
            } else {
                format!(" (did you mean {}?)", hint.join(", "))
            };
            problems.push(problem(
                ProblemKind::UnknownNodeType,
                Some(&node.id),
                None,
                format!(
                    "node `{}`: unknown node type `{}`{hint}",
                    node.id, node.node_type
                ),
            ));
        }
    }

    // Edges: ends exist, handles exist, types fit, one edge per input.
    let mut wired: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    let mut controlled: HashMap<&str, ()> = HashMap::new();
    for edge in &graph.edges {
        let eid = edge.display_id();
        if edge.edge_type == EdgeType::Control {
            check_control_edge(edge, &eid, registry, &by_id, &mut problems);
            controlled.insert(edge.target.as_str(), ());
            continue;
        }
        let src = by_id.get(edge.source.as_str());
        let dst = by_id.get(edge.target.as_str());
        for (end, id) in [(src, &edge.source), (dst, &edge.target)] {
            if end.is_none() {
                problems.push(problem(
                    ProblemKind::MissingNode,
                    Some(id),
                    Some(&eid),
                    format!("edge `{eid}` refers to missing node `{id}`"),
                ));
            }
        }
        let mut from_type = None;
        if let Some(src) = src {
            if registry.get(&src.node_type).is_some() {
                match output_type(registry, src, &edge.source_handle) {
                    Some(t) => from_type = t,
                    None => problems.push(problem(
                        ProblemKind::UnknownHandle,
                        Some(&src.id),
                        Some(&eid),
                        format!(
                            "edge `{eid}`: node `{}` ({}) has no output `{}`",
                            src.id, src.node_type, edge.source_handle
                        ),
                    )),
                }
            }
        }
        if let Some(dst) = dst {
            wired
                .entry((dst.id.as_str(), edge.target_handle.as_str()))
                .or_default()
                .push(eid.clone());
            if let Some(imp) = registry.get(&dst.node_type) {
                let spec = imp.spec();
                match spec.input_spec(&edge.target_handle) {
                    Some(input) => {
                        if let Some(from) = &from_type {
                            if !types::compatible(from, &input.type_name) {
                                problems.push(problem(
                                    ProblemKind::TypeMismatch,
                                    Some(&dst.id),
                                    Some(&eid),
                                    format!(
                                        "edge `{eid}`: output `{}.{}` is {from} but input `{}.{}` expects {}",
                                        edge.source, edge.source_handle, dst.id,
                                        edge.target_handle, input.type_name
                                    ),
                                ));
                            }
                        }
                    }
                    None if spec.dynamic => {}
                    None => problems.push(problem(
                        ProblemKind::UnknownHandle,
                        Some(&dst.id),
                        Some(&eid),
                        format!(
                            "edge `{eid}`: node `{}` ({}) has no input `{}`",
                            dst.id, dst.node_type, edge.target_handle
                        ),
                    )),
                }
            }
        }
    }
    for ((node, handle), edges) in &wired {
        if edges.len() > 1 {
            problems.push(problem(
                ProblemKind::DuplicateEdge,
                Some(node),
                edges.first().map(String::as_str),
                format!(
                    "input `{node}.{handle}` has {} incoming edges ({}); an input takes one",
                    edges.len(),
                    edges.join(", ")
                ),
            ));
        }
    }

    // Per node: required inputs, literal types, input names.
    let mut input_names: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for node in &graph.nodes {
        let Some(imp) = registry.get(&node.node_type) else {
            continue;
        };
        let spec = imp.spec();
        for input in &spec.inputs {
            let is_wired = wired.contains_key(&(node.id.as_str(), input.name.as_str()));
            if is_wired {
                continue;
            }
            let literal = node
                .data
                .get(&input.name)
                .or_else(|| node.dynamic_properties.get(&input.name));
            if let Some(v) = literal {
                if !types::value_fits(v, &input.type_name) {
                    problems.push(problem(
                        ProblemKind::TypeMismatch,
                        Some(&node.id),
                        None,
                        format!(
                            "node `{}`: property `{}` expects {} but is {}",
                            node.id,
                            input.name,
                            input.type_name,
                            types::type_of(v)
                        ),
                    ));
                }
            }
            let has_value = literal.is_some_and(|v| !v.is_null()) || !input.default.is_null();
            // A controlled node's properties may come with each control event.
            let is_controlled = controlled.contains_key(node.id.as_str());
            if input.required && !has_value && !is_controlled {
                problems.push(problem(
                    ProblemKind::MissingInput,
                    Some(&node.id),
                    None,
                    format!(
                        "node `{}` ({}): required input `{}` has no value and no edge",
                        node.id, node.node_type, input.name
                    ),
                ));
            }
        }
        if spec.kind == NodeKind::Input {
            let name = node.input_name();
            input_names
                .entry(name.to_owned())
                .or_default()
                .push(&node.id);
            if let Some(param) = params.get(name) {
                let want = spec
                    .input_spec("value")
                    .map_or("any", |i| i.type_name.as_str());
                if !types::value_fits(param, want) {
                    problems.push(problem(
                        ProblemKind::BadParam,
                        Some(&node.id),
                        None,
                        format!(
                            "param `{name}` must be {want} for input node `{}`, got {}",
                            node.id,
                            types::type_of(param)
                        ),
                    ));
                }
            }
        }
    }
    for (name, nodes) in &input_names {
        if nodes.len() > 1 {
            problems.push(problem(
                ProblemKind::DuplicateInputName,
                nodes.first().copied(),
                None,
                format!(
                    "input name `{name}` is used by {} nodes ({})",
                    nodes.len(),
                    nodes.join(", ")
                ),
            ));
        }
    }

    if let Some(cycle) = find_cycle_nodes(graph, &by_id, registry, &[EdgeType::Data]) {
        problems.push(problem(
            ProblemKind::Cycle,
            cycle.first().map(String::as_str),
            None,
            format!(
                "data cycle through nodes {}: a workflow must be acyclic",
                cycle.join(", ")
            ),
        ));
    } else if let Some(cycle) = find_cycle_nodes(
        graph,
        &by_id,
        registry,
        &[EdgeType::Data, EdgeType::Control],
    ) {
        // A controlled node runs only when its controller says so, and a controller starts only
        // once it has its inputs: a loop through a control edge can never start.
        problems.push(problem(
            ProblemKind::Cycle,
            cycle.first().map(String::as_str),
            None,
            format!(
                "cycle through a control edge, nodes {}: a controller cannot wait for data from \
                 (or control) a node that runs only when it is controlled",
                cycle.join(", ")
            ),
        ));
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { problems })
    }
}

/// A control edge: both ends exist, it ends in `__control__`, it does not loop onto its source,
/// its source handle is a control output or a declared one, and its target is a node that runs
/// per firing (not an input, an output that drains a stream, or a comment).
fn check_control_edge(
    edge: &crate::graph::Edge,
    eid: &str,
    registry: &Registry,
    by_id: &HashMap<&str, &crate::graph::Node>,
    problems: &mut Vec<Problem>,
) {
    let mut push = |node: &str, kind, msg: String| {
        problems.push(problem(kind, Some(node), Some(eid), msg));
    };
    for id in [&edge.source, &edge.target] {
        if !by_id.contains_key(id.as_str()) {
            push(
                id,
                ProblemKind::MissingNode,
                format!("control edge `{eid}` refers to missing node `{id}`"),
            );
        }
    }
    if edge.target_handle != CONTROL_HANDLE {
        push(
            &edge.target,
            ProblemKind::UnknownHandle,
            format!(
                "control edge `{eid}` must end in `{CONTROL_HANDLE}`, not `{}`",
                edge.target_handle
            ),
        );
    }
    if edge.source == edge.target {
        push(
            &edge.source,
            ProblemKind::Cycle,
            format!(
                "control edge `{eid}` connects node `{}` to itself",
                edge.source
            ),
        );
    }
    if let Some(imp) = by_id
        .get(edge.source.as_str())
        .and_then(|n| registry.get(&n.node_type))
    {
        let h = edge.source_handle.as_str();
        if h != CONTROL_HANDLE && h != CONTROL_OUTPUT && imp.spec().output_spec(h).is_none() {
            push(
                &edge.source,
                ProblemKind::UnknownHandle,
                format!(
                    "control edge `{eid}`: node `{}` ({}) has no output `{h}` (controllers \
                     send control events on `{CONTROL_HANDLE}`)",
                    edge.source,
                    imp.spec().node_type
                ),
            );
        }
    }
    if let Some(imp) = by_id
        .get(edge.target.as_str())
        .and_then(|n| registry.get(&n.node_type))
    {
        let spec = imp.spec();
        if spec.consumes_stream || matches!(spec.kind, NodeKind::Input | NodeKind::Inert) {
            push(
                &edge.target,
                ProblemKind::Unsupported,
                format!(
                    "control edge `{eid}`: node `{}` ({}) cannot be controlled: it {}",
                    edge.target,
                    spec.node_type,
                    match spec.kind {
                        NodeKind::Input => "is a workflow input",
                        NodeKind::Inert => "never runs",
                        _ => "drains its input stream in one run",
                    }
                ),
            );
        }
    }
}

/// Asks every node of a valid graph for the problems it would hit ([`NodeImpl::preflight`]),
/// with the resources and secrets its job will run with, so that e.g. a missing API key fails
/// the job before anything runs, naming the setting.
pub fn preflight(
    graph: &Graph,
    registry: &Registry,
    resources: &crate::context::EngineResources,
    secrets: &BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    let mut problems = Vec::new();
    // Wired inputs by target, once: a scan of every edge per node was O(nodes × edges).
    let mut wired_into: HashMap<&str, Vec<String>> = HashMap::new();
    for e in graph.edges.iter().filter(|e| e.edge_type == EdgeType::Data) {
        wired_into
            .entry(e.target.as_str())
            .or_default()
            .push(e.target_handle.clone());
    }
    for node in &graph.nodes {
        let Some(imp) = registry.get(&node.node_type) else {
            continue;
        };
        let spec = imp.spec();
        let wired: &[String] = wired_into.get(node.id.as_str()).map_or(&[], Vec::as_slice);
        let mut props = Map::new();
        for input in &spec.inputs {
            props.insert(input.name.clone(), input.default.clone());
        }
        for (k, v) in node.data.iter().chain(node.dynamic_properties.iter()) {
            props.insert(k.clone(), v.clone());
        }
        for w in wired {
            props.remove(w);
        }
        let props = crate::node::NodeInputs::new(props);
        let check = crate::node::Preflight {
            node_id: &node.id,
            props: &props,
            wired,
            dynamic_outputs: &node.dynamic_outputs,
            resources,
            secrets,
        };
        for message in imp.preflight(&check) {
            problems.push(problem(
                ProblemKind::Requirement,
                Some(&node.id),
                None,
                format!("node `{}` ({}): {message}", node.id, node.node_type),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { problems })
    }
}

/// Nodes on (or between) data cycles, or `None` for a DAG: Kahn's algorithm forwards, then
/// backwards on what is left, strips every node that is not part of a cycle. O(V + E). Edges
/// into a feedback input (a loop's `next`) may close a cycle and are left out.
fn find_cycle_nodes(
    graph: &Graph,
    by_id: &HashMap<&str, &crate::graph::Node>,
    registry: &Registry,
    kinds: &[EdgeType],
) -> Option<Vec<String>> {
    let feedback = |e: &crate::graph::Edge| {
        by_id
            .get(e.target.as_str())
            .and_then(|n| registry.get(&n.node_type))
            .is_some_and(|i| i.spec().feedback.contains(&e.target_handle))
    };
    let index: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let edges: Vec<(usize, usize)> = graph
        .edges
        .iter()
        .filter(|e| kinds.contains(&e.edge_type) && !feedback(e))
        .filter(|e| by_id.contains_key(e.source.as_str()) && by_id.contains_key(e.target.as_str()))
        .filter_map(|e| {
            Some((
                *index.get(e.source.as_str())?,
                *index.get(e.target.as_str())?,
            ))
        })
        .collect();
    let n = graph.nodes.len();
    let mut alive = vec![true; n];
    for forward in [true, false] {
        let mut degree = vec![0usize; n];
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(s, t) in &edges {
            if !(alive[s] && alive[t]) {
                continue;
            }
            let (from, to) = if forward { (s, t) } else { (t, s) };
            degree[to] += 1;
            next[from].push(to);
        }
        let mut queue: Vec<usize> = (0..n).filter(|&i| alive[i] && degree[i] == 0).collect();
        while let Some(i) = queue.pop() {
            alive[i] = false;
            for &j in &next[i] {
                degree[j] -= 1;
                if degree[j] == 0 {
                    queue.push(j);
                }
            }
        }
    }
    let mut left: Vec<String> = (0..n)
        .filter(|&i| alive[i])
        .map(|i| graph.nodes[i].id.clone())
        .collect();
    left.sort();
    left.dedup();
    (!left.is_empty()).then_some(left)
}
