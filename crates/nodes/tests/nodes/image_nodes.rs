//! Image and asset nodes end to end: PNGs made here, stored in the ENV=test (in-memory)
//! storages, run through `Engine::run`, results fetched back from storage and decoded.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::Cursor;
use std::sync::Arc;

use common::*;
use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use nodetool_core::{ErrorKind, PutOptions, StorageKey};
use nodetool_engine::{Engine, EngineResources, RunOptions, RunOutcome, Status};
use serde_json::{json, Value};

struct Harness {
    engine: Engine,
    res: EngineResources,
}

async fn harness() -> Harness {
    let res = test_resources().await;
    Harness {
        engine: Engine::new(Arc::new(nodetool_nodes::registry()), res.clone()),
        res,
    }
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A w×h RGB image whose pixel (x, y) is `(x*10, y*10, 7)`.
fn gradient(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 10) as u8, (y * 10) as u8, 7])
    }))
}

impl Harness {
    /// Uploads `bytes` as an asset and returns its image ref.
    async fn put_image(&self, bytes: Vec<u8>) -> Value {
        let key = format!("tests/{}.png", nodetool_core::id::new_id());
        self.res
            .asset_storage
            .upload_bytes(
                &StorageKey::new(key.clone()).unwrap(),
                bytes.into(),
                PutOptions::content_type("image/png"),
            )
            .await
            .unwrap();
        json!({"type": "image", "uri": format!("asset://{key}"), "asset_id": null, "data": null})
    }

    async fn fetch(&self, r: &Value) -> Vec<u8> {
        let uri = r["uri"].as_str().unwrap();
        let (storage, key) = if let Some(k) = uri.strip_prefix("temp://") {
            (&self.res.temp_storage, k)
        } else if let Some(k) = uri.strip_prefix("asset://") {
            (&self.res.asset_storage, k)
        } else {
            panic!("unexpected uri {uri}")
        };
        let got = storage
            .download(&StorageKey::new(key).unwrap(), None)
            .await
            .unwrap();
        nodetool_core::storage::collect(got.body)
            .await
            .unwrap()
            .to_vec()
    }

    async fn fetch_image(&self, r: &Value) -> DynamicImage {
        assert_eq!(r["type"], "image", "{r}");
        image::load_from_memory(&self.fetch(r).await).unwrap()
    }

    /// Runs `node_type` with `data` (its `image` already set by the caller) and sends its
    /// `output` slot to an output node named `out`.
    async fn run_one(&self, node_type: &str, data: Value) -> RunOutcome {
        let g = graph(
            &[
                ("op", node_type, data),
                ("out", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[("op", "output", "out", "value")],
        );
        run(&self.engine, g, Value::Null, RunOptions::default())
            .await
            .0
    }

    /// Runs `node_type` on `img` and returns the decoded result.
    async fn apply(&self, node_type: &str, img: &DynamicImage, params: Value) -> DynamicImage {
        let mut data = params;
        data["image"] = self.put_image(png(img)).await;
        let o = self.run_one(node_type, data).await;
        assert_eq!(o.status, Status::Completed, "{node_type}: {:?}", o.error);
        self.fetch_image(&o.result["out"][0]).await
    }
}

#[tokio::test]
async fn resize_scale_and_fit_give_the_requested_sizes() {
    let h = harness().await;
    let img = gradient(8, 6);
    let r = h
        .apply(
            "nodetool.image.Resize",
            &img,
            json!({"width": 5, "height": 9}),
        )
        .await;
    assert_eq!(r.dimensions(), (5, 9));
    let r = h
        .apply("nodetool.image.Scale", &img, json!({"scale": 1.5}))
        .await;
    assert_eq!(r.dimensions(), (12, 9));
    let r = h
        .apply("nodetool.image.Fit", &img, json!({"width": 4, "height": 4}))
        .await;
    assert_eq!(r.dimensions(), (4, 4));
}

#[tokio::test]
async fn crop_gives_the_right_pixels() {
    let h = harness().await;
    let img = gradient(6, 5);
    let r = h
        .apply(
            "nodetool.image.Crop",
            &img,
            json!({"left": 1, "top": 2, "right": 4, "bottom": 4}),
        )
        .await
        .to_rgb8();
    assert_eq!(r.dimensions(), (3, 2));
    for (x, y, px) in r.enumerate_pixels() {
        assert_eq!(*px, *img.to_rgb8().get_pixel(x + 1, y + 2), "at {x},{y}");
    }
}

#[tokio::test]
async fn an_empty_crop_box_is_that_nodes_clear_error() {
    let h = harness().await;
    let image = h.put_image(png(&gradient(6, 5))).await;
    let o = h
        .run_one(
            "nodetool.image.Crop",
            json!({"image": image, "left": 4, "top": 0, "right": 2, "bottom": 5}),
        )
        .await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("op"));
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("crop box"), "{err}");
    assert!(err.message().contains("non-empty"), "{err}");
}

