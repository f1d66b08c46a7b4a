//! [`Resources`]: the one value that hands out asset storage, temp storage, caches and (where the
//! process owns the database) the asset record store — the Rust counterpart of NodeTool's
//! `ResourceScope`.
//!
//! Unlike the Python original, one `Resources` lives for the whole process (the server, a CLI
//! command, a worker), so temp objects and cache entries survive between requests and jobs.
//! Backends are built lazily, on first use, so a broken S3 configuration does not stop a command
//! that only touches temp storage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodetool_cache::{MemcachedConfig, NodeCacheConfig, UriCache};
use nodetool_config::{CachePlan, Selection, Settings, StoragePlan};
use nodetool_core::{AssetStore, CacheValue, NodeCache, Result, Storage};
use nodetool_engine::{EngineResources, MediaPolicy, MediaServices};

pub mod http;
pub use http::{GuardedHttp, HttpPolicy};
use nodetool_storage::{FileStorage, MemoryStorage, UrlSigner};
use nodetool_storage_s3::{S3Config, S3Storage};
use nodetool_storage_supabase::{SupabaseConfig, SupabaseStorage};

/// Which storage a caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageRole {
    Asset,
    Temp,
}

impl StorageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageRole::Asset => "asset",
            StorageRole::Temp => "temp",
        }
    }
}

/// Options that change selection for one process (CLI flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceOptions {
    /// Force S3 for asset and temp storage even when the settings would pick files
    /// (`--s3`; DESIGN.md §3 `use_s3`).
    pub use_s3: bool,
}

/// Storage, temp storage and caches for one process, chosen by [`Settings`].
#[derive(Debug)]
pub struct Resources {
    settings: Arc<Settings>,
    options: ResourceOptions,
    asset: Mutex<Option<Arc<dyn Storage>>>,
    temp: Mutex<Option<Arc<dyn Storage>>>,
    node_cache: tokio::sync::OnceCell<Arc<dyn NodeCache>>,
    node_cache_stats: Arc<CacheStats>,
    uri_cache: Arc<UriCache>,
    /// Signs the URLs of file and memory storage, which our API serves.
    signer: Option<UrlSigner>,
    /// Asset records, in processes that own the database (see [`Resources::with_asset_store`]).
    asset_store: Option<Arc<dyn AssetStore>>,
    /// AI provider clients and their usage meter, built from the provider settings.
    providers: Arc<nodetool_providers::ProviderSet>,
}

/// A selected backend, for `nodetool storage info` and the startup log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendReport {
    pub role: &'static str,
    pub backend: &'static str,
    pub location: String,
    pub reason: String,
}

impl Resources {
    pub fn new(settings: Settings, options: ResourceOptions) -> Self {
        let uri_cache = Arc::new(UriCache::new(settings.uri_cache_ttl));
        let providers = Arc::new(provider_set(&settings));
        Self {
            providers,
            settings: Arc::new(settings),
            options,
            asset: Mutex::default(),
            temp: Mutex::default(),
            node_cache: tokio::sync::OnceCell::new(),
            node_cache_stats: Arc::default(),
            uri_cache,
            signer: None,
            asset_store: None,
        }
    }

