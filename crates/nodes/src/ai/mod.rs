//! NodeTool's generic AI nodes: `nodetool.agents.*`, `nodetool.generators.*`,
//! `nodetool.image.{TextToImage, ImageToImage}`, `nodetool.text.AutomaticSpeechRecognition`,
//! `nodetool.audio.TextToSpeech` and `anthropic.agents.ClaudeAgent`.
//!
//! Nodes reach providers through the [`ProviderSet`] the host lends in the engine's
//! extensions (`nodetool run` and `nodetool serve` lend theirs; subprocess and Docker workers
//! hold no credentials and lend none, so AI nodes refuse there before the job starts). Keys and
//! URLs are looked up in the job's secrets first, then the process settings. A missing key, an
//! unset server URL or an unselected model is a validation problem naming the setting, found
//! by [`NodeImpl::preflight`](nodetool_engine::NodeImpl::preflight) before anything runs.
//!
//! Every model call posts a `prediction` event (provider, model, tokens, cost in NodeTool
//! credits, duration) and feeds the process's usage meter (`/metrics`). Chat calls with
//! temperature 0 or a seed are cached in the node cache, keyed by the whole request.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use nodetool_core::{CacheValue, Error, ErrorKind, Result};
use nodetool_engine::events::{Chunk, Event, Prediction};
use nodetool_engine::node::{NodeInputs, Preflight};
use nodetool_engine::registry::Registry;
use nodetool_engine::ProcessingContext;
use nodetool_providers::{
    ChatProvider, ChatRequest, ChatStream, Media, ModelKind, ModelRef, ProviderSet, Secrets,
    StreamItem, Usage,
};

pub mod agents;
pub mod generators;
pub mod media;
pub mod overrides;
pub mod tools;

pub use overrides::{apply_model_overrides, parse_model_overrides, ModelOverride};

/// Registers every AI node type. Call after the rest of the library: agents may call the node
/// types NodeTool exposes as tools, and take the ones registered by then.
pub fn register(r: &mut Registry) {
    generators::register(r);
    media::register(r);
    let node_tools = tools::node_tools(r);
    agents::register(r, node_tools);
}

/// Why AI nodes cannot run in a process without a provider set.
const NO_PROVIDERS: &str = "AI providers are not available in this process: subprocess and docker \
     workers hold no credentials and have no network; run AI workflows with the threaded strategy";

/// The job's secrets as a provider lookup.
pub(crate) struct JobSecrets<'a>(pub &'a std::collections::BTreeMap<String, String>);

impl Secrets for JobSecrets<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
}

/// The provider set of the process, or a clear error.
pub(crate) fn providers(ctx: &ProcessingContext) -> Result<Arc<ProviderSet>> {
    ctx.extension::<ProviderSet>().ok_or_else(|| {
        Error::new(ErrorKind::Unsupported, NO_PROVIDERS).with_operation("ai.providers")
    })
}

/// The model ref in `prop`, or NodeTool's "Select a model" error.
pub(crate) fn model_of(inputs: &NodeInputs, prop: &str) -> Result<ModelRef> {
    ModelRef::from_value(&inputs.value(prop)).ok_or_else(|| {
        Error::invalid_input(format!(
            "Select a model (property `{prop}` names no provider and model)"
        ))
        .with_context("input", prop)
    })
}

/// The preflight problems of a model property: no model selected, a provider without a client
/// for this kind, a missing key or URL (naming the setting), no providers in this process.
pub(crate) fn check_model(node: &Preflight<'_>, prop: &str, kind: ModelKind) -> Vec<String> {
    if node.wired.iter().any(|w| w == prop) {
        // Known only when the job runs; checked then.
        return Vec::new();
    }
    let Some(model) = ModelRef::from_value(&node.props.value(prop)) else {
        return vec![format!(
            "Select a model: property `{prop}` ({}) names no provider and model \
             (or rewrite it with `nodetool run --model-override {}=PROVIDER:MODEL`)",
            kind.type_name(),
            kind.type_name()
        )];
    };
    let Some(set) = node.resources.extensions.get::<ProviderSet>() else {
        return vec![NO_PROVIDERS.to_owned()];
    };
    if !ProviderSet::supports(&model.provider, kind)
        && nodetool_providers::spec(&model.provider).is_some()
    {
        return vec![format!(
            "provider `{}` has no {} client here; pick a model of another provider",
            model.provider,
            kind.type_name()
        )];
    }
    match set.missing(&model.provider, &JobSecrets(node.secrets)) {
        Some(why) => vec![why],
        None => Vec::new(),
    }
}

