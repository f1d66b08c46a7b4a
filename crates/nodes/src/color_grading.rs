//! `lib.pillow.color_grading.*` (also `lib.image.color_grading.*`): nodetool-base's numpy
//! colour grading (`lib/pillow/color_grading.py`), reproduced operation by operation.
//!
//! NodeTool converts the image to RGB, divides by 255 in `float32` and does every step as a
//! numpy `float32` operation, where Python float scalars are cast to `float32` (NEP 50) but are
//! first combined in `float64` when the Python expression combines them before the array
//! (`arr + tint_shift * 0.5`). Vignette, FilmLook and SplitToning mix in `float64` arrays
//! (coordinate grids, preset colours), so their arithmetic turns `float64` where numpy's does.
//! The result is `clip(arr * 255, 0, 255)` truncated to `uint8`. Following the same types and
//! the same order of operations makes the output bit-exact with NodeTool's (the fixtures compare
//! every pixel with images recorded from the Python original).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use nodetool_core::{Error, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::image::{as_rgb, blocking, decode, encode_png, image_bytes, store_temp_image};

/// A float property: name, default, NodeTool's `ge`/`le` bounds.
type FloatParam = (&'static str, f64, f64, f64);

/// One grading node: the pixels as `float32` RGB in 0..=1 (interleaved), the parameters, the
/// image width; returns the 8-bit result.
type Grade = fn(&mut [f32], &Params, u32) -> Result<Vec<u8>>;

struct Grading {
    class: &'static str,
    title: &'static str,
    floats: &'static [FloatParam],
    /// An enum property: name, default, allowed values.
    choice: Option<(&'static str, &'static str, &'static [&'static str])>,
    grade: Grade,
}

