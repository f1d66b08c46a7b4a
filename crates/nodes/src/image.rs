//! `nodetool.image.*` and `lib.pillow.*` (also under NodeTool's newer `lib.image.*` names)
//! on the `image` crate.
//!
//! Every node downloads the ref through the context, then decodes, operates and encodes PNG in
//! one `spawn_blocking` call (as NodeTool's `image_from_pil` does, results are PNG), and emits a
//! `temp://` ref to the result in temp storage: intermediates are not user assets.
//!
//! As NodeTool's `image_to_pil` does, operations see the input converted to RGB (alpha is
//! dropped). Pixel maths follow Pillow: ITU-R 601-2 luma for grayscale, `Image.blend` in single
//! precision with truncation for the enhancers, the 3x3 `ImageFilter` kernels in single precision
//! with Pillow's orientation and copied one-pixel border, `ImageOps` look-up tables for
//! autocontrast, equalize, posterize and solarize. These are bit-exact with Pillow; the
//! resampling nodes (Resize, Scale, Fit and the fitting inside Blend/Composite) and the Gaussian
//! blurs (Blur, UnsharpMask) use the `image` crate's filters and are close, not bit-exact.
//! `GetMetadata` deliberately reports the file's own format and mode, where NodeTool reports
//! its converted copy (always "RGB", format "Unknown").
//!
//! Type and property names are NodeTool's (nodetool-base `lib/pillow/{filter,enhance,draw,
//! __init__}.py`, `nodetool/image.py`). Each Pillow node is also registered under NodeTool's
//! newer `lib.image.*` name with the same path; that alias is confirmed for the filter nodes
//! (e.g. `lib.image.filter.Solarize`, `lib.image.filter.Smooth`) and assumed for the others.

use std::io::Cursor;
use std::sync::Arc;

use ::image::imageops::FilterType;
use ::image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Luma, LumaA, Rgb, Rgba,
};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

/// NodeTool's limit on sizes and coordinates of these nodes (`le=4096` in nodetool-base).
const MAX_SIDE: i64 = 4096;

/// A pure image operation: parameters from the inputs, pixels in, pixels out.
type ImageFn = fn(&NodeInputs, DynamicImage) -> Result<DynamicImage>;

/// What an [`ImageOpNode`] does to its image.
#[derive(Debug, Clone, Copy)]
enum ImageOp {
    Fn(ImageFn),
    /// One of Pillow's fixed 3x3 `ImageFilter` kernels (no parameters).
    Kernel(&'static Kernel),
}

impl ImageOp {
    fn apply(
        self,
        params: &NodeInputs,
        img: DynamicImage,
        op_name: &'static str,
    ) -> Result<DynamicImage> {
        match self {
            ImageOp::Fn(f) => f(params, img),
            ImageOp::Kernel(k) => {
                let mut raw = Raw::from(img);
                raw.data = raw.kernel3x3(k);
                raw.into_image(op_name)
            }
        }
    }
}

/// A Pillow node: class path, title, operation name, its parameters (name, type, default),
/// operation.
type PillowNode = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str, Value)>,
    ImageFn,
);

