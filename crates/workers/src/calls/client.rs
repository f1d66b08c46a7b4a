//! The worker's side of calls: [`CallClient`] and the core traits over it ([`RemoteStorage`],
//! [`RemoteNodeCache`], [`RemoteAssetStore`]).
//!
//! Several calls may be in flight at once (the engine runs nodes concurrently): each registers a
//! oneshot under its `call_id`, and the worker's stdin reader completes it with
//! [`CallClient::deliver`] whatever order the replies come in. A call whose future is dropped
//! (its node was cancelled) forgets its id; a reply that comes later is ignored. Upload and
//! download sessions left behind by a dropped future are closed by a guard, and in any case by
//! the parent when the job ends.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

use nodetool_core::{
    AssetPage, AssetQuery, AssetRecord, AssetStore, ByteRange, ByteStream, CacheValue, Download,
    Error, ErrorKind, NodeCache, ObjectMeta, PutOptions, Result, Storage, StorageInfo, StorageKey,
    StoragePrefix,
};
use nodetool_engine::EngineResources;

use super::{
    decode_b64, encode_b64, op, CallError, Role, ServiceOffer, WireAsset, WireMeta, WirePage,
    WireQuery, WireRange, MAX_CHUNK_BYTES,
};
use crate::protocol::ChildFrame;

/// A reply: its JSON result and the bytes attached to it, or the parent's error.
type Answer = std::result::Result<(Value, Option<Bytes>), CallError>;

/// Sends calls to the parent and pairs replies with them. Cheap to clone (shared state).
#[derive(Clone)]
pub struct CallClient {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Bounds the calls in flight to what the parent serves at once.
    permits: Semaphore,
    /// Why every call fails at once, when the parent lends nothing.
    offline: Option<String>,
}

struct State {
    /// To the worker's stdout writer; `None` once closed.
    out: Option<mpsc::UnboundedSender<ChildFrame>>,
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
}

impl fmt::Debug for CallClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("CallClient")
            .field("open", &st.out.is_some())
            .field("in_flight", &st.waiting.len())
            .field("offline", &self.inner.offline)
            .finish()
    }
}

fn gone(op: &'static str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the worker's parent is gone (or the job is over): no more storage, cache or asset calls",
    )
    .with_operation(op)
    .set_temporary(false)
}

impl CallClient {
    /// Calls go out as [`ChildFrame::Call`] on `out`, at most `max_in_flight` at once.
    pub fn new(out: mpsc::UnboundedSender<ChildFrame>, max_in_flight: usize) -> Self {
        Self::build(Some(out), max_in_flight, None)
    }

    /// A client whose every call fails with `Unsupported` and `reason` (the parent lends no
    /// storage, cache or asset records).
    pub fn offline(reason: impl Into<String>) -> Self {
        Self::build(None, 1, Some(reason.into()))
    }

