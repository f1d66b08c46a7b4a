//! `nodetool.list.*`.

use std::cmp::Ordering;

use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::node::NodeSpec;
use nodetool_engine::registry::Registry;

use nodetool_engine::limits;

use super::{fn_node, py_slice_indices};

/// A string equal for two values exactly when `serde_json`'s `==` says they are (dict entries
/// in any order, `0.0 == -0.0`), so set operations hash instead of comparing every pair.
pub(crate) fn value_key(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => out.push_str("0.0"),
            Value::Array(a) => {
                out.push('[');
                for x in a {
                    write(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            Value::Object(m) => {
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (k, x) in entries {
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(x, out);
                    out.push(',');
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The values of `items` whose key is new to `seen`, first occurrence first.
fn push_unseen<'a>(
    items: impl Iterator<Item = &'a Value>,
    seen: &mut std::collections::HashSet<String>,
    out: &mut Vec<Value>,
) {
    for v in items {
        if seen.insert(value_key(v)) {
            out.push(v.clone());
        }
    }
}

/// Python's ordering for the JSON values a list holds: numbers with numbers, strings with
/// strings, booleans as numbers; anything else cannot be compared.
pub(crate) fn compare(a: &Value, b: &Value) -> Result<Ordering> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(x.partial_cmp(&y).unwrap_or(Ordering::Equal));
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare(p, q)?;
                if o != Ordering::Equal {
                    return Ok(o);
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => Err(Error::invalid_input(format!(
            "cannot compare {} with {}",
            nodetool_engine::types::type_of(a),
            nodetool_engine::types::type_of(b)
        ))),
    }
}

/// A list item as a Python number: bools are the ints 0 and 1 (`isinstance(True, int)`).
/// Returns the int value (if it is one) and the float value.
fn as_number(v: &Value) -> Option<(Option<i64>, f64)> {
    match v {
        Value::Bool(b) => Some((Some(i64::from(*b)), f64::from(u8::from(*b)))),
        Value::Number(n) => Some((n.as_i64().filter(|_| !n.is_f64()), n.as_f64()?)),
        _ => None,
    }
}

/// NodeTool's checks for the numeric aggregates: a non-empty list of numbers, else
/// `Cannot {what} empty list` / `All values must be numbers`.
fn numeric(values: &[Value], what: &str) -> Result<Vec<(Option<i64>, f64)>> {
    if values.is_empty() {
        return Err(Error::invalid_input(format!("Cannot {what} empty list")));
    }
    values
        .iter()
        .map(|v| {
            as_number(v).ok_or_else(|| {
                Error::invalid_input(format!(
                    "All values must be numbers, got {}",
                    nodetool_engine::types::type_of(v)
                ))
            })
        })
        .collect()
}

/// Python's `sum`: an int while every item is an int (or bool), else a float.
pub(crate) fn sum(values: &[Value]) -> Result<Value> {
    let mut int: Option<i64> = Some(0);
    let mut float = 0.0;
    for (i, f) in numeric(values, "sum")? {
        float += f;
        int = match (int, i) {
            (Some(acc), Some(x)) => acc.checked_add(x),
            _ => None,
        };
    }
    Ok(int.map_or_else(|| json!(float), |i| json!(i)))
}

fn finite_product(x: f64) -> Result<Value> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| Error::invalid_input("the product is not a finite number"))
}

pub fn register(r: &mut Registry) {
    let values_spec = |class: &str, title: &str, out: &str| {
        NodeSpec::new(format!("nodetool.list.{class}"), title)
            .input("values", "list[any]", json!([]))
            .output("output", out)
    };
    fn_node(r, values_spec("Length", "Length", "int"), |i| {
        Ok(json!(i.list("values")?.len()))
    });
    fn_node(r, values_spec("Sum", "Sum", "float"), |i| {
        sum(&i.list("values")?)
    });
    fn_node(r, values_spec("Average", "Average", "float"), |i| {
        let n = numeric(&i.list("values")?, "average")?;
        Ok(json!(
            n.iter().map(|(_, f)| f).sum::<f64>() / n.len() as f64
        ))
    });
    for (class, want, what) in [
        ("Minimum", Ordering::Less, "find minimum of"),
        ("Maximum", Ordering::Greater, "find maximum of"),
    ] {
        fn_node(r, values_spec(class, class, "float"), move |i| {
            let values = i.list("values")?;
            numeric(&values, what)?;
            // min()/max() return the first extreme item itself (an int stays an int).
            let mut best: Option<&Value> = None;
            for v in &values {
                if best.map_or(Ok(true), |b| compare(v, b).map(|o| o == want))? {
                    best = Some(v);
                }
            }
            best.cloned()
                .ok_or_else(|| Error::invalid_input("cannot take the extreme of an empty list"))
        });
    }
    fn_node(r, values_spec("Product", "Product", "float"), |i| {
        let values = i.list("values")?;
        let n = numeric(&values, "calculate product of")?;
        // reduce(x * y): a single item comes back as it is.
        if let [only] = values.as_slice() {
            return Ok(only.clone());
        }
        if n.iter().all(|(int, _)| int.is_some()) {
            let mut p: i64 = 1;
            for (int, _) in &n {
                p = p
                    .checked_mul(int.unwrap_or(1))
                    .ok_or_else(|| Error::invalid_input("product overflows"))?;
            }
            Ok(json!(p))
        } else {
            finite_product(n.iter().map(|(_, f)| f).product::<f64>())
        }
    });
    fn_node(r, values_spec("Dedupe", "Dedupe", "list[any]"), |i| {
        // First occurrence wins, so the output order is deterministic.
        let mut out: Vec<Value> = Vec::new();
        push_unseen(i.list("values")?.iter(), &mut Default::default(), &mut out);
        Ok(Value::Array(out))
    });
    fn_node(r, values_spec("Reverse", "Reverse", "list[any]"), |i| {
        let mut v = i.list("values")?;
        v.reverse();
        Ok(Value::Array(v))
    });
    fn_node(
        r,
        values_spec("Sort", "Sort", "list[any]").input("order", "str", json!("ascending")),
        |i| {
            let mut v = i.list("values")?;
            let mut err = None;
            v.sort_by(|a, b| {
                compare(a, b).unwrap_or_else(|e| {
                    err.get_or_insert(e);
                    Ordering::Equal
                })
            });
            if let Some(e) = err {
                return Err(e);
            }
            match i.str("order")?.as_str() {
                "descending" => v.reverse(),
                "ascending" | "" => {}
                other => {
                    return Err(Error::invalid_input(format!(
                        "order must be ascending or descending, got {other}"
                    )))
                }
            }
            Ok(Value::Array(v))
        },
    );
    fn_node(
        r,
        values_spec("Slice", "Slice", "list[any]")
            .input("start", "int", json!(0))
            .input("stop", "int", json!(0))
            .input("step", "int", json!(1)),
        |i| {
            let v = i.list("values")?;
            // As NodeTool: `values[start:stop:step]`, so the default stop of 0 selects nothing.
            let stop = i.opt_i64("stop")?;
            let idx = py_slice_indices(
                v.len(),
                i.opt_i64("start")?,
                stop,
                i.opt_i64("step")?.unwrap_or(1),
            );
            Ok(Value::Array(
                idx.into_iter().map(|k| v[k].clone()).collect(),
            ))
        },
    );
    fn_node(
        r,
        values_spec("GetElement", "Get Element", "any").input("index", "int", json!(0)),
        |i| {
            let v = i.list("values")?;
            let idx = i.i64("index")?;
            let k = if idx < 0 { idx + v.len() as i64 } else { idx };
            usize::try_from(k)
                .ok()
                .and_then(|k| v.get(k).cloned())
                .ok_or_else(|| {
                    Error::invalid_input(format!("index {idx} out of range for {} items", v.len()))
                })
        },
    );
    fn_node(
        r,
        values_spec("Append", "Append", "list[any]").input("value", "any", Value::Null),
        |i| {
            let mut v = i.list("values")?;
            v.push(i.value("value"));
            Ok(Value::Array(v))
        },
    );
    fn_node(
        r,
        values_spec("Extend", "Extend", "list[any]").input("other_values", "list[any]", json!([])),
        |i| {
            let mut v = i.list("values")?;
            v.extend(i.list("other_values")?);
            Ok(Value::Array(v))
        },
    );
    fn_node(
        r,
        values_spec("Flatten", "Flatten", "list[any]").input("max_depth", "int", json!(-1)),
        |i| {
            fn flat(v: Vec<Value>, depth: i64, out: &mut Vec<Value>) {
                for x in v {
                    match x {
                        Value::Array(inner) if depth != 0 => flat(inner, depth - 1, out),
                        other => out.push(other),
                    }
                }
            }
            let mut out = Vec::new();
            flat(i.list("values")?, i.i64("max_depth")?, &mut out);
            Ok(Value::Array(out))
        },
    );
    fn_node(
        r,
        values_spec("Chunk", "Chunk", "list[list[any]]").input("chunk_size", "int", json!(2)),
        |i| {
            let size = usize::try_from(i.i64("chunk_size")?)
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| Error::invalid_input("chunk_size must be positive"))?;
            Ok(Value::Array(
                i.list("values")?
                    .chunks(size)
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            ))
        },
    );
    for (class, title) in [
        ("Union", "Union"),
        ("Intersection", "Intersection"),
        ("Difference", "Difference"),
    ] {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.list.{class}"), title)
                .input("list1", "list[any]", json!([]))
                .input("list2", "list[any]", json!([]))
                .output("output", "list[any]"),
            move |i| {
                let (a, b) = (i.list("list1")?, i.list("list2")?);
                let mut out: Vec<Value> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let in_b: std::collections::HashSet<String> = b.iter().map(value_key).collect();
                match class {
                    "Union" => push_unseen(a.iter().chain(b.iter()), &mut seen, &mut out),
                    "Intersection" => push_unseen(
                        a.iter().filter(|v| in_b.contains(&value_key(v))),
                        &mut seen,
                        &mut out,
                    ),
                    _ => push_unseen(
                        a.iter().filter(|v| !in_b.contains(&value_key(v))),
                        &mut seen,
                        &mut out,
                    ),
                }
                Ok(Value::Array(out))
            },
        );
    }
    fn_node(
        r,
        NodeSpec::new("nodetool.list.Range", "Range")
            .input("start", "int", json!(0))
            .input("stop", "int", json!(0))
            .input("step", "int", json!(1))
            .output("output", "list[int]"),
        |i| {
            let (start, stop, step) = (i.i64("start")?, i.i64("stop")?, i.i64("step")?);
            if step == 0 {
                return Err(Error::invalid_input("step must not be 0"));
            }
            // In i128: `stop - start` of two i64 cannot overflow there.
            let (start_w, stop_w, step_w) = (start as i128, stop as i128, step as i128);
            let count = if step > 0 {
                (stop_w - start_w + step_w - 1) / step_w
            } else {
                (start_w - stop_w - step_w - 1) / -step_w
            }
            .max(0);
            limits::check_items("range", count as u128)?;
            // In i128 again: `k * step` may pass i64 even though every item lies between
            // start and stop.
            let out = (0..count)
                .map(|k| json!((start_w + k * step_w) as i64))
                .collect();
            Ok(Value::Array(out))
        },
    );
}
