//! An in-memory HTTP double of the Supabase Storage server (storage-api v1.11), mounted at
//! `/storage/v1` as behind the hosted gateway.
//!
//! It answers as the real server does per `reference/supabase-storage-api.md` and its recorded
//! transcripts, including the facts doubles usually get wrong (§15): errors are HTTP 400 with the
//! real code as a *string* `statusCode` in the body; a duplicate POST upload is "409"
//! `KeyAlreadyExists` unless `x-upsert: true`, PUT always overwrites; `/object/public` on a private
//! bucket is "404" `NoSuchBucket`; upload answers `{"Key":"<bucket>/<key>","Id":…}`; `signedURL` is
//! relative and has no `/storage/v1`; list is one folder level with null-filled folder entries and
//! `[]` for a missing bucket; delete-many "prefixes" are exact keys; Range gives 206 or the file
//! backend's 416; HEAD errors have no body.
//!
//! Tokens are real HS256 JWTs signed with a per-double secret, so a key signed with another
//! secret is refused exactly as the server refuses it. The `apikey` header is ignored, as the
//! server ignores it.
//!
//! ```no_run
//! # async fn demo() {
//! use nodetool_testkit::supabase_double::SupabaseDouble;
//! let double = SupabaseDouble::start().await;
//! double.create_bucket("assets", true);
//! // SUPABASE_URL = double.url(), SUPABASE_KEY = double.service_key()
//! # }
//! ```

// Handlers return a ready HTTP answer as their error: one per request, the size is irrelevant.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

/// A running double; the server stops when this is dropped.
#[derive(Debug)]
pub struct SupabaseDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    service_key: String,
    anon_key: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SupabaseDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SupabaseDouble {
    /// Starts the double on `127.0.0.1:<free port>`.
    pub async fn start() -> Self {
        let secret: [u8; 32] = rand::random();
        let shared = Arc::new(Shared {
            secret: secret.to_vec(),
            state: Mutex::new(DoubleState::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("supabase double: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("supabase double: local addr");
        let app = Router::new()
            .fallback(dispatch)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "supabase double stopped");
            }
        });
        let now = Utc::now().timestamp();
        let far = now + 10 * 365 * 24 * 3600;
        let service_key = shared.sign(&serde_json::json!({
            "iss": "supabase-double", "role": "service_role", "iat": now, "exp": far
        }));
        let anon_key = shared.sign(&serde_json::json!({
            "iss": "supabase-double", "role": "anon", "iat": now, "exp": far
        }));
        Self {
            addr,
            shared,
            service_key,
            anon_key,
            task,
        }
    }

    /// The project URL (`SUPABASE_URL`): `http://127.0.0.1:<port>`, without `/storage/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The storage API base: `{url}/storage/v1`.
    pub fn storage_url(&self) -> String {
        format!("{}/storage/v1", self.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A service-role JWT (`SUPABASE_KEY`): bypasses row-level security.
    pub fn service_key(&self) -> String {
        self.service_key.clone()
    }

    /// An anon-role JWT: sees public buckets only and cannot write.
    pub fn anon_key(&self) -> String {
        self.anon_key.clone()
    }

    /// Signs arbitrary claims with this double's secret (for expired or odd-role tokens).
    pub fn sign_jwt(&self, claims: &Value) -> String {
        self.shared.sign(claims)
    }

    /// Creates a bucket directly (no HTTP). Replaces nothing if it exists.
    pub fn create_bucket(&self, name: &str, public: bool) {
        let now = Utc::now();
        self.shared
            .lock()
            .buckets
            .entry(name.to_owned())
            .or_insert_with(|| Bucket::new(name, public, None, None, now));
    }

    /// Creates a bucket with a size limit (bytes) and allowed mime types (`text/*` wildcards).
    pub fn create_bucket_with_limits(
        &self,
        name: &str,
        public: bool,
        file_size_limit: Option<u64>,
        allowed_mime_types: Option<Vec<String>>,
    ) {
        let now = Utc::now();
        self.shared.lock().buckets.insert(
            name.to_owned(),
            Bucket::new(name, public, file_size_limit, allowed_mime_types, now),
        );
    }

    /// The stored bytes of an object, bypassing HTTP (to check what really got committed).
    pub fn object_bytes(&self, bucket: &str, key: &str) -> Option<Bytes> {
        let state = self.shared.lock();
        Some(state.buckets.get(bucket)?.objects.get(key)?.data.clone())
    }

    /// Every key stored in a bucket, sorted.
    pub fn object_keys(&self, bucket: &str) -> Vec<String> {
        let state = self.shared.lock();
        state
            .buckets
            .get(bucket)
            .map(|b| b.objects.keys().cloned().collect())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug)]
struct Shared {
    secret: Vec<u8>,
    state: Mutex<DoubleState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, DoubleState> {
        // A panicking handler must not take the whole double down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sign<T: Serialize + ?Sized>(&self, claims: &T) -> String {
        sign_hs256(&self.secret, claims)
    }
}

#[derive(Debug, Default)]
struct DoubleState {
    buckets: BTreeMap<String, Bucket>,
}

#[derive(Debug, Clone)]
struct Bucket {
    id: String,
    name: String,
    public: bool,
    file_size_limit: Option<u64>,
    allowed_mime_types: Option<Vec<String>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    objects: BTreeMap<String, Obj>,
}

impl Bucket {
    fn new(
        name: &str,
        public: bool,
        file_size_limit: Option<u64>,
        allowed_mime_types: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: name.to_owned(),
            name: name.to_owned(),
            public,
            file_size_limit,
            allowed_mime_types,
            created_at: now,
            updated_at: now,
            objects: BTreeMap::new(),
        }
    }

    fn row(&self, with_type: bool) -> BucketRow {
        BucketRow {
            id: self.id.clone(),
            name: self.name.clone(),
            owner: String::new(),
            public: self.public,
            r#type: with_type.then(|| "STANDARD".to_owned()),
            file_size_limit: self.file_size_limit,
            allowed_mime_types: self.allowed_mime_types.clone(),
            created_at: iso(self.created_at),
            updated_at: iso(self.updated_at),
        }
    }
}

#[derive(Debug, Clone)]
struct Obj {
    id: String,
    version: String,
    data: Bytes,
    content_type: String,
    cache_control: String,
    etag: String,
    user_metadata: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The blob's own mtime: a few ms before the row's `updated_at`, as on the real server.
    blob_modified: DateTime<Utc>,
}

impl Obj {
    fn internal_metadata(&self) -> InternalMetadata {
        InternalMetadata {
            e_tag: self.etag.clone(),
            size: self.data.len() as u64,
            mimetype: self.content_type.clone(),
            cache_control: self.cache_control.clone(),
            last_modified: iso(self.blob_modified),
            content_length: self.data.len() as u64,
            http_status_code: 200,
        }
    }

    fn row(&self, bucket: &str, name: &str) -> ObjectRow {
        ObjectRow {
            name: name.to_owned(),
            bucket_id: bucket.to_owned(),
            owner: String::new(),
            owner_id: String::new(),
            version: self.version.clone(),
            id: self.id.clone(),
            updated_at: iso(self.updated_at),
            created_at: iso(self.created_at),
            last_accessed_at: iso(self.created_at),
            metadata: self.internal_metadata(),
            user_metadata: self.user_metadata.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (field order is the server's)

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "statusCode")]
    status_code: &'a str,
    error: &'a str,
    message: &'a str,
    code: &'a str,
}

#[derive(Serialize)]
struct BucketRow {
    id: String,
    name: String,
    owner: String,
    public: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    r#type: Option<String>,
    file_size_limit: Option<u64>,
    allowed_mime_types: Option<Vec<String>>,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct InternalMetadata {
    #[serde(rename = "eTag")]
    e_tag: String,
    size: u64,
    mimetype: String,
    #[serde(rename = "cacheControl")]
    cache_control: String,
    #[serde(rename = "lastModified")]
    last_modified: String,
    #[serde(rename = "contentLength")]
    content_length: u64,
    #[serde(rename = "httpStatusCode")]
    http_status_code: u16,
}

#[derive(Serialize)]
struct ObjectRow {
    name: String,
    bucket_id: String,
    owner: String,
    owner_id: String,
    version: String,
    id: String,
    updated_at: String,
    created_at: String,
    last_accessed_at: String,
    metadata: InternalMetadata,
    user_metadata: Value,
}

#[derive(Serialize)]
struct InfoBody {
    id: String,
    name: String,
    version: String,
    bucket_id: String,
    size: u64,
    content_type: String,
    cache_control: String,
    etag: String,
    metadata: Value,
    last_modified: String,
    created_at: String,
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    id: Option<String>,
    updated_at: Option<String>,
    created_at: Option<String>,
    last_accessed_at: Option<String>,
    metadata: Option<InternalMetadata>,
}

#[derive(Serialize)]
struct UploadAnswer {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Id", skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

#[derive(Serialize)]
struct CopyAnswer {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Id")]
    id: String,
    #[serde(flatten)]
    row: ObjectRow,
}

#[derive(Serialize)]
struct SignedAnswer {
    #[serde(rename = "signedURL")]
    signed_url: String,
}

#[derive(Serialize)]
struct BatchSigned {
    error: Option<String>,
    path: String,
    #[serde(rename = "signedURL")]
    signed_url: Option<String>,
}

#[derive(Serialize)]
struct DownloadClaims<'a> {
    url: &'a str,
    scope: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Serialize)]
struct UploadClaims<'a> {
    url: &'a str,
    upsert: bool,
    scope: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Responses

const JSON_UTF8: &str = "application/json; charset=utf-8";

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, JSON_UTF8)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap_or_default()
}

