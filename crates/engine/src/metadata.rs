//! NodeTool's `NodeMetadata` of a [`NodeSpec`]: what the app's node menu and editor read from
//! `GET /api/nodes/metadata` (nodetool-core `metadata/node_metadata.py`, `BaseNode.get_metadata`).
//! Types become NodeTool's `TypeMetadata` trees (`list[str]` → `{type: "list", type_args:
//! [{type: "str"}]}`). Pure functions of the spec: suitable for snapshots.

use serde_json::{json, Map, Value};

use crate::node::NodeSpec;
use crate::registry::Registry;

/// NodeTool's `TypeMetadata` of a type name: `{type, optional, values, type_args, type_name}`.
/// `Optional[T]` sets `optional`; unknown names pass through as their own `type`.
pub fn type_metadata(t: &str) -> Value {
    let (node, _) = parse(t.trim());
    node
}

/// Parses one type from the front of `s`; returns it and the rest.
fn parse(s: &str) -> (Value, &str) {
    let s = s.trim_start();
    let end = s.find(['[', ',', ']']).unwrap_or(s.len());
    let name = s[..end].trim();
    let mut rest = &s[end..];
    let mut args = Vec::new();
    if let Some(inner) = rest.strip_prefix('[') {
        rest = inner;
        loop {
            if let Some(after) = rest.trim_start().strip_prefix(']') {
                rest = after;
                break;
            }
            if rest.trim().is_empty() {
                break; // unbalanced: keep what was read
            }
            let (arg, after) = parse(rest);
            args.push(arg);
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            }
        }
    }
    let lower = name.to_ascii_lowercase();
    if lower == "optional" {
        let mut inner = args
            .into_iter()
            .next()
            .unwrap_or_else(|| leaf("any", vec![]));
        inner["optional"] = json!(true);
        return (inner, rest);
    }
    let canonical = match lower.as_str() {
        "" | "object" | "any" => "any",
        "string" => "str",
        "integer" => "int",
        "boolean" => "bool",
        "number" => "float",
        "list" | "sequence" => "list",
        "dict" | "mapping" => "dict",
        "union" => "union",
        "tuple" => "tuple",
        _ => name,
    };
    (leaf(canonical, args), rest)
}

fn leaf(t: &str, type_args: Vec<Value>) -> Value {
    json!({"type": t, "optional": false, "values": null, "type_args": type_args, "type_name": null})
}

fn is_inline_editable(t: &Value) -> bool {
    let args = || t["type_args"].as_array().cloned().unwrap_or_default();
    match t["type"].as_str().unwrap_or("any") {
        "str" | "int" | "float" | "bool" | "text" | "enum" | "none" => true,
        "union" => args().iter().any(is_inline_editable),
        "list" | "tuple" => args().first().is_some_and(is_inline_editable),
        _ => false,
    }
}

/// The namespace of a node type: its module path (`nodetool.text.Concat` → `nodetool.text`).
pub fn namespace(node_type: &str) -> &str {
    node_type.rsplit_once('.').map_or("", |(ns, _)| ns)
}

