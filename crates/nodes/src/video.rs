//! `nodetool.video.*` frame and track nodes (nodetool-base `nodetool/video.py`) through Debian's
//! `ffmpeg`/`ffprobe`: FrameIterator, FrameToVideo, Fps, ExtractAudio, AddAudio, AddSubtitles.
//!
//! Every run gets its own temporary folder for inputs and outputs, removed afterwards; ffmpeg
//! runs with an argv (never a shell), no stdin, a time limit (`FFMPEG_TIMEOUT_SECONDS`) and is
//! killed when the job is cancelled. Inputs are probed first and must be a plain media file of
//! a known container (no playlists or concat lists, which could make ffmpeg read other files
//! or the network); ffmpeg then reads them with that demuxer and the `file` protocol only.
//! Without ffmpeg the nodes fail saying how to install it. Where NodeTool used OpenCV to
//! decode frames, ffmpeg decodes them here: YUV to RGB conversion may differ by a level or two.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::events::Severity;
use nodetool_engine::node::{Emitter, InMsg, Inbox, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::image::{blocking, decode, encode_png, is_empty_ref, store_temp_image};
use super::settings::NodeSettings;

const OP: &str = "video";
/// The most frames FrameIterator emits and FrameToVideo and AddSubtitles take.
const MAX_FRAMES: usize = 10_000;
/// The largest media file read or written.
const MAX_MEDIA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The largest frame, in pixels.
const MAX_FRAME_PIXELS: u64 = 8192 * 8192;

/// The demuxers ffprobe and ffmpeg may use on an input (`-format_whitelist`, and ffprobe's first
/// `format_name` must be one): plain media containers. Playlists and lists (hls, dash, concat,
/// image2 sequences, ...) are not among them, since they make ffmpeg open other files or URLs.
const SAFE_FORMATS: &[&str] = &[
    "mov",
    "mp4",
    "matroska",
    "webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "ogg",
    "wav",
    "mp3",
    "flac",
    "aac",
    "gif",
    "asf",
    "h264",
    "hevc",
    "mjpeg",
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "amr",
    "aiff",
    "au",
    "caf",
    "w64",
    "ivf",
    "yuv4mpegpipe",
    "dv",
];

/// `SAFE_FORMATS` as ffmpeg's comma-separated list.
fn whitelist() -> String {
    SAFE_FORMATS.join(",")
}

pub fn register(r: &mut Registry, settings: &NodeSettings) {
    let ffmpeg = Arc::new(Ffmpeg::new(settings));
    let video = || json!({"type": "video", "uri": "", "asset_id": null, "data": null});
    let node = |spec: NodeSpec, kind: Kind| {
        Arc::new(VideoNode {
            spec,
            kind,
            ffmpeg: ffmpeg.clone(),
        })
    };
    r.register(node(
        NodeSpec::new("nodetool.video.FrameIterator", "Frame Iterator")
            .required("video", "video")
            .input("start", "int", json!(0))
            .input("end", "int", json!(-1))
            .output("frame", "image")
            .output("index", "int")
            .output("fps", "float")
            // Older NodeTool emitted an `event` too; bundled examples still wire it.
            .output("event", "any")
            .streaming(),
        Kind::FrameIterator,
    ));
    r.register(node(
        NodeSpec::new("nodetool.video.FrameToVideo", "Frame To Video")
            .input("frame", "image", Value::Null)
            .input("fps", "float", json!(30))
            // Older NodeTool took the iterator's index and event too; both are read and ignored.
            .input("index", "int", Value::Null)
            .input("event", "any", Value::Null)
            .output("output", "video")
            .consumes_stream(),
        Kind::FrameToVideo,
    ));
    r.register(node(
        NodeSpec::new("nodetool.video.Fps", "Fps")
            .input("video", "video", video())
            .output("output", "float")
            .cacheable(),
        Kind::Fps,
    ));
    r.register(node(
        NodeSpec::new("nodetool.video.ExtractAudio", "Extract Audio")
            .input("video", "video", video())
            .output("output", "audio")
            .cacheable(),
        Kind::ExtractAudio,
    ));
    r.register(node(
        NodeSpec::new("nodetool.video.AddAudio", "Add Audio")
            .input("video", "video", video())
            .input(
                "audio",
                "audio",
                json!({"type": "audio", "uri": "", "asset_id": null, "data": null}),
            )
            .input("volume", "float", json!(1.0))
            .input("mix", "bool", json!(false))
            .output("output", "video")
            .cacheable(),
        Kind::AddAudio,
    ));
    r.register(node(
        NodeSpec::new("nodetool.video.AddSubtitles", "Add Subtitles")
            .input("video", "video", video())
            .input("chunks", "list[audio_chunk]", json!([]))
            .input(
                "font",
                "union[font, str]",
                json!({"type": "font", "name": ""}),
            )
            .input("align", "enum", json!("bottom"))
            .input("font_size", "int", json!(24))
            .input(
                "font_color",
                "color",
                json!({"type": "color", "value": "#FFFFFF"}),
            )
            .output("output", "video")
            .cacheable(),
        Kind::AddSubtitles,
    ));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FrameIterator,
    FrameToVideo,
    Fps,
    ExtractAudio,
    AddAudio,
    AddSubtitles,
}

/// The ffmpeg and ffprobe binaries and the time limit of one run.
#[derive(Debug)]
pub(crate) struct Ffmpeg {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    timeout: Duration,
    pub(crate) font_path: Option<PathBuf>,
}

impl Ffmpeg {
    fn new(settings: &NodeSettings) -> Self {
        let ffmpeg = settings.ffmpeg.clone();
        // ffprobe lives next to ffmpeg, or in PATH like it.
        let ffprobe = match ffmpeg.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => dir.join("ffprobe"),
            None => PathBuf::from("ffprobe"),
        };
        Self {
            ffmpeg,
            ffprobe,
            timeout: settings.ffmpeg_timeout,
            font_path: settings.font_path.clone(),
        }
    }

    /// Runs `program args` to completion; the error carries ffmpeg's own message.
    async fn run(
        &self,
        ctx: &ProcessingContext,
        program: &Path,
        args: Vec<OsString>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| self.spawn_error(program, e))?;
        let output = tokio::select! {
            biased;
            _ = ctx.cancellation().cancelled() => {
                return Err(Error::new(ErrorKind::Cancelled, "job cancelled"));
            }
            r = tokio::time::timeout(self.timeout, child.wait_with_output()) => match r {
                Err(_) => return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{what}: ffmpeg took longer than {}s and was stopped", self.timeout.as_secs()),
                ).with_operation(OP)),
                Ok(r) => r.map_err(|e| Error::unexpected(format!("{what}: {e}")).with_operation(OP))?,
            },
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last: Vec<&str> = stderr.lines().rev().take(6).collect();
            let msg = last.into_iter().rev().collect::<Vec<_>>().join("; ");
            return Err(
                Error::invalid_input(format!("{what}: ffmpeg failed: {msg}")).with_operation(OP),
            );
        }
        Ok(output.stdout)
    }

    fn spawn_error(&self, program: &Path, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the video nodes need ffmpeg, and `{}` was not found: install Debian's ffmpeg \
                     package (apt-get install ffmpeg) or set FFMPEG_PATH",
                    program.display()
                ),
            )
            .with_operation(OP)
        } else {
            Error::unexpected(format!("cannot start {}: {e}", program.display())).with_operation(OP)
        }
    }

    /// The input's container, refused unless it is a plain media file.
    async fn probe_format(&self, ctx: &ProcessingContext, input: &Path) -> Result<String> {
        let formats = whitelist();
        let out = self
            .run(
                ctx,
                &self.ffprobe,
                args(&[
                    "-v",
                    "error",
                    "-protocol_whitelist",
                    "file",
                    "-format_whitelist",
                    &formats,
                    "-show_entries",
                    "format=format_name",
                    "-of",
                    "default=noprint_wrappers=1:nokey=1",
                ])
                .into_iter()
                .chain([input.as_os_str().to_owned()])
                .collect(),
                "cannot read the media file (it must be a plain audio or video file of a \
                 known container)",
            )
            .await?;
        let names = String::from_utf8_lossy(&out).trim().to_owned();
        let first = names.split(',').next().unwrap_or("").to_owned();
        if !SAFE_FORMATS.contains(&first.as_str()) {
            return Err(Error::invalid_input(format!(
                "the media file's format {names:?} is not a plain audio or video file"
            ))
            .with_operation(OP));
        }
        Ok(first)
    }

    /// `-f FORMAT -protocol_whitelist file -i PATH` for a probed input.
    async fn input(&self, ctx: &ProcessingContext, path: &Path) -> Result<Vec<OsString>> {
        let format = self.probe_format(ctx, path).await?;
        Ok(vec![
            "-f".into(),
            format.into(),
            "-protocol_whitelist".into(),
            "file".into(),
            "-format_whitelist".into(),
            whitelist().into(),
            "-i".into(),
            path.as_os_str().to_owned(),
        ])
    }

    /// The video stream's frame rate, and its width and height.
    async fn video_info(&self, ctx: &ProcessingContext, path: &Path) -> Result<(f64, u32, u32)> {
        let out = self
            .run(
                ctx,
                &self.ffprobe,
                args(&[
                    "-v",
                    "error",
                    "-protocol_whitelist",
                    "file",
                    "-format_whitelist",
                    &whitelist(),
                    "-select_streams",
                    "v:0",
                    "-show_entries",
                    "stream=avg_frame_rate,r_frame_rate,width,height",
                    "-of",
                    "json",
                ])
                .into_iter()
                .chain([path.as_os_str().to_owned()])
                .collect(),
                "cannot read the video",
            )
            .await?;
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| Error::unexpected(format!("ffprobe printed no JSON: {e}")))?;
        let stream = v["streams"]
            .get(0)
            .ok_or_else(|| Error::invalid_input("No video stream found").with_operation(OP))?;
        let rate = |k: &str| -> Option<f64> {
            let s = stream[k].as_str()?;
            let (n, d) = s.split_once('/').unwrap_or((s, "1"));
            let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
            (n > 0.0 && d > 0.0).then_some(n / d)
        };
        let fps = rate("avg_frame_rate")
            .or_else(|| rate("r_frame_rate"))
            .ok_or_else(|| Error::invalid_input("Could not determine FPS").with_operation(OP))?;
        let dim = |k: &str| stream[k].as_u64().unwrap_or(0) as u32;
        Ok((fps, dim("width"), dim("height")))
    }
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// A scratch folder for one run, removed when dropped.
fn scratch() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("nodetool-video-")
        .tempdir()
        .map_err(|e| {
            Error::unexpected(format!("cannot create a temporary folder: {e}")).with_operation(OP)
        })
}

