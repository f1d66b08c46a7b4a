//! Supabase Storage through its REST API (`{SUPABASE_URL}/storage/v1/...`), with reqwest.
//!
//! What this backend does differently from the Python adapter it replaces
//! (`reference/nodetool-storage.md` §2.4, §8):
//! - uploads are raw, streamed `POST /object/{bucket}/{key}` with `x-upsert: true` and the real
//!   content type, so overwrites work and images are not stored as `text/plain`;
//! - downloads stream and send `Range`, so nothing is buffered whole;
//! - `metadata` is one `GET /object/info/...` and `last_modified` is parsed with or without
//!   fractional seconds, `Z` or an offset;
//! - errors are read from the body's string `statusCode` (the HTTP status is 400 for almost every
//!   error), and a non-JSON body cannot break that.
//!
//! One client (connection pool) per [`SupabaseStorage`]; it is cheap to share behind an `Arc`.

mod error;

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use nodetool_core::storage::{not_found, ByteStream, Download, ObjectMeta, PutOptions};
use nodetool_core::url::encode_segment;
use nodetool_core::{
    ByteRange, Error, ErrorKind, Result, Storage, StorageCapabilities, StorageInfo, StorageKey,
    StoragePrefix,
};
use percent_encoding::percent_decode_str;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::error::{api_error, transport_error};

const SCHEME: &str = "supabase";
/// Entries asked for per `POST /object/list` page.
const LIST_PAGE: usize = 1000;
/// Most bytes of an error body we read: enough for any JSON error, bounded for a proxy's page.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// How to reach one bucket. Built by `nodetool-config` from `SUPABASE_URL`, `SUPABASE_KEY` and
/// the bucket settings; this crate reads no environment variables.
#[derive(Clone)]
pub struct SupabaseConfig {
    /// The project URL (`SUPABASE_URL`), e.g. `https://xyz.supabase.co`. The API base is
    /// `{url}/storage/v1`; a URL that already ends in `/storage/v1` is accepted as well.
    pub url: String,
    /// The service-role key (`SUPABASE_KEY`), sent as `Authorization: Bearer` and `apikey`.
    pub key: String,
    pub bucket: String,
    /// Whether the bucket is public. `None` asks the server once (`GET /bucket/{id}`).
    pub public: Option<bool>,
    /// Lifetime of the signed URLs [`Storage::url`] returns for a private bucket.
    pub signed_url_ttl: Duration,
    /// Connect timeout, and the longest wait for any read of an answer: an unreachable or
    /// stalled server fails in bounded time while long streams are not cut off.
    pub timeout: Duration,
}

impl SupabaseConfig {
    /// A config with the defaults: visibility asked from the server, 1 h signed URLs, 30 s
    /// timeouts.
    pub fn new(url: impl Into<String>, key: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: key.into(),
            bucket: bucket.into(),
            public: None,
            signed_url_ttl: Duration::from_secs(3600),
            timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for SupabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseConfig")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("bucket", &self.bucket)
            .field("public", &self.public)
            .field("signed_url_ttl", &self.signed_url_ttl)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// [`Storage`] over one Supabase Storage bucket.
pub struct SupabaseStorage {
    client: reqwest::Client,
    /// `{url}/storage/v1`, without a trailing slash.
    base: String,
    /// `host[:port]` of the URL, for messages and [`StorageInfo`].
    host: String,
    bucket: String,
    bucket_segment: String,
    public: OnceCell<bool>,
    signed_url_ttl: Duration,
    /// Bound on waiting for an answer, and on each read of a streamed body. (reqwest's own
    /// read timeout runs from the start of the request, which would cut long uploads.)
    timeout: Duration,
}

impl fmt::Debug for SupabaseStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseStorage")
            .field("base", &self.base)
            .field("bucket", &self.bucket)
            .field("public", &self.public.get())
            .finish_non_exhaustive()
    }
}

