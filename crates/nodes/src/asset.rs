//! Asset save nodes: `nodetool.image.SaveImage`, `nodetool.text.SaveText` and
//! `nodetool.dictionary.SaveJSON` store their input
//! as a new user asset — blob and record — through [`ProcessingContext::create_asset_in`] and
//! emit the asset's ref.
//!
//! `name` is expanded (`%Y %m %d %H %M %S`, UTC) and becomes the record's name; `folder` (a
//! folder ref) is the parent folder, the user's home when empty. In a worker process, which has
//! no asset store, both nodes fail with `Unsupported` (see `EngineResources::asset_store`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::{AssetPlacement, ProcessingContext};
use nodetool_engine::events::Severity;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::image::{blocking, decode, encode_png, image_bytes, is_empty_ref};

fn empty_folder() -> Value {
    json!({"type": "folder", "uri": "", "asset_id": null, "data": null})
}

pub fn register(r: &mut Registry) {
    r.register(Arc::new(SaveImage {
        spec: NodeSpec::new("nodetool.image.SaveImage", "Save Image Asset")
            .required("image", "image")
            .input("folder", "folder", empty_folder())
            .input("name", "str", json!("%Y-%m-%d_%H-%M-%S.png"))
            .output("output", "image"),
    }));
    r.register(Arc::new(SaveText {
        spec: NodeSpec::new("nodetool.text.SaveText", "Save Text")
            // NodeTool took `str | TextRef` here; both are accepted.
            .required("text", "union[str, text]")
            .input("folder", "folder", empty_folder())
            .input("name", "str", json!("%Y-%m-%d-%H-%M-%S.txt"))
            .output("output", "text"),
    }));
    r.register(Arc::new(SaveJson {
        spec: NodeSpec::new("nodetool.dictionary.SaveJSON", "Save JSON")
            .required("data", "any")
            // NodeTool's `folder: str` was a local path; here it names a folder asset (a folder
            // ref or its id), never a path on this machine.
            .input("folder", "union[folder, str]", json!(""))
            .input("name", "str", json!("%Y-%m-%d-%H-%M-%S.json"))
            .input("indent", "int", json!(2))
            .output("output", "str"),
    }));
}

/// Re-encodes the image as PNG (NodeTool's `image_from_pil`) and stores it as an asset.
#[derive(Debug)]
struct SaveImage {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for SaveImage {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.save";
        let placement = placement(inputs)?;
        let bytes = image_bytes(ctx, inputs, "image", OP).await?;
        // NodeTool saves `image_to_pil(image)`: oriented and converted to RGB as Pillow does;
        // here alpha is kept too (the RGB channels are NodeTool's).
        let (png, (width, height), mode) = blocking(OP, move || {
            let img = crate::media::to_rgb_keep_alpha(decode(&bytes, OP)?.0);
            let mode = if img.color().has_alpha() {
                "RGBA"
            } else {
                "RGB"
            };
            Ok((encode_png(&img, OP)?, (img.width(), img.height()), mode))
        })
        .await?;
        let mut asset = ctx
            .create_asset_in("image", "image/png", Bytes::from(png), &placement)
            .await?;
        // The ImageRef metadata NodeTool attaches to a saved image.
        asset["metadata"] =
            serde_json::json!({"width": width, "height": height, "mode": mode, "format": "png"});
        let name = placement.name.unwrap_or_default();
        log_saved(ctx, &name, &asset);
        out.emit("output", asset).await
    }
}

/// Stores the text (UTF-8) as a `text/plain` asset. A text ref input is read first.
#[derive(Debug)]
struct SaveText {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for SaveText {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let placement = placement(inputs)?;
        let text = match inputs.value("text") {
            // A TextRef (`{type: "text", uri, ...}`) is read through the context.
            v @ Value::Object(_) if !is_empty_ref(&v) => {
                let bytes = ctx
                    .asset_bytes(&v)
                    .await
                    .map_err(|e| e.with_context("input", "text"))?;
                String::from_utf8(bytes.to_vec()).map_err(|e| {
                    Error::invalid_input("input `text` refers to bytes that are not UTF-8")
                        .with_operation("text.save")
                        .with_context("input", "text")
                        .with_source(e)
                })?
            }
            Value::Object(_) => String::new(),
            _ => inputs.text("text"),
        };
        let asset = ctx
            .create_asset_in(
                "text",
                "text/plain",
                Bytes::from(text.into_bytes()),
                &placement,
            )
            .await?;
        let name = placement.name.unwrap_or_default();
        log_saved(ctx, &name, &asset);
        out.emit("output", asset).await
    }
}

/// `nodetool.dictionary.SaveJSON`: `json.dumps(data, indent=indent)` stored as an
/// `application/json` asset (as SaveText stores text). The output is the JSON text, NodeTool's
/// `str` output (its Python node returned the text when no folder was given).
#[derive(Debug)]
struct SaveJson {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for SaveJson {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let placement = placement(inputs)?;
        let text = super::json::dumps(&inputs.value("data"), super::json::indent(inputs)?)
            .map_err(|e| e.with_context("input", "data"))?;
        let asset = ctx
            .create_asset_in(
                "json",
                "application/json",
                Bytes::from(text.clone().into_bytes()),
                &placement,
            )
            .await?;
        let name = placement.name.unwrap_or_default();
        log_saved(ctx, &name, &asset);
        out.emit("output", json!(text)).await
    }
}

/// The record's name (`name`, expanded) and folder (`folder`'s `asset_id`, home when empty).
fn placement(inputs: &NodeInputs) -> Result<AssetPlacement> {
    let name = expand_name(&inputs.str("name")?, SystemTime::now());
    Ok(AssetPlacement {
        name: Some(name),
        parent_id: folder_id(&inputs.value("folder")),
    })
}

/// The asset id of a folder ref (`{type: "folder", asset_id, ...}`), `None` when unset. A bare
/// string is taken as the id.
pub(crate) fn folder_id(folder: &Value) -> Option<String> {
    let id = match folder {
        Value::String(s) => Some(s.as_str()),
        Value::Object(m) => m.get("asset_id").and_then(Value::as_str),
        _ => None,
    };
    id.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn log_saved(ctx: &ProcessingContext, name: &str, asset: &Value) {
    let uri = asset.get("uri").and_then(Value::as_str).unwrap_or("");
    ctx.log(Severity::Info, format!("saved {name} as {uri}"));
}

/// Expands the `strftime` fields NodeTool documents for these names (`%Y %m %d %H %M %S`,
/// and `%%`) in UTC; anything else is kept as written.
pub fn expand_name(template: &str, now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{year:04}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_expand_like_strftime() {
        // 2024-02-29T13:05:09Z
        let t = UNIX_EPOCH + Duration::from_secs(1_709_211_909);
        assert_eq!(
            expand_name("%Y-%m-%d_%H-%M-%S.png", t),
            "2024-02-29_13-05-09.png"
        );
        assert_eq!(expand_name("100%% %q.txt%", t), "100% %q.txt%");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
