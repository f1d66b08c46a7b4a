//! `nodetool.generators.{ListGenerator, DataGenerator, StructuredOutputGenerator,
//! ChartGenerator}`. The list and data generators stream: each item (row) goes downstream as
//! soon as its closing tag (line) has arrived from the model.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, Result};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec, Preflight};
use nodetool_engine::registry::Registry;
use nodetool_engine::ProcessingContext;
use nodetool_providers::{ChatRequest, Message, ModelKind, ResponseFormat, StreamItem};

use super::agents::answer;
use super::{
    chat_stream, check_model, dynamic_output_schema, extract_json_object, model_of, post_chunk,
};

fn empty_model() -> Value {
    json!({"type": "language_model", "provider": "empty", "id": "", "name": ""})
}

pub fn register(r: &mut Registry) {
    r.register(Arc::new(ListGenerator {
        spec: NodeSpec::new("nodetool.generators.ListGenerator", "List Generator")
            .input("model", "language_model", empty_model())
            .input("prompt", "str", json!(""))
            .input("input_text", "str", json!(""))
            .input("max_tokens", "int", json!(4096))
            .output("item", "str")
            .output("index", "int")
            .streaming(),
    }));
    r.register(Arc::new(DataGenerator {
        spec: NodeSpec::new("nodetool.generators.DataGenerator", "Data Generator")
            .input("model", "language_model", empty_model())
            .input("prompt", "str", json!(""))
            .input("input_text", "str", json!(""))
            .input("max_tokens", "int", json!(4096))
            .input(
                "columns",
                "record_type",
                json!({"type": "record_type", "columns": []}),
            )
            .output("record", "dict")
            .output("dataframe", "dataframe")
            .output("index", "int")
            // Older saved workflows (the bundled Data Generator example) read the table here.
            .output("output", "dataframe")
            .streaming(),
    }));
    r.register(Arc::new(StructuredOutputGenerator {
        spec: NodeSpec::new(
            "nodetool.generators.StructuredOutputGenerator",
            "Structured Output Generator",
        )
        .input("system_prompt", "str", json!(STRUCTURED_SYSTEM))
        .input("model", "language_model", empty_model())
        .input("instructions", "str", json!(""))
        .input("context", "str", json!(""))
        .input("max_tokens", "int", json!(4096)),
    }));
    r.register(Arc::new(ChartGenerator {
        spec: NodeSpec::new("nodetool.generators.ChartGenerator", "Chart Generator")
            .input("model", "language_model", empty_model())
            .input("prompt", "str", json!(""))
            .input(
                "data",
                "dataframe",
                json!({"type": "dataframe", "uri": "", "asset_id": null, "data": null}),
            )
            .input("max_tokens", "int", json!(4096))
            .output("output", "plotly_config"),
    }));
}

const LIST_SYSTEM: &str = "You generate lists. If the user asks for a number of items, generate \
exactly that many. Wrap every item in <LIST_ITEM></LIST_ITEM> tags; an item may span lines.\n\
Example:\nUser: 3 movie titles\nAssistant:\n<LIST_ITEM>The Dark Knight</LIST_ITEM>\n\
<LIST_ITEM>Inception</LIST_ITEM>\n<LIST_ITEM>The Matrix</LIST_ITEM>";

const STRUCTURED_SYSTEM: &str = "You generate structured data as JSON. Produce one JSON object that \
matches <JSON_SCHEMA>, following <INSTRUCTIONS> and using <CONTEXT>. Answer with one fenced ```json \
block holding only that object. Invent plausible, consistent values where none are given.";

fn max_tokens(inputs: &NodeInputs) -> Result<Option<u32>> {
    Ok(inputs
        .opt_i64("max_tokens")?
        .filter(|n| *n > 0)
        .map(|n| n.min(u32::MAX as i64) as u32))
}

fn prompt_with_input(inputs: &NodeInputs) -> String {
    let prompt = inputs.text("prompt");
    let input = inputs.text("input_text");
    match (prompt.is_empty(), input.is_empty()) {
        (_, true) => prompt,
        (true, false) => input,
        (false, false) => format!("{prompt}\n\n{input}"),
    }
}

