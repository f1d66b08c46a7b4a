//! The template nodes that take dynamic inputs: `nodetool.text.FormatText` (nodetool-base),
//! `nodetool.text.Prompt` (its newer name in the TypeScript runtime, with `prompt` for
//! `template`) and `nodetool.text.Template` (`string`, with variables from its `values` dict
//! and from dynamic inputs; `{{ key }}` and `{key}` replaced by `str(value)` as nodetool-base
//! and the TypeScript node do; never Jinja2).
//!
//! Every variable is a dynamic property (a literal in `dynamic_properties`, or a wired input of
//! any name). As in the TypeScript runtime, each variable is also forwarded unchanged on an
//! output handle of its own name when an edge starts there (an image used in the text can feed
//! a node that wants the image itself).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::limits::{MAX_RUNAWAY_TEMPLATES, TEMPLATE_MEMORY_BYTES};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use crate::text::{normalize_format_template, python_str, render_until};

/// Renders on the blocking pool, never on an async worker: a template can loop for as long as
/// its fuel lasts, and the job's deadline and cancellation must still reach the runner. When
/// this future is dropped (the job was cancelled), the render is told to stop. At most one
/// render per CPU runs at once, so abandoned renders cannot pile up.
///
/// The render thread is charged to a [`TEMPLATE_MEMORY_BYTES`] budget: past it the allocator
/// parks that thread (see `nodetool_alloc`) and the node fails `TooLarge`, where otherwise a
/// string doubled in a loop would take the whole process down.
async fn render_off_thread(template: String, vars: Value) -> Result<String> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new(n))
    });
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let runaways = nodetool_alloc::parked();
    if runaways >= MAX_RUNAWAY_TEMPLATES {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "template rendering is off until nodetool restarts: {runaways} earlier renders \
                 ran past {} MiB of memory and still hold it",
                TEMPLATE_MEMORY_BYTES >> 20
            ),
        )
        .set_temporary(false)
        .with_operation("text.render"));
    }
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::unexpected("template slots closed"))?;
    // The slot is given back by whichever side ends the render: the thread when it returns,
    // the watcher below when the thread was parked (it never returns).
    let slot = Arc::new(std::sync::Mutex::new(Some(permit)));
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(stop.clone());
    let account = nodetool_alloc::Account::new(TEMPLATE_MEMORY_BYTES);
    let render = tokio::task::spawn_blocking({
        let (slot, account) = (slot.clone(), account.clone());
        move || {
            let result = {
                let _charged = nodetool_alloc::enter(&account);
                render_until(&template, &vars, &stop)
            };
            free_slot(&slot);
            result
        }
    });
    // Watched on a task of its own, so a render that trips after this future was dropped (the
    // job cancelled) still gives its slot back.
    let watcher = tokio::spawn(async move {
        tokio::pin!(render);
        loop {
            tokio::select! {
                joined = &mut render => return joined.map_err(|e| {
                    Error::unexpected(format!("template render ended abnormally: {e}"))
                })?,
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                    if account.tripped() {
                        free_slot(&slot);
                        return Err(Error::new(
                            ErrorKind::TooLarge,
                            format!(
                                "template error: the render needed more than {} MiB of memory \
                                 (a string or list doubled in a loop?)",
                                account.limit() >> 20
                            ),
                        )
                        .set_temporary(false)
                        .with_operation("text.render"));
                    }
                }
            }
        }
    });
    let rendered = watcher
        .await
        .map_err(|e| Error::unexpected(format!("template render ended abnormally: {e}")))?;
    // Setting the flag of a finished render is harmless.
    drop(guard);
    rendered
}

