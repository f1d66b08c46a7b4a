//! Worker calls over an in-memory pipe: the worker's `CallClient` and remote backends on one
//! end, the parent's `CallHandler` (over real file storage, the in-process node cache and a
//! SQLite asset store) on the other, with the real framing in between. Concurrency and reply
//! order, chunked uploads and downloads, scope enforcement, and bad input from a worker.
#![allow(clippy::unwrap_used)]

use nodetool_testkit::ids::{jid, uid};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use nodetool_assets::SqliteAssetStore;
use nodetool_core::{
    AssetQuery, AssetRecord, AssetStore, ByteRange, ByteStream, CacheValue, Download, Error,
    ErrorKind, ObjectMeta, PutOptions, Result, Storage, StorageInfo, StorageKey, StoragePrefix,
};
use nodetool_engine::EngineResources;
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_workers::calls::client::remote_resources;
use nodetool_workers::calls::{
    op, CallClient, CallHandler, CallScope, KeyScope, Role, WorkerServices, MAX_CALLS_IN_FLIGHT,
};
use nodetool_workers::protocol::{
    read_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES,
};

const MIB: usize = 1024 * 1024;

/// The parent's resources: file asset and temp storage under `dir`, the in-process node cache
/// and an in-memory SQLite asset store.
async fn parent_resources(dir: &Path) -> (EngineResources, Arc<SqliteAssetStore>) {
    let env: BTreeMap<String, String> = [
        ("ENV", "development"),
        ("HOME", &dir.display().to_string()),
        ("ASSET_FOLDER", &dir.join("assets").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings =
        nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.join("config")))
            .unwrap();
    let store = Arc::new(SqliteAssetStore::in_memory().await.unwrap());
    let resources =
        Resources::new(settings, ResourceOptions::default()).with_asset_store(store.clone());
    (resources.engine_resources().await.unwrap(), store)
}

fn scope(user: &str, keys: KeyScope) -> CallScope {
    CallScope {
        user_id: uid(user),
        job_id: jid("job-1"),
        keys,
    }
}

/// A worker's client and a parent's handler joined by a duplex pipe carrying real frames.
struct Pipe {
    client: CallClient,
    handler: Arc<CallHandler>,
    worker: EngineResources,
}

fn connect(services: WorkerServices, scope: CallScope, chunk_frame_limit: usize) -> Pipe {
    connect_with(services, scope, chunk_frame_limit, true)
}