    fn build(
        out: Option<mpsc::UnboundedSender<ChildFrame>>,
        max_in_flight: usize,
        offline: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    out,
                    next_id: 1,
                    waiting: HashMap::new(),
                }),
                permits: Semaphore::new(max_in_flight.clamp(1, 1024)),
                offline,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the parent and returns its result. Waits for a free slot first.
    pub async fn call(&self, op: &'static str, args: Value) -> Result<Value> {
        self.call_with(op, args, None).await.map(|(value, _)| value)
    }

    /// [`CallClient::call`] with bytes attached to the call, returning the reply's attachment
    /// too (see the framing in [`crate::protocol`]).
    pub async fn call_with(
        &self,
        op: &'static str,
        args: Value,
        data: Option<Bytes>,
    ) -> Result<(Value, Option<Bytes>)> {
        if let Some(why) = &self.inner.offline {
            return Err(Error::new(ErrorKind::Unsupported, why.clone()).with_operation(op));
        }
        let _slot = self.inner.permits.acquire().await.map_err(|_| gone(op))?;
        let (id, answer) = {
            let mut st = self.lock();
            let out = st.out.clone().ok_or_else(|| gone(op))?;
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            st.waiting.insert(id, tx);
            let frame = ChildFrame::Call {
                call_id: id,
                op: op.to_owned(),
                args,
                data,
            };
            if out.send(frame).is_err() {
                st.waiting.remove(&id);
                return Err(gone(op));
            }
            (id, rx)
        };
        let _forget = Forget { client: self, id };
        match answer.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.to_error().with_operation(op)),
            Err(_) => Err(gone(op)),
        }
    }

    /// [`CallClient::call`] with the result decoded as `T`.
    pub async fn call_as<T: DeserializeOwned>(&self, op: &'static str, args: Value) -> Result<T> {
        let value = self.call(op, args).await?;
        serde_json::from_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the parent's reply to {op} does not decode: {e}"),
            )
            .with_operation(op)
        })
    }

    /// Runs `op` in the background, ignoring the answer (closing a session from a `Drop`).
    pub fn notify(&self, op: &'static str, args: Value) {
        if self.inner.offline.is_some() || self.lock().out.is_none() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.clone();
        rt.spawn(async move {
            if let Err(e) = client.call(op, args).await {
                tracing::debug!(op, error = %e, "a background call failed");
            }
        });
    }

    /// The parent answered `call_id`. An id nobody waits for (its caller gave up) is ignored.
    pub fn deliver(&self, call_id: u64, answer: Answer) {
        let waiter = self.lock().waiting.remove(&call_id);
        match waiter {
            Some(w) => {
                let _ = w.send(answer);
            }
            None => tracing::debug!(call_id, "a reply nobody waits for"),
        }
    }

    /// The parent is gone or the job is over: waiting calls and later ones fail with
    /// `Unavailable`. Idempotent.
    pub fn close(&self) {
        let mut st = self.lock();
        st.out = None;
        // Dropping the senders wakes the waiters with an error.
        st.waiting.clear();
        drop(st);
        self.inner.permits.close();
    }
}

/// Forgets a call whose caller stopped waiting.
struct Forget<'a> {
    client: &'a CallClient,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.client.lock().waiting.remove(&self.id);
    }
}

/// Closes a parent-side session (with `op`) unless disarmed: an upload abandoned half-way or a
/// download dropped before its end.
struct SessionGuard {
    client: CallClient,
    op: &'static str,
    args: Option<Value>,
}

impl SessionGuard {
    fn new(client: &CallClient, op: &'static str, args: Value) -> Self {
        Self {
            client: client.clone(),
            op,
            args: Some(args),
        }
    }

    fn disarm(&mut self) {
        self.args = None;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(args) = self.args.take() {
            self.client.notify(self.op, args);
        }
    }
}

/// One of the parent's storages (asset or temp), reached through calls. Uploads and downloads
/// stream in chunks of at most the offer's `max_chunk_bytes`.
#[derive(Debug, Clone)]
pub struct RemoteStorage {
    client: CallClient,
    role: Role,
    info: StorageInfo,
    chunk: usize,
    /// Chunks cross as frame attachments (the parent's offer said `binary_chunks`).
    binary: bool,
}

impl RemoteStorage {
    pub fn new(client: CallClient, role: Role, info: StorageInfo, max_chunk_bytes: usize) -> Self {
        Self {
            client,
            role,
            info,
            chunk: max_chunk_bytes.clamp(1024, MAX_CHUNK_BYTES),
            binary: false,
        }
    }

    /// Sends and asks for chunk bytes raw, as frame attachments (a parent whose offer has
    /// `binary_chunks`); base64 inside the JSON otherwise.
    pub fn with_binary_chunks(mut self, on: bool) -> Self {
        self.binary = on;
        self
    }

    fn args(&self, key: &StorageKey) -> Value {
        json!({"role": self.role, "key": key.as_str()})
    }
}

#[derive(Deserialize)]
struct UploadOpened {
    upload: u64,
}

#[derive(Deserialize)]
struct DownloadOpened {
    download: u64,
    meta: WireMeta,
    start: u64,
    end: u64,
}

#[derive(Deserialize)]
struct Chunk {
    offset: u64,
    /// base64, when the chunk was not asked for as an attachment.
    #[serde(default)]
    data: Option<String>,
    done: bool,
}

#[async_trait]
impl Storage for RemoteStorage {
    fn info(&self) -> StorageInfo {
        self.info.clone()
    }