/// Cuts complete `<LIST_ITEM>…</LIST_ITEM>` items off the front of `buffer`, cleaned as NodeTool
/// cleans them (no `**`, whitespace collapsed).
pub(crate) fn take_items(buffer: &mut String) -> Vec<String> {
    const OPEN: &str = "<LIST_ITEM>";
    const CLOSE: &str = "</LIST_ITEM>";
    let mut items = Vec::new();
    loop {
        let Some(start) = buffer.find(OPEN) else {
            // Keep a possible partial tag at the end; drop text between items.
            let keep = buffer.rfind('<').map_or(buffer.len(), |i| i);
            buffer.drain(..keep);
            break;
        };
        let Some(end_rel) = buffer[start + OPEN.len()..].find(CLOSE) else {
            buffer.drain(..start);
            break;
        };
        let end = start + OPEN.len() + end_rel;
        let item = buffer[start + OPEN.len()..end].replace("**", "");
        let item = item.split_whitespace().collect::<Vec<_>>().join(" ");
        items.push(item);
        buffer.drain(..end + CLOSE.len());
    }
    items
}

#[derive(Debug)]
struct ListGenerator {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for ListGenerator {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        check_model(node, "model", ModelKind::Language)
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let model = model_of(inputs, "model")?;
        let mut request = ChatRequest::new(
            model.id.clone(),
            vec![
                Message::system(LIST_SYSTEM),
                Message::user(prompt_with_input(inputs)),
            ],
        );
        request.max_tokens = max_tokens(inputs)?;
        let mut stream = chat_stream(ctx, &model, request).await?;
        let mut buffer = String::new();
        let mut index = 0i64;
        while let Some(item) = stream.next().await {
            if let StreamItem::Text { text } = item? {
                post_chunk(ctx, &text, false, false);
                buffer.push_str(&text);
                for item in take_items(&mut buffer) {
                    out.emit("item", json!(item)).await?;
                    out.emit("index", json!(index)).await?;
                    index += 1;
                }
            }
        }
        post_chunk(ctx, "", true, false);
        if index == 0 {
            return Err(Error::invalid_input(
                "ListGenerator did not find any <LIST_ITEM> tags in the response. \
                 Ensure the output is wrapped in <LIST_ITEM>...</LIST_ITEM> tags.",
            )
            .with_operation("generators.list"));
        }
        Ok(())
    }
}

/// `(name, data_type)` of a `record_type`'s columns.
fn columns(inputs: &NodeInputs) -> Vec<(String, String)> {
    inputs
        .value("columns")
        .get("columns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    let name = c.get("name").and_then(Value::as_str)?.to_owned();
                    let ty = c
                        .get("data_type")
                        .and_then(Value::as_str)
                        .unwrap_or("string")
                        .to_owned();
                    Some((name, ty))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A markdown table cell as the column's type (`None`, `null`, `n/a` and empty read as null).
fn convert(value: &str, data_type: &str) -> Value {
    let v = value.trim();
    if v.is_empty() || ["none", "null", "n/a"].contains(&v.to_ascii_lowercase().as_str()) {
        return Value::Null;
    }
    let t = data_type.to_ascii_lowercase();
    if t.contains("int") {
        v.parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(v))
    } else if t.contains("float") || t.contains("number") {
        v.parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| json!(v))
    } else if t.contains("bool") {
        json!(["true", "yes", "1", "on"].contains(&v.to_ascii_lowercase().as_str()))
    } else {
        json!(v)
    }
}

/// Streams rows of a markdown table: header, separator, then one row per complete line.
#[derive(Debug, Default)]
pub(crate) struct TableParser {
    pending: String,
    headers: Option<Vec<String>>,
    separator_seen: bool,
}

