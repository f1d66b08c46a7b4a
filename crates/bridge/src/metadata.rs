//! What `discover` returns — protocol version, node metadata, load errors — and how a Python
//! node's metadata becomes an engine [`NodeSpec`].
//!
//! Output types arrive as NodeTool type metadata (`{type: "list", type_args: [{type: "int"}]}`)
//! and keep NodeTool's names. Property types arrive as Python annotation text (`ImageRef`,
//! `list[str]`, `Union[int, NoneType]`, `int | None`) and are mapped to NodeTool's names; a class
//! this runtime does not know becomes `any`, since the worker validates the value itself when it
//! assigns it.

use rmpv::Value as Mp;
use serde::Serialize;
use serde_json::Value as Json;

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::{InputSpec, NodeSpec, OutputSpec};

use crate::convert::to_json;
use crate::frame::map_get;

/// A module the worker could not import, or a node whose metadata it could not extract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    pub module: String,
    /// `import` or `metadata`.
    pub phase: String,
    pub error_type: String,
    pub error: String,
}

/// One declared property of a Python node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PropertyMeta {
    pub name: String,
    /// NodeTool type name (`image`, `list[str]`, `any`, ...).
    pub type_name: String,
    /// The annotation as the worker printed it.
    pub python_type: String,
    pub default: Json,
}

impl PropertyMeta {
    /// Whether values of this property are media refs, sent to the worker as blobs.
    pub fn is_ref(&self) -> bool {
        is_ref_type(element_type(&self.type_name))
    }

    /// Whether it is a list of media refs (sent as a list of blobs).
    pub fn is_ref_list(&self) -> bool {
        self.type_name.starts_with("list[") && self.is_ref()
    }
}

/// One declared output slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputMeta {
    pub name: String,
    pub type_name: String,
}

/// A Python node type as the worker describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeMetadata {
    pub node_type: String,
    pub title: String,
    pub description: String,
    pub properties: Vec<PropertyMeta>,
    pub outputs: Vec<OutputMeta>,
    /// Settings (API keys) the node reads; only these are sent as its `secrets`.
    pub required_settings: Vec<String>,
    pub is_streaming_output: bool,
    pub is_streaming_input: bool,
    pub is_dynamic: bool,
    /// Protocol v4: the VRAM its weights need, echoed back on `execute`.
    pub requires_vram_gb: Option<f64>,
}

impl NodeMetadata {
    /// The top-level namespace (`huggingface` of `huggingface.text.Summarize`).
    pub fn namespace(&self) -> &str {
        self.node_type.split('.').next().unwrap_or(&self.node_type)
    }

    pub fn property(&self, name: &str) -> Option<&PropertyMeta> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// The engine's view of this node type.
    pub fn to_spec(&self) -> NodeSpec {
        let title = if self.title.is_empty() {
            self.node_type.rsplit('.').next().unwrap_or(&self.node_type)
        } else {
            &self.title
        };
        let mut spec = NodeSpec::new(&self.node_type, title)
            .version("python")
            .origin(nodetool_engine::NodeOrigin::Python)
            .description(self.description.clone());
        spec.inputs = self
            .properties
            .iter()
            .map(|p| InputSpec {
                name: p.name.clone(),
                type_name: p.type_name.clone(),
                default: p.default.clone(),
                required: false,
            })
            .collect();
        spec.outputs = self
            .outputs
            .iter()
            .map(|o| OutputSpec {
                name: o.name.clone(),
                type_name: o.type_name.clone(),
            })
            .collect();
        if spec.outputs.is_empty() {
            // No return annotation: the worker returns the value as slot `output`.
            spec.outputs.push(OutputSpec {
                name: "output".to_owned(),
                type_name: "any".to_owned(),
            });
        }
        spec.streaming = self.is_streaming_output;
        spec.dynamic = self.is_dynamic;
        spec.requires_vram_gb = self.requires_vram_gb.filter(|gb| *gb > 0.0);
        spec
    }
}

/// The answer to `discover`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Discovery {
    pub protocol_version: u32,
    pub nodes: Vec<NodeMetadata>,
    pub load_errors: Vec<LoadError>,
    /// Node entries that could not be read (named when they had a `node_type`).
    pub skipped: Vec<String>,
}

