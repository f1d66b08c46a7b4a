//! `lib.pillow.draw.RenderText` (also `lib.image.draw.RenderText` and the older
//! `nodetool.lib.pillow.draw.RenderText`): text drawn on an image as Pillow's `ImageDraw.text`
//! draws it, with real font rendering (`ab_glyph`).
//!
//! Layout follows Pillow 10 with its Raqm engine: glyph advances and kerning (the font's `kern`
//! pairs) scaled in 1/64 pixel as HarfBuzz scales them, the first baseline `ceil(ascender)`
//! pixels below `y` (anchor `la`), lines of multi-line text `bbox("A").bottom + 4` apart and
//! aligned (`left`, `center`, `right`) within the widest line. Coverage masks of overlapping
//! glyphs combine by maximum and are blended with Pillow's rounding. Pillow renders through
//! FreeType with TrueType hinting, which snaps horizontal edges to the pixel grid; ab_glyph does
//! not hint, so edge pixels differ (the fixture compares with a stated tolerance).
//!
//! Fonts are found by name ([`find_font`]): `FONT_PATH` (a file, or a folder searched by name),
//! then the bundled DejaVuSans and DejaVuSans-Bold, then the system font folders. Google and URL
//! fonts are refused with a clear error (fetching them would need the HTTP policy; put the file
//! in `FONT_PATH` instead).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ab_glyph::{point, Font, FontArc, FontVec, Glyph, PxScale};
use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::image::{
    as_rgb, blocking, decode, encode_png, image_bytes, param_error, parse_color, store_temp_image,
};
use super::settings::NodeSettings;

const OP: &str = "image.render_text";

static DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
static DEJAVU_SANS_BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

/// The bundled fonts, by the names NodeTool's examples use.
const BUNDLED: [(&str, &[u8]); 2] = [
    ("DejaVuSans", DEJAVU_SANS),
    ("DejaVuSans-Bold", DEJAVU_SANS_BOLD),
];

/// Where NodeTool looks for system fonts on Linux.
const SYSTEM_FONT_DIRS: [&str; 2] = ["/usr/share/fonts", "/usr/local/share/fonts"];

/// Bounds on searching font folders and reading font files.
const MAX_FONT_BYTES: u64 = 64 * 1024 * 1024;
const MAX_SEARCH_DEPTH: usize = 6;
const MAX_SEARCH_ENTRIES: usize = 20_000;
/// The most characters one node renders.
const MAX_TEXT_CHARS: usize = 100_000;

pub fn register(r: &mut Registry, settings: &NodeSettings) {
    for node_type in [
        "lib.pillow.draw.RenderText",
        "lib.image.draw.RenderText",
        "nodetool.lib.pillow.draw.RenderText",
        "nodetool.lib.image.draw.RenderText",
    ] {
        r.register(Arc::new(RenderText {
            spec: NodeSpec::new(node_type, "Render Text")
                .input("text", "str", json!(""))
                .input(
                    "font",
                    "font",
                    json!({"type": "font", "name": "DejaVuSans", "source": "system", "url": "", "weight": "regular"}),
                )
                .input("x", "int", json!(0))
                .input("y", "int", json!(0))
                .input("size", "int", json!(12))
                .input("color", "color", json!({"type": "color", "value": "#000000"}))
                .input("align", "enum", json!("left"))
                .required("image", "image")
                .output("output", "image")
                .cacheable(),
            font_path: settings.font_path.clone(),
        }));
    }
}

