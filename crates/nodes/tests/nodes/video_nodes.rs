//! The video nodes with Debian's ffmpeg: AddSubtitles draws each chunk on the frames its
//! timestamps cover and keeps the audio; bad input (no ffmpeg, playlists that would make ffmpeg
//! read other files, a stuck run) fails clearly.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use nodetool_core::{ErrorKind, StorageKey};
use nodetool_engine::{Engine, EngineResources, RunOptions, RunOutcome, Status};
use nodetool_nodes::NodeSettings;
use serde_json::{json, Value};

fn clip() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video_frames/clip.mp4")
}

fn have_ffmpeg(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|p| {
        std::process::Command::new(p)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        nodetool_testkit::skip_or_fail(test, "ffmpeg and ffprobe are not installed");
    }
    ok
}

fn inline(kind: &str, bytes: &[u8]) -> Value {
    json!({"type": kind, "uri": "", "asset_id": null, "data": bytes})
}

async fn engine_with_settings(settings: NodeSettings) -> (Engine, EngineResources) {
    let res = test_resources().await;
    (
        Engine::new(
            std::sync::Arc::new(nodetool_nodes::registry_with(&settings)),
            res.clone(),
        ),
        res,
    )
}

async fn run_one(engine: &Engine, node_type: &str, data: Value) -> RunOutcome {
    let slot = if node_type.ends_with("FrameIterator") {
        "frame"
    } else {
        "output"
    };
    run(
        engine,
        graph(
            &[
                ("n", node_type, data),
                ("o", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[("n", slot, "o", "value")],
        ),
        Value::Null,
        RunOptions::default(),
    )
    .await
    .0
}

/// Every decoded frame (RGB8) and the stream kinds of a media file.
fn decode(path: &Path) -> (Vec<Vec<u8>>, Vec<String>) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let kinds = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (
        out.stdout.chunks(64 * 48 * 3).map(<[u8]>::to_vec).collect(),
        kinds,
    )
}

async fn stored(res: &EngineResources, v: &Value, dir: &Path) -> PathBuf {
    let key = v["uri"].as_str().unwrap().strip_prefix("temp://").unwrap();
    let got = res
        .temp_storage
        .download(&StorageKey::new(key).unwrap(), None)
        .await
        .unwrap();
    let bytes = nodetool_core::storage::collect(got.body).await.unwrap();
    let path = dir.join("out.mp4");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn subtitles_are_drawn_on_the_frames_of_their_chunk_and_audio_is_kept() {
    if !have_ffmpeg("subtitles_are_drawn") {
        return;
    }
    let (engine, res) = engine_with_settings(NodeSettings::default()).await;
    let bytes = std::fs::read(clip()).unwrap();
    let o = run_one(
        &engine,
        "nodetool.video.AddSubtitles",
        json!({
            "video": inline("video", &bytes),
            // Frames are 0.2 s apart: frames 0, 1 and 2 fall in the chunk.
            "chunks": [{"type": "audio_chunk", "timestamp": [0.0, 0.45], "text": "Hi there"}],
            "font": {"type": "font", "name": "DejaVuSans-Bold"},
            "font_size": 14,
            "font_color": {"type": "color", "value": "#FF0000"},
            "align": "bottom",
        }),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let dir = tempfile::tempdir().unwrap();
    let out = stored(&res, &o.result["out"][0], dir.path()).await;
    let (frames, kinds) = decode(&out);
    let (orig, orig_kinds) = decode(&clip());
    assert_eq!(kinds, orig_kinds, "video and audio streams");
    assert_eq!(frames.len(), orig.len());
    // Text changes frames 0..=2 and no other (beyond re-encoding noise): NodeTool puts the
    // lines 20 px above the bottom, so on this 48 px clip they cover rows 11..=27.
    let changed = |f: &[u8], g: &[u8]| {
        f.chunks(3)
            .zip(g.chunks(3))
            .filter(|(a, b)| a.iter().zip(b.iter()).any(|(x, y)| x.abs_diff(*y) > 60))
            .count()
    };
    for (i, (f, g)) in frames.iter().zip(&orig).enumerate() {
        let n = changed(f, g);
        if i <= 2 {
            assert!(n > 30, "frame {i}: only {n} pixels changed");
        } else {
            assert!(n < 5, "frame {i}: {n} pixels changed");
        }
    }
}

#[tokio::test]
async fn bad_input_fails_clearly() {
    if !have_ffmpeg("bad_input_fails_clearly") {
        return;
    }
    let (engine, _) = engine_with_settings(NodeSettings::default()).await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), b"private").unwrap();
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{}\n#EXT-X-ENDLIST\n",
        secret.path().display()
    );
    let concat = format!("ffconcat version 1.0\nfile '{}'\n", secret.path().display());
    let clip = std::fs::read(clip()).unwrap();
    let cases: Vec<(&str, Value, ErrorKind, &str)> = vec![
        (
            "nodetool.video.FrameIterator",
            json!({"video": inline("video", playlist.as_bytes())}),
            ErrorKind::InvalidInput,
            "it must be a plain audio or video file",
        ),
        (
            "nodetool.video.ExtractAudio",
            json!({"video": inline("video", concat.as_bytes())}),
            ErrorKind::InvalidInput,
            "it must be a plain audio or video file",
        ),
        (
            "nodetool.video.ExtractAudio",
            json!({"video": inline("video", b"not a video at all")}),
            ErrorKind::InvalidInput,
            "it must be a plain audio or video file",
        ),
        (
            "nodetool.video.ExtractAudio",
            json!({}),
            ErrorKind::InvalidInput,
            "is not connected",
        ),
        (
            "nodetool.video.AddAudio",
            json!({"video": inline("video", &clip), "audio": inline("audio", &clip), "volume": 3.0}),
            ErrorKind::InvalidInput,
            "not within 0..=2",
        ),
        (
            "nodetool.video.FrameIterator",
            json!({"video": inline("video", &clip), "start": -1}),
            ErrorKind::InvalidInput,
            "must be 0 or more",
        ),
        (
            "nodetool.video.AddSubtitles",
            json!({"video": inline("video", &clip), "chunks": [{"text": "no time"}]}),
            ErrorKind::InvalidInput,
            "needs a `timestamp`",
        ),
    ];
    for (node_type, data, kind, needle) in cases {
        let o = run_one(&engine, node_type, data).await;
        assert_eq!(o.status, Status::Failed, "{node_type}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), kind, "{node_type}: {err}");
        assert!(err.message().contains(needle), "{node_type}: {err}");
    }

    // No ffmpeg: a clear error naming the package and the setting.
    let (engine, _) = engine_with_settings(NodeSettings {
        ffmpeg: "/nonexistent/ffmpeg".into(),
        ..NodeSettings::default()
    })
    .await;
    let o = run_one(
        &engine,
        "nodetool.video.Fps",
        json!({"video": inline("video", &clip)}),
    )
    .await;
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.message().contains("apt-get install ffmpeg") && err.message().contains("FFMPEG_PATH"),
        "{err}"
    );

    // A run over its time limit is stopped.
    let (engine, _) = engine_with_settings(NodeSettings {
        ffmpeg_timeout: Duration::from_millis(1),
        ..NodeSettings::default()
    })
    .await;
    let o = run_one(
        &engine,
        "nodetool.video.ExtractAudio",
        json!({"video": inline("video", &clip)}),
    )
    .await;
    assert_eq!(o.error.unwrap().kind(), ErrorKind::Timeout);
}
