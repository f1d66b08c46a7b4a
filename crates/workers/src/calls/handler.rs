//! The parent's side of calls: [`CallHandler`] serves one job's calls with the parent's
//! [`WorkerServices`], inside the job's [`CallScope`].
//!
//! The strategy's read loop hands every [`ChildFrame::Call`](crate::protocol::ChildFrame::Call)
//! to [`CallHandler::dispatch`], which never waits: each call runs on its own task (at most
//! [`MAX_CALLS_IN_FLIGHT`] at once; one more is answered `rate limited` at once), so events keep
//! flowing while a slow call runs. Bad input — malformed arguments, an unknown op, a chunk over
//! the limit or out of order, an unknown session — is an error reply, never a panic (a panic
//! inside an operation also becomes an error reply). When the job ends, [`CallHandler::finish`]
//! refuses further calls and aborts every upload the worker left open, so a worker that died
//! mid-upload leaves no object behind.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use nodetool_core::{
    AssetRecord, AssetStore, ByteStream, Error, ErrorKind, ObjectMeta, PutOptions, Result, Storage,
    StorageKey, StoragePrefix,
};
use nodetool_engine::EngineResources;

use super::{
    decode_b64, encode_b64, op, CallError, CallScope, KeyScope, Role, ServiceOffer,
    StorageDescription, WireAsset, WireMeta, WirePage, WireQuery, WireRange, MAX_CALLS_IN_FLIGHT,
    MAX_CHUNK_BYTES, MAX_OPEN_TRANSFERS,
};
use crate::protocol::{ParentFrame, MAX_FRAME_BYTES};

/// What a parent lends its workers: its storages, node cache and asset records (the same
/// `EngineResources` its threaded jobs use) and the rule for storage keys.
#[derive(Debug, Clone)]
pub struct WorkerServices {
    pub resources: EngineResources,
    pub keys: KeyScope,
}

impl WorkerServices {
    /// `resources` with their own key scope (`resources.media.policy.key_scope`, the one the
    /// process's threaded jobs and HTTP routes apply).
    pub fn new(resources: EngineResources) -> Self {
        Self {
            keys: resources.media.policy.key_scope,
            resources,
        }
    }

    /// The same services with `keys` as the key scope (of the workers and of the lent
    /// resources alike).
    pub fn with_key_scope(mut self, keys: KeyScope) -> Self {
        self.keys = keys;
        self.resources.media.policy.key_scope = keys;
        self
    }

    /// The offer for a worker whose frames the parent reads with `max_frame_bytes`.
    pub fn offer(&self, max_frame_bytes: usize) -> ServiceOffer {
        let r = &self.resources;
        ServiceOffer {
            asset_storage: StorageDescription::from_info(&r.asset_storage.info()),
            temp_storage: StorageDescription::from_info(&r.temp_storage.info()),
            node_cache: r.node_cache.name().to_owned(),
            node_cache_ttl_secs: r.node_cache_ttl.as_secs_f64(),
            asset_records: r.asset_store.is_some(),
            max_chunk_bytes: chunk_limit(max_frame_bytes),
            max_calls_in_flight: MAX_CALLS_IN_FLIGHT,
            binary_chunks: true,
            key_scope: self.keys,
        }
    }
}

/// The largest chunk whose call frame (base64, plus the JSON around it) fits `max_frame_bytes`.
pub fn chunk_limit(max_frame_bytes: usize) -> usize {
    let usable = max_frame_bytes
        .min(MAX_FRAME_BYTES)
        .saturating_sub(16 * 1024);
    (usable / 4 * 3).clamp(1024, MAX_CHUNK_BYTES)
}

/// Serves one job's calls. Create it when the job starts, [`CallHandler::finish`] it when the
/// worker is done.
pub struct CallHandler {
    services: WorkerServices,
    scope: CallScope,
    chunk_limit: usize,
    /// To the worker's stdin writer; `None` once the job is over.
    replies: Mutex<Option<mpsc::UnboundedSender<ParentFrame>>>,
    permits: Arc<Semaphore>,
    transfers: Mutex<Transfers>,
    tasks: TaskTracker,
}

