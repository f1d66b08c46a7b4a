//! `lib.json.*`: StringifyJSON, and [`dumps`], Python's `json.dumps` text that SaveJSON shares.

use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::node::{NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::fn_node;
use super::text::python_float;

/// The deepest nesting [`dumps`] prints (Python's recursion limit is about 1000; deeper data is
/// refused instead of overflowing the stack).
const MAX_DEPTH: usize = 512;

pub fn register(r: &mut Registry) {
    fn_node(
        r,
        NodeSpec::new("lib.json.StringifyJSON", "Stringify JSON")
            .input("data", "any", json!({}))
            .input("indent", "int", json!(2))
            .output("output", "str")
            .cacheable(),
        |i| Ok(json!(dumps(&i.value("data"), indent(i)?)?)),
    );
}

/// The `indent` input. NodeTool declares it `int` (default 2), so a null keeps the default,
/// as NodeTool does with a null property; a negative indent is Python's `" " * n == ""`
/// (newlines without indentation). More than 64 spaces is refused.
pub(crate) fn indent(i: &NodeInputs) -> Result<Option<usize>> {
    let n = i.opt_i64("indent")?.unwrap_or(2);
    if n > 64 {
        return Err(
            Error::invalid_input(format!("input `indent` must be at most 64, got {n}"))
                .with_context("input", "indent"),
        );
    }
    Ok(Some(usize::try_from(n.max(0)).unwrap_or(0)))
}

/// `json.dumps(value, indent=indent)` as Python prints it: ASCII only (`\uXXXX` escapes),
/// floats as `repr`, `", "`/`": "` separators without indent and `","` + newline with it.
pub fn dumps(value: &Value, indent: Option<usize>) -> Result<String> {
    let mut out = String::new();
    write(value, indent, 0, &mut out)?;
    Ok(out)
}

fn write(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(
            Error::invalid_input(format!("data is nested deeper than {MAX_DEPTH} levels"))
                .with_operation("json.dumps"),
        );
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                newline(out, depth + 1);
                write(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                newline(out, depth + 1);
                write_str(k, out);
                out.push_str(": ");
                write(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) if f.is_nan() => out.push_str("NaN"),
            Some(f) if f.is_infinite() => {
                out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Some(f) => out.push_str(&python_float(f)),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(s, out),
    }
    Ok(())
}

/// A JSON string with `ensure_ascii`: everything outside space..`~` escaped.
fn write_str(s: &str, out: &mut String) {
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
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_like_python() {
        let v = json!({"a": [1, 2.5, {}], "b": [], "é": "x\u{1F600}", "n": null, "t": true});
        assert_eq!(
            dumps(&v, None).unwrap(),
            r#"{"a": [1, 2.5, {}], "b": [], "\u00e9": "x\ud83d\ude00", "n": null, "t": true}"#
        );
        assert_eq!(
            dumps(&json!({"a": [1, {"b": 1e20}]}), Some(2)).unwrap(),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": 1e+20\n    }\n  ]\n}"
        );
        assert_eq!(dumps(&json!([1, 2]), Some(0)).unwrap(), "[\n1,\n2\n]");
        assert_eq!(
            dumps(&json!("q\"\u{7f}"), Some(2)).unwrap(),
            r#""q\"\u007f""#
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 2) {
            v = json!([v]);
        }
        assert!(dumps(&v, None).is_err());
    }
}