#[derive(Debug)]
struct RenderText {
    spec: NodeSpec,
    font_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Align {
    Left,
    Center,
    Right,
}

#[async_trait]
impl NodeImpl for RenderText {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let text = inputs.text("text");
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(param_error(
                OP,
                "text",
                format!("is longer than {MAX_TEXT_CHARS} characters"),
            ));
        }
        let size = inputs.opt_i64("size")?.unwrap_or(12);
        if !(1..=512).contains(&size) {
            return Err(param_error(
                OP,
                "size",
                format!("{size} is not within 1..=512"),
            ));
        }
        let (x, y) = (
            inputs.opt_i64("x")?.unwrap_or(0),
            inputs.opt_i64("y")?.unwrap_or(0),
        );
        let align = match inputs.str("align")?.to_ascii_lowercase().as_str() {
            "" | "left" => Align::Left,
            "center" => Align::Center,
            "right" => Align::Right,
            other => {
                return Err(param_error(
                    OP,
                    "align",
                    format!("{other:?} is not one of \"left\", \"center\", \"right\""),
                ))
            }
        };
        let color = text_color(&inputs.value("color"))?;
        let font_ref = inputs.value("font");
        let bytes = image_bytes(ctx, inputs, "image", OP).await?;
        let font_path = self.font_path.clone();
        let png = blocking(OP, move || {
            let font = load_font(&font_ref, font_path.as_deref())?;
            let mut img = as_rgb(decode(&bytes, OP)?.0).to_rgb8();
            draw_text(
                &mut img,
                &font,
                size as f32,
                (x as f32, y as f32),
                &text,
                align,
                color,
            );
            encode_png(&::image::DynamicImage::ImageRgb8(img), OP)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

/// NodeTool's `ColorRef` (`{type: "color", value}`) or a colour string; Pillow's default for
/// this node is black.
pub(crate) fn text_color(v: &Value) -> Result<[u8; 3]> {
    let text = match v {
        Value::Null => return Ok([0, 0, 0]),
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("value") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Ok([0, 0, 0]),
            Some(other) => other.to_string(),
        },
        other => other.to_string(),
    };
    parse_color(&text).ok_or_else(|| {
        param_error(
            OP,
            "color",
            format!("{text:?} is not a colour (#rgb, #rrggbb or a CSS name)"),
        )
    })
}

// ---- fonts ----------------------------------------------------------------------------------

/// Loads the font a `FontRef` (`{name, source, url, weight}`, or a bare name) names.
pub(crate) fn load_font(font_ref: &Value, font_path: Option<&Path>) -> Result<FontArc> {
    let (name, source) = match font_ref {
        Value::String(s) => (s.clone(), "system".to_owned()),
        Value::Object(m) => (
            m.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            m.get("source")
                .and_then(Value::as_str)
                .unwrap_or("system")
                .to_owned(),
        ),
        _ => (String::new(), "system".to_owned()),
    };
    let name = if name.trim().is_empty() {
        "DejaVuSans".to_owned()
    } else {
        name.trim().to_owned()
    };
    if !matches!(source.as_str(), "" | "system") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "font {name:?} has source {source:?}: only system fonts are supported; put the \
                 font file in the folder FONT_PATH names"
            ),
        )
        .with_operation(OP)
        .with_context("input", "font"));
    }
    match find_font(&name, font_path)? {
        FontSource::Bundled(bytes) => FontArc::try_from_slice(bytes)
            .map_err(|e| Error::unexpected(format!("bundled font {name}: {e}"))),
        FontSource::File(path) => {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len > MAX_FONT_BYTES {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("font file {} is larger than 64 MiB", path.display()),
                )
                .with_operation(OP));
            }
            let data = std::fs::read(&path).map_err(|e| {
                Error::invalid_input(format!("cannot read font file {}: {e}", path.display()))
                    .with_operation(OP)
                    .with_source(e)
            })?;
            FontVec::try_from_vec(data).map(FontArc::new).map_err(|e| {
                Error::invalid_input(format!(
                    "{} is not a TrueType/OpenType font: {e}",
                    path.display()
                ))
                .with_operation(OP)
            })
        }
    }
}