fn ok<T: Serialize>(value: &T) -> Response {
    json_response(StatusCode::OK, value)
}

fn message(text: &str) -> Response {
    ok(&Message { message: text })
}

/// An error the way storage-api sends it: HTTP 400 unless told otherwise, string `statusCode`.
fn api_err(http: StatusCode, status_code: &str, error: &str, msg: &str, code: &str) -> Response {
    json_response(
        http,
        &ErrorBody {
            status_code,
            error,
            message: msg,
            code,
        },
    )
}

fn no_such_key() -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "404",
        "not_found",
        "Object not found",
        "NoSuchKey",
    )
}

fn no_such_bucket() -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "404",
        "Bucket not found",
        "Bucket not found",
        "NoSuchBucket",
    )
}

fn duplicate(code: &str) -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "409",
        "Duplicate",
        "The resource already exists",
        code,
    )
}

fn invalid_request(msg: &str) -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "400",
        "Error",
        msg,
        "InvalidRequest",
    )
}

fn access_denied(msg: &str) -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "403",
        "Unauthorized",
        msg,
        "AccessDenied",
    )
}

fn rls_denied() -> Response {
    access_denied("new row violates row-level security policy")
}

fn invalid_range() -> Response {
    api_err(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "416",
        "invalid_range",
        "invalid range provided",
        "InvalidRange",
    )
}

fn invalid_key(key: &str) -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "400",
        "InvalidKey",
        &format!("Invalid key: {key}"),
        "InvalidKey",
    )
}

fn invalid_jwt(msg: &str) -> Response {
    api_err(
        StatusCode::BAD_REQUEST,
        "400",
        "InvalidJWT",
        msg,
        "InvalidJWT",
    )
}

/// Unknown route under `/object` or `/bucket`: a real 404, `application/json` without charset.
fn route_not_found_storage(method: &Method, path: &str) -> Response {
    let body = serde_json::to_vec(&ErrorBody {
        status_code: "404",
        error: "Not Found",
        message: &format!("Route {method}:{path} not found"),
        code: "InvalidRequest",
    })
    .unwrap_or_default();
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap_or_default()
}

/// Any other unknown path: Fastify's default body, with a *numeric* `statusCode`.
fn route_not_found_fastify(method: &Method, path: &str) -> Response {
    #[derive(Serialize)]
    struct FastifyNotFound {
        message: String,
        error: &'static str,
        #[serde(rename = "statusCode")]
        status_code: u16,
    }
    json_response(
        StatusCode::NOT_FOUND,
        &FastifyNotFound {
            message: format!("Route {method}:{path} not found"),
            error: "Not Found",
            status_code: 404,
        },
    )
}

/// HEAD answers keep status and headers (including `content-length`) but send no body.
fn strip_body(resp: Response) -> Response {
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::empty())
}

// ---------------------------------------------------------------------------------------------
// Tokens