/// `binary`: chunks cross as frame attachments (today's parents) or as base64 (what an older
/// parent's offer, without `binary_chunks`, gets).
fn connect_with(
    services: WorkerServices,
    scope: CallScope,
    chunk_frame_limit: usize,
    binary: bool,
) -> Pipe {
    let (child_end, parent_end) = tokio::io::duplex(256 * 1024);
    let (mut child_r, mut child_w) = tokio::io::split(child_end);
    let (mut parent_r, mut parent_w) = tokio::io::split(parent_end);
    let mut offer = services.offer(chunk_frame_limit);
    offer.binary_chunks = binary;

    // Worker: calls out, replies in.
    let (calls_tx, mut calls_rx) = mpsc::unbounded_channel::<ChildFrame>();
    let client = CallClient::new(calls_tx, offer.max_calls_in_flight);
    tokio::spawn(async move {
        while let Some(frame) = calls_rx.recv().await {
            if write_frame(&mut child_w, &frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn({
        let client = client.clone();
        async move {
            while let Ok(Some(ParentFrame::Reply {
                call_id,
                result,
                error,
                data,
            })) = read_frame::<_, ParentFrame>(&mut child_r, MAX_FRAME_BYTES).await
            {
                client.deliver(call_id, ParentFrame::reply_answer(result, error, data));
            }
            client.close();
        }
    });

    // Parent: calls in, replies out.
    let (replies_tx, mut replies_rx) = mpsc::unbounded_channel::<ParentFrame>();
    let handler = CallHandler::new(services, scope.clone(), replies_tx, chunk_frame_limit);
    tokio::spawn(async move {
        while let Some(frame) = replies_rx.recv().await {
            if write_frame(&mut parent_w, &frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn({
        let handler = handler.clone();
        async move {
            while let Ok(Some(ChildFrame::Call {
                call_id,
                op,
                args,
                data,
            })) = read_frame::<_, ChildFrame>(&mut parent_r, MAX_FRAME_BYTES).await
            {
                handler.dispatch(call_id, op, args, data);
            }
        }
    });
    let worker = remote_resources(&client, Some(&offer), scope.user_id.as_str());
    Pipe {
        client,
        handler,
        worker,
    }
}

fn key(k: &str) -> StorageKey {
    StorageKey::new(k).unwrap()
}

/// `len` bytes that differ at every offset, so a reordered or dropped chunk shows.
fn pattern(len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A body of `chunk`-sized pieces.
fn body_of(bytes: &Bytes, chunk: usize) -> ByteStream {
    let pieces: Vec<Result<Bytes>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces).boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_storage_round_trips_in_chunks() {
    round_trip_in_chunks(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_storage_round_trips_in_base64_chunks_with_an_older_parent() {
    round_trip_in_chunks(false).await;
}

async fn round_trip_in_chunks(binary: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (res, _) = parent_resources(dir.path()).await;
    // A small frame limit: 10 MiB crosses in chunks of well under 1 MiB.
    let pipe = connect_with(
        WorkerServices::new(res.clone()),
        scope("1", KeyScope::WholeStore),
        MIB,
        binary,
    );
    let remote = &pipe.worker.asset_storage;
    let data = pattern(10 * MIB + 17);
    let k = key("1/big.bin");

    let meta = remote
        .upload(
            &k,
            body_of(&data, 3 * MIB),
            PutOptions::content_type("application/x-test"),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.content_type.as_deref(), Some("application/x-test"));
    // The parent's storage has exactly these bytes.
    assert_eq!(res.asset_storage.download_bytes(&k).await.unwrap(), data);

    // Whole and ranged downloads, through several chunks.
    let whole = remote.download(&k, None).await.unwrap();
    assert_eq!(whole.range, 0..data.len() as u64);
    let mut chunks = 0;
    let mut got = Vec::new();
    let mut body = whole.body;
    while let Some(c) = body.next().await {
        let c = c.unwrap();
        assert!(c.len() <= MIB, "chunk of {} bytes", c.len());
        got.extend_from_slice(&c);
        chunks += 1;
    }
    assert_eq!(Bytes::from(got), data);
    assert!(chunks > 10, "{chunks} chunks");
    let part = remote
        .download(
            &k,
            Some(ByteRange::Bounded {
                start: 5,
                end: 2 * MIB as u64,
            }),
        )
        .await
        .unwrap();
    assert_eq!(part.range, 5..2 * MIB as u64 + 1);
    assert_eq!(part.into_bytes().await.unwrap(), data.slice(5..2 * MIB + 1));
    let tail = remote
        .download(&k, Some(ByteRange::Suffix(3)))
        .await
        .unwrap();
    assert_eq!(
        tail.into_bytes().await.unwrap(),
        data.slice(data.len() - 3..)
    );

    // Metadata, listing, URL, delete; errors keep their kind.
    let m = remote.metadata(&k).await.unwrap().unwrap();
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(m.etag, meta.etag);
    assert!(remote.metadata(&key("1/none")).await.unwrap().is_none());
    let listed = remote
        .list(&StoragePrefix::new("1/").unwrap())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, k);
    assert_eq!(
        remote.url(&k).await.unwrap(),
        res.asset_storage.url(&k).await.unwrap()
    );
    let err = remote.download(&key("1/none"), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = remote
        .download(&k, Some(ByteRange::From(data.len() as u64 + 1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RangeNotSatisfiable, "{err}");
    remote.delete(&k).await.unwrap();
    remote.delete(&k).await.unwrap();
    assert!(!res.asset_storage.exists(&k).await.unwrap());

    // An empty object, and temp storage is the parent's temp storage.
    let e = key("jobs/job-1/empty");
    pipe.worker
        .temp_storage
        .upload_bytes(&e, Bytes::new(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(res.temp_storage.size(&e).await.unwrap(), 0);
    assert!(pipe
        .worker
        .temp_storage
        .download_bytes(&e)
        .await
        .unwrap()
        .is_empty());
    assert!(!res.asset_storage.exists(&e).await.unwrap());
    assert_eq!(pipe.worker.asset_storage.info().scheme, "file");
}

/// A failing body, an upload dropped half-way, and a worker that goes away with an upload open:
/// none leaves an object, and an existing object keeps its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (res, _) = parent_resources(dir.path()).await;
    let pipe = connect(
        WorkerServices::new(res.clone()),
        scope("1", KeyScope::WholeStore),
        MAX_FRAME_BYTES,
    );
    let remote = &pipe.worker.asset_storage;
    let old = key("1/old.bin");
    remote
        .upload_bytes(
            &old,
            Bytes::from_static(b"old bytes"),
            PutOptions::default(),
        )
        .await
        .unwrap();

    // 1. The body fails after a chunk.
    let failing: ByteStream = futures::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 1000])),
        Err(Error::new(ErrorKind::Unavailable, "the source broke")),
    ])
    .boxed();
    let err = remote
        .upload(&old, failing, PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        res.asset_storage.download_bytes(&old).await.unwrap(),
        Bytes::from_static(b"old bytes")
    );

    // 2. The upload future is dropped while its body waits (a cancelled node).
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(1);
    let body: ByteStream = tokio_stream_from(rx);
    tx.send(Ok(pattern(100_000))).await.unwrap();
    let upload = {
        let remote = remote.clone();
        tokio::spawn(async move {
            remote
                .upload(&key("1/dropped.bin"), body, PutOptions::default())
                .await
        })
    };
    // The upload has taken the first piece once a second one fits into the body's channel.
    tx.send(Ok(pattern(10))).await.unwrap();
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());

    // 3. An upload left open when the job ends (the worker died): the parent aborts it.
    let opened = pipe
        .client
        .call(
            op::UPLOAD_OPEN,
            json!({"role": "asset", "key": "1/orphan.bin"}),
        )
        .await
        .unwrap();
    pipe.client
        .call(
            op::UPLOAD_CHUNK,
            json!({"upload": opened["upload"], "offset": 0, "data": "aGVsbG8="}),
        )
        .await
        .unwrap();
    pipe.handler.finish(Duration::from_secs(30)).await;

    let keys: Vec<String> = res
        .asset_storage
        .list(&StoragePrefix::all())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(keys, vec!["1/old.bin"]);
    // No temp file of an aborted upload is left in the file storage's work area either.
    let work = dir.path().join("assets/.nodetool/tmp");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial uploads left: {left:?}");
    // And the job is over for the worker: calls fail instead of hanging.
    pipe.client.close();
    let err = remote.metadata(&old).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Result<Bytes>>) -> ByteStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Storage whose `metadata` of `slow` waits until released: a slow call.
#[derive(Debug)]
struct SlowStorage {
    inner: Arc<dyn Storage>,
    release: Arc<Notify>,
}

#[async_trait]
impl Storage for SlowStorage {
    fn info(&self) -> StorageInfo {
        self.inner.info()
    }
    async fn upload(
        &self,
        key: &StorageKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.inner.upload(key, body, opts).await
    }
    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        self.inner.download(key, range).await
    }
    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        if key.as_str() == "slow" {
            self.release.notified().await;
        }
        self.inner.metadata(key).await
    }
    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn url(&self, key: &StorageKey) -> Result<String> {
        self.inner.url(key).await
    }
}

/// Many calls at once share the pipe; a slow one does not hold up the others, whose replies
/// come first; the parent refuses calls beyond its bound instead of queueing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_complete_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut res, _) = parent_resources(dir.path()).await;
    let release = Arc::new(Notify::new());
    res.asset_storage = Arc::new(SlowStorage {
        inner: res.asset_storage.clone(),
        release: release.clone(),
    });
    let pipe = connect(
        WorkerServices::new(res.clone()),
        scope("1", KeyScope::WholeStore),
        MAX_FRAME_BYTES,
    );
    let remote = pipe.worker.asset_storage.clone();
    for i in 0..8 {
        remote
            .upload_bytes(
                &key(&format!("k{i}")),
                Bytes::from(vec![i as u8; i + 1]),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let slow = tokio::spawn({
        let remote = remote.clone();
        async move { remote.metadata(&key("slow")).await }
    });
    // 40 calls from 8 tasks while the slow one waits: more than the 16 slots, so the client
    // queues them behind its own bound, and every answer matches its question.
    let mut fast = Vec::new();
    for i in 0..8 {
        let remote = remote.clone();
        fast.push(tokio::spawn(async move {
            for _ in 0..5 {
                let m = remote
                    .metadata(&key(&format!("k{i}")))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(m.size, i as u64 + 1);
            }
        }));
    }
    for f in fast {
        f.await.unwrap();
    }
    assert!(!slow.is_finished(), "the slow call is still waiting");
    release.notify_one();
    assert!(slow.await.unwrap().unwrap().is_none());

    // The parent's own bound: the 17th call in flight is refused at once, not queued.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = CallHandler::new(
        WorkerServices::new(res.clone()),
        scope("1", KeyScope::WholeStore),
        tx,
        MAX_FRAME_BYTES,
    );
    for id in 0..MAX_CALLS_IN_FLIGHT as u64 {
        handler.dispatch(
            id,
            op::METADATA.into(),
            json!({"role": "asset", "key": "slow"}),
            None,
        );
    }
    handler.dispatch(
        99,
        op::METADATA.into(),
        json!({"role": "asset", "key": "k1"}),
        None,
    );
    let (id, _, error) = reply(&mut rx).await;
    assert_eq!(id, 99);
    assert_eq!(error.unwrap().error_kind(), ErrorKind::RateLimited);
    for _ in 0..MAX_CALLS_IN_FLIGHT {
        release.notify_one();
        let (id, result, error) = reply(&mut rx).await;
        assert!(id < MAX_CALLS_IN_FLIGHT as u64, "{id}");
        assert!(error.is_none() && result == Some(Value::Null), "{error:?}");
    }
}

async fn reply(
    rx: &mut mpsc::UnboundedReceiver<ParentFrame>,
) -> (
    u64,
    Option<Value>,
    Option<nodetool_workers::calls::CallError>,
) {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(ParentFrame::Reply {
            call_id,
            result,
            error,
            ..
        })) => (call_id, result, error),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Calls a handler directly and returns (result, error kind).
async fn raw(
    handler: &Arc<CallHandler>,
    rx: &mut mpsc::UnboundedReceiver<ParentFrame>,
    op: &str,
    args: Value,
) -> std::result::Result<Value, ErrorKind> {
    raw_with(handler, rx, op, args, None).await
}

/// [`raw`] with bytes attached to the call.
async fn raw_with(
    handler: &Arc<CallHandler>,
    rx: &mut mpsc::UnboundedReceiver<ParentFrame>,
    op: &str,
    args: Value,
    data: Option<Bytes>,
) -> std::result::Result<Value, ErrorKind> {
    handler.dispatch(7, op.to_owned(), args, data);
    let (id, result, error) = reply(rx).await;
    assert_eq!(id, 7);
    match error {
        Some(e) => Err(e.error_kind()),
        None => Ok(result.unwrap()),
    }
}

/// Bad input from a worker is an error reply with a useful kind, never a parent panic; an upload
/// broken by bad input is aborted; calls after the job ended get no service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_error_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (res, _) = parent_resources(dir.path()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let limit = 64 * 1024 + 16 * 1024; // chunks of at most 48 KiB
    let h = CallHandler::new(
        WorkerServices::new(res.clone()),
        scope("1", KeyScope::WholeStore),
        tx,
        limit,
    );
    let rx = &mut rx;
    assert_eq!(
        raw(&h, rx, "storage.format_disk", json!({})).await,
        Err(ErrorKind::Unsupported)
    );
    assert_eq!(
        raw(&h, rx, op::METADATA, json!({"key": 3})).await,
        Err(ErrorKind::InvalidInput)
    );
    assert_eq!(
        raw(&h, rx, op::METADATA, Value::Null).await,
        Err(ErrorKind::InvalidInput)
    );
    // Bytes on a call that carries none.
    assert_eq!(
        raw_with(
            &h,
            rx,
            op::METADATA,
            json!({"role": "asset", "key": "1/a"}),
            Some(Bytes::from_static(b"x"))
        )
        .await,
        Err(ErrorKind::InvalidInput)
    );
    assert_eq!(
        raw(
            &h,
            rx,
            op::METADATA,
            json!({"role": "asset", "key": "../etc/passwd"})
        )
        .await,
        Err(ErrorKind::InvalidInput)
    );
    assert_eq!(
        raw(&h, rx, op::METADATA, json!({"role": "attic", "key": "a"})).await,
        Err(ErrorKind::InvalidInput)
    );
    assert_eq!(
        raw(
            &h,
            rx,
            op::UPLOAD_CHUNK,
            json!({"upload": 42, "offset": 0, "data": ""})
        )
        .await,
        Err(ErrorKind::NotFound)
    );
    assert_eq!(
        raw(&h, rx, op::DOWNLOAD_NEXT, json!({"download": 42})).await,
        Err(ErrorKind::NotFound)
    );
    assert_eq!(
        raw(&h, rx, op::CACHE_CLEAR, json!({})).await,
        Err(ErrorKind::PermissionDenied)
    );
    assert_eq!(
        raw(
            &h,
            rx,
            op::CACHE_SET,
            json!({"key": "k", "value": "bm90IGEgdmFsdWU=", "ttl_secs": 1})
        )
        .await,
        Err(ErrorKind::InvalidInput),
        "a value that is not a cache envelope"
    );
    assert_eq!(
        raw(
            &h,
            rx,
            op::CACHE_SET,
            json!({"key": "k", "value": "", "ttl_secs": -1})
        )
        .await,
        Err(ErrorKind::InvalidInput)
    );

    // Chunks: not base64, over the limit (as base64 or attached), out of order, data twice,
    // no data. Each aborts its upload.
    let open = |name: &str| json!({"role": "asset", "key": format!("1/{name}")});
    let big = Some(Bytes::from(vec![0u8; 60 * 1024]));
    let hi = Some(Bytes::from_static(b"hi"));
    for (name, chunk, data, want) in [
        (
            "a.bin",
            json!({"offset": 0, "data": "%%%"}),
            None,
            ErrorKind::InvalidInput,
        ),
        (
            "b.bin",
            json!({"offset": 0, "data": nodetool_b64(&vec![0u8; 60 * 1024])}),
            None,
            ErrorKind::TooLarge,
        ),
        (
            "c.bin",
            json!({"offset": 5, "data": "aGk="}),
            None,
            ErrorKind::InvalidInput,
        ),
        ("d.bin", json!({"offset": 0}), big, ErrorKind::TooLarge),
        (
            "e.bin",
            json!({"offset": 0, "data": "aGk="}),
            hi.clone(),
            ErrorKind::InvalidInput,
        ),
        ("f.bin", json!({"offset": 0}), None, ErrorKind::InvalidInput),
        ("g.bin", json!({"offset": 1}), hi, ErrorKind::InvalidInput),
    ] {
        let id = raw(&h, rx, op::UPLOAD_OPEN, open(name)).await.unwrap()["upload"].clone();
        let mut args = chunk;
        args["upload"] = id.clone();
        assert_eq!(
            raw_with(&h, rx, op::UPLOAD_CHUNK, args, data).await,
            Err(want),
            "{name}"
        );
        assert_eq!(
            raw(&h, rx, op::UPLOAD_COMMIT, json!({"upload": id})).await,
            Err(ErrorKind::NotFound),
            "{name}: the session is gone"
        );
    }
    assert!(res
        .asset_storage
        .list(&StoragePrefix::all())
        .await
        .unwrap()
        .is_empty());

    // A good upload still works on the same handler, and commits once.
    let id = raw(&h, rx, op::UPLOAD_OPEN, open("ok.txt")).await.unwrap()["upload"].clone();
    raw(
        &h,
        rx,
        op::UPLOAD_CHUNK,
        json!({"upload": id, "offset": 0, "data": "aGk="}),
    )
    .await
    .unwrap();
    let meta = raw(&h, rx, op::UPLOAD_COMMIT, json!({"upload": id}))
        .await
        .unwrap();
    assert_eq!(meta["size"], json!(2));
    assert_eq!(
        raw(&h, rx, op::UPLOAD_COMMIT, json!({"upload": id})).await,
        Err(ErrorKind::NotFound)
    );

    // After the job: no reply at all (the worker's stdin is closing), and no panic.
    h.finish(Duration::from_secs(30)).await;
    h.dispatch(
        8,
        op::METADATA.into(),
        json!({"role": "asset", "key": "1/ok.txt"}),
        None,
    );
    assert!(rx.recv().await.is_none(), "the reply channel is released");
}

fn nodetool_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The parent files records under the job's user whatever the worker says, and a multi-user
/// scope keeps a job's keys under its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parent_enforces_the_job_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (res, store) = parent_resources(dir.path()).await;
    let pipe = connect(
        WorkerServices::new(res.clone()).with_key_scope(KeyScope::UserPrefix),
        scope("alice", KeyScope::UserPrefix),
        MAX_FRAME_BYTES,
    );
    // Mallory's record, made by someone else.
    let foreign = AssetRecord::new("m1", "mallory", "mallory", "secret.txt", "text/plain");
    store.create(&foreign).await.unwrap();

    // A raw call claiming to be mallory still files the record under alice, with this job.
    let mut record = AssetRecord::new("a1", "mallory", "alice", "note.txt", "text/plain");
    record.storage_key = Some("alice/a1.txt".into());
    record.job_id = Some("another-job".into());
    pipe.client
        .call(
            op::ASSET_CREATE,
            json!({"record": nodetool_workers::calls::WireAsset::from(&record)}),
        )
        .await
        .unwrap();
    let stored = store.get("alice", "a1").await.unwrap().unwrap();
    assert_eq!(stored.user_id, "alice");
    assert_eq!(stored.job_id.as_deref(), Some("job-1"));
    assert!(store.get("mallory", "a1").await.unwrap().is_none());

    // Mallory's record is invisible: get, list, delete.
    let got = pipe
        .client
        .call(op::ASSET_GET, json!({"id": "m1"}))
        .await
        .unwrap();
    assert_eq!(got, Value::Null);
    let page = pipe
        .client
        .call(
            op::ASSET_LIST,
            json!({"query": {"parent_id": "mallory", "limit": 10}}),
        )
        .await
        .unwrap();
    assert_eq!(page["assets"], json!([]));
    let deleted = pipe
        .client
        .call(op::ASSET_DELETE, json!({"id": "m1"}))
        .await
        .unwrap();
    assert_eq!(deleted, json!(false));
    assert!(store.get("mallory", "m1").await.unwrap().is_some());

    // Through the worker's store: the job's records, and nobody else's.
    let records = pipe.worker.asset_store.clone().unwrap();
    let page = records
        .list(&AssetQuery::children("alice", "alice", 10))
        .await
        .unwrap();
    assert_eq!(page.assets.len(), 1);
    assert_eq!(page.assets[0].id, "a1");
    assert!(records.get("mallory", "m1").await.unwrap().is_none());
    let err = records.create(&foreign).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let mut renamed = stored.clone();
    renamed.name = "renamed.txt".into();
    records.update(&renamed).await.unwrap();
    assert_eq!(
        store.get("alice", "a1").await.unwrap().unwrap().name,
        "renamed.txt"
    );
    assert!(records.delete("alice", "a1").await.unwrap());

    // Keys: only under alice/; a record may not point elsewhere.
    let remote = &pipe.worker.asset_storage;
    remote
        .upload_bytes(
            &key("alice/x.txt"),
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    for k in ["mallory/x.txt", "x.txt", "alicex/y"] {
        let err = remote
            .upload_bytes(&key(k), Bytes::from_static(b"x"), PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{k}: {err}");
        assert_eq!(
            remote.metadata(&key(k)).await.unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
    }
    let err = remote.list(&StoragePrefix::all()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // A job's temp objects are its user's (`{user}/jobs/{job}/`, KeyScope::temp_prefix); the
    // shared `jobs/` area is no user's under multi-user auth.
    pipe.worker
        .temp_storage
        .upload_bytes(
            &key("alice/jobs/job-1/t"),
            Bytes::from_static(b"t"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let err = pipe
        .worker
        .temp_storage
        .upload_bytes(
            &key("jobs/job-1/t"),
            Bytes::from_static(b"t"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let mut bad = AssetRecord::new("a2", "alice", "alice", "n", "text/plain");
    bad.storage_key = Some("mallory/x.txt".into());
    assert_eq!(
        records.create(&bad).await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert!(store.get("alice", "a2").await.unwrap().is_none());
}

/// The node cache through calls: set, hit, delete; big values are skipped, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_node_cache_uses_the_parents_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (res, _) = parent_resources(dir.path()).await;
    let pipe = connect(
        WorkerServices::new(res.clone()),
        scope("1", KeyScope::WholeStore),
        MAX_FRAME_BYTES,
    );
    let cache = &pipe.worker.node_cache;
    let value = CacheValue::map([
        ("image", CacheValue::from(vec![0u8, 1, 255])),
        ("n", CacheValue::Int(-3)),
        ("f", CacheValue::Float(0.5)),
    ]);
    assert!(cache.get("k").await.unwrap().is_none());
    cache
        .set("k", value.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(res.node_cache.get("k").await.unwrap(), Some(value.clone()));
    assert_eq!(cache.get("k").await.unwrap(), Some(value));
    res.node_cache
        .set("p", CacheValue::from("from the parent"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        cache.get("p").await.unwrap(),
        Some(CacheValue::from("from the parent"))
    );
    cache.delete("k").await.unwrap();
    assert!(res.node_cache.get("k").await.unwrap().is_none());
    // Over a chunk: not sent (lossy), so the parent has nothing.
    cache
        .set("big", CacheValue::from(vec![7u8; 5 * MIB]), Duration::ZERO)
        .await
        .unwrap();
    assert!(res.node_cache.get("big").await.unwrap().is_none());
    let err = cache.clear().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(res.node_cache.get("p").await.unwrap().is_some());
}

/// A worker whose parent lends nothing fails storage and records clearly and misses the cache.
#[tokio::test]
async fn without_an_offer_calls_fail_clearly() {
    let client = CallClient::offline("the parent lends nothing here");
    let res = remote_resources(&client, None, "1");
    assert!(res.asset_store.is_none());
    let err = res
        .asset_storage
        .upload_bytes(&key("1/a"), Bytes::from_static(b"a"), PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("lends nothing"), "{err}");
    assert!(res.node_cache.get("k").await.unwrap().is_none());
    assert_eq!(Role::Temp.as_str(), "temp");
}