    /// File and memory storage built from now on sign their URLs with `signer` (call before
    /// the first `storage()`), so that the API accepts them without a bearer token.
    pub fn with_url_signer(mut self, signer: UrlSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    pub fn url_signer(&self) -> Option<&UrlSigner> {
        self.signer.as_ref()
    }

    /// Hands out `store` for asset records. Only processes that can reach the database set one
    /// (`nodetool run`, `nodetool serve`); their workers use it through calls.
    pub fn with_asset_store(mut self, store: Arc<dyn AssetStore>) -> Self {
        self.asset_store = Some(store);
        self
    }

    /// The asset record store, if this process has one.
    pub fn asset_store(&self) -> Option<Arc<dyn AssetStore>> {
        self.asset_store.clone()
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// How long temp objects live before `storage gc` / the reaper removes them.
    pub fn temp_ttl(&self) -> Duration {
        self.settings.asset_temp_ttl
    }

    pub fn selection(&self, role: StorageRole) -> Result<Selection<StoragePlan>> {
        match role {
            StorageRole::Asset => {
                nodetool_config::asset_storage(&self.settings, self.options.use_s3)
            }
            StorageRole::Temp => nodetool_config::temp_storage(&self.settings, self.options.use_s3),
        }
    }

    pub fn storage(&self, role: StorageRole) -> Result<Arc<dyn Storage>> {
        let slot = match role {
            StorageRole::Asset => &self.asset,
            StorageRole::Temp => &self.temp,
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(storage) = &*slot {
            return Ok(storage.clone());
        }
        let selection = self.selection(role)?;
        let storage = build_storage_with(&selection.plan, self.signer.as_ref())
            .map_err(|e| e.with_context("role", role.as_str()))?;
        tracing::info!(
            role = role.as_str(),
            backend = storage.info().scheme,
            location = %storage.info().location,
            reason = %selection.reason,
            "storage selected"
        );
        *slot = Some(storage.clone());
        Ok(storage)
    }

    pub fn asset_storage(&self) -> Result<Arc<dyn Storage>> {
        self.storage(StorageRole::Asset)
    }

    pub fn temp_storage(&self) -> Result<Arc<dyn Storage>> {
        self.storage(StorageRole::Temp)
    }

    /// The node cache, shared by every job of the process. Fails only on invalid configuration:
    /// a memcached that is down is a cache that misses until it is back. Its lookups are
    /// counted in [`Resources::node_cache_stats`].
    pub async fn node_cache(&self) -> Result<Arc<dyn NodeCache>> {
        self.node_cache
            .get_or_try_init(|| async {
                let selection = nodetool_config::node_cache(&self.settings);
                let cache = node_cache_config(&selection.plan).build().await?;
                tracing::info!(cache = cache.name(), reason = %selection.reason, "node cache selected");
                Ok(Arc::new(CountingNodeCache {
                    inner: cache,
                    stats: self.node_cache_stats.clone(),
                }) as Arc<dyn NodeCache>)
            })
            .await
            .cloned()
    }

    /// Hits and misses of this process's node cache (for `/metrics`), including the lookups its
    /// subprocess and Docker workers make through calls.
    pub fn node_cache_stats(&self) -> Arc<CacheStats> {
        self.node_cache_stats.clone()
    }

    /// TTL for node outputs unless a node says otherwise (`NODE_CACHE_TTL`).
    pub fn node_cache_ttl(&self) -> Duration {
        self.settings.node_cache_ttl
    }

    /// What the engine runs jobs with: this process's asset storage, temp storage, asset record
    /// store (if it has one) and node cache.
    pub async fn engine_resources(&self) -> Result<EngineResources> {
        Ok(EngineResources {
            asset_storage: self.asset_storage()?,
            temp_storage: self.temp_storage()?,
            asset_store: self.asset_store(),
            node_cache: self.node_cache().await?,
            node_cache_ttl: self.node_cache_ttl(),
            media: self.media_services(),
            extensions: nodetool_engine::Extensions::new().with(self.providers.clone()),
        })
    }

    /// The process's AI provider clients (settings from the provider block; a job's secrets
    /// beat them per call) and their usage meter, which `/metrics` renders.
    pub fn providers(&self) -> &Arc<nodetool_providers::ProviderSet> {
        &self.providers
    }

    /// Which storage keys a user owns in this process: the whole store under a single-user
    /// auth provider, `{user}/` under a multi-user one (`supabase`). The one rule jobs of every
    /// strategy and the HTTP storage routes apply.
    pub fn key_scope(&self) -> nodetool_core::KeyScope {
        nodetool_core::KeyScope::for_auth(self.settings.auth_provider.is_multi_user())
    }

    /// The media-ref policy and the guarded HTTP client, from the `NODETOOL_*` media settings.
    pub fn media_services(&self) -> MediaServices {
        let m = &self.settings.media;
        let asset_folder = match self.selection(StorageRole::Asset) {
            Ok(Selection {
                plan: StoragePlan::File { root, .. },
                ..
            }) => Some(root),
            _ => None,
        };
        MediaServices {
            policy: MediaPolicy {
                data_max_bytes: m.data_uri_max_bytes,
                image_max_pixels: m.image_max_pixels,
                http_max_bytes: m.http_max_bytes,
                file_roots: m.file_roots.clone(),
                asset_folder,
                // Multi-user auth: a job reads and writes only its user's part of the store.
                key_scope: self.key_scope(),
            },
            http: Some(Arc::new(GuardedHttp::new(self.http_policy()))),
        }
    }

    /// The node HTTP guard's policy from settings.
    pub fn http_policy(&self) -> HttpPolicy {
        let m = &self.settings.media;
        HttpPolicy {
            max_bytes: m.http_max_bytes,
            timeout: m.http_timeout,
            max_redirects: m.http_max_redirects,
            allow_private: m.http_allow_private,
            allow_hosts: m.http_allow_hosts.clone(),
        }
    }

    pub fn uri_cache(&self) -> Arc<UriCache> {
        self.uri_cache.clone()
    }

    /// What serves each role and why, without building anything.
    pub fn report(&self) -> Vec<Result<BackendReport>> {
        let mut out = Vec::new();
        for role in [StorageRole::Asset, StorageRole::Temp] {
            out.push(self.selection(role).map(|s| BackendReport {
                role: role.as_str(),
                backend: s.plan.backend_name(),
                location: plan_location(&s.plan),
                reason: s.reason,
            }));
        }
        let cache = nodetool_config::node_cache(&self.settings);
        out.push(Ok(BackendReport {
            role: "node cache",
            backend: match cache.plan {
                CachePlan::Memory { .. } => "memory",
                CachePlan::Memcached { .. } => "memcached",
            },
            location: match &cache.plan {
                CachePlan::Memory { max_bytes, .. } => format!("in-process, {max_bytes} bytes"),
                CachePlan::Memcached { host, port, .. } => format!("{host}:{port}"),
            },
            reason: cache.reason,
        }));
        out
    }
}

/// Lookup counters of a node cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheStats {
    /// Lookups that found a value.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that found nothing, errors included (an error is a miss by the cache contract).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// Counts `get` outcomes once here, in front of whichever backend was selected, rather than in
/// every implementation.
#[derive(Debug)]
struct CountingNodeCache {
    inner: Arc<dyn NodeCache>,
    stats: Arc<CacheStats>,
}

#[async_trait::async_trait]
impl NodeCache for CountingNodeCache {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, key: &str) -> Result<Option<CacheValue>> {
        let result = self.inner.get(key).await;
        let counter = match &result {
            Ok(Some(_)) => &self.stats.hits,
            Ok(None) | Err(_) => &self.stats.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn set(&self, key: &str, value: CacheValue, ttl: Duration) -> Result<()> {
        self.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }
}

fn plan_location(plan: &StoragePlan) -> String {
    match plan {
        StoragePlan::Memory { .. } => "process memory".into(),
        StoragePlan::File { root, .. } => root.display().to_string(),
        StoragePlan::S3 {
            bucket,
            root,
            endpoint,
            ..
        } => format!(
            "s3://{bucket}/{}{}",
            root.as_deref().unwrap_or(""),
            endpoint
                .as_deref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        ),
        StoragePlan::Supabase { url, bucket, .. } => format!("{url} bucket {bucket}"),
    }
}

/// Builds the backend a plan describes. Does no network I/O.
pub fn build_storage(plan: &StoragePlan) -> Result<Arc<dyn Storage>> {
    build_storage_with(plan, None)
}

/// [`build_storage`], with file and memory URLs signed by `signer` when given.
pub fn build_storage_with(
    plan: &StoragePlan,
    signer: Option<&UrlSigner>,
) -> Result<Arc<dyn Storage>> {
    Ok(match plan {
        StoragePlan::Memory { base_url } => {
            let storage = MemoryStorage::new(base_url.clone());
            Arc::new(match signer {
                Some(s) => storage.with_signer(s.clone()),
                None => storage,
            })
        }
        StoragePlan::File {
            root,
            base_url,
            read_cache_bytes,
        } => {
            let storage = FileStorage::new(root.clone(), base_url.clone())
                .map_err(|e| {
                    e.with_context(
                        "hint",
                        "check that the asset folder (ASSET_FOLDER / ASSET_BUCKET) is writable",
                    )
                })?
                .with_read_cache(*read_cache_bytes);
            Arc::new(match signer {
                Some(s) => storage.with_signer(s.clone()),
                None => storage,
            })
        }
        StoragePlan::S3 {
            bucket,
            root,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            public_domain,
            timeout,
        } => {
            let mut cfg = S3Config::new(bucket.clone());
            cfg.root = root.clone();
            cfg.region = region.clone();
            cfg.endpoint = endpoint.clone();
            cfg.access_key_id = access_key_id.clone();
            cfg.secret_access_key = secret_access_key.clone();
            cfg.public_domain = public_domain.clone();
            cfg.timeout = *timeout;
            Arc::new(S3Storage::new(cfg)?)
        }
        StoragePlan::Supabase { url, key, bucket } => {
            let cfg = SupabaseConfig::new(url.clone(), key.clone(), bucket.clone());
            Arc::new(SupabaseStorage::new(cfg)?)
        }
    })
}

/// The cache configuration a plan describes.
pub fn node_cache_config(plan: &CachePlan) -> NodeCacheConfig {
    match plan {
        CachePlan::Memory { max_bytes, .. } => NodeCacheConfig::Memory {
            max_bytes: *max_bytes,
        },
        CachePlan::Memcached { host, port, .. } => {
            NodeCacheConfig::Memcached(MemcachedConfig::new(host.clone(), *port))
        }
    }
}

/// File name of the generated URL signing key under the config directory.
pub const URL_SIGNING_KEY_FILE: &str = "url_signing.key";

/// The URL signing key: `NODETOOL_URL_SIGNING_KEY` when set, else the key in
/// `{config_dir}/url_signing.key`, generated (32 random bytes, hex, mode 0600) on first use so
/// that signed URLs survive a restart.
pub fn url_signing_key(settings: &Settings) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;

    if let Some(key) = &settings.url_signing_key {
        return Ok(key.as_bytes().to_vec());
    }
    let path = settings.config_dir().join(URL_SIGNING_KEY_FILE);
    let io = |e: std::io::Error, what: &'static str| {
        nodetool_core::Error::from(e)
            .with_operation("url_signing_key")
            .with_context("path", path.display())
            .with_context("step", what)
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e, "read")),
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| io(e, "read /dev/urandom"))?;
    let key: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(e, "create config dir"))?;
    }
    // create_new: if another process won the race, use its key instead of overwriting it.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(key.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| io(e, "write"))?;
            tracing::info!(path = %path.display(), "generated a URL signing key");
            Ok(key.into_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|t| t.trim().as_bytes().to_vec())
            .map_err(|e| io(e, "read")),
        Err(e) => Err(io(e, "create")),
    }
}

/// The provider clients of a process, from the settings' provider block.
pub fn provider_set(settings: &Settings) -> nodetool_providers::ProviderSet {
    let v = settings.provider_values();
    let http = nodetool_providers::HttpOptions {
        connect_timeout: v.connect_timeout,
        idle_timeout: v.idle_timeout,
        max_retries: v.max_retries,
        max_response_bytes: v.max_response_bytes,
        ..nodetool_providers::HttpOptions::default()
    };
    nodetool_providers::ProviderSet::new(nodetool_providers::ProviderSettings::new(v.values, http))
}
