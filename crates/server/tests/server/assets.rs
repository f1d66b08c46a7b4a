//! The assets API: upload, list with cursors, get, rename/move, delete, download; row and blob
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
//! consistent.

use crate::common;

use common::{error_kind, start, TestServer};
use nodetool_core::StoragePrefix;
use serde_json::{json, Value};

async fn upload(s: &TestServer, meta: Value, bytes: Vec<u8>, mime: &str) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("json", meta.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("f")
                .mime_str(mime)
                .unwrap(),
        );
    s.client
        .post(s.u("/api/assets"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn folder(s: &TestServer, name: &str, parent: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "content_type": "folder"});
    if let Some(p) = parent {
        meta["parent_id"] = json!(p);
    }
    let form = reqwest::multipart::Form::new().text("json", meta.to_string());
    let r = s
        .client
        .post(s.u("/api/assets"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn blob_keys(s: &TestServer) -> Vec<String> {
    let storage = s.state.resources.asset_storage().unwrap();
    storage
        .list(&StoragePrefix::all())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect()
}

async fn get_json(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.client.get(s.u(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn upload_get_download_and_fields() {
    let s = start(&[]).await;
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let r = upload(
        &s,
        json!({"name": " photo ", "metadata": {"w": 1}, "workflow_id": "wf1", "node_id": "n1"}),
        png.clone(),
        "image/png",
    )
    .await;
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(a["type"], "asset");
    assert_eq!(a["user_id"], "1");
    assert_eq!(a["parent_id"], "1", "home folder has the user's id");
    assert_eq!(a["name"], "photo");
    assert_eq!(a["content_type"], "image/png");
    assert_eq!(a["size"], png.len());
    assert_eq!(a["metadata"], json!({"w": 1}));
    assert_eq!(a["workflow_id"], "wf1");
    assert_eq!(a["node_id"], "n1");
    assert!(a["etag"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(a["created_at"].as_str().is_some());
    assert_eq!(blob_keys(&s).await, vec![format!("1/{id}.png")]);

    // The blob through its URL (signed) and through the download route.
    let r = s
        .client
        .get(s.u(a["get_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);
    let r = s
        .client
        .get(s.u(&format!("/api/assets/{id}/download")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename*=UTF-8''photo.png"
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);
    let r = s
        .client
        .get(s.u(&format!("/api/assets/{id}/download")))
        .header("range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "PNG");

    let (status, got) = get_json(&s, &format!("/api/assets/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], id.as_str());
    let (status, home) = get_json(&s, "/api/assets/1").await;
    assert_eq!(status, 200);
    assert_eq!(home["content_type"], "folder");
    let (status, _) = get_json(&s, "/api/assets/0000nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn list_paginates_by_cursor() {
    let s = start(&[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = upload(
            &s,
            json!({"name": format!("t{i}")}),
            vec![b'x'; i + 1],
            "text/plain",
        )
        .await;
        let a: Value = r.json().await.unwrap();
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    let other = folder(&s, "elsewhere", None).await;
    let _inside = upload(
        &s,
        json!({"name": "in", "parent_id": other["id"]}),
        b"y".to_vec(),
        "text/plain",
    )
    .await;

    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = get_json(
            &s,
            &format!("/api/assets?parent_id=1&page_size=2&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, 200);
        pages += 1;
        for a in page["assets"].as_array().unwrap() {
            seen.push(a["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        assert!(pages < 10, "pagination terminates");
    }
    let mut expected = ids.clone();
    expected.push(other["id"].as_str().unwrap().to_owned());
    expected.sort();
    assert_eq!(
        seen, expected,
        "every asset of the folder once, in id order"
    );
    assert_eq!(pages, 3);
    // No filter = the home folder; content_type filters by prefix.
    let (_, page) = get_json(&s, "/api/assets").await;
    assert_eq!(page["assets"].as_array().unwrap().len(), 6);
    let (_, page) = get_json(&s, "/api/assets?content_type=text").await;
    assert_eq!(
        page["assets"].as_array().unwrap().len(),
        6,
        "5 at home + 1 in the folder"
    );
    let (_, page) = get_json(
        &s,
        &format!("/api/assets?parent_id={}", other["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(page["assets"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rename_move_and_recursive_delete() {
    let s = start(&[]).await;
    let docs = folder(&s, "docs", None).await;
    let docs_id = docs["id"].as_str().unwrap().to_owned();
    let sub = folder(&s, "sub", Some(&docs_id)).await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let a: Value = upload(&s, json!({"name": "a.txt"}), b"aaa".to_vec(), "text/plain")
        .await
        .json()
        .await
        .unwrap();
    let a_id = a["id"].as_str().unwrap().to_owned();

    // Rename and move into docs/sub; the blob stays where it is.
    let r = s
        .client
        .put(s.u(&format!("/api/assets/{a_id}")))
        .json(&json!({"name": "renamed.txt", "parent_id": sub_id, "user_id": "2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let moved: Value = r.json().await.unwrap();
    assert_eq!(moved["name"], "renamed.txt");
    assert_eq!(moved["parent_id"], sub_id.as_str());
    assert_eq!(moved["user_id"], "1");
    let r = s
        .client
        .get(s.u(moved["get_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "aaa");
    // Retyping keeps the blob reachable (the key is stored, not derived).
    let r = s
        .client
        .put(s.u(&format!("/api/assets/{a_id}")))
        .json(&json!({"content_type": "text/markdown"}))
        .send()
        .await
        .unwrap();
    let retyped: Value = r.json().await.unwrap();
    let r = s
        .client
        .get(s.u(retyped["get_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "aaa");

    // A folder cannot move into itself or below itself; a missing parent is 404.
    for parent in [&docs_id, &sub_id] {
        let r = s
            .client
            .put(s.u(&format!("/api/assets/{docs_id}")))
            .json(&json!({"parent_id": parent}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "docs into {parent}");
    }
    let r = s
        .client
        .put(s.u(&format!("/api/assets/{a_id}")))
        .json(&json!({"parent_id": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Deleting docs removes sub, the file, and its blob.
    let r = s
        .client
        .delete(s.u(&format!("/api/assets/{docs_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted: Value = r.json().await.unwrap();
    let mut ids: Vec<&str> = deleted["deleted_asset_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.last(), Some(&docs_id.as_str()), "the folder goes last");
    ids.sort();
    let mut expected = vec![docs_id.as_str(), sub_id.as_str(), a_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        blob_keys(&s).await.is_empty(),
        "blobs removed with their rows"
    );
    for id in [&docs_id, &sub_id, &a_id] {
        let (status, _) = get_json(&s, &format!("/api/assets/{id}")).await;
        assert_eq!(status, 404);
    }
    let r = s
        .client
        .delete(s.u(&format!("/api/assets/{a_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "deleting a missing asset is 404, not 500");
}

#[tokio::test]
async fn failed_uploads_leave_neither_row_nor_blob() {
    let s = start(&[("NODETOOL_MAX_UPLOAD_BYTES", "1024")]).await;
    // Over the limit while streaming.
    let r = upload(
        &s,
        json!({"name": "big"}),
        vec![0u8; 4096],
        "application/octet-stream",
    )
    .await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_kind(r).await, "too_large");
    // The blob is written, then the row fails (unknown parent): the blob is removed.
    let r = upload(
        &s,
        json!({"name": "x", "parent_id": "missing"}),
        vec![1u8; 10],
        "text/plain",
    )
    .await;
    assert_eq!(r.status(), 404);
    // The file before the json field, and no json at all, are uploads too (issue 18: the app
    // sends fields in any order); the asset is named after the file. tests/server/assets_app.rs has
    // the rest.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![1u8; 10]).file_name("f"),
        )
        .text("json", "{}");
    let r = s
        .client
        .post(s.u("/api/assets"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![1u8; 10]).file_name("f"),
    );
    let r = s
        .client
        .post(s.u("/api/assets"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["name"], "f");
    // Both go again, so the checks below still see only failed uploads.
    let (_, page) = get_json(&s, "/api/assets").await;
    for asset in page["assets"].as_array().unwrap() {
        let url = s.u(&format!("/api/assets/{}", asset["id"].as_str().unwrap()));
        assert_eq!(s.client.delete(url).send().await.unwrap().status(), 200);
    }
    // A non-folder without a file.
    let form = reqwest::multipart::Form::new()
        .text("json", json!({"content_type": "text/plain"}).to_string());
    let r = s
        .client
        .post(s.u("/api/assets"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new().text("json", "not json");
    let r = s
        .client
        .post(s.u("/api/assets"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    assert!(blob_keys(&s).await.is_empty(), "no orphan blobs");
    let (_, page) = get_json(&s, "/api/assets?content_type=").await;
    assert_eq!(page["assets"].as_array().unwrap().len(), 0, "no rows");
    // And a good upload still works afterwards.
    let r = upload(&s, json!({"name": "ok"}), vec![1u8; 1024], "text/plain").await;
    assert_eq!(r.status(), 201);
}