const GRADINGS: &[Grading] = &[
    Grading {
        class: "LiftGammaGain",
        title: "Lift Gamma Gain",
        floats: &[
            ("lift_r", 0.0, -1.0, 1.0),
            ("lift_g", 0.0, -1.0, 1.0),
            ("lift_b", 0.0, -1.0, 1.0),
            ("lift_master", 0.0, -1.0, 1.0),
            ("gamma_r", 1.0, 0.1, 4.0),
            ("gamma_g", 1.0, 0.1, 4.0),
            ("gamma_b", 1.0, 0.1, 4.0),
            ("gamma_master", 1.0, 0.1, 4.0),
            ("gain_r", 1.0, 0.0, 4.0),
            ("gain_g", 1.0, 0.0, 4.0),
            ("gain_b", 1.0, 0.0, 4.0),
            ("gain_master", 1.0, 0.0, 4.0),
        ],
        choice: None,
        grade: lift_gamma_gain,
    },
    Grading {
        class: "CDL",
        title: "CDL",
        floats: &[
            ("slope_r", 1.0, 0.0, 4.0),
            ("slope_g", 1.0, 0.0, 4.0),
            ("slope_b", 1.0, 0.0, 4.0),
            ("offset_r", 0.0, -1.0, 1.0),
            ("offset_g", 0.0, -1.0, 1.0),
            ("offset_b", 0.0, -1.0, 1.0),
            ("power_r", 1.0, 0.1, 4.0),
            ("power_g", 1.0, 0.1, 4.0),
            ("power_b", 1.0, 0.1, 4.0),
            ("saturation", 1.0, 0.0, 4.0),
        ],
        choice: None,
        grade: cdl,
    },
    Grading {
        class: "ColorBalance",
        title: "Color Balance",
        floats: &[("temperature", 0.0, -1.0, 1.0), ("tint", 0.0, -1.0, 1.0)],
        choice: None,
        grade: color_balance,
    },
    Grading {
        class: "Exposure",
        title: "Exposure",
        floats: &[
            ("exposure", 0.0, -5.0, 5.0),
            ("contrast", 0.0, -1.0, 1.0),
            ("highlights", 0.0, -1.0, 1.0),
            ("shadows", 0.0, -1.0, 1.0),
            ("whites", 0.0, -1.0, 1.0),
            ("blacks", 0.0, -1.0, 1.0),
        ],
        choice: None,
        grade: exposure,
    },
    Grading {
        class: "SaturationVibrance",
        title: "Saturation Vibrance",
        floats: &[("saturation", 0.0, -1.0, 1.0), ("vibrance", 0.0, -1.0, 1.0)],
        choice: None,
        grade: saturation_vibrance,
    },
    Grading {
        class: "HSLAdjust",
        title: "HSL Adjust",
        floats: &[
            ("hue_shift", 0.0, -1.0, 1.0),
            ("saturation", 0.0, -1.0, 1.0),
            ("luminance", 0.0, -1.0, 1.0),
        ],
        choice: Some((
            "color_range",
            "all",
            &[
                "all", "reds", "oranges", "yellows", "greens", "cyans", "blues", "purples",
                "magentas",
            ],
        )),
        grade: hsl_adjust,
    },
    Grading {
        class: "Curves",
        title: "Curves",
        floats: &[
            ("black_point", 0.0, 0.0, 0.5),
            ("white_point", 1.0, 0.5, 1.0),
            ("shadows", 0.0, -0.5, 0.5),
            ("midtones", 0.0, -0.5, 0.5),
            ("highlights", 0.0, -0.5, 0.5),
            ("red_midtones", 0.0, -0.5, 0.5),
            ("green_midtones", 0.0, -0.5, 0.5),
            ("blue_midtones", 0.0, -0.5, 0.5),
        ],
        choice: None,
        grade: curves,
    },
    Grading {
        class: "Vignette",
        title: "Vignette",
        floats: &[
            ("amount", 0.5, -1.0, 1.0),
            ("midpoint", 0.5, 0.0, 1.0),
            ("roundness", 0.0, -1.0, 1.0),
            ("feather", 0.5, 0.0, 1.0),
        ],
        choice: None,
        grade: vignette,
    },
    Grading {
        class: "FilmLook",
        title: "Film Look",
        floats: &[("intensity", 1.0, 0.0, 2.0)],
        choice: Some((
            "preset",
            "teal_orange",
            &[
                "teal_orange",
                "blockbuster",
                "noir",
                "vintage",
                "cold_blue",
                "warm_sunset",
                "matrix",
                "bleach_bypass",
                "cross_process",
                "faded_film",
            ],
        )),
        grade: film_look,
    },
    Grading {
        class: "SplitToning",
        title: "Split Toning",
        floats: &[
            ("shadow_hue", 200.0, 0.0, 360.0),
            ("shadow_saturation", 0.3, 0.0, 1.0),
            ("highlight_hue", 40.0, 0.0, 360.0),
            ("highlight_saturation", 0.3, 0.0, 1.0),
            ("balance", 0.0, -1.0, 1.0),
        ],
        choice: None,
        grade: split_toning,
    },
];

pub fn register(r: &mut Registry) {
    for grading in GRADINGS {
        for prefix in ["lib.pillow.color_grading", "lib.image.color_grading"] {
            let mut spec = NodeSpec::new(format!("{prefix}.{}", grading.class), grading.title)
                .required("image", "image");
            if let Some((name, default, _)) = grading.choice {
                spec = spec.input(name, "enum", json!(default));
            }
            for (name, default, _, _) in grading.floats {
                spec = spec.input(name, "float", json!(default));
            }
            r.register(Arc::new(GradingNode {
                spec: spec.output("output", "image").cacheable(),
                grading,
            }));
        }
    }
}

#[derive(Debug)]
struct GradingNode {
    spec: NodeSpec,
    grading: &'static Grading,
}

impl std::fmt::Debug for Grading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grading")
            .field("class", &self.class)
            .finish()
    }
}