#[tokio::test]
async fn crop_outside_the_image_pads_with_zeros_like_pillow() {
    let h = harness().await;
    let img = gradient(6, 5);
    let r = h
        .apply(
            "nodetool.image.Crop",
            &img,
            json!({"left": -1, "top": 3, "right": 8, "bottom": 7}),
        )
        .await
        .to_rgb8();
    assert_eq!(r.dimensions(), (9, 4));
    let src = img.to_rgb8();
    for (x, y, px) in r.enumerate_pixels() {
        let (sx, sy) = (i64::from(x) - 1, i64::from(y) + 3);
        let want = if (0..6).contains(&sx) && (0..5).contains(&sy) {
            *src.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        };
        assert_eq!(*px, want, "at {x},{y}");
    }
}

#[tokio::test]
async fn grayscale_makes_channels_equal_with_pillow_luma() {
    let h = harness().await;
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(3, 2, |x, y| {
        Rgb([(x * 90) as u8, (y * 200) as u8, 40])
    }));
    for node_type in [
        "lib.pillow.filter.ConvertToGrayscale",
        "lib.image.filter.ConvertToGrayscale",
    ] {
        let r = h.apply(node_type, &img, json!({})).await;
        assert_eq!(r.color(), image::ColorType::L8, "mode L like Pillow");
        let rgb = r.to_rgb8();
        for (x, y, px) in rgb.enumerate_pixels() {
            assert!(px[0] == px[1] && px[1] == px[2], "{node_type} at {x},{y}");
            let s = img.to_rgb8().get_pixel(x, y).0.map(u32::from);
            let want = (s[0] * 19595 + s[1] * 38470 + s[2] * 7471 + 0x8000) >> 16;
            assert_eq!(u32::from(px[0]), want, "{node_type} at {x},{y}");
        }
    }
}

#[tokio::test]
async fn invert_inverts_a_known_pixel_on_nodetools_rgb_copy() {
    let h = harness().await;
    // NodeTool's image_to_pil converts to RGB first: alpha is dropped, colour inverted.
    let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 200])));
    let r = h.apply("lib.pillow.filter.Invert", &img, json!({})).await;
    assert_eq!(r.color(), image::ColorType::Rgb8);
    assert_eq!(r.to_rgb8().get_pixel(1, 1).0, [245, 235, 225]);
}

#[tokio::test]
async fn blur_changes_an_edge_and_keeps_the_size() {
    let h = harness().await;
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(10, 6, |x, _| {
        if x < 5 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    }));
    let r = h
        .apply("lib.pillow.filter.Blur", &img, json!({"radius": 2}))
        .await
        .to_rgb8();
    assert_eq!(r.dimensions(), (10, 6));
    let (left, right) = (r.get_pixel(4, 3)[0], r.get_pixel(5, 3)[0]);
    assert!(left > 0, "dark side of the edge brightened: {left}");
    assert!(right < 255, "bright side of the edge darkened: {right}");
    // radius 0 is a no-op, as in Pillow.
    let same = h
        .apply("lib.pillow.filter.Blur", &img, json!({"radius": 0}))
        .await;
    assert_eq!(same.to_rgb8(), img.to_rgb8());
}

