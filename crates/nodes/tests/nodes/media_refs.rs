//! Media refs in every URI form NodeTool accepts, through real nodes (`GetMetadata` reads the
//! header, `SaveImage` decodes every pixel), and the policy on each: size caps, the pixel cap,
//! file roots with symlinks resolved, the HTTP guard on every redirect hop, and per-user
//! ownership. The forms the original runs are also recorded in `tests/conformance/uri_*` and
//! `image_decoding`.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use nodetool_core::{ErrorKind, PutOptions, Result, StorageKey};
use nodetool_engine::{
    Emitter, Engine, EngineResources, NodeImpl, NodeInputs, NodeSpec, ProcessingContext,
    RunOptions, RunOutcome, RunRequest, Status, VecSink,
};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 40) as u8, (y * 60) as u8, 7])
    }));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Keeps its `data` input (base64) as a `memory://` object of the job and emits its ref.
#[derive(Debug)]
struct PutMemory {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for PutMemory {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inputs.str("data")?)
            .unwrap();
        let uri = ctx.put_memory(bytes.into(), "image/png");
        out.emit("output", json!({"type": "image", "uri": uri}))
            .await
    }
}

fn registry() -> nodetool_engine::Registry {
    let mut r = nodetool_nodes::registry();
    r.register(Arc::new(PutMemory {
        spec: NodeSpec::new("test.PutMemory", "Put Memory")
            .input("data", "str", json!(""))
            .output("output", "image"),
    }));
    r
}

/// Runs GetMetadata and SaveImage on `image` as `user` and returns the outcome.
async fn read_as(res: &EngineResources, user: &str, image: Value) -> RunOutcome {
    let engine = Engine::new(Arc::new(registry()), res.clone());
    let g = graph(
        &[
            ("i", "nodetool.input.ImageInput", json!({"name": "img"})),
            ("m", "nodetool.image.GetMetadata", json!({})),
            ("s", "nodetool.image.SaveImage", json!({"name": "x.png"})),
            ("w", "nodetool.output.Output", json!({"name": "width"})),
            ("o", "nodetool.output.Output", json!({"name": "saved"})),
        ],
        &[
            ("i", "output", "m", "image"),
            ("i", "output", "s", "image"),
            ("m", "width", "w", "value"),
            ("s", "output", "o", "value"),
        ],
    );
    let mut params = Map::new();
    params.insert("img".to_owned(), image);
    let mut req = RunRequest::new(g).with_params(params);
    req.user_id = user.to_owned();
    engine
        .run(
            req,
            RunOptions {
                use_cache: false,
                ..RunOptions::default()
            },
            VecSink::new(),
            CancellationToken::new(),
        )
        .await
}

async fn width_of(res: &EngineResources, image: Value) -> Value {
    let o = read_as(res, "1", image.clone()).await;
    assert_eq!(o.status, Status::Completed, "{image}: {:?}", o.error);
    o.result["width"][0].clone()
}

async fn refused(res: &EngineResources, image: Value) -> nodetool_core::Error {
    let o = read_as(res, "1", image.clone()).await;
    assert_eq!(o.status, Status::Failed, "{image} must be refused");
    o.error.unwrap()
}

fn tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/pic one.png"), png(3, 2)).unwrap();
    std::fs::write(dir.path().join("outside.png"), png(9, 9)).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.png"), root.join("escape.png")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    (dir, root)
}