/// The parsed properties of one firing.
struct Params {
    values: Vec<(&'static str, f64)>,
    choice: &'static str,
}

impl Params {
    fn get(&self, name: &str) -> f64 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, v)| *v)
    }

    fn parse(grading: &Grading, inputs: &NodeInputs, op: &'static str) -> Result<Self> {
        let mut values = Vec::with_capacity(grading.floats.len());
        for &(name, default, lo, hi) in grading.floats {
            let v = match inputs.get(name) {
                None => default,
                Some(_) => inputs.f64(name).map_err(|e| e.with_operation(op))?,
            };
            if !(lo..=hi).contains(&v) {
                return Err(Error::invalid_input(format!(
                    "input `{name}`: {v} is not within {lo}..={hi}"
                ))
                .with_operation(op)
                .with_context("input", name));
            }
            values.push((name, v));
        }
        let choice = match grading.choice {
            None => "",
            Some((name, default, allowed)) => {
                let given = inputs.str(name).map_err(|e| e.with_operation(op))?;
                let given = if given.is_empty() {
                    default.to_owned()
                } else {
                    given.to_ascii_lowercase()
                };
                allowed
                    .iter()
                    .find(|a| **a == given)
                    .copied()
                    .ok_or_else(|| {
                        Error::invalid_input(format!(
                            "input `{name}`: {given:?} is not one of {}",
                            allowed.join(", ")
                        ))
                        .with_operation(op)
                        .with_context("input", name)
                    })?
            }
        };
        Ok(Self { values, choice })
    }
}

#[async_trait]
impl NodeImpl for GradingNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "image.color_grading";
        let params = Params::parse(self.grading, inputs, OP)?;
        let bytes = image_bytes(ctx, inputs, "image", OP).await?;
        let grade = self.grading.grade;
        let png = blocking(OP, move || {
            let rgb = as_rgb(decode(&bytes, OP)?.0).to_rgb8();
            let (w, h) = rgb.dimensions();
            // `np.array(image, dtype=np.float32) / 255.0`
            let mut arr: Vec<f32> = rgb.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
            let data = grade(&mut arr, &params, w).map_err(|e| e.with_operation(OP))?;
            let img = ::image::RgbImage::from_raw(w, h, data)
                .ok_or_else(|| Error::unexpected("graded buffer size mismatch"))?;
            encode_png(&::image::DynamicImage::ImageRgb8(img), OP)
        })
        .await?;
        let image = store_temp_image(ctx, png).await?;
        out.emit("output", image).await
    }
}

// ---- numpy's building blocks --------------------------------------------------------------

/// `np.clip(arr * 255, 0, 255).astype(np.uint8)` for a `float32` array.
fn to_u8(arr: &[f32]) -> Vec<u8> {
    arr.iter()
        .map(|&v| (v * 255.0).clamp(0.0, 255.0) as u8)
        .collect()
}

/// The same for a `float64` array.
fn to_u8_f64(arr: &[f64]) -> Vec<u8> {
    arr.iter()
        .map(|&v| (v * 255.0).clamp(0.0, 255.0) as u8)
        .collect()
}

/// `np.clip(x, lo, hi)`: NaN stays NaN, as numpy's does.
fn clip(x: f32, lo: f32, hi: f32) -> f32 {
    if x.is_nan() {
        x
    } else {
        x.max(lo).min(hi)
    }
}

fn clip64(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.max(lo).min(hi)
    }
}

/// `0.2126 * R + 0.7152 * G + 0.0722 * B` (Rec. 709), each product and sum rounded to `f32`.
fn lum(px: &[f32]) -> f32 {
    0.2126f32 * px[0] + 0.7152f32 * px[1] + 0.0722f32 * px[2]
}

fn lum64(px: &[f64]) -> f64 {
    0.2126 * px[0] + 0.7152 * px[1] + 0.0722 * px[2]
}

/// numpy's float `%` (`npy_remainderf`): `fmod`, moved into the divisor's sign.
fn py_mod(a: f32, b: f32) -> f32 {
    let m = a % b;
    if m != 0.0 {
        if (b < 0.0) != (m < 0.0) {
            m + b
        } else {
            m
        }
    } else {
        0.0f32.copysign(b)
    }
}

/// A Python float scalar in a `float32` array operation (NEP 50: cast to `float32`).
fn s(v: f64) -> f32 {
    v as f32
}

