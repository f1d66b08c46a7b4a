//! `nodetool.image.*` and `lib.pillow.*` (also under NodeTool's newer `lib.image.*` names)
//! on the `image` crate.
//!
//! Every node downloads the ref through the context, then decodes, operates and encodes PNG in
//! one `spawn_blocking` call (as NodeTool's `image_from_pil` does, results are PNG), and emits a
//! `temp://` ref to the result in temp storage: intermediates are not user assets.
//!
//! As NodeTool's `image_to_pil` does, operations see the input converted to RGB (alpha is
//! dropped). Pixel maths follow Pillow where it is cheap to (ITU-R 601-2 luma for grayscale,
//! `blend` truncation for the enhancers), so results are close to NodeTool's, not bit-exact.
//! `GetMetadata` deliberately reports the file's own format and mode, where NodeTool reports
//! its converted copy (always "RGB", format "Unknown").

use std::io::Cursor;
use std::sync::Arc;

use ::image::imageops::FilterType;
use ::image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Luma, LumaA, Rgb, Rgba,
};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};

use nodetool_core::{Error, ErrorKind, Result};

use crate::context::ProcessingContext;
use crate::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use crate::registry::Registry;

/// NodeTool's limit on sizes and coordinates of these nodes (`le=4096` in nodetool-base).
const MAX_SIDE: i64 = 4096;

/// A pure image operation: parameters from the inputs, pixels in, pixels out.
type ImageOp = fn(&NodeInputs, DynamicImage) -> Result<DynamicImage>;

/// A Pillow node: class path, title, operation name, its one parameter (if any), operation.
type PillowNode = (
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str, Value)>,
    ImageOp,
);

pub fn register(r: &mut Registry) {
    let ops: [(&str, &str, &str, ImageOp); 4] = [
        ("nodetool.image.Resize", "Resize", "image.resize", resize),
        ("nodetool.image.Crop", "Crop", "image.crop", crop),
        ("nodetool.image.Scale", "Scale", "image.scale", scale),
        ("nodetool.image.Fit", "Fit", "image.fit", fit),
    ];
    for (node_type, title, op_name, op) in ops {
        let spec = NodeSpec::new(node_type, title).required("image", "image");
        let spec = match title {
            "Resize" | "Fit" => {
                spec.input("width", "int", json!(512))
                    .input("height", "int", json!(512))
            }
            "Crop" => spec
                .input("left", "int", json!(0))
                .input("top", "int", json!(0))
                .input("right", "int", json!(512))
                .input("bottom", "int", json!(512)),
            _ => spec.input("scale", "float", json!(1.0)),
        };
        register_op(r, spec.output("output", "image"), op_name, op);
    }

    // Pillow nodes keep their old `lib.pillow.*` names and NodeTool's newer `lib.image.*` ones.
    let pillow: [PillowNode; 6] = [
        (
            "enhance.Brightness",
            "Brightness",
            "image.brightness",
            Some(("factor", "float", json!(1.0))),
            brightness,
        ),
        (
            "enhance.Contrast",
            "Contrast",
            "image.contrast",
            Some(("factor", "float", json!(1.0))),
            contrast,
        ),
        (
            "enhance.Sharpness",
            "Sharpness",
            "image.sharpness",
            Some(("factor", "float", json!(1.0))),
            sharpness,
        ),
        (
            "filter.Blur",
            "Blur",
            "image.blur",
            Some(("radius", "int", json!(2))),
            blur,
        ),
        (
            "filter.ConvertToGrayscale",
            "Convert To Grayscale",
            "image.grayscale",
            None,
            grayscale,
        ),
        ("filter.Invert", "Invert", "image.invert", None, invert),
    ];
    for (class, title, op_name, param, op) in pillow {
        for ns in ["lib.pillow", "lib.image"] {
            let mut spec = NodeSpec::new(format!("{ns}.{class}"), title).required("image", "image");
            if let Some((name, ty, default)) = &param {
                spec = spec.input(name, ty, default.clone());
            }
            register_op(r, spec.output("output", "image"), op_name, op);
        }
    }

    for node_type in [
        "lib.pillow.__init__.Blend",
        "lib.pillow.Blend",
        "lib.image.Blend",
    ] {
        r.register(Arc::new(BlendNode {
            spec: NodeSpec::new(node_type, "Blend")
                .required("image1", "image")
                .required("image2", "image")
                .input("alpha", "float", json!(0.5))
                .output("output", "image"),
        }));
    }

    r.register(Arc::new(GetMetadataNode {
        spec: NodeSpec::new("nodetool.image.GetMetadata", "Get Metadata")
            .required("image", "image")
            .output("format", "str")
            .output("mode", "str")
            .output("width", "int")
            .output("height", "int")
            .output("channels", "int"),
    }));
}