#[tokio::test]
async fn every_uri_form_resolves() {
    let (_dir, root) = tree();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("web.png"), png(4, 1)).unwrap();
    let (url, _) = serve_dir(files.path().to_path_buf()).await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let res = resources_with_media(vec![root.clone()], vec![("127.0.0.1".to_owned(), port)]).await;
    let bytes = png(5, 1);

    // data: base64 and percent-encoded.
    let b64_uri = format!("data:image/png;base64,{}", b64(&bytes));
    assert_eq!(
        width_of(&res, json!({"type": "image", "uri": b64_uri})).await,
        5
    );
    let pct: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
    let pct_uri = format!("data:image/png,{pct}");
    assert_eq!(
        width_of(&res, json!({"type": "image", "uri": pct_uri})).await,
        5
    );
    // Inline bytes.
    assert_eq!(
        width_of(&res, json!({"type": "image", "data": bytes})).await,
        5
    );
    // http.
    let web = json!({"type": "image", "uri": format!("{url}/web.png")});
    assert_eq!(width_of(&res, web).await, 4);
    // file:// (percent-encoded), a plain absolute path, a path relative to a root.
    let abs = root.join("sub/pic one.png").display().to_string();
    let file_uri = format!("file://{}", abs.replace(' ', "%20"));
    assert_eq!(
        width_of(&res, json!({"type": "image", "uri": file_uri})).await,
        3
    );
    assert_eq!(
        width_of(&res, json!({"type": "image", "uri": abs})).await,
        3
    );
    let rel = json!({"type": "image", "uri": "sub/pic one.png"});
    assert_eq!(width_of(&res, rel).await, 3);
    // asset://, NodeTool's /api/storage/KEY, temp://.
    for (storage, key) in [
        (&res.asset_storage, "1/pic.png"),
        (&res.temp_storage, "jobs/x/pic.png"),
    ] {
        storage
            .upload_bytes(
                &StorageKey::new(key).unwrap(),
                png(6, 1).into(),
                PutOptions::content_type("image/png"),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        width_of(&res, json!({"type": "image", "uri": "asset://1/pic.png"})).await,
        6
    );
    let api = json!({"type": "image", "uri": "/api/storage/1/pic.png"});
    assert_eq!(width_of(&res, api).await, 6);
    let temp = json!({"type": "image", "uri": "temp://jobs/x/pic.png"});
    assert_eq!(width_of(&res, temp).await, 6);

    // memory://: an object this job made.
    let engine = Engine::new(Arc::new(registry()), res.clone());
    let g = graph(
        &[
            ("p", "test.PutMemory", json!({"data": b64(&png(8, 1))})),
            ("m", "nodetool.image.GetMetadata", json!({})),
            ("w", "nodetool.output.Output", json!({"name": "width"})),
        ],
        &[("p", "output", "m", "image"), ("m", "width", "w", "value")],
    );
    let (o, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["width"], json!([8]));
    // ... and not one from elsewhere.
    let err = refused(&res, json!({"type": "image", "uri": "memory://nope"})).await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // An unknown scheme names the accepted forms.
    let err = refused(&res, json!({"type": "image", "uri": "s3://bucket/key.png"})).await;
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("data:, http(s)://"), "{err}");
}

#[tokio::test]
async fn bad_refs_are_refused_and_nothing_is_read() {
    let (dir, root) = tree();
    let res = resources_with_media(vec![root.clone()], vec![]).await;

    // An oversized data: URI: refused from its length, before decoding.
    let limit = res.media.policy.data_max_bytes as usize;
    let huge = format!("data:image/png;base64,{}", "A".repeat(limit / 3 * 4 + 400));
    let err = refused(&res, json!({"type": "image", "uri": huge})).await;
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(
        err.to_string().contains("NODETOOL_DATA_URI_MAX_BYTES"),
        "{err}"
    );

    // A PNG bomb (109 KB, 900 million pixels): refused from its header, as a data: URI and as
    // a file.
    let bomb =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bomb.png")).unwrap();
    let uri = format!("data:image/png;base64,{}", b64(&bomb));
    let err = refused(&res, json!({"type": "image", "uri": uri})).await;
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(
        err.to_string().contains("NODETOOL_IMAGE_MAX_PIXELS"),
        "{err}"
    );
    std::fs::write(root.join("bomb.png"), &bomb).unwrap();
    let err = refused(&res, json!({"type": "image", "uri": "bomb.png"})).await;
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");

    // Files outside the roots: /etc/passwd, a symlink out of the root (file and folder), a
    // `..` path. Refused as permission errors that say how to allow it.
    for uri in [
        "file:///etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        format!("file://{}", root.join("escape.png").display()),
        format!("{}/up/outside.png", root.display()),
        format!("{}/../outside.png", root.display()),
        "../outside.png".to_owned(),
    ] {
        let err = refused(&res, json!({"type": "image", "uri": uri})).await;
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{uri}: {err}");
        assert!(err.to_string().contains("NODETOOL_FILE_ROOTS"), "{err}");
    }
    // By default (no roots configured) no file is readable at all.
    let plain = test_resources().await;
    let inside = root.join("sub/pic one.png").display().to_string();
    let err = refused(&plain, json!({"type": "image", "uri": inside})).await;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    drop(dir);
}

