//! The Supabase backend against the Storage double (`nodetool_testkit::supabase_double`): the
//! shared behaviour suite on a public and a private bucket, then Supabase-specific behaviour.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nodetool_core::{ByteRange, ErrorKind, PutOptions, Storage, StorageKey, StoragePrefix};
use nodetool_storage_supabase::{SupabaseConfig, SupabaseStorage};
use nodetool_testkit::storage_suite;
use nodetool_testkit::supabase_double::SupabaseDouble;

const BUCKET: &str = "assets";

/// A double with one bucket, and a backend that asks the server whether it is public.
async fn setup(public: bool) -> (SupabaseDouble, Arc<SupabaseStorage>) {
    let double = SupabaseDouble::start().await;
    double.create_bucket(BUCKET, public);
    let cfg = SupabaseConfig::new(double.url(), double.service_key(), BUCKET);
    let storage = SupabaseStorage::new(cfg).expect("config");
    (double, Arc::new(storage))
}

fn key(k: &str) -> StorageKey {
    StorageKey::new(k).expect("valid key")
}

async fn put(s: &SupabaseStorage, k: &str, data: &'static [u8]) {
    s.upload_bytes(&key(k), Bytes::from_static(data), PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("upload {k}: {e}"));
}

#[tokio::test]
async fn behaviour_suite_on_a_public_bucket() {
    let (_double, storage) = setup(true).await;
    storage_suite::run(storage).await;
}

#[tokio::test]
async fn behaviour_suite_on_a_private_bucket() {
    let (_double, storage) = setup(false).await;
    storage_suite::run(storage).await;
}

#[tokio::test]
async fn overwrite_works_because_uploads_upsert() {
    let (double, s) = setup(false).await;
    put(&s, "thumbs/a.jpg", b"first").await;
    put(&s, "thumbs/a.jpg", b"second version").await;
    assert_eq!(
        double.object_bytes(BUCKET, "thumbs/a.jpg").as_deref(),
        Some(&b"second version"[..])
    );
    assert_eq!(s.size(&key("thumbs/a.jpg")).await.unwrap(), 14);
}