fn register_op(r: &mut Registry, spec: NodeSpec, op_name: &'static str, op: ImageOp) {
    r.register(Arc::new(ImageOpNode { spec, op_name, op }));
}

/// One image in, one image out.
#[derive(Debug)]
struct ImageOpNode {
    spec: NodeSpec,
    op_name: &'static str,
    op: ImageOp,
}

#[async_trait]
impl NodeImpl for ImageOpNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let bytes = image_bytes(ctx, inputs, "image", self.op_name).await?;
        let (op, op_name, params) = (self.op, self.op_name, inputs.clone());
        let png = blocking(op_name, move || {
            let img = as_rgb(decode(&bytes, op_name)?.0);
            let result = op(&params, img).map_err(|e| e.with_operation(op_name))?;
            encode_png(&result, op_name)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

/// `lib.pillow.Blend`: `image1 + alpha * (image2 - image1)`; `image2` is first fitted to
/// `image1`'s size when they differ, as NodeTool does.
#[derive(Debug)]
struct BlendNode {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for BlendNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.blend";
        let alpha = opt_f64(inputs, "alpha")?.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&alpha) {
            return Err(param_error(
                OP,
                "alpha",
                format!("{alpha} is not within 0..=1"),
            ));
        }
        let first = image_bytes(ctx, inputs, "image1", OP).await?;
        let second = image_bytes(ctx, inputs, "image2", OP).await?;
        let png = blocking(OP, move || {
            let a = as_rgb(decode(&first, OP)?.0);
            let mut b = as_rgb(decode(&second, OP)?.0);
            if (a.width(), a.height()) != (b.width(), b.height()) {
                b = b.resize_to_fill(a.width(), a.height(), FilterType::Lanczos3);
            }
            let mut raw = Raw::from(a);
            let other = Raw::from(b);
            for (x, y) in raw.data.iter_mut().zip(other.data.iter()) {
                *x = pil_blend(*x, *y, alpha);
            }
            encode_png(&raw.into_image(OP)?, OP)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

/// `nodetool.image.GetMetadata`: format, mode, size and channel count, read from the header
/// without decoding the pixels.
#[derive(Debug)]
struct GetMetadataNode {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for GetMetadataNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.get_metadata";
        let bytes = image_bytes(ctx, inputs, "image", OP).await?;
        let (format, color, (width, height)) = blocking(OP, move || {
            let reader = reader(&bytes, OP)?;
            let format = reader.format();
            let decoder = reader.into_decoder().map_err(|e| decode_error(e, OP))?;
            Ok((format, decoder.color_type(), decoder.dimensions()))
        })
        .await?;
        out.emit("format", json!(format_name(format))).await?;
        out.emit("mode", json!(pil_mode(color))).await?;
        out.emit("width", json!(width)).await?;
        out.emit("height", json!(height)).await?;
        out.emit("channels", json!(color.channel_count())).await
    }
}

// ---- shared with the asset nodes -------------------------------------------------------------

/// NodeTool's empty ref: `ImageRef()` as a property default.
pub(crate) fn is_empty_ref(v: &Value) -> bool {
    let blank = |k: &str| match v.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    v.is_null() || (v.is_object() && blank("uri") && blank("asset_id") && blank("data"))
}

/// The bytes of the asset ref in input `name`, or a clear error naming the input.
pub(crate) async fn image_bytes(
    ctx: &ProcessingContext,
    inputs: &NodeInputs,
    name: &'static str,
    op: &'static str,
) -> Result<Bytes> {
    let image = inputs.value(name);
    if is_empty_ref(&image) {
        return Err(Error::invalid_input(format!(
            "input `{name}` is not connected: no image given"
        ))
        .with_operation(op)
        .with_context("input", name));
    }
    if !image.is_object() {
        return Err(Error::invalid_input(format!(
            "input `{name}` must be an image ref ({{type, uri, asset_id, data}}), got {}",
            crate::types::type_of(&image)
        ))
        .with_operation(op)
        .with_context("input", name));
    }
    ctx.asset_bytes(&image)
        .await
        .map_err(|e| e.with_context("input", name))
}

fn reader<'a>(bytes: &'a [u8], op: &'static str) -> Result<ImageReader<Cursor<&'a [u8]>>> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| {
            Error::invalid_input(format!("cannot read image: {e}"))
                .with_operation(op)
                .with_source(e)
        })
}

fn decode_error(e: ::image::ImageError, op: &'static str) -> Error {
    let kind = match &e {
        ::image::ImageError::Unsupported(_) => ErrorKind::Unsupported,
        ::image::ImageError::Limits(_) => ErrorKind::TooLarge,
        _ => ErrorKind::InvalidInput,
    };
    Error::new(kind, format!("cannot decode image: {e}"))
        .with_operation(op)
        .with_source(e)
}

/// Decodes any supported format (the decoder's default memory limits apply).
pub(crate) fn decode(
    bytes: &[u8],
    op: &'static str,
) -> Result<(DynamicImage, Option<ImageFormat>)> {
    let reader = reader(bytes, op)?;
    let format = reader.format();
    if format.is_none() {
        return Err(Error::invalid_input(
            "cannot decode image: not a recognised image format (png, jpeg, webp)",
        )
        .with_operation(op)
        .with_context("bytes", bytes.len()));
    }
    let image = reader.decode().map_err(|e| decode_error(e, op))?;
    Ok((image, format))
}

/// NodeTool's `image_to_pil`: `PIL.Image.open(buffer).convert("RGB")`.
fn as_rgb(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) => image,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

pub(crate) fn encode_png(image: &DynamicImage, op: &'static str) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).map_err(|e| {
        Error::unexpected(format!("cannot encode PNG: {e}"))
            .with_operation(op)
            .with_source(e)
    })?;
    Ok(out.into_inner())
}