impl TableParser {
    /// Complete rows in `text` (appended to what came before).
    pub fn push(&mut self, text: &str, cols: &[(String, String)]) -> Vec<Map<String, Value>> {
        self.pending.push_str(text);
        let mut rows = Vec::new();
        while let Some(nl) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=nl).collect();
            if let Some(row) = self.line(&line, cols) {
                rows.push(row);
            }
        }
        rows
    }

    /// The last line, when the answer did not end with a newline.
    pub fn finish(&mut self, cols: &[(String, String)]) -> Option<Map<String, Value>> {
        let line = std::mem::take(&mut self.pending);
        self.line(&line, cols)
    }

    fn line(&mut self, line: &str, cols: &[(String, String)]) -> Option<Map<String, Value>> {
        let line = line.trim();
        if !line.starts_with('|') && !line.contains('|') {
            return None;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        let Some(headers) = &self.headers else {
            self.headers = Some(cells.into_iter().filter(|c| !c.is_empty()).collect());
            return None;
        };
        if !self.separator_seen
            && cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            self.separator_seen = true;
            return None;
        }
        if cells.len() != headers.len() {
            return None;
        }
        let mut row = Map::new();
        for (h, v) in headers.iter().zip(cells) {
            let ty = cols
                .iter()
                .find(|(n, _)| n == h)
                .map_or("string", |(_, t)| t.as_str());
            row.insert(h.clone(), convert(&v, ty));
        }
        Some(row)
    }
}

#[derive(Debug)]
struct DataGenerator {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for DataGenerator {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        let mut p = check_model(node, "model", ModelKind::Language);
        if !node.wired.iter().any(|w| w == "columns") && columns(node.props).is_empty() {
            p.push("Define columns for the data".to_owned());
        }
        p
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let model = model_of(inputs, "model")?;
        let cols = columns(inputs);
        let described: Vec<String> = cols.iter().map(|(n, t)| format!("- {n} ({t})")).collect();
        let system = format!(
            "You generate data as one markdown table and nothing else. Its columns, in this order:\n{}\n\
             Use | between cells; the first row is the header, the second the dashes separator, \
             then one row per record. Numbers without quotes; None for a missing value.",
            described.join("\n")
        );
        let mut request = ChatRequest::new(
            model.id.clone(),
            vec![
                Message::system(system),
                Message::user(format!(
                    "{}\n\n{}",
                    inputs.text("prompt"),
                    inputs.text("input_text")
                )),
            ],
        );
        request.max_tokens = max_tokens(inputs)?;
        let mut stream = chat_stream(ctx, &model, request).await?;
        let mut parser = TableParser::default();
        let mut rows: Vec<Map<String, Value>> = Vec::new();
        while let Some(item) = stream.next().await {
            if let StreamItem::Text { text } = item? {
                post_chunk(ctx, &text, false, false);
                for row in parser.push(&text, &cols) {
                    out.emit("record", Value::Object(row.clone())).await?;
                    out.emit("index", json!(rows.len())).await?;
                    rows.push(row);
                }
            }
        }
        if let Some(row) = parser.finish(&cols) {
            out.emit("record", Value::Object(row.clone())).await?;
            out.emit("index", json!(rows.len())).await?;
            rows.push(row);
        }
        post_chunk(ctx, "", true, false);
        let data: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Array(
                    cols.iter()
                        .map(|(n, _)| r.get(n).cloned().unwrap_or(Value::Null))
                        .collect(),
                )
            })
            .collect();
        let columns_meta: Vec<Value> = cols
            .iter()
            .map(|(n, t)| json!({"name": n, "data_type": t, "description": ""}))
            .collect();
        let frame = json!({"type": "dataframe", "uri": "", "asset_id": null, "data": data, "columns": columns_meta});
        out.emit("dataframe", frame.clone()).await?;
        out.emit("output", frame).await
    }
}