#[derive(Debug, PartialEq)]
enum FontSource {
    Bundled(&'static [u8]),
    File(PathBuf),
}

/// NodeTool's `get_system_font_path`: `name` matches a file's name without its extension
/// (`.ttf`/`.otf`), or, when `name` has an extension, the whole file name; case-insensitive.
/// `FONT_PATH` first (a file is used whatever its name), then the bundled fonts, then the
/// system font folders.
fn find_font(name: &str, font_path: Option<&Path>) -> Result<FontSource> {
    let wanted = name.to_ascii_lowercase();
    let has_ext = Path::new(&wanted).extension().is_some();
    let matches = |file: &str| {
        let file = file.to_ascii_lowercase();
        if has_ext {
            return file == wanted;
        }
        let p = Path::new(&file);
        let ext_ok = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "ttf" || e == "otf");
        ext_ok && p.file_stem().and_then(|s| s.to_str()) == Some(wanted.as_str())
    };
    if let Some(fp) = font_path {
        if fp.is_file() {
            return Ok(FontSource::File(fp.to_path_buf()));
        }
        if let Some(found) = search(fp, &matches) {
            return Ok(FontSource::File(found));
        }
    }
    for (bundled, bytes) in BUNDLED {
        if matches(&format!("{bundled}.ttf")) {
            return Ok(FontSource::Bundled(bytes));
        }
    }
    for dir in SYSTEM_FONT_DIRS {
        if let Some(found) = search(Path::new(dir), &matches) {
            return Ok(FontSource::File(found));
        }
    }
    let fp = font_path.map_or("unset".to_owned(), |p| p.display().to_string());
    Err(Error::not_found(format!(
        "font {name:?} not found: looked in FONT_PATH ({fp}), the bundled fonts (DejaVuSans, \
         DejaVuSans-Bold) and {}; set FONT_PATH to a folder with the font file",
        SYSTEM_FONT_DIRS.join(", ")
    ))
    .with_operation(OP)
    .with_context("input", "font"))
}

/// The first file under `root` whose name `matches`, breadth first, bounded in depth and in
/// entries read.
fn search(root: &Path, matches: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    let mut queue = std::collections::VecDeque::from([(root.to_path_buf(), 0usize)]);
    let mut seen = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            seen += 1;
            if seen > MAX_SEARCH_ENTRIES {
                return None;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < MAX_SEARCH_DEPTH {
                    queue.push_back((path, depth + 1));
                }
            } else if entry.file_name().to_str().is_some_and(matches) && path.is_file() {
                return Some(path);
            }
        }
    }
    None
}

// ---- layout and drawing ---------------------------------------------------------------------

/// HarfBuzz's scaling of font units to 1/64 pixel at `size` pixels per em.
fn to_26_6(units: f32, size: f32, upem: f32) -> i64 {
    (f64::from(units) * f64::from(size) * 64.0 / f64::from(upem)).round() as i64
}

/// Pen positions (1/64 px) of the glyphs of one line, and its advance width.
fn layout(font: &FontArc, size: f32, line: &str) -> (Vec<(ab_glyph::GlyphId, i64)>, i64) {
    let upem = font.units_per_em().unwrap_or(2048.0);
    let mut pen = 0i64;
    let mut prev = None;
    let mut glyphs = Vec::with_capacity(line.len());
    for c in line.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            pen += to_26_6(font.kern_unscaled(p, id), size, upem);
        }
        glyphs.push((id, pen));
        pen += to_26_6(font.h_advance_unscaled(id), size, upem);
        prev = Some(id);
    }
    (glyphs, pen)
}

/// Pillow's `ImageDraw.textlength`: the advance width of one line.
pub(crate) fn text_length(font: &FontArc, size: f32, line: &str) -> f32 {
    layout(font, size, line).1 as f32 / 64.0
}