#[tokio::test]
async fn enhancers_follow_pillow() {
    let h = harness().await;
    let img = gradient(5, 5);
    let dark = h
        .apply(
            "lib.pillow.enhance.Brightness",
            &img,
            json!({"factor": 0.0}),
        )
        .await
        .to_rgb8();
    assert!(dark.pixels().all(|p| p.0 == [0, 0, 0]));
    let half = h
        .apply("lib.image.enhance.Brightness", &img, json!({"factor": 0.5}))
        .await
        .to_rgb8();
    assert_eq!(half.get_pixel(3, 1).0, [15, 5, 3]);

    // Contrast 0 is the mean grey everywhere.
    let flat = h
        .apply("lib.pillow.enhance.Contrast", &img, json!({"factor": 0.0}))
        .await
        .to_rgb8();
    let first = *flat.get_pixel(0, 0);
    assert!(flat.pixels().all(|p| *p == first));
    assert!(first[0] == first[1] && first[1] == first[2]);

    // Sharpness 1 is the identity; 0 smooths the interior.
    let same = h
        .apply("lib.pillow.enhance.Sharpness", &img, json!({"factor": 1.0}))
        .await;
    assert_eq!(same.to_rgb8(), img.to_rgb8());
    let spiky = DynamicImage::ImageRgb8(RgbImage::from_fn(5, 5, |x, y| {
        if (x, y) == (2, 2) {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    }));
    let soft = h
        .apply(
            "lib.pillow.enhance.Sharpness",
            &spiky,
            json!({"factor": 0.0}),
        )
        .await
        .to_rgb8();
    // SMOOTH: centre weight 5 of 13.
    assert_eq!(soft.get_pixel(2, 2)[0], ((255.0 * 5.0 / 13.0) + 0.5) as u8);
    assert_eq!(soft.get_pixel(1, 1)[0], ((255.0 / 13.0) + 0.5) as u8);
}

#[tokio::test]
async fn blend_mixes_two_images_fitting_the_second() {
    let h = harness().await;
    let black = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([0, 0, 0])));
    let white = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([200, 100, 50])));
    let data = json!({
        "image1": h.put_image(png(&black)).await,
        "image2": h.put_image(png(&white)).await,
        "alpha": 0.5,
    });
    let o = h.run_one("lib.pillow.__init__.Blend", data).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let r = h.fetch_image(&o.result["out"][0]).await.to_rgb8();
    assert_eq!(r.dimensions(), (4, 4));
    assert_eq!(r.get_pixel(2, 2).0, [100, 50, 25]);
}

