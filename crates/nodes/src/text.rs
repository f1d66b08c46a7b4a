//! `nodetool.text.*`: string nodes, and FormatText / Template rendered with minijinja
//! (Jinja2 syntax). Non-string values print as Python's `str()` prints them (`True`, `None`,
//! `['a', 1]`, `{'k': 'v'}`, `1e+20`), as they do in NodeTool's Jinja2 and `str.join`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::limits;

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, Inbox, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::{fn_node, py_slice_indices};

type StrFn = fn(&str) -> String;
type StrPred = fn(&str, &str) -> bool;

pub fn register(r: &mut Registry) {
    fn_node(
        r,
        NodeSpec::new("nodetool.text.Concat", "Concatenate Text")
            .input("a", "str", json!(""))
            .input("b", "str", json!(""))
            .output("output", "str"),
        |i| Ok(json!(i.str("a")? + &i.str("b")?)),
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.text.Join", "Join")
            .input("strings", "list[any]", json!([]))
            .input("separator", "str", json!(""))
            .output("output", "str"),
        |i| {
            // separator.join(str(s) for s in strings)
            let parts: Vec<String> = i.list("strings")?.iter().map(python_str).collect();
            Ok(json!(parts.join(&i.str("separator")?)))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.text.Split", "Split Text")
            .input("text", "str", json!(""))
            .input("delimiter", "str", json!(","))
            .output("output", "list[str]"),
        |i| {
            let text = i.str("text")?;
            let delim = i.str("delimiter")?;
            if delim.is_empty() {
                return Err(Error::invalid_input("Split: empty delimiter"));
            }
            Ok(json!(text.split(delim.as_str()).collect::<Vec<_>>()))
        },
    );
    fn_node(
        r,
        NodeSpec::new("nodetool.text.Replace", "Replace Text")
            .input("text", "str", json!(""))
            .input("old", "str", json!(""))
            .input("new", "str", json!(""))
            .output("output", "str"),
        |i| {
            let (text, old, new) = (i.str("text")?, i.str("old")?, i.str("new")?);
            // Python's str.replace with "" inserts between every character; Rust's does too.
            Ok(json!(text.replace(old.as_str(), &new)))
        },
    );
    let unary: [(&str, &str, StrFn); 4] = [
        ("ToUppercase", "To Uppercase", |s| s.to_uppercase()),
        ("ToLowercase", "To Lowercase", |s| s.to_lowercase()),
        ("Capitalize", "Capitalize", capitalize),
        ("Strip", "Strip", |s| s.trim().to_owned()),
    ];
    for (class, title, f) in unary {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.text.{class}"), title)
                .input("text", "str", json!(""))
                .output("output", "str"),
            move |i| Ok(json!(f(&i.str("text")?))),
        );
    }
    fn_node(
        r,
        NodeSpec::new("nodetool.text.Length", "Length")
            .input("text", "str", json!(""))
            .output("output", "int"),
        |i| Ok(json!(i.str("text")?.chars().count())),
    );
    let preds: [(&str, &str, &str, StrPred); 3] = [
        ("Contains", "Contains", "substring", |t, s| t.contains(s)),
        ("StartsWith", "Starts With", "prefix", |t, s| {
            t.starts_with(s)
        }),
        ("EndsWith", "Ends With", "suffix", |t, s| t.ends_with(s)),
    ];
    for (class, title, arg, f) in preds {
        fn_node(
            r,
            NodeSpec::new(format!("nodetool.text.{class}"), title)
                .input("text", "str", json!(""))
                .input(arg, "str", json!(""))
                .output("output", "bool"),
            move |i| Ok(json!(f(&i.str("text")?, &i.str(arg)?))),
        );
    }
    fn_node(
        r,
        NodeSpec::new("nodetool.text.Slice", "Slice Text")
            .input("text", "str", json!(""))
            .input("start", "int", Value::Null)
            .input("stop", "int", Value::Null)
            .input("step", "int", json!(1))
            .output("output", "str"),
        |i| {
            let chars: Vec<char> = i.str("text")?.chars().collect();
            let idx = py_slice_indices(
                chars.len(),
                i.opt_i64("start")?,
                i.opt_i64("stop")?,
                i.opt_i64("step")?.unwrap_or(1),
            );
            Ok(json!(idx.into_iter().map(|k| chars[k]).collect::<String>()))
        },
    );
    r.register(std::sync::Arc::new(CollectText {
        spec: NodeSpec::new("nodetool.text.Collect", "Collect")
            .input("input_item", "str", json!(""))
            .input("separator", "str", json!(""))
            .output("output", "str")
            .consumes_stream(),
    }));
}

