//! `nodetool.constant.*`: a literal `value` on `output`.

use serde_json::{json, Value};

use nodetool_engine::node::NodeSpec;
use nodetool_engine::registry::Registry;

use super::fn_node;

pub fn register(r: &mut Registry) {
    let constants: [(&str, &str, &str, Value); 6] = [
        ("String", "String", "str", json!("")),
        ("Integer", "Integer", "int", json!(0)),
        ("Float", "Float", "float", json!(0.0)),
        ("Bool", "Bool", "bool", json!(false)),
        ("List", "List", "list[any]", json!([])),
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
    for (class, ty) in [
        ("Image", "image"),
        ("Audio", "audio"),
        ("Video", "video"),
        ("Document", "document"),
    ] {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.constant.{class}"), class)
                .input("value", ty, json!({"type": ty, "uri": ""}))
                .output("output", ty),
            |i| Ok(i.value("value")),
        );
    }
}