#[tokio::test]
async fn a_redirect_to_loopback_is_refused_before_it_is_followed() {
    // The target: a loopback server with a file the guard must never fetch.
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret.png"), png(2, 2)).unwrap();
    let (target, target_hits) = serve_dir(secret.path().to_path_buf()).await;
    // The front server redirects to it. Only the front server's host:port is exempt from the
    // guard (as an operator would list one trusted service); NODETOOL_HTTP_ALLOW_PRIVATE is off.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    let location = format!("{target}/secret.png");
    let app = axum::Router::new().route(
        "/image.png",
        axum::routing::get(move || {
            let location = location.clone();
            async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, location)],
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let res = resources_with_media(vec![], vec![("127.0.0.1".to_owned(), front.port())]).await;
    assert_eq!(
        res.media.policy.key_scope,
        nodetool_core::KeyScope::WholeStore
    );
    let err = refused(
        &res,
        json!({"type": "image", "uri": format!("http://{front}/image.png")}),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("redirect") && text.contains("loopback"),
        "{text}"
    );
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "nothing was fetched");

    // The default guard refuses loopback outright.
    let plain = test_resources().await;
    let err = refused(
        &plain,
        json!({"type": "image", "uri": format!("{target}/secret.png")}),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn another_users_asset_is_not_found() {
    let mut res = test_resources().await;
    // Alice saves an image; its ref carries asset_id and asset:// uri.
    let bytes = png(3, 3);
    let uri = format!("data:image/png;base64,{}", b64(&bytes));
    let saved = read_as(&res, "alice", json!({"type": "image", "uri": uri})).await;
    assert_eq!(saved.status, Status::Completed, "{:?}", saved.error);
    let asset = saved.result["saved"][0].clone();
    assert!(asset["asset_id"].is_string(), "{asset}");
    assert_eq!(
        read_as(&res, "alice", asset.clone()).await.status,
        Status::Completed
    );

    // Bob, by asset id: the record is Alice's, so it is not found.
    let by_id = json!({"type": "image", "asset_id": asset["asset_id"]});
    let o = read_as(&res, "bob", by_id).await;
    assert_eq!(o.error.unwrap().kind(), ErrorKind::NotFound);
    // Under multi-user auth, Bob's asset:// to Alice's key is not found either.
    res.media.policy.key_scope = nodetool_core::KeyScope::UserPrefix;
    let by_key = json!({"type": "image", "uri": asset["uri"]});
    let o = read_as(&res, "bob", by_key.clone()).await;
    assert_eq!(o.error.unwrap().kind(), ErrorKind::NotFound);
    assert_eq!(
        read_as(&res, "alice", by_key).await.status,
        Status::Completed
    );

    // A local asset folder is a file root, but only the user's own part of it.
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(folder.path().join("alice")).unwrap();
    std::fs::write(folder.path().join("alice/a.png"), &bytes).unwrap();
    res.media.policy.asset_folder = Some(folder.path().to_path_buf());
    let path =
        json!({"type": "image", "uri": folder.path().join("alice/a.png").display().to_string()});
    assert_eq!(
        read_as(&res, "alice", path.clone()).await.status,
        Status::Completed
    );
    let o = read_as(&res, "bob", path).await;
    assert_eq!(o.error.unwrap().kind(), ErrorKind::PermissionDenied);
}
