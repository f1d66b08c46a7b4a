//! Asset records end to end: SaveImage/SaveText write a blob through FileStorage and a row into
//! a SQLite file, the folder loaders stream them back; blob and row stay consistent when the
//! store fails, and a process without a store refuses clearly.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use nodetool_assets::SqliteAssetStore;
use nodetool_config::{Settings, Sources};
use nodetool_core::assets::FOLDER;
use nodetool_core::{
    AssetPage, AssetQuery, AssetRecord, AssetStore, Error, ErrorKind, Result, StoragePrefix,
};
use nodetool_engine::{Engine, EngineResources, RunOptions, RunOutcome, Status};
use nodetool_runtime::{ResourceOptions, Resources};
use serde_json::{json, Value};

/// File asset storage under `dir/assets`, records in `dir/nodetool.db`.
async fn file_resources(dir: &Path) -> (EngineResources, Arc<SqliteAssetStore>) {
    let env: BTreeMap<String, String> = [
        ("ENV", "development"),
        ("HOME", &dir.display().to_string()),
        ("ASSET_FOLDER", &dir.join("assets").display().to_string()),
        ("DB_PATH", &dir.join("nodetool.db").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = Settings::load(&Sources::new(env, dir.join("config"))).unwrap();
    let store = Arc::new(SqliteAssetStore::open(&settings.db_path).await.unwrap());
    let resources =
        Resources::new(settings, ResourceOptions::default()).with_asset_store(store.clone());
    (resources.engine_resources().await.unwrap(), store)
}

fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([seed, (x * 20) as u8, (y * 30) as u8])
    }));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// An image ref with the bytes inline, as a client may send one.
fn inline_image(bytes: &[u8]) -> Value {
    json!({"type": "image", "uri": "", "asset_id": null, "data": bytes})
}

fn folder_ref(id: &str) -> Value {
    json!({"type": "folder", "uri": "", "asset_id": id, "data": null})
}

async fn run_graph(
    engine: &Engine,
    nodes: &[(&str, &str, Value)],
    edges: &[(&str, &str, &str, &str)],
) -> RunOutcome {
    run(
        engine,
        graph(nodes, edges),
        Value::Null,
        RunOptions::default(),
    )
    .await
    .0
}

async fn blob_keys(res: &EngineResources) -> Vec<String> {
    let mut keys: Vec<String> = res
        .asset_storage
        .list(&StoragePrefix::all())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    keys.sort();
    keys
}

async fn make_folder(store: &dyn AssetStore, user: &str, name: &str) -> String {
    let folder = AssetRecord::new(nodetool_core::id::new_id(), user, user, name, FOLDER);
    store.create(&folder).await.unwrap();
    folder.id
}