type HmacSha256 = Hmac<Sha256>;

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn sign_hs256<T: Serialize + ?Sized>(secret: &[u8], claims: &T) -> String {
    let header = b64url(br#"{"alg":"HS256"}"#);
    let payload = b64url(&serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = mac.finalize().into_bytes();
    format!("{signing_input}.{}", b64url(&sig))
}

/// Verifies an HS256 JWT; the error is the message the server's JWT library gives.
fn verify_hs256(secret: &[u8], token: &str) -> Result<Value, &'static str> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("Invalid Compact JWS");
    }
    let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s);
    let header: Value = decode(parts[0])
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .filter(Value::is_object)
        .ok_or("JWS Protected Header is invalid")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("\"alg\" (Algorithm) Header Parameter value not allowed");
    }
    let sig = decode(parts[2]).map_err(|_| "signature verification failed")?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| "signature verification failed")?;
    let claims: Value = decode(parts[1])
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .filter(Value::is_object)
        .ok_or("JWT Claims Set must be a top-level JSON object")?;
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        if Utc::now().timestamp() >= exp {
            return Err("\"exp\" claim timestamp check failed");
        }
    }
    Ok(claims)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `service_role`: bypasses row-level security.
    Service,
    /// Any other role (anon, authenticated): no RLS policies exist, so it sees public buckets
    /// only and cannot write.
    Anon,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ").unwrap_or(value).trim())
}

impl Shared {
    /// Routes that require `Authorization` (the server ignores `apikey`).
    fn require_auth(&self, headers: &HeaderMap) -> Result<Role, Response> {
        let Some(token) = bearer(headers) else {
            return Err(invalid_request(
                "headers must have required property 'authorization'",
            ));
        };
        let claims = verify_hs256(&self.secret, token).map_err(access_denied)?;
        Ok(role_of(&claims))
    }

    /// Routes where a missing or invalid token runs the request as anon.
    fn optional_auth(&self, headers: &HeaderMap) -> Role {
        bearer(headers)
            .and_then(|t| verify_hs256(&self.secret, t).ok())
            .map_or(Role::Anon, |c| role_of(&c))
    }
}

fn role_of(claims: &Value) -> Role {
    if claims.get("role").and_then(Value::as_str) == Some("service_role") {
        Role::Service
    } else {
        Role::Anon
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_etag(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    format!("\"{}\"", hex(&Md5::digest(data)))
}

fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_/!.*'() &$=@;:+,?-".contains(c))
}

fn valid_bucket_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_!.*'() &$=@;:+,?-".contains(c))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(&v.replace('+', " ")))
    })
}

/// Parses a JSON body as Fastify does: malformed JSON is a `FastifyError`.
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    let is_json = header_str(headers, "content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
    if body.is_empty() {
        if is_json {
            return Err(api_err(
                StatusCode::BAD_REQUEST,
                "400",
                "FastifyError",
                "Body cannot be empty when content-type is set to 'application/json'",
                "InvalidRequest",
            ));
        }
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|_| {
        api_err(
            StatusCode::BAD_REQUEST,
            "400",
            "FastifyError",
            "Body is not valid JSON but content-type is set to 'application/json'",
            "InvalidRequest",
        )
    })
}

fn require_object(body: &Value) -> Result<&serde_json::Map<String, Value>, Response> {
    body.as_object()
        .ok_or_else(|| invalid_request("body must be object"))
}

fn require_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, Response> {
    match obj.get(field) {
        None => Err(invalid_request(&format!(
            "body must have required property '{field}'"
        ))),
        Some(v) => v
            .as_str()
            .ok_or_else(|| invalid_request(&format!("body/{field} must be string"))),
    }
}

/// An integer field that Ajv (with coercion) accepts as a number or a numeric string.
fn coerce_int(obj: &serde_json::Map<String, Value>, field: &str) -> Result<Option<i64>, Response> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid_request(&format!("body/{field} must be integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| invalid_request(&format!("body/{field} must be integer"))),
        Some(_) => Err(invalid_request(&format!("body/{field} must be integer"))),
    }
}

/// `file_size_limit`: bytes, or a string like `"1MB"` (decimal units, as the server stores).
fn parse_size_limit(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim().to_ascii_uppercase();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let num: u64 = num.parse().ok()?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            Some(num * mult)
        }
        _ => None,
    }
}

fn mime_allowed(allowed: &Option<Vec<String>>, content_type: &str) -> bool {
    let Some(allowed) = allowed else { return true };
    if allowed.is_empty() {
        return true;
    }
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix("/*") {
            Some(family) => essence.split('/').next() == Some(family),
            None => a == essence,
        }
    })
}

/// A single `bytes=` range resolved against `size`; `None` means 416 (the file backend's answer
/// for unsatisfiable, malformed and multi-range requests alike).
fn resolve_range(spec: &str, size: u64) -> Option<(u64, u64)> {
    let spec = spec.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        size.checked_sub(1)?
    } else {
        b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
    };
    (start < size && start <= end).then_some((start, end))
}

// ---------------------------------------------------------------------------------------------
// Dispatch

const MAX_BODY: usize = 512 * 1024 * 1024;

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let full_path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let Some(path) = full_path
        .strip_prefix("/storage/v1")
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .map(str::to_owned)
    else {
        // The gateway's answer for a path outside any service.
        return json_response(
            StatusCode::NOT_FOUND,
            &Message {
                message: "no Route matched with those values",
            },
        );
    };
    let is_head = method == Method::HEAD;
    let resp = route(&shared, method.clone(), &path, &query, req).await;
    if is_head {
        strip_body(resp)
    } else {
        resp
    }
}

