//! [`PythonNode`]: a discovered Python node type as an engine [`NodeImpl`].
//!
//! One firing is one `execute` (or, for a streaming node, `execute.stream`) request:
//! - **inputs**: media refs of ref-typed properties (`asset://`, `temp://`, an `asset_id`, inline
//!   `data`, a `data:` URI) are read from our storage and sent as `blobs` (msgpack `bin`); the
//!   worker hands the node a file in its workspace. Other values go as `fields`; `null`s are left
//!   out so the node keeps its own defaults.
//! - **secrets**: only the keys the node declares in `required_settings`, from the job's secrets,
//!   else the process's settings ([`crate::SecretSource`]).
//! - **outputs**: every ref that comes back with bytes (a slot's blob, or a nested ref's inline
//!   `data`) is stored in temp storage under the job and becomes a `temp://` ref, as native nodes'
//!   intermediates are; a save node downstream files it in asset storage. Streaming nodes emit
//!   each `chunk` downstream as it arrives.
//! - **events**: `progress` becomes `node_progress`; `update` frames become `log_update`,
//!   `preview_update` and `notification` events.
//!
//! Cancellation and node timeouts drop the request's future; the bridge then sends `cancel`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Value as Json};

use nodetool_core::{Error, Result};
use nodetool_engine::{Emitter, NodeImpl, NodeInputs, NodeSpec, ProcessingContext};

use crate::bridge::PythonBridge;
use crate::convert::{key_text, to_json, to_msgpack};
use crate::events::post_update;
use crate::metadata::NodeMetadata;
use crate::worker::{BlobInput, ExecEvent, ExecuteRequest, Outputs};

type BoxedFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A Python node type run through the bridge.
pub struct PythonNode {
    spec: NodeSpec,
    meta: Arc<NodeMetadata>,
    bridge: PythonBridge,
}

impl std::fmt::Debug for PythonNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonNode")
            .field("type", &self.spec.node_type)
            .finish_non_exhaustive()
    }
}

impl PythonNode {
    pub fn new(meta: NodeMetadata, bridge: PythonBridge) -> Self {
        Self {
            spec: meta.to_spec(),
            meta: Arc::new(meta),
            bridge,
        }
    }

    pub fn metadata(&self) -> &NodeMetadata {
        &self.meta
    }

    async fn request(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
    ) -> Result<ExecuteRequest> {
        let mut req = ExecuteRequest {
            node_type: self.spec.node_type.clone(),
            label: format!("node `{}` ({})", ctx.node_id(), self.spec.node_type),
            stream: self.spec.streaming,
            node_id: ctx.node_id().to_owned(),
            job_id: ctx.job_id().to_owned(),
            workflow_id: ctx.workflow_id().to_owned(),
            user_id: ctx.user_id().to_owned(),
            requires_vram_gb: self.meta.requires_vram_gb,
            max_result_blob_bytes: self.bridge.config().max_result_blob_bytes,
            ..ExecuteRequest::default()
        };
        for (name, value) in inputs.as_map() {
            if value.is_null() {
                continue;
            }
            let prop = self.meta.property(name);
            if prop.is_some_and(|p| p.is_ref()) {
                let blob = if prop.is_some_and(|p| p.is_ref_list()) {
                    load_ref_list(ctx, value).await
                } else {
                    load_ref(ctx, value).await.map(|b| b.map(BlobInput::One))
                }
                .map_err(|e| e.with_context("input", name))?;
                if let Some(blob) = blob {
                    req.blobs.push((name.clone(), blob));
                    // The worker replaces the field with a ref to the file it writes; the
                    // metadata still goes along, the bytes do not.
                    req.fields
                        .push((name.clone(), to_msgpack(&without_data(value))));
                    continue;
                }
            }
            req.fields.push((name.clone(), to_msgpack(value)));
        }
        for key in &self.meta.required_settings {
            let value = ctx
                .secret(key)
                .map(str::to_owned)
                .or_else(|| self.bridge.secret(key));
            if let Some(v) = value {
                req.secrets.push((key.clone(), v));
            }
        }
        Ok(req)
    }
}

