//! [`ProcessingContext`]: what a node may use while it runs — job identity, cancellation,
//! progress/log events, asset and temp storage, asset records, the node cache and secrets.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use nodetool_core::{
    AssetPage, AssetQuery, AssetRecord, AssetStore, ByteStream, Error, ErrorKind, NodeCache,
    PutOptions, Result, ScopedStorage, Storage, StorageKey,
};

use crate::control::ControlPlane;
use crate::events::{
    Event, EventPoster, LogUpdate, NodeProgress, Notification, OutputUpdate, PreviewUpdate,
    Severity,
};
use crate::media::{self, HttpFetch, MediaPolicy, MediaServices, UriKind};

/// The storage, record and cache handles a job uses. The engine names no backend: whoever
/// builds the engine (the CLI, the server, a worker) picks them.
#[derive(Debug, Clone)]
pub struct EngineResources {
    pub asset_storage: Arc<dyn Storage>,
    pub temp_storage: Arc<dyn Storage>,
    /// Asset records (the rows `/api/assets` lists). `None` in processes without an asset
    /// database (a subprocess or Docker worker uses its parent's through calls, and has none
    /// when the parent has none). Without it, [`ProcessingContext::create_asset`] and the asset
    /// listing fail with `Unsupported` and say why; they never write a blob without its record.
    pub asset_store: Option<Arc<dyn AssetStore>>,
    pub node_cache: Arc<dyn NodeCache>,
    /// TTL for cached node outputs.
    pub node_cache_ttl: Duration,
    /// Media-ref policy (size caps, file roots) and the HTTP fetcher, if any.
    pub media: MediaServices,
    /// Typed services a node library needs and the engine does not name (e.g. AI provider
    /// clients); empty in processes that lend none.
    pub extensions: Extensions,
}

/// A map from type to one shared value of it: how a host hands node libraries their services
/// (`ProcessingContext::extension::<T>()`) without the engine depending on their crates.
#[derive(Clone, Default)]
pub struct Extensions {
    values: BTreeMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl Extensions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the value of type `T`.
    pub fn with<T: Any + Send + Sync>(mut self, value: Arc<T>) -> Self {
        self.insert(value);
        self
    }

    pub fn insert<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        self.values
            .insert(TypeId::of::<T>(), (std::any::type_name::<T>(), value));
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(_, v)| v.clone().downcast::<T>().ok())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.values.values().map(|(name, _)| name))
            .finish()
    }
}

impl EngineResources {
    /// The same resources with `value` as an extension.
    pub fn with_extension<T: Any + Send + Sync>(mut self, value: Arc<T>) -> Self {
        self.extensions.insert(value);
        self
    }

    /// The same resources with `store` for asset records.
    pub fn with_asset_store(mut self, store: Arc<dyn AssetStore>) -> Self {
        self.asset_store = Some(store);
        self
    }

    /// The same resources with `media` for media refs and HTTP.
    pub fn with_media(mut self, media: MediaServices) -> Self {
        self.media = media;
        self
    }

    /// The resources a job of `owner` runs with: under [`KeyScope::UserPrefix`](nodetool_core::KeyScope::UserPrefix) both storages
    /// refuse every key outside `{owner}/` (`nodetool_core::ScopedStorage`), whatever node or
    /// bridge asks; under the whole-store scope they are these.
    pub fn for_owner(&self, owner: &str) -> Self {
        let scope = self.media.policy.key_scope;
        let mut out = self.clone();
        out.asset_storage = ScopedStorage::wrap(self.asset_storage.clone(), scope, owner);
        out.temp_storage = ScopedStorage::wrap(self.temp_storage.clone(), scope, owner);
        out
    }
}

/// The bytes of a media ref, with the media type when the source says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub bytes: Bytes,
    /// From a `data:` URI, an HTTP `Content-Type`, a `memory://` object or the ref's own
    /// `content_type`; `None` when nothing says (sniff the bytes).
    pub content_type: Option<String>,
}

/// Where [`ProcessingContext::create_asset_in`] files a new asset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetPlacement {
    /// The asset's name; `None` names it after its id (as the assets API does).
    pub name: Option<String>,
    /// The folder's asset id; `None` is the user's home folder.
    pub parent_id: Option<String>,
}