/// Streams the media ref in `name` into `dir/file`, refusing empty refs and oversized files.
async fn fetch_to_file(
    ctx: &ProcessingContext,
    inputs: &NodeInputs,
    name: &'static str,
    dir: &Path,
    file: &str,
) -> Result<PathBuf> {
    let media = inputs.value(name);
    if is_empty_ref(&media) || !media.is_object() {
        return Err(Error::invalid_input(format!(
            "input `{name}` is not connected: no {name} given"
        ))
        .with_operation(OP)
        .with_context("input", name));
    }
    let path = dir.join(file);
    let mut out = tokio::fs::File::create(&path)
        .await
        .map_err(|e| Error::unexpected(format!("cannot write {}: {e}", path.display())))?;
    let mut body = ctx
        .download_asset(&media)
        .await
        .map_err(|e| e.with_context("input", name))?;
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.with_context("input", name))?;
        size += chunk.len() as u64;
        if size > MAX_MEDIA_BYTES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("input `{name}` is larger than 2 GiB"),
            )
            .with_operation(OP));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::unexpected(format!("cannot write {}: {e}", path.display())))?;
    }
    out.flush()
        .await
        .map_err(|e| Error::unexpected(e.to_string()))?;
    Ok(path)
}

/// Reads a produced file and stores it as a temp object; returns its ref.
async fn store_media(ctx: &ProcessingContext, path: &Path, kind: &str, ext: &str) -> Result<Value> {
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| Error::unexpected(format!("ffmpeg wrote no output: {e}")).with_operation(OP))?
        .len();
    if len > MAX_MEDIA_BYTES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            "the produced file is larger than 2 GiB",
        )
        .with_operation(OP));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Error::unexpected(format!("cannot read ffmpeg's output: {e}")))?;
    let key = ctx
        .put_temp(
            &format!("{}.{ext}", nodetool_core::id::new_id()),
            Bytes::from(bytes),
        )
        .await?;
    Ok(
        json!({"type": kind, "uri": format!("temp://{}", key.as_str()), "asset_id": null, "data": null}),
    )
}

