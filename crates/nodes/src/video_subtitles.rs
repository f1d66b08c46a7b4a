//! `nodetool.video.AddSubtitles`: NodeTool draws each chunk's text on the frames its timestamps
//! cover (PIL on OpenCV frames) and muxes the original audio back. Here one ffmpeg decodes the
//! video to raw RGB frames on a pipe, the text is drawn with RenderText's machinery, and a second
//! ffmpeg encodes the frames (H.264, where NodeTool wrote `mp4v`) with the original audio copied;
//! only one frame is in memory at a time.

use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeInputs};

use super::draw_text::{draw_text, load_font, text_color, text_length, Align};
use super::video::{pipe, Ffmpeg};

const OP: &str = "video.add_subtitles";

/// One subtitle: `[start, end]` seconds and its text (NodeTool's `AudioChunk`).
#[derive(Debug, Clone, PartialEq)]
struct Chunk {
    start: f64,
    end: f64,
    text: String,
}

fn chunks(v: &Value) -> Result<Vec<Chunk>> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(Error::invalid_input("input `chunks` must be a list").with_operation(OP)),
    };
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let ts = c.get("timestamp").and_then(Value::as_array);
            let t = |k: usize| ts.and_then(|t| t.get(k)).and_then(Value::as_f64);
            match (t(0), t(1)) {
                (Some(start), Some(end)) => Ok(Chunk {
                    start,
                    end,
                    text: c
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                _ => Err(Error::invalid_input(format!(
                    "chunk {i} needs a `timestamp` of [start, end] seconds"
                ))
                .with_operation(OP)),
            }
        })
        .collect()
}

/// NodeTool's greedy word wrap to `max_width` pixels.
fn wrap(text: &str, max_width: f32, width_of: &dyn Fn(&str) -> f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for word in text.split_whitespace() {
        current.push(word);
        if width_of(&current.join(" ")) > max_width {
            if current.len() == 1 {
                lines.push(current[0].to_owned());
                current.clear();
            } else {
                current.pop();
                lines.push(current.join(" "));
                current = vec![word];
            }
        }
    }
    if !current.is_empty() {
        lines.push(current.join(" "));
    }
    lines
}

