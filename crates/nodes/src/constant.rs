//! `nodetool.constant.*`: a literal `value` on `output`.

use serde_json::{json, Value};

use nodetool_core::Error;

use nodetool_engine::node::NodeSpec;
use nodetool_engine::registry::Registry;

use super::fn_node;

pub fn register(r: &mut Registry) {
    let constants: [(&str, &str, &str, Value); 5] = [
        ("String", "String", "str", json!("")),
        ("Integer", "Integer", "int", json!(0)),
        ("Float", "Float", "float", json!(0.0)),
        ("Bool", "Bool", "bool", json!(false)),
        ("Dict", "Dict", "dict[str, any]", json!({})),
    ];
    for (class, title, ty, default) in constants {
        let float = class == "Float";
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.constant.{class}"), title)
                .input("value", ty, default)
                .output("output", ty),
            move |i| {
                let v = i.value("value");
                // NodeTool's `value: float` makes an int literal a float (the editor writes
                // 3.0 as 3): 3 -> 3.0.
                Ok(match v.as_f64() {
                    Some(f) if float && !v.is_f64() => json!(f),
                    _ => v,
                })
            },
        );
    }
    // NodeTool's List holds `list[Any]`; a few bundled examples store it as the JSON text of a
    // list (the TypeScript node passes that string on), so a string is parsed as JSON here.
    fn_node(
        r,
        NodeSpec::new("nodetool.constant.List", "List")
            .input("value", "union[list[any], str]", json!([]))
            .output("output", "list[any]"),
        |i| match i.value("value") {
            Value::Null => Ok(json!([])),
            Value::String(text) => match serde_json::from_str::<Value>(&text) {
                Ok(list @ Value::Array(_)) => Ok(list),
                _ => Err(Error::invalid_input(
                    "input `value` must be a list, or the JSON text of a list",
                )
                .with_context("input", "value")),
            },
            list @ Value::Array(_) => Ok(list),
            other => Err(Error::invalid_input(format!(
                "input `value` must be a list, got {}",
                nodetool_engine::types::type_of(&other)
            ))
            .with_context("input", "value")),
        },
    );
    for (class, title, ty) in [
        ("Image", "Image", "image"),
        ("Audio", "Audio", "audio"),
        ("Video", "Video", "video"),
        ("Document", "Document", "document"),
        ("DataFrame", "Data Frame", "dataframe"),
        ("JSON", "JSON", "json"),
        ("Model3D", "Model 3D", "model_3d"),
    ] {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.constant.{class}"), title)
                .input(
                    "value",
                    ty,
                    json!({"type": ty, "uri": "", "asset_id": null, "data": null}),
                )
                .output("output", ty),
            |i| Ok(i.value("value")),
        );
    }
    for (class, title, ty) in [
        ("ImageList", "Image List", "list[image]"),
        ("VideoList", "Video List", "list[video]"),
        ("AudioList", "Audio List", "list[audio]"),
        ("TextList", "Text List", "list[str]"),
    ] {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.constant.{class}"), title)
                .input("value", ty, json!([]))
                .output("output", ty),
            |i| match i.value("value") {
                Value::Null => Ok(json!([])),
                v => Ok(v),
            },
        );
    }
    fn_node(
        r,
        NodeSpec::new("nodetool.constant.Select", "Select")
            .input("value", "str", json!(""))
            .input("options", "list[str]", json!([]))
            .input("enum_type_name", "str", json!(""))
            .output("output", "str"),
        |i| Ok(json!(i.str("value")?)),
    );
}
