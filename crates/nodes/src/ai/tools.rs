//! Tools an agent may call, by NodeTool's tool names (`{"type": "tool_name", "name": …}`):
//! `browser` (fetch a web page as text) and `google_search` (SerpAPI; offered only when
//! `SERPAPI_API_KEY` is set, in the job's secrets or the settings).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs};
use nodetool_engine::ProcessingContext;
use nodetool_providers::{Secrets, ToolSpec};

/// A tool the model may call.
#[async_trait]
pub trait AgentTool: Send + Sync + std::fmt::Debug {
    fn spec(&self) -> ToolSpec;

    /// What the UI shows while the tool runs (`tool_call_update.message`).
    fn user_message(&self, args: &Map<String, Value>) -> String;

    /// Runs the call; an error becomes the tool's answer to the model, not a node failure.
    async fn call(&self, ctx: &ProcessingContext, args: &Map<String, Value>) -> Result<Value>;
}

/// The node types NodeTool exposes as agent tools (`_expose_as_tool`) that this library has.
pub const EXPOSED_NODE_TYPES: &[&str] = &[
    "nodetool.image.TextToImage",
    "nodetool.image.ImageToImage",
    "nodetool.audio.TextToSpeech",
    "nodetool.text.AutomaticSpeechRecognition",
    "nodetool.dictionary.SaveJSON",
    "lib.http.GetRequest",
    "lib.http.PostRequest",
    "lib.http.FetchPage",
    "lib.browser.WebFetch",
];

/// NodeTool's tool name of a node type: dots become underscores, a `Node` suffix goes, at most
/// 64 characters (`nodetool.image.TextToImage` → `nodetool_image_TextToImage`).
pub fn tool_name(node_type: &str) -> String {
    let mut name = node_type.replace('.', "_");
    if let Some(stripped) = name.strip_suffix("Node") {
        name = stripped.to_owned();
    }
    name.chars().take(64).collect()
}

/// A node run as a tool: the call's arguments are its properties (over its defaults); the
/// answer is `{node_type, result: {slot: value}, status}` (a list of such results for
/// streaming nodes), as NodeTool's `NodeTool` answers.
#[derive(Debug, Clone)]
pub struct NodeAsTool {
    imp: Arc<dyn NodeImpl>,
}

impl NodeAsTool {
    pub fn new(imp: Arc<dyn NodeImpl>) -> Self {
        Self { imp }
    }
}

fn json_schema_of(type_name: &str) -> Value {
    let t = type_name.split('[').next().unwrap_or(type_name);
    match t {
        "str" | "text" => json!({"type": "string"}),
        "int" => json!({"type": "integer"}),
        "float" => json!({"type": "number"}),
        "bool" => json!({"type": "boolean"}),
        "list" => json!({"type": "array"}),
        "dict" => json!({"type": "object"}),
        "any" => json!({}),
        other => json!({"type": "object", "description": format!("a NodeTool {other} ref")}),
    }
}

