//! Turns NodeTool's metadata (`catalog/nodetool-base.json`) into static Rust data
//! (`$OUT_DIR/catalog.rs`, included by `src/catalog.rs`), so no process parses 180 KB of JSON
//! or allocates hundreds of entries at start-up: a worker starts in a few milliseconds.

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

const SOURCE: &str = "catalog/nodetool-base.json";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={SOURCE}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(SOURCE)?)?;
    let package = str_field(&file, "package")?;
    let nodes = file
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or("`nodes` is not a list")?;
    let mut out = String::new();
    writeln!(out, "pub(crate) const PACKAGE: &str = {package:?};")?;
    writeln!(out, "pub(crate) static NODES: &[CatalogNode] = &[")?;
    for node in nodes {
        writeln!(
            out,
            "    CatalogNode {{ node_type: {:?}, title: {:?}, properties: {}, outputs: {}, \
             settings: {}, streaming: {}, dynamic: {} }},",
            str_field(node, "type")?,
            node.get("title")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            pairs(node, "properties")?,
            pairs(node, "outputs")?,
            strings(node, "settings")?,
            node.get("streaming")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            node.get("dynamic")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        )?;
    }
    writeln!(out, "];")?;
    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("catalog.rs");
    std::fs::write(dest, out)?;
    Ok(())
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{SOURCE}: `{name}` is not a string in {v}"))
}

/// `[[name, type], ...]` as a `&[(&str, &str)]` literal.
fn pairs(node: &Value, name: &str) -> Result<String, String> {
    let mut out = String::from("&[");
    for pair in node
        .get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(a), Value::String(b)]) => {
                out.push_str(&format!("({a:?}, {b:?}), "))
            }
            _ => return Err(format!("{SOURCE}: `{name}` holds {pair}, not [name, type]")),
        }
    }
    out.push(']');
    Ok(out)
}

/// `[string, ...]` as a `&[&str]` literal.
fn strings(node: &Value, name: &str) -> Result<String, String> {
    let mut out = String::from("&[");
    for s in node
        .get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = s
            .as_str()
            .ok_or_else(|| format!("{SOURCE}: `{name}` holds {s}, not a string"))?;
        out.push_str(&format!("{s:?}, "));
    }
    out.push(']');
    Ok(out)
}