#[tokio::test]
async fn image_refs_flow_between_nodes() {
    let h = harness().await;
    let image = h.put_image(png(&gradient(6, 4))).await;
    let g = graph(
        &[
            (
                "resize",
                "nodetool.image.Resize",
                json!({"image": image, "width": 3, "height": 2}),
            ),
            ("invert", "lib.pillow.filter.Invert", json!({})),
            ("meta", "nodetool.image.GetMetadata", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
            ("w", "nodetool.output.Output", json!({"name": "width"})),
            ("m", "nodetool.output.Output", json!({"name": "mode"})),
            ("f", "nodetool.output.Output", json!({"name": "format"})),
            ("c", "nodetool.output.Output", json!({"name": "channels"})),
        ],
        &[
            ("resize", "output", "invert", "image"),
            ("invert", "output", "out", "value"),
            ("invert", "output", "meta", "image"),
            ("meta", "width", "w", "value"),
            ("meta", "mode", "m", "value"),
            ("meta", "format", "f", "value"),
            ("meta", "channels", "c", "value"),
        ],
    );
    let (o, _) = run(&h.engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let out = &o.result["out"][0];
    assert!(out["uri"].as_str().unwrap().starts_with("temp://"), "{out}");
    assert_eq!(h.fetch_image(out).await.dimensions(), (3, 2));
    assert_eq!(o.result["width"], json!([3]));
    assert_eq!(o.result["mode"], json!(["RGB"]));
    assert_eq!(o.result["format"], json!(["PNG"]));
    assert_eq!(o.result["channels"], json!([3]));
}

#[tokio::test]
async fn corrupt_or_missing_images_fail_that_node_clearly() {
    let h = harness().await;
    // Inline bytes that are no image.
    let bad = json!({"type": "image", "uri": "", "data": [1, 2, 3, 4, 5, 6, 7, 8]});
    let o = h
        .run_one(
            "nodetool.image.Resize",
            json!({"image": bad, "width": 2, "height": 2}),
        )
        .await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("op"));
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("cannot decode image"), "{err}");

    // A truncated PNG: the header is right, the data is not.
    let mut truncated = png(&gradient(20, 20));
    truncated.truncate(truncated.len() / 2);
    let image = h.put_image(truncated).await;
    let o = h
        .run_one("lib.pillow.filter.Invert", json!({"image": image}))
        .await;
    assert_eq!(o.status, Status::Failed);
    let err = o.error.unwrap();
    assert!(err.message().contains("cannot decode image"), "{err}");

    // NodeTool's empty ImageRef: not connected.
    let empty = json!({"type": "image", "uri": "", "asset_id": null, "data": null});
    let o = h
        .run_one("lib.pillow.filter.Invert", json!({"image": empty}))
        .await;
    assert_eq!(o.status, Status::Failed);
    let err = o.error.unwrap();
    assert!(err.message().contains("not connected"), "{err}");

    // A ref to an asset that does not exist.
    let missing = json!({"type": "image", "uri": "asset://tests/nope.png"});
    let o = h
        .run_one("lib.pillow.filter.Invert", json!({"image": missing}))
        .await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.error.unwrap().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn bad_parameters_are_clear_errors() {
    let h = harness().await;
    let image = h.put_image(png(&gradient(4, 4))).await;
    for (node_type, params, needle) in [
        (
            "nodetool.image.Resize",
            json!({"width": 0, "height": 4}),
            "width",
        ),
        ("nodetool.image.Scale", json!({"scale": 0.01}), "nothing"),
        ("lib.pillow.filter.Blur", json!({"radius": 500}), "radius"),
    ] {
        let mut data = params;
        data["image"] = image.clone();
        let o = h.run_one(node_type, data).await;
        assert_eq!(o.status, Status::Failed, "{node_type}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{node_type}: {err}");
        assert!(err.message().contains(needle), "{node_type}: {err}");
    }
}

#[tokio::test]
async fn save_image_stores_an_asset_that_decodes_to_the_same_image() {
    let h = harness().await;
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(5, 3, |x, y| {
        Rgba([(x * 40) as u8, (y * 70) as u8, 9, (255 - x * 30) as u8])
    }));
    let data = json!({"image": h.put_image(png(&img)).await, "name": "saved-%Y.png"});
    let o = h.run_one("nodetool.image.SaveImage", data).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let saved = &o.result["out"][0];
    let uri = saved["uri"].as_str().unwrap();
    assert!(uri.starts_with("asset://"), "{saved}");
    let id = saved["asset_id"].as_str().unwrap();
    assert_eq!(
        uri,
        format!("asset://1/{id}.png"),
        "blob key {{user}}/{{asset_id}}.png"
    );
    assert_eq!(saved["content_type"], "image/png");
    let back = h.fetch_image(saved).await;
    assert_eq!(back.to_rgba8(), img.to_rgba8());
}

#[tokio::test]
async fn save_text_stores_the_text() {
    let h = harness().await;
    let text = "héllo\nworld ✓";
    let g = graph(
        &[
            ("src", "nodetool.constant.String", json!({"value": text})),
            ("op", "nodetool.text.SaveText", json!({"name": "notes.txt"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[
            ("src", "output", "op", "text"),
            ("op", "output", "out", "value"),
        ],
    );
    let (o, _) = run(&h.engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let saved = &o.result["out"][0];
    assert_eq!(saved["type"], "text", "{saved}");
    assert!(saved["uri"].as_str().unwrap().starts_with("asset://"));
    assert_eq!(String::from_utf8(h.fetch(saved).await).unwrap(), text);

    // A text ref as input is read and saved again.
    let o = h
        .run_one("nodetool.text.SaveText", json!({"text": saved}))
        .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let again = &o.result["out"][0];
    assert_ne!(again["uri"], saved["uri"]);
    assert_eq!(String::from_utf8(h.fetch(again).await).unwrap(), text);
}

#[tokio::test]
async fn get_metadata_reports_the_files_own_mode() {
    let h = harness().await;
    let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(7, 3, Rgba([1, 2, 3, 4])));
    let image = h.put_image(png(&img)).await;
    let g = graph(
        &[
            (
                "meta",
                "nodetool.image.GetMetadata",
                json!({"image": image}),
            ),
            ("m", "nodetool.output.Output", json!({"name": "mode"})),
            ("c", "nodetool.output.Output", json!({"name": "channels"})),
            ("h", "nodetool.output.Output", json!({"name": "height"})),
        ],
        &[
            ("meta", "mode", "m", "value"),
            ("meta", "channels", "c", "value"),
            ("meta", "height", "h", "value"),
        ],
    );
    let (o, _) = run(&h.engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["mode"], json!(["RGBA"]));
    assert_eq!(o.result["channels"], json!([4]));
    assert_eq!(o.result["height"], json!([3]));
}

// ---- Pillow filters and enhancers: exact pixels, expected values computed here ---------------

/// A w×h RGB image from `f(x, y)`.
fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y))))
}