impl Discovery {
    /// Parses a `discover` reply's `data`. A worker that names no protocol version predates the
    /// field and speaks version 1.
    pub fn parse(data: &Mp) -> Result<Discovery> {
        if !data.is_map() {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "the worker's discover reply has no data map",
            )
            .with_operation("bridge.discover"));
        }
        let protocol_version = match map_get(data, "protocol_version") {
            None | Some(Mp::Nil) => 1,
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("the worker reports protocol_version {v}, not a whole number"),
                    )
                    .with_operation("bridge.discover")
                })?,
        };
        let mut discovery = Discovery {
            protocol_version,
            ..Discovery::default()
        };
        for entry in map_get(data, "nodes")
            .and_then(Mp::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            match NodeMetadata::parse(entry) {
                Some(meta) => discovery.nodes.push(meta),
                None => discovery.skipped.push(
                    str_of(entry, "node_type").unwrap_or_else(|| "<unnamed entry>".to_owned()),
                ),
            }
        }
        discovery.load_errors = map_get(data, "load_errors")
            .and_then(Mp::as_array)
            .map(|errors| errors.iter().map(LoadError::parse).collect())
            .unwrap_or_default();
        Ok(discovery)
    }

    pub fn node(&self, node_type: &str) -> Option<&NodeMetadata> {
        self.nodes.iter().find(|n| n.node_type == node_type)
    }

    /// Node types per top-level namespace, sorted by namespace.
    pub fn namespaces(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for n in &self.nodes {
            *counts.entry(n.namespace().to_owned()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

fn str_of(v: &Mp, key: &str) -> Option<String> {
    map_get(v, key).and_then(Mp::as_str).map(str::to_owned)
}

fn bool_of(v: &Mp, key: &str) -> bool {
    map_get(v, key).and_then(Mp::as_bool).unwrap_or(false)
}

impl LoadError {
    fn parse(v: &Mp) -> LoadError {
        let text = |k| str_of(v, k).unwrap_or_default();
        LoadError {
            module: text("module"),
            phase: text("phase"),
            error_type: text("error_type"),
            error: text("error"),
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.module, self.phase, self.error_type)?;
        if !self.error.is_empty() {
            write!(f, ": {}", self.error)?;
        }
        Ok(())
    }
}

impl NodeMetadata {
    /// One `discover` node entry; `None` when it has no `node_type`.
    pub fn parse(v: &Mp) -> Option<NodeMetadata> {
        let node_type = str_of(v, "node_type").filter(|t| !t.is_empty())?;
        let properties = map_get(v, "properties")
            .and_then(Mp::as_array)
            .map(|props| props.iter().filter_map(PropertyMeta::parse).collect())
            .unwrap_or_default();
        let outputs = map_get(v, "outputs")
            .and_then(Mp::as_array)
            .map(|outs| {
                outs.iter()
                    .filter_map(|o| {
                        Some(OutputMeta {
                            name: str_of(o, "name")?,
                            type_name: map_get(o, "type")
                                .map(type_metadata_name)
                                .unwrap_or_else(|| "any".to_owned()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let required_settings = map_get(v, "required_settings")
            .and_then(Mp::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some(NodeMetadata {
            title: str_of(v, "title").unwrap_or_default(),
            description: str_of(v, "description").unwrap_or_default(),
            properties,
            outputs,
            required_settings,
            is_streaming_output: bool_of(v, "is_streaming_output"),
            is_streaming_input: bool_of(v, "is_streaming_input"),
            is_dynamic: bool_of(v, "is_dynamic"),
            requires_vram_gb: map_get(v, "requires_vram_gb").and_then(Mp::as_f64),
            node_type,
        })
    }
}

impl PropertyMeta {
    fn parse(v: &Mp) -> Option<PropertyMeta> {
        let name = str_of(v, "name")?;
        let python_type = map_get(v, "type")
            .and_then(|t| map_get(t, "type"))
            .and_then(Mp::as_str)
            .unwrap_or("any")
            .to_owned();
        Some(PropertyMeta {
            name,
            type_name: python_type_name(&python_type),
            python_type,
            default: map_get(v, "default").map(to_json).unwrap_or(Json::Null),
        })
    }
}

/// NodeTool type metadata (`{type, type_args}`) as a type name: `list[int]`, `dict[str, any]`.
pub fn type_metadata_name(v: &Mp) -> String {
    let base = map_get(v, "type").and_then(Mp::as_str).unwrap_or("any");
    let args: Vec<String> = map_get(v, "type_args")
        .and_then(Mp::as_array)
        .map(|a| a.iter().map(type_metadata_name).collect())
        .unwrap_or_default();
    match base {
        // Enums carry their values, unions their members; both accept more than one name.
        "enum" | "union" | "" => "any".to_owned(),
        "list" | "dict" | "tuple" if !args.is_empty() => format!("{base}[{}]", args.join(", ")),
        other => other.to_owned(),
    }
}

/// NodeTool's names for the media ref classes.
const REF_CLASSES: &[(&str, &str)] = &[
    ("ImageRef", "image"),
    ("AudioRef", "audio"),
    ("VideoRef", "video"),
    ("DocumentRef", "document"),
    ("DataframeRef", "dataframe"),
    ("Model3DRef", "model_3d"),
    ("AssetRef", "asset"),
];

/// Types whose values are media refs with bytes behind them.
pub fn is_ref_type(t: &str) -> bool {
    matches!(
        t,
        "image" | "audio" | "video" | "document" | "asset" | "model_3d"
    )
}

/// `list[image]` → `image`; anything else unchanged.
fn element_type(t: &str) -> &str {
    t.strip_prefix("list[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t)
}

/// A Python annotation as the worker prints it (`_field_type_name`) → NodeTool type name.
pub fn python_type_name(t: &str) -> String {
    let t = t.trim();
    // PEP 604 unions print as `int | None`.
    let members = split_top(t, '|');
    if members.len() > 1 {
        return union_name(&members);
    }
    let (head, args) = match t.find('[') {
        Some(open) if t.ends_with(']') => (&t[..open], split_top(&t[open + 1..t.len() - 1], ',')),
        _ => (t, Vec::new()),
    };
    let head = head.trim().rsplit('.').next().unwrap_or(head).trim();
    match head {
        "str" => "str".to_owned(),
        "int" => "int".to_owned(),
        "float" => "float".to_owned(),
        "bool" => "bool".to_owned(),
        "list" | "List" | "Sequence" | "tuple" | "Tuple" | "set" | "Set" => match args.first() {
            Some(a) if head != "tuple" && head != "Tuple" => {
                format!("list[{}]", python_type_name(a))
            }
            _ => "list[any]".to_owned(),
        },
        "dict" | "Dict" | "Mapping" => match args.as_slice() {
            [k, v] => format!("dict[{}, {}]", python_type_name(k), python_type_name(v)),
            _ => "dict".to_owned(),
        },
        "Union" | "Optional" => union_name(&args),
        "NoneType" | "None" => "none".to_owned(),
        other => REF_CLASSES
            .iter()
            .find(|(class, _)| *class == other)
            .map_or_else(|| "any".to_owned(), |(_, name)| (*name).to_owned()),
    }
}

/// A union: its one non-`None` member, else `any`.
fn union_name(members: &[&str]) -> String {
    let real: Vec<&&str> = members
        .iter()
        .filter(|m| !matches!(m.trim(), "NoneType" | "None"))
        .collect();
    match real.as_slice() {
        [one] => python_type_name(one),
        _ => "any".to_owned(),
    }
}

/// Splits on `sep` outside brackets.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() || !parts.is_empty() {
        parts.push(last);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_annotations_map_to_nodetool_names() {
        for (py, want) in [
            ("str", "str"),
            ("ImageRef", "image"),
            ("list[ImageRef]", "list[image]"),
            ("List[int]", "list[int]"),
            ("dict[str, Any]", "dict[str, any]"),
            ("Union[int, NoneType]", "int"),
            ("int | None", "int"),
            ("Union[int, str]", "any"),
            ("Literal[a, b]", "any"),
            ("LanguageModel", "any"),
            ("tuple[int, int]", "list[any]"),
            ("nodetool.metadata.types.AudioRef", "audio"),
        ] {
            assert_eq!(python_type_name(py), want, "{py}");
        }
    }

    #[test]
    fn type_metadata_keeps_nodetool_names() {
        let list = Mp::Map(vec![
            (Mp::from("type"), Mp::from("list")),
            (
                Mp::from("type_args"),
                Mp::Array(vec![Mp::Map(vec![(Mp::from("type"), Mp::from("image"))])]),
            ),
        ]);
        assert_eq!(type_metadata_name(&list), "list[image]");
        let e = Mp::Map(vec![(Mp::from("type"), Mp::from("enum"))]);
        assert_eq!(type_metadata_name(&e), "any");
    }

    #[test]
    fn a_worker_without_a_version_speaks_v1_and_bad_entries_are_skipped() {
        let data = Mp::Map(vec![(
            Mp::from("nodes"),
            Mp::Array(vec![
                Mp::Map(vec![(Mp::from("node_type"), Mp::from("a.B"))]),
                Mp::Map(vec![(Mp::from("title"), Mp::from("no type"))]),
            ]),
        )]);
        let d = Discovery::parse(&data).expect("parse");
        assert_eq!(d.protocol_version, 1);
        assert_eq!(d.nodes.len(), 1);
        assert_eq!(d.skipped, vec!["<unnamed entry>".to_owned()]);
        let spec = d.nodes[0].to_spec();
        assert_eq!(spec.title, "B");
        assert_eq!(spec.outputs[0].name, "output");
        assert!(Discovery::parse(&Mp::from(3)).is_err());
    }
}