/// `nodetool.text.Collect`: joins every streamed `input_item` with `separator` once the stream
/// ends. NodeTool's Python version drops the first item of the stream; this one keeps every
/// item. Non-string items print as Python's `str()` prints them.
#[derive(Debug)]
struct CollectText {
    spec: NodeSpec,
}

#[async_trait::async_trait]
impl NodeImpl for CollectText {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        out.emit("output", json!(i.text("input_item"))).await
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        if inbox.handle_index("input_item").is_none() {
            return self.process(ctx, props, out).await;
        }
        // A wired separator is read once, before the items.
        let separator = match inbox.handle_index("separator") {
            Some(_) => inbox
                .recv("separator")
                .await?
                .map_or_else(String::new, |v| python_str(&v)),
            None => props.str("separator")?,
        };
        let mut items = Vec::new();
        let mut budget = nodetool_engine::limits::Budget::new();
        while let Some(item) = inbox.recv("input_item").await? {
            let text = python_str(&item);
            budget.add_counts("the collected text", 1, text.len() + separator.len())?;
            items.push(text);
        }
        out.emit("output", json!(items.join(&separator))).await
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + &chars.as_str().to_lowercase(),
        None => String::new(),
    }
}

/// Longest text one render may produce (the engine's text cap).
pub const MAX_RENDER_BYTES: usize = limits::MAX_TEXT_BYTES;

/// Renders a Jinja2 template with `vars`. Undefined variables print as empty, as in Jinja2.
/// Bounded: at most [`limits::TEMPLATE_FUEL`] instructions and [`limits::MAX_TEXT_BYTES`] of
/// output.
pub fn render(template: &str, vars: &Value) -> Result<String> {
    render_until(template, vars, &Arc::new(AtomicBool::new(false)))
}

/// [`render`] that stops early (as `Cancelled`) once `stop` is set: checked at every output
/// write and every step of a `range()` loop; loops that do neither run out of fuel.
pub fn render_until(template: &str, vars: &Value, stop: &Arc<AtomicBool>) -> Result<String> {
    render_with_fuel(template, vars, stop, limits::TEMPLATE_FUEL)
}

fn render_with_fuel(
    template: &str,
    vars: &Value,
    stop: &Arc<AtomicBool>,
    fuel: u64,
) -> Result<String> {
    let fail = |e: minijinja::Error| {
        let kind = match e.kind() {
            minijinja::ErrorKind::OutOfFuel => ErrorKind::TooLarge,
            _ => ErrorKind::InvalidInput,
        };
        let detail = match e.kind() {
            minijinja::ErrorKind::OutOfFuel => format!(
                "template error: the template ran more than {fuel} instructions (a loop too big?)"
            ),
            _ => format!("template error: {e}"),
        };
        Error::new(kind, detail).with_operation("text.render")
    };
    let mut env = minijinja::Environment::new();
    env.set_formatter(python_formatter);
    env.add_filter("truncate", truncate_filter);
    env.set_fuel(Some(fuel));
    let range_flag = stop.clone();
    env.add_function(
        "range",
        move |lower: isize, upper: Option<isize>, step: Option<isize>| {
            let inner = minijinja::functions::range(lower, upper, step)?;
            let stop = range_flag.clone();
            Ok::<_, minijinja::Error>(minijinja::Value::make_object_iterable(
                inner,
                move |v| match v.try_iter() {
                    Ok(it) => {
                        let stop = stop.clone();
                        Box::new(it.take_while(move |_| !stop.load(Ordering::Relaxed)))
                    }
                    Err(_) => Box::new(std::iter::empty()),
                },
            ))
        },
    );
    let tmpl = env.template_from_str(template).map_err(fail)?;
    let mut out = CappedWriter {
        buf: Vec::new(),
        stop,
    };
    let result = tmpl
        .render_captured_to(minijinja::Value::from_serialize(vars), &mut out)
        .map(drop);
    if stop.load(Ordering::Relaxed) {
        return Err(
            Error::new(ErrorKind::Cancelled, "template rendering stopped")
                .with_operation("text.render"),
        );
    }
    if out.buf.len() > limits::MAX_TEXT_BYTES {
        return Err(
            limits::check_text("the rendered template", out.buf.len() as u128)
                .err()
                .unwrap_or_else(|| Error::unexpected("output cap"))
                .with_operation("text.render"),
        );
    }
    result.map_err(fail)?;
    String::from_utf8(out.buf).map_err(|e| {
        Error::unexpected(format!("template output is not UTF-8: {e}"))
            .with_operation("text.render")
    })
}