/// Pillow's `ImageDraw.text` / `multiline_text` with anchor `la`, spacing 4.
pub(crate) fn draw_text(
    img: &mut ::image::RgbImage,
    font: &FontArc,
    size: f32,
    (x, y): (f32, f32),
    text: &str,
    align: Align,
    color: [u8; 3],
) {
    let upem = font.units_per_em().unwrap_or(2048.0);
    // FreeType rounds the scaled ascender up to whole pixels.
    let ascender = (to_26_6(font.ascent_unscaled(), size, upem) + 63) >> 6;
    // `textbbox((0, 0), "A")[3]`: the bottom of "A" below the top line.
    let a_bottom = font
        .outline_glyph(font.glyph_id('A').with_scale_and_position(
            PxScale::from(size * font.height_unscaled() / upem),
            point(0.0, ascender as f32),
        ))
        .map_or(ascender as f32, |g| g.px_bounds().max.y);
    let line_spacing = a_bottom.ceil() + 4.0;
    let lines: Vec<(Vec<(ab_glyph::GlyphId, i64)>, i64)> =
        text.split('\n').map(|l| layout(font, size, l)).collect();
    let max_width = lines.iter().map(|(_, w)| *w).max().unwrap_or(0);
    let scale = PxScale::from(size * font.height_unscaled() / upem);

    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut mask = vec![0u8; w * h];
    let mut top = y;
    for (glyphs, width) in &lines {
        let diff = (max_width - width) as f32 / 64.0;
        let left = x + match align {
            Align::Left => 0.0,
            Align::Center => diff / 2.0,
            Align::Right => diff,
        };
        let baseline = top + ascender as f32;
        for &(id, pen) in glyphs {
            let glyph: Glyph =
                id.with_scale_and_position(scale, point(left + pen as f32 / 64.0, baseline));
            let Some(outlined) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outlined.px_bounds();
            let (bx, by) = (bounds.min.x as i64, bounds.min.y as i64);
            outlined.draw(|gx, gy, coverage| {
                let (px, py) = (bx + i64::from(gx), by + i64::from(gy));
                if px < 0 || py < 0 || px as usize >= w || py as usize >= h {
                    return;
                }
                let level = (coverage.clamp(0.0, 1.0) * 255.0).round() as u8;
                let slot = &mut mask[py as usize * w + px as usize];
                *slot = (*slot).max(level);
            });
        }
        top += line_spacing;
    }
    for (px, &m) in img.pixels_mut().zip(&mask) {
        if m == 0 {
            continue;
        }
        for c in 0..3 {
            // Pillow's BLEND: exact rounding of (in * (255 - m) + ink * m) / 255.
            let t =
                u32::from(px[c]) * (255 - u32::from(m)) + u32::from(color[c]) * u32::from(m) + 128;
            px[c] = (((t >> 8) + t) >> 8) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fonts_are_found_by_name() {
        assert_eq!(
            find_font("DejaVuSans", None).unwrap(),
            FontSource::Bundled(DEJAVU_SANS)
        );
        assert_eq!(
            find_font("dejavusans-bold.TTF", None).unwrap(),
            FontSource::Bundled(DEJAVU_SANS_BOLD)
        );
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("MyFont.otf"), b"x").unwrap();
        assert_eq!(
            find_font("myfont", Some(dir.path())).unwrap(),
            FontSource::File(nested.join("MyFont.otf"))
        );
        // A FONT_PATH file is used whatever the name.
        assert_eq!(
            find_font("DejaVuSans", Some(&nested.join("MyFont.otf"))).unwrap(),
            FontSource::File(nested.join("MyFont.otf"))
        );
        let err = find_font("No Such Font 42", Some(dir.path())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("set FONT_PATH"), "{err}");
    }

    #[test]
    fn web_fonts_and_bad_files_are_refused() {
        let err =
            load_font(&json!({"name": "Roboto", "source": "google_fonts"}), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("Broken.ttf");
        std::fs::write(&bad, b"not a font").unwrap();
        let err = load_font(&json!("Broken"), Some(dir.path())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
}