// ---- the nodes ------------------------------------------------------------------------------

fn lift_gamma_gain(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let lift = [p.get("lift_r"), p.get("lift_g"), p.get("lift_b")];
    let gain = [p.get("gain_r"), p.get("gain_g"), p.get("gain_b")];
    let gamma = [p.get("gamma_r"), p.get("gamma_g"), p.get("gamma_b")];
    let (lm, gm, gam) = (
        p.get("lift_master"),
        p.get("gain_master"),
        p.get("gamma_master"),
    );
    for px in arr.chunks_exact_mut(3) {
        for c in 0..3 {
            let v = px[c] + s(lift[c]) + s(lm);
            let v = v * s(gain[c]) * s(gm);
            // np.clip(arr, 0.0001, None), then the inverse power.
            let v = if v.is_nan() { v } else { v.max(s(0.0001)) };
            px[c] = v.powf(s(1.0 / (gamma[c] * gam)));
        }
    }
    Ok(to_u8(arr))
}

fn cdl(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let slope = [p.get("slope_r"), p.get("slope_g"), p.get("slope_b")];
    let offset = [p.get("offset_r"), p.get("offset_g"), p.get("offset_b")];
    let power = [p.get("power_r"), p.get("power_g"), p.get("power_b")];
    let sat = p.get("saturation");
    for px in arr.chunks_exact_mut(3) {
        for c in 0..3 {
            let v = px[c] * s(slope[c]) + s(offset[c]);
            let v = if v.is_nan() { v } else { v.max(s(0.0001)) };
            px[c] = v.powf(s(power[c]));
        }
        if sat != 1.0 {
            let l = lum(px);
            for v in px.iter_mut() {
                *v = l + (*v - l) * s(sat);
            }
        }
    }
    Ok(to_u8(arr))
}

fn color_balance(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let temp_shift = p.get("temperature") * 0.3;
    let tint_shift = p.get("tint") * 0.3;
    for px in arr.chunks_exact_mut(3) {
        px[0] += s(temp_shift);
        px[2] -= s(temp_shift);
        px[1] -= s(tint_shift);
        px[0] += s(tint_shift * 0.5);
        px[2] += s(tint_shift * 0.5);
    }
    Ok(to_u8(arr))
}

fn exposure(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let (exp, contrast) = (p.get("exposure"), p.get("contrast"));
    let (highlights, shadows) = (p.get("highlights"), p.get("shadows"));
    let (whites, blacks) = (p.get("whites"), p.get("blacks"));
    for px in arr.chunks_exact_mut(3) {
        if exp != 0.0 {
            for v in px.iter_mut() {
                *v *= s(2f64.powf(exp));
            }
        }
        // The masks come from the luminance after exposure, computed once.
        let l = lum(px);
        if highlights != 0.0 {
            let mask = clip((l - 0.5) * 2.0, 0.0, 1.0);
            for v in px.iter_mut() {
                *v -= mask * s(highlights) * 0.5;
            }
        }
        if shadows != 0.0 {
            let mask = clip((0.5 - l) * 2.0, 0.0, 1.0);
            for v in px.iter_mut() {
                *v += mask * s(shadows) * 0.5;
            }
        }
        if whites != 0.0 {
            for v in px.iter_mut() {
                *v += s(whites * 0.2) * *v;
            }
        }
        if blacks != 0.0 {
            for v in px.iter_mut() {
                *v += s(blacks * 0.2) * (1.0 - *v);
            }
        }
        if contrast != 0.0 {
            for v in px.iter_mut() {
                *v = 0.5 + (*v - 0.5) * s(1.0 + contrast);
            }
        }
    }
    Ok(to_u8(arr))
}