/// The render's output: refuses to grow past the text cap, and stops once the caller's flag
/// is set.
struct CappedWriter<'a> {
    buf: Vec<u8>,
    stop: &'a AtomicBool,
}

impl std::io::Write for CappedWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped"));
        }
        if self.buf.len() + data.len() > limits::MAX_TEXT_BYTES {
            // Marks the overflow for the caller, which reports it as TooLarge.
            self.buf.resize(limits::MAX_TEXT_BYTES + 1, 0);
            return Err(std::io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Jinja2's `truncate(length=255, killwords=False, end='...', leeway=5)`: text up to
/// `length + leeway` characters is kept; longer text is cut to `length - len(end)` characters
/// (at the last space unless `killwords`) and `end` appended.
fn truncate_filter(
    value: String,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
    leeway: Option<usize>,
) -> std::result::Result<String, minijinja::Error> {
    let length = length.unwrap_or(255);
    let end = end.unwrap_or_else(|| "...".to_owned());
    let end_len = end.chars().count();
    if length < end_len {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("truncate: length {length} is shorter than the end marker {end:?}"),
        ));
    }
    if value.chars().count() <= length + leeway.unwrap_or(5) {
        return Ok(value);
    }
    let head: String = value.chars().take(length - end_len).collect();
    let head = if killwords.unwrap_or(false) {
        head
    } else {
        head.rsplit_once(' ')
            .map_or(head.clone(), |(h, _)| h.to_owned())
    };
    Ok(head + &end)
}

/// Prints `{{ value }}` as Jinja2 does: through Python's `str()`. Strings, ints and undefined
/// keep minijinja's own printing.
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Seq | ValueKind::Map => {}
        ValueKind::Number if !value.is_integer() => {}
        _ => return minijinja::escape_formatter(out, state, value),
    }
    let json = serde_json::to_value(value).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
    })?;
    out.write_str(&python_str(&json))?;
    Ok(())
}

/// Python's `str(value)` for a JSON value: strings as they are, everything else as `repr`.
pub(crate) fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            python_repr(other, &mut out);
            out
        }
    }
}

fn python_repr(v: &Value, out: &mut String) {
    super::write_python_layout(v, out, repr_scalar, python_str_repr);
}

fn repr_scalar(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => out.push_str(&python_float(f)),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => python_str_repr(s, out),
        // Containers never reach here (the layout handles them); print them anyway.
        other => python_repr(other, out),
    }
}

