//! Python's text forms of JSON values (`json.dumps`, and the list/dict layout `repr` shares),
//! where NodeTool prints values as text.

use serde_json::Value;

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
pub fn write_python_layout(
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
}