/// A chat client for `model`, with the job's secrets over the process settings.
pub(crate) fn chat_client(
    ctx: &ProcessingContext,
    model: &ModelRef,
) -> Result<Arc<dyn ChatProvider>> {
    providers(ctx)?.chat(&model.provider, &JobSecrets(ctx.secrets()))
}

/// Posts the `prediction` of one model call and feeds the usage meter.
pub(crate) fn account(
    ctx: &ProcessingContext,
    model: &ModelRef,
    usage: &Usage,
    started: Instant,
    error: Option<&Error>,
    params: Map<String, Value>,
) {
    let cost = nodetool_providers::cost::chat_cost(&model.provider, &model.id, usage);
    if let Ok(set) = providers(ctx) {
        match error {
            None => set.meter().record(&model.provider, &model.id, usage, cost),
            Some(_) => set.meter().record_error(&model.provider, &model.id),
        }
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    ctx.post(Event::Prediction(Prediction {
        id: nodetool_core::id::new_id(),
        user_id: ctx.user_id().to_owned(),
        node_id: ctx.node_id().to_owned(),
        workflow_id: non_empty(ctx.workflow_id()),
        provider: Some(model.provider.clone()),
        model: Some(model.id.clone()),
        node_type: Some(ctx.node_type().to_owned()),
        status: if error.is_some() {
            "failed"
        } else {
            "completed"
        }
        .to_owned(),
        params,
        cost: Some(cost),
        error: error.map(|e| e.to_string()),
        duration: Some(started.elapsed().as_secs_f64()),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        total_tokens: usage.total(),
        cached_tokens: Some(usage.cached_tokens),
        reasoning_tokens: Some(usage.reasoning_tokens),
    }));
}

fn request_params(req: &ChatRequest) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = req.max_tokens {
        m.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        m.insert("temperature".into(), json!(t));
    }
    if let Some(s) = req.seed {
        m.insert("seed".into(), json!(s));
    }
    m.insert("messages".into(), json!(req.messages.len()));
    m.insert("tools".into(), json!(req.tools.len()));
    m
}