/// Per-job state shared by every node's context.
#[derive(Debug)]
pub(crate) struct JobShared {
    pub job_id: String,
    pub user_id: String,
    pub workflow_id: String,
    pub cancel: CancellationToken,
    pub poster: Arc<EventPoster>,
    pub resources: EngineResources,
    pub secrets: Arc<BTreeMap<String, String>>,
    /// `RunOptions::use_cache`: nodes that cache on their own (model calls) honour it too.
    pub use_cache: bool,
    /// `{output_name: [values...]}`, filled by output nodes.
    pub results: Mutex<Map<String, Value>>,
    /// The control edges' queues, set once the graph is planned.
    pub control: OnceLock<ControlPlane>,
    /// `memory://` objects made during this job, dropped with it.
    pub memory: Mutex<HashMap<String, (Bytes, String)>>,
    /// `RunOptions::pause`: nodes wait at their next firing while it is closed.
    pub pause: Option<crate::pause::PauseGate>,
}

/// The context one node runs with.
#[derive(Debug, Clone)]
pub struct ProcessingContext {
    pub(crate) job: Arc<JobShared>,
    node_id: String,
    node_type: String,
    node_name: String,
    dynamic_outputs: Arc<Map<String, Value>>,
    /// This node's resource use, shared by its contexts (see [`crate::meter`]).
    pub(crate) meter: Arc<crate::meter::NodeMeter>,
}

impl ProcessingContext {
    pub(crate) fn new(
        job: Arc<JobShared>,
        node_id: &str,
        node_type: &str,
        node_name: &str,
    ) -> Self {
        Self {
            job,
            node_id: node_id.to_owned(),
            node_type: node_type.to_owned(),
            node_name: node_name.to_owned(),
            dynamic_outputs: Arc::new(Map::new()),
            meter: Arc::default(),
        }
    }

    pub(crate) fn with_dynamic_outputs(mut self, outputs: Map<String, Value>) -> Self {
        self.dynamic_outputs = Arc::new(outputs);
        self
    }

    /// The node's `dynamic_outputs` as saved in the graph (`{slot: {type, …}}`).
    pub fn dynamic_outputs(&self) -> &Map<String, Value> {
        &self.dynamic_outputs
    }