async fn route(shared: &Shared, method: Method, path: &str, query: &str, req: Request) -> Response {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let headers = req.headers().clone();
    let get_like = method == Method::GET || method == Method::HEAD;
    match segs.as_slice() {
        ["bucket"] | ["bucket", ""] => bucket_collection(shared, &method, &headers, req).await,
        ["bucket", id] => bucket_one(shared, &method, path, &headers, &decode(id), req).await,
        ["bucket", id, "empty"] if method == Method::POST => {
            empty_bucket(shared, &headers, &decode(id))
        }
        ["bucket", ..] => route_not_found_storage(&method, path),

        ["object", "list", bucket] if method == Method::POST => {
            let body = read_body(req).await;
            list_objects(shared, &headers, &decode(bucket), &body)
        }
        ["object", "move"] if method == Method::POST => {
            let body = read_body(req).await;
            move_or_copy(shared, &headers, &body, false)
        }
        ["object", "copy"] if method == Method::POST => {
            let body = read_body(req).await;
            move_or_copy(shared, &headers, &body, true)
        }
        ["object", "sign", bucket] if method == Method::POST => {
            let body = read_body(req).await;
            sign_many(shared, &headers, &decode(bucket), &body)
        }
        ["object", "sign", bucket, rest @ ..] if method == Method::POST => {
            let body = read_body(req).await;
            sign_one(
                shared,
                &headers,
                &decode(bucket),
                &decode(&rest.join("/")),
                &body,
            )
        }
        ["object", "sign", bucket, rest @ ..] if get_like => signed_download(
            shared,
            &headers,
            query,
            &decode(bucket),
            &decode(&rest.join("/")),
        ),
        ["object", "upload", "sign", bucket, rest @ ..] if method == Method::POST => {
            sign_upload(shared, &headers, &decode(bucket), &decode(&rest.join("/")))
        }
        ["object", "upload", "sign", bucket, rest @ ..] if method == Method::PUT => {
            signed_upload(
                shared,
                &headers,
                query,
                &decode(bucket),
                &decode(&rest.join("/")),
                req,
            )
            .await
        }
        ["object", "info", "authenticated", bucket, rest @ ..] if method == Method::GET => {
            match shared.require_auth(&headers) {
                Ok(role) => info(
                    shared,
                    Access::Role(role),
                    &decode(bucket),
                    &decode(&rest.join("/")),
                ),
                Err(e) => e,
            }
        }
        ["object", "info", "public", bucket, rest @ ..] if method == Method::GET => info(
            shared,
            Access::Public,
            &decode(bucket),
            &decode(&rest.join("/")),
        ),
        ["object", "info", bucket, rest @ ..] if method == Method::GET && !rest.is_empty() => {
            let role = shared.optional_auth(&headers);
            info(
                shared,
                Access::Role(role),
                &decode(bucket),
                &decode(&rest.join("/")),
            )
        }
        ["object", "authenticated", bucket, rest @ ..] if get_like && !rest.is_empty() => {
            match shared.require_auth(&headers) {
                Ok(role) => download(
                    shared,
                    Access::Role(role),
                    &headers,
                    query,
                    &decode(bucket),
                    &decode(&rest.join("/")),
                ),
                Err(e) => e,
            }
        }
        ["object", "public", bucket, rest @ ..] if get_like && !rest.is_empty() => download(
            shared,
            Access::Public,
            &headers,
            query,
            &decode(bucket),
            &decode(&rest.join("/")),
        ),
        ["object", bucket] if method == Method::DELETE => {
            let body = read_body(req).await;
            delete_many(shared, &headers, &decode(bucket), &body)
        }
        ["object", bucket, rest @ ..] if !rest.is_empty() => {
            let (bucket, key) = (decode(bucket), decode(&rest.join("/")));
            if get_like {
                let role = shared.optional_auth(&headers);
                download(shared, Access::Role(role), &headers, query, &bucket, &key)
            } else if method == Method::POST || method == Method::PUT {
                match shared.require_auth(&headers) {
                    Ok(role) => {
                        let upsert = method == Method::PUT
                            || header_str(&headers, "x-upsert") == Some("true");
                        upload(shared, role, &headers, &bucket, &key, upsert, req, true).await
                    }
                    Err(e) => e,
                }
            } else if method == Method::DELETE {
                delete_one(shared, &headers, &bucket, &key)
            } else {
                route_not_found_storage(&method, path)
            }
        }
        ["object", ..] => route_not_found_storage(&method, path),
        _ => route_not_found_fastify(&method, path),
    }
}

async fn read_body(req: Request) -> Bytes {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Buckets

async fn bucket_collection(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    req: Request,
) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if *method == Method::GET {
        if role != Role::Service {
            return ok(&Vec::<BucketRow>::new());
        }
        let state = shared.lock();
        let rows: Vec<BucketRow> = state.buckets.values().map(|b| b.row(true)).collect();
        return ok(&rows);
    }
    if *method != Method::POST {
        return route_not_found_storage(method, "/bucket");
    }
    let body = read_body(req).await;
    let body = match json_body(headers, &body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let obj = match require_object(&body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let name = match require_str(obj, "name") {
        Ok(n) => n.to_owned(),
        Err(e) => return e,
    };
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or(&name)
        .to_owned();
    if !valid_bucket_name(&id) || !valid_bucket_name(&name) {
        return api_err(
            StatusCode::BAD_REQUEST,
            "400",
            "Invalid Input",
            "Bucket name invalid",
            "InvalidBucketName",
        );
    }
    if role != Role::Service {
        return rls_denied();
    }
    let public = obj.get("public").and_then(Value::as_bool).unwrap_or(false);
    let limit = obj.get("file_size_limit").and_then(parse_size_limit);
    let mimes = obj.get("allowed_mime_types").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
    });
    let mut state = shared.lock();
    if state.buckets.contains_key(&id) {
        return duplicate("BucketAlreadyExists");
    }
    let mut bucket = Bucket::new(&name, public, limit, mimes, Utc::now());
    bucket.id = id.clone();
    state.buckets.insert(id, bucket);
    #[derive(Serialize)]
    struct Created {
        name: String,
    }
    ok(&Created { name })
}

async fn bucket_one(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    id: &str,
    req: Request,
) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match *method {
        Method::GET => {
            let state = shared.lock();
            match state.buckets.get(id) {
                Some(b) if role == Role::Service => ok(&b.row(false)),
                _ => no_such_bucket(),
            }
        }
        Method::PUT => {
            let body = read_body(req).await;
            let body = match json_body(headers, &body) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(obj) = body.as_object() else {
                return invalid_request("body must be object");
            };
            let mut state = shared.lock();
            let Some(bucket) = state.buckets.get_mut(id).filter(|_| role == Role::Service) else {
                return no_such_bucket();
            };
            if let Some(p) = obj.get("public").and_then(Value::as_bool) {
                bucket.public = p;
            }
            if let Some(v) = obj.get("file_size_limit") {
                bucket.file_size_limit = parse_size_limit(v);
            }
            if let Some(v) = obj.get("allowed_mime_types") {
                bucket.allowed_mime_types = v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_owned))
                        .collect()
                });
            }
            bucket.updated_at = Utc::now();
            message("Successfully updated")
        }
        Method::DELETE => {
            let mut state = shared.lock();
            match state.buckets.get(id) {
                Some(b) if role == Role::Service => {
                    if !b.objects.is_empty() {
                        return api_err(
                            StatusCode::BAD_REQUEST,
                            "409",
                            "ResourceNotEmpty",
                            "The bucket you tried to delete is not empty",
                            "ResourceNotEmpty",
                        );
                    }
                    state.buckets.remove(id);
                    message("Successfully deleted")
                }
                _ => no_such_bucket(),
            }
        }
        _ => route_not_found_storage(method, path),
    }
}

