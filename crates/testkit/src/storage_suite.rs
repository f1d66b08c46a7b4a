//! The storage behaviour suite: the executable form of the `Storage` contract
//! (`nodetool_core::storage`). Every backend's `behaviour` test module runs it.
//!
//! Each case runs under a fresh random prefix, so the suite can share a bucket with other data; all
//! cases run even when one fails, and the panic lists every failure.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use nodetool_core::storage::ByteStream;
use nodetool_core::{ByteRange, Error, ErrorKind, PutOptions, Storage, StorageKey, StoragePrefix};

type Case = fn(Ctx) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a case gets: the storage under test and its own key prefix.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub storage: Arc<dyn Storage>,
    pub prefix: String,
}

impl Ctx {
    pub fn key(&self, name: &str) -> StorageKey {
        StorageKey::new(format!("{}{name}", self.prefix)).expect("suite keys are valid")
    }

    pub fn prefix(&self, rest: &str) -> StoragePrefix {
        StoragePrefix::new(format!("{}{rest}", self.prefix)).expect("suite prefixes are valid")
    }

    async fn put(&self, name: &str, data: &[u8]) {
        self.storage
            .upload_bytes(
                &self.key(name),
                Bytes::copy_from_slice(data),
                PutOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
    }

    async fn get(&self, name: &str) -> Bytes {
        self.storage
            .download_bytes(&self.key(name))
            .await
            .unwrap_or_else(|e| panic!("download {name}: {e}"))
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |ctx| Box::pin($name(ctx)))),*]
    };
}

const CASES: &[(&str, Case)] = cases![
    missing_key_is_not_found_everywhere,
    upload_then_download_round_trips,
    metadata_reports_size_time_and_type,
    content_type_is_stored_or_guessed,
    overwrite_replaces_content,
    ranges_follow_rfc_9110,
    empty_object,
    large_streamed_upload_in_many_chunks,
    failed_stream_leaves_nothing_behind,
    failed_overwrite_keeps_previous_object,
    upload_file_copies_or_is_unsupported,
    readers_never_see_a_partial_object,
    delete_is_idempotent,
    list_is_by_prefix_and_sorted,
    nested_and_unicode_keys,
    url_names_the_key,
    etag_changes_with_content,
];

/// Runs every case against `storage`; panics listing the failed ones.
pub async fn run(storage: Arc<dyn Storage>) {
    let scheme = storage.info().scheme;
    let run_id = nodetool_core::id::new_id();
    let mut failures = Vec::new();
    for (name, case) in CASES {
        let ctx = Ctx {
            storage: storage.clone(),
            prefix: format!("suite-{run_id}/{name}/"),
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(
            Duration::from_secs(120),
            case(ctx.clone()),
        ))
        .catch_unwind()
        .await;
        match outcome {
            Ok(Ok(())) => eprintln!("storage_{scheme}::{name} ... ok"),
            Ok(Err(_)) => failures.push(format!("{name}: timed out after 120 s")),
            Err(panic) => failures.push(format!("{name}: {}", panic_message(&*panic))),
        }
        cleanup(&ctx).await;
    }
    assert!(
        failures.is_empty(),
        "storage_{scheme}: {} of {} cases failed:\n  {}",
        failures.len(),
        CASES.len(),
        failures.join("\n  ")
    );
}

