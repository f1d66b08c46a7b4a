//! NodeTool's graph JSON (`types/api_graph.py`) and whole workflow files, as serde types.
//!
//! Field names are NodeTool's (`sourceHandle`, `targetHandle`, `edge_type`, ...), so a workflow
//! saved by NodeTool loads unchanged and one we write loads in NodeTool.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use nodetool_core::{Error, ErrorKind, Result};

/// How a node batches the values arriving on its input handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Fire once every handle has a value, then again on every later arrival (latest values).
    #[default]
    OnAny,
    /// Fire once per aligned set: one fresh item from every streaming handle.
    ZipAll,
}

impl<'de> Deserialize<'de> for SyncMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // NodeTool treats anything but "zip_all" (including null) as on_any.
        let v = Option::<String>::deserialize(d)?;
        Ok(match v.as_deref() {
            Some("zip_all") => SyncMode::ZipAll,
            _ => SyncMode::OnAny,
        })
    }
}

/// `data` (dataflow) or `control` edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeType {
    #[default]
    Data,
    Control,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn default_node_type() -> String {
    "default".to_owned()
}

/// One node of a graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(rename = "type", default = "default_node_type")]
    pub node_type: String,
    /// Literal property values. A key that is also the target handle of an edge is ignored:
    /// wired inputs beat literals.
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui_properties: Option<Value>,
    /// Extra properties of dynamic nodes (FormatText variables, MakeDictionary keys), with values.
    #[serde(default, deserialize_with = "null_as_default")]
    pub dynamic_properties: Map<String, Value>,
    /// Extra output slots: `{name: TypeMetadata}`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub dynamic_outputs: Map<String, Value>,
    #[serde(default)]
    pub sync_mode: SyncMode,
}

impl Node {
    /// The name an input node's param goes by: its `name` property, or (as NodeTool's
    /// TypeScript runtime falls back) its id when the name is empty.
    pub fn input_name(&self) -> &str {
        match self.data.get("name").and_then(Value::as_str).map(str::trim) {
            Some(name) if !name.is_empty() => name,
            _ => &self.id,
        }
    }
}

/// One edge: `source.sourceHandle` → `target.targetHandle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    #[serde(default)]
    pub id: Option<String>,
    pub source: String,
    #[serde(rename = "sourceHandle")]
    pub source_handle: String,
    pub target: String,
    #[serde(rename = "targetHandle")]
    pub target_handle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui_properties: Option<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub edge_type: EdgeType,
}

impl Edge {
    /// The edge id NodeTool would show: its own, else a stable one built from its ends.
    pub fn display_id(&self) -> String {
        match &self.id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!(
                "{}.{}->{}.{}",
                self.source, self.source_handle, self.target, self.target_handle
            ),
        }
    }
}

/// `{nodes, edges}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<Node>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub edges: Vec<Edge>,
}

impl Graph {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// A whole NodeTool workflow file: `{id, name, graph, ...}`. Fields we do not use are kept in
/// `extra` so a file round-trips.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    pub graph: Graph,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parses a workflow file or a bare graph (`{nodes, edges}`).
///
/// Malformed JSON is [`ErrorKind::InvalidInput`] with `line` and `column` in the context; a
/// document of the wrong shape says which field was wrong and where.
pub fn parse_workflow(text: &str) -> Result<Workflow> {
    let value: Value = serde_json::from_str(text).map_err(|e| json_error(e, "parse"))?;
    let Value::Object(obj) = &value else {
        return Err(Error::invalid_input(
            "a workflow must be a JSON object with a `graph` (or `nodes` and `edges`)",
        )
        .with_operation("workflow.parse"));
    };
    if obj.contains_key("graph") {
        // Re-parse from text (not from the Value) so shape errors carry line/column.
        serde_json::from_str::<Workflow>(text).map_err(|e| json_error(e, "shape"))
    } else if obj.contains_key("nodes") {
        let graph = serde_json::from_str::<Graph>(text).map_err(|e| json_error(e, "shape"))?;
        Ok(Workflow {
            graph,
            ..Workflow::default()
        })
    } else {
        Err(
            Error::invalid_input("a workflow needs a `graph` object (or top-level `nodes`)")
                .with_operation("workflow.parse"),
        )
    }
}

fn json_error(e: serde_json::Error, what: &'static str) -> Error {
    let msg = match what {
        "parse" => format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ),
        _ => format!(
            "not a NodeTool workflow at line {}, column {}: {e}",
            e.line(),
            e.column()
        ),
    };
    Error::new(ErrorKind::InvalidInput, msg)
        .with_operation("workflow.parse")
        .with_context("line", e.line())
        .with_context("column", e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_bare_graph_and_defaults() {
        let wf = parse_workflow(
            r#"{"nodes":[{"id":"a","type":"x.Y","data":null,"sync_mode":"weird"}],
                "edges":[{"source":"a","sourceHandle":"output","target":"b","targetHandle":"v"}]}"#,
        )
        .unwrap();
        let n = &wf.graph.nodes[0];
        assert_eq!(n.sync_mode, SyncMode::OnAny);
        assert!(n.data.is_empty());
        assert_eq!(wf.graph.edges[0].edge_type, EdgeType::Data);
        assert_eq!(wf.graph.edges[0].display_id(), "a.output->b.v");
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse_workflow("{\n  \"graph\": {\n    \"nodes\": [,]\n  }\n}").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.context_value("line"), Some("3"));
        assert_eq!(err.context_value("column"), Some("15"));
        assert!(err.to_string().contains("line 3, column 15"), "{err}");
    }

    #[test]
    fn wrong_shape_names_the_field() {
        let err = parse_workflow(r#"{"graph": {"nodes": [{"type": "a.B"}]}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
    }
}