/// A 5×4 image with varied, non-symmetric samples per channel.
fn sample_image() -> DynamicImage {
    rgb(5, 4, |x, y| {
        [
            (x * 37 + y * 11) as u8,
            (200 - x * 13 - y * 29) as u8,
            ((x * y * 23 + 40) % 256) as u8,
        ]
    })
}

/// Pillow's 3x3 kernel filter, in exact rational arithmetic: `kernel` row 0 weighs the row
/// below, `offset + sum / scale` rounded half up and clipped; the border is copied.
fn expected_kernel(img: &RgbImage, kernel: [i64; 9], scale: i64, offset: i64) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            return *img.get_pixel(x, y);
        }
        let mut px = [0u8; 3];
        for (c, out) in px.iter_mut().enumerate() {
            let mut sum = 0i64;
            for (row, dy) in [1i64, 0, -1].iter().enumerate() {
                for (col, dx) in [-1i64, 0, 1].iter().enumerate() {
                    let p = img.get_pixel((x as i64 + dx) as u32, (y as i64 + dy) as u32);
                    sum += kernel[row * 3 + col] * i64::from(p[c]);
                }
            }
            // floor((offset * scale + sum) / scale + 1/2), then clipped.
            let num = 2 * (offset * scale + sum) + scale;
            let v = num.div_euclid(2 * scale);
            *out = v.clamp(0, 255) as u8;
        }
        Rgb(px)
    })
}

#[tokio::test]
async fn kernel_filters_match_pillows_kernels() {
    let h = harness().await;
    let img = sample_image();
    let src = img.to_rgb8();
    let cases: [(&str, [i64; 9], i64, i64); 7] = [
        (
            "lib.pillow.filter.Contour",
            [-1, -1, -1, -1, 8, -1, -1, -1, -1],
            1,
            255,
        ),
        (
            "lib.pillow.filter.Emboss",
            [-1, 0, 0, 0, 1, 0, 0, 0, 0],
            1,
            128,
        ),
        (
            "lib.pillow.filter.FindEdges",
            [-1, -1, -1, -1, 8, -1, -1, -1, -1],
            1,
            0,
        ),
        (
            "lib.pillow.filter.Smooth",
            [1, 1, 1, 1, 5, 1, 1, 1, 1],
            13,
            0,
        ),
        (
            "lib.pillow.enhance.EdgeEnhance",
            [-1, -1, -1, -1, 10, -1, -1, -1, -1],
            2,
            0,
        ),
        (
            "lib.pillow.enhance.Sharpen",
            [-2, -2, -2, -2, 32, -2, -2, -2, -2],
            16,
            0,
        ),
        (
            "lib.pillow.enhance.Detail",
            [0, -1, 0, -1, 10, -1, 0, -1, 0],
            6,
            0,
        ),
    ];
    for (node_type, kernel, scale, offset) in cases {
        let got = h.apply(node_type, &img, json!({})).await.to_rgb8();
        assert_eq!(
            got,
            expected_kernel(&src, kernel, scale, offset),
            "{node_type}"
        );
    }
    // Emboss spelled out for one pixel: 128 + p(2,1) - p(1,2) per channel.
    let got = h
        .apply("lib.image.filter.Emboss", &img, json!({}))
        .await
        .to_rgb8();
    let (p, q) = (src.get_pixel(2, 1), src.get_pixel(1, 2));
    let want: Vec<u8> = (0..3)
        .map(|c| (128 + i32::from(p[c]) - i32::from(q[c])).clamp(0, 255) as u8)
        .collect();
    assert_eq!(got.get_pixel(2, 1).0.to_vec(), want);
}