async fn cleanup(ctx: &Ctx) {
    if let Ok(objects) = ctx.storage.list(&ctx.prefix("")).await {
        for meta in objects {
            let _ = ctx.storage.delete(&meta.key).await;
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

fn assert_kind<T: std::fmt::Debug>(result: Result<T, Error>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind: {e}"),
        Ok(v) => panic!("{what}: expected {kind} error, got Ok({v:?})"),
    }
}

/// `n` bytes of a repeating, position-dependent pattern (so misplaced ranges are caught).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A stream of `data` in `chunk`-sized pieces.
pub fn chunked(data: Vec<u8>, chunk: usize) -> ByteStream {
    let data = Bytes::from(data);
    let pieces: Vec<_> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|start| Ok(data.slice(start..(start + chunk).min(data.len()))))
        .collect();
    futures::stream::iter(pieces).boxed()
}

/// A stream that yields `good` bytes and then fails.
pub fn failing_after(good: usize) -> ByteStream {
    let first = Bytes::from(pattern(good));
    futures::stream::iter(vec![
        Ok(first),
        Err(Error::new(
            ErrorKind::Unexpected,
            "client went away mid-upload",
        )),
    ])
    .boxed()
}

async fn missing_key_is_not_found_everywhere(ctx: Ctx) {
    let key = ctx.key("missing.bin");
    let s = &ctx.storage;
    assert!(s.metadata(&key).await.expect("metadata").is_none());
    assert!(!s.exists(&key).await.expect("exists"));
    assert_kind(
        s.download(&key, None).await.map(|d| d.meta),
        ErrorKind::NotFound,
        "download",
    );
    assert_kind(
        s.download(&key, Some(ByteRange::From(0)))
            .await
            .map(|d| d.meta),
        ErrorKind::NotFound,
        "ranged download",
    );
    assert_kind(s.size(&key).await, ErrorKind::NotFound, "size");
    assert_kind(s.mtime(&key).await, ErrorKind::NotFound, "mtime");
    s.delete(&key).await.expect("deleting a missing key is Ok");
    let err = s
        .download(&key, None)
        .await
        .map(|d| d.meta)
        .expect_err("download of a missing key");
    assert!(
        err.to_string().contains("missing.bin"),
        "NotFound should name the key: {err}"
    );
}

async fn upload_then_download_round_trips(ctx: Ctx) {
    let data = pattern(10_000);
    let meta = ctx
        .storage
        .upload_bytes(
            &ctx.key("a.bin"),
            Bytes::from(data.clone()),
            PutOptions::default(),
        )
        .await
        .expect("upload");
    assert_eq!(meta.size, 10_000);
    assert_eq!(meta.key, ctx.key("a.bin"));
    assert_eq!(ctx.get("a.bin").await.as_ref(), &data[..]);
    let download = ctx
        .storage
        .download(&ctx.key("a.bin"), None)
        .await
        .expect("download");
    assert_eq!(download.range, 0..10_000);
    assert_eq!(download.meta.size, 10_000);
    assert!(ctx.storage.exists(&ctx.key("a.bin")).await.expect("exists"));
}

async fn metadata_reports_size_time_and_type(ctx: Ctx) {
    let before = Utc::now() - chrono::Duration::seconds(5);
    ctx.put("m.txt", b"hello").await;
    let after = Utc::now() + chrono::Duration::seconds(5);
    let meta = ctx
        .storage
        .metadata(&ctx.key("m.txt"))
        .await
        .expect("metadata")
        .expect("exists");
    assert_eq!(meta.size, 5);
    assert!(
        meta.last_modified >= before && meta.last_modified <= after,
        "mtime {} should be now (UTC) within clock slack, between {before} and {after}",
        meta.last_modified
    );
    assert_eq!(ctx.storage.size(&ctx.key("m.txt")).await.expect("size"), 5);
    assert_eq!(
        ctx.storage.mtime(&ctx.key("m.txt")).await.expect("mtime"),
        meta.last_modified
    );
    let ct = meta.content_type.expect("content type recorded");
    assert!(ct.starts_with("text/plain"), "{ct}");
}

async fn content_type_is_stored_or_guessed(ctx: Ctx) {
    let s = &ctx.storage;
    s.upload_bytes(
        &ctx.key("noext"),
        Bytes::from_static(b"{}"),
        PutOptions::content_type("application/json"),
    )
    .await
    .expect("upload");
    s.upload_bytes(
        &ctx.key("pic.PNG"),
        Bytes::from_static(b"\x89PNG"),
        PutOptions::default(),
    )
    .await
    .expect("upload");
    let meta = s.require_metadata(&ctx.key("noext")).await.expect("meta");
    assert_eq!(meta.content_type.as_deref(), Some("application/json"));
    let meta = s.require_metadata(&ctx.key("pic.PNG")).await.expect("meta");
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    let download = s.download(&ctx.key("noext"), None).await.expect("download");
    assert_eq!(
        download.meta.content_type.as_deref(),
        Some("application/json")
    );
}

async fn overwrite_replaces_content(ctx: Ctx) {
    ctx.put("o.bin", &pattern(3000)).await;
    ctx.storage
        .upload_bytes(
            &ctx.key("o.bin"),
            Bytes::from_static(b"short"),
            PutOptions::content_type("text/plain"),
        )
        .await
        .expect("overwrite");
    assert_eq!(ctx.get("o.bin").await.as_ref(), b"short");
    let meta = ctx
        .storage
        .require_metadata(&ctx.key("o.bin"))
        .await
        .expect("meta");
    assert_eq!(meta.size, 5);
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
}

async fn ranges_follow_rfc_9110(ctx: Ctx) {
    let data = pattern(1000);
    ctx.put("r.bin", &data).await;
    let key = ctx.key("r.bin");
    let cases = [
        (ByteRange::Bounded { start: 0, end: 0 }, 0..1),
        (ByteRange::Bounded { start: 10, end: 19 }, 10..20),
        (
            ByteRange::Bounded {
                start: 990,
                end: 5000,
            },
            990..1000,
        ),
        (ByteRange::From(500), 500..1000),
        (ByteRange::From(999), 999..1000),
        (ByteRange::Suffix(1), 999..1000),
        (ByteRange::Suffix(100), 900..1000),
        (ByteRange::Suffix(5000), 0..1000),
    ];
    for (range, expected) in cases {
        let download = ctx
            .storage
            .download(&key, Some(range))
            .await
            .unwrap_or_else(|e| panic!("{range}: {e}"));
        assert_eq!(download.range, expected, "{range}: reported range");
        assert_eq!(
            download.meta.size, 1000,
            "{range}: meta.size is the whole object"
        );
        let body = download.into_bytes().await.expect("body");
        let expected_bytes = &data[expected.start as usize..expected.end as usize];
        assert_eq!(body.as_ref(), expected_bytes, "{range}: body");
    }
    for bad in [
        ByteRange::From(1000),
        ByteRange::Bounded {
            start: 1000,
            end: 1001,
        },
        ByteRange::Suffix(0),
    ] {
        assert_kind(
            ctx.storage.download(&key, Some(bad)).await.map(|d| d.meta),
            ErrorKind::RangeNotSatisfiable,
            &bad.to_string(),
        );
    }
}

async fn empty_object(ctx: Ctx) {
    ctx.put("empty.bin", b"").await;
    let meta = ctx
        .storage
        .require_metadata(&ctx.key("empty.bin"))
        .await
        .expect("meta");
    assert_eq!(meta.size, 0);
    assert!(ctx.get("empty.bin").await.is_empty());
    assert_kind(
        ctx.storage
            .download(&ctx.key("empty.bin"), Some(ByteRange::From(0)))
            .await
            .map(|d| d.meta),
        ErrorKind::RangeNotSatisfiable,
        "range on an empty object",
    );
}

async fn large_streamed_upload_in_many_chunks(ctx: Ctx) {
    // 12 MiB in odd-sized chunks: crosses multipart thresholds of S3-like backends.
    let n = 12 * 1024 * 1024 + 17;
    let data = pattern(n);
    let meta = ctx
        .storage
        .upload(
            &ctx.key("big.bin"),
            chunked(data.clone(), 65_537),
            PutOptions::default(),
        )
        .await
        .expect("streamed upload");
    assert_eq!(meta.size, n as u64);
    let download = ctx
        .storage
        .download(&ctx.key("big.bin"), None)
        .await
        .expect("download");
    let mut body = download.body;
    let mut got = Vec::with_capacity(n);
    let mut chunks = 0;
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.expect("chunk"));
        chunks += 1;
    }
    assert!(got == data, "12 MiB round trip differs");
    assert!(
        chunks > 1,
        "a 12 MiB download must stream in several chunks, got {chunks}"
    );
}