#[tokio::test]
async fn save_then_load_round_trips_through_files_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (res, store) = file_resources(dir.path()).await;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let folder = make_folder(store.as_ref(), "1", "shots").await;
    let pngs = [png(3, 2, 10), png(2, 4, 99), png(1, 1, 200)];

    // Save three images and a text into the folder.
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let names: Vec<String> = (0..pngs.len()).map(|i| format!("shot-{i}.png")).collect();
    let ids: Vec<String> = (0..pngs.len()).map(|i| format!("save{i}")).collect();
    let outs: Vec<String> = (0..pngs.len()).map(|i| format!("out{i}")).collect();
    for (i, bytes) in pngs.iter().enumerate() {
        nodes.push((
            ids[i].as_str(),
            "nodetool.image.SaveImage",
            json!({"image": inline_image(bytes), "folder": folder_ref(&folder), "name": names[i]}),
        ));
        nodes.push((
            outs[i].as_str(),
            "nodetool.output.Output",
            json!({"name": "saved"}),
        ));
        edges.push((ids[i].as_str(), "output", outs[i].as_str(), "value"));
    }
    nodes.push((
        "note",
        "nodetool.text.SaveText",
        json!({"text": "a note", "folder": folder_ref(&folder), "name": "note-%Y.txt"}),
    ));
    let o = run_graph(&engine, &nodes, &edges).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let saved = o.result["saved"].as_array().unwrap().clone();
    assert_eq!(saved.len(), 3);

    // Each ref names its row; the row names its blob, which is a real file.
    for r in &saved {
        let id = r["asset_id"].as_str().unwrap();
        let row = store
            .get("1", id)
            .await
            .unwrap()
            .expect("a row per saved image");
        assert_eq!(row.parent_id, folder);
        assert_eq!(row.content_type, "image/png");
        assert!(row.name.starts_with("shot-"), "{}", row.name);
        assert_eq!(
            row.workflow_id, None,
            "a run without a workflow id records none"
        );
        assert!(row.job_id.as_deref().is_some_and(|j| !j.is_empty()));
        assert!(row
            .node_id
            .as_deref()
            .is_some_and(|n| n.starts_with("save")));
        let key = row.storage_key.clone().unwrap();
        assert_eq!(key, format!("1/{id}.png"));
        assert_eq!(r["uri"], format!("asset://{key}"));
        let on_disk = std::fs::read(dir.path().join("assets").join(&key)).unwrap();
        assert_eq!(row.size, Some(on_disk.len() as i64));
    }
    let year = &chrono_year();
    let notes = store
        .list(&AssetQuery {
            content_type: Some("text".into()),
            ..AssetQuery::children("1", &folder, 10)
        })
        .await
        .unwrap();
    assert_eq!(notes.assets.len(), 1);
    assert_eq!(notes.assets[0].name, format!("note-{year}.txt"));

    // Load them back: images only, in creation order, each decoding to what was saved.
    let o = run_graph(
        &engine,
        &[
            (
                "load",
                "nodetool.image.LoadImageAssets",
                json!({"folder": folder_ref(&folder)}),
            ),
            ("imgs", "nodetool.output.Output", json!({"name": "images"})),
            ("names", "nodetool.output.Output", json!({"name": "names"})),
        ],
        &[
            ("load", "image", "imgs", "value"),
            ("load", "name", "names", "value"),
        ],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let loaded = o.result["images"].as_array().unwrap();
    assert_eq!(loaded.len(), 3);
    let mut by_id: Vec<&Value> = saved.iter().collect();
    by_id.sort_by_key(|r| r["asset_id"].as_str().unwrap().to_owned());
    for (got, want) in loaded.iter().zip(&by_id) {
        assert_eq!(got["type"], "image");
        assert_eq!(got["asset_id"], want["asset_id"], "creation order");
        assert_eq!(got["uri"], want["uri"]);
    }
    let loaded_names: Vec<&str> = o.result["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let mut sorted_names = loaded_names.clone();
    sorted_names.sort_unstable();
    assert_eq!(sorted_names, names);
    for (img_ref, name) in loaded.iter().zip(&loaded_names) {
        let i: usize = name["shot-".len()..name.len() - 4].parse().unwrap();
        let key = img_ref["uri"]
            .as_str()
            .unwrap()
            .strip_prefix("asset://")
            .unwrap();
        let bytes = std::fs::read(dir.path().join("assets").join(key)).unwrap();
        assert_eq!(
            image::load_from_memory(&bytes).unwrap().to_rgb8(),
            image::load_from_memory(&pngs[i]).unwrap().to_rgb8(),
            "{name}"
        );
    }

    // The text loader finds the note; its ref reads back through the context (SaveText again).
    let o = run_graph(
        &engine,
        &[
            (
                "load",
                "nodetool.text.LoadTextAssets",
                json!({"folder": folder_ref(&folder)}),
            ),
            (
                "copy",
                "nodetool.text.SaveText",
                json!({"name": "copy.txt"}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "copy"})),
        ],
        &[
            ("load", "text", "copy", "text"),
            ("copy", "output", "out", "value"),
        ],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let copy = &o.result["copy"][0];
    let key = copy["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("asset://")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("assets").join(key)).unwrap(),
        "a note"
    );
    let home = store
        .list(&AssetQuery::children("1", "1", 10))
        .await
        .unwrap();
    assert!(
        home.assets.iter().any(|r| r.name == "copy.txt"),
        "no folder: saved at home"
    );

    // A second store on the same file (another process: the server) sees every row.
    let other = SqliteAssetStore::open(&dir.path().join("nodetool.db"))
        .await
        .unwrap();
    let all = other
        .list(&AssetQuery::children("1", &folder, 100))
        .await
        .unwrap();
    assert_eq!(all.assets.len(), 4);
}

/// SaveJSON writes `json.dumps(data, indent)` as an `application/json` asset with its row, in
/// the given folder (by ref or bare id), and emits the JSON text.
#[tokio::test]
async fn save_json_writes_an_asset_and_emits_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let (res, store) = file_resources(dir.path()).await;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let folder = make_folder(store.as_ref(), "1", "exports").await;
    let o = run_graph(
        &engine,
        &[
            (
                "data",
                "nodetool.constant.Dict",
                json!({"value": {"name": "Zoë", "items": [1, 2.5]}}),
            ),
            (
                "save",
                "nodetool.dictionary.SaveJSON",
                json!({"folder": folder, "name": "report-%Y.json", "indent": 1}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "json"})),
        ],
        &[
            ("data", "output", "save", "data"),
            ("save", "output", "out", "value"),
        ],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let text = "{\n \"name\": \"Zo\\u00eb\",\n \"items\": [\n  1,\n  2.5\n ]\n}";
    assert_eq!(o.result["json"], json!([text]));
    let rows = store
        .list(&AssetQuery::children("1", &folder, 10))
        .await
        .unwrap();
    assert_eq!(rows.assets.len(), 1);
    let row = &rows.assets[0];
    assert_eq!(row.name, format!("report-{}.json", chrono_year()));
    assert_eq!(row.content_type, "application/json");
    let key = row.storage_key.clone().unwrap();
    assert!(key.ends_with(".json"), "{key}");
    let on_disk = std::fs::read_to_string(dir.path().join("assets").join(&key)).unwrap();
    assert_eq!(on_disk, text);
    assert_eq!(row.size, Some(on_disk.len() as i64));
}