pub(crate) async fn add_subtitles(
    f: &Ffmpeg,
    ctx: &ProcessingContext,
    inputs: &NodeInputs,
    out: &mut Emitter,
    dir: &Path,
) -> Result<()> {
    let chunks = chunks(&inputs.value("chunks"))?;
    let font_size = inputs.opt_i64("font_size")?.unwrap_or(24);
    if !(1..=72).contains(&font_size) {
        return Err(Error::invalid_input(format!(
            "input `font_size`: {font_size} is not within 1..=72"
        ))
        .with_operation(OP));
    }
    let align = inputs.str("align")?.to_ascii_lowercase();
    if !matches!(align.as_str(), "" | "top" | "center" | "bottom") {
        return Err(Error::invalid_input(format!(
            "input `align`: {align:?} is not one of \"top\", \"center\", \"bottom\""
        ))
        .with_operation(OP));
    }
    let color = text_color(&inputs.value("font_color"))?;
    let font = load_font(&inputs.value("font"), f.font_path.as_deref())?;
    let input = pipe::fetch(ctx, inputs, dir).await?;
    let source = pipe::input(f, ctx, &input).await?;
    let (fps, w, h) = pipe::info(f, ctx, &input).await?;
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > pipe::MAX_PIXELS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("frames of {w}x{h} are not supported"),
        )
        .with_operation(OP));
    }

    let quiet = || -> Vec<OsString> {
        ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
            .iter()
            .map(OsString::from)
            .collect()
    };
    let mut dec_args = quiet();
    dec_args.extend(source.iter().cloned());
    for a in [
        "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ] {
        dec_args.push(a.into());
    }
    let frames_path = dir.join("frames.mp4");
    let mut enc_args = quiet();
    for a in [
        "-f".to_owned(),
        "rawvideo".into(),
        "-pix_fmt".into(),
        "rgb24".into(),
        "-s".into(),
        format!("{w}x{h}"),
        "-r".into(),
        fps.to_string(),
        "-i".into(),
        "pipe:0".into(),
        "-vf".into(),
        "pad=ceil(iw/2)*2:ceil(ih/2)*2".into(),
        "-c:v".into(),
        "libx264".into(),
        "-pix_fmt".into(),
        "yuv420p".into(),
        "-f".into(),
        "mp4".into(),
    ] {
        enc_args.push(a.into());
    }
    enc_args.push(frames_path.as_os_str().to_owned());

    let mut decoder = pipe::spawn(f, dec_args, false)?;
    let mut encoder = pipe::spawn(f, enc_args, true)?;
    let mut frames = decoder
        .stdout
        .take()
        .ok_or_else(|| Error::unexpected("no decoder output pipe"))?;
    let mut sink = encoder
        .stdin
        .take()
        .ok_or_else(|| Error::unexpected("no encoder input pipe"))?;
    let frame_len = w as usize * h as usize * 3;
    let size = font_size as f32;
    let pump = async {
        let mut buf = vec![0u8; frame_len];
        let mut n = 0usize;
        loop {
            match frames.read_exact(&mut buf).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(Error::unexpected(format!("reading frames: {e}"))),
            }
            if n >= pipe::MAX {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("AddSubtitles takes videos of at most {} frames", pipe::MAX),
                )
                .with_operation(OP));
            }
            let t = n as f64 / fps;
            if let Some(chunk) = chunks.iter().find(|c| c.start <= t && t <= c.end) {
                let mut img = ::image::RgbImage::from_raw(w, h, std::mem::take(&mut buf))
                    .ok_or_else(|| Error::unexpected("frame buffer size mismatch"))?;
                let max_width = (f64::from(w) * 0.8) as i64 as f32;
                let lines = wrap(&chunk.text, max_width, &|s| text_length(&font, size, s));
                let spacing = size * 1.2;
                let total = lines.len() as f32 * spacing;
                let mut y = match align.as_str() {
                    "top" => 20.0,
                    "center" => ((h as f32 - total) / 2.0).floor(),
                    _ => h as f32 - total - 20.0,
                };
                for line in &lines {
                    let x = ((w as f32 - text_length(&font, size, line)) / 2.0).floor();
                    draw_text(&mut img, &font, size, (x, y), line, Align::Left, color);
                    y += spacing;
                }
                buf = img.into_raw();
            }
            sink.write_all(&buf).await.map_err(|e| {
                Error::unexpected(format!("writing frames: {e}")).with_operation(OP)
            })?;
            n += 1;
        }
        sink.shutdown().await.ok();
        drop(sink);
        Ok(n)
    };
    let limit = pipe::timeout(f);
    let n = tokio::select! {
        biased;
        _ = ctx.cancellation().cancelled() => {
            return Err(Error::new(ErrorKind::Cancelled, "job cancelled"));
        }
        r = tokio::time::timeout(limit, pump) => match r {
            Err(_) => return Err(Error::new(ErrorKind::Timeout, format!(
                "adding subtitles took longer than {}s and was stopped", limit.as_secs()
            )).with_operation(OP)),
            Ok(r) => r?,
        },
    };
    let dec = decoder
        .wait_with_output()
        .await
        .map_err(|e| Error::unexpected(e.to_string()))?;
    let enc = encoder
        .wait_with_output()
        .await
        .map_err(|e| Error::unexpected(e.to_string()))?;
    for (what, o) in [("decoding", &dec), ("encoding", &enc)] {
        if !o.status.success() {
            return Err(Error::invalid_input(format!(
                "{what} the video failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
            .with_operation(OP));
        }
    }
    if n == 0 {
        return Err(Error::invalid_input("the video has no frames").with_operation(OP));
    }
    // The new frames with the original audio (if any), copied.
    let output = dir.join("output.mp4");
    let mut a = quiet();
    for x in ["-protocol_whitelist", "file", "-i"] {
        a.push(x.into());
    }
    a.push(frames_path.as_os_str().to_owned());
    a.extend(source);
    for x in [
        "-map", "0:v", "-map", "1:a?", "-c:v", "copy", "-c:a", "copy", "-f", "mp4",
    ] {
        a.push(x.into());
    }
    a.push(output.as_os_str().to_owned());
    pipe::run(f, ctx, a, "cannot add the audio back").await?;
    let video = pipe::store(ctx, &output).await?;
    out.emit("output", video).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_like_nodetool() {
        let width = |s: &str| s.len() as f32;
        assert_eq!(wrap("aa bb cc dd", 5.0, &width), vec!["aa bb", "cc dd"]);
        assert_eq!(
            wrap("averyverylongword x", 5.0, &width),
            vec!["averyverylongword", "x"]
        );
        assert!(wrap("   ", 5.0, &width).is_empty());
    }

    #[test]
    fn chunks_need_timestamps() {
        let c = chunks(&serde_json::json!([{"timestamp": [0.0, 1.5], "text": "hi"}])).unwrap();
        assert_eq!(c[0].end, 1.5);
        assert!(chunks(&serde_json::json!([{"text": "hi"}])).is_err());
    }
}