#[async_trait]
impl AgentTool for NodeAsTool {
    fn spec(&self) -> ToolSpec {
        let spec = self.imp.spec();
        let mut properties = Map::new();
        let mut required = Vec::new();
        for input in &spec.inputs {
            properties.insert(input.name.clone(), json_schema_of(&input.type_name));
            if input.required {
                required.push(json!(input.name));
            }
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        ToolSpec {
            name: tool_name(&spec.node_type),
            description: format!("Run the {} node ({})", spec.title, spec.node_type),
            input_schema: schema,
        }
    }

    fn user_message(&self, _args: &Map<String, Value>) -> String {
        format!("Running {}", self.imp.spec().title)
    }

    async fn call(&self, ctx: &ProcessingContext, args: &Map<String, Value>) -> Result<Value> {
        let spec = self.imp.spec();
        let mut props = Map::new();
        for input in &spec.inputs {
            props.insert(input.name.clone(), input.default.clone());
        }
        for (k, v) in args {
            props.insert(k.clone(), v.clone());
        }
        let mut out = Emitter::capture(ctx);
        self.imp
            .process(ctx, &NodeInputs::new(props), &mut out)
            .await?;
        let emitted = out.take_emitted();
        let result = if spec.streaming {
            Value::Array(
                emitted
                    .into_iter()
                    .map(|(slot, v)| json!({slot: v}))
                    .collect(),
            )
        } else {
            Value::Object(emitted.into_iter().collect())
        };
        Ok(json!({"node_type": spec.node_type, "result": result, "status": "completed"}))
    }
}

/// A node this agent drives through a control edge, offered to the model as a tool (NodeTool's
/// `ControlNodeTool`): named after the node's title in snake_case, every argument optional (an
/// empty call runs it with its current values), answered with that run's outputs.
#[derive(Debug, Clone)]
pub struct ControlTool {
    target: String,
    node_type: String,
    title: String,
    name: String,
    properties: Map<String, Value>,
}

/// NodeTool's control tool name of a node title: non-alphanumerics become `_`, camelCase
/// becomes snake_case, lower case, runs of `_` collapse, at most 64 characters
/// (`"Image Enhancer"` → `image_enhancer`, `"ControlNode"` → `control_node`).
pub fn control_tool_name(title: &str) -> String {
    let chars: Vec<char> = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut out = String::with_capacity(chars.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() && chars[i - 1].is_ascii_lowercase() {
            out.push('_');
        }
        if !(c == '_' && out.ends_with('_')) {
            out.push(c.to_ascii_lowercase());
        }
    }
    let name: String = out.trim_matches('_').chars().take(64).collect();
    if name.is_empty() {
        "control_node".to_owned()
    } else {
        name
    }
}

/// The nodes this agent's control edges point at, as tools (none without control edges).
/// Two targets with the same title get `_2`, `_3`, … so every tool name is unique.
pub fn control_tools(ctx: &ProcessingContext) -> Vec<Arc<dyn AgentTool>> {
    let mut tools: Vec<Arc<dyn AgentTool>> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    for (target, info) in ctx.control_context() {
        let title = info
            .get("node_title")
            .and_then(Value::as_str)
            .unwrap_or(&target)
            .to_owned();
        let base = control_tool_name(&title);
        let mut name = base.clone();
        let mut n = 1;
        while used.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        used.push(name.clone());
        tools.push(Arc::new(ControlTool {
            node_type: info
                .get("node_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            properties: info
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            target,
            title,
            name,
        }));
    }
    tools
}

#[async_trait]
impl AgentTool for ControlTool {
    fn spec(&self) -> ToolSpec {
        let mut properties = Map::new();
        for (prop, info) in &self.properties {
            let type_name = info.get("type").and_then(Value::as_str).unwrap_or("any");
            let mut schema = json_schema_of(type_name);
            if let (Value::Object(obj), Some(current)) = (&mut schema, info.get("value")) {
                let shown: String = current.to_string().chars().take(200).collect();
                obj.insert(
                    "description".into(),
                    json!(format!("{type_name}; current value: {shown}")),
                );
            }
            properties.insert(prop.clone(), schema);
        }
        let mut description = format!(
            "Control {}: trigger execution with optional property overrides",
            self.title
        );
        if !properties.is_empty() {
            let names: Vec<&str> = properties.keys().map(String::as_str).collect();
            description.push_str(&format!(". Available properties: {}", names.join(", ")));
        }
        ToolSpec {
            name: self.name.clone(),
            description,
            input_schema: json!({"type": "object", "properties": properties, "required": []}),
        }
    }

    fn user_message(&self, args: &Map<String, Value>) -> String {
        if args.is_empty() {
            format!("Triggering {}", self.title)
        } else {
            let keys: Vec<&str> = args.keys().map(String::as_str).collect();
            format!("Triggering {} with properties: {keys:?}", self.title)
        }
    }

    async fn call(&self, ctx: &ProcessingContext, args: &Map<String, Value>) -> Result<Value> {
        let outputs = ctx.run_controlled(&self.target, args.clone()).await?;
        Ok(json!({
            "node_id": self.target,
            "node_type": self.node_type,
            "result": outputs,
            "status": "completed",
        }))
    }
}

/// The exposed node types registered in `r`, as tools.
pub fn node_tools(r: &nodetool_engine::registry::Registry) -> Vec<NodeAsTool> {
    EXPOSED_NODE_TYPES
        .iter()
        .filter_map(|t| r.get(t).cloned())
        .map(NodeAsTool::new)
        .collect()
}

/// The tools named in `names` that exist here (built-in tools, then nodes exposed as tools by
/// their tool name or node type); names without a tool (or, for search, without a key) come
/// back in the second list.
pub fn resolve(
    ctx: &ProcessingContext,
    names: &[Value],
    node_tools: &[NodeAsTool],
) -> (Vec<Arc<dyn AgentTool>>, Vec<String>) {
    let mut tools: Vec<Arc<dyn AgentTool>> = Vec::new();
    let mut missing = Vec::new();
    let serp_key = super::JobSecrets(ctx.secrets())
        .get("SERPAPI_API_KEY")
        .or_else(|| {
            ctx.extension::<nodetool_providers::ProviderSet>()
                .and_then(|s| s.settings.get("SERPAPI_API_KEY"))
        });
    for v in names {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| v.as_str())
            .unwrap_or("");
        match name {
            "" => {}
            "browser" => tools.push(Arc::new(Browser)),
            "google_search" => match &serp_key {
                Some(key) => tools.push(Arc::new(GoogleSearch { key: key.clone() })),
                None => missing.push("google_search (set SERPAPI_API_KEY)".to_owned()),
            },
            other => match node_tools.iter().find(|t| {
                t.imp.spec().node_type == other || tool_name(&t.imp.spec().node_type) == other
            }) {
                Some(t) => tools.push(Arc::new(t.clone())),
                None => missing.push(other.to_owned()),
            },
        }
    }
    (tools, missing)
}

fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| Error::unexpected(format!("cannot build an HTTP client: {e}")))
}

