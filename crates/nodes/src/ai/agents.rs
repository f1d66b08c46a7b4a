//! `nodetool.agents.{Agent, Summarizer, Extractor, Classifier, ResearchAgent}` and
//! `anthropic.agents.ClaudeAgent`: chat models with streamed `chunk` outputs (and `chunk`
//! events with the node's id), tool loops with a step cap, structured outputs from dynamic
//! output slots.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};
use nodetool_engine::events::{Event, ToolCallUpdate};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec, Preflight};
use nodetool_engine::registry::Registry;
use nodetool_engine::ProcessingContext;
use nodetool_providers::{
    ChatRequest, Message, ModelKind, ModelRef, Part, ResponseFormat, Role, StopReason, StreamItem,
    ToolCall,
};

use super::tools::{self, AgentTool};
use super::{
    chat_stream, check_model, chunk_value, dynamic_output_schema, extract_json_object, media_of,
    model_of, post_chunk,
};

/// The tool-loop step cap (NodeTool's `max_iterations`).
pub const MAX_AGENT_STEPS: usize = 32;

const DEFAULT_SYSTEM: &str = "You are a friendly assistant";

fn empty_model() -> Value {
    json!({"type": "language_model", "provider": "empty", "id": "", "name": ""})
}

fn empty_ref(kind: &str) -> Value {
    json!({"type": kind, "uri": "", "asset_id": null, "data": null})
}

/// Registers the agents; `node_tools` are the nodes they may call as tools.
pub fn register(r: &mut Registry, node_tools: Vec<tools::NodeAsTool>) {
    let node_tools = Arc::new(node_tools);
    r.register(Arc::new(Agent::new(
        NodeSpec::new("nodetool.agents.Agent", "Agent")
            .input("model", "language_model", empty_model())
            .input("system", "str", json!(DEFAULT_SYSTEM))
            .input("prompt", "str", json!(""))
            .input("tools", "list[tool_name]", json!([]))
            .input("image", "image", empty_ref("image"))
            .input("audio", "audio", empty_ref("audio"))
            .input("history", "list[message]", json!([]))
            .input("thread_id", "str", json!(""))
            .input("max_tokens", "int", json!(8192))
            .output("text", "str")
            .output("chunk", "chunk")
            .output("thinking", "chunk")
            .output("audio", "audio")
            .streaming(),
        AgentKind::Agent,
        node_tools.clone(),
    )));
    r.register(Arc::new(Agent::new(
        NodeSpec::new("nodetool.agents.ResearchAgent", "Research Agent")
            .input("objective", "str", json!(""))
            .input("model", "language_model", empty_model())
            .input("system_prompt", "str", json!(RESEARCH_SYSTEM))
            .input(
                "tools",
                "list[tool_name]",
                json!([{"type": "tool_name", "name": "google_search"}, {"type": "tool_name", "name": "browser"}]),
            )
            .input("max_tokens", "int", json!(8192))
            .streaming(),
        AgentKind::Research,
        node_tools.clone(),
    )));
    r.register(Arc::new(Agent::new(
        NodeSpec::new("anthropic.agents.ClaudeAgent", "Claude Agent")
            .input("prompt", "str", json!(""))
            .input("model", "language_model", empty_model())
            .input("system_prompt", "str", json!(""))
            .input("max_turns", "int", json!(20))
            .input(
                "allowed_tools",
                "list[str]",
                json!(["Read", "Write", "Bash"]),
            )
            .input("permission_mode", "str", json!("acceptEdits"))
            .input("use_claude_credentials", "bool", json!(false))
            .output("text", "str")
            .output("chunk", "chunk")
            .streaming(),
        AgentKind::Claude,
        node_tools,
    )));
    r.register(Arc::new(Summarizer {
        spec: NodeSpec::new("nodetool.agents.Summarizer", "Summarizer")
            .input("system_prompt", "str", json!(SUMMARIZER_SYSTEM))
            .input("model", "language_model", empty_model())
            .input("text", "str", json!(""))
            .input("image", "image", empty_ref("image"))
            .input("audio", "audio", empty_ref("audio"))
            .input("max_tokens", "int", json!(8192))
            .output("text", "str")
            .output("chunk", "chunk")
            .streaming(),
    }));
    r.register(Arc::new(Extractor {
        spec: NodeSpec::new("nodetool.agents.Extractor", "Extractor")
            .input("system_prompt", "str", json!(EXTRACTOR_SYSTEM))
            .input("model", "language_model", empty_model())
            .input("text", "str", json!(""))
            .input("image", "image", empty_ref("image"))
            .input("audio", "audio", empty_ref("audio"))
            .input("max_tokens", "int", json!(4096)),
    }));
    r.register(Arc::new(Classifier {
        spec: NodeSpec::new("nodetool.agents.Classifier", "Classifier")
            .input("system_prompt", "str", json!(CLASSIFIER_SYSTEM))
            .input("model", "language_model", empty_model())
            .input("text", "str", json!(""))
            .input("image", "image", empty_ref("image"))
            .input("audio", "audio", empty_ref("audio"))
            .input("categories", "list[str]", json!([]))
            .output("output", "str"),
    }));
}