#[tokio::test]
async fn solarize_posterize_and_get_channel_are_per_sample() {
    let h = harness().await;
    let img = sample_image();
    let src = img.to_rgb8();
    let sol = h
        .apply(
            "lib.pillow.filter.Solarize",
            &img,
            json!({"threshold": 100}),
        )
        .await
        .to_rgb8();
    let post = h
        .apply("lib.pillow.filter.Posterize", &img, json!({"bits": 3}))
        .await
        .to_rgb8();
    let green = h
        .apply(
            "lib.pillow.filter.GetChannel",
            &img,
            json!({"channel": "G"}),
        )
        .await;
    assert_eq!(green.color(), image::ColorType::L8, "one band, mode L");
    let green = green.to_luma8();
    for (x, y, p) in src.enumerate_pixels() {
        for c in 0..3 {
            let v = p[c];
            let want = if v < 100 { v } else { 255 - v };
            assert_eq!(sol.get_pixel(x, y)[c], want, "solarize at {x},{y}");
            assert_eq!(post.get_pixel(x, y)[c], v / 32 * 32, "posterize at {x},{y}");
        }
        assert_eq!(green.get_pixel(x, y)[0], p[1], "G at {x},{y}");
    }
}

#[tokio::test]
async fn expand_adds_a_border_of_the_packed_fill() {
    let h = harness().await;
    let img = sample_image();
    let r = h
        .apply(
            "lib.pillow.filter.Expand",
            &img,
            json!({"border": 2, "fill": 77}),
        )
        .await
        .to_rgb8();
    assert_eq!(r.dimensions(), (9, 8));
    for (x, y, p) in r.enumerate_pixels() {
        let inside = (2..7).contains(&x) && (2..6).contains(&y);
        let want = if inside {
            *img.to_rgb8().get_pixel(x - 2, y - 2)
        } else {
            Rgb([77, 0, 0])
        };
        assert_eq!(*p, want, "at {x},{y}");
    }
}

#[tokio::test]
async fn autocontrast_stretches_and_cuts_the_histogram() {
    let h = harness().await;
    // Red spans 50..=101: scale 255/51 = 5 exactly; green and blue are flat (identity).
    let img = rgb(4, 1, |x, _| [[50, 60, 101, 75][x as usize], 9, 200]);
    let r = h
        .apply("lib.pillow.enhance.AutoContrast", &img, json!({}))
        .await
        .to_rgb8();
    let reds: Vec<u8> = r.pixels().map(|p| p[0]).collect();
    assert_eq!(reds, vec![0, 50, 255, 125]);
    assert!(r.pixels().all(|p| p[1] == 9 && p[2] == 200));

    // 20 pixels, cutoff 5%: one sample is dropped at each end, so 5..=56 is stretched.
    let reds = [0u8, 5, 56, 255];
    let img = rgb(20, 1, |x, _| {
        [reds.get(x as usize).copied().unwrap_or(30), 1, 2]
    });
    let r = h
        .apply(
            "lib.pillow.enhance.AutoContrast",
            &img,
            json!({"cutoff": 5}),
        )
        .await
        .to_rgb8();
    let got: Vec<u8> = r.pixels().take(5).map(|p| p[0]).collect();
    assert_eq!(got, vec![0, 0, 255, 255, (30 - 5) * 5]);
}

#[tokio::test]
async fn equalize_flattens_the_histogram() {
    let h = harness().await;
    // 1024 pixels: 512 of red 10, 256 of 20, 256 of 30. step = (1024 - 256) / 255 = 3;
    // level 10 → (1 + 0) / 3, 20 → (1 + 512) / 3, 30 → (1 + 768) / 3 = 256, clipped.
    let img = rgb(32, 32, |x, y| {
        let i = y * 32 + x;
        [
            if i < 512 {
                10
            } else if i < 768 {
                20
            } else {
                30
            },
            5,
            5,
        ]
    });
    let r = h
        .apply("lib.pillow.enhance.Equalize", &img, json!({}))
        .await
        .to_rgb8();
    assert_eq!(r.get_pixel(0, 0).0, [0, 5, 5]);
    assert_eq!(r.get_pixel(0, 16).0, [171, 5, 5]);
    assert_eq!(r.get_pixel(31, 31).0, [255, 5, 5]);
}