/// `repr(str)`: single quotes unless the text has a single quote and no double quote.
fn python_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// `repr(float)`: the shortest round-trip digits, in exponent form below 1e-4 and from 1e16.
pub(crate) fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let mut fixed = format!("{f}");
        if !fixed.contains('.') {
            fixed.push_str(".0");
        }
        fixed
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// NodeTool's FormatText quirks, kept because workflows rely on them: a `{name}` single-brace
/// placeholder means `{{ name }}`, and the variable name inside `{{ }}` is lower-cased.
pub fn normalize_format_template(template: &str) -> String {
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '{' && matches!(next, Some('{') | Some('%') | Some('#')) {
            let close = match next {
                Some('{') => "}}",
                Some('%') => "%}",
                _ => "#}",
            };
            let rest: String = chars[i + 2..].iter().collect();
            let end = rest.find(close).map_or(rest.len(), |e| e);
            let inner = &rest[..end];
            out.push(c);
            out.push(next.unwrap_or('{'));
            if next == Some('{') {
                out.push_str(&lowercase_leading_identifier(inner));
            } else {
                out.push_str(inner);
            }
            if end < rest.len() {
                out.push_str(close);
            }
            i += 2 + inner.chars().count() + if end < rest.len() { 2 } else { 0 };
            continue;
        }
        if c == '{' {
            let ident: String = chars[i + 1..]
                .iter()
                .take_while(|ch| ch.is_alphanumeric() || **ch == '_')
                .collect();
            let after = chars.get(i + 1 + ident.chars().count()).copied();
            if !ident.is_empty()
                && after == Some('}')
                && !ident.starts_with(|ch: char| ch.is_ascii_digit())
            {
                out.push_str("{{ ");
                out.push_str(&ident.to_lowercase());
                out.push_str(" }}");
                i += ident.chars().count() + 2;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn lowercase_leading_identifier(inner: &str) -> String {
    let trimmed = inner.trim_start();
    let lead = inner.len() - trimmed.len();
    let ident_len = trimmed
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(trimmed.len());
    format!(
        "{}{}{}",
        &inner[..lead],
        trimmed[..ident_len].to_lowercase(),
        &trimmed[ident_len..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_python_str() {
        assert_eq!(
            python_str(&json!(["a", 1, null, true, 2.5, {"k": "it's"}])),
            r#"['a', 1, None, True, 2.5, {'k': "it's"}]"#
        );
        assert_eq!(python_float(1e20), "1e+20");
        assert_eq!(python_float(1.5e-5), "1.5e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(-0.0), "-0.0");
        assert_eq!(python_float(1234567890123456.0), "1234567890123456.0");
        assert_eq!(
            render(
                "{{ a }}|{{ b }}|{{ c }}|{{ d }}|{{ e }}|{{ nope }}",
                &json!({"a": true, "b": null, "c": [1, "x"], "d": 1e20, "e": "s"})
            )
            .unwrap(),
            "True|None|[1, 'x']|1e+20|s|"
        );
    }

    // Found while writing the template_render fuzz target: templates are user input, and these
    // ran for hours (10^10 loop iterations) or returned 100 MB before renders were bounded.
    #[test]
    fn loops_run_out_of_fuel_and_stop_when_told() {
        let stop = Arc::new(AtomicBool::new(false));
        // Nested loops over data (no range, no output): only the fuel ends them.
        let xs: Vec<i64> = (0..2000).collect();
        let e = render_with_fuel(
            "{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}",
            &json!({"xs": xs}),
            &stop,
            1_000_000,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        assert!(e.message().contains("1000000 instructions"), "{e}");
        // Enough fuel: the same shape, smaller, renders.
        let out = render_with_fuel(
            "{% for a in xs %}{% for b in xs %}.{% endfor %}{% endfor %}",
            &json!({"xs": [1, 2]}),
            &stop,
            1_000_000,
        )
        .unwrap();
        assert_eq!(out, "....");
        // A set flag stops a range loop that writes nothing.
        stop.store(true, Ordering::Relaxed);
        let e = render_until(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            &json!({}),
            &stop,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    }

    #[test]
    fn truncate_matches_jinja2() {
        let long = "The quick brown fox jumps over the lazy dog".to_owned();
        assert_eq!(
            truncate_filter(long.clone(), Some(20), None, None, None).unwrap(),
            "The quick brown..."
        );
        assert_eq!(
            truncate_filter(long.clone(), Some(20), Some(true), None, None).unwrap(),
            "The quick brown f..."
        );
        assert_eq!(
            truncate_filter(long.clone(), Some(40), None, None, None).unwrap(),
            long
        );
        assert!(truncate_filter(long, Some(2), None, None, None).is_err());
    }

    #[test]
    fn format_template_quirks() {
        assert_eq!(
            normalize_format_template("{{ Index }}:{item} {% if x %}{{X|upper}}{% endif %}"),
            "{{ index }}:{{ item }} {% if x %}{{x|upper}}{% endif %}"
        );
        assert_eq!(
            normalize_format_template("{ not a var } {1}"),
            "{ not a var } {1}"
        );
        assert_eq!(
            render(
                &normalize_format_template("{Name}-{{ n }}"),
                &json!({"name": "a", "n": 2})
            )
            .unwrap(),
            "a-2"
        );
    }
}