/// Reads at most `cap` bytes of a response body.
async fn body_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("reading the page: {e}")))?;
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

/// `browser`: GET a page and return its text (tags, scripts and styles removed), cut to
/// 20,000 characters. http(s) only; link-local addresses (cloud metadata) are refused.
#[derive(Debug, Default)]
pub struct Browser;

const PAGE_CHARS: usize = 20_000;

#[async_trait]
impl AgentTool for Browser {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "browser".into(),
            description: "Fetch a web page and return its text content.".into(),
            input_schema: json!({"type": "object", "properties": {
                "url": {"type": "string", "description": "The http(s) URL to fetch"}},
                "required": ["url"]}),
        }
    }

    fn user_message(&self, args: &Map<String, Value>) -> String {
        format!(
            "Browsing {}",
            args.get("url").and_then(Value::as_str).unwrap_or("?")
        )
    }

    async fn call(&self, _ctx: &ProcessingContext, args: &Map<String, Value>) -> Result<Value> {
        let url = args.get("url").and_then(Value::as_str).unwrap_or("").trim();
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid_input(format!("`url` is not a URL ({e}): {url:?}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_input(format!(
                "only http(s) URLs can be browsed, not {url:?}"
            )));
        }
        let link_local = parsed
            .host_str()
            .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|ip| ip.is_link_local());
        if link_local {
            return Err(Error::invalid_input(
                "link-local addresses (cloud metadata) cannot be browsed",
            ));
        }
        let resp = http()?
            .get(parsed)
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("fetching {url}: {e}")))?;
        let status = resp.status();
        let bytes = body_capped(resp, 2 * 1024 * 1024).await?;
        let html = String::from_utf8_lossy(&bytes);
        let text: String = html_to_text(&html).chars().take(PAGE_CHARS).collect();
        Ok(json!({"url": url, "status": status.as_u16(), "content": text}))
    }
}

