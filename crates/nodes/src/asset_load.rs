//! Asset folder loaders: `nodetool.image.LoadImageAssets`, `nodetool.text.LoadTextAssets` and
//! `nodetool.audio.LoadAudioAssets` (NodeTool's names: one `folder` property, outputs `<kind>`
//! and `name`).
//!
//! Each is a generator: it lists the folder's assets whose content type starts with its kind
//! (`image`, `text`, `audio`, as NodeTool's `list_assets(parent_id, content_type)` filters),
//! page by page in id (creation) order, and emits each asset as it is listed — the ref
//! `{type, uri: "asset://KEY", asset_id, data: null}` on the kind's slot and the record's name on
//! `name` — so downstream nodes start on the first asset while the rest are still being listed.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::asset::folder_id;

/// Records listed per store query: bounds memory for large folders.
const PAGE: usize = 100;

pub fn register(r: &mut Registry) {
    for (node_type, title, kind) in [
        (
            "nodetool.image.LoadImageAssets",
            "Load Image Assets",
            "image",
        ),
        ("nodetool.text.LoadTextAssets", "Load Text Assets", "text"),
        (
            "nodetool.audio.LoadAudioAssets",
            "Load Audio Assets",
            "audio",
        ),
    ] {
        r.register(Arc::new(LoadAssets {
            spec: NodeSpec::new(node_type, title)
                .input(
                    "folder",
                    "folder",
                    json!({"type": "folder", "uri": "", "asset_id": null, "data": null}),
                )
                .output(kind, kind)
                .output("name", "str")
                .streaming(),
            kind,
        }));
    }
}

/// Streams the assets of one kind in a folder.
#[derive(Debug)]
struct LoadAssets {
    spec: NodeSpec,
    /// Content-type prefix, output slot and ref `type` at once.
    kind: &'static str,
}

#[async_trait]
impl NodeImpl for LoadAssets {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let op = "assets.load";
        let Some(folder) = folder_id(&inputs.value("folder")) else {
            // NodeTool's message for an unset folder.
            return Err(Error::invalid_input("Please select an asset folder.")
                .with_operation(op)
                .with_context("input", "folder"));
        };
        let mut cursor = None;
        loop {
            let page = ctx
                .list_assets(&folder, self.kind, cursor.take(), PAGE)
                .await
                .map_err(|e| e.with_context("folder", &folder))?;
            for record in page.assets {
                let Some(key) = record.key() else {
                    tracing::warn!(asset = %record.id, "asset without a valid blob key skipped");
                    continue;
                };
                let asset_ref = json!({
                    "type": self.kind,
                    "uri": format!("asset://{}", key.as_str()),
                    "asset_id": record.id,
                    "data": null,
                });
                out.emit(self.kind, asset_ref).await?;
                out.emit("name", Value::String(record.name)).await?;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }
}