/// SaveDataframe writes the frame as a CSV asset (pandas' `to_csv(index=False)` layout: header,
/// rows, empty cells for missing values) and emits the DataframeRef naming it.
#[tokio::test]
async fn save_dataframe_writes_a_csv_asset() {
    let dir = tempfile::tempdir().unwrap();
    let (res, store) = file_resources(dir.path()).await;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let o = run_graph(
        &engine,
        &[
            (
                "csv",
                "nodetool.data.ImportCSV",
                json!({"csv_data": "name,score\nAda,1.5\n\"B, b\",\n"}),
            ),
            (
                "save",
                "nodetool.data.SaveDataframe",
                json!({"name": "scores.csv"}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "df"})),
        ],
        &[
            ("csv", "output", "save", "df"),
            ("save", "output", "out", "value"),
        ],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let df = &o.result["df"][0];
    assert_eq!(df["data"], json!([["Ada", 1.5], ["B, b", null]]));
    let id = df["asset_id"].as_str().unwrap();
    let row = store.get("1", id).await.unwrap().unwrap();
    assert_eq!(
        (row.name.as_str(), row.content_type.as_str()),
        ("scores.csv", "text/csv")
    );
    let key = row.storage_key.unwrap();
    assert_eq!(df["uri"], format!("asset://{key}"));
    let text = std::fs::read_to_string(dir.path().join("assets").join(&key)).unwrap();
    assert_eq!(text, "name,score\nAda,1.5\n\"B, b\",\n");
}

fn chrono_year() -> String {
    // Days since the epoch → year, independently of the node's own calendar code.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut days = secs / 86_400;
    let mut year = 1970;
    loop {
        let len = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        if days < len {
            return year.to_string();
        }
        days -= len;
        year += 1;
    }
}

