use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::StreamExt;
use nodetool_core::storage::{not_found, ByteStream, Download, ObjectMeta, PutOptions};
use nodetool_core::{
    ByteRange, Result, Storage, StorageCapabilities, StorageInfo, StorageKey, StoragePrefix,
};

use crate::signing::UrlSigner;
use crate::{join_url, CHUNK};

/// Objects in a process-wide map. Used under `ENV=test`; one instance lives as long as the
/// `Resources` that made it (not one HTTP request, unlike the Python original).
#[derive(Debug)]
pub struct MemoryStorage {
    base_url: String,
    signer: Option<UrlSigner>,
    objects: RwLock<BTreeMap<StorageKey, Arc<Object>>>,
}

#[derive(Debug)]
struct Object {
    data: Bytes,
    meta: ObjectMeta,
}

impl MemoryStorage {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            signer: None,
            objects: RwLock::default(),
        }
    }

    /// URLs from [`Storage::url`] carry an expiring signature, so they work without a token.
    pub fn with_signer(mut self, signer: UrlSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    fn get(&self, key: &StorageKey) -> Option<Arc<Object>> {
        self.objects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            scheme: "memory",
            location: "process memory".into(),
            capabilities: StorageCapabilities::default(),
        }
    }

    async fn upload(
        &self,
        key: &StorageKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        // Buffer first, insert after: a failing stream never replaces the old object.
        let mut buf = BytesMut::new();
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| e.with_operation("memory.upload").with_context("key", key))?;
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
        }
        let data = buf.freeze();
        let meta = ObjectMeta {
            key: key.clone(),
            size: data.len() as u64,
            last_modified: Utc::now(),
            etag: Some(hasher.finalize().to_hex()[..32].to_owned()),
            content_type: Some(opts.effective_content_type(key)),
        };
        let object = Arc::new(Object {
            data,
            meta: meta.clone(),
        });
        self.objects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone(), object);
        Ok(meta)
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        let object = self
            .get(key)
            .ok_or_else(|| not_found("memory", key).with_operation("memory.download"))?;
        let size = object.meta.size;
        let range = match range {
            Some(r) => r
                .resolve(size)
                .map_err(|e| e.with_operation("memory.download").with_context("key", key))?,
            None => 0..size,
        };
        let data = object.data.slice(range.start as usize..range.end as usize);
        let chunks: Vec<Result<Bytes>> = (0..data.len())
            .step_by(CHUNK)
            .map(|start| Ok(data.slice(start..(start + CHUNK).min(data.len()))))
            .collect();
        Ok(Download {
            meta: object.meta.clone(),
            range,
            body: futures::stream::iter(chunks).boxed(),
        })
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        Ok(self.get(key).map(|o| o.meta.clone()))
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.objects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        let objects = self
            .objects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // BTreeMap iteration is already sorted by key.
        Ok(objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| prefix.matches(k))
            .map(|(_, o)| o.meta.clone())
            .collect())
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        let url = join_url(&self.base_url, key);
        Ok(match &self.signer {
            Some(signer) => signer.sign_url(&url, Utc::now()),
            None => url,
        })
    }
}