/// Runs CPU-heavy image work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::unexpected(format!("image task failed: {e}")).with_operation(op))?
}

/// Stores a PNG in temp storage under the job and returns its image ref.
async fn store_temp_image(ctx: &ProcessingContext, png: Vec<u8>) -> Result<Value> {
    let name = format!("{}.png", nodetool_core::id::new_id());
    let key = ctx.put_temp(&name, Bytes::from(png)).await?;
    Ok(json!({
        "type": "image",
        "uri": format!("temp://{}", key.as_str()),
        "asset_id": null,
        "data": null,
    }))
}

// ---- operations -----------------------------------------------------------------------------

fn param_error(op: &'static str, name: &'static str, msg: String) -> Error {
    Error::invalid_input(format!("input `{name}`: {msg}"))
        .with_operation(op)
        .with_context("input", name)
}

/// A float input, `None` when absent or null.
fn opt_f64(i: &NodeInputs, name: &str) -> Result<Option<f64>> {
    match i.get(name) {
        None => Ok(None),
        Some(_) => i.f64(name).map(Some),
    }
}

/// A target side: 1..=4096.
fn side(i: &NodeInputs, name: &'static str, default: i64) -> Result<u32> {
    let v = i.opt_i64(name)?.unwrap_or(default);
    if !(1..=MAX_SIDE).contains(&v) {
        return Err(param_error(
            "image.size",
            name,
            format!("{v} is not within 1..={MAX_SIDE}"),
        ));
    }
    Ok(v as u32)
}

fn resize(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let (w, h) = (side(i, "width", 512)?, side(i, "height", 512)?);
    Ok(img.resize_exact(w, h, FilterType::Lanczos3))
}

/// Centre crop to the target aspect ratio, then resize (Pillow's `ImageOps.fit`).
fn fit(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let (w, h) = (side(i, "width", 512)?, side(i, "height", 512)?);
    Ok(img.resize_to_fill(w, h, FilterType::Lanczos3))
}

fn scale(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let s = opt_f64(i, "scale")?.unwrap_or(1.0);
    if !(s > 0.0 && s <= 10.0) {
        return Err(param_error(
            "image.scale",
            "scale",
            format!("{s} is not within (0, 10]"),
        ));
    }
    // int() truncation, as NodeTool computes the new size.
    let (w, h) = (
        (f64::from(img.width()) * s) as u32,
        (f64::from(img.height()) * s) as u32,
    );
    if w == 0 || h == 0 {
        return Err(param_error(
            "image.scale",
            "scale",
            format!(
                "{s} shrinks the {}x{} image to nothing",
                img.width(),
                img.height()
            ),
        ));
    }
    if i64::from(w.max(h)) > MAX_SIDE * 4 {
        return Err(param_error(
            "image.scale",
            "scale",
            format!("the result {w}x{h} would be too large"),
        )
        .with_context("max_side", MAX_SIDE * 4));
    }
    Ok(img.resize_exact(w, h, FilterType::Lanczos3))
}