fn free_slot(slot: &std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>) {
    drop(
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// nodetool-base: lower-cased variable names, `{name}` placeholders.
    FormatText,
    /// TypeScript's FormatText successor.
    Prompt,
    /// `string` + `values` (and dynamic inputs).
    Template,
}

#[derive(Debug)]
struct TemplateNode {
    spec: NodeSpec,
    kind: Kind,
}

pub fn register(r: &mut Registry) {
    let nodes = [
        (
            NodeSpec::new("nodetool.text.FormatText", "Format Text")
                .input("template", "str", json!(""))
                .output("output", "str"),
            Kind::FormatText,
        ),
        (
            NodeSpec::new("nodetool.text.Prompt", "Prompt")
                .input("prompt", "str", json!(""))
                .output("output", "str"),
            Kind::Prompt,
        ),
        (
            NodeSpec::new("nodetool.text.Template", "Template")
                .input("string", "str", json!(""))
                .input("values", "any", json!({}))
                .output("output", "str"),
            Kind::Template,
        ),
    ];
    for (spec, kind) in nodes {
        r.register(Arc::new(TemplateNode {
            spec: spec.dynamic().dynamic_outputs(),
            kind,
        }));
    }
}

/// `{name}` → `{{ name }}` for each known variable (not inside `{{ }}`).
fn brace_placeholders(template: &str, names: &[&str]) -> String {
    let mut out = template.to_owned();
    for name in names {
        let single = format!("{{{name}}}");
        let mut rebuilt = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(&single) {
            let before = rest[..at].chars().last();
            let after = rest[at + single.len()..].chars().next();
            rebuilt.push_str(&rest[..at]);
            if before == Some('{') || after == Some('}') {
                rebuilt.push_str(&single);
            } else {
                rebuilt.push_str(&format!("{{{{ {name} }}}}"));
            }
            rest = &rest[at + single.len()..];
        }
        rebuilt.push_str(rest);
        out = rebuilt;
    }
    out
}

/// Replaces `{{ key }}` (any spacing inside) and `{key}` (not part of `{{ }}`) with `value`.
fn substitute(template: &str, key: &str, value: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    // Many placeholders times a long value: refuse before the text passes the cap.
    let room = |out: &String| {
        nodetool_engine::limits::check_text(
            "the substituted template",
            out.len() as u128 + value.len() as u128,
        )
    };
    let mut i = 0;
    let b = template.as_bytes();
    while i < b.len() {
        if template[i..].starts_with("{{") {
            let inner = template[i + 2..].trim_start_matches([' ', '\t', '\n', '\r']);
            if let Some(rest) = inner.strip_prefix(key) {
                let rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
                if let Some(after) = rest.strip_prefix("}}") {
                    room(&out)?;
                    out.push_str(value);
                    i = template.len() - after.len();
                    continue;
                }
            }
        }
        if b[i] == b'{' && (i == 0 || b[i - 1] != b'{') {
            if let Some(after) = template[i + 1..].strip_prefix(key) {
                if let Some(after) = after.strip_prefix('}') {
                    if !after.starts_with('}') {
                        room(&out)?;
                        out.push_str(value);
                        i = template.len() - after.len();
                        continue;
                    }
                }
            }
        }
        let ch = template[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    Ok(out)
}

impl TemplateNode {
    fn text_input(&self) -> &'static str {
        match self.kind {
            Kind::FormatText => "template",
            Kind::Prompt => "prompt",
            Kind::Template => "string",
        }
    }

    /// The variables: every input but the template (and, for Template, its `values` dict
    /// first, then the dynamic inputs over it).
    fn variables(&self, inputs: &NodeInputs) -> Map<String, Value> {
        let mut vars = Map::new();
        if self.kind == Kind::Template {
            match inputs.value("values") {
                Value::Object(m) => vars.extend(m),
                Value::Null => {}
                other => {
                    vars.insert("value".to_owned(), other);
                }
            }
        }
        for (k, v) in inputs.as_map() {
            if k == self.text_input() || (self.kind == Kind::Template && k == "values") {
                continue;
            }
            vars.insert(k.clone(), v.clone());
        }
        vars
    }
}

#[async_trait]
impl NodeImpl for TemplateNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let text = inputs.str(self.text_input())?;
        let vars = self.variables(inputs);
        let rendered = match self.kind {
            Kind::FormatText => {
                let lower: Map<String, Value> = vars
                    .iter()
                    .map(|(k, v)| (k.to_lowercase(), v.clone()))
                    .collect();
                render_off_thread(normalize_format_template(&text), Value::Object(lower)).await?
            }
            Kind::Prompt => {
                let names: Vec<&str> = vars.keys().map(String::as_str).collect();
                render_off_thread(
                    brace_placeholders(&text, &names),
                    Value::Object(vars.clone()),
                )
                .await?
            }
            // Plain substitution, as both NodeTool runtimes do it (recorded with the Python
            // original: Jinja2 statements come out as written); a placeholder without a value
            // stays as it is.
            Kind::Template => vars
                .iter()
                .try_fold(text, |acc, (k, v)| substitute(&acc, k, &python_str(v)))?,
        };
        for (name, value) in &vars {
            if name != "output" && out.is_wired(name) {
                out.emit(name, value.clone()).await?;
            }
        }
        out.emit("output", json!(rendered)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_substitutes_like_python() {
        assert_eq!(
            substitute(
                "Hi {{name}}, {{  name }}! {name} {{name}} {{ other }} {{{name}}}",
                "name",
                "Ann"
            )
            .unwrap(),
            "Hi Ann, Ann! Ann Ann {{ other }} {Ann}"
        );
        assert_eq!(
            substitute("{nam} {names} é{name}", "name", "x").unwrap(),
            "{nam} {names} éx"
        );
    }

    #[test]
    fn template_substitutes_every_variable_like_nodetool() {
        let vars = serde_json::json!({"name": "Ada", "n": 2, "flag": true});
        let Value::Object(vars) = vars else {
            panic!("an object")
        };
        let out = vars.iter().fold(
            "{{name}} {{ n }} {name} {{{name}}} {flag} {{body|upper}} {x}".to_owned(),
            |acc, (k, v)| substitute(&acc, k, &python_str(v)).unwrap(),
        );
        assert_eq!(out, "Ada 2 Ada {Ada} True {{body|upper}} {x}");
    }

    #[test]
    fn single_brace_placeholders_for_known_names_only() {
        assert_eq!(
            brace_placeholders("{a} {{a}} {b} {{ a }} {a}}", &["a"]),
            "{{ a }} {{a}} {b} {{ a }} {a}}"
        );
    }
}