    async fn upload(
        &self,
        key: &StorageKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let opened: UploadOpened = self
            .client
            .call_as(
                op::UPLOAD_OPEN,
                json!({"role": self.role, "key": key.as_str(), "content_type": opts.content_type}),
            )
            .await?;
        let id = opened.upload;
        let mut guard = SessionGuard::new(&self.client, op::UPLOAD_ABORT, json!({"upload": id}));
        let mut offset = 0u64;
        while let Some(item) = body.next().await {
            let mut bytes = match item {
                Ok(b) => b,
                Err(e) => {
                    // The body failed: the parent drops what it has, the old object stays.
                    guard.disarm();
                    if let Err(ae) = self
                        .client
                        .call(op::UPLOAD_ABORT, json!({"upload": id}))
                        .await
                    {
                        tracing::debug!(error = %ae, "aborting an upload failed");
                    }
                    return Err(e);
                }
            };
            while !bytes.is_empty() {
                let piece = bytes.split_to(bytes.len().min(self.chunk));
                let len = piece.len() as u64;
                if self.binary {
                    self.client
                        .call_with(
                            op::UPLOAD_CHUNK,
                            json!({"upload": id, "offset": offset}),
                            Some(piece),
                        )
                        .await?;
                } else {
                    self.client
                        .call(
                            op::UPLOAD_CHUNK,
                            json!({"upload": id, "offset": offset, "data": encode_b64(&piece)}),
                        )
                        .await?;
                }
                offset += len;
            }
        }
        let meta: WireMeta = self
            .client
            .call_as(op::UPLOAD_COMMIT, json!({"upload": id}))
            .await?;
        guard.disarm();
        meta.into_meta()
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        let mut args = self.args(key);
        args["range"] = serde_json::to_value(range.map(WireRange::from)).unwrap_or(Value::Null);
        let opened: DownloadOpened = self.client.call_as(op::DOWNLOAD_OPEN, args).await?;
        let guard = SessionGuard::new(
            &self.client,
            op::DOWNLOAD_CLOSE,
            json!({"download": opened.download}),
        );
        let reading = Reading {
            client: self.client.clone(),
            binary: self.binary,
            id: opened.download,
            offset: opened.start,
            done: false,
            guard,
        };
        Ok(Download {
            meta: opened.meta.into_meta()?,
            range: opened.start..opened.end,
            body: download_stream(reading),
        })
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        let meta: Option<WireMeta> = self.client.call_as(op::METADATA, self.args(key)).await?;
        meta.map(WireMeta::into_meta).transpose()
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.client.call(op::DELETE, self.args(key)).await?;
        Ok(())
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        let metas: Vec<WireMeta> = self
            .client
            .call_as(
                op::LIST,
                json!({"role": self.role, "prefix": prefix.as_str()}),
            )
            .await?;
        metas.into_iter().map(WireMeta::into_meta).collect()
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        self.client.call_as(op::URL, self.args(key)).await
    }

    async fn presigned_url(&self, key: &StorageKey, expires_in: Duration) -> Result<String> {
        let mut args = self.args(key);
        args["expires_secs"] = json!(expires_in.as_secs_f64());
        self.client.call_as(op::PRESIGNED_URL, args).await
    }
}

/// A download in progress: one `download_next` call per chunk.
struct Reading {
    client: CallClient,
    binary: bool,
    id: u64,
    /// Where the next chunk must start (checked, so a reordered reply cannot corrupt data).
    offset: u64,
    done: bool,
    guard: SessionGuard,
}

fn download_stream(reading: Reading) -> ByteStream {
    futures::stream::unfold(Some(reading), |state| async move {
        let mut st = state?;
        if st.done {
            return None;
        }
        loop {
            let answer = st
                .client
                .call_with(
                    op::DOWNLOAD_NEXT,
                    json!({"download": st.id, "binary": st.binary}),
                    None,
                )
                .await
                .and_then(|(value, data)| {
                    let chunk: Chunk = serde_json::from_value(value).map_err(|e| {
                        Error::new(
                            ErrorKind::Unexpected,
                            format!("the parent's download chunk does not decode: {e}"),
                        )
                    })?;
                    Ok((chunk, data))
                });
            let (chunk, attached) = match answer {
                Ok(c) => c,
                Err(e) => return Some((Err(e.with_operation(op::DOWNLOAD_NEXT)), None)),
            };
            if chunk.offset != st.offset {
                let e = Error::new(
                    ErrorKind::Unexpected,
                    format!(
                        "download chunk at offset {} where {} was expected",
                        chunk.offset, st.offset
                    ),
                )
                .with_operation(op::DOWNLOAD_NEXT);
                return Some((Err(e), None));
            }
            let data = match (attached, chunk.data) {
                (Some(bytes), None) => bytes,
                (None, Some(text)) => match decode_b64(&text) {
                    Ok(d) => Bytes::from(d),
                    Err(e) => return Some((Err(e.with_operation(op::DOWNLOAD_NEXT)), None)),
                },
                (None, None) if chunk.done => Bytes::new(),
                _ => {
                    let e = Error::new(
                        ErrorKind::Unexpected,
                        "a download chunk without data, or with data twice",
                    )
                    .with_operation(op::DOWNLOAD_NEXT);
                    return Some((Err(e), None));
                }
            };
            st.offset += data.len() as u64;
            if chunk.done {
                // The parent closed the session itself.
                st.guard.disarm();
                st.done = true;
            }
            if !data.is_empty() {
                return Some((Ok(data), Some(st)));
            }
            if st.done {
                return None;
            }
        }
    })
    .boxed()
}