async fn failed_stream_leaves_nothing_behind(ctx: Ctx) {
    let key = ctx.key("partial.bin");
    let result = ctx
        .storage
        .upload(&key, failing_after(100_000), PutOptions::default())
        .await;
    assert!(result.is_err(), "an upload whose stream fails must fail");
    assert!(
        ctx.storage
            .metadata(&key)
            .await
            .expect("metadata")
            .is_none(),
        "a failed upload must leave no object"
    );
    let listed = ctx.storage.list(&ctx.prefix("")).await.expect("list");
    assert!(
        listed.is_empty(),
        "nothing visible after a failed upload: {listed:?}"
    );
}

async fn failed_overwrite_keeps_previous_object(ctx: Ctx) {
    ctx.put("keep.bin", b"original").await;
    let result = ctx
        .storage
        .upload(
            &ctx.key("keep.bin"),
            failing_after(50_000),
            PutOptions::default(),
        )
        .await;
    assert!(result.is_err());
    assert_eq!(ctx.get("keep.bin").await.as_ref(), b"original");
}

/// `upload_file` is optional (`Unsupported`), but where a backend offers it, it keeps every
/// guarantee of `upload`: the bytes, the content type, and no change on failure.
async fn upload_file_copies_or_is_unsupported(ctx: Ctx) {
    use std::io::{Seek, SeekFrom, Write};
    use std::sync::atomic::{AtomicU64, Ordering};

    let data = pattern(3 * 1024 * 1024 + 17);
    let mut src = tempfile::tempfile().expect("temp file");
    src.write_all(&data).expect("write");
    src.seek(SeekFrom::Start(0)).expect("seek");
    let key = ctx.key("from-file.bin");
    let copied = Arc::new(AtomicU64::new(0));
    let progress: nodetool_core::storage::Progress = {
        let copied = copied.clone();
        Arc::new(move |n| {
            copied.fetch_add(n, Ordering::Relaxed);
        })
    };
    let stored = ctx
        .storage
        .upload_file(
            &key,
            &src,
            PutOptions::content_type("application/x-suite"),
            Some(progress),
        )
        .await;
    match stored {
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            let meta = ctx.storage.metadata(&key).await.expect("metadata");
            assert!(meta.is_none(), "an unsupported upload_file stored {meta:?}");
            return;
        }
        Err(e) => panic!("upload_file: {e}"),
        Ok(meta) => {
            assert_eq!(meta.size, data.len() as u64);
            assert_eq!(meta.content_type.as_deref(), Some("application/x-suite"));
        }
    }
    assert_eq!(ctx.get("from-file.bin").await.as_ref(), data.as_slice());
    assert_eq!(
        copied.load(Ordering::Relaxed),
        data.len() as u64,
        "progress"
    );

    // A source that cannot be read (opened write-only) fails and keeps the stored object.
    ctx.put("from-file.bin", b"original").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let write_only = std::fs::File::create(dir.path().join("w")).expect("create");
    let result = ctx
        .storage
        .upload_file(&key, &write_only, PutOptions::default(), None)
        .await;
    assert!(result.is_err(), "reading a write-only file must fail");
    assert_eq!(ctx.get("from-file.bin").await.as_ref(), b"original");
}

