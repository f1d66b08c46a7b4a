//! `nodetool.boolean.*`.

use std::cmp::Ordering;

use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::node::NodeSpec;
use nodetool_engine::registry::Registry;

use super::fn_node;
use super::list::compare;

/// Python's `bool(value)` for JSON values.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub fn register(r: &mut Registry) {
    fn_node(
        r,
        NodeSpec::new("nodetool.boolean.Compare", "Compare")
            .input("a", "any", Value::Null)
            .input("b", "any", Value::Null)
            .input("comparison", "str", json!("=="))
            .output("output", "bool"),
        |i| {
            let (a, b) = (i.value("a"), i.value("b"));
            let ord = || -> Result<Ordering> { compare(&a, &b) };
            Ok(json!(match i.str("comparison")?.as_str() {
                "==" => equal(&a, &b),
                "!=" => !equal(&a, &b),
                ">" => ord()? == Ordering::Greater,
                "<" => ord()? == Ordering::Less,
                ">=" => ord()? != Ordering::Less,
                "<=" => ord()? != Ordering::Greater,
                other => return Err(Error::invalid_input(format!("unknown comparison {other}"))),
            }))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.boolean.LogicalOperator", "Logical Operator")
            .input("a", "bool", json!(false))
            .input("b", "bool", json!(false))
            .input("operation", "str", json!("and"))
            .output("output", "bool"),
        |i| {
            let (a, b) = (truthy(&i.value("a")), truthy(&i.value("b")));
            Ok(json!(match i.str("operation")?.as_str() {
                "and" => a && b,
                "or" => a || b,
                "xor" => a ^ b,
                "nand" => !(a && b),
                "nor" => !(a || b),
                other => return Err(Error::invalid_input(format!("unknown operation {other}"))),
            }))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.boolean.Not", "Not")
            .input("value", "bool", json!(false))
            .output("output", "bool"),
        |i| Ok(json!(!truthy(&i.value("value")))),
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.boolean.ConditionalSwitch", "Conditional Switch")
            .input("condition", "bool", json!(false))
            .input("if_true", "any", Value::Null)
            .input("if_false", "any", Value::Null)
            .output("output", "any"),
        |i| {
            Ok(if truthy(&i.value("condition")) {
                i.value("if_true")
            } else {
                i.value("if_false")
            })
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.boolean.IsNone", "Is None")
            .input("value", "any", Value::Null)
            .output("output", "bool"),
        |i| Ok(json!(i.value("value").is_null())),
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.boolean.IsIn", "Is In")
            .input("value", "any", Value::Null)
            .input("options", "list[any]", json!([]))
            .output("output", "bool"),
        |i| {
            let v = i.value("value");
            Ok(json!(i.list("options")?.iter().any(|o| equal(o, &v))))
        },
    );
    for (class, title, all) in [("All", "All", true), ("Some", "Some", false)] {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.boolean.{class}"), title)
                .input("values", "list[bool]", json!([]))
                .output("output", "bool"),
            move |i| {
                let v = i.list("values")?;
                Ok(json!(if all {
                    v.iter().all(truthy)
                } else {
                    v.iter().any(truthy)
                }))
            },
        );
    }
}