impl fmt::Debug for CallHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallHandler")
            .field("scope", &self.scope)
            .field(
                "in_flight",
                &(MAX_CALLS_IN_FLIGHT - self.permits.available_permits()),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Transfers {
    next_id: u64,
    closed: bool,
    uploads: HashMap<u64, Arc<Upload>>,
    downloads: HashMap<u64, Arc<tokio::sync::Mutex<Reading>>>,
}

impl Transfers {
    fn open(&self) -> usize {
        self.uploads.len() + self.downloads.len()
    }
}

/// An upload session: chunks go into a channel that the parent's `Storage::upload` reads as its
/// body.
struct Upload {
    abort: CancellationToken,
    writer: tokio::sync::Mutex<Writer>,
    task: Mutex<Option<JoinHandle<Result<ObjectMeta>>>>,
}

struct Writer {
    /// `None` once committed.
    tx: Option<mpsc::Sender<UploadMsg>>,
    /// Bytes accepted so far: the offset the next chunk must carry.
    offset: u64,
}

enum UploadMsg {
    Chunk(Bytes),
    /// The worker committed: the body ends cleanly.
    End,
}

/// A download session: one backend stream, read a chunk per call.
struct Reading {
    body: ByteStream,
    /// Read from the backend but not sent yet.
    pending: Bytes,
    /// Offset (in the object) of the next byte to send.
    offset: u64,
    done: bool,
}

fn aborted() -> Error {
    Error::new(
        ErrorKind::Cancelled,
        "the worker abandoned the upload (aborted, died, or its job ended first)",
    )
    .with_operation("worker.upload")
}

/// The body of an upload: the worker's chunks until it commits. Aborting, or every sender going
/// away without a commit, ends the body with an error, so the storage keeps the previous object.
fn upload_body(rx: mpsc::Receiver<UploadMsg>, abort: CancellationToken) -> ByteStream {
    futures::stream::unfold(Some((rx, abort)), |state| async move {
        let (mut rx, abort) = state?;
        let next = tokio::select! {
            biased;
            _ = abort.cancelled() => None,
            msg = rx.recv() => msg,
        };
        match next {
            Some(UploadMsg::Chunk(bytes)) => Some((Ok(bytes), Some((rx, abort)))),
            Some(UploadMsg::End) => None,
            None => Some((Err(aborted()), None)),
        }
    })
    .boxed()
}

fn malformed(op: &str, e: impl fmt::Display) -> Error {
    Error::invalid_input(format!("malformed arguments for {op}: {e}"))
}

fn args<T: DeserializeOwned>(op: &str, args: Value) -> Result<T> {
    serde_json::from_value(args).map_err(|e| malformed(op, e))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v)
        .map_err(|e| Error::unexpected("cannot encode a call result").with_source(e))
}

#[derive(Deserialize)]
struct KeyArgs {
    role: Role,
    key: String,
}

#[derive(Deserialize)]
struct OpenUpload {
    role: Role,
    key: String,
    #[serde(default)]
    content_type: Option<String>,
}