#[derive(Debug)]
struct VideoNode {
    spec: NodeSpec,
    kind: Kind,
    ffmpeg: Arc<Ffmpeg>,
}

#[async_trait]
impl NodeImpl for VideoNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let f = &self.ffmpeg;
        let dir = scratch()?;
        match self.kind {
            Kind::FrameIterator => frame_iterator(f, ctx, inputs, out, dir.path()).await,
            Kind::Fps => {
                let input = fetch_to_file(ctx, inputs, "video", dir.path(), "input").await?;
                f.probe_format(ctx, &input).await?;
                let (fps, _, _) = f.video_info(ctx, &input).await?;
                out.emit("output", json!(fps)).await
            }
            Kind::ExtractAudio => {
                let input = fetch_to_file(ctx, inputs, "video", dir.path(), "input").await?;
                let output = dir.path().join("audio.opus");
                let mut a = args(&["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]);
                a.extend(f.input(ctx, &input).await?);
                a.extend(args(&["-map", "0:a", "-c:a", "libopus", "-f", "opus"]));
                a.push(output.as_os_str().to_owned());
                f.run(
                    ctx,
                    &f.ffmpeg,
                    a,
                    "cannot extract the audio (does the video have an audio track?)",
                )
                .await?;
                let audio = store_media(ctx, &output, "audio", "opus").await?;
                out.emit("output", audio).await
            }
            Kind::AddAudio => {
                let volume = inputs.opt_f64_or("volume", 1.0)?;
                if !(0.0..=2.0).contains(&volume) {
                    return Err(Error::invalid_input(format!(
                        "input `volume`: {volume} is not within 0..=2"
                    ))
                    .with_operation(OP)
                    .with_context("input", "volume"));
                }
                let mix = inputs.bool("mix")?;
                let video = fetch_to_file(ctx, inputs, "video", dir.path(), "video").await?;
                let audio = fetch_to_file(ctx, inputs, "audio", dir.path(), "audio").await?;
                let output = dir.path().join("output.mp4");
                let mut a = args(&["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]);
                a.extend(f.input(ctx, &video).await?);
                a.extend(f.input(ctx, &audio).await?);
                let graph = if mix {
                    format!("[1:a]volume={volume}[added];[0:a][added]amix=inputs=2[aout]")
                } else {
                    format!("[1:a]volume={volume}[aout]")
                };
                a.extend(args(&[
                    "-filter_complex",
                    &graph,
                    "-map",
                    "0:v",
                    "-map",
                    "[aout]",
                    "-f",
                    "mp4",
                ]));
                a.push(output.as_os_str().to_owned());
                f.run(ctx, &f.ffmpeg, a, "cannot add the audio").await?;
                let video = store_media(ctx, &output, "video", "mp4").await?;
                out.emit("output", video).await
            }
            Kind::AddSubtitles => {
                super::video_subtitles::add_subtitles(f, ctx, inputs, out, dir.path()).await
            }
            Kind::FrameToVideo => {
                // Not streamed: the `frame` input holds one frame (or a list of them).
                let frames = match inputs.value("frame") {
                    Value::Array(items) => items,
                    Value::Null => Vec::new(),
                    one => vec![one],
                };
                let fps = inputs.opt_f64_or("fps", 30.0)?;
                frames_to_video(f, ctx, out, dir.path(), frames, fps).await
            }
        }
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        // FrameToVideo: every frame that arrives, the last fps.
        let mut frames = Vec::new();
        let mut fps = props.opt_f64_or("fps", 30.0)?;
        let frame_h = inbox.handle_index("frame");
        let fps_h = inbox.handle_index("fps");
        if frame_h.is_none() {
            if let v @ Value::Object(_) = props.value("frame") {
                frames.push(v);
            }
        }
        while let Some(msg) = inbox.next_msg().await? {
            if let InMsg::Item { handle, value, .. } = msg {
                if Some(handle) == frame_h {
                    if frames.len() >= MAX_FRAMES {
                        return Err(Error::new(
                            ErrorKind::TooLarge,
                            format!("FrameToVideo takes at most {MAX_FRAMES} frames"),
                        )
                        .with_operation(OP));
                    }
                    frames.push(value);
                } else if Some(handle) == fps_h {
                    fps = value.as_f64().ok_or_else(|| {
                        Error::invalid_input("input `fps` must be a number").with_operation(OP)
                    })?;
                }
            }
        }
        let dir = scratch()?;
        frames_to_video(&self.ffmpeg, ctx, out, dir.path(), frames, fps).await
    }
}

trait OptF64 {
    fn opt_f64_or(&self, name: &str, default: f64) -> Result<f64>;
}

impl OptF64 for NodeInputs {
    fn opt_f64_or(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(_) => self.f64(name),
        }
    }
}

/// NodeTool's FrameIterator: frames `start..end` (`end` exclusive, -1: to the end), each as a
/// PNG image with its frame number and the video's frame rate.
async fn frame_iterator(
    f: &Ffmpeg,
    ctx: &ProcessingContext,
    inputs: &NodeInputs,
    out: &mut Emitter,
    dir: &Path,
) -> Result<()> {
    let start = inputs.opt_i64("start")?.unwrap_or(0);
    let end = inputs.opt_i64("end")?.unwrap_or(-1);
    if start < 0 || end < -1 {
        return Err(Error::invalid_input(format!(
            "start ({start}) must be 0 or more and end ({end}) -1 or more"
        ))
        .with_operation(OP));
    }
    let input = fetch_to_file(ctx, inputs, "video", dir, "input").await?;
    let mut a = args(&["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]);
    a.extend(f.input(ctx, &input).await?);
    let (fps, w, h) = f.video_info(ctx, &input).await?;
    if u64::from(w) * u64::from(h) > MAX_FRAME_PIXELS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("frames of {w}x{h} are too large"),
        )
        .with_operation(OP));
    }
    let select = if end >= 0 {
        format!("select=gte(n\\,{start})*lt(n\\,{end})")
    } else {
        format!("select=gte(n\\,{start})")
    };
    let frames_dir = dir.join("frames");
    std::fs::create_dir(&frames_dir).map_err(|e| Error::unexpected(e.to_string()))?;
    a.extend(args(&[
        "-vf",
        &select,
        "-fps_mode",
        "passthrough",
        "-frames:v",
        &(MAX_FRAMES + 1).to_string(),
        "-pix_fmt",
        "rgb24",
    ]));
    a.push(frames_dir.join("frame_%06d.png").into_os_string());
    f.run(ctx, &f.ffmpeg, a, "cannot extract the frames")
        .await?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&frames_dir)
        .map_err(|e| Error::unexpected(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    if files.len() > MAX_FRAMES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("the range has more than {MAX_FRAMES} frames; set `end` to take fewer"),
        )
        .with_operation(OP));
    }
    for (i, file) in files.iter().enumerate() {
        ctx.check_cancelled()?;
        let png = tokio::fs::read(file)
            .await
            .map_err(|e| Error::unexpected(e.to_string()))?;
        let frame = store_temp_image(ctx, png).await?;
        out.emit("frame", frame).await?;
        out.emit("index", json!(start + i as i64)).await?;
        out.emit("fps", json!(fps)).await?;
    }
    Ok(())
}