const SUMMARIZER_SYSTEM: &str =
    "You are an expert summarizer. Write a clear, accurate and concise \
summary in Markdown. Keep only the most important information, stay faithful to the source, and \
use plain, direct language.";

const EXTRACTOR_SYSTEM: &str = "You are a precise structured data extractor. Extract exactly the \
fields described in <JSON_SCHEMA> from the text (and any attached media). Answer with one fenced \
```json block holding one JSON object that validates against <JSON_SCHEMA>, and nothing else. Use \
only information from the input; for a missing field use the empty value of its type.";

const CLASSIFIER_SYSTEM: &str =
    "You are a precise classifier. Choose exactly one category from the \
allowed list and answer only with the JSON object {\"category\": \"<allowed category>\"}.";

const RESEARCH_SYSTEM: &str = "You are a research assistant. Investigate the objective with the \
tools you have, then answer with one JSON object matching the requested output schema.";

/// The model ref plus optional `max_tokens` of a node's inputs.
fn max_tokens(inputs: &NodeInputs, name: &str) -> Result<Option<u32>> {
    Ok(inputs
        .opt_i64(name)?
        .filter(|n| *n > 0)
        .map(|n| n.min(u32::MAX as i64) as u32))
}

/// A NodeTool `Message` value (history items) as a provider message.
fn message_from_value(v: &Value) -> Option<Message> {
    let role = match v.get("role").and_then(Value::as_str)? {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => return None,
    };
    let content = match v.get("content") {
        Some(Value::String(s)) => vec![Part::Text { text: s.clone() }],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Some(Part::Text {
                    text: p
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let tool_calls = v
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| {
                    let name = c.get("name").and_then(Value::as_str)?;
                    let id = c.get("id").and_then(Value::as_str).unwrap_or("call");
                    let args = c.get("args").cloned().unwrap_or(json!({}));
                    Some(ToolCall::from_raw(id, name, &args.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Message {
        tool_calls,
        tool_call_id: v
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        name: v.get("name").and_then(Value::as_str).map(str::to_owned),
        ..Message::new(role, content)
    })
}

/// A user turn: text, then the image and audio inputs when set.
async fn user_turn(ctx: &ProcessingContext, inputs: &NodeInputs, text: String) -> Result<Message> {
    let mut parts = vec![Part::Text { text }];
    if inputs.as_map().contains_key("image") {
        if let Some(image) = media_of(ctx, inputs, "image", "image/png").await? {
            parts.push(Part::Image { image });
        }
    }
    if inputs.as_map().contains_key("audio") {
        if let Some(audio) = media_of(ctx, inputs, "audio", "audio/wav").await? {
            parts.push(Part::Audio { audio });
        }
    }
    Ok(Message::new(Role::User, parts))
}

/// What one run of the tool loop produced.
#[derive(Debug, Default)]
pub(crate) struct LoopOutcome {
    /// The text of the last step that said something.
    pub text: String,
    pub steps: usize,
}

/// The agent loop: stream a step (text → `chunk` output and event, thinking → `thinking`),
/// run the tools it asks for (unknown tools and invalid arguments are answered with an error
/// for the model), feed the results back, repeat until the model answers without tool calls.
/// More than `max_steps` steps fail the node, naming the cap.
pub(crate) async fn tool_loop(
    ctx: &ProcessingContext,
    out: &mut Emitter,
    model: &ModelRef,
    mut request: ChatRequest,
    tools: &[Arc<dyn AgentTool>],
    max_steps: usize,
    emit_text: bool,
) -> Result<LoopOutcome> {
    request.tools = tools.iter().map(|t| t.spec()).collect();
    let mut outcome = LoopOutcome::default();
    for step in 1..=max_steps {
        outcome.steps = step;
        ctx.check_cancelled()?;
        let mut stream = chat_stream(ctx, model, request.clone()).await?;
        let mut text = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut stop = StopReason::EndTurn;
        while let Some(item) = stream.next().await {
            match item? {
                StreamItem::Text { text: t } => {
                    text.push_str(&t);
                    post_chunk(ctx, &t, false, false);
                    if emit_text {
                        out.emit("chunk", chunk_value(ctx, &t, false, false))
                            .await?;
                    }
                }
                StreamItem::Thinking { text: t } => {
                    post_chunk(ctx, &t, false, true);
                    if emit_text {
                        out.emit("thinking", chunk_value(ctx, &t, false, true))
                            .await?;
                    }
                }
                StreamItem::ToolCall { call } => calls.push(call),
                StreamItem::Finish { stop_reason, .. } => stop = stop_reason,
            }
        }
        if calls.is_empty() {
            // NodeTool marks the answer's end with a `done` chunk, then sends the text.
            post_chunk(ctx, "", true, false);
            if emit_text {
                out.emit("chunk", chunk_value(ctx, "", true, false)).await?;
                if !text.is_empty() {
                    out.emit("text", json!(text)).await?;
                }
            }
            if !text.is_empty() {
                outcome.text = text;
            }
            if stop == StopReason::MaxTokens {
                tracing::info!(node_id = %ctx.node_id(), "model stopped at max_tokens");
            }
            return Ok(outcome);
        }
        if !text.is_empty() {
            outcome.text = text.clone();
        }
        request
            .messages
            .push(Message::assistant(text, calls.clone()));
        for call in &calls {
            let answer = run_tool(ctx, tools, call).await;
            request.messages.push(Message::tool_result(call, answer));
        }
    }
    Err(Error::invalid_input(format!(
        "the agent made tool calls in all of its {max_steps} steps without a final answer; \
         it stopped at the step cap (the model may be looping)"
    ))
    .with_operation("agent.loop")
    .with_context("steps", max_steps))
}

/// Runs one tool call and returns the text the model gets back (results and errors alike).
async fn run_tool(
    ctx: &ProcessingContext,
    tools: &[Arc<dyn AgentTool>],
    call: &ToolCall,
) -> String {
    let tool = tools.iter().find(|t| {
        let name = t.spec().name;
        name == call.name || normalize(&name) == normalize(&call.name)
    });
    let message = tool.map(|t| t.user_message(&call.args));
    ctx.post(Event::ToolCallUpdate(ToolCallUpdate {
        node_id: Some(ctx.node_id().to_owned()),
        thread_id: None,
        workflow_id: (!ctx.workflow_id().is_empty()).then(|| ctx.workflow_id().to_owned()),
        tool_call_id: Some(call.id.clone()),
        name: call.name.clone(),
        args: call.args.clone(),
        message,
        step_id: None,
        agent_execution_id: None,
    }));
    let Some(tool) = tool else {
        let known: Vec<String> = tools.iter().map(|t| t.spec().name).collect();
        return json!({"error": format!("Unknown tool: {} (available: {})", call.name, known.join(", "))})
            .to_string();
    };
    if let Some(raw) = &call.invalid_arguments {
        return json!({"error": format!(
            "Invalid arguments for {}: not a JSON object ({}); call it again with valid JSON",
            call.name,
            raw.chars().take(200).collect::<String>()
        )})
        .to_string();
    }
    match tool.call(ctx, &call.args).await {
        Ok(v) => match v {
            Value::String(s) => s,
            other => other.to_string(),
        },
        Err(e) => json!({"error": format!("Error executing tool: {e}")}).to_string(),
    }
}

fn normalize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentKind {
    Agent,
    Research,
    Claude,
}

/// `nodetool.agents.Agent`, `nodetool.agents.ResearchAgent` and `anthropic.agents.ClaudeAgent`.
#[derive(Debug)]
struct Agent {
    spec: NodeSpec,
    kind: AgentKind,
    node_tools: Arc<Vec<tools::NodeAsTool>>,
}

impl Agent {
    fn new(spec: NodeSpec, kind: AgentKind, node_tools: Arc<Vec<tools::NodeAsTool>>) -> Self {
        Self {
            spec,
            kind,
            node_tools,
        }
    }
}

#[async_trait]
impl NodeImpl for Agent {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        let mut problems = check_model(node, "model", ModelKind::Language);
        if self.kind == AgentKind::Claude {
            problems.extend(claude_agent_limits(node.props));
        }
        if self.kind == AgentKind::Research && node.dynamic_outputs.is_empty() {
            problems.push("Define at least one output field for research results".to_owned());
        }
        problems
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let model = model_of(inputs, "model")?;
        let (system, prompt, max_steps, tool_names) = match self.kind {
            AgentKind::Agent => (
                inputs.str("system")?,
                inputs.text("prompt"),
                MAX_AGENT_STEPS,
                inputs.list("tools")?,
            ),
            AgentKind::Research => {
                let objective = inputs.text("objective");
                if objective.trim().is_empty() {
                    return Err(Error::invalid_input("Provide a research objective")
                        .with_context("input", "objective"));
                }
                (
                    inputs.str("system_prompt")?,
                    objective,
                    MAX_AGENT_STEPS,
                    inputs.list("tools")?,
                )
            }
            AgentKind::Claude => {
                let prompt = inputs.text("prompt");
                if prompt.trim().is_empty() {
                    return Err(
                        Error::invalid_input("Prompt is required").with_context("input", "prompt")
                    );
                }
                let turns = inputs.opt_i64("max_turns")?.unwrap_or(20).clamp(1, 100) as usize;
                (inputs.str("system_prompt")?, prompt, turns, Vec::new())
            }
        };
        let (mut tools, unavailable) = tools::resolve(ctx, &tool_names, &self.node_tools);
        // Nodes behind this agent's control edges are tools too (NodeTool's ControlNodeTool).
        tools.extend(tools::control_tools(ctx));
        if !unavailable.is_empty() {
            ctx.log(
                nodetool_engine::events::Severity::Warning,
                format!(
                    "tools not available here, left out: {}",
                    unavailable.join(", ")
                ),
            );
        }
        let mut messages = Vec::new();
        if !system.trim().is_empty() {
            messages.push(Message::system(system));
        }
        if self.kind == AgentKind::Agent {
            messages.extend(
                inputs
                    .list("history")?
                    .iter()
                    .filter_map(message_from_value),
            );
        }
        messages.push(user_turn(ctx, inputs, prompt).await?);
        let mut request = ChatRequest::new(model.id.clone(), messages);
        request.max_tokens = max_tokens(inputs, "max_tokens")?;
        let schema = dynamic_output_schema(ctx.dynamic_outputs(), "Agent Structured Output");
        if let Some(schema) = &schema {
            request.response_format = Some(ResponseFormat::JsonSchema {
                name: "structured_output".into(),
                schema: schema.clone(),
                strict: true,
            });
        }
        let emit_text = self.kind != AgentKind::Research;
        let outcome = tool_loop(ctx, out, &model, request, &tools, max_steps, emit_text).await?;
        if schema.is_some() {
            let parsed = extract_json_object(&outcome.text).ok_or_else(|| {
                Error::invalid_input(format!(
                    "the model did not return a JSON object for the structured outputs; it said: {}",
                    outcome.text.chars().take(300).collect::<String>()
                ))
                .with_operation("agent.structured_output")
            })?;
            for slot in ctx.dynamic_outputs().keys() {
                let v = parsed.get(slot).cloned().ok_or_else(|| {
                    Error::invalid_input(format!(
                        "the model's JSON has no field `{slot}` (a declared output)"
                    ))
                    .with_operation("agent.structured_output")
                })?;
                out.emit(slot, v).await?;
            }
        }
        Ok(())
    }
}

/// What the Claude Agent SDK does that a Messages tool loop does not: its local tools and the
/// CLI's subscription login. Refused before the job starts, with the reason.
fn claude_agent_limits(props: &NodeInputs) -> Vec<String> {
    let mut problems = Vec::new();
    let tools: Vec<String> = props
        .list("allowed_tools")
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if !tools.is_empty() {
        problems.push(format!(
            "allowed_tools {tools:?} are Claude Code CLI tools (they run shell commands and edit \
             files on the host); this runtime runs ClaudeAgent as an Anthropic Messages tool loop \
             without them: clear allowed_tools (see docs/ai-nodes.md)"
        ));
    }
    problems
}

/// `nodetool.agents.Summarizer`: streams the summary as `chunk`s, then `text`.
#[derive(Debug)]
struct Summarizer {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Summarizer {
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
        let messages = vec![
            Message::system(inputs.str("system_prompt")?),
            user_turn(ctx, inputs, inputs.text("text")).await?,
        ];
        let mut request = ChatRequest::new(model.id.clone(), messages);
        request.max_tokens = max_tokens(inputs, "max_tokens")?;
        tool_loop(ctx, out, &model, request, &[], 1, true).await?;
        Ok(())
    }
}

/// One non-streamed answer (Extractor, Classifier, generators).
pub(crate) async fn answer(
    ctx: &ProcessingContext,
    model: &ModelRef,
    request: ChatRequest,
) -> Result<String> {
    let stream = chat_stream(ctx, model, request).await?;
    let resp = nodetool_providers::collect(stream).await?;
    Ok(resp.text)
}

/// `nodetool.agents.Extractor`: one JSON object with the node's dynamic output fields.
#[derive(Debug)]
struct Extractor {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Extractor {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        let mut p = check_model(node, "model", ModelKind::Language);
        if node.dynamic_outputs.is_empty() {
            p.push("Declare outputs for the fields you want to extract".to_owned());
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
        let schema = dynamic_output_schema(ctx.dynamic_outputs(), "Extraction Results")
            .ok_or_else(|| {
                Error::invalid_input("Declare outputs for the fields you want to extract")
            })?;
        let system = format!(
            "{}\n<JSON_SCHEMA>\n{}\n</JSON_SCHEMA>\n",
            inputs.str("system_prompt")?,
            serde_json::to_string_pretty(&schema).unwrap_or_default()
        );
        let messages = vec![
            Message::system(system),
            user_turn(ctx, inputs, inputs.text("text")).await?,
        ];
        let mut request = ChatRequest::new(model.id.clone(), messages);
        request.max_tokens = max_tokens(inputs, "max_tokens")?;
        // Extraction is not creative: greedy answers, which also makes them cacheable.
        request.temperature = Some(0.0);
        let raw = answer(ctx, &model, request).await?;
        let obj = extract_json_object(&raw).ok_or_else(|| {
            Error::invalid_input(format!(
                "Extractor did not return a dictionary; the model said: {}",
                raw.chars().take(300).collect::<String>()
            ))
        })?;
        for slot in ctx.dynamic_outputs().keys() {
            out.emit(slot, obj.get(slot).cloned().unwrap_or(Value::Null))
                .await?;
        }
        Ok(())
    }
}

/// `nodetool.agents.Classifier`: one of `categories`.
#[derive(Debug)]
struct Classifier {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Classifier {
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
        let categories: Vec<String> = inputs
            .list("categories")?
            .iter()
            .map(nodetool_engine::node::value_to_text)
            .filter(|c| !c.trim().is_empty())
            .collect();
        if categories.len() < 2 {
            return Err(Error::invalid_input("At least 2 categories are required")
                .with_context("input", "categories"));
        }
        let text = format!(
            "Classify the input into exactly one category from the list.\nAllowed categories: {}\n\nText: {}",
            categories.join(", "),
            inputs.text("text")
        );
        let messages = vec![
            Message::system(inputs.str("system_prompt")?),
            user_turn(ctx, inputs, text).await?,
        ];
        let mut request = ChatRequest::new(model.id.clone(), messages);
        // One label per input: greedy, and so cacheable (keyed by the whole request).
        request.temperature = Some(0.0);
        request.response_format = Some(ResponseFormat::JsonSchema {
            name: "classification_result".into(),
            schema: json!({"type": "object", "additionalProperties": false, "required": ["category"],
                "properties": {"category": {"type": "string", "enum": categories}}}),
            strict: true,
        });
        let raw = answer(ctx, &model, request).await?;
        out.emit("output", json!(pick_category(&raw, &categories)))
            .await
    }
}

/// The category a model answer names: the JSON `category`, else a category mentioned in the
/// text, else `Other`/`Unknown` when allowed, else the first.
pub(crate) fn pick_category(raw: &str, categories: &[String]) -> String {
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    if let Some(obj) = extract_json_object(raw) {
        if let Some(c) = obj.get("category").and_then(Value::as_str) {
            if let Some(hit) = categories.iter().find(|k| same(k, c)) {
                return hit.clone();
            }
        }
    }
    let lower = raw.to_lowercase();
    if let Some(hit) = categories
        .iter()
        .find(|c| lower.contains(&c.to_lowercase()))
    {
        return hit.clone();
    }
    for fallback in ["other", "unknown"] {
        if let Some(hit) = categories.iter().find(|c| same(c, fallback)) {
            return hit.clone();
        }
    }
    categories.first().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_picked_like_nodetool() {
        let cats: Vec<String> = ["Spam", "Work", "Other"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(pick_category(r#"{"category": "work"}"#, &cats), "Work");
        assert_eq!(pick_category("I think this is spam.", &cats), "Spam");
        assert_eq!(pick_category("no idea", &cats), "Other");
        assert_eq!(normalize("Google-Search"), "google_search");
    }

    #[test]
    fn history_messages_parse() {
        let m = message_from_value(
            &json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
        )
        .unwrap();
        assert_eq!(m.text_content(), "hi");
        assert!(message_from_value(&json!({"role": "robot"})).is_none());
    }
}