#[async_trait]
impl NodeImpl for PythonNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let req = self.request(ctx, inputs).await?;
        let mut exec = self.bridge.execute(&req).await?;
        while let Some(event) = exec.next().await? {
            match event {
                ExecEvent::Progress {
                    progress, total, ..
                } => ctx.post_progress(progress.round() as i64, total.round() as i64),
                ExecEvent::Update(data) => post_update(ctx, &data),
                ExecEvent::Chunk(outputs) | ExecEvent::Result(outputs) => {
                    for (slot, value) in store_outputs(ctx, outputs).await? {
                        // Streaming items carry `null` for slots they do not fill.
                        if !value.is_null() {
                            out.emit(&slot, value).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn ref_obj(v: &Json) -> Option<&Map<String, Json>> {
    v.as_object()
        .filter(|m| m.contains_key("uri") || m.contains_key("asset_id") || m.contains_key("data"))
}

fn without_data(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut m = m.clone();
            if m.get("data").is_some_and(|d| !d.is_null()) {
                m.insert("data".to_owned(), Json::Null);
            }
            Json::Object(m)
        }
        Json::Array(items) => Json::Array(items.iter().map(without_data).collect()),
        other => other.clone(),
    }
}

/// The bytes behind a ref, when they are ours to read; `None` for an empty ref or one the
/// worker resolves itself (`http(s)://`, `file://`, `memory://`).
async fn load_ref(ctx: &ProcessingContext, value: &Json) -> Result<Option<Bytes>> {
    let Some(obj) = ref_obj(value) else {
        return Ok(None);
    };
    let uri = obj.get("uri").and_then(Json::as_str).unwrap_or("");
    let has_data = obj.get("data").is_some_and(|d| !d.is_null());
    let has_id = obj
        .get("asset_id")
        .and_then(Json::as_str)
        .is_some_and(|id| !id.is_empty());
    if !has_data {
        if let Some(rest) = uri.strip_prefix("data:") {
            return decode_data_uri(rest).map(Some);
        }
    }
    if has_data
        || uri.starts_with("asset://")
        || uri.starts_with("temp://")
        || (uri.is_empty() && has_id)
    {
        return ctx.asset_bytes(value).await.map(Some);
    }
    Ok(None)
}

/// A list property: one blob per item, when every item is ours to read.
async fn load_ref_list(ctx: &ProcessingContext, value: &Json) -> Result<Option<BlobInput>> {
    let Some(items) = value.as_array() else {
        return Ok(load_ref(ctx, value).await?.map(BlobInput::One));
    };
    let mut blobs = Vec::with_capacity(items.len());
    for item in items {
        match load_ref(ctx, item).await? {
            Some(b) => blobs.push(b),
            None => return Ok(None),
        }
    }
    Ok((!blobs.is_empty()).then_some(BlobInput::Many(blobs)))
}

/// The payload of a `data:` URI (RFC 2397), after `data:`.
pub fn decode_data_uri(rest: &str) -> Result<Bytes> {
    let (meta, payload) = rest.split_once(',').ok_or_else(|| {
        Error::invalid_input("a data: URI without a comma").with_operation("bridge.data_uri")
    })?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map(Bytes::from)
            .map_err(|e| {
                Error::invalid_input(format!("a data: URI with bad base64: {e}"))
                    .with_operation("bridge.data_uri")
            })
    } else {
        Ok(Bytes::from(
            percent_encoding::percent_decode_str(payload).collect::<Vec<u8>>(),
        ))
    }
}

/// Converts a reply's outputs to engine values, storing every blob in temp storage.
async fn store_outputs(ctx: &ProcessingContext, outputs: Outputs) -> Result<Vec<(String, Json)>> {
    let Outputs { values, mut blobs } = outputs;
    let mut out = Vec::with_capacity(values.len());
    for (slot, value) in values {
        let blob = blobs.remove(&slot);
        let json = convert(ctx, value, blob).await?;
        out.push((slot, json));
    }
    Ok(out)
}

/// One output value: a ref with its slot blob (or nested inline bytes) becomes a `temp://` ref.
fn convert<'a>(
    ctx: &'a ProcessingContext,
    value: Mp,
    blob: Option<Bytes>,
) -> BoxedFuture<'a, Result<Json>> {
    Box::pin(async move {
        match value {
            Mp::Map(entries) => {
                let mut map = Map::new();
                let mut inline: Option<Bytes> = None;
                for (k, v) in entries {
                    let key = key_text(&k);
                    match (key.as_str(), v) {
                        ("data", Mp::Binary(b)) => inline = Some(Bytes::from(b)),
                        (_, v) => {
                            let j = convert(ctx, v, None).await?;
                            map.insert(key, j);
                        }
                    }
                }
                let uri = map
                    .get("uri")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_owned();
                let bytes = match (blob, inline) {
                    (Some(b), _) if uri.starts_with("blob://") || uri.is_empty() => Some(b),
                    (_, Some(b)) => Some(b),
                    _ => None,
                };
                if let Some(bytes) = bytes {
                    let kind = map
                        .get("type")
                        .and_then(Json::as_str)
                        .unwrap_or("asset")
                        .to_owned();
                    let name = format!(
                        "{}-{}.{}",
                        sanitize(ctx.node_id()),
                        nodetool_core::id::new_id(),
                        extension(&bytes, &kind)
                    );
                    let key = ctx.put_temp(&name, bytes).await.map_err(|e| {
                        e.with_context("node", ctx.node_id())
                            .with_operation("bridge.store_output")
                    })?;
                    map.insert(
                        "uri".to_owned(),
                        Json::String(format!("temp://{}", key.as_str())),
                    );
                    map.insert("data".to_owned(), Json::Null);
                } else if uri.starts_with("blob://") {
                    tracing::warn!(node_id = ctx.node_id(), %uri, "python node returned a blob ref without its bytes");
                    map.insert("data".to_owned(), Json::Null);
                } else if map.contains_key("type") && map.contains_key("uri") {
                    map.entry("data").or_insert(Json::Null);
                }
                Ok(Json::Object(map))
            }
            Mp::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(convert(ctx, item, None).await?);
                }
                Ok(Json::Array(out))
            }
            other => Ok(to_json(&other)),
        }
    })
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A file extension from the bytes' magic, else from the ref type.
fn extension(bytes: &[u8], kind: &str) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpg"),
        (b"GIF8", "gif"),
        (b"%PDF", "pdf"),
        (b"ID3", "mp3"),
        (b"OggS", "ogg"),
        (b"fLaC", "flac"),
    ];
    if let Some((_, ext)) = MAGIC.iter().find(|(m, _)| bytes.starts_with(m)) {
        return ext;
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" {
        match &bytes[8..12] {
            b"WAVE" => return "wav",
            b"WEBP" => return "webp",
            _ => {}
        }
    }
    if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        return "mp4";
    }
    match kind {
        "image" => "png",
        "audio" => "wav",
        "video" => "mp4",
        _ => "bin",
    }
}