/// NodeTool's `NodeMetadata` of one spec. `expose_as_tool` and `required_settings` come from
/// the caller (they live with the node library and the catalog, not in the spec).
pub fn node_metadata(spec: &NodeSpec, expose_as_tool: bool, required_settings: &[String]) -> Value {
    let mut properties = Vec::new();
    let mut inline = Vec::new();
    for input in &spec.inputs {
        let ty = type_metadata(&input.type_name);
        if is_inline_editable(&ty) {
            inline.push(json!(input.name));
        }
        properties.push(json!({
            "name": input.name,
            "type": ty,
            "default": input.default,
            "title": title_case(&input.name),
            "description": null,
            "min": null,
            "max": null,
            "json_schema_extra": null,
            "required": input.required,
        }));
    }
    let outputs: Vec<Value> = spec
        .outputs
        .iter()
        .map(|o| {
            json!({
                "type": type_metadata(&o.type_name),
                "name": o.name,
                "stream": spec.streaming,
                "stream_kind": null,
            })
        })
        .collect();
    let names: Vec<Value> = spec.inputs.iter().map(|i| json!(i.name)).collect();
    // An inline field already has a handle; input_fields are the handle-only rest.
    let input_fields: Vec<Value> = names
        .iter()
        .filter(|n| !inline.contains(n))
        .cloned()
        .collect();
    let mut m = Map::new();
    m.insert("title".into(), json!(spec.title));
    m.insert("description".into(), json!(spec.description));
    m.insert("namespace".into(), json!(namespace(&spec.node_type)));
    m.insert("node_type".into(), json!(spec.node_type));
    m.insert("layout".into(), json!("default"));
    m.insert("body".into(), json!("default"));
    m.insert("properties".into(), Value::Array(properties));
    m.insert("outputs".into(), Value::Array(outputs));
    m.insert("the_model_info".into(), json!({}));
    m.insert("recommended_models".into(), json!([]));
    m.insert("basic_fields".into(), Value::Array(names));
    m.insert("input_fields".into(), Value::Array(input_fields));
    m.insert("inline_fields".into(), Value::Array(inline));
    m.insert("required_settings".into(), json!(required_settings));
    m.insert("is_dynamic".into(), json!(spec.dynamic));
    m.insert("is_streaming_output".into(), json!(spec.streaming));
    m.insert("expose_as_tool".into(), json!(expose_as_tool));
    m.insert(
        "supports_dynamic_outputs".into(),
        json!(spec.dynamic_outputs),
    );
    m.insert("model_packs".into(), json!([]));
    Value::Object(m)
}

/// The metadata of every type `registry` can run, sorted by type. `expose_as_tool(type)` says
/// which the agents may call.
pub fn registry_metadata(registry: &Registry, expose_as_tool: &dyn Fn(&str) -> bool) -> Vec<Value> {
    registry
        .types()
        .filter_map(|t| registry.get(t))
        .map(|imp| {
            let spec = imp.spec();
            node_metadata(spec, expose_as_tool(&spec.node_type), &[])
        })
        .collect()
}

/// `max_tokens` → `Max Tokens` (pydantic's default field title).
fn title_case(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_become_type_metadata_trees() {
        assert_eq!(type_metadata("str")["type"], "str");
        let l = type_metadata("list[str]");
        assert_eq!(l["type"], "list");
        assert_eq!(l["type_args"][0]["type"], "str");
        let d = type_metadata("dict[str, list[int]]");
        assert_eq!(d["type_args"][1]["type_args"][0]["type"], "int");
        let u = type_metadata("union[list[any], str]");
        assert_eq!(u["type"], "union");
        assert_eq!(u["type_args"].as_array().unwrap().len(), 2);
        let o = type_metadata("Optional[image]");
        assert_eq!(
            (o["type"].as_str(), o["optional"].as_bool()),
            (Some("image"), Some(true))
        );
        assert_eq!(type_metadata("")["type"], "any");
        // Unbalanced input never panics.
        assert_eq!(type_metadata("list[str")["type"], "list");
        assert_eq!(type_metadata("]]")["type"], "any");
    }

    #[test]
    fn inline_fields_follow_nodetool() {
        let spec = NodeSpec::new("nodetool.text.X", "X")
            .input("text", "str", json!(""))
            .input("image", "image", json!({}))
            .input("items", "list[int]", json!([]))
            .output("output", "str");
        let m = node_metadata(&spec, false, &[]);
        assert_eq!(m["namespace"], "nodetool.text");
        assert_eq!(m["inline_fields"], json!(["text", "items"]));
        assert_eq!(m["input_fields"], json!(["image"]));
        assert_eq!(m["properties"][0]["title"], "Text");
        assert_eq!(m["outputs"][0]["type"]["type"], "str");
    }
}