fn saturation_vibrance(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let (saturation, vibrance) = (p.get("saturation"), p.get("vibrance"));
    for px in arr.chunks_exact_mut(3) {
        // One luminance, from the input, serves both steps.
        let l = lum(px);
        if saturation != 0.0 {
            for v in px.iter_mut() {
                *v = l + (*v - l) * s(1.0 + saturation);
            }
        }
        if vibrance != 0.0 {
            let max = px[0].max(px[1]).max(px[2]);
            let min = px[0].min(px[1]).min(px[2]);
            let current = if max > 0.0 {
                (max - min) / (max + s(0.001))
            } else {
                0.0
            };
            let factor = 1.0 + s(vibrance) * (1.0 - current);
            for v in px.iter_mut() {
                *v = l + (*v - l) * factor;
            }
        }
    }
    Ok(to_u8(arr))
}

/// matplotlib's `rgb_to_hsv` on one `float32` pixel in 0..=1.
fn rgb_to_hsv(px: &[f32]) -> [f32; 3] {
    let max = px[0].max(px[1]).max(px[2]);
    let min = px[0].min(px[1]).min(px[2]);
    let delta = max - min;
    let sat = if max > 0.0 { delta / max } else { 0.0 };
    let mut h = 0.0f32;
    if delta > 0.0 {
        // Later assignments win, as matplotlib's masked writes do (blue over green over red).
        if px[0] == max {
            h = (px[1] - px[2]) / delta;
        }
        if px[1] == max {
            h = 2.0 + (px[2] - px[0]) / delta;
        }
        if px[2] == max {
            h = 4.0 + (px[0] - px[1]) / delta;
        }
    }
    [py_mod(h / 6.0, 1.0), sat, max]
}

/// matplotlib's `hsv_to_rgb` on one `float32` pixel: `f = h*6 - i` is `float64` (a `float32`
/// minus an `int64` array), so are `q` and `t`; results are stored back as `float32`.
fn hsv_to_rgb([h, sat, v]: [f32; 3]) -> [f32; 3] {
    let h6 = h * 6.0;
    let i = h6 as i64;
    let f = f64::from(h6) - i as f64;
    let p = v * (1.0 - sat);
    let q = (f64::from(v) * (1.0 - f64::from(sat) * f)) as f32;
    let t = (f64::from(v) * (1.0 - f64::from(sat) * (1.0 - f))) as f32;
    if sat == 0.0 {
        return [v, v, v];
    }
    match i {
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        5 => [v, p, q],
        // i % 6 == 0 (i is 0, or 6 for h == 1.0).
        _ => [v, t, p],
    }
}

fn hsl_adjust(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let (hue_shift, saturation, luminance) =
        (p.get("hue_shift"), p.get("saturation"), p.get("luminance"));
    let range = match p.choice {
        "reds" => Some((0.95, 0.05)),
        "oranges" => Some((0.02, 0.10)),
        "yellows" => Some((0.10, 0.18)),
        "greens" => Some((0.18, 0.45)),
        "cyans" => Some((0.45, 0.55)),
        "blues" => Some((0.55, 0.72)),
        "purples" => Some((0.72, 0.83)),
        "magentas" => Some((0.83, 0.95)),
        _ => None,
    };
    for px in arr.chunks_exact_mut(3) {
        for v in px.iter_mut() {
            *v = clip(*v, 0.0, 1.0);
        }
        let [h, sat, v] = rgb_to_hsv(px);
        let blend = match range {
            None => 1.0f32,
            Some((start, end)) => {
                let (in_range, center, width): (bool, f64, f64) = if start > end {
                    (
                        h >= s(start) || h <= s(end),
                        (start + end + 1.0) / 2.0 % 1.0,
                        1.0 - start + end,
                    )
                } else {
                    (
                        h >= s(start) && h <= s(end),
                        (start + end) / 2.0,
                        end - start,
                    )
                };
                let d = (h - s(center)).abs();
                let dist = d.min(1.0 - d);
                let b = 0f32.max(1.0 - dist / s(width / 2.0 + 0.01));
                if in_range && sat > 0.1 {
                    b
                } else {
                    0.0
                }
            }
        };
        let new_h = py_mod(h + s(hue_shift * 0.5) * blend, 1.0);
        let new_s = clip(sat * (1.0 + s(saturation) * blend), 0.0, 1.0);
        let new_v = clip(v * (1.0 + s(luminance) * blend), 0.0, 1.0);
        px.copy_from_slice(&hsv_to_rgb([new_h, new_s, new_v]));
    }
    Ok(to_u8(arr))
}

