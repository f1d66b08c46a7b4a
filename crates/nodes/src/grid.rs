//! `lib.grid.*` (nodetool-base `lib/grid.py`): CombineImageGrid pastes tiles into one image,
//! SliceImageGrid cuts one image into tiles.

use std::sync::Arc;

use ::image::{imageops, DynamicImage, RgbaImage};
use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::image::{
    as_rgb, blocking, decode, encode_png, image_bytes, is_empty_ref, store_temp_image,
};

/// The most tiles either node handles.
const MAX_TILES: usize = 1024;
/// The largest combined image, per side and in pixels (64 Mpx, 256 MiB as RGBA).
const MAX_SIDE: u64 = 16_384;
const MAX_PIXELS: u64 = 64 * 1024 * 1024;

pub fn register(r: &mut Registry) {
    r.register(Arc::new(CombineImageGrid {
        spec: NodeSpec::new("lib.grid.CombineImageGrid", "Combine Image Grid")
            .input("tiles", "list[image]", json!([]))
            .input("columns", "int", json!(0))
            .output("output", "image")
            .cacheable(),
    }));
    r.register(Arc::new(SliceImageGrid {
        spec: NodeSpec::new("lib.grid.SliceImageGrid", "Slice Image Grid")
            .required("image", "image")
            .input("columns", "int", json!(0))
            .input("rows", "int", json!(0))
            .output("output", "list[image]")
            .cacheable(),
    }));
}

fn grid_error(msg: String) -> Error {
    Error::invalid_input(msg).with_operation("image.grid")
}

/// A `ge=0` count input.
fn count(inputs: &NodeInputs, name: &'static str) -> Result<u64> {
    let v = inputs.opt_i64(name)?.unwrap_or(0);
    u64::try_from(v)
        .map_err(|_| grid_error(format!("input `{name}` must be 0 or more, got {v}")))
        .map_err(|e| e.with_context("input", name))
}

/// Tiles (converted to RGBA) in rows of `columns` (0: `isqrt(len)`), each cell as large as the
/// largest tile, on a transparent canvas; each tile replaces its cell's top-left pixels.
#[derive(Debug)]
struct CombineImageGrid {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for CombineImageGrid {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.grid";
        let tiles = inputs.list("tiles")?;
        if tiles.is_empty() {
            return Err(grid_error("No tiles provided for combining.".into())
                .with_context("input", "tiles"));
        }
        if tiles.len() > MAX_TILES {
            return Err(grid_error(format!(
                "{} tiles is more than the {MAX_TILES} this node combines",
                tiles.len()
            )));
        }
        let mut columns = count(inputs, "columns")?;
        if columns == 0 {
            columns = (tiles.len() as u64).isqrt();
        }
        let mut all = Vec::with_capacity(tiles.len());
        for (i, tile) in tiles.iter().enumerate() {
            if !tile.is_object() || is_empty_ref(tile) {
                return Err(grid_error(format!("tile {i} is not an image ref"))
                    .with_context("input", "tiles"));
            }
            let bytes = ctx
                .asset_bytes(tile)
                .await
                .map_err(|e| e.with_context("tile", i))?;
            all.push(bytes);
        }
        let png = blocking(OP, move || {
            let tiles = all
                .iter()
                .map(|b| Ok(as_rgb(decode(b, OP)?.0).to_rgba8()))
                .collect::<Result<Vec<RgbaImage>>>()?;
            let rows = (tiles.len() as u64).div_ceil(columns);
            let max_w = tiles
                .iter()
                .map(|t| u64::from(t.width()))
                .max()
                .unwrap_or(0);
            let max_h = tiles
                .iter()
                .map(|t| u64::from(t.height()))
                .max()
                .unwrap_or(0);
            let (w, h) = (max_w * columns, max_h * rows);
            if w > MAX_SIDE || h > MAX_SIDE || w * h > MAX_PIXELS {
                return Err(grid_error(format!(
                    "the combined image would be {w}x{h}, over the limit of {MAX_SIDE} pixels \
                     a side and {MAX_PIXELS} pixels"
                )));
            }
            let mut canvas = RgbaImage::new(w as u32, h as u32);
            for (i, tile) in tiles.iter().enumerate() {
                let (row, col) = (i as u64 / columns, i as u64 % columns);
                imageops::replace(
                    &mut canvas,
                    tile,
                    (col * max_w) as i64,
                    (row * max_h) as i64,
                );
            }
            encode_png(&DynamicImage::ImageRgba8(canvas), OP)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

/// `columns` x `rows` tiles (both 0: 3x3; one 0: derived from the aspect ratio), read row by row;
/// tiles are `width // columns` by `height // rows`, and any remainder makes extra, smaller
/// tiles at the right and bottom, as NodeTool's `range(0, width, tile_width)` does.
#[derive(Debug)]
struct SliceImageGrid {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for SliceImageGrid {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.grid";
        let (columns, rows) = (count(inputs, "columns")?, count(inputs, "rows")?);
        let bytes = image_bytes(ctx, inputs, "image", OP).await?;
        let pngs = blocking(OP, move || {
            let img = as_rgb(decode(&bytes, OP)?.0).to_rgb8();
            let (w, h) = (u64::from(img.width()), u64::from(img.height()));
            let (columns, rows) = match (columns, rows) {
                (0, 0) => (3, 3),
                // math.ceil(width / height * rows), in floating point as Python does.
                (0, r) => ((w as f64 / h as f64 * r as f64).ceil() as u64, r),
                (c, 0) => (c, (h as f64 / w as f64 * c as f64).ceil() as u64),
                (c, r) => (c, r),
            };
            let (tw, th) = (w / columns.max(1), h / rows.max(1));
            if tw == 0 || th == 0 {
                return Err(grid_error(format!(
                    "a {w}x{h} image cannot be cut into {columns} columns and {rows} rows"
                )));
            }
            let count = w.div_ceil(tw) * h.div_ceil(th);
            if count > MAX_TILES as u64 {
                return Err(grid_error(format!(
                    "{count} tiles is more than the {MAX_TILES} this node makes"
                )));
            }
            let mut pngs = Vec::new();
            for y in (0..h).step_by(th as usize) {
                for x in (0..w).step_by(tw as usize) {
                    let (cw, ch) = ((x + tw).min(w) - x, (y + th).min(h) - y);
                    let tile = imageops::crop_imm(&img, x as u32, y as u32, cw as u32, ch as u32)
                        .to_image();
                    pngs.push(encode_png(&DynamicImage::ImageRgb8(tile), OP)?);
                }
            }
            Ok(pngs)
        })
        .await?;
        let mut refs = Vec::with_capacity(pngs.len());
        for png in pngs {
            refs.push(store_temp_image(ctx, png).await?);
        }
        out.emit("output", Value::Array(refs)).await
    }
}