fn empty_bucket(shared: &Shared, headers: &HeaderMap, id: &str) -> Response {
    match shared.require_auth(headers) {
        Err(e) => e,
        Ok(Role::Anon) => api_err(
            StatusCode::FORBIDDEN,
            "403",
            "Unauthorized",
            "Access denied: Invalid role",
            "AccessDenied",
        ),
        Ok(Role::Service) => {
            let mut state = shared.lock();
            match state.buckets.get_mut(id) {
                Some(b) => {
                    b.objects.clear();
                    message("Empty bucket has been queued. Completion may take up to an hour.")
                }
                None => no_such_bucket(),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upload

/// The part of an upload that comes from the request body.
struct Incoming {
    data: Bytes,
    content_type: String,
    cache_control: String,
    user_metadata: Option<Value>,
}

/// Reads a raw or multipart upload body. A body that breaks off mid-stream is an error, and
/// nothing is stored: the real server aborts the write too.
async fn read_upload(headers: &HeaderMap, req: Request) -> Result<Incoming, Response> {
    let broken = || {
        api_err(
            StatusCode::BAD_REQUEST,
            "400",
            "Error",
            "the request body could not be read",
            "InvalidRequest",
        )
    };
    let content_type = header_str(headers, "content-type")
        .unwrap_or("")
        .trim()
        .to_owned();
    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|_| broken())?;
        let mut file: Option<(Bytes, String)> = None;
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        while let Some(field) = form.next_field().await.map_err(|_| broken())? {
            let name = field.name().unwrap_or("").to_owned();
            let is_file = field.file_name().is_some();
            let part_type = field.content_type().map(str::to_owned);
            let data = field.bytes().await.map_err(|_| broken())?;
            if is_file && file.is_none() {
                // Parameters are dropped for multipart: `text/plain;charset=UTF-8` → `text/plain`.
                let essence = part_type
                    .as_deref()
                    .unwrap_or("application/octet-stream")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                file = Some((data, essence));
            } else if !is_file {
                fields.insert(name, String::from_utf8_lossy(&data).into_owned());
            }
        }
        let Some((data, part_type)) = file else {
            return Err(invalid_request("No file found in request"));
        };
        let user_metadata = fields
            .get("metadata")
            .or_else(|| fields.get("userMetadata"))
            .and_then(|m| serde_json::from_str(m).ok());
        return Ok(Incoming {
            data,
            content_type: fields.get("contentType").cloned().unwrap_or(part_type),
            cache_control: fields
                .get("cacheControl")
                .map_or_else(|| "no-cache".to_owned(), |c| format!("max-age={c}")),
            user_metadata,
        });
    }
    let data = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| broken())?;
    let user_metadata = header_str(headers, "x-metadata")
        .and_then(|m| {
            base64::engine::general_purpose::STANDARD
                .decode(m.trim())
                .ok()
        })
        .and_then(|m| serde_json::from_slice(&m).ok());
    Ok(Incoming {
        data,
        content_type: if content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            content_type
        },
        cache_control: header_str(headers, "cache-control")
            .map_or_else(|| "no-cache".to_owned(), str::to_owned),
        user_metadata,
    })
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    shared: &Shared,
    role: Role,
    headers: &HeaderMap,
    bucket: &str,
    key: &str,
    upsert: bool,
    req: Request,
    with_id: bool,
) -> Response {
    if !valid_key(key) {
        return invalid_key(key);
    }
    {
        let state = shared.lock();
        let Some(b) = state.buckets.get(bucket) else {
            return no_such_bucket();
        };
        if role != Role::Service {
            return rls_denied();
        }
        if !upsert && b.objects.contains_key(key) {
            return duplicate("KeyAlreadyExists");
        }
    }
    // The whole body is read before anything is stored, so a broken stream stores nothing.
    let incoming = match read_upload(headers, req).await {
        Ok(i) => i,
        Err(e) => return e,
    };
    let mut state = shared.lock();
    let Some(b) = state.buckets.get_mut(bucket) else {
        return no_such_bucket();
    };
    if b.file_size_limit
        .is_some_and(|l| incoming.data.len() as u64 > l)
    {
        return api_err(
            StatusCode::BAD_REQUEST,
            "413",
            "Payload too large",
            "The object exceeded the maximum allowed size",
            "EntityTooLarge",
        );
    }
    if !mime_allowed(&b.allowed_mime_types, &incoming.content_type) {
        return api_err(
            StatusCode::BAD_REQUEST,
            "415",
            "invalid_mime_type",
            &format!("mime type {} is not supported", incoming.content_type),
            "InvalidMimeType",
        );
    }
    if !upsert && b.objects.contains_key(key) {
        return duplicate("KeyAlreadyExists");
    }
    let now = Utc::now();
    let previous = b.objects.get(key);
    let obj = Obj {
        id: previous.map_or_else(uuid4, |p| p.id.clone()),
        version: uuid4(),
        etag: md5_etag(&incoming.data),
        data: incoming.data,
        content_type: incoming.content_type,
        cache_control: incoming.cache_control,
        user_metadata: incoming
            .user_metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
        created_at: previous.map_or(now, |p| p.created_at),
        updated_at: now,
        blob_modified: now - chrono::Duration::milliseconds(3),
    };
    let id = obj.id.clone();
    b.objects.insert(key.to_owned(), obj);
    ok(&UploadAnswer {
        key: format!("{bucket}/{key}"),
        id: with_id.then_some(id),
    })
}

// ---------------------------------------------------------------------------------------------
// Download, info