/// NodeTool's FrameToVideo: the frames (in order) as an H.264 MP4 at `fps`. Frames of odd size
/// are padded by a pixel (libx264's 4:2:0 needs even sides); all frames must share one size.
async fn frames_to_video(
    f: &Ffmpeg,
    ctx: &ProcessingContext,
    out: &mut Emitter,
    dir: &Path,
    frames: Vec<Value>,
    fps: f64,
) -> Result<()> {
    if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
        return Err(
            Error::invalid_input(format!("input `fps`: {fps} is not within (0, 1000]"))
                .with_operation(OP)
                .with_context("input", "fps"),
        );
    }
    if frames.is_empty() {
        ctx.log(Severity::Warning, "No frames received in FrameToVideo");
        return Ok(());
    }
    if frames.len() > MAX_FRAMES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("FrameToVideo takes at most {MAX_FRAMES} frames"),
        )
        .with_operation(OP));
    }
    let mut size = None;
    for (i, frame) in frames.iter().enumerate() {
        ctx.check_cancelled()?;
        if is_empty_ref(frame) || !frame.is_object() {
            return Err(
                Error::invalid_input(format!("frame {i} is not an image")).with_operation(OP)
            );
        }
        let bytes = ctx
            .asset_bytes(frame)
            .await
            .map_err(|e| e.with_context("frame", i))?;
        let path = dir.join(format!("frame_{i:06}.png"));
        let dims = blocking(OP, move || {
            let img = decode(&bytes, OP)?.0.to_rgb8();
            let dims = img.dimensions();
            let png = encode_png(&::image::DynamicImage::ImageRgb8(img), OP)?;
            std::fs::write(&path, png).map_err(|e| Error::unexpected(e.to_string()))?;
            Ok(dims)
        })
        .await?;
        match size {
            None => size = Some(dims),
            Some(s) if s != dims => {
                return Err(Error::invalid_input(format!(
                "frame {i} is {}x{}, but the first frame is {}x{}: all frames must have one size",
                dims.0, dims.1, s.0, s.1
            ))
                .with_operation(OP))
            }
            Some(_) => {}
        }
    }
    let output = dir.join("video.mp4");
    let mut a = args(&[
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-framerate",
    ]);
    a.push(fps.to_string().into());
    a.extend(args(&["-f", "image2", "-protocol_whitelist", "file", "-i"]));
    a.push(dir.join("frame_%06d.png").into_os_string());
    a.extend(args(&[
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "mp4",
    ]));
    a.push(output.as_os_str().to_owned());
    f.run(ctx, &f.ffmpeg, a, "cannot create the video").await?;
    let video = store_media(ctx, &output, "video", "mp4").await?;
    out.emit("output", video).await
}