/// The parent's node cache, reached through calls. Lossy like every cache: a failed call is a
/// miss or a skipped write (logged), never an error, except `clear`, which the parent refuses.
#[derive(Debug, Clone)]
pub struct RemoteNodeCache {
    client: CallClient,
    name: &'static str,
    /// Encoded values above this are neither sent nor fetched.
    max_value_bytes: usize,
}

impl RemoteNodeCache {
    /// `backend` is the parent's cache name (for logs).
    pub fn new(client: CallClient, backend: &str, max_value_bytes: usize) -> Self {
        let name = match backend {
            "memory" => "memory",
            "memcached" => "memcached",
            _ => "remote",
        };
        Self {
            client,
            name,
            max_value_bytes,
        }
    }
}

fn cache_miss(op: &str, e: &Error) {
    if e.kind() == ErrorKind::Unsupported {
        tracing::debug!(op, error = %e, "node cache unavailable in this worker");
    } else {
        tracing::warn!(op, error = %e, "node cache call failed; treated as a miss");
    }
}

#[derive(Deserialize)]
struct Cached {
    value: String,
}

#[async_trait]
impl NodeCache for RemoteNodeCache {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn get(&self, key: &str) -> Result<Option<CacheValue>> {
        let cached: Option<Cached> = match self
            .client
            .call_as(op::CACHE_GET, json!({"key": key}))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                cache_miss(op::CACHE_GET, &e);
                return Ok(None);
            }
        };
        let Some(cached) = cached else {
            return Ok(None);
        };
        let decoded =
            decode_b64(&cached.value).and_then(|b| nodetool_cache::codec::decode_envelope(&b));
        match decoded {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                cache_miss(op::CACHE_GET, &e);
                Ok(None)
            }
        }
    }

    async fn set(&self, key: &str, value: CacheValue, ttl: Duration) -> Result<()> {
        let encoded = nodetool_cache::codec::encode_envelope(&value);
        if encoded.len() > self.max_value_bytes {
            tracing::debug!(
                bytes = encoded.len(),
                "node output too large to cache from a worker; skipped"
            );
            return Ok(());
        }
        let args =
            json!({"key": key, "value": encode_b64(&encoded), "ttl_secs": ttl.as_secs_f64()});
        if let Err(e) = self.client.call(op::CACHE_SET, args).await {
            cache_miss(op::CACHE_SET, &e);
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if let Err(e) = self
            .client
            .call(op::CACHE_DELETE, json!({"key": key}))
            .await
        {
            cache_miss(op::CACHE_DELETE, &e);
        }
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        self.client.call(op::CACHE_CLEAR, json!({})).await?;
        Ok(())
    }
}

/// The parent's asset records, reached through calls, for the job's user only: the parent files
/// everything under the job's owner, and this store treats any other user as having no records
/// (the `AssetStore` rule for another user's records).
#[derive(Debug, Clone)]
pub struct RemoteAssetStore {
    client: CallClient,
    owner: String,
}

impl RemoteAssetStore {
    /// `owner` is the job's user as the engine names it (`anonymous` for a job without one).
    pub fn new(client: CallClient, owner: impl Into<String>) -> Self {
        Self {
            client,
            owner: owner.into(),
        }
    }

    fn foreign(&self, op: &'static str, user_id: &str) -> Error {
        Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "a worker handles asset records of its job's user only ({:?}, not {user_id:?})",
                self.owner
            ),
        )
        .with_operation(op)
    }
}