async fn readers_never_see_a_partial_object(ctx: Ctx) {
    let key = ctx.key("atomic.bin");
    let old = vec![b'a'; 512 * 1024];
    let new = vec![b'b'; 512 * 1024];
    ctx.put("atomic.bin", &old).await;
    // A slow writer: chunks trickle in while a reader polls.
    let slow = futures::stream::iter(
        new.chunks(16 * 1024)
            .map(Bytes::copy_from_slice)
            .collect::<Vec<_>>(),
    )
    .then(|c| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(c)
    })
    .boxed();
    let storage = ctx.storage.clone();
    let writer_key = key.clone();
    let writer = tokio::spawn(async move {
        storage
            .upload(&writer_key, slow, PutOptions::default())
            .await
    });
    let mut reads = 0;
    while !writer.is_finished() {
        let body = ctx
            .storage
            .download_bytes(&key)
            .await
            .expect("read during overwrite");
        assert!(
            body.as_ref() == &old[..] || body.as_ref() == &new[..],
            "a reader saw a partial object of {} bytes",
            body.len()
        );
        reads += 1;
        // Let the writer progress even on a single-threaded runtime.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writer.await.expect("join").expect("slow upload");
    assert_eq!(ctx.get("atomic.bin").await.as_ref(), &new[..]);
    assert!(reads > 0);
}