/// For AddSubtitles: the probed input args, the video's geometry, and a raw RGB frame pipe.
pub(crate) mod pipe {
    use super::*;

    /// Spawns `ffmpeg` with `a`, stdin and stdout piped.
    pub(crate) fn spawn(
        f: &Ffmpeg,
        a: Vec<OsString>,
        stdin: bool,
    ) -> Result<tokio::process::Child> {
        tokio::process::Command::new(&f.ffmpeg)
            .args(a)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if stdin { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| f.spawn_error(&f.ffmpeg, e))
    }

    pub(crate) async fn input(
        f: &Ffmpeg,
        ctx: &ProcessingContext,
        p: &Path,
    ) -> Result<Vec<OsString>> {
        f.input(ctx, p).await
    }

    pub(crate) async fn info(
        f: &Ffmpeg,
        ctx: &ProcessingContext,
        p: &Path,
    ) -> Result<(f64, u32, u32)> {
        f.video_info(ctx, p).await
    }

    pub(crate) async fn run(
        f: &Ffmpeg,
        ctx: &ProcessingContext,
        a: Vec<OsString>,
        what: &str,
    ) -> Result<()> {
        f.run(ctx, &f.ffmpeg, a, what).await.map(|_| ())
    }

    pub(crate) fn timeout(f: &Ffmpeg) -> Duration {
        f.timeout
    }

    pub(crate) async fn fetch(
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        dir: &Path,
    ) -> Result<PathBuf> {
        fetch_to_file(ctx, inputs, "video", dir, "input").await
    }

    pub(crate) async fn store(ctx: &ProcessingContext, p: &Path) -> Result<Value> {
        store_media(ctx, p, "video", "mp4").await
    }

    pub(crate) const MAX: usize = MAX_FRAMES;
    pub(crate) const MAX_PIXELS: u64 = MAX_FRAME_PIXELS;
}