/// The box `(left, top, right, bottom)` must lie inside the image and not be empty.
fn crop(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let left = i.opt_i64("left")?.unwrap_or(0);
    let top = i.opt_i64("top")?.unwrap_or(0);
    let right = i.opt_i64("right")?.unwrap_or(512);
    let bottom = i.opt_i64("bottom")?.unwrap_or(512);
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let inside = 0 <= left && left < right && right <= w && 0 <= top && top < bottom && bottom <= h;
    if !inside {
        return Err(Error::invalid_input(format!(
            "crop box (left {left}, top {top}, right {right}, bottom {bottom}) is not a \
             non-empty box inside the {w}x{h} image"
        ))
        .with_operation("image.crop")
        .with_context("width", w)
        .with_context("height", h));
    }
    Ok(img.crop_imm(
        left as u32,
        top as u32,
        (right - left) as u32,
        (bottom - top) as u32,
    ))
}

fn factor(i: &NodeInputs, op: &'static str) -> Result<f64> {
    let f = opt_f64(i, "factor")?.unwrap_or(1.0);
    if !f.is_finite() {
        return Err(param_error(op, "factor", format!("{f} is not a number")));
    }
    Ok(f)
}

/// Pillow's `ImageEnhance.Brightness`: blend with black.
fn brightness(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let f = factor(i, "image.brightness")?;
    let mut raw = Raw::from(img);
    raw.map_color(|c| pil_blend(0, c, f));
    raw.into_image("image.brightness")
}

/// Pillow's `ImageEnhance.Contrast`: blend with the mean grey level.
fn contrast(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let f = factor(i, "image.contrast")?;
    let mut raw = Raw::from(img);
    let pixels = raw.data.len() / raw.channels;
    let sum: u64 = raw
        .data
        .chunks_exact(raw.channels)
        .map(|px| u64::from(raw.luma(px)))
        .sum();
    let mean = if pixels == 0 {
        0
    } else {
        ((sum as f64 / pixels as f64) + 0.5) as u8
    };
    raw.map_color(|c| pil_blend(mean, c, f));
    raw.into_image("image.contrast")
}

/// Pillow's `ImageEnhance.Sharpness`: blend with the SMOOTH-filtered image (factor < 1 blurs,
/// > 1 sharpens).
fn sharpness(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let f = factor(i, "image.sharpness")?;
    let mut raw = Raw::from(img);
    let smooth = raw.smoothed();
    for (idx, c) in raw.data.iter_mut().enumerate() {
        if idx % raw.channels < raw.color_channels {
            *c = pil_blend(smooth[idx], *c, f);
        }
    }
    raw.into_image("image.sharpness")
}

/// Gaussian blur with standard deviation `radius` (Pillow's `GaussianBlur`); 0 is a no-op.
fn blur(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let radius = i.opt_i64("radius")?.unwrap_or(2);
    if !(0..=128).contains(&radius) {
        return Err(param_error(
            "image.blur",
            "radius",
            format!("{radius} is not within 0..=128"),
        ));
    }
    if radius == 0 {
        return Ok(img);
    }
    Ok(img.blur(radius as f32))
}

/// Pillow's `convert("L")`: ITU-R 601-2 luma, alpha dropped.
fn grayscale(_: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let raw = Raw::from(img);
    let data: Vec<u8> = raw
        .data
        .chunks_exact(raw.channels)
        .map(|px| raw.luma(px))
        .collect();
    ImageBuffer::<Luma<u8>, _>::from_raw(raw.width, raw.height, data)
        .map(DynamicImage::ImageLuma8)
        .ok_or_else(|| {
            Error::unexpected("grayscale buffer size mismatch").with_operation("image.grayscale")
        })
}

/// Pillow's `ImageOps.invert` (alpha, if any, is kept).
fn invert(_: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let mut raw = Raw::from(img);
    raw.map_color(|c| 255 - c);
    raw.into_image("image.invert")
}

/// Pillow's `Image.blend` on one 8-bit sample: `a + alpha * (b - a)`, truncated and clipped.
fn pil_blend(a: u8, b: u8, alpha: f64) -> u8 {
    let v = f64::from(a) + alpha * (f64::from(b) - f64::from(a));
    v.clamp(0.0, 255.0) as u8
}

/// An 8-bit image as interleaved samples: L, LA, RGB or RGBA. Other layouts (16-bit, float)
/// are converted to RGB(A) first, as Pillow does on load for most of them.
struct Raw {
    width: u32,
    height: u32,
    channels: usize,
    color_channels: usize,
    data: Vec<u8>,
}