#[tokio::test]
async fn color_blends_with_the_grey_copy() {
    let h = harness().await;
    let img = rgb(
        2,
        1,
        |x, _| if x == 0 { [200, 100, 50] } else { [10, 20, 30] },
    );
    let luma = |p: [u32; 3]| ((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16) as u8;
    let grey = h
        .apply("lib.pillow.enhance.Color", &img, json!({"factor": 0.0}))
        .await
        .to_rgb8();
    let l0 = luma([200, 100, 50]);
    assert_eq!(grey.get_pixel(0, 0).0, [l0; 3]);
    // factor 2: l + 2 * (c - l), clipped.
    let vivid = h
        .apply("lib.image.enhance.Color", &img, json!({"factor": 2.0}))
        .await
        .to_rgb8();
    let want: Vec<u8> = [200i32, 100, 50]
        .iter()
        .map(|&c| (i32::from(l0) + 2 * (c - i32::from(l0))).clamp(0, 255) as u8)
        .collect();
    assert_eq!(vivid.get_pixel(0, 0).0.to_vec(), want);
}

#[tokio::test]
async fn rank_filter_takes_the_ranked_neighbour_with_repeated_edges() {
    let h = harness().await;
    let img = sample_image();
    let src = img.to_rgb8();
    let (w, hgt) = src.dimensions();
    for rank in [0usize, 4, 8] {
        let got = h
            .apply(
                "lib.pillow.enhance.RankFilter",
                &img,
                json!({"size": 3, "rank": rank}),
            )
            .await
            .to_rgb8();
        for (x, y, p) in got.enumerate_pixels() {
            for c in 0..3 {
                let mut win = Vec::new();
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as u32;
                        let yy = (y as i64 + dy).clamp(0, hgt as i64 - 1) as u32;
                        win.push(src.get_pixel(xx, yy)[c]);
                    }
                }
                win.sort_unstable();
                assert_eq!(p[c], win[rank], "rank {rank} at {x},{y} band {c}");
            }
        }
    }
}

#[tokio::test]
async fn unsharp_mask_leaves_flat_areas_and_steepens_edges() {
    let h = harness().await;
    let flat = rgb(6, 6, |_, _| [90, 90, 90]);
    let same = h
        .apply("lib.pillow.enhance.UnsharpMask", &flat, json!({}))
        .await;
    assert_eq!(same.to_rgb8(), flat.to_rgb8());
    let edge = rgb(8, 4, |x, _| if x < 4 { [60; 3] } else { [180; 3] });
    // percent 0 adds nothing.
    let none = h
        .apply(
            "lib.pillow.enhance.UnsharpMask",
            &edge,
            json!({"percent": 0}),
        )
        .await;
    assert_eq!(none.to_rgb8(), edge.to_rgb8());
    let sharp = h
        .apply(
            "lib.image.filter.UnsharpMask",
            &edge,
            json!({"radius": 1, "percent": 100, "threshold": 0}),
        )
        .await
        .to_rgb8();
    assert!(sharp.get_pixel(3, 1)[0] < 60, "dark side darker");
    assert!(sharp.get_pixel(4, 1)[0] > 180, "bright side brighter");
    assert_eq!(sharp.get_pixel(0, 1)[0], 60, "far from the edge: unchanged");
}

