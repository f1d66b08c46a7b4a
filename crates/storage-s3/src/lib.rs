//! S3 and S3-compatible (MinIO, Wasabi, moto) storage through OpenDAL.
//!
//! [`S3Storage`] implements [`nodetool_core::Storage`]: streamed multipart uploads that never
//! leave a partial object, one HEAD plus one ranged GET per download, Content-Type stored and
//! served back, recursive sorted listing, public-domain or presigned URLs. Configuration is plain
//! data ([`S3Config`]); this crate never reads environment variables itself (`crates/config`
//! maps `S3_*` / `ASSET_*` onto the config).

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use nodetool_core::storage::{not_found, ByteStream, Download};
use nodetool_core::{
    ByteRange, Error, ErrorKind, ObjectMeta, PutOptions, Result, Storage, StorageCapabilities,
    StorageInfo, StorageKey, StoragePrefix,
};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::services::S3;
use opendal::Operator;

const SCHEME: &str = "s3";

/// Multipart part size. S3 needs parts of at least 5 MiB; 8 MiB matches boto3's threshold.
/// Memory per upload is bounded by `PART_SIZE * UPLOAD_CONCURRENCY`.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload.
const UPLOAD_CONCURRENCY: usize = 4;
/// HEAD+GET rounds a download makes when the object is replaced between the two.
const DOWNLOAD_ATTEMPTS: usize = 3;

/// Settings for one bucket. Plain data: `crates/config` fills it from `S3_*` / `ASSET_*`.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Default `us-east-1`.
    pub region: String,
    /// `S3_ENDPOINT_URL` (MinIO, Wasabi, moto). When set, requests use path-style addressing;
    /// when `None`, AWS with virtual-host addressing.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    /// Never printed by `Debug`.
    pub secret_access_key: Option<String>,
    /// `ASSET_DOMAIN` / `ASSET_TEMP_DOMAIN`: `url()` is `https://{domain}/{key}` (or
    /// `{domain}/{key}` when the domain already has a scheme).
    pub public_domain: Option<String>,
    /// Key prefix inside the bucket, e.g. `"temp/"`; keys given to and listed by the storage are
    /// relative to it.
    pub root: Option<String>,
    /// How long `url()` presigns a GET when there is no public domain. Default 1 h.
    pub presign_ttl: Duration,
    /// Deadline for each request (and each body read/write step). Default 30 s.
    pub timeout: Duration,
    /// Retries of a temporary failure, with jittered backoff. Default 3.
    pub max_retries: usize,
}