#[async_trait]
impl AssetStore for RemoteAssetStore {
    async fn create(&self, record: &AssetRecord) -> Result<()> {
        if record.user_id != self.owner {
            return Err(self.foreign(op::ASSET_CREATE, &record.user_id));
        }
        self.client
            .call(op::ASSET_CREATE, json!({"record": WireAsset::from(record)}))
            .await?;
        Ok(())
    }

    async fn get(&self, user_id: &str, id: &str) -> Result<Option<AssetRecord>> {
        if user_id != self.owner {
            return Ok(None);
        }
        let record: Option<WireAsset> = self
            .client
            .call_as(op::ASSET_GET, json!({"id": id}))
            .await?;
        Ok(record.map(AssetRecord::from))
    }

    async fn list(&self, query: &AssetQuery) -> Result<AssetPage> {
        if query.user_id != self.owner {
            return Ok(AssetPage::default());
        }
        let page: WirePage = self
            .client
            .call_as(op::ASSET_LIST, json!({"query": WireQuery::from(query)}))
            .await?;
        Ok(page.into())
    }

    async fn update(&self, record: &AssetRecord) -> Result<()> {
        if record.user_id != self.owner {
            return Err(
                Error::not_found(format!("no asset {} for this user", record.id))
                    .with_operation(op::ASSET_UPDATE),
            );
        }
        self.client
            .call(op::ASSET_UPDATE, json!({"record": WireAsset::from(record)}))
            .await?;
        Ok(())
    }

    async fn delete(&self, user_id: &str, id: &str) -> Result<bool> {
        if user_id != self.owner {
            return Ok(false);
        }
        self.client
            .call_as(op::ASSET_DELETE, json!({"id": id}))
            .await
    }
}

/// TTL for node outputs when the parent names none.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// A worker's engine resources: the parent's storages, node cache and (if it has them) asset
/// records, all through `client`. Without an `offer` (a parent that lends nothing) every
/// storage and record call fails with `Unsupported` and the cache always misses.
pub fn remote_resources(
    client: &CallClient,
    offer: Option<&ServiceOffer>,
    owner: &str,
) -> EngineResources {
    let Some(offer) = offer else {
        let info = StorageInfo {
            scheme: "remote",
            location: "none: the parent lends no storage".to_owned(),
            capabilities: Default::default(),
        };
        let storage = |role| {
            Arc::new(RemoteStorage::new(
                client.clone(),
                role,
                info.clone(),
                MAX_CHUNK_BYTES,
            )) as Arc<dyn Storage>
        };
        return EngineResources {
            asset_storage: storage(Role::Asset),
            temp_storage: storage(Role::Temp),
            asset_store: None,
            node_cache: Arc::new(RemoteNodeCache::new(
                client.clone(),
                "remote",
                MAX_CHUNK_BYTES,
            )),
            node_cache_ttl: DEFAULT_CACHE_TTL,
            // No settings reach a worker: default media limits, no HTTP, no file roots.
            media: Default::default(),
            extensions: Default::default(),
        };
    };
    let chunk = offer.max_chunk_bytes.clamp(1024, MAX_CHUNK_BYTES);
    let storage = |role, descr: &super::StorageDescription| {
        Arc::new(
            RemoteStorage::new(client.clone(), role, descr.to_info(), chunk)
                .with_binary_chunks(offer.binary_chunks),
        ) as Arc<dyn Storage>
    };
    EngineResources {
        asset_storage: storage(Role::Asset, &offer.asset_storage),
        temp_storage: storage(Role::Temp, &offer.temp_storage),
        asset_store: offer
            .asset_records
            .then(|| Arc::new(RemoteAssetStore::new(client.clone(), owner)) as Arc<dyn AssetStore>),
        node_cache: Arc::new(RemoteNodeCache::new(
            client.clone(),
            &offer.node_cache,
            chunk,
        )),
        node_cache_ttl: Duration::try_from_secs_f64(offer.node_cache_ttl_secs)
            .unwrap_or(DEFAULT_CACHE_TTL),
        // No settings reach a worker: default media limits, no HTTP, no file roots; the
        // parent's key scope, so keys are laid out as the parent checks them.
        media: nodetool_engine::MediaServices {
            policy: nodetool_engine::MediaPolicy {
                key_scope: offer.key_scope,
                ..Default::default()
            },
            http: None,
        },
        // Workers hold no credentials: AI nodes refuse here before the job starts.
        extensions: Default::default(),
    }
}