#[tokio::test]
async fn background_paste_and_composite() {
    let h = harness().await;
    let run_bg = |color: Value| {
        let h = &h;
        async move {
            let o = h
                .run_one(
                    "lib.pillow.draw.Background",
                    json!({"width": 3, "height": 2, "color": color}),
                )
                .await;
            assert_eq!(o.status, Status::Completed, "{:?}", o.error);
            h.fetch_image(&o.result["out"][0]).await.to_rgb8()
        }
    };
    let bg = run_bg(json!({"type": "color", "value": "#1a2B3c"})).await;
    assert_eq!(bg.dimensions(), (3, 2));
    assert!(bg.pixels().all(|p| p.0 == [0x1a, 0x2b, 0x3c]));
    assert!(run_bg(json!("#f0a"))
        .await
        .pixels()
        .all(|p| p.0 == [255, 0, 170]));
    assert!(run_bg(json!("teal"))
        .await
        .pixels()
        .all(|p| p.0 == [0, 128, 128]));
    let o = h
        .run_one(
            "lib.pillow.draw.Background",
            json!({"color": {"type": "color", "value": "not-a-colour"}}),
        )
        .await;
    assert_eq!(o.status, Status::Failed);
    assert!(o.error.unwrap().message().contains("not-a-colour"));

    // Paste a 2x2 at (3, 2) into a 4x3: only its top-left pixel lands, the rest is clipped.
    let base = rgb(4, 3, |_, _| [1, 2, 3]);
    let patch = rgb(2, 2, |x, y| [100 + x as u8, 200 + y as u8, 7]);
    let o = h
        .run_one(
            "nodetool.image.Paste",
            json!({"image": h.put_image(png(&base)).await, "paste": h.put_image(png(&patch)).await,
                   "left": 3, "top": 2}),
        )
        .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let r = h.fetch_image(&o.result["out"][0]).await.to_rgb8();
    assert_eq!(r.dimensions(), (4, 3));
    for (x, y, p) in r.enumerate_pixels() {
        let want = if (x, y) == (3, 2) {
            [100, 200, 7]
        } else {
            [1, 2, 3]
        };
        assert_eq!(p.0, want, "at {x},{y}");
    }

    // Composite: white mask → image1, black → image2, grey 128 → the rounded mix.
    let a = rgb(3, 1, |_, _| [250, 100, 0]);
    let b = rgb(3, 1, |_, _| [10, 20, 255]);
    let mask = rgb(3, 1, |x, _| [[255, 0, 128][x as usize]; 3]);
    let o = h
        .run_one(
            "lib.pillow.__init__.Composite",
            json!({"image1": h.put_image(png(&a)).await, "image2": h.put_image(png(&b)).await,
                   "mask": h.put_image(png(&mask)).await}),
        )
        .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let r = h.fetch_image(&o.result["out"][0]).await.to_rgba8();
    assert_eq!(r.get_pixel(0, 0).0, [250, 100, 0, 255]);
    assert_eq!(r.get_pixel(1, 0).0, [10, 20, 255, 255]);
    let mix = |p: u32, q: u32| ((p * 128 + q * 127) * 2 + 255) / 510;
    assert_eq!(
        r.get_pixel(2, 0).0,
        [
            mix(250, 10) as u8,
            mix(100, 20) as u8,
            mix(0, 255) as u8,
            255
        ]
    );
}

#[tokio::test]
async fn new_nodes_refuse_bad_parameters_clearly() {
    let h = harness().await;
    let image = h.put_image(png(&gradient(4, 4))).await;
    for (node_type, params, needle) in [
        ("lib.pillow.filter.Posterize", json!({"bits": 0}), "bits"),
        (
            "lib.pillow.filter.Solarize",
            json!({"threshold": 256}),
            "threshold",
        ),
        ("lib.pillow.filter.Expand", json!({"border": 513}), "border"),
        (
            "lib.pillow.filter.GetChannel",
            json!({"channel": "A"}),
            "channel",
        ),
        ("lib.pillow.enhance.RankFilter", json!({"size": 4}), "odd"),
        (
            "lib.pillow.enhance.RankFilter",
            json!({"size": 3, "rank": 9}),
            "rank",
        ),
        (
            "lib.pillow.enhance.UnsharpMask",
            json!({"percent": 1001}),
            "percent",
        ),
        ("lib.pillow.enhance.Color", json!({"factor": "x"}), "factor"),
    ] {
        let mut data = params;
        data["image"] = image.clone();
        let o = h.run_one(node_type, data).await;
        assert_eq!(o.status, Status::Failed, "{node_type}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{node_type}: {err}");
        assert!(err.message().contains(needle), "{node_type}: {err}");
    }
}