async fn delete_is_idempotent(ctx: Ctx) {
    ctx.put("d.bin", b"x").await;
    let key = ctx.key("d.bin");
    ctx.storage.delete(&key).await.expect("delete");
    assert!(!ctx.storage.exists(&key).await.expect("exists"));
    ctx.storage.delete(&key).await.expect("second delete");
    assert_kind(
        ctx.storage.download(&key, None).await.map(|d| d.meta),
        ErrorKind::NotFound,
        "after delete",
    );
}

async fn list_is_by_prefix_and_sorted(ctx: Ctx) {
    for name in ["a/2.txt", "a/1.txt", "a/b/3.txt", "ab/4.txt", "c.txt"] {
        ctx.put(name, name.as_bytes()).await;
    }
    let names = |metas: Vec<nodetool_core::ObjectMeta>| -> Vec<String> {
        metas
            .into_iter()
            .map(|m| m.key.as_str().trim_start_matches(&ctx.prefix).to_owned())
            .collect()
    };
    let listed = names(ctx.storage.list(&ctx.prefix("a/")).await.expect("list a/"));
    assert_eq!(listed, ["a/1.txt", "a/2.txt", "a/b/3.txt"]);
    let listed = names(ctx.storage.list(&ctx.prefix("a")).await.expect("list a"));
    assert_eq!(listed, ["a/1.txt", "a/2.txt", "a/b/3.txt", "ab/4.txt"]);
    let all = ctx.storage.list(&ctx.prefix("")).await.expect("list all");
    assert_eq!(all.len(), 5);
    let one = all
        .iter()
        .find(|m| m.key == ctx.key("a/b/3.txt"))
        .expect("listed");
    assert_eq!(one.size, "a/b/3.txt".len() as u64, "list carries sizes");
    assert!(ctx
        .storage
        .list(&ctx.prefix("zzz"))
        .await
        .expect("list zzz")
        .is_empty());
}

async fn nested_and_unicode_keys(ctx: Ctx) {
    for name in [
        "deep/er/still/x.bin",
        "ünï cødé/ファイル.txt",
        "sp ace+plus%pct.bin",
    ] {
        ctx.put(name, name.as_bytes()).await;
        assert_eq!(ctx.get(name).await.as_ref(), name.as_bytes(), "{name}");
    }
}

async fn url_names_the_key(ctx: Ctx) {
    ctx.put("u/pic.png", b"png").await;
    let url = ctx.storage.url(&ctx.key("u/pic.png")).await.expect("url");
    assert!(
        url.contains("pic.png"),
        "url should reference the key: {url}"
    );
}

async fn etag_changes_with_content(ctx: Ctx) {
    ctx.put("e.bin", b"one").await;
    let first = ctx
        .storage
        .require_metadata(&ctx.key("e.bin"))
        .await
        .expect("meta")
        .etag;
    ctx.put("e.bin", b"two").await;
    let second = ctx
        .storage
        .require_metadata(&ctx.key("e.bin"))
        .await
        .expect("meta")
        .etag;
    let (Some(a), Some(b)) = (first, second) else {
        panic!("every backend must report an ETag");
    };
    assert_ne!(a, b, "a strong ETag must change when the content changes");
}