/// Streams a chat call: from the node cache when the request is deterministic and was answered
/// before, else from the provider; the finished call is accounted (`prediction`, meter) and, if
/// deterministic, cached. Items arrive as the provider sends them.
pub(crate) async fn chat_stream(
    ctx: &ProcessingContext,
    model: &ModelRef,
    req: ChatRequest,
) -> Result<ChatStream> {
    let cache_key = req
        .cache_key(&model.provider)
        .filter(|_| ctx.use_cache())
        .map(|k| {
            nodetool_core::node_cache_key(
                ctx.user_id(),
                "provider.chat",
                "1",
                &CacheValue::String(k),
            )
        });
    if let Some(key) = &cache_key {
        match ctx.node_cache().get(key).await {
            Ok(Some(CacheValue::String(text))) => {
                if let Ok(items) = serde_json::from_str::<Vec<StreamItem>>(&text) {
                    tracing::debug!(node_id = %ctx.node_id(), "model call served from the node cache");
                    return Ok(futures::stream::iter(items.into_iter().map(Ok)).boxed());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "node cache get failed; treating as a miss"),
        }
    }
    let client = chat_client(ctx, model)?;
    let params = request_params(&req);
    let started = Instant::now();
    let inner = match client.stream(req).await {
        Ok(s) => s,
        Err(e) => {
            account(ctx, model, &Usage::default(), started, Some(&e), params);
            return Err(e);
        }
    };
    struct State {
        inner: ChatStream,
        ctx: ProcessingContext,
        model: ModelRef,
        cache_key: Option<String>,
        items: Vec<StreamItem>,
        started: Instant,
        params: Map<String, Value>,
        done: bool,
    }
    let state = State {
        inner,
        ctx: ctx.clone(),
        model: model.clone(),
        cache_key,
        items: Vec::new(),
        started,
        params,
        done: false,
    };
    Ok(futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.inner.next().await {
            None => None,
            Some(Err(e)) => {
                s.done = true;
                account(
                    &s.ctx,
                    &s.model,
                    &Usage::default(),
                    s.started,
                    Some(&e),
                    s.params.clone(),
                );
                Some((Err(e), s))
            }
            Some(Ok(item)) => {
                if let StreamItem::Finish { usage, .. } = &item {
                    account(&s.ctx, &s.model, usage, s.started, None, s.params.clone());
                    if let Some(key) = &s.cache_key {
                        let mut all = std::mem::take(&mut s.items);
                        all.push(item.clone());
                        if let Ok(text) = serde_json::to_string(&all) {
                            let ttl = s.ctx.node_cache_ttl();
                            if let Err(e) = s
                                .ctx
                                .node_cache()
                                .set(key, CacheValue::String(text), ttl)
                                .await
                            {
                                tracing::warn!(error = %e, "node cache set failed; not cached");
                            }
                        }
                    }
                } else if s.cache_key.is_some() {
                    s.items.push(item.clone());
                }
                Some((Ok(item), s))
            }
        }
    })
    .boxed())
}

/// A NodeTool `Chunk` value (what `chunk` outputs carry).
pub(crate) fn chunk_value(
    ctx: &ProcessingContext,
    content: &str,
    done: bool,
    thinking: bool,
) -> Value {
    json!({
        "type": "chunk",
        "node_id": ctx.node_id(),
        "thread_id": null,
        "workflow_id": null,
        "content_type": "text",
        "content": content,
        "content_metadata": {},
        "done": done,
        "thinking": thinking,
    })
}

/// Posts a `chunk` event for the node (what NodeTool's clients render while a model streams).
pub(crate) fn post_chunk(ctx: &ProcessingContext, content: &str, done: bool, thinking: bool) {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    ctx.post(Event::Chunk(Chunk {
        node_id: Some(ctx.node_id().to_owned()),
        thread_id: None,
        workflow_id: non_empty(ctx.workflow_id()),
        content_type: "text".to_owned(),
        content: content.to_owned(),
        content_metadata: Map::new(),
        done,
        thinking,
    }));
}

/// The media of an image/audio ref input, or `None` when it is NodeTool's empty ref.
pub(crate) async fn media_of(
    ctx: &ProcessingContext,
    inputs: &NodeInputs,
    name: &str,
    default_mime: &str,
) -> Result<Option<Media>> {
    let v = inputs.value(name);
    if crate::image::is_empty_ref(&v) || !v.is_object() {
        return Ok(None);
    }
    let bytes = ctx
        .asset_bytes(&v)
        .await
        .map_err(|e| e.with_context("input", name.to_owned()))?;
    let mime = v
        .get("content_type")
        .or_else(|| v.get("mime_type"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| sniff(&bytes, default_mime).to_owned());
    Ok(Some(Media::inline(mime, bytes.to_vec())))
}

fn sniff<'a>(bytes: &[u8], default: &'a str) -> &'a str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        "image/jpeg"
    } else if bytes.len() > 12 && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else if bytes.starts_with(b"RIFF") && bytes.len() > 12 && &bytes[8..12] == b"WAVE" {
        "audio/wav"
    } else if bytes.starts_with(b"ID3") || bytes.starts_with(&[0xFF, 0xFB]) {
        "audio/mpeg"
    } else if bytes.starts_with(b"OggS") {
        "audio/ogg"
    } else {
        default
    }
}

