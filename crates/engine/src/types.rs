//! NodeTool's type names (`str`, `int`, `float`, `bool`, `list[T]`, `dict[K, V]`, `any`,
//! `image`, ...) and the few rules the engine needs: which output may feed which input, and
//! which JSON value fits a declared type.

use serde_json::Value;

/// The outer name of a type: `list[int]` → `list`.
fn base(t: &str) -> &str {
    let t = t.trim();
    let t = t
        .strip_prefix("Optional[")
        .map_or(t, |s| s.trim_end_matches(']'));
    t.split('[').next().unwrap_or(t).trim()
}

/// The element type of `list[T]` (`None` for a bare `list`).
fn list_element(t: &str) -> Option<&str> {
    let t = t.trim();
    let t = t
        .strip_prefix("Optional[")
        .map_or(t, |s| s.strip_suffix(']').unwrap_or(s));
    t.strip_prefix("list[")?.strip_suffix(']').map(str::trim)
}

fn is_any(t: &str) -> bool {
    matches!(base(t), "any" | "" | "Any" | "union" | "object")
}

fn is_asset(t: &str) -> bool {
    matches!(
        base(t),
        "image" | "audio" | "video" | "document" | "asset" | "dataframe" | "model_3d"
    )
}

/// Whether an output declared as `from` may be wired into an input declared as `to`.
///
/// Lenient where NodeTool is: `any` matches everything and `int`/`float` mix. Strict where it
/// is: a number or a list does not feed a `str`. Element types of containers are not compared,
/// except for NodeTool's "collect" rule: a non-list `T` may feed a `list[T]` input (the web
/// app's `isConnectable` accepts `image` → `list[image]` and `str` → `list[any]`).
pub fn compatible(from: &str, to: &str) -> bool {
    if is_any(from) || is_any(to) {
        return true;
    }
    let (f, t) = (base(from), base(to));
    if t == "list" && f != "list" {
        if let Some(elem) = list_element(to) {
            if compatible(from, elem) {
                return true;
            }
        }
    }
    f == t
        || (f == "int" && t == "float")
        || (f == "float" && t == "int")
        || (is_asset(f) && t == "asset")
        || (f == "asset" && is_asset(t))
}

/// Whether a literal JSON value fits a declared type. `null` always fits (optional inputs).
pub fn value_fits(value: &Value, declared: &str) -> bool {
    if value.is_null() || is_any(declared) {
        return true;
    }
    match base(declared) {
        "str" | "string" | "text" => value.is_string(),
        "int" => value.is_i64() || value.is_u64(),
        "float" | "number" => value.is_number(),
        "bool" => value.is_boolean(),
        "list" | "tuple" => value.is_array(),
        "dict" => value.is_object(),
        // Assets are refs (`{type, uri, ...}`); enums are strings; anything else is not checked.
        t if is_asset(t) => value.is_object(),
        "enum" => value.is_string(),
        _ => true,
    }
}

/// The `type` tags of NodeTool's typed values (`metadata/types.py` `BaseType` subclasses that
/// travel as JSON objects).
const TYPED_VALUES: &[&str] = &[
    "image",
    "audio",
    "video",
    "document",
    "text",
    "datetime",
    "date",
    "dataframe",
    "model_3d",
    "np_array",
    "color",
    "font",
    "folder",
    "asset",
    "file",
    "svg_element",
    "language_model",
    "image_model",
    "tts_model",
    "asr_model",
    "video_model",
    "embedding_model",
];

/// NodeTool's `output_type` for a value, as `output_update` reports it.
pub fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "none",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        // NodeTool's typed values (its `BaseType`s) report their own type; a plain dict is a dict.
        Value::Object(m) => match m.get("type").and_then(Value::as_str) {
            Some(t) => TYPED_VALUES
                .iter()
                .find(|k| **k == t)
                .copied()
                .unwrap_or("dict"),
            None => "dict",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compatibility_rules() {
        assert!(compatible("str", "str"));
        assert!(compatible("int", "float"));
        assert!(compatible("list[int]", "list[any]"));
        assert!(compatible("any", "image"));
        assert!(compatible("image", "any"));
        assert!(!compatible("str", "int"));
        assert!(!compatible("list[str]", "str"));
        assert!(!compatible("dict", "list"));
        // NodeTool's collect rule: T feeds list[T], not list[U], and a list is not collected.
        assert!(compatible("str", "list[any]"));
        assert!(compatible("image", "list[image]"));
        assert!(compatible("int", "Optional[list[float]]"));
        assert!(!compatible("str", "list[int]"));
        assert!(!compatible("str", "list"));
    }

    #[test]
    fn literal_values_are_checked() {
        assert!(value_fits(&json!("x"), "str"));
        assert!(value_fits(&json!(1), "float"));
        assert!(!value_fits(&json!(1.5), "int"));
        assert!(!value_fits(&json!("1"), "int"));
        assert!(value_fits(&Value::Null, "int"));
        assert_eq!(type_of(&json!([1])), "list");
        assert_eq!(type_of(&json!(1.0)), "float");
    }
}