fn curves(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let (black, white) = (p.get("black_point"), p.get("white_point"));
    let (shadows, midtones, highlights) =
        (p.get("shadows"), p.get("midtones"), p.get("highlights"));
    let channel = [
        p.get("red_midtones"),
        p.get("green_midtones"),
        p.get("blue_midtones"),
    ];
    for px in arr.chunks_exact_mut(3) {
        for v in px.iter_mut() {
            *v = clip((*v - s(black)) / s(white - black), 0.0, 1.0);
            if shadows != 0.0 {
                *v += s(shadows) * (1.0 - *v) * *v;
            }
            if midtones != 0.0 {
                *v = v.powf(s(1.0 / (1.0 + midtones)));
            }
            if highlights != 0.0 {
                *v += s(highlights) * *v * (1.0 - *v);
            }
        }
        for (v, m) in px.iter_mut().zip(channel) {
            if m != 0.0 {
                *v = clip(*v, s(0.0001), 1.0).powf(s(1.0 / (1.0 + m)));
            }
        }
    }
    Ok(to_u8(arr))
}

fn vignette(arr: &mut [f32], p: &Params, width: u32) -> Result<Vec<u8>> {
    let (amount, midpoint) = (p.get("amount"), p.get("midpoint"));
    let (roundness, feather) = (p.get("roundness"), p.get("feather"));
    let w = f64::from(width);
    let h = (arr.len() / 3 / width.max(1) as usize) as f64;
    let (cx, cy) = (w / 2.0, h / 2.0);
    let aspect = w / h;
    let feather = feather.max(0.01);
    let out: Vec<f64> = arr
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(i, px)| {
            let (x, y) = ((i % width as usize) as f64, (i / width as usize) as f64);
            let mut nx = (x - cx) / (w / 2.0);
            let ny = (y - cy) / (h / 2.0);
            if roundness > 0.0 {
                nx *= 1.0 + (1.0 / aspect - 1.0) * roundness;
            }
            let euclid = (nx * nx + ny * ny).sqrt();
            let dist = if roundness < 0.0 {
                let rect = -roundness;
                euclid * (1.0 - rect) + nx.abs().max(ny.abs()) * rect
            } else {
                euclid
            };
            let vig = clip64((dist - midpoint) / feather, 0.0, 1.0);
            let factor = if amount > 0.0 {
                1.0 - vig * amount
            } else {
                1.0 + vig * (-amount)
            };
            px.iter()
                .map(move |&v| f64::from(v) * factor)
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(to_u8_f64(&out))
}

/// FilmLook presets: shadow colour, highlight colour, contrast, saturation, fade.
type Preset = ([f64; 3], [f64; 3], f64, f64, f64);

fn preset(name: &str) -> Preset {
    match name {
        "blockbuster" => ([0.12, 0.24, 0.35], [1.0, 0.9, 0.78], 1.2, 1.0, 0.0),
        "noir" => ([0.2, 0.2, 0.24], [0.86, 0.86, 0.9], 1.4, 0.3, 0.0),
        "vintage" => ([0.4, 0.32, 0.24], [1.0, 0.94, 0.78], 0.9, 0.8, 0.15),
        "cold_blue" => ([0.16, 0.24, 0.4], [0.78, 0.86, 1.0], 1.1, 0.9, 0.0),
        "warm_sunset" => ([0.47, 0.24, 0.16], [1.0, 0.86, 0.7], 1.0, 1.3, 0.0),
        "matrix" => ([0.0, 0.16, 0.0], [0.6, 1.0, 0.6], 1.3, 0.7, 0.0),
        "bleach_bypass" => ([0.24, 0.24, 0.27], [0.94, 0.94, 0.98], 1.5, 0.5, 0.05),
        "cross_process" => ([0.0, 0.2, 0.3], [1.0, 0.9, 0.5], 1.2, 1.2, 0.0),
        "faded_film" => ([0.3, 0.28, 0.26], [0.95, 0.92, 0.88], 0.85, 0.7, 0.2),
        _ => ([0.0, 0.5, 0.55], [1.0, 0.78, 0.6], 1.1, 1.1, 0.0),
    }
}

fn film_look(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let (shadow, highlight, contrast, saturation, fade) = preset(p.choice);
    let intensity = p.get("intensity");
    let mut out = Vec::with_capacity(arr.len());
    for px in arr.chunks_exact(3) {
        let l = lum(px);
        let shadow_mask = f64::from(clip(1.0 - l * 2.0, 0.0, 1.0));
        let highlight_mask = f64::from(clip(l * 2.0 - 1.0, 0.0, 1.0));
        let mut v = [0f64; 3];
        for c in 0..3 {
            let x = f64::from(px[c]) + shadow_mask * (shadow[c] - 0.5) * 0.3;
            let x = x + highlight_mask * (highlight[c] - 0.5) * 0.3;
            v[c] = (x - 0.5) * contrast + 0.5;
        }
        let l3 = lum64(&v);
        for (c, x) in v.iter_mut().enumerate() {
            *x = l3 + (*x - l3) * saturation;
            if fade > 0.0 {
                *x = *x * (1.0 - fade) + fade * 0.15;
            }
            let orig = f64::from(px[c]);
            out.push(orig + (*x - orig) * intensity);
        }
    }
    Ok(to_u8_f64(&out))
}

/// Python's `colorsys.hsv_to_rgb`.
fn colorsys_hsv_to_rgb(h: f64, sat: f64, v: f64) -> [f64; 3] {
    if sat == 0.0 {
        return [v, v, v];
    }
    let i = (h * 6.0) as i64;
    let f = h * 6.0 - i as f64;
    let (p, q, t) = (
        v * (1.0 - sat),
        v * (1.0 - sat * f),
        v * (1.0 - sat * (1.0 - f)),
    );
    match i.rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn split_toning(arr: &mut [f32], p: &Params, _: u32) -> Result<Vec<u8>> {
    let shadow = colorsys_hsv_to_rgb(p.get("shadow_hue") / 360.0, 1.0, 1.0);
    let highlight = colorsys_hsv_to_rgb(p.get("highlight_hue") / 360.0, 1.0, 1.0);
    let (ss, hs) = (p.get("shadow_saturation"), p.get("highlight_saturation"));
    let offset = p.get("balance") * 0.25;
    let mut out = Vec::with_capacity(arr.len());
    for px in arr.chunks_exact(3) {
        let l = lum(px);
        let shadow_mask = f64::from(clip((s(0.5 + offset) - l) * 2.0, 0.0, 1.0));
        let highlight_mask = f64::from(clip((l - 0.5 + s(offset)) * 2.0, 0.0, 1.0));
        for c in 0..3 {
            let x = f64::from(px[c]) + shadow_mask * (shadow[c] - 0.5) * ss;
            out.push(x + highlight_mask * (highlight[c] - 0.5) * hs);
        }
    }
    Ok(to_u8_f64(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trips() {
        for px in [
            [1.0f32, 0.0, 0.0],
            [0.2, 0.4, 0.6],
            [0.5, 0.5, 0.5],
            [0.0, 0.0, 0.0],
        ] {
            let back = hsv_to_rgb(rgb_to_hsv(&px));
            for c in 0..3 {
                assert!((back[c] - px[c]).abs() < 1e-6, "{px:?} -> {back:?}");
            }
        }
        assert_eq!(py_mod(-0.25, 1.0), 0.75);
        assert_eq!(colorsys_hsv_to_rgb(200.0 / 360.0, 1.0, 1.0)[2], 1.0);
    }

    #[test]
    fn float_to_u8_truncates_and_clips() {
        assert_eq!(to_u8(&[0.5, -1.0, 2.0, f32::NAN]), vec![127, 0, 255, 0]);
    }
}