impl From<DynamicImage> for Raw {
    fn from(img: DynamicImage) -> Self {
        let (width, height) = (img.width(), img.height());
        let (channels, color_channels, data) = match img {
            DynamicImage::ImageLuma8(b) => (1, 1, b.into_raw()),
            DynamicImage::ImageLumaA8(b) => (2, 1, b.into_raw()),
            DynamicImage::ImageRgb8(b) => (3, 3, b.into_raw()),
            DynamicImage::ImageRgba8(b) => (4, 3, b.into_raw()),
            other if other.color().has_alpha() => (4, 3, other.to_rgba8().into_raw()),
            other => (3, 3, other.to_rgb8().into_raw()),
        };
        Self {
            width,
            height,
            channels,
            color_channels,
            data,
        }
    }
}

impl Raw {
    fn map_color(&mut self, f: impl Fn(u8) -> u8) {
        let color = self.color_channels;
        for px in self.data.chunks_exact_mut(self.channels) {
            for c in &mut px[..color] {
                *c = f(*c);
            }
        }
    }

    /// Pillow's L conversion of one pixel: `(R*19595 + G*38470 + B*7471 + 0x8000) >> 16`.
    fn luma(&self, px: &[u8]) -> u8 {
        if self.color_channels == 1 {
            return px[0];
        }
        let (r, g, b) = (u32::from(px[0]), u32::from(px[1]), u32::from(px[2]));
        ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
    }

    /// Pillow's SMOOTH filter (3x3, centre 5, others 1, /13) on every channel; the one-pixel
    /// border is kept as is, as Pillow's 3x3 filters do.
    fn smoothed(&self) -> Vec<u8> {
        let (w, h, ch) = (self.width as usize, self.height as usize, self.channels);
        let mut out = self.data.clone();
        if w < 3 || h < 3 {
            return out;
        }
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for c in 0..ch {
                    let mut sum = 0u32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let weight = if dx == 1 && dy == 1 { 5 } else { 1 };
                            let idx = ((y + dy - 1) * w + (x + dx - 1)) * ch + c;
                            sum += weight * u32::from(self.data[idx]);
                        }
                    }
                    out[(y * w + x) * ch + c] = ((f64::from(sum) / 13.0) + 0.5) as u8;
                }
            }
        }
        out
    }

    fn into_image(self, op: &'static str) -> Result<DynamicImage> {
        let (w, h, data) = (self.width, self.height, self.data);
        let image = match self.channels {
            1 => ImageBuffer::<Luma<u8>, _>::from_raw(w, h, data).map(DynamicImage::ImageLuma8),
            2 => ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, data).map(DynamicImage::ImageLumaA8),
            3 => ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, data).map(DynamicImage::ImageRgb8),
            _ => ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, data).map(DynamicImage::ImageRgba8),
        };
        image.ok_or_else(|| Error::unexpected("image buffer size mismatch").with_operation(op))
    }
}

/// Pillow's `Image.format` names.
fn format_name(format: Option<ImageFormat>) -> &'static str {
    match format {
        Some(ImageFormat::Png) => "PNG",
        Some(ImageFormat::Jpeg) => "JPEG",
        Some(ImageFormat::WebP) => "WEBP",
        Some(ImageFormat::Gif) => "GIF",
        Some(ImageFormat::Bmp) => "BMP",
        Some(ImageFormat::Tiff) => "TIFF",
        _ => "Unknown",
    }
}

/// Pillow's mode for a decoded colour type.
fn pil_mode(color: ::image::ColorType) -> &'static str {
    use ::image::ColorType as C;
    match color {
        C::L8 => "L",
        C::L16 => "I;16",
        C::La8 | C::La16 => "LA",
        C::Rgb8 | C::Rgb16 | C::Rgb32F => "RGB",
        _ => "RGBA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pil_blend_truncates_and_clips() {
        assert_eq!(pil_blend(0, 100, 0.5), 50);
        assert_eq!(pil_blend(0, 101, 0.5), 50);
        assert_eq!(pil_blend(0, 200, 2.0), 255);
        assert_eq!(pil_blend(100, 50, 3.0), 0);
    }

    #[test]
    fn empty_refs() {
        assert!(is_empty_ref(
            &json!({"type": "image", "uri": "", "asset_id": null, "data": null})
        ));
        assert!(is_empty_ref(&Value::Null));
        assert!(!is_empty_ref(&json!({"type": "image", "uri": "temp://x"})));
    }

    #[test]
    fn luma_matches_pillow() {
        let raw = Raw::from(DynamicImage::ImageRgb8(ImageBuffer::from_pixel(
            1,
            1,
            Rgb([255, 0, 0]),
        )));
        assert_eq!(raw.luma(&[255, 0, 0]), 76);
        assert_eq!(raw.luma(&[255, 255, 255]), 255);
    }
}