impl S3Config {
    /// A config for `bucket` with the defaults above and no credentials.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            ..Self::default()
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".to_owned(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            public_domain: None,
            root: None,
            presign_ttl: Duration::from_secs(3600),
            timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("public_domain", &self.public_domain)
            .field("root", &self.root)
            .field("presign_ttl", &self.presign_ttl)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// Where requests go, for error messages and `info()`.
#[derive(Debug, Clone)]
struct Target {
    bucket: String,
    endpoint: String,
}

/// [`Storage`] on one S3 bucket (optionally under a key prefix).
pub struct S3Storage {
    op: Operator,
    target: Target,
    /// Normalised root: empty, or segments ending in `/`.
    root: String,
    public_domain: Option<String>,
    presign_ttl: Duration,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the Operator: its config holds the credentials.
        f.debug_struct("S3Storage")
            .field("bucket", &self.target.bucket)
            .field("endpoint", &self.target.endpoint)
            .field("root", &self.root)
            .field("public_domain", &self.public_domain)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Builds the client. Does no I/O: a wrong endpoint or key shows up on the first request.
    pub fn new(cfg: S3Config) -> Result<Self> {
        let invalid = |msg: String| Error::config(msg).with_operation("s3.new");
        if cfg.bucket.trim().is_empty() {
            return Err(invalid(
                "the S3 bucket name is empty; set ASSET_BUCKET (or ASSET_TEMP_BUCKET)".to_owned(),
            ));
        }
        if cfg.access_key_id.is_some() != cfg.secret_access_key.is_some() {
            return Err(invalid(
                "S3 credentials are incomplete: set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither to use the AWS default chain (IAM role, profile)"
                    .to_owned(),
            ));
        }
        let root = normalise_root(cfg.root.as_deref().unwrap_or(""))
            .map_err(|e| e.with_operation("s3.new"))?;
        let region = if cfg.region.trim().is_empty() {
            "us-east-1"
        } else {
            cfg.region.trim()
        };
        let endpoint = cfg
            .endpoint
            .as_deref()
            .map(|e| e.trim().trim_end_matches('/').to_owned())
            .filter(|e| !e.is_empty());
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(format!(
                    "S3_ENDPOINT_URL '{e}' must start with http:// or https://"
                )));
            }
        }

        // The default transport (reqwest) is process-wide; installing it twice is a no-op.
        opendal::install_default();

        let mut builder = S3::default()
            .bucket(&cfg.bucket)
            .region(region)
            .root(&format!("/{root}"));
        match &endpoint {
            Some(e) => builder = builder.endpoint(e),
            // AWS itself: path-style is deprecated there.
            None => builder = builder.enable_virtual_host_style(),
        }
        match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => {
                // Static keys given: ignore ambient AWS_* variables and profiles, and never probe
                // the EC2 metadata service.
                builder = builder
                    .access_key_id(id)
                    .secret_access_key(secret)
                    .disable_config_load()
                    .disable_ec2_metadata();
            }
            _ if endpoint.is_some() => {
                // MinIO & co. have no instance metadata service.
                builder = builder.disable_ec2_metadata();
            }
            _ => {}
        }

        let op = Operator::new(builder)
            .map_err(|e| {
                Error::config(format!("invalid S3 configuration: {e}")).with_operation("s3.new")
            })?
            // Timeout inside retry: each attempt gets its own deadline and a timed-out attempt
            // is retried like any other temporary failure.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(cfg.timeout)
                    .with_io_timeout(cfg.timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(cfg.max_retries)
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_jitter(),
            );

        let target = Target {
            bucket: cfg.bucket.clone(),
            endpoint: endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com")),
        };
        Ok(Self {
            op,
            target,
            root,
            public_domain: cfg
                .public_domain
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
            presign_ttl: cfg.presign_ttl,
        })
    }

    fn fail(&self, err: opendal::Error, operation: &'static str, key: &StorageKey) -> Error {
        map_error(err, &self.target)
            .with_operation(operation)
            .with_context("key", key)
    }

    /// One HEAD. `Ok(None)` when the object is missing.
    async fn stat(&self, key: &StorageKey, operation: &'static str) -> Result<Option<ObjectMeta>> {
        match self.op.stat(key.as_str()).await {
            Ok(meta) => Ok(Some(to_meta(key.clone(), &meta))),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail(e, operation, key)),
        }
    }

    /// One HEAD, then one ranged GET pinned to the HEAD's ETag. The first body chunk is awaited
    /// here so that a 412 (object replaced in between) surfaces before the caller gets a body.
    async fn try_download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        const OP: &str = "s3.download";
        let meta = self
            .stat(key, OP)
            .await?
            .ok_or_else(|| not_found(SCHEME, key).with_operation(OP))?;
        let range: Range<u64> = match range {
            Some(r) => r
                .resolve(meta.size)
                .map_err(|e| e.with_operation(OP).with_context("key", key))?,
            None => 0..meta.size,
        };
        if range.is_empty() {
            return Ok(Download {
                meta,
                range,
                body: futures::stream::empty().boxed(),
            });
        }
        let mut reader = self.op.reader_with(key.as_str());
        if let Some(etag) = &meta.etag {
            reader = reader.if_match(etag);
        }
        let reader = reader.await.map_err(|e| self.fail(e, OP, key))?;
        let stream = reader
            .into_bytes_stream(range.clone())
            .await
            .map_err(|e| self.fail(e, OP, key))?;
        let target = self.target.clone();
        let stream_key = key.clone();
        let mut body = stream
            .map(move |chunk| chunk.map_err(|e| map_io_error(e, &target, &stream_key)))
            .boxed();
        let first = match body.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(e),
            None => Bytes::new(),
        };
        let body = futures::stream::once(async move { Ok(first) })
            .chain(body)
            .boxed();
        Ok(Download { meta, range, body })
    }

    /// The key as stored in the bucket (with the root prefix).
    fn full_key(&self, key: &StorageKey) -> String {
        format!("{}{}", self.root, key.as_str())
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn info(&self) -> StorageInfo {
        let mut location = format!("{}@{}", self.target.bucket, self.target.endpoint);
        if !self.root.is_empty() {
            location = format!("{location}/{}", self.root);
        }
        StorageInfo {
            scheme: SCHEME,
            location,
            capabilities: StorageCapabilities {
                presign: true,
                durable: true,
            },
        }
    }

    async fn upload(
        &self,
        key: &StorageKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        const OP: &str = "s3.upload";
        let content_type = opts.effective_content_type(key);
        // The writer buffers up to PART_SIZE and switches to a multipart upload past it. Nothing
        // is visible until `close` (PUT, or CompleteMultipartUpload), so an error before then
        // leaves the previous object as it was.
        let mut writer = self
            .op
            .writer_with(key.as_str())
            .content_type(&content_type)
            .chunk(PART_SIZE)
            .concurrent(UPLOAD_CONCURRENCY)
            .await
            .map_err(|e| self.fail(e, OP, key))?;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let step = match chunk {
                Ok(bytes) if bytes.is_empty() => Ok(()),
                Ok(bytes) => {
                    written += bytes.len() as u64;
                    writer.write(bytes).await.map_err(|e| self.fail(e, OP, key))
                }
                Err(e) => Err(e.with_operation(OP).with_context("key", key)),
            };
            if let Err(err) = step {
                abort(&mut writer, key).await;
                return Err(err);
            }
        }
        if let Err(e) = writer.close().await {
            abort(&mut writer, key).await;
            return Err(self.fail(e, OP, key));
        }
        tracing::debug!(bucket = %self.target.bucket, key = %key, bytes = written, %content_type, "s3 upload done");
        // A PUT answer has no size or mtime: one HEAD gives the stored truth.
        self.stat(key, OP).await?.ok_or_else(|| {
            Error::unexpected("the object is missing right after a successful upload")
                .with_operation(OP)
                .with_context("key", key)
                .set_temporary(true)
        })
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        // An overwrite between our HEAD and GET makes the GET fail its If-Match (412); describe
        // and read the new version instead, a bounded number of times.
        let mut attempt = 1;
        loop {
            match self.try_download(key, range).await {
                Err(e)
                    if e.kind() == ErrorKind::Unexpected
                        && e.context_value("changed") == Some("true")
                        && attempt < DOWNLOAD_ATTEMPTS =>
                {
                    tracing::debug!(key = %key, attempt, "s3 download: object replaced mid-read, retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        self.stat(key, "s3.metadata").await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        // S3 DELETE is idempotent, and OpenDAL maps a 404 to Ok.
        self.op
            .delete(key.as_str())
            .await
            .map_err(|e| self.fail(e, "s3.delete", key))
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        const OP: &str = "s3.list";
        let p = prefix.as_str();
        // OpenDAL lists directories; list the prefix's directory recursively and keep what
        // matches, so "a/b" matches "a/b.png" as S3's own prefix does.
        let dir = match p.rfind('/') {
            Some(i) => &p[..=i],
            None => "/",
        };
        let entries = match self.op.list_with(dir).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(map_error(e, &self.target)
                    .with_operation(OP)
                    .with_context("prefix", prefix))
            }
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let (path, meta) = entry.into_parts();
            if !meta.is_file() || path.ends_with('/') || !path.starts_with(p) {
                continue;
            }
            match StorageKey::new(path.as_str()) {
                Ok(key) => out.push(to_meta(key, &meta)),
                // Written by someone else with a name we refuse (e.g. "a//b"): not ours to show.
                Err(_) => {
                    tracing::debug!(path = %path, "s3 list: skipping an object whose key is not a valid StorageKey")
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        match &self.public_domain {
            Some(domain) => Ok(public_url(domain, &self.full_key(key))),
            None => self.presigned_url(key, self.presign_ttl).await,
        }
    }

    async fn presigned_url(&self, key: &StorageKey, expires_in: Duration) -> Result<String> {
        let req = self
            .op
            .presign_read(key.as_str(), expires_in)
            .await
            .map_err(|e| self.fail(e, "s3.presigned_url", key))?;
        Ok(req.uri().to_string())
    }

    async fn upload_bytes(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.upload(key, nodetool_core::storage::once(bytes), opts)
            .await
    }
}

async fn abort(writer: &mut opendal::Writer, key: &StorageKey) {
    // Best effort: an unaborted multipart upload is invisible anyway (and bucket lifecycle rules
    // reap it); the caller's error is the one that matters.
    if let Err(e) = writer.abort().await {
        tracing::warn!(key = %key, error = %e, "s3: aborting a failed upload failed");
    }
}

fn normalise_root(root: &str) -> Result<String> {
    let trimmed = root.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    // Same rules as keys: no traversal through the root either.
    StoragePrefix::new(format!("{trimmed}/")).map_err(|e| {
        Error::config(format!("invalid S3 root '{root}': {}", e.message())).with_source(e)
    })?;
    Ok(format!("{trimmed}/"))
}

fn to_meta(key: StorageKey, meta: &opendal::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.content_length(),
        last_modified: meta
            .last_modified()
            .map(|t| DateTime::<Utc>::from(std::time::SystemTime::from(t)))
            // S3 always sends Last-Modified; an S3-alike that does not gets "now".
            .unwrap_or_else(Utc::now),
        etag: meta.etag().map(str::to_owned),
        content_type: meta.content_type().map(str::to_owned),
    }
}

/// `https://{domain}/{key}`, or `{domain}/{key}` when the domain has a scheme; each key segment
/// percent-encoded.
fn public_url(domain: &str, full_key: &str) -> String {
    let domain = domain.trim_end_matches('/');
    let base = if domain.starts_with("http://") || domain.starts_with("https://") {
        domain.to_owned()
    } else {
        format!("https://{domain}")
    };
    nodetool_core::url::join_path(&base, full_key)
}

/// Maps an OpenDAL error to ours, naming the setting to check.
fn map_error(err: opendal::Error, target: &Target) -> Error {
    use opendal::ErrorKind as O;
    let chain = error_chain(&err);
    let lower = chain.to_ascii_lowercase();
    let has = |code: &str| chain.contains(code);
    let endpoint = &target.endpoint;
    let bucket = &target.bucket;

    let (kind, message) = if err.kind() == O::PermissionDenied
        || has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
    {
        (
            ErrorKind::PermissionDenied,
            format!(
                "S3 at {endpoint} refused the request on bucket '{bucket}'; check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (and the bucket policy)"
            ),
        )
    } else if has("XMinioStorageFull")
        || has("QuotaExceeded")
        || has("InsufficientStorage")
        || has("507 Insufficient Storage")
    {
        // A full or over-quota store (MinIO's drive threshold, provider quotas, HTTP 507): the
        // client's `507`, not a retryable outage.
        (
            ErrorKind::StorageFull,
            format!("S3 at {endpoint} is out of space or over its quota for bucket '{bucket}'"),
        )
    } else if has("EntityTooLarge") {
        (
            ErrorKind::TooLarge,
            format!("the object is larger than S3 at {endpoint} accepts (bucket '{bucket}')"),
        )
    } else if has("NoSuchBucket") {
        (
            ErrorKind::NotFound,
            format!("S3 bucket '{bucket}' does not exist at {endpoint}; check ASSET_BUCKET (or ASSET_TEMP_BUCKET)"),
        )
    } else if lower.contains("timeout reached") || lower.contains("timed out") {
        (
            ErrorKind::Timeout,
            format!("S3 endpoint {endpoint} did not answer in time; check S3_ENDPOINT_URL and the network"),
        )
    } else if is_connect_failure(&err, &lower) {
        (
            ErrorKind::Unavailable,
            format!("cannot reach the S3 endpoint {endpoint}; check S3_ENDPOINT_URL and that the server is running"),
        )
    } else {
        let kind = match err.kind() {
            O::NotFound => ErrorKind::NotFound,
            O::RangeNotSatisfied => ErrorKind::RangeNotSatisfiable,
            O::RateLimited => ErrorKind::RateLimited,
            O::ConfigInvalid => ErrorKind::ConfigInvalid,
            O::Unsupported => ErrorKind::Unsupported,
            O::AlreadyExists => ErrorKind::AlreadyExists,
            _ => ErrorKind::Unexpected,
        };
        let message = match err.kind() {
            O::ConditionNotMatch => "the object changed while it was being read; retry".to_owned(),
            _ => format!("S3 request to {endpoint} (bucket '{bucket}') failed"),
        };
        (kind, message)
    };
    let temporary = err.is_temporary()
        || err.kind() == O::ConditionNotMatch
        || matches!(
            kind,
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::RateLimited
        );
    let mut mapped = Error::new(kind, message);
    if kind == ErrorKind::StorageFull {
        if let Some(words) = s3_error_message(&chain) {
            mapped = mapped.with_context(nodetool_core::error::STORE_SAYS, words);
        }
    }
    if err.kind() == O::ConditionNotMatch {
        mapped = mapped.with_context("changed", "true");
    }
    mapped
        .with_context("bucket", bucket)
        .with_context("endpoint", endpoint)
        .set_temporary(temporary)
        .with_source(err)
}

fn map_io_error(err: std::io::Error, target: &Target, key: &StorageKey) -> Error {
    let mapped = match err.into_inner() {
        Some(inner) => match inner.downcast::<opendal::Error>() {
            Ok(e) => map_error(*e, target),
            Err(other) => Error::new(ErrorKind::Unexpected, "reading the S3 response body failed")
                .set_temporary(true)
                .with_source(other),
        },
        None => Error::new(ErrorKind::Unexpected, "reading the S3 response body failed")
            .set_temporary(true),
    };
    mapped
        .with_operation("s3.download")
        .with_context("key", key)
}

/// Every message in the error's source chain, joined.
/// The `Message` of an S3 error document, as OpenDAL quotes it (`S3Error { code: "…",
/// message: "…", … }`) or as raw XML: the store's own words (it names no key or path; those
/// are in `Key` and `Resource`). At most 300 characters.
fn s3_error_message(chain: &str) -> Option<String> {
    let words = if let Some((_, rest)) = chain.split_once("message: \"") {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    } else {
        let (_, rest) = chain.split_once("<Message>")?;
        rest.split_once("</Message>")?.0.to_owned()
    };
    let words = words.trim();
    (!words.is_empty()).then(|| words.chars().take(300).collect())
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

fn is_connect_failure(err: &(dyn std::error::Error + 'static), lower_chain: &str) -> bool {
    use std::io::ErrorKind as Io;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::NotConnected
                    | Io::AddrNotAvailable
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    [
        "connection refused",
        "dns error",
        "failed to lookup address",
        "tcp connect error",
        "error trying to connect",
        "client error (connect)",
        "connection reset",
        "network is unreachable",
    ]
    .iter()
    .any(|needle| lower_chain.contains(needle))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            bucket: "assets".to_owned(),
            endpoint: "http://127.0.0.1:9".to_owned(),
        }
    }

    #[test]
    fn public_urls_follow_the_domain_form() {
        assert_eq!(
            public_url("cdn.example.com", "a/b.png"),
            "https://cdn.example.com/a/b.png"
        );
        assert_eq!(
            public_url("cdn.example.com/", "a/b.png"),
            "https://cdn.example.com/a/b.png"
        );
        assert_eq!(
            public_url("http://localhost:9000/bucket/", "x.png"),
            "http://localhost:9000/bucket/x.png"
        );
        assert_eq!(
            public_url("https://cdn.example.com", "temp/ü b+c.png"),
            "https://cdn.example.com/temp/%C3%BC%20b%2Bc.png"
        );
        // A host that merely starts with "http" is still a bare domain.
        assert_eq!(
            public_url("httpbin.example", "k"),
            "https://httpbin.example/k"
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let cfg = S3Config {
            access_key_id: Some("AKIAEXAMPLE".to_owned()),
            secret_access_key: Some("very-secret-value".to_owned()),
            ..S3Config::new("b")
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let storage = S3Storage::new(cfg).expect("config is valid");
        assert!(!format!("{storage:?}").contains("very-secret-value"));
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(
            S3Storage::new(S3Config::new("")).unwrap_err().kind(),
            ErrorKind::ConfigInvalid
        );
        let half = S3Config {
            access_key_id: Some("id".to_owned()),
            ..S3Config::new("b")
        };
        let err = S3Storage::new(half).unwrap_err();
        assert!(err.to_string().contains("S3_SECRET_ACCESS_KEY"), "{err}");
        let bad_endpoint = S3Config {
            endpoint: Some("localhost:9000".to_owned()),
            ..S3Config::new("b")
        };
        let err = S3Storage::new(bad_endpoint).unwrap_err();
        assert!(err.to_string().contains("S3_ENDPOINT_URL"), "{err}");
        let bad_root = S3Config {
            root: Some("../x".to_owned()),
            ..S3Config::new("b")
        };
        assert_eq!(
            S3Storage::new(bad_root).unwrap_err().kind(),
            ErrorKind::ConfigInvalid
        );
    }

    #[test]
    fn roots_are_normalised() {
        assert_eq!(normalise_root("").unwrap(), "");
        assert_eq!(normalise_root("/").unwrap(), "");
        assert_eq!(normalise_root("temp").unwrap(), "temp/");
        assert_eq!(normalise_root("/temp/x/").unwrap(), "temp/x/");
        assert!(normalise_root("a//b").is_err());
    }

    #[test]
    fn info_names_bucket_and_endpoint() {
        let storage = S3Storage::new(S3Config {
            endpoint: Some("http://127.0.0.1:9000/".to_owned()),
            ..S3Config::new("assets")
        })
        .expect("valid");
        let info = storage.info();
        assert_eq!(info.scheme, "s3");
        assert_eq!(info.location, "assets@http://127.0.0.1:9000");
        assert!(info.capabilities.presign && info.capabilities.durable);
        let aws = S3Storage::new(S3Config {
            region: "eu-west-1".to_owned(),
            root: Some("temp/".to_owned()),
            ..S3Config::new("b")
        })
        .expect("valid");
        assert_eq!(
            aws.info().location,
            "b@https://s3.eu-west-1.amazonaws.com/temp/"
        );
    }

    // These build OpenDAL errors the way its S3 service does (code in the message) for the cases
    // the integration tests cannot provoke against moto; permission and connection errors are also
    // tested end to end in tests/.
    #[test]
    fn synthetic_errors_map_to_our_kinds() {
        let t = target();
        let denied = opendal::Error::new(
            opendal::ErrorKind::PermissionDenied,
            "S3Error { code: \"SignatureDoesNotMatch\", message: \"...\" }",
        );
        let e = map_error(denied, &t);
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("S3_SECRET_ACCESS_KEY"), "{e}");
        assert!(!e.is_temporary());

        let no_bucket = opendal::Error::new(
            opendal::ErrorKind::ConfigInvalid,
            "S3Error { code: \"NoSuchBucket\", message: \"The specified bucket does not exist\" }",
        );
        let e = map_error(no_bucket, &t);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.to_string().contains("ASSET_BUCKET") && e.to_string().contains("'assets'"),
            "{e}"
        );

        let timeout =
            opendal::Error::new(opendal::ErrorKind::Unexpected, "operation timeout reached")
                .set_temporary();
        let e = map_error(timeout, &t);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(
            e.is_temporary() && e.to_string().contains("127.0.0.1:9"),
            "{e}"
        );

        let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .set_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = map_error(refused, &t);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(
            e.is_temporary() && e.to_string().contains("S3_ENDPOINT_URL"),
            "{e}"
        );

        let slow = opendal::Error::new(opendal::ErrorKind::RateLimited, "SlowDown").set_temporary();
        assert_eq!(map_error(slow, &t).kind(), ErrorKind::RateLimited);
        let range = opendal::Error::new(opendal::ErrorKind::RangeNotSatisfied, "InvalidRange");
        assert_eq!(map_error(range, &t).kind(), ErrorKind::RangeNotSatisfiable);
        let changed = opendal::Error::new(opendal::ErrorKind::ConditionNotMatch, "412");
        assert!(map_error(changed, &t).is_temporary());

        // The store's words ride along for the client's 507; no key or resource does.
        let quoted = "S3Error { code: \"XMinioStorageFull\", message: \"Storage backend has reached its \\\"minimum\\\" free drive threshold.\", resource: \"/b/secret-key\" }";
        assert_eq!(
            s3_error_message(quoted).as_deref(),
            Some("Storage backend has reached its \"minimum\" free drive threshold.")
        );
        assert_eq!(
            s3_error_message("<Error><Code>X</Code><Message> Full. </Message><Key>k</Key></Error>")
                .as_deref(),
            Some("Full.")
        );
        assert_eq!(s3_error_message("no document"), None);

        // Out of space or quota: StorageFull (the HTTP edge's 507), never retried.
        for code in [
            "XMinioStorageFull",
            "QuotaExceeded",
            "InsufficientStorage",
            "507 Insufficient Storage",
        ] {
            let full = opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                format!("S3Error {{ code: \"{code}\", message: \"...\" }}"),
            );
            let e = map_error(full, &t);
            assert_eq!(e.kind(), ErrorKind::StorageFull, "{code}");
            assert!(!e.is_temporary(), "{code}");
        }
        let big = opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "S3Error { code: \"EntityTooLarge\", message: \"Your proposed upload exceeds the maximum allowed size\" }",
        );
        assert_eq!(map_error(big, &t).kind(), ErrorKind::TooLarge);
    }
}