impl SupabaseStorage {
    /// Validates the config and builds the HTTP client. Does no I/O.
    pub fn new(cfg: SupabaseConfig) -> Result<Self> {
        let op = "supabase.new";
        let trimmed = cfg.url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/storage/v1").unwrap_or(trimmed);
        let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
            Error::config(format!("SUPABASE_URL '{trimmed}' is not a valid URL"))
                .with_operation(op)
                .with_source(e)
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::config(format!(
                "SUPABASE_URL '{trimmed}' must be an http(s) URL with a host"
            ))
            .with_operation(op));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::config(format!(
                "SUPABASE_URL '{trimmed}' must not have a query or fragment"
            ))
            .with_operation(op));
        }
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        if cfg.key.trim().is_empty() {
            return Err(Error::config("SUPABASE_KEY is empty").with_operation(op));
        }
        if cfg.bucket.trim().is_empty() {
            return Err(Error::config("the Supabase bucket name is empty").with_operation(op));
        }
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", cfg.key.trim())).map_err(|_| {
                Error::config("SUPABASE_KEY contains characters not allowed in a header")
                    .with_operation(op)
            })?;
        bearer.set_sensitive(true);
        let mut apikey = HeaderValue::from_str(cfg.key.trim()).map_err(|_| {
            Error::config("SUPABASE_KEY contains characters not allowed in a header")
                .with_operation(op)
        })?;
        apikey.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, bearer);
        // The hosted gateway checks `apikey`; the storage server itself reads only the Bearer.
        headers.insert("apikey", apikey);

        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!(
                "nodetool-storage-supabase/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Unexpected, "could not build the HTTP client")
                    .with_operation(op)
                    .with_source(e)
            })?;
        let public = OnceCell::new_with(cfg.public);
        Ok(Self {
            client,
            base: format!("{trimmed}/storage/v1"),
            host,
            bucket_segment: encode_segment(&cfg.bucket).to_string(),
            bucket: cfg.bucket,
            public,
            signed_url_ttl: cfg.signed_url_ttl,
            timeout: cfg.timeout,
        })
    }

    /// The bucket this instance reads and writes.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The public URL of `key`: what [`Storage::url`] returns for a public bucket.
    pub fn public_url(&self, key: &StorageKey) -> String {
        self.route("object/public", key)
    }

    /// Whether the bucket is public: from the config, else asked once and remembered.
    pub async fn is_public(&self) -> Result<bool> {
        self.public
            .get_or_try_init(|| async {
                #[derive(Deserialize)]
                struct BucketRow {
                    public: bool,
                }
                let op = "supabase.bucket_info";
                let url = format!("{}/bucket/{}", self.base, self.bucket_segment);
                let resp = self.send(op, self.client.get(url), None).await?;
                let row: BucketRow = self.json(op, resp, None).await?;
                tracing::debug!(bucket = %self.bucket, public = row.public, "supabase bucket visibility");
                Ok(row.public)
            })
            .await
            .copied()
    }

    /// `{base}/{route}/{bucket}/{key}` with every key segment percent-encoded.
    fn route(&self, route: &str, key: &StorageKey) -> String {
        let mut url = format!("{}/{route}/{}", self.base, self.bucket_segment);
        for segment in encode_name(key.as_str()).split('/') {
            url.push('/');
            url.extend(encode_segment(segment));
        }
        url
    }

    /// Sends a request and waits at most `timeout` for the answer's head; a non-2xx answer
    /// becomes an error built from its body.
    async fn send(
        &self,
        op: &'static str,
        req: RequestBuilder,
        key: Option<&StorageKey>,
    ) -> Result<Response> {
        match tokio::time::timeout(self.timeout, self.send_unbounded(op, req, key)).await {
            Ok(result) => result,
            Err(_) => Err(with_key(self.timed_out(op), key)),
        }
    }

    /// [`Self::send`] without the deadline, for uploads: sending the body may take any time
    /// (the connect timeout still bounds an unreachable server).
    async fn send_unbounded(
        &self,
        op: &'static str,
        req: RequestBuilder,
        key: Option<&StorageKey>,
    ) -> Result<Response> {
        let resp = req
            .send()
            .await
            .map_err(|e| with_key(transport_error(op, &self.host, e), key))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = tokio::time::timeout(self.timeout, read_limited(resp, MAX_ERROR_BODY))
            .await
            .unwrap_or_default();
        let err = api_error(op, status, &body, &self.bucket, &self.host);
        Err(match key {
            // One NotFound shape for every backend.
            Some(key) if err.kind() == ErrorKind::NotFound => {
                not_found(SCHEME, key).with_operation(op).with_source(err)
            }
            _ => with_key(err, key),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        resp: Response,
        key: Option<&StorageKey>,
    ) -> Result<T> {
        let body = tokio::time::timeout(self.timeout, resp.bytes())
            .await
            .map_err(|_| with_key(self.timed_out(op), key))?
            .map_err(|e| with_key(transport_error(op, &self.host, e), key))?;
        serde_json::from_slice(&body).map_err(|e| {
            with_key(
                Error::unexpected(format!(
                    "Supabase at {} sent an answer we cannot read: {}",
                    self.host,
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ))
                .with_operation(op)
                .with_source(e),
                key,
            )
        })
    }

    fn timed_out(&self, op: &'static str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "Supabase at {} did not answer within {:?} (check SUPABASE_URL)",
                self.host, self.timeout
            ),
        )
        .with_operation(op)
    }

    async fn info_of(&self, op: &'static str, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        let url = self.route("object/info", key);
        let resp = match self.send(op, self.client.get(url), Some(key)).await {
            Ok(resp) => resp,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let info: InfoBody = self.json(op, resp, Some(key)).await?;
        let stamp = info
            .last_modified
            .or(info.updated_at)
            .or(info.created_at)
            .ok_or_else(|| {
                Error::unexpected("Supabase object info has no last_modified")
                    .with_operation(op)
                    .with_context("key", key)
            })?;
        Ok(Some(ObjectMeta {
            key: key.clone(),
            size: info.size.unwrap_or(0),
            last_modified: parse_timestamp(&stamp)
                .map_err(|e| e.with_operation(op).with_context("key", key))?,
            etag: info.etag,
            content_type: info.content_type,
        }))
    }

    /// Every entry of one folder level, all pages.
    async fn list_folder(&self, folder: &str, search: Option<&str>) -> Result<Vec<ListEntry>> {
        let mut entries = Vec::new();
        loop {
            let page = self.list_page(folder, search, entries.len()).await?;
            let n = page.len();
            entries.extend(page);
            if n < LIST_PAGE {
                return Ok(entries);
            }
        }
    }

    /// Whether some segment of `folder` (encoded) also exists in another letter case, in
    /// which case listing `folder` mixes in the variant's objects.
    async fn has_case_variants(&self, folder: &str) -> Result<bool> {
        let mut parent = String::new();
        for segment in folder.split('/').filter(|s| !s.is_empty()) {
            let entries = self.list_folder(&parent, Some(segment)).await?;
            let variant = entries.iter().any(|e| {
                e.id.is_none() && e.name != segment && e.name.eq_ignore_ascii_case(segment)
            });
            if variant {
                return Ok(true);
            }
            parent = join(&parent, segment);
        }
        Ok(false)
    }

    /// One page of one folder level.
    async fn list_page(
        &self,
        folder: &str,
        search: Option<&str>,
        offset: usize,
    ) -> Result<Vec<ListEntry>> {
        let op = "supabase.list";
        let mut body = serde_json::json!({
            "prefix": folder,
            "limit": LIST_PAGE,
            "offset": offset,
            "sortBy": {"column": "name", "order": "asc"},
        });
        if let Some(search) = search.filter(|s| !s.is_empty()) {
            body["search"] = serde_json::Value::String(search.to_owned());
        }
        let url = format!("{}/object/list/{}", self.base, self.bucket_segment);
        let resp = self
            .send(op, self.client.post(url).json(&body), None)
            .await
            .map_err(|e| e.with_context("prefix", folder))?;
        self.json(op, resp, None).await
    }
}