/// Stores generated bytes in temp storage under the job and returns a NodeTool ref of `kind`.
pub(crate) async fn store_temp(
    ctx: &ProcessingContext,
    kind: &str,
    bytes: Bytes,
    mime: &str,
) -> Result<Value> {
    let ext = nodetool_core::storage::extension_for(mime).unwrap_or("bin");
    let name = format!("{}.{ext}", nodetool_core::id::new_id());
    let key = ctx.put_temp(&name, bytes).await?;
    Ok(json!({
        "type": kind,
        "uri": format!("temp://{}", key.as_str()),
        "asset_id": null,
        "data": null,
        "content_type": mime,
    }))
}

/// The first JSON object in a model answer: a ```json fence, the whole text, or the span from
/// the first `{` to the last `}` (NodeTool's order).
pub(crate) fn extract_json_object(raw: &str) -> Option<Map<String, Value>> {
    let text = raw.trim();
    let fenced = text.to_ascii_lowercase().find("```json").and_then(|start| {
        let body = &text[start + 7..];
        body.find("```").map(|end| body[..end].trim().to_owned())
    });
    let candidates = [
        fenced,
        Some(text.to_owned()),
        text.find('{')
            .zip(text.rfind('}'))
            .filter(|(s, e)| s < e)
            .map(|(s, e)| text[s..=e].to_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|c| match serde_json::from_str::<Value>(&c) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
}

/// The JSON schema of a NodeTool type as dynamic outputs declare it (`{type, type_args}`).
pub(crate) fn type_schema(meta: &Value) -> Value {
    let t = meta.get("type").and_then(Value::as_str).unwrap_or("any");
    let args = meta
        .get("type_args")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match t {
        "str" | "string" | "text" => json!({"type": "string"}),
        "int" | "integer" => json!({"type": "integer"}),
        "float" | "number" => json!({"type": "number"}),
        "bool" | "boolean" => json!({"type": "boolean"}),
        "list" | "array" => match args.first() {
            Some(item) => json!({"type": "array", "items": type_schema(item)}),
            None => json!({"type": "array"}),
        },
        "dict" | "object" => json!({"type": "object"}),
        "enum" => match meta.get("values").and_then(Value::as_array) {
            Some(values) => json!({"type": "string", "enum": values}),
            None => json!({"type": "string"}),
        },
        _ => json!({}),
    }
}

/// The strict object schema of a node's dynamic outputs, or `None` when it has none.
pub(crate) fn dynamic_output_schema(outputs: &Map<String, Value>, title: &str) -> Option<Value> {
    if outputs.is_empty() {
        return None;
    }
    let properties: Map<String, Value> = outputs
        .iter()
        .map(|(name, meta)| (name.clone(), type_schema(meta)))
        .collect();
    let required: Vec<&String> = outputs.keys().collect();
    Some(json!({
        "type": "object", "title": title, "additionalProperties": false,
        "properties": properties, "required": required,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_found_like_nodetool_finds_them() {
        assert_eq!(
            extract_json_object("```json\n{\"a\": 1}\n```").unwrap()["a"],
            1
        );
        assert_eq!(extract_json_object("{\"a\": 2}").unwrap()["a"], 2);
        assert_eq!(
            extract_json_object("Sure! {\"a\": 3} done").unwrap()["a"],
            3
        );
        assert!(extract_json_object("no json here").is_none());
        assert!(extract_json_object("[1, 2]").is_none());
    }

    #[test]
    fn dynamic_outputs_become_a_strict_schema() {
        let outputs: Map<String, Value> = serde_json::from_value(json!({
            "title": {"type": "str"},
            "waves": {"type": "list", "type_args": [{"type": "dict"}]},
            "n": {"type": "int"},
        }))
        .unwrap();
        let s = dynamic_output_schema(&outputs, "T").unwrap();
        assert_eq!(
            s["properties"]["waves"],
            json!({"type": "array", "items": {"type": "object"}})
        );
        assert_eq!(s["properties"]["n"], json!({"type": "integer"}));
        assert_eq!(s["required"].as_array().unwrap().len(), 3);
        assert_eq!(s["additionalProperties"], false);
        assert!(dynamic_output_schema(&Map::new(), "T").is_none());
    }
}
