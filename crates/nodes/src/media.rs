//! Image decoding as NodeTool does it (`ProcessingContext.image_to_pil`: Pillow's
//! `Image.open`, `ImageOps.exif_transpose`, `convert("RGB")`), with a decompression-bomb guard.
//!
//! - The pixel count is read from the header and checked against the cap
//!   (`NODETOOL_IMAGE_MAX_PIXELS`, Pillow's `MAX_IMAGE_PIXELS` by default) before any pixel
//!   is decoded; the decoder's own allocation limit backs it up.
//! - The EXIF orientation (JPEG, PNG `eXIf`, WebP) is applied, as `exif_transpose` does.
//! - Modes convert to RGB as Pillow converts them: alpha is dropped (not composited), palettes
//!   are looked up, grey is repeated; 16-bit RGB/RGBA/LA keep the high byte (Pillow's
//!   `RGB;16B` unpacker) and 16-bit grey is clipped to 255 (Pillow's `I;16` → `L`).

use std::io::Cursor;

use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use nodetool_core::{Error, ErrorKind, Result};

/// The decoder's allocation limit: a second line behind the pixel cap.
const MAX_ALLOC: u64 = 4 << 30;

fn reader<'a>(bytes: &'a [u8], op: &'static str) -> Result<ImageReader<Cursor<&'a [u8]>>> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| {
            Error::invalid_input(format!("cannot read image: {e}"))
                .with_operation(op)
                .with_source(e)
        })
}

pub(crate) fn decode_error(e: ::image::ImageError, op: &'static str) -> Error {
    let kind = match &e {
        ::image::ImageError::Unsupported(_) => ErrorKind::Unsupported,
        ::image::ImageError::Limits(_) => ErrorKind::TooLarge,
        _ => ErrorKind::InvalidInput,
    };
    Error::new(kind, format!("cannot decode image: {e}"))
        .with_operation(op)
        .with_source(e)
}

/// Width and height from the header, without decoding pixels; `None` for bytes that are not
/// an image format we read.
pub fn header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let r = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    r.format()?;
    r.into_dimensions().ok()
}

/// Refuses an image whose header declares more than `max_pixels` pixels. Bytes that are not
/// an image pass (the decoder says what they are).
pub fn check_pixels(bytes: &[u8], max_pixels: u64, op: &'static str) -> Result<()> {
    let Some((w, h)) = header_dimensions(bytes) else {
        return Ok(());
    };
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "image is {w}x{h} = {pixels} pixels, over the limit of {max_pixels} \
                 (NODETOOL_IMAGE_MAX_PIXELS; a decompression bomb?): not decoded"
            ),
        )
        .with_operation(op)
        .with_context("pixels", pixels));
    }
    Ok(())
}

/// Decodes any supported format (PNG, JPEG, WebP) with the EXIF orientation applied. The
/// header's pixel count is checked against `max_pixels` first.
pub fn decode(
    bytes: &[u8],
    max_pixels: u64,
    op: &'static str,
) -> Result<(DynamicImage, Option<ImageFormat>)> {
    check_pixels(bytes, max_pixels, op)?;
    let mut reader = reader(bytes, op)?;
    let format = reader.format();
    if format.is_none() {
        return Err(Error::invalid_input(
            "cannot decode image: not a recognised image format (png, jpeg, webp)",
        )
        .with_operation(op)
        .with_context("bytes", bytes.len()));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(e, op))?;
    // A broken EXIF block is ignored, as exif_transpose ignores it.
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, op))?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok((image, format))
}