/// Visible text of an HTML page: drops `<script>`/`<style>` blocks and tags, decodes the common
/// entities, collapses whitespace.
pub fn html_to_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() / 2);
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let rest = &lower[i..];
            let skip_block = ["<script", "<style", "<noscript"]
                .iter()
                .find(|t| rest.starts_with(**t))
                .map(|t| format!("</{}", &t[1..]));
            if let Some(close) = skip_block {
                i = match rest.find(&close) {
                    Some(end) => i + end + close.len(),
                    None => bytes.len(),
                };
            }
            match lower[i..].find('>') {
                Some(end) => i += end + 1,
                None => break,
            }
            out.push(' ');
            continue;
        }
        let next = lower[i..].find('<').map_or(bytes.len(), |n| i + n);
        out.push_str(&html[i..next]);
        i = next;
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `google_search` through SerpAPI.
pub struct GoogleSearch {
    key: String,
}

impl std::fmt::Debug for GoogleSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleSearch").field("key", &"***").finish()
    }
}

#[async_trait]
impl AgentTool for GoogleSearch {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "google_search".into(),
            description:
                "Search the web with Google and return the top results (title, link, snippet)."
                    .into(),
            input_schema: json!({"type": "object", "properties": {
                "query": {"type": "string", "description": "The search query"},
                "num_results": {"type": "integer", "description": "How many results (1-20)"}},
                "required": ["query"]}),
        }
    }

    fn user_message(&self, args: &Map<String, Value>) -> String {
        format!(
            "Searching Google for {}",
            args.get("query").and_then(Value::as_str).unwrap_or("?")
        )
    }

    async fn call(&self, _ctx: &ProcessingContext, args: &Map<String, Value>) -> Result<Value> {
        let query = args
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if query.is_empty() {
            return Err(Error::invalid_input("`query` is empty"));
        }
        let num = args
            .get("num_results")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 20);
        let resp = http()?
            .get("https://serpapi.com/search.json")
            .query(&[
                ("engine", "google"),
                ("q", query),
                ("num", &num.to_string()),
                ("api_key", &self.key),
            ])
            .send()
            .await
            // reqwest's message names the URL, which carries the key: never show it.
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("SerpAPI unreachable ({})", e.without_url()),
                )
            })?;
        let status = resp.status();
        let bytes = body_capped(resp, 4 * 1024 * 1024).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace(&self.key, "***");
            let kind = if status.as_u16() == 401 {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(
                kind,
                format!("SerpAPI answered HTTP {status} (check SERPAPI_API_KEY): {msg}"),
            ));
        }
        let results: Vec<Value> = v
            .get("organic_results")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .map(|r| json!({"title": r.get("title"), "link": r.get("link"), "snippet": r.get("snippet")}))
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({"query": query, "results": results}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_types_become_nodetool_tool_names() {
        assert_eq!(
            tool_name("nodetool.image.TextToImage"),
            "nodetool_image_TextToImage"
        );
        assert_eq!(
            tool_name("lib.browser.BrowserUseNode"),
            "lib_browser_BrowserUse"
        );
    }

    #[test]
    fn node_titles_become_nodetool_control_tool_names() {
        assert_eq!(control_tool_name("Image Enhancer"), "image_enhancer");
        assert_eq!(control_tool_name("My-Node 123"), "my_node_123");
        assert_eq!(control_tool_name("ControlNode"), "control_node");
        assert_eq!(control_tool_name("Google Search"), "google_search");
        assert_eq!(control_tool_name("--!!--"), "control_node");
        assert_eq!(control_tool_name(&"Ab".repeat(60)).len(), 64);
    }

    #[test]
    fn html_becomes_visible_text() {
        let html = "<html><head><style>p{}</style><script>var x='<b>';</script></head>\
                    <body><h1>Title</h1><p>Fish &amp; chips&nbsp;now</p></body></html>";
        assert_eq!(html_to_text(html), "Title Fish & chips now");
    }
}