#[derive(Debug, Clone, Copy)]
enum Access {
    /// `/object/...`, `/object/authenticated/...`: the role decides (RLS).
    Role(Role),
    /// `/object/public/...`: only public buckets.
    Public,
    /// `/object/sign/...?token=`: the token was checked; it carries the expiry.
    Signed { exp: i64 },
}

/// Finds the object as `access` may see it; the error is the server's answer.
fn visible<'a>(
    state: &'a DoubleState,
    access: Access,
    bucket: &str,
    key: &str,
) -> Result<&'a Obj, Response> {
    let b = state.buckets.get(bucket).ok_or_else(no_such_bucket)?;
    match access {
        Access::Role(Role::Anon) | Access::Public if !b.public => return Err(no_such_bucket()),
        _ => {}
    }
    b.objects.get(key).ok_or_else(no_such_key)
}

fn download(
    shared: &Shared,
    access: Access,
    headers: &HeaderMap,
    query: &str,
    bucket: &str,
    key: &str,
) -> Response {
    let state = shared.lock();
    let obj = match visible(&state, access, bucket, key) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let size = obj.data.len() as u64;
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, &obj.content_type)
        .header(header::ETAG, &obj.etag)
        .header("x-robots-tag", "none")
        .header(header::LAST_MODIFIED, http_date(obj.updated_at));

    let if_none_match = header_str(headers, "if-none-match");
    let cache_control = match access {
        Access::Signed { .. } => None,
        _ if if_none_match.is_some_and(|v| v != obj.etag) => {
            Some(format!("{}, stale-while-revalidate=30", obj.cache_control))
        }
        _ => Some(obj.cache_control.clone()),
    };
    if if_none_match == Some(obj.etag.as_str()) {
        builder = builder.header(header::CONTENT_LENGTH, 0);
        if let Some(cc) = &cache_control {
            builder = builder.header(header::CACHE_CONTROL, cc);
        }
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }

    let (status, body, content_range) = match header_str(headers, "range") {
        Some(spec) => match resolve_range(spec, size) {
            Some((a, b)) => (
                StatusCode::PARTIAL_CONTENT,
                obj.data.slice(a as usize..=b as usize),
                Some(format!("bytes {a}-{b}/{size}")),
            ),
            None => return invalid_range(),
        },
        None => (StatusCode::OK, obj.data.clone(), None),
    };
    builder = builder.header(header::CONTENT_LENGTH, body.len());
    if let Some(cc) = cache_control {
        builder = builder.header(header::CACHE_CONTROL, cc);
    }
    if let Access::Signed { exp } = access {
        let exp = DateTime::<Utc>::from_timestamp(exp, 0).unwrap_or_else(Utc::now);
        builder = builder.header(header::EXPIRES, http_date(exp));
    }
    if let Some(cr) = content_range {
        builder = builder.header(header::CONTENT_RANGE, cr);
    }
    if let Some(name) = query_param(query, "download") {
        let disposition = if name.is_empty() {
            "attachment;".to_owned()
        } else {
            let enc =
                percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
                    .replace("%2E", ".")
                    .replace("%2D", "-")
                    .replace("%5F", "_");
            format!("attachment; filename={enc}; filename*=UTF-8''{enc}")
        };
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            builder = builder.header(header::CONTENT_DISPOSITION, v);
        }
    }
    builder
        .status(status)
        .body(Body::from(body))
        .unwrap_or_default()
}