#[derive(Deserialize)]
struct UploadChunk {
    upload: u64,
    offset: u64,
    /// base64, from workers that send no attachment.
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct UploadId {
    upload: u64,
}

#[derive(Deserialize)]
struct OpenDownload {
    role: Role,
    key: String,
    #[serde(default)]
    range: Option<WireRange>,
}

#[derive(Deserialize)]
struct DownloadId {
    download: u64,
}

#[derive(Deserialize)]
struct DownloadNext {
    download: u64,
    /// Reply with the chunk as the frame's attachment instead of base64.
    #[serde(default)]
    binary: bool,
}

#[derive(Deserialize)]
struct ListArgs {
    role: Role,
    prefix: String,
}

#[derive(Deserialize)]
struct PresignArgs {
    role: Role,
    key: String,
    expires_secs: f64,
}

#[derive(Deserialize)]
struct CacheKey {
    key: String,
}

#[derive(Deserialize)]
struct CacheSet {
    key: String,
    value: String,
    ttl_secs: f64,
}

#[derive(Deserialize)]
struct RecordArgs {
    record: WireAsset,
}

#[derive(Deserialize)]
struct IdArgs {
    id: String,
}

#[derive(Deserialize)]
struct QueryArgs {
    query: WireQuery,
}

impl CallHandler {
    /// A handler for the job `scope`, answering on `replies` (the worker's stdin writer) with
    /// chunks sized for a peer that reads frames of `max_frame_bytes`.
    pub fn new(
        services: WorkerServices,
        scope: CallScope,
        replies: mpsc::UnboundedSender<ParentFrame>,
        max_frame_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            services,
            scope,
            chunk_limit: chunk_limit(max_frame_bytes),
            replies: Mutex::new(Some(replies)),
            permits: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
            transfers: Mutex::new(Transfers {
                next_id: 1,
                ..Transfers::default()
            }),
            tasks: TaskTracker::new(),
        })
    }

    pub fn scope(&self) -> &CallScope {
        &self.scope
    }

    fn transfers(&self) -> std::sync::MutexGuard<'_, Transfers> {
        self.transfers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one call on its own task and replies with the same `call_id`. Returns at once.
    pub fn dispatch(self: &Arc<Self>, call_id: u64, op: String, args: Value, data: Option<Bytes>) {
        if self.transfers().closed {
            tracing::warn!(call_id, op = %op, "refused a worker call after its job ended");
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.reply(
                call_id,
                Err(CallError::new(
                    ErrorKind::RateLimited,
                    format!("more than {MAX_CALLS_IN_FLIGHT} calls in flight; wait for replies"),
                )),
            );
            return;
        };
        let this = self.clone();
        self.tasks.spawn(async move {
            let served = AssertUnwindSafe(this.serve(&op, args, data))
                .catch_unwind()
                .await;
            let answer = match served {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => {
                    tracing::debug!(call_id, op = %op, error = %e, "worker call failed");
                    Err(CallError::from_error(&e))
                }
                Err(_) => {
                    tracing::error!(call_id, op = %op, "a worker call panicked");
                    Err(CallError::new(
                        ErrorKind::Unexpected,
                        format!("the parent failed while serving {op}"),
                    ))
                }
            };
            drop(permit);
            this.reply(call_id, answer);
        });
    }

    fn reply(&self, call_id: u64, answer: std::result::Result<(Value, Option<Bytes>), CallError>) {
        let frame = match answer {
            Ok((value, data)) => ParentFrame::Reply {
                call_id,
                result: Some(value),
                error: None,
                data,
            },
            Err(error) => ParentFrame::Reply {
                call_id,
                result: None,
                error: Some(error),
                data: None,
            },
        };
        let replies = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        match replies.as_ref() {
            // A closed writer means the worker is gone; the read side sees it.
            Some(tx) => {
                let _ = tx.send(frame);
            }
            None => tracing::debug!(call_id, "reply dropped: the job is over"),
        }
    }

    /// The job is over: later calls are refused, the reply channel is released (so the stdin
    /// writer can close), and every open upload is aborted. Idempotent; returns at once.
    pub fn close(&self) {
        let uploads: Vec<Arc<Upload>> = {
            let mut t = self.transfers();
            t.closed = true;
            t.downloads.clear();
            t.uploads.drain().map(|(_, u)| u).collect()
        };
        for upload in uploads {
            upload.abort.cancel();
        }
        *self.replies.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.tasks.close();
    }

    /// [`CallHandler::close`], then waits (at most `limit`) for calls in flight and aborted
    /// uploads to settle, so nothing the worker started outlives its job.
    pub async fn finish(&self, limit: Duration) {
        self.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                job_id = %self.scope.job_id,
                "worker calls still running {limit:?} after the job ended"
            );
        }
    }

    fn storage(&self, role: Role) -> &Arc<dyn Storage> {
        match role {
            Role::Asset => &self.services.resources.asset_storage,
            Role::Temp => &self.services.resources.temp_storage,
        }
    }

    fn key(&self, role: Role, key: String) -> Result<StorageKey> {
        let key = StorageKey::new(key)?;
        self.scope.check_key(role, &key)?;
        Ok(key)
    }

    fn records(&self) -> Result<&Arc<dyn AssetStore>> {
        self.services.resources.asset_store.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "this runtime keeps no asset records (it has no asset database)",
            )
        })
    }

    /// A reply of unbounded size (a listing) must fit the worker's frame limit.
    fn bounded(&self, value: Value, what: &str) -> Result<Value> {
        let len = serde_json::to_vec(&value)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if len > MAX_FRAME_BYTES - 1024 {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("{what} is {len} bytes, over a worker frame; narrow it"),
            ));
        }
        Ok(value)
    }

    async fn serve(
        &self,
        op: &str,
        a: Value,
        data: Option<Bytes>,
    ) -> Result<(Value, Option<Bytes>)> {
        match op {
            op::UPLOAD_CHUNK => self
                .upload_chunk(args(op, a)?, data)
                .await
                .map(|v| (v, None)),
            op::DOWNLOAD_NEXT => self.download_next(args(op, a)?).await,
            _ if data.is_some() => Err(Error::invalid_input(format!(
                "{op} carries no bytes, but the call has an attachment"
            ))),
            _ => self.serve_json(op, a).await.map(|v| (v, None)),
        }
    }

    async fn serve_json(&self, op: &str, a: Value) -> Result<Value> {
        match op {
            op::UPLOAD_OPEN => self.upload_open(args(op, a)?),
            op::UPLOAD_COMMIT => {
                let UploadId { upload } = args(op, a)?;
                let meta = self.commit(upload).await?;
                to_value(&WireMeta::from(&meta))
            }
            op::UPLOAD_ABORT => {
                let UploadId { upload } = args(op, a)?;
                self.abort(upload).await?;
                Ok(Value::Null)
            }
            op::DOWNLOAD_OPEN => self.download_open(args(op, a)?).await,
            op::DOWNLOAD_CLOSE => {
                let DownloadId { download } = args(op, a)?;
                self.transfers().downloads.remove(&download);
                Ok(Value::Null)
            }
            op::METADATA => {
                let KeyArgs { role, key } = args(op, a)?;
                let meta = self.storage(role).metadata(&self.key(role, key)?).await?;
                to_value(&meta.as_ref().map(WireMeta::from))
            }
            op::DELETE => {
                let KeyArgs { role, key } = args(op, a)?;
                self.storage(role).delete(&self.key(role, key)?).await?;
                Ok(Value::Null)
            }
            op::LIST => {
                let ListArgs { role, prefix } = args(op, a)?;
                let prefix = StoragePrefix::new(prefix)?;
                self.scope.check_prefix(role, prefix.as_str())?;
                let metas = self.storage(role).list(&prefix).await?;
                let wire: Vec<WireMeta> = metas.iter().map(WireMeta::from).collect();
                self.bounded(to_value(&wire)?, "the listing")
            }
            op::URL => {
                let KeyArgs { role, key } = args(op, a)?;
                let url = self.storage(role).url(&self.key(role, key)?).await?;
                Ok(Value::String(url))
            }
            op::PRESIGNED_URL => {
                let PresignArgs {
                    role,
                    key,
                    expires_secs,
                } = args(op, a)?;
                let expires = Duration::try_from_secs_f64(expires_secs)
                    .map_err(|e| malformed(op, format!("expires_secs: {e}")))?;
                let url = self
                    .storage(role)
                    .presigned_url(&self.key(role, key)?, expires)
                    .await?;
                Ok(Value::String(url))
            }
            op::CACHE_GET => self.cache_get(args(op, a)?).await,
            op::CACHE_SET => {
                let CacheSet {
                    key,
                    value,
                    ttl_secs,
                } = args(op, a)?;
                let ttl = Duration::try_from_secs_f64(ttl_secs)
                    .map_err(|e| malformed(op, format!("ttl_secs: {e}")))?;
                let value = nodetool_cache::codec::decode_envelope(&decode_b64(&value)?)?;
                self.services
                    .resources
                    .node_cache
                    .set(&key, value, ttl)
                    .await?;
                Ok(Value::Null)
            }
            op::CACHE_DELETE => {
                let CacheKey { key } = args(op, a)?;
                self.services.resources.node_cache.delete(&key).await?;
                Ok(Value::Null)
            }
            op::CACHE_CLEAR => Err(Error::new(
                ErrorKind::PermissionDenied,
                "a worker may not clear the node cache: every job and user shares it",
            )),
            op::ASSET_CREATE => {
                let RecordArgs { record } = args(op, a)?;
                let mut record = AssetRecord::from(record);
                record.user_id = self.scope.user_id.to_string();
                record.job_id = Some(self.scope.job_id.to_string());
                if let Some(key) = &record.storage_key {
                    self.key(Role::Asset, key.clone())?;
                }
                self.records()?.create(&record).await?;
                Ok(Value::Null)
            }
            op::ASSET_GET => {
                let IdArgs { id } = args(op, a)?;
                let record = self
                    .records()?
                    .get(self.scope.user_id.as_str(), &id)
                    .await?;
                to_value(&record.as_ref().map(WireAsset::from))
            }
            op::ASSET_LIST => {
                let QueryArgs { query } = args(op, a)?;
                let page = self
                    .records()?
                    .list(&query.for_user(self.scope.user_id.as_str()))
                    .await?;
                self.bounded(to_value(&WirePage::from(&page))?, "the asset page")
            }
            op::ASSET_UPDATE => {
                let RecordArgs { record } = args(op, a)?;
                let mut record = AssetRecord::from(record);
                record.user_id = self.scope.user_id.to_string();
                self.records()?.update(&record).await?;
                Ok(Value::Null)
            }
            op::ASSET_DELETE => {
                let IdArgs { id } = args(op, a)?;
                let existed = self
                    .records()?
                    .delete(self.scope.user_id.as_str(), &id)
                    .await?;
                Ok(Value::Bool(existed))
            }
            other => Err(Error::new(
                ErrorKind::Unsupported,
                format!("unknown worker call {other:?}"),
            )),
        }
    }

    fn upload_open(&self, a: OpenUpload) -> Result<Value> {
        let key = self.key(a.role, a.key)?;
        let storage = self.storage(a.role).clone();
        let (tx, rx) = mpsc::channel(1);
        let abort = CancellationToken::new();
        let body = upload_body(rx, abort.clone());
        let opts = PutOptions {
            content_type: a.content_type,
        };
        let mut t = self.transfers();
        if t.closed {
            return Err(Error::new(ErrorKind::Unavailable, "the job is over").set_temporary(false));
        }
        if t.open() >= MAX_OPEN_TRANSFERS {
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!("more than {MAX_OPEN_TRANSFERS} uploads and downloads open at once"),
            ));
        }
        let id = t.next_id;
        t.next_id += 1;
        // Spawned under the lock, so `close` either sees this session or refuses it.
        let task = self
            .tasks
            .spawn(async move { storage.upload(&key, body, opts).await });
        t.uploads.insert(
            id,
            Arc::new(Upload {
                abort,
                writer: tokio::sync::Mutex::new(Writer {
                    tx: Some(tx),
                    offset: 0,
                }),
                task: Mutex::new(Some(task)),
            }),
        );
        Ok(json!({"upload": id}))
    }

    fn session(&self, id: u64) -> Result<Arc<Upload>> {
        self.transfers()
            .uploads
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no open upload {id}")))
    }

    async fn upload_chunk(&self, a: UploadChunk, attached: Option<Bytes>) -> Result<Value> {
        let upload = self.session(a.upload)?;
        let data = match (attached, a.data) {
            (Some(bytes), None) => Ok(bytes),
            (None, Some(text)) => decode_b64(&text).map(Bytes::from),
            (Some(_), Some(_)) => Err(Error::invalid_input(
                "an upload chunk has both base64 data and an attachment",
            )),
            (None, None) => Err(Error::invalid_input("an upload chunk without data")),
        };
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                let _ = self.abort(a.upload).await;
                return Err(e);
            }
        };
        if data.len() > self.chunk_limit {
            let _ = self.abort(a.upload).await;
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "upload chunk of {} bytes is over the limit of {} bytes; the upload is aborted",
                    data.len(),
                    self.chunk_limit
                ),
            ));
        }
        let mut w = upload.writer.lock().await;
        if a.offset != w.offset {
            let expected = w.offset;
            drop(w);
            let _ = self.abort(a.upload).await;
            return Err(Error::invalid_input(format!(
                "upload chunk at offset {} where {expected} was expected; the upload is aborted",
                a.offset
            )));
        }
        let Some(tx) = w.tx.clone() else {
            return Err(Error::invalid_input("the upload is already committed"));
        };
        let len = data.len() as u64;
        if tx.send(UploadMsg::Chunk(data)).await.is_err() {
            // The storage stopped reading: it failed, and its result says why.
            drop(w);
            return Err(match self.commit_task(a.upload).await {
                Err(e) => e,
                Ok(_) => Error::unexpected("the upload ended before its last chunk"),
            });
        }
        w.offset += len;
        Ok(Value::Null)
    }

    /// Removes session `id` and waits for its storage task.
    async fn commit_task(&self, id: u64) -> Result<ObjectMeta> {
        let upload = self
            .transfers()
            .uploads
            .remove(&id)
            .ok_or_else(|| Error::not_found(format!("no open upload {id}")))?;
        join(&upload).await
    }

    async fn commit(&self, id: u64) -> Result<ObjectMeta> {
        // Out of the table first: nothing else may touch a session being committed.
        let upload = self
            .transfers()
            .uploads
            .remove(&id)
            .ok_or_else(|| Error::not_found(format!("no open upload {id}")))?;
        {
            let mut w = upload.writer.lock().await;
            if let Some(tx) = w.tx.take() {
                // A send error means the storage already failed; `join` reports how.
                let _ = tx.send(UploadMsg::End).await;
            }
        }
        join(&upload).await
    }

    async fn abort(&self, id: u64) -> Result<()> {
        let upload = self
            .transfers()
            .uploads
            .remove(&id)
            .ok_or_else(|| Error::not_found(format!("no open upload {id}")))?;
        upload.abort.cancel();
        // The storage ends with our error and keeps the previous object; that is the point.
        let _ = join(&upload).await;
        Ok(())
    }

    async fn download_open(&self, a: OpenDownload) -> Result<Value> {
        let key = self.key(a.role, a.key)?;
        if self.transfers().open() >= MAX_OPEN_TRANSFERS {
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!("more than {MAX_OPEN_TRANSFERS} uploads and downloads open at once"),
            ));
        }
        let download = self
            .storage(a.role)
            .download(&key, a.range.map(Into::into))
            .await?;
        let reply = json!({
            "meta": to_value(&WireMeta::from(&download.meta))?,
            "start": download.range.start,
            "end": download.range.end,
        });
        let reading = Reading {
            body: download.body,
            pending: Bytes::new(),
            offset: download.range.start,
            done: false,
        };
        let mut t = self.transfers();
        if t.closed {
            return Err(Error::new(ErrorKind::Unavailable, "the job is over").set_temporary(false));
        }
        let id = t.next_id;
        t.next_id += 1;
        t.downloads
            .insert(id, Arc::new(tokio::sync::Mutex::new(reading)));
        let mut reply = reply;
        reply["download"] = json!(id);
        Ok(reply)
    }

    async fn download_next(&self, a: DownloadNext) -> Result<(Value, Option<Bytes>)> {
        let reading = self
            .transfers()
            .downloads
            .get(&a.download)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no open download {}", a.download)))?;
        let mut r = reading.lock().await;
        let limit = self.chunk_limit;
        let mut buf = BytesMut::new();
        loop {
            if !r.pending.is_empty() {
                let take = r.pending.len().min(limit - buf.len());
                let piece = r.pending.split_to(take);
                buf.extend_from_slice(&piece);
            }
            if buf.len() >= limit || r.done {
                break;
            }
            match r.body.next().await {
                Some(Ok(bytes)) => r.pending = bytes,
                Some(Err(e)) => {
                    self.transfers().downloads.remove(&a.download);
                    return Err(e);
                }
                None => r.done = true,
            }
        }
        let offset = r.offset;
        r.offset += buf.len() as u64;
        let done = r.done && r.pending.is_empty();
        if done {
            self.transfers().downloads.remove(&a.download);
        }
        Ok(if a.binary {
            (json!({"offset": offset, "done": done}), Some(buf.freeze()))
        } else {
            (
                json!({"offset": offset, "done": done, "data": encode_b64(&buf)}),
                None,
            )
        })
    }

    async fn cache_get(&self, a: CacheKey) -> Result<Value> {
        let value = match self.services.resources.node_cache.get(&a.key).await {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(Value::Null),
            Err(e) => {
                // The cache contract: an error is a miss.
                tracing::warn!(error = %e, "node cache lookup for a worker failed; a miss");
                return Ok(Value::Null);
            }
        };
        let encoded = nodetool_cache::codec::encode_envelope(&value);
        if encoded.len() > self.chunk_limit {
            tracing::debug!(
                bytes = encoded.len(),
                "cached value too large for a worker frame; a miss"
            );
            return Ok(Value::Null);
        }
        Ok(json!({"value": encode_b64(&encoded)}))
    }
}

/// The result of an upload's storage task.
async fn join(upload: &Upload) -> Result<ObjectMeta> {
    let task = upload.task.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(task) = task else {
        return Err(Error::unexpected("the upload was already finished"));
    };
    match task.await {
        Ok(result) => result,
        Err(e) => Err(Error::unexpected("the upload task failed").with_source(e)),
    }
}
