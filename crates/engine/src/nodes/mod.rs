//! The built-in node library, one module per NodeTool namespace. Type and property names are
//! NodeTool's (nodetool-base), so workflows saved by NodeTool run unchanged.

use std::sync::Arc;

use serde_json::Value;

use nodetool_core::Result;

use crate::node::{FnNode, NodeInputs, NodeSpec};
use crate::registry::Registry;

pub mod asset;
pub mod asset_load;
pub mod base;
pub mod boolean;
pub mod constant;
pub mod control;
pub mod dictionary;
pub mod image;
pub mod io;
pub mod list;
pub mod math;
pub mod test;
pub mod text;

/// Registers every built-in node type.
pub fn register_all(r: &mut Registry) {
    constant::register(r);
    io::register(r);
    text::register(r);
    list::register(r);
    dictionary::register(r);
    boolean::register(r);
    math::register(r);
    control::register(r);
    base::register(r);
    image::register(r);
    asset::register(r);
    asset_load::register(r);
    test::register(r);
}

/// Registers a one-output function node.
pub(crate) fn fn_node(
    r: &mut Registry,
    spec: NodeSpec,
    f: impl Fn(&NodeInputs) -> Result<Value> + Send + Sync + 'static,
) {
    r.register(Arc::new(FnNode::new(spec, f)));
}

/// `json.dumps(value)` as Python prints it: `", "` and `": "` separators, non-ASCII escaped.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_py(v, &mut out);
    out
}

fn write_py(v: &Value, out: &mut String) {
    write_python_layout(v, out, json_scalar, write_py_str);
}

fn json_scalar(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => write_py_str(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// Python's layout of lists and dicts (`[a, b]`, `{k: v}`, `", "` and `": "` separators), with
/// `scalar` printing every non-container value and `key` every dict key: `json.dumps` and
/// `repr` differ only there.
pub(crate) fn write_python_layout(
    v: &Value,
    out: &mut String,
    scalar: fn(&Value, &mut String),
    key: fn(&str, &mut String),
) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_layout(item, out, scalar, key);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                key(k, out);
                out.push_str(": ");
                write_python_layout(item, out, scalar, key);
            }
            out.push('}');
        }
        other => scalar(other, out),
    }
}

fn write_py_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `seq[start:stop:step]` index selection for a sequence of `len` items.
pub(crate) fn py_slice_indices(
    len: usize,
    start: Option<i64>,
    stop: Option<i64>,
    step: i64,
) -> Vec<usize> {
    let len = len as i64;
    let step = if step == 0 { 1 } else { step };
    let clamp = |i: i64, lo: i64, hi: i64| i.max(lo).min(hi);
    let norm = |i: i64| if i < 0 { i + len } else { i };
    let mut out = Vec::new();
    if step > 0 {
        let s = clamp(start.map_or(0, norm), 0, len);
        let e = clamp(stop.map_or(len, norm), 0, len);
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let s = clamp(start.map_or(len - 1, norm), -1, len - 1);
        let e = clamp(stop.map_or(-1, norm), -1, len - 1);
        let e = if stop.is_some_and(|x| x < -len) {
            -1
        } else {
            e
        };
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_json_matches_json_dumps() {
        assert_eq!(
            python_json(&json!({"a": 1, "b": [true, null, 1.5], "c": "é\"\n"})),
            r#"{"a": 1, "b": [true, null, 1.5], "c": "\u00e9\"\n"}"#
        );
    }

    #[test]
    fn slices_like_python() {
        assert_eq!(py_slice_indices(5, Some(0), Some(3), 1), vec![0, 1, 2]);
        assert_eq!(py_slice_indices(5, Some(-2), None, 1), vec![3, 4]);
        assert_eq!(py_slice_indices(5, None, None, -2), vec![4, 2, 0]);
        assert_eq!(py_slice_indices(3, Some(10), None, 1), Vec::<usize>::new());
    }
}