fn info(shared: &Shared, access: Access, bucket: &str, key: &str) -> Response {
    let state = shared.lock();
    let obj = match visible(&state, access, bucket, key) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let mut resp = ok(&InfoBody {
        id: obj.id.clone(),
        name: key.to_owned(),
        version: obj.version.clone(),
        bucket_id: bucket.to_owned(),
        size: obj.data.len() as u64,
        content_type: obj.content_type.clone(),
        cache_control: obj.cache_control.clone(),
        etag: obj.etag.clone(),
        metadata: obj.user_metadata.clone(),
        last_modified: iso(obj.updated_at),
        created_at: iso(obj.created_at),
    });
    let h = resp.headers_mut();
    for (name, value) in [
        (header::ETAG, obj.etag.clone()),
        (header::LAST_MODIFIED, http_date(obj.updated_at)),
        (header::CACHE_CONTROL, obj.cache_control.clone()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// List, delete

fn list_objects(shared: &Shared, headers: &HeaderMap, bucket: &str, body: &Bytes) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let body = match json_body(headers, body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let obj = match require_object(&body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let prefix = match require_str(obj, "prefix") {
        Ok(p) => p.to_owned(),
        Err(e) => return e,
    };
    let limit = match coerce_int(obj, "limit") {
        Ok(l) => l.unwrap_or(100),
        Err(e) => return e,
    };
    if limit < 1 {
        return invalid_request("body/limit must be >= 1");
    }
    let offset = match coerce_int(obj, "offset") {
        Ok(o) => o.unwrap_or(0),
        Err(e) => return e,
    };
    if offset < 0 {
        return invalid_request("body/offset must be >= 0");
    }
    let search = obj
        .get("search")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_lowercase();
    let sort = obj.get("sortBy").and_then(Value::as_object);
    let column = sort
        .and_then(|s| s.get("column"))
        .and_then(Value::as_str)
        .unwrap_or("name")
        .to_owned();
    if !["name", "updated_at", "created_at", "last_accessed_at"].contains(&column.as_str()) {
        return invalid_request("body/sortBy/column must be equal to one of the allowed values");
    }
    let descending = sort
        .and_then(|s| s.get("order"))
        .and_then(Value::as_str)
        .is_some_and(|o| o.eq_ignore_ascii_case("desc"));

    let state = shared.lock();
    let Some(b) = state.buckets.get(bucket).filter(|_| role == Role::Service) else {
        // A missing bucket (and one RLS hides) lists as empty, not as an error.
        return ok(&Vec::<ListEntry>::new());
    };
    // One level below the prefix, matched case-insensitively; a '/' is implied.
    let mut level = prefix.to_lowercase();
    if !level.is_empty() && !level.ends_with('/') {
        level.push('/');
    }
    let mut folders: BTreeMap<String, ()> = BTreeMap::new();
    let mut entries: Vec<(ListEntry, Option<DateTime<Utc>>)> = Vec::new();
    for (name, o) in &b.objects {
        if !name.to_lowercase().starts_with(&level) {
            continue;
        }
        let rest = &name[level.len()..];
        let (item, is_folder) = match rest.split_once('/') {
            Some((folder, _)) => (folder, true),
            None => (rest, false),
        };
        if !item.to_lowercase().starts_with(&search) {
            continue;
        }
        if is_folder {
            folders.insert(item.to_owned(), ());
        } else {
            let stamp = match column.as_str() {
                "updated_at" => Some(o.updated_at),
                _ => Some(o.created_at),
            };
            entries.push((
                ListEntry {
                    name: item.to_owned(),
                    id: Some(o.id.clone()),
                    updated_at: Some(iso(o.updated_at)),
                    created_at: Some(iso(o.created_at)),
                    last_accessed_at: Some(iso(o.created_at)),
                    metadata: Some(o.internal_metadata()),
                },
                stamp,
            ));
        }
    }
    for name in folders.into_keys() {
        entries.push((
            ListEntry {
                name,
                id: None,
                updated_at: None,
                created_at: None,
                last_accessed_at: None,
                metadata: None,
            },
            None,
        ));
    }
    // Folders sort together with files.
    entries.sort_by(|(a, ta), (b, tb)| {
        let ord = if column == "name" {
            a.name.cmp(&b.name)
        } else {
            ta.cmp(tb).then_with(|| a.name.cmp(&b.name))
        };
        if descending {
            ord.reverse()
        } else {
            ord
        }
    });
    let page: Vec<ListEntry> = entries
        .into_iter()
        .map(|(e, _)| e)
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    ok(&page)
}

fn delete_many(shared: &Shared, headers: &HeaderMap, bucket: &str, body: &Bytes) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let body = match json_body(headers, body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let obj = match require_object(&body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let Some(prefixes) = obj.get("prefixes") else {
        return invalid_request("body must have required property 'prefixes'");
    };
    let Some(prefixes) = prefixes.as_array() else {
        return invalid_request("body/prefixes must be array");
    };
    if prefixes.is_empty() {
        return invalid_request("body/prefixes must NOT have fewer than 1 items");
    }
    let mut state = shared.lock();
    let mut deleted: Vec<ObjectRow> = Vec::new();
    if let Some(b) = state
        .buckets
        .get_mut(bucket)
        .filter(|_| role == Role::Service)
    {
        // Despite the name, "prefixes" are exact keys.
        for key in prefixes.iter().filter_map(Value::as_str) {
            if let Some(o) = b.objects.remove(key) {
                deleted.push(o.row(bucket, key));
            }
        }
    }
    ok(&deleted)
}

fn delete_one(shared: &Shared, headers: &HeaderMap, bucket: &str, key: &str) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut state = shared.lock();
    let Some(b) = state.buckets.get_mut(bucket) else {
        return no_such_bucket();
    };
    if role != Role::Service || b.objects.remove(key).is_none() {
        return no_such_key();
    }
    message("Successfully deleted")
}

// ---------------------------------------------------------------------------------------------
// Move, copy

fn move_or_copy(shared: &Shared, headers: &HeaderMap, body: &Bytes, copy: bool) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let body = match json_body(headers, body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let obj = match require_object(&body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let (bucket, source, dest) = match (
        require_str(obj, "bucketId"),
        require_str(obj, "sourceKey"),
        require_str(obj, "destinationKey"),
    ) {
        (Ok(b), Ok(s), Ok(d)) => (b.to_owned(), s.to_owned(), d.to_owned()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let dest_bucket = obj
        .get("destinationBucket")
        .and_then(Value::as_str)
        .unwrap_or(&bucket)
        .to_owned();
    if !valid_key(&dest) {
        return invalid_key(&dest);
    }
    let upsert = copy && header_str(headers, "x-upsert") == Some("true");
    let mut state = shared.lock();
    let Some(src) = state
        .buckets
        .get(&bucket)
        .filter(|_| role == Role::Service)
        .and_then(|b| b.objects.get(&source))
        .cloned()
    else {
        return no_such_key();
    };
    let Some(target) = state.buckets.get_mut(&dest_bucket) else {
        return no_such_bucket();
    };
    let existing = target.objects.get(&dest).cloned();
    if existing.is_some() && !upsert {
        return duplicate(if copy {
            "KeyAlreadyExists"
        } else {
            "ResourceAlreadyExists"
        });
    }
    let now = Utc::now();
    let new = Obj {
        id: existing.as_ref().map_or_else(uuid4, |e| e.id.clone()),
        version: uuid4(),
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
        blob_modified: now - chrono::Duration::milliseconds(2),
        user_metadata: if copy {
            Value::Object(Default::default())
        } else {
            src.user_metadata.clone()
        },
        ..src.clone()
    };
    let row = new.row(&dest_bucket, &dest);
    let id = new.id.clone();
    target.objects.insert(dest.clone(), new);
    if copy {
        return ok(&CopyAnswer {
            key: format!("{dest_bucket}/{dest}"),
            id,
            row,
        });
    }
    if let Some(b) = state.buckets.get_mut(&bucket) {
        b.objects.remove(&source);
    }
    message("Successfully moved")
}

// ---------------------------------------------------------------------------------------------
// Signed URLs

fn expires_in(obj: &serde_json::Map<String, Value>) -> Result<i64, Response> {
    match coerce_int(obj, "expiresIn")? {
        None => Err(invalid_request(
            "body must have required property 'expiresIn'",
        )),
        Some(n) if n < 1 => Err(invalid_request("body/expiresIn must be >= 1")),
        Some(n) => Ok(n),
    }
}

fn signed_path(shared: &Shared, bucket: &str, key: &str, secs: i64) -> String {
    let now = Utc::now().timestamp();
    let url = format!("{bucket}/{key}");
    let token = shared.sign(&DownloadClaims {
        url: &url,
        scope: "download",
        iat: now,
        exp: now + secs,
    });
    // Relative to the server root, no `/storage/v1`, key *not* re-encoded (clients encodeURI it).
    format!("/object/sign/{url}?token={token}")
}

fn sign_one(
    shared: &Shared,
    headers: &HeaderMap,
    bucket: &str,
    key: &str,
    body: &Bytes,
) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let body = match json_body(headers, body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let secs = match require_object(&body).and_then(expires_in) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let state = shared.lock();
    // A missing bucket signs as a missing object.
    let exists = state
        .buckets
        .get(bucket)
        .filter(|b| role == Role::Service || b.public)
        .is_some_and(|b| b.objects.contains_key(key));
    if !exists {
        return no_such_key();
    }
    ok(&SignedAnswer {
        signed_url: signed_path(shared, bucket, key, secs),
    })
}

fn sign_many(shared: &Shared, headers: &HeaderMap, bucket: &str, body: &Bytes) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let body = match json_body(headers, body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let obj = match require_object(&body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let secs = match expires_in(obj) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(paths) = obj.get("paths").and_then(Value::as_array) else {
        return invalid_request("body must have required property 'paths'");
    };
    let state = shared.lock();
    let b = state
        .buckets
        .get(bucket)
        .filter(|b| role == Role::Service || b.public);
    let out: Vec<BatchSigned> = paths
        .iter()
        .filter_map(Value::as_str)
        .map(|path| {
            if b.is_some_and(|b| b.objects.contains_key(path)) {
                BatchSigned {
                    error: None,
                    path: path.to_owned(),
                    signed_url: Some(signed_path(shared, bucket, path, secs)),
                }
            } else {
                BatchSigned {
                    error: Some(
                        "Either the object does not exist or you do not have access to it"
                            .to_owned(),
                    ),
                    path: path.to_owned(),
                    signed_url: None,
                }
            }
        })
        .collect();
    ok(&out)
}

/// Checks a signed-URL token for `bucket/key`; returns its claims.
fn check_token(shared: &Shared, query: &str, bucket: &str, key: &str) -> Result<Value, Response> {
    let Some(token) = query_param(query, "token") else {
        return Err(invalid_request(
            "querystring must have required property 'token'",
        ));
    };
    let claims = verify_hs256(&shared.secret, &token).map_err(invalid_jwt)?;
    if claims.get("url").and_then(Value::as_str) != Some(format!("{bucket}/{key}").as_str()) {
        return Err(api_err(
            StatusCode::BAD_REQUEST,
            "400",
            "InvalidSignature",
            "Invalid signature",
            "InvalidSignature",
        ));
    }
    Ok(claims)
}

fn signed_download(
    shared: &Shared,
    headers: &HeaderMap,
    query: &str,
    bucket: &str,
    key: &str,
) -> Response {
    match check_token(shared, query, bucket, key) {
        Err(e) => e,
        Ok(claims) => {
            let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
            download(shared, Access::Signed { exp }, headers, query, bucket, key)
        }
    }
}

fn sign_upload(shared: &Shared, headers: &HeaderMap, bucket: &str, key: &str) -> Response {
    let role = match shared.require_auth(headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if !valid_key(key) {
        return invalid_key(key);
    }
    let upsert = header_str(headers, "x-upsert") == Some("true");
    let state = shared.lock();
    let Some(b) = state.buckets.get(bucket) else {
        return no_such_bucket();
    };
    if role != Role::Service {
        return rls_denied();
    }
    if !upsert && b.objects.contains_key(key) {
        return duplicate("KeyAlreadyExists");
    }
    let now = Utc::now().timestamp();
    let url = format!("{bucket}/{key}");
    let token = shared.sign(&UploadClaims {
        url: &url,
        upsert,
        scope: "upload",
        iat: now,
        exp: now + 7200,
    });
    #[derive(Serialize)]
    struct SignedUpload {
        url: String,
        token: String,
    }
    ok(&SignedUpload {
        url: format!("/object/upload/sign/{url}?token={token}"),
        token,
    })
}

async fn signed_upload(
    shared: &Shared,
    headers: &HeaderMap,
    query: &str,
    bucket: &str,
    key: &str,
    req: Request,
) -> Response {
    let claims = match check_token(shared, query, bucket, key) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let upsert = claims
        .get("upsert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // The token stands in for the service role; the answer has no `Id`.
    upload(
        shared,
        Role::Service,
        headers,
        bucket,
        key,
        upsert,
        req,
        false,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_the_file_backend() {
        assert_eq!(resolve_range("bytes=0-4", 12), Some((0, 4)));
        assert_eq!(resolve_range("bytes=6-", 12), Some((6, 11)));
        assert_eq!(resolve_range("bytes=-3", 12), Some((9, 11)));
        assert_eq!(resolve_range("bytes=5-100", 12), Some((5, 11)));
        assert_eq!(resolve_range("bytes=-100", 12), Some((0, 11)));
        for bad in [
            "bytes=100-200",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=4-2",
        ] {
            assert_eq!(resolve_range(bad, 12), None, "{bad}");
        }
        assert_eq!(resolve_range("bytes=0-", 0), None);
    }

    #[test]
    fn tokens_verify_and_reject_like_the_server() {
        let secret = b"s3cret";
        let t = sign_hs256(secret, &serde_json::json!({"role": "service_role"}));
        assert_eq!(
            verify_hs256(secret, &t).expect("valid token")["role"],
            "service_role"
        );
        assert_eq!(
            verify_hs256(b"other", &t).expect_err("refused"),
            "signature verification failed"
        );
        assert_eq!(
            verify_hs256(secret, "abc.def.ghi").expect_err("refused"),
            "JWS Protected Header is invalid"
        );
        let old = sign_hs256(secret, &serde_json::json!({"exp": 1}));
        assert_eq!(
            verify_hs256(secret, &old).expect_err("refused"),
            "\"exp\" claim timestamp check failed"
        );
        // The header is exactly the server's.
        assert!(t.starts_with("eyJhbGciOiJIUzI1NiJ9."));
    }

    #[test]
    fn etags_are_quoted_md5() {
        assert_eq!(md5_etag(b""), "\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(
            md5_etag(b"hello world\n"),
            "\"6f5902ac237024bdd0c176cb93063dc4\""
        );
    }

    #[test]
    fn keys_and_mimes() {
        assert!(valid_key("sp ace.txt"));
        assert!(!valid_key("sp ace/été.txt"));
        assert!(mime_allowed(&Some(vec!["text/*".into()]), "text/csv"));
        assert!(!mime_allowed(
            &Some(vec!["image/png".into(), "text/*".into()]),
            "application/pdf"
        ));
        assert_eq!(parse_size_limit(&serde_json::json!("1MB")), Some(1_000_000));
    }
}
