//! Assets as the NodeTool app uploads and shows them, through a real socket: multipart fields
//! in any order (metadata inferred without `json`), and `/api/assets/{id}/thumbnail`
//! (generated once, cached in storage, ETag/304), for two users.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::{jwt, start};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

const SECRET: &str = "assets-app-test-jwt-secret-0123456789";

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([x as u8, y as u8, 128, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn file_part(bytes: Vec<u8>, name: &str, mime: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap()
}

#[tokio::test]
async fn multipart_fields_in_any_order_and_cached_thumbnails() {
    let s = start(&[
        ("AUTH_PROVIDER", "supabase"),
        ("SUPABASE_JWT_SECRET", SECRET),
    ])
    .await;
    let alice = jwt(SECRET, "alice", 3600);
    let bob = jwt(SECRET, "bob", 3600);
    let post = |form: Form, token: &str| {
        s.client
            .post(s.u("/api/assets"))
            .bearer_auth(token)
            .multipart(form)
            .send()
    };

    // File first, json after: both used (the name from json, the type from the part).
    let form = Form::new()
        .part("file", file_part(png(1000, 500), "pic.png", "image/png"))
        .text(
            "json",
            json!({"name": "Holiday", "metadata": {"k": 1}}).to_string(),
        );
    let r = post(form, &alice).await.unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (a["name"].as_str(), a["content_type"].as_str()),
        (Some("Holiday"), Some("image/png"))
    );
    assert_eq!(a["metadata"], json!({"k": 1}));
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["thumb_url"], format!("/api/assets/{id}/thumbnail"));

    // No json at all: name and type from the upload, parent the caller's home.
    let form = Form::new().part("file", file_part(b"hi".to_vec(), "notes.txt", "text/plain"));
    let r = post(form, &alice).await.unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        (
            t["name"].as_str(),
            t["content_type"].as_str(),
            t["parent_id"].as_str()
        ),
        (Some("notes.txt"), Some("text/plain"), Some("alice"))
    );
    assert_eq!(t["thumb_url"], Value::Null);
    // Neither: a clear 400.
    let r = post(Form::new().text("other", "x"), &alice).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("file field"));

    // Thumbnail: a JPEG within 512x512, keeping the aspect ratio; cached in storage.
    let thumb_url = s.u(&format!("/api/assets/{id}/thumbnail"));
    let r = s
        .client
        .get(&thumb_url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = r.bytes().await.unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (512, 256));
    let cached = s.dir.path().join(format!("assets/alice/{id}_thumb.jpg"));
    let mtime = std::fs::metadata(&cached).unwrap().modified().unwrap();
    // Again: the same object, not regenerated; If-None-Match answers 304.
    let r = s
        .client
        .get(&thumb_url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.bytes().await.unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        mtime
    );
    let r = s
        .client
        .get(&thumb_url)
        .bearer_auth(&alice)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Bob: Alice's asset has no thumbnail for him ("not found", like the asset).
    let r = s
        .client
        .get(&thumb_url)
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Not an image: 404 saying why. An undecodable "image": 422.
    let tid = t["id"].as_str().unwrap();
    let r = s
        .client
        .get(s.u(&format!("/api/assets/{tid}/thumbnail")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let form = Form::new().part(
        "file",
        file_part(b"not a png".to_vec(), "bad.png", "image/png"),
    );
    let bad: Value = post(form, &alice).await.unwrap().json().await.unwrap();
    let r = s
        .client
        .get(s.u(&format!(
            "/api/assets/{}/thumbnail",
            bad["id"].as_str().unwrap()
        )))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Deleting the asset removes its cached thumbnail.
    let r = s
        .client
        .delete(s.u(&format!("/api/assets/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!cached.exists());
}