#[tokio::test]
async fn a_ref_with_only_an_asset_id_is_read_through_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (res, _store) = file_resources(dir.path()).await;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let o = run_graph(
        &engine,
        &[
            (
                "save",
                "nodetool.image.SaveImage",
                json!({"image": inline_image(&png(2, 2, 50))}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("save", "output", "out", "value")],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let id = o.result["out"][0]["asset_id"].as_str().unwrap().to_owned();
    // NodeTool clients send `{type, asset_id}` with an http uri we do not serve from.
    let by_id = json!({"type": "image", "uri": "", "asset_id": id, "data": null});
    let o = run_graph(
        &engine,
        &[
            (
                "meta",
                "nodetool.image.GetMetadata",
                json!({"image": by_id}),
            ),
            ("w", "nodetool.output.Output", json!({"name": "w"})),
        ],
        &[("meta", "width", "w", "value")],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["w"], json!([2]));
    // Another user's id is not found.
    let req_graph = graph(
        &[
            (
                "meta",
                "nodetool.image.GetMetadata",
                json!({"image": by_id}),
            ),
            ("w", "nodetool.output.Output", json!({"name": "w"})),
        ],
        &[("meta", "width", "w", "value")],
    );
    let sink = nodetool_engine::VecSink::new();
    let mut request = nodetool_engine::RunRequest::new(req_graph);
    request.user_id = "someone-else".into();
    let o = engine
        .run(
            request,
            RunOptions::default(),
            sink,
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.error.unwrap().kind(), ErrorKind::NotFound);
}

/// Records go to `inner`, except that `create` always fails — after noting whether the
/// record's blob was already in `storage`, as it must be.
#[derive(Debug)]
struct FailingCreate {
    inner: SqliteAssetStore,
    storage: Arc<dyn nodetool_core::Storage>,
    blobs_seen: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl AssetStore for FailingCreate {
    async fn create(&self, record: &AssetRecord) -> Result<()> {
        let key = nodetool_core::StorageKey::new(record.storage_key.clone().unwrap_or_default())?;
        if self.storage.exists(&key).await? {
            self.blobs_seen.lock().unwrap().push(key.to_string());
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "database is down (test)",
        ))
    }
    async fn get(&self, user_id: &str, id: &str) -> Result<Option<AssetRecord>> {
        self.inner.get(user_id, id).await
    }
    async fn list(&self, query: &AssetQuery) -> Result<AssetPage> {
        self.inner.list(query).await
    }
    async fn update(&self, record: &AssetRecord) -> Result<()> {
        self.inner.update(record).await
    }
    async fn delete(&self, user_id: &str, id: &str) -> Result<bool> {
        self.inner.delete(user_id, id).await
    }
}

#[tokio::test]
async fn a_failed_row_insert_deletes_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (res, _) = file_resources(dir.path()).await;
    let failing = Arc::new(FailingCreate {
        inner: SqliteAssetStore::in_memory().await.unwrap(),
        storage: res.asset_storage.clone(),
        blobs_seen: Default::default(),
    });
    let res = res.with_asset_store(failing.clone());
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    for (node_type, data) in [
        (
            "nodetool.image.SaveImage",
            json!({"image": inline_image(&png(2, 2, 1))}),
        ),
        ("nodetool.text.SaveText", json!({"text": "lost"})),
    ] {
        let o = run_graph(
            &engine,
            &[
                ("save", node_type, data),
                ("out", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[("save", "output", "out", "value")],
        )
        .await;
        assert_eq!(o.status, Status::Failed, "{node_type}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("database is down"), "{err}");
        assert_eq!(
            blob_keys(&res).await,
            Vec::<String>::new(),
            "{node_type}: the blob was written, then removed"
        );
    }
    // The blobs really were written before the rows were tried.
    assert_eq!(failing.blobs_seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_bad_folder_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (res, store) = file_resources(dir.path()).await;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    let mut file = AssetRecord::new(nodetool_core::id::new_id(), "1", "1", "f.txt", "text/plain");
    file.storage_key = Some("1/elsewhere.txt".into());
    store.create(&file).await.unwrap();
    let other_users = make_folder(store.as_ref(), "2", "theirs").await;
    for (folder, kind) in [
        ("missing".to_owned(), ErrorKind::NotFound),
        (other_users, ErrorKind::NotFound),
        (file.id.clone(), ErrorKind::InvalidInput),
    ] {
        for (node_type, data) in [
            (
                "nodetool.text.SaveText",
                json!({"text": "x", "folder": folder_ref(&folder)}),
            ),
            (
                "nodetool.dictionary.SaveJSON",
                json!({"data": {"a": 1}, "folder": folder_ref(&folder)}),
            ),
        ] {
            let o = run_graph(&engine, &[("save", node_type, data)], &[]).await;
            assert_eq!(o.status, Status::Failed, "{node_type} {folder}");
            assert_eq!(o.error.unwrap().kind(), kind, "{node_type} {folder}");
        }
    }
    assert!(blob_keys(&res).await.is_empty());
    let home = store
        .list(&AssetQuery::children("1", "1", 10))
        .await
        .unwrap();
    assert_eq!(home.assets.len(), 1, "only the file made here");
}

#[tokio::test]
async fn without_a_store_saving_and_loading_fail_clearly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut res, store) = file_resources(dir.path()).await;
    let folder = make_folder(store.as_ref(), "1", "f").await;
    // A process with storage but no asset database (as a worker whose parent has none).
    res.asset_store = None;
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res.clone());
    for (node_type, data) in [
        ("nodetool.text.SaveText", json!({"text": "x"})),
        ("nodetool.dictionary.SaveJSON", json!({"data": [1]})),
        (
            "nodetool.image.SaveImage",
            json!({"image": inline_image(&png(1, 1, 1))}),
        ),
        (
            "nodetool.image.LoadImageAssets",
            json!({"folder": folder_ref(&folder)}),
        ),
    ] {
        let o = run_graph(&engine, &[("n", node_type, data)], &[]).await;
        assert_eq!(o.status, Status::Failed, "{node_type}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{node_type}: {err}");
        assert!(
            err.message().contains("this process has none"),
            "{node_type}: {err}"
        );
    }
    assert!(blob_keys(&res).await.is_empty());
}

#[tokio::test]
async fn loaders_page_through_large_folders_and_need_a_folder() {
    let store = Arc::new(SqliteAssetStore::in_memory().await.unwrap());
    let res = test_resources().await.with_asset_store(store.clone());
    let engine = Engine::new(Arc::new(nodetool_nodes::registry()), res);
    let folder = make_folder(store.as_ref(), "1", "many").await;
    // 250 audio records (three store pages) and some noise that must not appear.
    let mut want = Vec::new();
    for i in 0..250 {
        let id = nodetool_core::id::new_id();
        let mut r = AssetRecord::new(
            id.clone(),
            "1",
            folder.clone(),
            format!("a{i}"),
            "audio/mpeg",
        );
        r.storage_key = Some(format!("1/{id}.mp3"));
        store.create(&r).await.unwrap();
        want.push(id);
    }
    let mut img = AssetRecord::new(
        nodetool_core::id::new_id(),
        "1",
        folder.clone(),
        "i",
        "image/png",
    );
    img.storage_key = Some("1/i.png".into());
    store.create(&img).await.unwrap();
    make_folder(store.as_ref(), "1", "sibling").await;

    let o = run_graph(
        &engine,
        &[
            (
                "load",
                "nodetool.audio.LoadAudioAssets",
                json!({"folder": folder_ref(&folder)}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "audio"})),
        ],
        &[("load", "audio", "out", "value")],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let got: Vec<&str> = o.result["audio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["type"], "audio");
            r["asset_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(got, want);

    for data in [json!({}), json!({"folder": folder_ref("")})] {
        let o = run_graph(
            &engine,
            &[("load", "nodetool.image.LoadImageAssets", data)],
            &[],
        )
        .await;
        assert_eq!(o.status, Status::Failed);
        let err = o.error.unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.message(), "Please select an asset folder.");
    }
}