pub fn register(r: &mut Registry) {
    let ops: [(&str, &str, &str, ImageFn); 5] = [
        ("nodetool.image.Resize", "Resize", "image.resize", resize),
        ("nodetool.image.Crop", "Crop", "image.crop", crop),
        ("nodetool.image.Scale", "Scale", "image.scale", scale),
        ("nodetool.image.Fit", "Fit", "image.fit", fit),
        (
            "nodetool.image.Blur",
            "Blur",
            "image.blur_typed",
            typed_blur,
        ),
    ];
    for (node_type, title, op_name, op) in ops {
        let spec = NodeSpec::new(node_type, title).required("image", "image");
        let spec = match title {
            "Resize" | "Fit" => {
                spec.input("width", "int", json!(512))
                    .input("height", "int", json!(512))
            }
            "Blur" => {
                spec.input("blur_type", "enum", json!("gaussian"))
                    .input("size", "int", json!(5))
            }
            "Crop" => spec
                .input("left", "int", json!(0))
                .input("top", "int", json!(0))
                .input("right", "int", json!(512))
                .input("bottom", "int", json!(512)),
            _ => spec.input("scale", "float", json!(1.0)),
        };
        register_op(r, spec.output("output", "image"), op_name, ImageOp::Fn(op));
    }

    // Pillow nodes keep their old `lib.pillow.*` names and NodeTool's newer `lib.image.*` ones.
    let factor = || vec![("factor", "float", json!(1.0))];
    let pillow: Vec<PillowNode> = vec![
        (
            "enhance.Brightness",
            "Brightness",
            "image.brightness",
            factor(),
            brightness,
        ),
        (
            "enhance.Contrast",
            "Contrast",
            "image.contrast",
            factor(),
            contrast,
        ),
        (
            "enhance.Sharpness",
            "Sharpness",
            "image.sharpness",
            factor(),
            sharpness,
        ),
        ("enhance.Color", "Color", "image.color", factor(), color),
        (
            "enhance.AutoContrast",
            "Auto Contrast",
            "image.autocontrast",
            vec![("cutoff", "int", json!(0))],
            autocontrast,
        ),
        (
            "enhance.Equalize",
            "Equalize",
            "image.equalize",
            vec![],
            equalize,
        ),
        (
            "enhance.RankFilter",
            "Rank Filter",
            "image.rank_filter",
            vec![("size", "int", json!(3)), ("rank", "int", json!(3))],
            rank_filter,
        ),
        (
            "enhance.UnsharpMask",
            "Unsharp Mask",
            "image.unsharp_mask",
            vec![
                ("radius", "int", json!(2)),
                ("percent", "int", json!(150)),
                ("threshold", "int", json!(3)),
            ],
            unsharp_mask,
        ),
        (
            "filter.Blur",
            "Blur",
            "image.blur",
            vec![("radius", "int", json!(2))],
            blur,
        ),
        (
            "filter.ConvertToGrayscale",
            "Convert To Grayscale",
            "image.grayscale",
            vec![],
            grayscale,
        ),
        ("filter.Invert", "Invert", "image.invert", vec![], invert),
        (
            "filter.Solarize",
            "Solarize",
            "image.solarize",
            vec![("threshold", "int", json!(128))],
            solarize,
        ),
        (
            "filter.Posterize",
            "Posterize",
            "image.posterize",
            vec![("bits", "int", json!(4))],
            posterize,
        ),
        (
            "filter.Expand",
            "Expand",
            "image.expand",
            vec![("border", "int", json!(0)), ("fill", "int", json!(0))],
            expand,
        ),
        (
            "filter.GetChannel",
            "Get Channel",
            "image.get_channel",
            vec![("channel", "enum", json!("R"))],
            get_channel,
        ),
    ];
    // Pillow's fixed `ImageFilter` kernels: (class path, title, operation name, kernel).
    let kernels: [(&str, &str, &str, &'static Kernel); 7] = [
        (
            "enhance.EdgeEnhance",
            "Edge Enhance",
            "image.edge_enhance",
            &EDGE_ENHANCE,
        ),
        ("enhance.Sharpen", "Sharpen", "image.sharpen", &SHARPEN),
        ("enhance.Detail", "Detail", "image.detail", &DETAIL),
        ("filter.Contour", "Contour", "image.contour", &CONTOUR),
        ("filter.Emboss", "Emboss", "image.emboss", &EMBOSS),
        (
            "filter.FindEdges",
            "Find Edges",
            "image.find_edges",
            &FIND_EDGES,
        ),
        ("filter.Smooth", "Smooth", "image.smooth", &SMOOTH),
    ];
    let pillow = pillow
        .into_iter()
        .map(|(class, title, op_name, params, op)| (class, title, op_name, params, ImageOp::Fn(op)))
        .chain(
            kernels.into_iter().map(|(class, title, op_name, k)| {
                (class, title, op_name, vec![], ImageOp::Kernel(k))
            }),
        );
    for (class, title, op_name, params, op) in pillow {
        let mut names = vec![format!("lib.pillow.{class}"), format!("lib.image.{class}")];
        // Newer NodeTool files UnsharpMask under filter.
        if class == "enhance.UnsharpMask" {
            names.push("lib.image.filter.UnsharpMask".to_owned());
        }
        // Bundled examples saved before the namespaces were flattened still use these.
        if matches!(class, "enhance.Brightness" | "enhance.Contrast") {
            names.push(format!("nodetool.lib.pillow.{class}"));
            names.push(format!("nodetool.lib.image.{class}"));
        }
        for node_type in names {
            let mut spec = NodeSpec::new(node_type, title).required("image", "image");
            for (name, ty, default) in &params {
                spec = spec.input(name, ty, default.clone());
            }
            register_op(r, spec.output("output", "image"), op_name, op);
        }
    }

    for node_type in ["lib.pillow.draw.Background", "lib.image.draw.Background"] {
        r.register(Arc::new(BackgroundNode {
            spec: NodeSpec::new(node_type, "Background")
                .input("width", "int", json!(512))
                .input("height", "int", json!(512))
                .input(
                    "color",
                    "color",
                    json!({"type": "color", "value": "#FFFFFF"}),
                )
                .output("output", "image"),
        }));
    }
    r.register(Arc::new(MultiImageNode {
        spec: NodeSpec::new("nodetool.image.Paste", "Paste")
            .required("image", "image")
            .required("paste", "image")
            .input("left", "int", json!(0))
            .input("top", "int", json!(0))
            .output("output", "image"),
        images: &["image", "paste"],
        op_name: "image.paste",
        op: paste,
    }));
    for node_type in [
        "lib.pillow.__init__.Composite",
        "lib.pillow.Composite",
        "lib.image.Composite",
    ] {
        r.register(Arc::new(MultiImageNode {
            spec: NodeSpec::new(node_type, "Composite")
                .required("image1", "image")
                .required("image2", "image")
                .required("mask", "image")
                .output("output", "image"),
            images: &["image1", "image2", "mask"],
            op_name: "image.composite",
            op: composite,
        }));
    }

    for node_type in [
        "lib.pillow.__init__.Blend",
        "lib.pillow.Blend",
        "lib.image.Blend",
    ] {
        r.register(Arc::new(MultiImageNode {
            spec: NodeSpec::new(node_type, "Blend")
                .required("image1", "image")
                .required("image2", "image")
                .input("alpha", "float", json!(0.5))
                .output("output", "image"),
            images: &["image1", "image2"],
            op_name: "image.blend",
            op: blend,
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
            let result = op
                .apply(&params, img, op_name)
                .map_err(|e| e.with_operation(op_name))?;
            encode_png(&result, op_name)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

/// Several images in (named inputs, each converted to RGB), one out.
type MultiImageOp = fn(&NodeInputs, Vec<DynamicImage>) -> Result<DynamicImage>;

/// `nodetool.image.Paste`, `lib.pillow.Composite`, `lib.pillow.Blend`: every image input is downloaded, then the
/// operation runs off the async workers.
#[derive(Debug)]
struct MultiImageNode {
    spec: NodeSpec,
    images: &'static [&'static str],
    op_name: &'static str,
    op: MultiImageOp,
}

#[async_trait]
impl NodeImpl for MultiImageNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let mut all = Vec::with_capacity(self.images.len());
        for name in self.images {
            all.push(image_bytes(ctx, inputs, name, self.op_name).await?);
        }
        let (op, op_name, params) = (self.op, self.op_name, inputs.clone());
        let png = blocking(op_name, move || {
            let images = all
                .iter()
                .map(|b| Ok(as_rgb(decode(b, op_name)?.0)))
                .collect::<Result<Vec<_>>>()?;
            let result = op(&params, images).map_err(|e| e.with_operation(op_name))?;
            encode_png(&result, op_name)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

/// `lib.pillow.draw.Background`: `Image.new("RGB", (width, height), color)`.
#[derive(Debug)]
struct BackgroundNode {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for BackgroundNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.background";
        let (w, h) = (side(inputs, "width", 512)?, side(inputs, "height", 512)?);
        let color = color_input(inputs, "color", OP)?;
        let png = blocking(OP, move || {
            let img = ImageBuffer::from_pixel(w, h, Rgb(color));
            encode_png(&DynamicImage::ImageRgb8(img), OP)
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
            let mut decoder = reader.into_decoder().map_err(|e| decode_error(e, OP))?;
            let (w, h) = decoder.dimensions();
            // Sizes as NodeTool reports them: after exif_transpose.
            let turned = matches!(
                decoder.orientation(),
                Ok(::image::metadata::Orientation::Rotate90
                    | ::image::metadata::Orientation::Rotate270
                    | ::image::metadata::Orientation::Rotate90FlipH
                    | ::image::metadata::Orientation::Rotate270FlipH)
            );
            let size = if turned { (h, w) } else { (w, h) };
            Ok((format, decoder.color_type(), size))
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
            nodetool_engine::types::type_of(&image)
        ))
        .with_operation(op)
        .with_context("input", name));
    }
    let bytes = ctx
        .asset_bytes(&image)
        .await
        .map_err(|e| e.with_context("input", name))?;
    // The decompression-bomb guard, from the header, before anything is decoded.
    crate::media::check_pixels(&bytes, ctx.media_policy().image_max_pixels, op)
        .map_err(|e| e.with_context("input", name))?;
    Ok(bytes)
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

pub(crate) use crate::media::decode_error;

/// Decodes any supported format with its EXIF orientation applied (see [`crate::media`]);
/// the pixel cap here is Pillow's default, the configured one is checked by [`image_bytes`].
pub(crate) fn decode(
    bytes: &[u8],
    op: &'static str,
) -> Result<(DynamicImage, Option<ImageFormat>)> {
    crate::media::decode(
        bytes,
        nodetool_engine::media::DEFAULT_IMAGE_MAX_PIXELS * 2,
        op,
    )
}

/// NodeTool's `image_to_pil`: `PIL.Image.open(buffer)`, `exif_transpose`, `.convert("RGB")`.
pub(crate) fn as_rgb(image: DynamicImage) -> DynamicImage {
    crate::media::to_rgb(image)
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
pub(crate) async fn store_temp_image(ctx: &ProcessingContext, png: Vec<u8>) -> Result<Value> {
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

/// `lib.pillow.Blend`: `image1 + alpha * (image2 - image1)`; `image2` is first fitted to
/// `image1`'s size when they differ, as NodeTool does.
fn blend(inputs: &NodeInputs, images: Vec<DynamicImage>) -> Result<DynamicImage> {
    const OP: &str = "image.blend";
    let alpha = opt_f64(inputs, "alpha")?.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&alpha) {
        return Err(param_error(
            OP,
            "alpha",
            format!("{alpha} is not within 0..=1"),
        ));
    }
    let mut it = images.into_iter();
    let (Some(a), Some(mut b)) = (it.next(), it.next()) else {
        return Err(Error::unexpected("blend needs two images").with_operation(OP));
    };
    if (a.width(), a.height()) != (b.width(), b.height()) {
        b = b.resize_to_fill(a.width(), a.height(), FilterType::Lanczos3);
    }
    let mut raw = Raw::from(a);
    let other = Raw::from(b);
    for (x, y) in raw.data.iter_mut().zip(other.data.iter()) {
        *x = pil_blend(*x, *y, alpha);
    }
    raw.into_image(OP)
}

pub(crate) fn param_error(op: &'static str, name: &'static str, msg: String) -> Error {
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
    let (cw, ch) = (right - left, bottom - top);
    if cw <= 0 || ch <= 0 || cw > MAX_SIDE || ch > MAX_SIDE {
        return Err(Error::invalid_input(format!(
            "crop box (left {left}, top {top}, right {right}, bottom {bottom}) must be non-empty \
             and at most {MAX_SIDE} pixels on a side"
        ))
        .with_operation("image.crop")
        .with_context("width", w)
        .with_context("height", h));
    }
    if 0 <= left && right <= w && 0 <= top && bottom <= h {
        return Ok(img.crop_imm(left as u32, top as u32, cw as u32, ch as u32));
    }
    // Like Pillow, a box reaching outside the image is filled with zeros there (black, or
    // transparent for images with alpha).
    let mut out = DynamicImage::new(cw as u32, ch as u32, img.color());
    ::image::imageops::replace(&mut out, &img, -left, -top);
    Ok(out)
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

/// `nodetool.image.Blur` (NodeTool's TypeScript image.ts): `size` 0..=100, 0 a no-op.
/// `gaussian` has sigma `max(0.3, size / 2)` (the `image` crate's Gaussian, close to libvips');
/// `box` averages a `k`x`k` square, `k` the odd number from `max(3, min(31, size))`; `motion`
/// averages `w` pixels of the row, `w` the odd number from `max(3, size)`. Box and motion
/// repeat the edge pixels and round to the nearest level.
fn typed_blur(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    const OP: &str = "image.blur_typed";
    let size = int_param(i, "size", 5, (0, 100), OP)?;
    let kind = i.str("blur_type")?;
    if size == 0 {
        return Ok(img);
    }
    let odd = |n: i64| if n % 2 == 0 { n + 1 } else { n };
    let (kw, kh) = match kind.as_str() {
        "gaussian" | "" => return Ok(img.blur((size as f32 * 0.5).max(0.3))),
        "box" => {
            let k = odd(size.clamp(3, 31));
            (k, k)
        }
        "motion" => (odd(size.max(3)), 1),
        other => {
            return Err(param_error(
                OP,
                "blur_type",
                format!("{other:?} is not one of \"gaussian\", \"box\", \"motion\""),
            ))
        }
    };
    let raw = Raw::from(img);
    let (w, h, ch) = (raw.width as i64, raw.height as i64, raw.channels);
    let (rx, ry) = (kw / 2, kh / 2);
    let at = |x: i64, y: i64| (y * w + x) as usize * ch;
    // Separable: exact integer sums along the row, then along the column.
    let mut rows = vec![0u32; raw.data.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..raw.color_channels {
                rows[at(x, y) + c] = (-rx..=rx)
                    .map(|dx| u32::from(raw.data[at((x + dx).clamp(0, w - 1), y) + c]))
                    .sum();
            }
        }
    }
    let mut out = raw.data.clone();
    let n = (kw * kh) as f32;
    for y in 0..h {
        for x in 0..w {
            for c in 0..raw.color_channels {
                let sum: u32 = (-ry..=ry)
                    .map(|dy| rows[at(x, (y + dy).clamp(0, h - 1)) + c])
                    .sum();
                out[at(x, y) + c] = (sum as f32 / n).round() as u8;
            }
        }
    }
    Raw { data: out, ..raw }.into_image(OP)
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

/// An integer input within `lo..=hi` (NodeTool's `ge`/`le`), `default` when absent.
fn int_param(
    i: &NodeInputs,
    name: &'static str,
    default: i64,
    (lo, hi): (i64, i64),
    op: &'static str,
) -> Result<i64> {
    let v = i.opt_i64(name)?.unwrap_or(default);
    if !(lo..=hi).contains(&v) {
        return Err(param_error(
            op,
            name,
            format!("{v} is not within {lo}..={hi}"),
        ));
    }
    Ok(v)
}

/// A 3x3 Pillow `ImageFilter` kernel: weights (row 0 first), scale and offset.
#[derive(Debug)]
struct Kernel {
    weights: [f32; 9],
    scale: f32,
    offset: f32,
}

const SMOOTH: Kernel = Kernel {
    weights: [1., 1., 1., 1., 5., 1., 1., 1., 1.],
    scale: 13.,
    offset: 0.,
};
const CONTOUR: Kernel = Kernel {
    weights: [-1., -1., -1., -1., 8., -1., -1., -1., -1.],
    scale: 1.,
    offset: 255.,
};
const DETAIL: Kernel = Kernel {
    weights: [0., -1., 0., -1., 10., -1., 0., -1., 0.],
    scale: 6.,
    offset: 0.,
};
const EDGE_ENHANCE: Kernel = Kernel {
    weights: [-1., -1., -1., -1., 10., -1., -1., -1., -1.],
    scale: 2.,
    offset: 0.,
};
const EMBOSS: Kernel = Kernel {
    weights: [-1., 0., 0., 0., 1., 0., 0., 0., 0.],
    scale: 1.,
    offset: 128.,
};
const FIND_EDGES: Kernel = Kernel {
    weights: [-1., -1., -1., -1., 8., -1., -1., -1., -1.],
    scale: 1.,
    offset: 0.,
};
const SHARPEN: Kernel = Kernel {
    weights: [-2., -2., -2., -2., 32., -2., -2., -2., -2.],
    scale: 16.,
    offset: 0.,
};

/// Pillow's `clip8` for a float sample: 0 at or below 0, 255 at or above 255, else truncated.
fn clip8(v: f32) -> u8 {
    if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// `ImageOps.solarize`: samples at or above `threshold` are inverted.
fn solarize(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let t = int_param(i, "threshold", 128, (0, 255), "image.solarize")?;
    let mut raw = Raw::from(img);
    raw.map_color(|c| if i64::from(c) < t { c } else { 255 - c });
    raw.into_image("image.solarize")
}

/// `ImageOps.posterize`: keeps the top `bits` bits of every sample.
fn posterize(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let bits = int_param(i, "bits", 4, (1, 8), "image.posterize")?;
    let mask = !((1u16 << (8 - bits)) - 1) as u8;
    let mut raw = Raw::from(img);
    raw.map_color(|c| c & mask);
    raw.into_image("image.posterize")
}

/// `ImageOps.expand(border, fill)`. `fill` is an int, which Pillow reads as a packed pixel, so on
/// NodeTool's RGB copy it is the red level: the border is `(fill, 0, 0)`.
fn expand(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    const OP: &str = "image.expand";
    let border = int_param(i, "border", 0, (0, 512), OP)? as u32;
    let fill = int_param(i, "fill", 0, (0, 255), OP)? as u8;
    let src = img.to_rgb8();
    let (w, h) = (src.width() + 2 * border, src.height() + 2 * border);
    let mut out = ImageBuffer::from_pixel(w, h, Rgb([fill, 0, 0]));
    ::image::imageops::replace(&mut out, &src, i64::from(border), i64::from(border));
    Ok(DynamicImage::ImageRgb8(out))
}

/// `Image.getchannel("R" | "G" | "B")`: one band as a grayscale (L) image.
fn get_channel(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let channel = i.str("channel")?;
    let band = match channel.as_str() {
        "R" | "" => 0,
        "G" => 1,
        "B" => 2,
        other => {
            return Err(param_error(
                "image.get_channel",
                "channel",
                format!("{other:?} is not one of \"R\", \"G\", \"B\""),
            ))
        }
    };
    let rgb = img.to_rgb8();
    let data: Vec<u8> = rgb.pixels().map(|p| p[band]).collect();
    ImageBuffer::<Luma<u8>, _>::from_raw(rgb.width(), rgb.height(), data)
        .map(DynamicImage::ImageLuma8)
        .ok_or_else(|| Error::unexpected("channel buffer size mismatch"))
}

/// `ImageOps.autocontrast(cutoff)`: per band, drop `cutoff`% of the samples at each end of the
/// histogram, then stretch the remaining range linearly to 0..=255.
fn autocontrast(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let cutoff = int_param(i, "cutoff", 0, (0, 255), "image.autocontrast")? as u64;
    let mut raw = Raw::from(img);
    let luts: Vec<[u8; 256]> = (0..raw.color_channels)
        .map(|band| {
            let mut h = raw.histogram(band);
            let n: u64 = h.iter().sum();
            remove_from_end(&mut h, n * cutoff / 100, true);
            remove_from_end(&mut h, n * cutoff / 100, false);
            let lo = h.iter().position(|&c| c > 0).unwrap_or(255);
            let hi = h.iter().rposition(|&c| c > 0).unwrap_or(0);
            let mut lut = [0u8; 256];
            if hi <= lo {
                for (ix, v) in lut.iter_mut().enumerate() {
                    *v = ix as u8;
                }
            } else {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                for (ix, v) in lut.iter_mut().enumerate() {
                    // Python's int(): truncation toward zero, then clipped.
                    *v = ((ix as f64 * scale + offset) as i64).clamp(0, 255) as u8;
                }
            }
            lut
        })
        .collect();
    raw.apply_luts(&luts);
    raw.into_image("image.autocontrast")
}

/// Removes `cut` samples from the low (or high) end of a histogram, as autocontrast does.
fn remove_from_end(h: &mut [u64; 256], mut cut: u64, low: bool) {
    let order: Vec<usize> = if low {
        (0..256).collect()
    } else {
        (0..256).rev().collect()
    };
    for ix in order {
        if cut == 0 {
            break;
        }
        let take = cut.min(h[ix]);
        h[ix] -= take;
        cut -= take;
    }
}

/// `ImageOps.equalize`: per band, a look-up table that flattens the histogram (integer maths:
/// `step = (total - count of the last used level) // 255`, then `lut[i] = (step // 2 + sum of
/// counts below i) // step`).
fn equalize(_: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let mut raw = Raw::from(img);
    let luts: Vec<[u8; 256]> = (0..raw.color_channels)
        .map(|band| {
            let h = raw.histogram(band);
            let used: Vec<u64> = h.iter().copied().filter(|&c| c > 0).collect();
            let mut lut = [0u8; 256];
            for (ix, v) in lut.iter_mut().enumerate() {
                *v = ix as u8;
            }
            if used.len() <= 1 {
                return lut;
            }
            let step = (used.iter().sum::<u64>() - used[used.len() - 1]) / 255;
            if step == 0 {
                return lut;
            }
            let mut n = step / 2;
            for (ix, v) in lut.iter_mut().enumerate() {
                *v = (n / step).min(255) as u8;
                n += h[ix];
            }
            lut
        })
        .collect();
    raw.apply_luts(&luts);
    raw.into_image("image.equalize")
}

/// Pillow's `ImageEnhance.Color`: blend with the image's own grayscale (L) copy.
fn color(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    let f = factor(i, "image.color")?;
    let mut raw = Raw::from(img);
    let (ch, color) = (raw.channels, raw.color_channels);
    let mut grey = vec![0u8; raw.data.len() / ch];
    for (g, px) in grey.iter_mut().zip(raw.data.chunks_exact(ch)) {
        *g = raw.luma(px);
    }
    for (px, g) in raw.data.chunks_exact_mut(ch).zip(grey) {
        for c in &mut px[..color] {
            *c = pil_blend(g, *c, f);
        }
    }
    raw.into_image("image.color")
}

/// `ImageFilter.RankFilter(size, rank)`: each sample becomes the `rank`-th smallest (from 0) of
/// its `size`x`size` neighbourhood, edges extended by repeating the border pixels.
fn rank_filter(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    const OP: &str = "image.rank_filter";
    let size = int_param(i, "size", 3, (1, 512), OP)?;
    let rank = int_param(i, "rank", 3, (0, 512), OP)?;
    if size % 2 == 0 {
        return Err(param_error(OP, "size", format!("{size} is not odd")));
    }
    if rank >= size * size {
        return Err(param_error(
            OP,
            "rank",
            format!("{rank} is not below size*size = {}", size * size),
        ));
    }
    let (size, rank) = (size as usize, rank as usize);
    let mut raw = Raw::from(img);
    let (w, h, ch) = (raw.width as usize, raw.height as usize, raw.channels);
    let half = (size / 2) as i64;
    let clampi = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let mut window = Vec::with_capacity(size * size);
    let mut out = raw.data.clone();
    for y in 0..h {
        for x in 0..w {
            for c in 0..raw.color_channels {
                window.clear();
                for dy in -half..=half {
                    let yy = clampi(y as i64 + dy, h);
                    for dx in -half..=half {
                        let xx = clampi(x as i64 + dx, w);
                        window.push(raw.data[(yy * w + xx) * ch + c]);
                    }
                }
                let (_, v, _) = window.select_nth_unstable(rank);
                out[(y * w + x) * ch + c] = *v;
            }
        }
    }
    raw.data = out;
    raw.into_image(OP)
}

/// `ImageFilter.UnsharpMask(radius, percent, threshold)`: where a sample differs from its blurred
/// value by at least `threshold`, add `diff * percent / 100` (integer division) to it. The blur
/// is the `image` crate's Gaussian with sigma `radius`, where Pillow approximates it with three
/// box blurs, so results are close to Pillow's, not bit-exact.
fn unsharp_mask(i: &NodeInputs, img: DynamicImage) -> Result<DynamicImage> {
    const OP: &str = "image.unsharp_mask";
    let radius = int_param(i, "radius", 2, (0, 512), OP)?;
    let percent = int_param(i, "percent", 150, (0, 1000), OP)?;
    let threshold = int_param(i, "threshold", 3, (0, 512), OP)?;
    if radius == 0 {
        // A zero blur leaves every difference at 0.
        return Ok(img);
    }
    let blurred = Raw::from(img.blur(radius as f32));
    let mut raw = Raw::from(img);
    for (s, b) in raw.data.iter_mut().zip(&blurred.data) {
        let diff = i64::from(*s) - i64::from(*b);
        if diff.abs() >= threshold {
            *s = (i64::from(*s) + diff * percent / 100).clamp(0, 255) as u8;
        }
    }
    raw.into_image(OP)
}

/// `nodetool.image.Paste`: `image.paste(paste, (left, top))`, clipped to `image`.
fn paste(i: &NodeInputs, images: Vec<DynamicImage>) -> Result<DynamicImage> {
    const OP: &str = "image.paste";
    let left = int_param(i, "left", 0, (0, MAX_SIDE), OP)?;
    let top = int_param(i, "top", 0, (0, MAX_SIDE), OP)?;
    let mut it = images.into_iter();
    let (Some(base), Some(top_img)) = (it.next(), it.next()) else {
        return Err(Error::unexpected("paste needs two images").with_operation(OP));
    };
    let mut base = base.to_rgb8();
    ::image::imageops::replace(&mut base, &top_img.to_rgb8(), left, top);
    Ok(DynamicImage::ImageRgb8(base))
}

/// `lib.pillow.Composite`: `image1` where the mask is white, `image2` where it is black, mixed
/// by the mask's luma between (`Image.composite` with an L mask: `(i1 * m + i2 * (255 - m)) /
/// 255` rounded), on RGBA copies; `image2` and the mask are fitted to `image1`'s size first.
///
/// Deviation: NodeTool converts the mask to RGB and then RGBA, whose alpha is always opaque, so
/// its Composite returns `image1` whatever the mask; here the mask's luma is the mask, as the
/// node's description ("combine two images using a mask") intends.
fn composite(_: &NodeInputs, images: Vec<DynamicImage>) -> Result<DynamicImage> {
    const OP: &str = "image.composite";
    let mut it = images.into_iter();
    let (Some(a), Some(b), Some(m)) = (it.next(), it.next(), it.next()) else {
        return Err(Error::unexpected("composite needs three images").with_operation(OP));
    };
    let (w, h) = (a.width(), a.height());
    let fit = |img: DynamicImage| {
        if (img.width(), img.height()) == (w, h) {
            img
        } else {
            img.resize_to_fill(w, h, FilterType::Lanczos3)
        }
    };
    let (a, b) = (a.to_rgba8(), fit(b).to_rgba8());
    let mask = Raw::from(fit(m));
    let mut out = b;
    for ((o, p), mpx) in out
        .pixels_mut()
        .zip(a.pixels())
        .zip(mask.data.chunks_exact(mask.channels))
    {
        let m = u32::from(mask.luma(mpx));
        for c in 0..4 {
            // Pillow's BLEND with DIV255: exact rounding of x / 255.
            let t = u32::from(p[c]) * m + u32::from(o[c]) * (255 - m) + 128;
            o[c] = (((t >> 8) + t) >> 8) as u8;
        }
    }
    Ok(DynamicImage::ImageRgba8(out))
}

/// A `color` input: NodeTool's `ColorRef` (`{type: "color", value: "#RRGGBB"}`) or a bare string.
/// Pillow's `ImageColor` forms `#rgb`, `#rrggbb`, `#rrggbbaa` (alpha ignored on RGB) and the
/// basic CSS names are accepted.
pub(crate) fn color_input(i: &NodeInputs, name: &'static str, op: &'static str) -> Result<[u8; 3]> {
    let v = i.value(name);
    let text = match &v {
        Value::Null => return Ok([255, 255, 255]),
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("value") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Ok([255, 255, 255]),
            Some(other) => other.to_string(),
        },
        other => other.to_string(),
    };
    parse_color(&text).ok_or_else(|| {
        param_error(
            op,
            name,
            format!("{text:?} is not a colour (#rgb, #rrggbb or a CSS name)"),
        )
    })
}

pub(crate) fn parse_color(text: &str) -> Option<[u8; 3]> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(hex) = t.strip_prefix('#') {
        let digit = |i: usize| u8::from_str_radix(hex.get(i..i + 1)?, 16).ok();
        let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
        return match hex.len() {
            3 | 4 => Some([digit(0)? * 17, digit(1)? * 17, digit(2)? * 17]),
            6 | 8 => Some([byte(0)?, byte(2)?, byte(4)?]),
            _ => None,
        };
    }
    Some(match t.as_str() {
        "white" => [255, 255, 255],
        "black" => [0, 0, 0],
        "red" => [255, 0, 0],
        "lime" => [0, 255, 0],
        "green" => [0, 128, 0],
        "blue" => [0, 0, 255],
        "yellow" => [255, 255, 0],
        "cyan" | "aqua" => [0, 255, 255],
        "magenta" | "fuchsia" => [255, 0, 255],
        "gray" | "grey" => [128, 128, 128],
        "silver" => [192, 192, 192],
        "maroon" => [128, 0, 0],
        "navy" => [0, 0, 128],
        "olive" => [128, 128, 0],
        "purple" => [128, 0, 128],
        "teal" => [0, 128, 128],
        "orange" => [255, 165, 0],
        _ => return None,
    })
}

/// Pillow's `Image.blend` on one 8-bit sample: `a + alpha * (b - a)` in single precision (the C
/// code takes `alpha` as a `float`), truncated and clipped.
fn pil_blend(a: u8, b: u8, alpha: f64) -> u8 {
    let alpha = alpha as f32;
    let v = f32::from(a) + alpha * (f32::from(b) - f32::from(a));
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

    /// Pillow's SMOOTH filter on every channel (see [`Raw::kernel3x3`]).
    fn smoothed(&self) -> Vec<u8> {
        self.kernel3x3(&SMOOTH)
    }

    /// Pillow's 3x3 `ImageFilter.Kernel` on every channel (alpha included, as Pillow does),
    /// reproducing `ImagingFilter3x3`: the weights are divided by `scale` in single precision,
    /// kernel row 0 weighs the row *below* the pixel and column 0 the pixel to the left, the sum
    /// starts from `offset + 0.5`, is clipped to 0..=255 and truncated; the one-pixel border is
    /// copied unchanged (as is the whole image when it is under 3 pixels on a side).
    fn kernel3x3(&self, k: &Kernel) -> Vec<u8> {
        let (w, h, ch) = (self.width as usize, self.height as usize, self.channels);
        let mut out = self.data.clone();
        if w < 3 || h < 3 {
            return out;
        }
        let weights: Vec<f32> = k.weights.iter().map(|&v| v / k.scale).collect();
        let offset = k.offset + 0.5;
        let at = |x: usize, y: usize, c: usize| f32::from(self.data[(y * w + x) * ch + c]);
        let row = |x: usize, y: usize, c: usize, kw: &[f32]| {
            at(x - 1, y, c) * kw[0] + at(x, y, c) * kw[1] + at(x + 1, y, c) * kw[2]
        };
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for c in 0..ch {
                    let ss = offset
                        + row(x, y + 1, c, &weights[0..3])
                        + row(x, y, c, &weights[3..6])
                        + row(x, y - 1, c, &weights[6..9]);
                    out[(y * w + x) * ch + c] = clip8(ss);
                }
            }
        }
        out
    }

    /// Applies a 256-entry look-up table per colour band (`Image.point` with one table per band).
    fn apply_luts(&mut self, luts: &[[u8; 256]]) {
        let color = self.color_channels;
        for px in self.data.chunks_exact_mut(self.channels) {
            for (c, lut) in px[..color].iter_mut().zip(luts) {
                *c = lut[usize::from(*c)];
            }
        }
    }

    /// Pillow's `Image.histogram()` of colour band `band`.
    fn histogram(&self, band: usize) -> [u64; 256] {
        let mut h = [0u64; 256];
        for px in self.data.chunks_exact(self.channels) {
            h[usize::from(px[band])] += 1;
        }
        h
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