#[async_trait]
impl Storage for SupabaseStorage {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            scheme: SCHEME,
            location: format!("{}@{}", self.bucket, self.host),
            capabilities: StorageCapabilities {
                presign: true,
                durable: true,
            },
        }
    }

    async fn upload(
        &self,
        key: &StorageKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let op = "supabase.upload";
        let content_type = opts.effective_content_type(key);
        // reqwest only sees an opaque error when the caller's stream fails; keep the real one.
        let stream_error: Arc<Mutex<Option<Error>>> = Arc::default();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = {
            let stream_error = Arc::clone(&stream_error);
            let sent = Arc::clone(&sent);
            body.map(move |chunk| match chunk {
                Ok(bytes) => {
                    sent.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Ok(bytes)
                }
                Err(e) => {
                    if let Ok(mut slot) = stream_error.lock() {
                        *slot = Some(e);
                    }
                    // Failing the body aborts the request, so the server never commits it.
                    Err(std::io::Error::other("upload body stream failed"))
                }
            })
        };
        let req = self
            .client
            .post(self.route("object", key))
            .header(header::CONTENT_TYPE, &content_type)
            .header("x-upsert", "true")
            .body(reqwest::Body::wrap_stream(body));
        let result = self.send_unbounded(op, req, Some(key)).await;
        if let Some(e) = stream_error.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(e.with_operation(op).with_context("key", key));
        }
        result?;
        let size = sent.load(std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(bucket = %self.bucket, %key, size, "supabase upload");
        // The upload answer carries only Key and Id; etag and mtime come from info.
        match self.info_of(op, key).await {
            Ok(Some(meta)) => Ok(meta),
            other => {
                if let Err(e) = &other {
                    tracing::warn!(%key, error = %e, "supabase upload succeeded but info failed");
                }
                Ok(ObjectMeta {
                    key: key.clone(),
                    size,
                    last_modified: Utc::now(),
                    etag: None,
                    content_type: Some(content_type),
                })
            }
        }
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        let op = "supabase.download";
        if let Some(r @ ByteRange::Bounded { start, end }) = range {
            if start > end {
                return Err(
                    Error::invalid_input(format!("range {r} ends before it starts"))
                        .with_operation(op)
                        .with_context("key", key),
                );
            }
        }
        let mut req = self.client.get(self.route("object", key));
        if let Some(r) = range {
            req = req.header(header::RANGE, r.to_string());
        }
        let resp = self.send(op, req, Some(key)).await.map_err(|e| {
            if e.kind() == ErrorKind::RangeNotSatisfiable {
                e.with_context("range", range.map(|r| r.to_string()).unwrap_or_default())
            } else {
                e
            }
        })?;
        let headers = resp.headers().clone();
        let content_length =
            header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        // The object's size, and the part of it the body carries.
        let (size, sent): (u64, Range<u64>) = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let cr = header_str(&headers, header::CONTENT_RANGE).unwrap_or_default();
            parse_content_range(cr).ok_or_else(|| {
                Error::unexpected(format!("Supabase sent 206 with content-range '{cr}'"))
                    .with_operation(op)
                    .with_context("key", key)
            })?
        } else {
            let size = match content_length {
                Some(n) => n,
                // A gateway may re-chunk the answer; ask for the size instead of guessing.
                None => {
                    self.info_of(op, key)
                        .await?
                        .ok_or_else(|| not_found(SCHEME, key).with_operation(op))?
                        .size
                }
            };
            (size, 0..size)
        };
        let wanted = match range {
            Some(r) => r
                .resolve(size)
                .map_err(|e| e.with_operation(op).with_context("key", key))?,
            None => 0..size,
        };
        if wanted.start < sent.start || wanted.end > sent.end {
            return Err(Error::unexpected(format!(
                "Supabase sent bytes {}..{} of {size}, we asked for {}..{}",
                sent.start, sent.end, wanted.start, wanted.end
            ))
            .with_operation(op)
            .with_context("key", key));
        }
        let stream = idle_timeout(
            resp.bytes_stream()
                .map_err({
                    let host = self.host.clone();
                    move |e| transport_error(op, &host, e)
                })
                .boxed(),
            self.timeout,
            self.timed_out(op).with_context("key", key),
        );
        // A server that ignored Range (or sent more) is trimmed here, never buffered.
        let body = if wanted == sent {
            stream
        } else {
            slice_stream(stream, wanted.start - sent.start, wanted.end - wanted.start)
        };
        let last_modified = header_str(&headers, header::LAST_MODIFIED)
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(Utc::now);
        Ok(Download {
            meta: ObjectMeta {
                key: key.clone(),
                size,
                last_modified,
                etag: header_str(&headers, header::ETAG).map(str::to_owned),
                content_type: header_str(&headers, header::CONTENT_TYPE).map(str::to_owned),
            },
            range: wanted,
            body,
        })
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        self.info_of("supabase.metadata", key).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        let op = "supabase.delete";
        // Deleting by "prefixes" (which are exact keys) answers 200 for a missing key, so the
        // call is idempotent without a NotFound special case.
        let url = format!("{}/object/{}", self.base, self.bucket_segment);
        let body = serde_json::json!({ "prefixes": [encode_name(key.as_str())] });
        self.send(op, self.client.delete(url).json(&body), Some(key))
            .await?;
        Ok(())
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        let op = "supabase.list";
        // Supabase lists one folder level at a time and matches folder paths
        // case-insensitively, so `dir` also returns what is under `DIR/`, with names relative
        // to the folder. Walk the folders, keep exactly the keys that start with `prefix`, and
        // where a folder has case variants, confirm each object by its exact name.
        let encoded = encode_name(prefix.as_str());
        let p = encoded.as_str();
        let (root, search) = match p.rfind('/') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => ("", p),
        };
        let root_ambiguous = self.has_case_variants(root).await?;
        let mut pending: Vec<(String, Option<String>, bool)> = vec![(
            root.to_owned(),
            Some(search.to_owned()).filter(|s| !s.is_empty()),
            root_ambiguous,
        )];
        let mut out = Vec::new();
        while let Some((folder, search, ambiguous)) = pending.pop() {
            let entries = self.list_folder(&folder, search.as_deref()).await?;
            let folder_names: Vec<&str> = entries
                .iter()
                .filter(|e| e.id.is_none())
                .map(|e| e.name.as_str())
                .collect();
            let mut children = Vec::new();
            for name in &folder_names {
                if search.as_deref().is_some_and(|s| !name.starts_with(s)) {
                    continue;
                }
                let variants = folder_names
                    .iter()
                    .any(|other| other != name && other.eq_ignore_ascii_case(name));
                children.push((join(&folder, name), None, ambiguous || variants));
            }
            pending.extend(children);
            for entry in entries.into_iter().filter(|e| e.id.is_some()) {
                let full = join(&folder, &entry.name);
                let Some(Ok(key)) = decode_name(&full).map(StorageKey::new) else {
                    tracing::warn!(name = %full, "skipping a Supabase object whose name is not a valid key");
                    continue;
                };
                if !prefix.matches(&key) {
                    continue;
                }
                if ambiguous {
                    // The entry may belong to a case variant of this folder: ask by exact name.
                    if let Some(meta) = self.info_of(op, &key).await? {
                        out.push(meta);
                    }
                } else {
                    out.push(entry.into_meta(key).map_err(|e| e.with_operation(op))?);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        if self
            .is_public()
            .await
            .map_err(|e| e.with_context("key", key))?
        {
            Ok(self.public_url(key))
        } else {
            self.presigned_url(key, self.signed_url_ttl).await
        }
    }

    async fn presigned_url(&self, key: &StorageKey, expires_in: Duration) -> Result<String> {
        let op = "supabase.presigned_url";
        #[derive(Deserialize)]
        struct Signed {
            #[serde(rename = "signedURL")]
            signed_url: String,
        }
        // The server wants whole seconds >= 1; round up so the URL never dies early.
        let secs = expires_in.as_secs() + u64::from(expires_in.subsec_nanos() > 0);
        let body = serde_json::json!({ "expiresIn": secs.max(1) });
        let req = self.client.post(self.route("object/sign", key)).json(&body);
        let resp = self.send(op, req, Some(key)).await?;
        let signed: Signed = self.json(op, resp, Some(key)).await?;
        Ok(self.absolute_signed_url(&signed.signed_url))
    }
}

impl SupabaseStorage {
    /// The server answers with a path relative to `/storage/v1` whose key part is *decoded*
    /// (`/object/sign/b/sp ace.txt?token=...`); re-encode each segment and prefix the base.
    fn absolute_signed_url(&self, signed: &str) -> String {
        if signed.starts_with("http://") || signed.starts_with("https://") {
            return signed.to_owned();
        }
        let (path, query) = signed.split_once('?').unwrap_or((signed, ""));
        let mut url = self.base.clone();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            url.push('/');
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            url.extend(encode_segment(&decoded));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

#[derive(Deserialize)]
struct InfoBody {
    size: Option<u64>,
    content_type: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    updated_at: Option<String>,
    created_at: Option<String>,
}

/// One `POST /object/list` entry; folders have `id: null` and no metadata.
#[derive(Deserialize)]
struct ListEntry {
    name: String,
    id: Option<serde_json::Value>,
    updated_at: Option<String>,
    created_at: Option<String>,
    metadata: Option<ListMetadata>,
}

#[derive(Deserialize)]
struct ListMetadata {
    size: Option<u64>,
    mimetype: Option<String>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
}

impl ListEntry {
    fn into_meta(self, key: StorageKey) -> Result<ObjectMeta> {
        let meta = self.metadata;
        // `updated_at` is what `/object/info` reports as `last_modified`: keep the two equal.
        let stamp = self
            .updated_at
            .or_else(|| meta.as_ref().and_then(|m| m.last_modified.clone()))
            .or(self.created_at);
        let last_modified = match stamp {
            Some(s) => parse_timestamp(&s).map_err(|e| e.with_context("key", &key))?,
            None => Utc::now(),
        };
        Ok(ObjectMeta {
            size: meta.as_ref().and_then(|m| m.size).unwrap_or(0),
            etag: meta.as_ref().and_then(|m| m.etag.clone()),
            content_type: meta.and_then(|m| m.mimetype),
            last_modified,
            key,
        })
    }
}

/// Supabase accepts only `A-Za-z0-9 _/!.*'()&$=@;:+,?-` in object names and refuses the rest
/// (non-ASCII included) with `InvalidKey`. So every other byte of the key's UTF-8, and `!` itself
/// (the escape character), is stored as `!XX` (uppercase hex). Keys made of the accepted
/// characters other than `!` are stored unchanged, so objects written by other clients keep
/// their names. The mapping is per byte, so it keeps `/` and prefixes: `encode(p)` is a prefix of
/// `encode(k)` exactly when `p` is a prefix of `k`.
pub fn encode_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b != b'!' && (b.is_ascii_alphanumeric() || b"_/.*'() &$=@;:+,?-".contains(&b)) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("!{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_name`]; `None` when the name does not decode to UTF-8. A `!` not
/// followed by two hex digits (a name another client wrote) is kept as it is.
pub fn decode_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| char::from(b).to_digit(16);
    while i < bytes.len() {
        // Two hex digits exactly: `u8::from_str_radix` would also take `+1` (a sign).
        let escaped = (bytes[i] == b'!')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten()
            .and_then(|(hi, lo)| u8::try_from(hi * 16 + lo).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses the timestamps Supabase sends: RFC 3339 with or without fractional seconds, `Z` or an
/// offset; also Postgres' `2026-11-22 17:02:16.044+00` and offset-less UTC.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let spaced = s.replacen(' ', "T", 1);
    // `+00` (Postgres) is not RFC 3339; give it minutes.
    let padded = match spaced.rfind(['+', '-']) {
        Some(i) if i > 10 && spaced.len() - i == 3 => format!("{spaced}:00"),
        _ => spaced.clone(),
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&padded) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&spaced, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    Err(Error::unexpected(format!(
        "cannot read Supabase timestamp '{s}'"
    )))
}

/// `bytes a-b/total` → (total, a..b+1).
fn parse_content_range(v: &str) -> Option<(u64, Range<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total) = (
        a.parse::<u64>().ok()?,
        b.parse::<u64>().ok()?,
        total.parse().ok()?,
    );
    (a <= b && b < total).then_some((total, a..b + 1))
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn with_key(err: Error, key: Option<&StorageKey>) -> Error {
    match key {
        Some(key) => err.with_context("key", key),
        None => err,
    }
}

/// Reads at most `limit` bytes of a body; errors end the read (this is for error messages).
async fn read_limited(resp: Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// Ends a stream with `err` when no chunk arrives for `idle`: a stalled server cannot hang a
/// reader, and a long download is not cut off as long as data flows.
fn idle_timeout(body: ByteStream, idle: Duration, err: Error) -> ByteStream {
    futures::stream::unfold(Some((body, err)), move |state| async move {
        let (mut body, err) = state?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(item)) => Some((item, Some((body, err)))),
            Ok(None) => None,
            Err(_) => Some((Err(err), None)),
        }
    })
    .boxed()
}

/// Skips `skip` bytes of a stream and yields the next `len`.
fn slice_stream(body: ByteStream, skip: u64, len: u64) -> ByteStream {
    body.scan((skip, len), |(skip, remaining), item| {
        let out = match item {
            Err(e) => Some(Some(Err(e))),
            Ok(_) if *remaining == 0 => None,
            Ok(mut chunk) => {
                let n = chunk.len() as u64;
                if *skip >= n {
                    *skip -= n;
                    Some(None)
                } else {
                    chunk = chunk.slice(usize::try_from(*skip).unwrap_or(0)..);
                    *skip = 0;
                    let take = (*remaining).min(chunk.len() as u64);
                    chunk.truncate(usize::try_from(take).unwrap_or(chunk.len()));
                    *remaining -= take;
                    Some(Some(Ok::<Bytes, Error>(chunk)))
                }
            }
        };
        futures::future::ready(out)
    })
    .filter_map(futures::future::ready)
    .boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_in_every_shape_supabase_uses() {
        let want = DateTime::parse_from_rfc3339("2026-11-22T17:02:16.044Z")
            .unwrap()
            .with_timezone(&Utc);
        for s in [
            "2026-11-22T17:02:16.044Z",
            "2026-11-22T17:02:16.044+00:00",
            "2026-11-22 17:02:16.044+00",
            "2026-11-22T17:02:16.044",
            "2026-11-22T19:02:16.044+02:00",
        ] {
            assert_eq!(parse_timestamp(s).unwrap(), want, "{s}");
        }
        let whole = parse_timestamp("2026-11-22T17:02:16Z").unwrap();
        assert_eq!(whole.timestamp_subsec_millis(), 0);
        assert_eq!(parse_timestamp("2026-11-22T17:02:16+00:00").unwrap(), whole);
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn names_are_escaped_reversibly_and_keep_prefixes() {
        assert_eq!(encode_name("dir/a b+c(1).png"), "dir/a b+c(1).png");
        assert_eq!(encode_name("ünï/x!%.txt"), "!C3!BCn!C3!AF/x!21!25.txt");
        for key in [
            "ünï cødé/ファイル.txt",
            "sp ace+plus%pct.bin",
            "a!b",
            "!!41",
            "plain/key.png",
        ] {
            assert_eq!(
                decode_name(&encode_name(key)).as_deref(),
                Some(key),
                "{key}"
            );
        }
        assert_eq!(decode_name("other!client").as_deref(), Some("other!client"));
        // Found while writing the storage_keys fuzz target: a sign is not a hex digit, so a
        // name another client wrote as `a!+2fb` is not the key `a/b`.
        assert_eq!(decode_name("a!+2fb").as_deref(), Some("a!+2fb"));
        assert_eq!(decode_name("x!-1").as_deref(), Some("x!-1"));
        assert_eq!(decode_name("x!+1").as_deref(), Some("x!+1"));
        assert_eq!(decode_name("!2F!2f").as_deref(), Some("//"));
        assert!(encode_name("ünï/x").starts_with(&encode_name("ün")));
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-4/12"), Some((12, 0..5)));
        assert_eq!(parse_content_range("bytes 9-11/12"), Some((12, 9..12)));
        assert_eq!(parse_content_range("bytes 9-12/12"), None);
        assert_eq!(parse_content_range("bytes */12"), None);
    }

    #[tokio::test]
    async fn slicing_a_stream_across_chunk_boundaries() {
        let chunks: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hel")),
            Ok(Bytes::from_static(b"lo w")),
            Ok(Bytes::from_static(b"orld\n")),
        ];
        let body = futures::stream::iter(chunks).boxed();
        let got = nodetool_core::storage::collect(slice_stream(body, 4, 5))
            .await
            .unwrap();
        assert_eq!(&got[..], b"o wor");
    }

    #[test]
    fn config_debug_hides_the_key_and_urls_are_encoded() {
        let mut cfg = SupabaseConfig::new("https://example.supabase.co/", "secret-key", "assets");
        cfg.public = Some(true);
        assert!(!format!("{cfg:?}").contains("secret-key"));
        let storage = SupabaseStorage::new(cfg).unwrap();
        assert!(!format!("{storage:?}").contains("secret-key"));
        let key = StorageKey::new("images/sp ace?#%.png").unwrap();
        assert_eq!(
            storage.public_url(&key),
            "https://example.supabase.co/storage/v1/object/public/assets/images/sp%20ace%3F%2123%2125.png"
        );
        assert_eq!(storage.info().location, "assets@example.supabase.co");
        assert_eq!(
            storage.absolute_signed_url("/object/sign/assets/a b/c.txt?token=x.y.z"),
            "https://example.supabase.co/storage/v1/object/sign/assets/a%20b/c.txt?token=x.y.z"
        );
    }

    #[test]
    fn bad_config_is_refused_naming_the_setting() {
        for (url, key, needle) in [
            ("not a url", "k", "SUPABASE_URL"),
            ("ftp://x.supabase.co", "k", "SUPABASE_URL"),
            ("https://x.supabase.co", " ", "SUPABASE_KEY"),
        ] {
            let err = SupabaseStorage::new(SupabaseConfig::new(url, key, "b")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let s = SupabaseStorage::new(SupabaseConfig::new(
            "http://127.0.0.1:9/storage/v1/",
            "k",
            "b",
        ))
        .unwrap();
        assert_eq!(s.base, "http://127.0.0.1:9/storage/v1");
    }
}