/// Every node type of `bridge`'s inventory, as engine nodes.
pub fn python_nodes(bridge: &PythonBridge) -> Vec<Arc<PythonNode>> {
    let discovery = bridge.discovery();
    let mut seen = BTreeMap::new();
    for meta in &discovery.nodes {
        seen.entry(meta.node_type.clone())
            .or_insert_with(|| Arc::new(PythonNode::new(meta.clone(), bridge.clone())));
    }
    seen.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_uris_decode() {
        assert_eq!(
            decode_data_uri("image/png;base64,aGVsbG8=")
                .expect("b64")
                .as_ref(),
            b"hello"
        );
        assert_eq!(
            decode_data_uri("text/plain,a%20b").expect("pct").as_ref(),
            b"a b"
        );
        assert!(decode_data_uri("nocomma").is_err());
        assert!(decode_data_uri(";base64,!!").is_err());
    }

    #[test]
    fn extensions_follow_magic_then_type() {
        assert_eq!(extension(b"\x89PNG\r\n\x1a\nrest", "asset"), "png");
        assert_eq!(extension(b"RIFF\0\0\0\0WAVEfmt ", "asset"), "wav");
        assert_eq!(extension(b"????", "audio"), "wav");
        assert_eq!(extension(b"????", "document"), "bin");
    }
}