#[derive(Debug)]
struct StructuredOutputGenerator {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for StructuredOutputGenerator {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        let mut p = check_model(node, "model", ModelKind::Language);
        if node.dynamic_outputs.is_empty() {
            p.push("Declare outputs for the fields you want to generate".to_owned());
        }
        p
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let model = model_of(inputs, "model")?;
        let schema =
            dynamic_output_schema(ctx.dynamic_outputs(), "Structured Output Specification")
                .ok_or_else(|| {
                    Error::invalid_input("Declare outputs for the fields you want to generate")
                })?;
        let mut system = format!(
            "{}\n<JSON_SCHEMA>\n{}\n</JSON_SCHEMA>\n",
            inputs.str("system_prompt")?,
            serde_json::to_string_pretty(&schema).unwrap_or_default()
        );
        for (tag, prop) in [("INSTRUCTIONS", "instructions"), ("CONTEXT", "context")] {
            let text = inputs.text(prop);
            if !text.trim().is_empty() {
                system.push_str(&format!("<{tag}>\n{}\n</{tag}>\n", text.trim()));
            }
        }
        let mut request = ChatRequest::new(
            model.id.clone(),
            vec![
                Message::system(system),
                Message::user("Generate a JSON object that satisfies all requirements."),
            ],
        );
        request.max_tokens = max_tokens(inputs)?;
        request.response_format = Some(ResponseFormat::JsonSchema {
            name: "structured_output".into(),
            schema,
            strict: true,
        });
        let raw = answer(ctx, &model, request).await?;
        let obj = extract_json_object(&raw).ok_or_else(|| {
            Error::invalid_input(format!(
                "StructuredOutputGenerator did not return a dictionary; the model said: {}",
                raw.chars().take(300).collect::<String>()
            ))
        })?;
        for slot in ctx.dynamic_outputs().keys() {
            let v = obj.get(slot).cloned().ok_or_else(|| {
                Error::invalid_input(format!(
                    "the model's JSON has no field `{slot}` (a declared output)"
                ))
            })?;
            out.emit(slot, v).await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ChartGenerator {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for ChartGenerator {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        check_model(node, "model", ModelKind::Language)
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let model = model_of(inputs, "model")?;
        let data = inputs.value("data");
        let sample = json!({
            "columns": data.get("columns").cloned().unwrap_or(Value::Null),
            "rows": data.get("data").and_then(Value::as_array).map(|r| r.iter().take(20).cloned().collect::<Vec<_>>()),
        });
        let system = "You design Plotly charts. Answer with one JSON object {\"data\": [traces], \
                      \"layout\": {...}} (a Plotly figure) and nothing else; every trace has a `type`."
            .to_owned();
        let user = format!(
            "{}\n\nData (columns and first rows):\n{sample}",
            inputs.text("prompt")
        );
        let mut request = ChatRequest::new(
            model.id.clone(),
            vec![Message::system(system), Message::user(user)],
        );
        request.max_tokens = max_tokens(inputs)?;
        request.response_format = Some(ResponseFormat::JsonObject);
        let raw = answer(ctx, &model, request).await?;
        let config = extract_json_object(&raw)
            .filter(|o| o.get("data").is_some_and(Value::is_array))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "ChartGenerator: the model did not return a Plotly figure with a `data` list; it said: {}",
                    raw.chars().take(300).collect::<String>()
                ))
            })?;
        out.emit("output", json!({"type": "plotly_config", "config": config}))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_come_out_as_their_tags_close() {
        let mut buf = String::new();
        buf.push_str("Sure!\n<LIST_ITEM>The **Dark**");
        assert!(take_items(&mut buf).is_empty());
        buf.push_str("  Knight</LIST_ITEM>\n<LIST_");
        assert_eq!(take_items(&mut buf), ["The Dark Knight"]);
        buf.push_str("ITEM>Milk\nEggs</LIST_ITEM><LIST_ITEM>Bread</LIST_ITEM>");
        assert_eq!(take_items(&mut buf), ["Milk Eggs", "Bread"]);
    }

    #[test]
    fn table_rows_stream_typed() {
        let cols = vec![
            ("name".to_owned(), "string".to_owned()),
            ("n".to_owned(), "int".to_owned()),
        ];
        let mut p = TableParser::default();
        assert!(p
            .push("| name | n |\n|---|---|\n| carrot ", &cols)
            .is_empty());
        let rows = p.push("| 3 |\n| pea | None |\n", &cols);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["name"], "carrot");
        assert_eq!(rows[0]["n"], 3);
        assert_eq!(rows[1]["n"], Value::Null);
        assert!(p.push("| bad row |\n", &cols).is_empty());
        p.push("| kale | 1 |", &cols);
        assert_eq!(p.finish(&cols).unwrap()["name"], "kale");
    }
}
