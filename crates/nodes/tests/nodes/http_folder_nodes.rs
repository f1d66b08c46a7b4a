//! `lib.http.*`, `lib.rss.FetchRSSFeed`, `nodetool.input.FolderPathInput` and
//! `nodetool.image.LoadImageFolder` against a real loopback server and real folders, through the
//! same guard and roots as media refs. GetRequest and FetchRSSFeed against the original are in
//! `tests/conformance/http_nodes`.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use nodetool_core::ErrorKind;
use nodetool_engine::{Engine, EngineResources, RunOptions, RunOutcome, Status};
use serde_json::{json, Value};

async fn run_one(
    res: &EngineResources,
    node_type: &str,
    data: Value,
    outputs: &[&str],
) -> RunOutcome {
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let mut nodes = vec![("n", node_type, data)];
    let mut edges = Vec::new();
    let names: Vec<(String, String)> = outputs
        .iter()
        .map(|o| (format!("o_{o}"), (*o).to_owned()))
        .collect();
    for (id, slot) in &names {
        nodes.push((id.as_str(), "nodetool.output.Output", json!({"name": slot})));
        edges.push(("n", slot.as_str(), id.as_str(), "value"));
    }
    let g = graph(&nodes, &edges);
    run(&engine, g, Value::Null, RunOptions::default()).await.0
}

#[tokio::test]
async fn downloads_and_documents_through_the_guard() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("a.txt"), b"alpha").unwrap();
    std::fs::write(files.path().join("b.pdf"), b"%PDF-1.4 tiny").unwrap();
    let (url, hits) = serve_dir(files.path().to_path_buf()).await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let root = tempfile::tempdir().unwrap();
    let root_path = std::fs::canonicalize(root.path()).unwrap();
    let res = resources_with_media(
        vec![root_path.clone()],
        vec![("127.0.0.1".to_owned(), port)],
    )
    .await;

    let o = run_one(
        &res,
        "lib.http.DownloadFiles",
        json!({"urls": [format!("{url}/a.txt"), format!("{url}/missing.txt"), format!("{url}/b.pdf")],
               "output_folder": "downloads"}),
        &["success", "failed"],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let saved: Vec<String> = serde_json::from_value(o.result["success"][0].clone()).unwrap();
    assert_eq!(
        saved,
        vec![
            root_path.join("downloads/a.txt").display().to_string(),
            root_path.join("downloads/b.pdf").display().to_string()
        ]
    );
    assert_eq!(
        std::fs::read(root_path.join("downloads/a.txt")).unwrap(),
        b"alpha"
    );
    assert_eq!(o.result["failed"][0], json!([format!("{url}/missing.txt")]));

    // Outside the roots: refused before anything is fetched.
    let before = hits.load(Ordering::SeqCst);
    for folder in ["/tmp/elsewhere", "../escape"] {
        let o = run_one(
            &res,
            "lib.http.DownloadFiles",
            json!({"urls": [format!("{url}/a.txt")], "output_folder": folder}),
            &["success"],
        )
        .await;
        assert_eq!(o.status, Status::Failed, "{folder}");
        assert_eq!(o.error.unwrap().kind(), ErrorKind::PermissionDenied);
    }
    assert_eq!(hits.load(Ordering::SeqCst), before);

    // A document comes back as a temp ref with its bytes.
    let o = run_one(
        &res,
        "lib.http.GetRequestDocument",
        json!({"url": format!("{url}/b.pdf")}),
        &["output"],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let doc = &o.result["output"][0];
    assert_eq!(doc["type"], "document");
    let key = doc["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("temp://")
        .unwrap();
    let got = res
        .temp_storage
        .download(&nodetool_core::StorageKey::new(key).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        &nodetool_core::storage::collect(got.body).await.unwrap()[..],
        b"%PDF-1.4 tiny"
    );

    // 404 is an error naming the status; the default guard refuses loopback.
    let o = run_one(
        &res,
        "lib.http.GetRequest",
        json!({"url": format!("{url}/nope")}),
        &["output"],
    )
    .await;
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    let plain = test_resources().await;
    let o = run_one(
        &plain,
        "lib.rss.FetchRSSFeed",
        json!({"url": format!("{url}/a.txt")}),
        &["title"],
    )
    .await;
    assert_eq!(o.error.unwrap().kind(), ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn transient_statuses_are_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/flaky",
        axum::routing::get(move || {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "busy",
                    )
                } else {
                    (axum::http::StatusCode::OK, [("retry-after", "0")], "ok now")
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let res = resources_with_media(vec![], vec![("127.0.0.1".to_owned(), addr.port())]).await;
    let o = run_one(
        &res,
        "lib.http.GetRequest",
        json!({"url": format!("http://{addr}/flaky")}),
        &["output"],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["output"], json!(["ok now"]));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn folders_only_inside_the_roots() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap().join("photos");
    std::fs::create_dir_all(root.join("more")).unwrap();
    let png = |w: u32| {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::new(w, 1));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    std::fs::write(root.join("b.png"), png(2)).unwrap();
    std::fs::write(root.join("a.PNG"), png(1)).unwrap();
    std::fs::write(root.join("notes.txt"), b"not an image").unwrap();
    std::fs::write(root.join("more/c.jpg"), b"").unwrap();
    std::fs::write(dir.path().join("secret.png"), png(9)).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.png"), root.join("s.png")).unwrap();
    let res = resources_with_media(vec![root.clone()], vec![]).await;

    // The folder input and the loader, chained as the examples chain them.
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let g = graph(
        &[
            (
                "in",
                "nodetool.input.FolderPathInput",
                json!({"name": "folder"}),
            ),
            ("load", "nodetool.image.LoadImageFolder", json!({})),
            ("meta", "nodetool.image.GetMetadata", json!({})),
            ("paths", "nodetool.output.Output", json!({"name": "paths"})),
            (
                "widths",
                "nodetool.output.Output",
                json!({"name": "widths"}),
            ),
        ],
        &[
            ("in", "output", "load", "folder"),
            ("load", "path", "paths", "value"),
            ("load", "image", "meta", "image"),
            ("meta", "width", "widths", "value"),
        ],
    );
    let params = json!({"folder": root.display().to_string()});
    let (o, _) = run(&engine, g.clone(), params, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(
        o.result["paths"],
        json!([
            root.join("a.PNG").display().to_string(),
            root.join("b.png").display().to_string()
        ]),
        "images only, in name order, no symlink out of the root"
    );
    assert_eq!(o.result["widths"], json!([1, 2]));

    // Recursive, with a pattern.
    let o = run_one(
        &res,
        "nodetool.image.LoadImageFolder",
        json!({"folder": root.display().to_string(), "include_subdirectories": true, "pattern": "*/more/*"}),
        &["path"],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(
        o.result["path"],
        json!([root.join("more/c.jpg").display().to_string()])
    );

    // Outside the roots: refused by the input node already.
    for folder in ["/etc", "/"] {
        let (o, _) = run(
            &engine,
            g.clone(),
            json!({"folder": folder}),
            RunOptions::default(),
        )
        .await;
        assert_eq!(o.status, Status::Failed, "{folder}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("NODETOOL_FILE_ROOTS"), "{err}");
    }
}