/// Pillow's `convert("RGB")` of what `Image.open` gives for each decoded layout.
pub fn to_rgb(image: DynamicImage) -> DynamicImage {
    use ::image::{ImageBuffer, Rgb};
    let (w, h) = (image.width(), image.height());
    let from_u16 = |raw: &[u16], channels: usize, grey_clip: bool| {
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        for px in raw.chunks_exact(channels) {
            if channels <= 2 {
                let v = if grey_clip {
                    px[0].min(255) as u8
                } else {
                    (px[0] >> 8) as u8
                };
                out.extend_from_slice(&[v, v, v]);
            } else {
                out.extend(px[..3].iter().map(|c| (c >> 8) as u8));
            }
        }
        DynamicImage::ImageRgb8(
            ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, out)
                .unwrap_or_else(|| ImageBuffer::new(w, h)),
        )
    };
    match image {
        DynamicImage::ImageRgb8(_) => image,
        // Pillow opens 16-bit grey as I;16 and clips it to 255 on the way to L/RGB.
        DynamicImage::ImageLuma16(b) => from_u16(b.as_raw(), 1, true),
        // 16-bit LA, RGB and RGBA are read as 8-bit modes from the high byte.
        DynamicImage::ImageLumaA16(b) => from_u16(b.as_raw(), 2, false),
        DynamicImage::ImageRgb16(b) => from_u16(b.as_raw(), 3, false),
        DynamicImage::ImageRgba16(b) => from_u16(b.as_raw(), 4, false),
        // 8-bit grey, grey+alpha and RGBA: repeat grey, drop alpha (the image crate does
        // exactly that for 8-bit layouts).
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// [`to_rgb`], except that an image with alpha keeps it (as 8-bit RGBA, 16-bit channels by
/// their high byte): what SaveImage stores, so that saving loses nothing NodeTool's RGB keeps.
pub fn to_rgb_keep_alpha(image: DynamicImage) -> DynamicImage {
    use ::image::{ImageBuffer, Rgba};
    let (w, h) = (image.width(), image.height());
    match image {
        DynamicImage::ImageRgba8(_) => image,
        DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(image.to_rgba8()),
        DynamicImage::ImageLumaA16(b) => {
            let px = b.as_raw().chunks_exact(2).flat_map(|p| {
                let v = (p[0] >> 8) as u8;
                [v, v, v, (p[1] >> 8) as u8]
            });
            let raw: Vec<u8> = px.collect();
            DynamicImage::ImageRgba8(
                ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, raw)
                    .unwrap_or_else(|| ImageBuffer::new(w, h)),
            )
        }
        DynamicImage::ImageRgba16(b) => {
            let raw: Vec<u8> = b.as_raw().iter().map(|c| (c >> 8) as u8).collect();
            DynamicImage::ImageRgba8(
                ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, raw)
                    .unwrap_or_else(|| ImageBuffer::new(w, h)),
            )
        }
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => to_rgb(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{ImageBuffer, Luma, Rgba};

    fn png(image: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn modes_convert_as_pillow_converts_them() {
        let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(3, 1, |x, _| {
            Luma([[0u16, 200, 9000][x as usize]])
        }));
        let rgb = to_rgb(grey16).to_rgb8();
        assert_eq!(rgb.as_raw(), &[0, 0, 0, 200, 200, 200, 255, 255, 255]);
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(1, 1, Rgba([10, 20, 30, 0])));
        assert_eq!(to_rgb(rgba).to_rgb8().as_raw(), &[10, 20, 30]);
        let rgba16 = DynamicImage::ImageRgba16(ImageBuffer::from_pixel(
            1,
            1,
            Rgba([9000u16, 255, 65535, 1]),
        ));
        assert_eq!(to_rgb(rgba16).to_rgb8().as_raw(), &[35, 0, 255]);
    }

    #[test]
    fn a_bomb_is_refused_from_its_header() {
        // 30000 x 30000, 1 bit per pixel: 109 KB of PNG, 900 million pixels decoded.
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bomb.png")).unwrap();
        assert_eq!(header_dimensions(&bytes), Some((30_000, 30_000)));
        let err = decode(&bytes, 89_478_485, "test").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(
            err.to_string().contains("NODETOOL_IMAGE_MAX_PIXELS"),
            "{err}"
        );
        assert!(check_pixels(b"not an image", 1, "test").is_ok());
        let small = png(&DynamicImage::ImageLuma8(ImageBuffer::from_pixel(
            4,
            4,
            Luma([9]),
        )));
        assert_eq!(decode(&small, 16, "test").unwrap().0.width(), 4);
        assert_eq!(
            decode(&small, 15, "test").unwrap_err().kind(),
            ErrorKind::TooLarge
        );
    }
}
