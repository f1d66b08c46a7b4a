//! `nodetool.dictionary.*`.

use serde_json::{json, Map, Value};

use nodetool_core::Error;

use nodetool_engine::node::{value_to_text, NodeSpec};
use nodetool_engine::registry::Registry;

use super::{fn_node, python_json};

fn key_text(v: &Value) -> String {
    value_to_text(v)
}

pub fn register(r: &mut Registry) {
    let dict_spec = |class: &str, title: &str, out: &str| {
        NodeSpec::new(format!("nodetool.dictionary.{class}"), title)
            .input("dictionary", "dict[str, any]", json!({}))
            .output("output", out)
    };
    fn_node(
        r,
        dict_spec("GetValue", "Get Value", "any")
            .input("key", "str", json!(""))
            .input("default", "any", Value::Null),
        |i| {
            let d = i.dict("dictionary")?;
            Ok(d.get(&i.str("key")?)
                .cloned()
                .unwrap_or_else(|| i.value("default")))
        },
    );
    fn_node(
        r,
        dict_spec("Update", "Update", "dict[str, any]").input(
            "new_pairs",
            "dict[str, any]",
            json!({}),
        ),
        |i| {
            let mut d = i.dict("dictionary")?;
            d.extend(i.dict("new_pairs")?);
            Ok(Value::Object(d))
        },
    );
    fn_node(
        r,
        dict_spec("Remove", "Remove", "dict[str, any]").input("key", "str", json!("")),
        |i| {
            let mut d = i.dict("dictionary")?;
            d.shift_remove(&i.str("key")?);
            Ok(Value::Object(d))
        },
    );
    fn_node(
        r,
        dict_spec("Filter", "Filter", "dict[str, any]").input("keys", "list[str]", json!([])),
        |i| {
            let keys: Vec<String> = i.list("keys")?.iter().map(key_text).collect();
            let d: Map<String, Value> = i
                .dict("dictionary")?
                .into_iter()
                .filter(|(k, _)| keys.contains(k))
                .collect();
            Ok(Value::Object(d))
        },
    );
    fn_node(r, dict_spec("ToJSON", "To JSON", "str"), |i| {
        Ok(json!(python_json(&Value::Object(i.dict("dictionary")?))))
    });
    fn_node(
        r,
        NodeSpec::new("nodetool.dictionary.ParseJSON", "Parse JSON")
            .input("json_string", "str", json!(""))
            .output("output", "dict[str, any]"),
        |i| {
            let text = i.str("json_string")?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                Error::invalid_input(format!(
                    "invalid JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ))
            })?;
            if !v.is_object() {
                return Err(Error::invalid_input(format!(
                    "Input JSON is not a dictionary (it is a {})",
                    nodetool_engine::types::type_of(&v)
                )));
            }
            Ok(v)
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.dictionary.Zip", "Zip")
            .input("keys", "list[any]", json!([]))
            .input("values", "list[any]", json!([]))
            .output("output", "dict[str, any]"),
        |i| {
            // Like Python's zip: stops at the shorter list.
            let d: Map<String, Value> = i
                .list("keys")?
                .iter()
                .zip(i.list("values")?)
                .map(|(k, v)| (key_text(k), v))
                .collect();
            Ok(Value::Object(d))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.dictionary.Combine", "Combine")
            .input("dict_a", "dict[str, any]", json!({}))
            .input("dict_b", "dict[str, any]", json!({}))
            .output("output", "dict[str, any]"),
        |i| {
            let mut d = i.dict("dict_a")?;
            d.extend(i.dict("dict_b")?);
            Ok(Value::Object(d))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.dictionary.MakeDictionary", "Make Dictionary")
            .output("output", "dict[str, any]")
            .dynamic(),
        |i| Ok(Value::Object(i.as_map().clone())),
    );
}
