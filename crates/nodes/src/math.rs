//! `nodetool.math.*`: arithmetic on numbers, int-preserving as in Python. Defaults are
//! NodeTool's floats (`a`, `b`, `base`, `x` 0.0; divisors and `exponent` 1.0), so an unset input
//! makes the result a float, as `5 + 0.0` is in Python.

use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::node::{NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::fn_node;

fn num(i: &NodeInputs, name: &str) -> Result<Value> {
    match i.get(name) {
        None => Ok(json!(0.0)),
        Some(v @ Value::Number(_)) => Ok(v.clone()),
        Some(v) => Err(Error::invalid_input(format!(
            "input `{name}` must be a number, got {}",
            nodetool_engine::types::type_of(v)
        ))),
    }
}

fn float(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn finite(x: f64) -> Result<Value> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| Error::invalid_input("the result is not a finite number"))
}

type IntOp = fn(i64, i64) -> Option<i64>;
type FloatOp = fn(f64, f64) -> f64;

pub fn register(r: &mut Registry) {
    let binary: [(&str, &str, IntOp, FloatOp); 3] = [
        ("Add", "Add", i64::checked_add, |a, b| a + b),
        ("Subtract", "Subtract", i64::checked_sub, |a, b| a - b),
        ("Multiply", "Multiply", i64::checked_mul, |a, b| a * b),
    ];
    for (class, title, int_op, float_op) in binary {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.math.{class}"), title)
                .input("a", "float", json!(0.0))
                .input("b", "float", json!(0.0))
                .output("output", "float"),
            move |i| {
                let (a, b) = (num(i, "a")?, num(i, "b")?);
                if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                    if let Some(z) = int_op(x, y) {
                        return Ok(json!(z));
                    }
                }
                finite(float_op(float(&a), float(&b)))
            },
        );
    }
    fn_node(
        r,
        NodeSpec::new("nodetool.math.Divide", "Divide")
            .input("a", "float", json!(0.0))
            .input("b", "float", json!(1.0))
            .output("output", "float"),
        |i| {
            let (a, b) = (float(&num(i, "a")?), float(&num(i, "b")?));
            if b == 0.0 {
                return Err(Error::invalid_input("division by zero"));
            }
            finite(a / b)
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.math.Modulus", "Modulus")
            .input("a", "float", json!(0.0))
            .input("b", "float", json!(1.0))
            .output("output", "float"),
        |i| {
            let (a, b) = (num(i, "a")?, num(i, "b")?);
            if float(&b) == 0.0 {
                return Err(Error::invalid_input("modulo by zero"));
            }
            if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                // Python's % takes the sign of the divisor.
                return Ok(json!(
                    x.rem_euclid(y) + if y < 0 && x.rem_euclid(y) != 0 { y } else { 0 }
                ));
            }
            let (x, y) = (float(&a), float(&b));
            finite(x - y * (x / y).floor())
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.math.Power", "Power")
            .input("base", "float", json!(0.0))
            .input("exponent", "float", json!(1.0))
            .output("output", "float"),
        |i| {
            // math.pow: always a float, even for two ints (2 ** 10 -> 1024.0).
            let (b, e) = (num(i, "base")?, num(i, "exponent")?);
            finite(float(&b).powf(float(&e)))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.math.Sqrt", "Sqrt")
            .input("x", "float", json!(0.0))
            .output("output", "float"),
        |i| {
            let x = float(&num(i, "x")?);
            if x < 0.0 {
                return Err(Error::invalid_input("square root of a negative number"));
            }
            finite(x.sqrt())
        },
    );
}