    /// The host's service of type `T` (see [`Extensions`]), if it lent one.
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.job.resources.extensions.get::<T>()
    }

    /// Every secret passed in with the job.
    pub fn secrets(&self) -> &BTreeMap<String, String> {
        &self.job.secrets
    }

    pub fn job_id(&self) -> &str {
        &self.job.job_id
    }

    pub fn user_id(&self) -> &str {
        &self.job.user_id
    }

    pub fn workflow_id(&self) -> &str {
        &self.job.workflow_id
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn node_type(&self) -> &str {
        &self.node_type
    }

    /// Cancelled when the job is cancelled, times out or another node fails. Long-running nodes
    /// should select on it; every `emit` and inbox read already does.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.job.cancel
    }

    /// A node boundary: waits while the job is paused ([`crate::pause`]); `Cancelled` when the
    /// job is cancelled meanwhile.
    pub(crate) async fn pause_point(&self) -> Result<()> {
        match &self.job.pause {
            Some(gate) => gate.wait_open(&self.job.cancel).await,
            None => Ok(()),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.job.cancel.is_cancelled()
    }

    /// `Err(Cancelled)` if the job is being cancelled: a cheap check for loops.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::new(ErrorKind::Cancelled, "job cancelled"))
        } else {
            Ok(())
        }
    }

    /// Sleeps, waking early with `Err(Cancelled)` when the job is cancelled.
    pub async fn sleep(&self, duration: Duration) -> Result<()> {
        tokio::select! {
            _ = self.job.cancel.cancelled() => Err(Error::new(ErrorKind::Cancelled, "job cancelled")),
            _ = tokio::time::sleep(duration) => Ok(()),
        }
    }

    pub fn post(&self, event: Event) {
        self.job.poster.post(event);
    }

    pub fn post_progress(&self, progress: i64, total: i64) {
        self.post(Event::NodeProgress(NodeProgress {
            node_id: self.node_id.clone(),
            progress,
            total,
            chunk: String::new(),
            workflow_id: Some(self.job.workflow_id.clone()),
        }));
    }

    pub fn log(&self, severity: Severity, content: impl Into<String>) {
        self.post(Event::LogUpdate(LogUpdate {
            node_id: self.node_id.clone(),
            node_name: self.node_name.clone(),
            content: content.into(),
            severity,
            workflow_id: Some(self.job.workflow_id.clone()),
        }));
    }

    pub fn notify(&self, severity: Severity, content: impl Into<String>) {
        self.post(Event::Notification(Notification {
            node_id: self.node_id.clone(),
            content: content.into(),
            severity,
            workflow_id: Some(self.job.workflow_id.clone()),
        }));
    }

    pub fn post_preview(&self, value: Value) {
        self.post(Event::PreviewUpdate(PreviewUpdate {
            node_id: self.node_id.clone(),
            value,
        }));
    }

    /// Posts an `output_update` and appends `value` to the job result under `name`, unless it
    /// equals the value appended last under that name: NodeTool's `runner.outputs` rule, which
    /// keeps `on_any` re-firings from repeating a result (every value still gets its event).
    pub fn record_output(&self, name: &str, value: Value) {
        self.post_output(name, value.clone());
        let mut results = self.job.results.lock().unwrap_or_else(|p| p.into_inner());
        match results
            .entry(name.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) if items.last() == Some(&value) => {}
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        }
    }

    /// Posts an `output_update` for `name` without adding to the job result (NodeTool does
    /// this for a None that reaches an output).
    pub fn post_output(&self, name: &str, value: Value) {
        self.post(Event::OutputUpdate(OutputUpdate {
            node_id: self.node_id.clone(),
            node_name: name.to_owned(),
            output_name: name.to_owned(),
            output_type: crate::types::type_of(&value).to_owned(),
            value,
            metadata: Map::new(),
            workflow_id: Some(self.job.workflow_id.clone()),
        }));
    }

    /// NodeTool's `_control_context` for a controller: `{target node id: {node_id, node_type,
    /// node_title, properties: {name: {value, type, default}}}}` for every node this node's
    /// control edges point at; empty for a node without control edges.
    pub fn control_context(&self) -> Map<String, Value> {
        self.job
            .control
            .get()
            .map(|c| c.context_of(&self.node_id))
            .unwrap_or_default()
    }

    /// Runs `target` (a node this node controls) once with `properties` over its inputs, and
    /// returns that run's outputs: an agent's tool call. Errors: no control edge from this node
    /// to `target`, the target failed or has finished, or the job is cancelled.
    pub async fn run_controlled(
        &self,
        target: &str,
        properties: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let plane = self.job.control.get().ok_or_else(|| {
            Error::invalid_input(format!("node `{}` has no control edges", self.node_id))
                .with_operation("control.run")
        })?;
        let rx = plane.run(&self.node_id, target, properties)?;
        tokio::select! {
            biased;
            _ = self.job.cancel.cancelled() => Err(Error::new(ErrorKind::Cancelled, "job cancelled")),
            reply = rx => reply.unwrap_or_else(|_| {
                Err(Error::invalid_input(format!(
                    "controlled node `{target}` ended without answering (it failed or was stopped)"
                ))
                .with_operation("control.run")
                .with_context("target", target))
            }),
        }
    }

    /// A secret passed in with the job (never read from the environment here).
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.job.secrets.get(name).map(String::as_str)
    }

    /// Like [`secret`](Self::secret), but a missing secret is a clear error.
    pub fn require_secret(&self, name: &str) -> Result<&str> {
        self.secret(name).ok_or_else(|| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("secret {name} is not set for this job"),
            )
            .with_operation("context.secret")
        })
    }

    pub fn asset_storage(&self) -> &Arc<dyn Storage> {
        &self.job.resources.asset_storage
    }

    pub fn temp_storage(&self) -> &Arc<dyn Storage> {
        &self.job.resources.temp_storage
    }

    pub fn node_cache(&self) -> &Arc<dyn NodeCache> {
        &self.job.resources.node_cache
    }

    /// Whether this job may read and fill the node cache (`--no-cache` says no).
    pub fn use_cache(&self) -> bool {
        self.job.use_cache
    }

    /// How long cached node outputs live in this process (`NODE_CACHE_TTL`).
    pub fn node_cache_ttl(&self) -> Duration {
        self.job.resources.node_cache_ttl
    }

    /// The URL clients use to fetch an asset key.
    pub async fn asset_url(&self, key: &str) -> Result<String> {
        let key = StorageKey::new(key)?;
        self.job.resources.asset_storage.url(&key).await
    }

    /// The media-ref policy of this process (size caps, pixel cap, file roots).
    pub fn media_policy(&self) -> &MediaPolicy {
        &self.job.resources.media.policy
    }

    /// The guarded HTTP client, or `Unsupported` in a process without one.
    pub fn http(&self) -> Result<&Arc<dyn HttpFetch>> {
        self.job.resources.media.http.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "HTTP is not available in this process (no HTTP client was configured; a \
                 worker's parent lends none)",
            )
            .with_operation("context.http")
        })
    }

    /// The folders this job may read files from (`file://` refs, folder nodes).
    pub fn file_roots(&self) -> Vec<std::path::PathBuf> {
        self.media_policy().roots_for(self.owner())
    }

    /// Keeps `bytes` for the rest of the job under a new `memory://` URI.
    pub fn put_memory(&self, bytes: Bytes, content_type: &str) -> String {
        let uri = format!("memory://{}", nodetool_core::id::new_id());
        self.job
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uri.clone(), (bytes, content_type.to_owned()));
        uri
    }

    /// Streams the bytes a media ref (`{type, uri, asset_id?, data?}`) points to; see
    /// [`crate::media`] for every accepted form and the policy each obeys.
    pub async fn download_asset(&self, asset: &Value) -> Result<ByteStream> {
        if let Some(storage_key) = self.storage_source(asset).await? {
            let (storage, key) = storage_key;
            let meter = self.meter.clone();
            let body = storage.download(&key, None).await?.body;
            return Ok(Box::pin(futures::StreamExt::inspect(body, move |chunk| {
                if let Ok(bytes) = chunk {
                    meter.read(bytes.len());
                }
            })));
        }
        let media = self.resolve_media(asset).await?;
        Ok(nodetool_core::storage::once(media.bytes))
    }

    /// The whole asset in memory (small assets; use [`download_asset`](Self::download_asset)
    /// for large ones).
    pub async fn asset_bytes(&self, asset: &Value) -> Result<Bytes> {
        Ok(self.resolve_media(asset).await?.bytes)
    }

    /// The bytes of a media ref and what is known of their type.
    pub async fn resolve_media(&self, asset: &Value) -> Result<Media> {
        const OP: &str = "context.resolve_media";
        let policy = self.media_policy();
        let uri = asset.get("uri").and_then(Value::as_str).unwrap_or("");
        let declared = asset
            .get("content_type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Ok(UriKind::Memory(_)) = media::classify_uri(uri) {
            let memory = self.job.memory.lock().unwrap_or_else(|p| p.into_inner());
            let (bytes, content_type) = memory.get(uri.trim()).cloned().ok_or_else(|| {
                Error::not_found(format!(
                    "{} is not an object of this job (memory:// objects live only in the job \
                     that made them)",
                    media::preview(uri)
                ))
                .with_operation(OP)
            })?;
            return Ok(Media {
                bytes,
                content_type: Some(content_type),
            });
        }
        if let Some(data) = asset.get("data").filter(|d| !d.is_null()) {
            return Ok(Media {
                bytes: media::inline_bytes(data, policy.data_max_bytes)?,
                content_type: declared,
            });
        }
        if let Some((storage, key)) = self.storage_source(asset).await? {
            let bytes =
                nodetool_core::storage::collect(storage.download(&key, None).await?.body).await?;
            self.meter.read(bytes.len());
            return Ok(Media {
                bytes,
                content_type: declared,
            });
        }
        match media::classify_uri(uri)? {
            UriKind::Data(text) => {
                let data = media::parse_data_uri(text, policy.data_max_bytes)?;
                Ok(Media {
                    bytes: Bytes::from(data.bytes),
                    content_type: Some(data.media_type),
                })
            }
            UriKind::Http(url) => {
                let mut request = crate::media::HttpRequest::get(url);
                request.max_bytes = Some(policy.http_max_bytes);
                let response = self.http()?.fetch(request).await?;
                if !(200..300).contains(&response.status) {
                    return Err(Error::new(
                        if response.status == 404 {
                            ErrorKind::NotFound
                        } else {
                            ErrorKind::Unavailable
                        },
                        format!(
                            "GET {} answered HTTP {}",
                            media::preview(url),
                            response.status
                        ),
                    )
                    .with_operation(OP));
                }
                let content_type = response.content_type().map(str::to_owned);
                self.meter.read(response.body.len());
                Ok(Media {
                    bytes: response.body,
                    content_type: content_type.or(declared),
                })
            }
            UriKind::File(path) => {
                let roots = self.file_roots();
                let bytes =
                    tokio::task::spawn_blocking(move || media::read_file_in_roots(&path, &roots))
                        .await
                        .map_err(|e| Error::unexpected(format!("file read task failed: {e}")))??;
                self.meter.read(bytes.len());
                Ok(Media {
                    bytes: Bytes::from(bytes),
                    content_type: declared,
                })
            }
            UriKind::Empty => Err(Error::invalid_input(
                "the media ref is empty: it has no uri, asset_id or data",
            )
            .with_operation(OP)),
            // Handled by storage_source.
            UriKind::Asset(_) | UriKind::Temp(_) | UriKind::Memory(_) => {
                Err(Error::unexpected("storage ref not resolved").with_operation(OP))
            }
        }
    }

    /// The storage and key of a ref that lives in our storages: its `asset_id` (the job user's
    /// record; NodeTool gives it precedence over the uri, which may be stale), an `asset://`,
    /// `temp://` or `/api/storage/` uri. `None` for every other form. Keys outside the job
    /// user's part of the store are "not found" under multi-user auth.
    async fn storage_source(
        &self,
        asset: &Value,
    ) -> Result<Option<(Arc<dyn Storage>, StorageKey)>> {
        const OP: &str = "context.download_asset";
        if asset.get("data").is_some_and(|d| !d.is_null()) {
            return Ok(None);
        }
        let uri = asset.get("uri").and_then(Value::as_str).unwrap_or("");
        if let Some(id) = asset
            .get("asset_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
        {
            let key = match self.asset_store() {
                Some(store) => {
                    let record = store.get(self.owner(), id).await?.ok_or_else(|| {
                        Error::not_found(format!("no asset {id} for this user")).with_operation(OP)
                    })?;
                    record.key().ok_or_else(|| {
                        Error::invalid_input(format!("asset {id} is a folder, not a file"))
                            .with_operation(OP)
                    })?
                }
                None => StorageKey::new(id)?,
            };
            self.own_key(&key, false, OP)?;
            return Ok(Some((self.asset_storage().clone(), key)));
        }
        let (storage, key, temp) = match media::classify_uri(uri)? {
            UriKind::Asset(key) => (self.asset_storage().clone(), key, false),
            UriKind::Temp(key) => (self.temp_storage().clone(), key, true),
            _ => return Ok(None),
        };
        let key = StorageKey::new(key)?;
        self.own_key(&key, temp, OP)?;
        Ok(Some((storage, key)))
    }

    /// Another user's key is "not found" to this job (the storages would refuse it too, as
    /// `PermissionDenied`; a ref should not tell whether the object exists).
    fn own_key(&self, key: &StorageKey, temp: bool, op: &'static str) -> Result<()> {
        if self
            .media_policy()
            .key_scope
            .permits(self.owner(), key.as_str())
        {
            return Ok(());
        }
        Err(Error::not_found(format!(
            "no {} object {} for this user",
            if temp { "temp" } else { "asset" },
            key.as_str()
        ))
        .with_operation(op))
    }

    /// The asset record store, if this process has one (see [`EngineResources::asset_store`]).
    pub fn asset_store(&self) -> Option<&Arc<dyn AssetStore>> {
        self.job.resources.asset_store.as_ref()
    }

    /// The user assets belong to: the job's, or `anonymous` for a job without one.
    fn owner(&self) -> &str {
        if self.user_id().is_empty() {
            "anonymous"
        } else {
            self.user_id()
        }
    }

    fn require_store(&self, op: &'static str) -> Result<&Arc<dyn AssetStore>> {
        self.asset_store().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "asset records are not available in this process: saving or listing assets \
                 needs an asset database, and this process has none (a subprocess or docker \
                 worker uses its parent's, when the parent has one)",
            )
            .with_operation(op)
        })
    }

    /// Stores `bytes` as a new asset in the user's home folder, named after its id; see
    /// [`create_asset_in`](Self::create_asset_in).
    pub async fn create_asset(
        &self,
        asset_type: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<Value> {
        self.create_asset_in(asset_type, content_type, bytes, &AssetPlacement::default())
            .await
    }

    /// Stores `bytes` as a new asset of the job's user — blob and record — and returns its ref
    /// `{type, uri: "asset://KEY", asset_id, data: null, content_type}`.
    ///
    /// The blob goes to `{user}/{asset_id}.{ext}` first, then the record (with this job, node and
    /// workflow) is created; if the record cannot be created the blob is deleted again, so no
    /// blob is left that no listing shows. The folder is checked before anything is written.
    /// Without an asset store this fails with `Unsupported` and writes nothing.
    pub async fn create_asset_in(
        &self,
        asset_type: &str,
        content_type: &str,
        bytes: Bytes,
        placement: &AssetPlacement,
    ) -> Result<Value> {
        const OP: &str = "context.create_asset";
        let store = self.require_store(OP)?;
        let user = self.owner();
        let parent_id = placement
            .parent_id
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| user.to_owned());
        if parent_id != user {
            let parent = store.get(user, &parent_id).await?;
            match parent {
                Some(p) if p.is_folder() => {}
                Some(_) => {
                    return Err(
                        Error::invalid_input(format!("asset {parent_id} is not a folder"))
                            .with_operation(OP),
                    )
                }
                None => {
                    return Err(Error::not_found(format!(
                        "folder {parent_id} not found for this user"
                    ))
                    .with_operation(OP))
                }
            }
        }
        let id = nodetool_core::id::new_id();
        let ext = nodetool_core::storage::extension_for(content_type).unwrap_or("bin");
        let key = StorageKey::new(format!("{user}/{id}.{ext}"))?;
        let size = bytes.len();
        self.asset_storage()
            .upload_bytes(&key, bytes, PutOptions::content_type(content_type))
            .await?;
        self.meter.written(size);

        let mut record = AssetRecord::new(
            id.clone(),
            user,
            parent_id,
            placement
                .name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or(&id),
            content_type,
        );
        record.size = Some(i64::try_from(size).unwrap_or(i64::MAX));
        record.storage_key = Some(key.to_string());
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        record.workflow_id = non_empty(self.workflow_id());
        record.job_id = non_empty(self.job_id());
        record.node_id = non_empty(self.node_id());
        if let Err(e) = store.create(&record).await {
            // No record: remove the blob so nothing is orphaned.
            if let Err(de) = self.asset_storage().delete(&key).await {
                tracing::warn!(key = %key, error = %de, "could not remove the blob of a failed asset");
            }
            return Err(e.with_context("asset", &id));
        }
        Ok(json!({
            "type": asset_type,
            "uri": format!("asset://{}", key.as_str()),
            "asset_id": id,
            "data": null,
            "content_type": content_type,
        }))
    }

    /// One page of the job user's assets in folder `parent_id` whose content type starts with
    /// `content_type_prefix` (empty: any, folders included), after `cursor`.
    pub async fn list_assets(
        &self,
        parent_id: &str,
        content_type_prefix: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<AssetPage> {
        let store = self.require_store("context.list_assets")?;
        let query = AssetQuery {
            content_type: (!content_type_prefix.is_empty()).then(|| content_type_prefix.to_owned()),
            cursor,
            ..AssetQuery::children(self.owner(), parent_id, limit)
        };
        store.list(&query).await
    }

    /// Writes an intermediate to temp storage under this job's prefix and returns its key:
    /// `jobs/{job}/{name}`, or `{user}/jobs/{job}/{name}` under [`KeyScope::UserPrefix`](nodetool_core::KeyScope::UserPrefix), so
    /// the object is this job's and this user's.
    pub async fn put_temp(&self, name: &str, bytes: Bytes) -> Result<StorageKey> {
        let prefix = self
            .media_policy()
            .key_scope
            .temp_prefix(self.owner(), self.job_id());
        let key = StorageKey::new(format!("{prefix}{name}"))?;
        let size = bytes.len();
        self.temp_storage()
            .upload_bytes(&key, bytes, PutOptions::default())
            .await?;
        self.meter.written(size);
        Ok(key)
    }
}

impl fmt::Display for ProcessingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.node_id, self.node_type)
    }
}