#[tokio::test]
async fn the_real_content_type_is_stored_and_served() {
    let (double, s) = setup(true).await;
    s.upload_bytes(
        &key("img/photo.bin"),
        Bytes::from_static(b"RIFF"),
        PutOptions::content_type("image/webp"),
    )
    .await
    .unwrap();
    put(&s, "img/guess.JPG", b"\xff\xd8").await;
    let meta = s.require_metadata(&key("img/photo.bin")).await.unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("image/webp"));
    let meta = s.require_metadata(&key("img/guess.JPG")).await.unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("image/jpeg"));
    // What any client sees, not only our backend.
    let resp = reqwest::get(format!(
        "{}/object/public/{BUCKET}/img/photo.bin",
        double.storage_url()
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/webp");
}

#[tokio::test]
async fn public_url_has_the_supabase_format_and_needs_no_request() {
    let mut cfg = SupabaseConfig::new("https://example.supabase.co", "service-key", BUCKET);
    cfg.public = Some(true);
    let s = SupabaseStorage::new(cfg).unwrap();
    // No server behind this URL: url() must not do I/O for a public bucket.
    assert_eq!(
        s.url(&key("images/photo.png")).await.unwrap(),
        "https://example.supabase.co/storage/v1/object/public/assets/images/photo.png"
    );
    assert_eq!(
        s.url(&key("a b/ü.png")).await.unwrap(),
        "https://example.supabase.co/storage/v1/object/public/assets/a%20b/%21C3%21BC.png"
    );
}

#[tokio::test]
async fn public_url_is_fetchable_without_credentials() {
    let (_double, s) = setup(true).await;
    put(&s, "p/hello.txt", b"hello world\n").await;
    let url = s.url(&key("p/hello.txt")).await.unwrap();
    assert!(url.contains("/object/public/assets/p/hello.txt"), "{url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hello world\n");
}

#[tokio::test]
async fn private_bucket_url_is_signed_and_fetchable_with_a_plain_get() {
    let (double, s) = setup(false).await;
    put(&s, "dir/sp ace.txt", b"secret bytes").await;
    let url = s.url(&key("dir/sp ace.txt")).await.unwrap();
    let prefix = format!(
        "{}/object/sign/{BUCKET}/dir/sp%20ace.txt?token=",
        double.storage_url()
    );
    assert!(url.starts_with(&prefix), "{url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("expires"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"secret bytes");

    // The public route refuses a private bucket as the real server does.
    let public = s.public_url(&key("dir/sp ace.txt"));
    let resp = reqwest::get(&public).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "NoSuchBucket");

    // A short presigned URL with an explicit lifetime.
    let url = s
        .presigned_url(&key("dir/sp ace.txt"), Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let err = s
        .presigned_url(&key("dir/missing.txt"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn ranged_reads_including_suffix_and_unsatisfiable() {
    let (_double, s) = setup(false).await;
    put(&s, "r.txt", b"hello world\n").await;
    let k = key("r.txt");
    let d = s.download(&k, Some(ByteRange::Suffix(3))).await.unwrap();
    assert_eq!(d.range, 9..12);
    assert_eq!(d.meta.size, 12);
    assert_eq!(d.into_bytes().await.unwrap().as_ref(), b"ld\n");
    let d = s
        .download(&k, Some(ByteRange::Bounded { start: 5, end: 100 }))
        .await
        .unwrap();
    assert_eq!(d.range, 5..12);
    assert_eq!(d.into_bytes().await.unwrap().as_ref(), b" world\n");
    let d = s.download(&k, Some(ByteRange::From(6))).await.unwrap();
    assert_eq!(d.into_bytes().await.unwrap().as_ref(), b"world\n");
    for bad in [
        ByteRange::From(12),
        ByteRange::Bounded {
            start: 100,
            end: 200,
        },
    ] {
        let err = s.download(&k, Some(bad)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RangeNotSatisfiable, "{bad}: {err}");
    }
    let err = s
        .download(&k, Some(ByteRange::Bounded { start: 5, end: 4 }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn list_recurses_through_folders_and_pages() {
    let (_double, s) = setup(false).await;
    for k in [
        "root.txt",
        "f1/a.txt",
        "f1/f2/b.txt",
        "f1/f2/f3/c.txt",
        "f1/f2x.txt",
        "f1b.txt",
        "F1/upper-case-folder.txt",
    ] {
        put(&s, k, b"x").await;
    }
    let keys = |v: Vec<nodetool_core::ObjectMeta>| -> Vec<String> {
        v.into_iter().map(|m| m.key.as_str().to_owned()).collect()
    };
    let prefix = |p: &str| StoragePrefix::new(p).unwrap();
    assert_eq!(
        keys(s.list(&prefix("f1/f2")).await.unwrap()),
        ["f1/f2/b.txt", "f1/f2/f3/c.txt", "f1/f2x.txt"]
    );
    assert_eq!(
        keys(s.list(&prefix("f1")).await.unwrap()),
        [
            "f1/a.txt",
            "f1/f2/b.txt",
            "f1/f2/f3/c.txt",
            "f1/f2x.txt",
            "f1b.txt"
        ]
    );
    assert_eq!(keys(s.list(&StoragePrefix::all()).await.unwrap()).len(), 7);
    // Supabase matches folder paths case-insensitively; the backend must not.
    assert_eq!(keys(s.list(&prefix("f1/")).await.unwrap()).len(), 4);
    assert_eq!(
        keys(s.list(&prefix("F1/")).await.unwrap()),
        ["F1/upper-case-folder.txt"]
    );

    // More entries in one folder than one list page holds.
    let n = 1003;
    for i in 0..n {
        s.upload_bytes(
            &key(&format!("many/{i:05}.bin")),
            Bytes::from_static(b"m"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let many = s.list(&prefix("many/")).await.unwrap();
    assert_eq!(many.len(), n);
    assert_eq!(many[0].key.as_str(), "many/00000.bin");
    assert_eq!(many[n - 1].key.as_str(), format!("many/{:05}.bin", n - 1));
    assert!(many.iter().all(|m| m.size == 1 && m.etag.is_some()));
}

#[tokio::test]
async fn unicode_keys_are_escaped_for_supabase_and_listed_back() {
    let (double, s) = setup(false).await;
    put(&s, "ünï/ファイル!.txt", b"u").await;
    let stored = double.object_keys(BUCKET);
    assert_eq!(
        stored,
        ["!C3!BCn!C3!AF/!E3!83!95!E3!82!A1!E3!82!A4!E3!83!AB!21.txt"]
    );
    let listed = s.list(&StoragePrefix::new("ün").unwrap()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key.as_str(), "ünï/ファイル!.txt");
}

#[tokio::test]
async fn a_wrong_key_is_permission_denied_naming_supabase_key() {
    let double = SupabaseDouble::start().await;
    double.create_bucket(BUCKET, false);
    // Signed with another project's secret: the server's "signature verification failed".
    let other = SupabaseDouble::start().await;
    let mut cfg = SupabaseConfig::new(double.url(), other.service_key(), BUCKET);
    cfg.public = Some(false);
    let s = SupabaseStorage::new(cfg).unwrap();
    let k = key("x.txt");
    let errors = [
        s.upload_bytes(&k, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .map(|_| ())
            .unwrap_err(),
        s.list(&StoragePrefix::all()).await.map(|_| ()).unwrap_err(),
        s.delete(&k).await.unwrap_err(),
        s.url(&k).await.map(|_| ()).unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("SUPABASE_KEY"), "{err}");
        assert!(!err.is_temporary(), "{err}");
    }
    // Reads run as anon with a bad token, and a private bucket then looks missing: the error
    // must point at the configuration, not claim the object is absent.
    let err = s.metadata(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("SUPABASE_KEY"), "{err}");
}

#[tokio::test]
async fn a_missing_bucket_is_a_configuration_error() {
    let double = SupabaseDouble::start().await;
    let mut cfg = SupabaseConfig::new(double.url(), double.service_key(), "nope");
    cfg.public = Some(false);
    let s = SupabaseStorage::new(cfg).unwrap();
    let err = s
        .upload_bytes(
            &key("a.txt"),
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("'nope'"), "{err}");
}

#[tokio::test]
async fn an_unreachable_url_is_unavailable_and_temporary() {
    // A loopback port with nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = SupabaseConfig::new(format!("http://127.0.0.1:{port}"), "k", BUCKET);
    cfg.public = Some(false);
    cfg.timeout = Duration::from_secs(2);
    let s = SupabaseStorage::new(cfg).unwrap();
    // A hang guard, not a performance assertion: the call must end on its own timeouts.
    let err = tokio::time::timeout(Duration::from_secs(60), s.metadata(&key("a.txt")))
        .await
        .expect("the request must fail in bounded time")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.to_string().contains("SUPABASE_URL"), "{err}");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        s.upload_bytes(
            &key("a.txt"),
            Bytes::from_static(b"x"),
            PutOptions::default(),
        ),
    )
    .await
    .expect("bounded")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn a_stream_failing_mid_upload_keeps_the_previous_object() {
    let (double, s) = setup(false).await;
    put(&s, "keep.bin", b"original").await;
    let err = s
        .upload(
            &key("keep.bin"),
            storage_suite::failing_after(300_000),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    // The caller's own error comes back, not reqwest's opaque one.
    assert_eq!(err.kind(), ErrorKind::Unexpected, "{err}");
    assert!(err.to_string().contains("client went away"), "{err}");
    assert_eq!(
        double.object_bytes(BUCKET, "keep.bin").as_deref(),
        Some(&b"original"[..])
    );
    assert_eq!(double.object_keys(BUCKET), ["keep.bin"]);
}

#[tokio::test]
async fn info_describes_the_backend() {
    let (double, s) = setup(true).await;
    let info = s.info();
    assert_eq!(info.scheme, "supabase");
    assert_eq!(info.location, format!("{BUCKET}@{}", double.addr()));
    assert!(info.capabilities.presign && info.capabilities.durable);
    assert!(s.is_public().await.unwrap());
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_times_out() {
    // Accepts connections and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut cfg = SupabaseConfig::new(format!("http://{addr}"), "k", BUCKET);
    cfg.public = Some(false);
    cfg.timeout = Duration::from_millis(500);
    let s = SupabaseStorage::new(cfg).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), s.metadata(&key("a.txt")))
        .await
        .expect("the request must fail in bounded time")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_temporary());
    assert!(err.to_string().contains("SUPABASE_URL"), "{err}");
    silent.abort();
}
