//! Media refs: where the bytes of an `ImageRef`/`AudioRef`/`VideoRef`/`DocumentRef`/`TextRef`
//! (`{type, uri, asset_id?, data?}`) come from, and the policy every source obeys.
//!
//! Sources, in NodeTool's order of precedence (`ProcessingContext.asset_to_io`):
//! 1. `memory://ID` — an object this job made ([`ProcessingContext::put_memory`]);
//! 2. inline `data` — bytes as a list of numbers, or a string;
//! 3. `asset_id` — the record of the job's user (another user's asset is "not found");
//! 4. `uri`: `data:` (base64 or percent-encoded), `http(s)://` (through [`HttpFetch`], the SSRF
//!    guard outside the engine), `file://` or a plain path (only inside [`MediaPolicy`]'s roots,
//!    symlinks resolved first), `asset://KEY` and `temp://KEY` (our storages), and NodeTool's
//!    `/api/storage/KEY` and `/api/storage/temp/KEY` URLs.
//!
//! The parsing functions here ([`classify_uri`], [`parse_data_uri`], [`file_uri_path`],
//! [`normalize_lexically`]) are pure, allocation-bounded and never panic: they are the fuzz
//! targets for media refs.
//!
//! [`ProcessingContext::put_memory`]: crate::context::ProcessingContext::put_memory

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;

use nodetool_core::{Error, ErrorKind, KeyScope, Result};

/// Limits and roots for media refs. Built from settings by whoever builds the engine; the
/// defaults are the settings' defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    /// Largest decoded `data:` URI or inline `data` (`NODETOOL_DATA_URI_MAX_BYTES`).
    pub data_max_bytes: u64,
    /// Largest image, in pixels (width × height), read from the header before decoding
    /// (`NODETOOL_IMAGE_MAX_PIXELS`; Pillow's `MAX_IMAGE_PIXELS`).
    pub image_max_pixels: u64,
    /// Largest `http(s)://` body (`NODETOOL_HTTP_MAX_BYTES`).
    pub http_max_bytes: u64,
    /// Folders `file://` URIs and plain paths may read from (`NODETOOL_FILE_ROOTS`).
    pub file_roots: Vec<PathBuf>,
    /// The local asset folder, when assets are files: a root too (only the user's own
    /// `{user}/` folder under it under [`KeyScope::UserPrefix`]).
    pub asset_folder: Option<PathBuf>,
    /// Which storage keys a job may touch: the process's one [`KeyScope`], the rule the HTTP
    /// storage routes and the worker-call handler apply too. Under [`KeyScope::UserPrefix`]
    /// (multi-user auth) a job reads and writes only keys under `{user}/` (its temp objects go
    /// to `{user}/jobs/{job}/`); another user's key is "not found". Single-user providers own
    /// the whole store.
    pub key_scope: KeyScope,
}

/// Pillow's `Image.MAX_IMAGE_PIXELS`.
pub const DEFAULT_IMAGE_MAX_PIXELS: u64 = 89_478_485;

impl Default for MediaPolicy {
    fn default() -> Self {
        Self {
            data_max_bytes: 32 << 20,
            image_max_pixels: DEFAULT_IMAGE_MAX_PIXELS,
            http_max_bytes: 64 << 20,
            file_roots: Vec::new(),
            asset_folder: None,
            key_scope: KeyScope::WholeStore,
        }
    }
}

impl MediaPolicy {
    /// The folders a job of `owner` may read files from.
    pub fn roots_for(&self, owner: &str) -> Vec<PathBuf> {
        let mut roots = self.file_roots.clone();
        if let Some(folder) = &self.asset_folder {
            roots.push(if self.key_scope == KeyScope::UserPrefix {
                folder.join(owner)
            } else {
                folder.clone()
            });
        }
        roots
    }
}

/// One HTTP request made on a job's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Refuse a body larger than this (the fetcher's own cap applies too).
    pub max_bytes: Option<u64>,
    /// Give up after this long (the fetcher's own timeout applies too).
    pub timeout: Option<Duration>,
}

impl HttpRequest {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: "GET".to_owned(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            max_bytes: None,
            timeout: None,
        }
    }
}

/// The answer: status, headers, the URL it finally came from (after redirects) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl HttpResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body, without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }
}

/// How a job reaches `http(s)://` URLs. The engine has no HTTP client; the runtime supplies one.
///
/// Implementations MUST refuse, before connecting, every hop (the first request and each
/// redirect) whose address is loopback, private, link-local, CGNAT, multicast, unspecified or a
/// cloud metadata address (IPv4-mapped IPv6 forms included) unless configured to allow it, and
/// MUST connect to the address they checked (no second resolution). They MUST enforce a body
/// cap (stop reading past it), a timeout and a redirect limit. Non-2xx statuses are answers, not
/// errors. Errors name the URL and the rule that refused it.
#[async_trait]
pub trait HttpFetch: Send + Sync + fmt::Debug {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse>;
}

/// The engine's media services: the policy, and the HTTP fetcher if this process has one.
#[derive(Debug, Clone, Default)]
pub struct MediaServices {
    pub policy: MediaPolicy,
    /// `None`: `http(s)://` refs and HTTP nodes fail with `Unsupported` (e.g. a worker whose
    /// parent lends no network).
    pub http: Option<Arc<dyn HttpFetch>>,
}

/// What a ref's `uri` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriKind<'a> {
    /// No uri.
    Empty,
    /// A whole `data:` URI.
    Data(&'a str),
    /// An `http://` or `https://` URL.
    Http(&'a str),
    /// A `file://` URI's path, or a plain path.
    File(PathBuf),
    /// A key in asset storage (`asset://KEY`, NodeTool's `/api/storage/KEY`).
    Asset(&'a str),
    /// A key in temp storage (`temp://KEY`, NodeTool's `/api/storage/temp/KEY`).
    Temp(&'a str),
    /// A job-local object: the whole `memory://ID`.
    Memory(&'a str),
}

/// The URI forms refs may use, for error messages.
pub const ACCEPTED_URIS: &str = "data:, http(s)://, file:// or a path, asset://, temp://, \
                                 memory:// or /api/storage/";

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Classifies a ref's `uri`. Pure; an unknown scheme is `Unsupported` naming the accepted forms.
pub fn classify_uri(uri: &str) -> Result<UriKind<'_>> {
    let uri = uri.trim();
    if uri.is_empty() {
        return Ok(UriKind::Empty);
    }
    if strip_prefix_ci(uri, "data:").is_some() {
        return Ok(UriKind::Data(uri));
    }
    if strip_prefix_ci(uri, "http://").is_some() || strip_prefix_ci(uri, "https://").is_some() {
        return Ok(UriKind::Http(uri));
    }
    if strip_prefix_ci(uri, "file:").is_some() {
        return file_uri_path(uri).map(UriKind::File);
    }
    if let Some(rest) = uri.strip_prefix("asset://") {
        return Ok(UriKind::Asset(rest));
    }
    if let Some(rest) = uri.strip_prefix("temp://") {
        return Ok(UriKind::Temp(rest));
    }
    if uri.starts_with("memory://") {
        return Ok(UriKind::Memory(uri));
    }
    if let Some(rest) = uri.strip_prefix("/api/storage/temp/") {
        return Ok(UriKind::Temp(rest));
    }
    if let Some(rest) = uri.strip_prefix("/api/storage/") {
        return Ok(UriKind::Asset(rest));
    }
    if let Some((scheme, _)) = uri.split_once(':') {
        // `C:` or `x:` alone is not a scheme we know; a `name://` is.
        let looks_like_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && uri[scheme.len()..].starts_with("://");
        if looks_like_scheme {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "cannot load {}: unknown URI scheme `{scheme}:` (accepted: {ACCEPTED_URIS})",
                    preview(uri)
                ),
            )
            .with_operation("media.uri"));
        }
    }
    Ok(UriKind::File(PathBuf::from(uri)))
}

/// The first 80 characters of a URI, for messages (data URIs are long).
pub fn preview(uri: &str) -> String {
    if uri.chars().count() <= 80 {
        return format!("{uri:?}");
    }
    let head: String = uri.chars().take(80).collect();
    format!("{head:?}…")
}

/// The local path of a `file:` URI: `file:///abs`, `file://localhost/abs` or `file:/abs`,
/// percent-decoded. Another host, an empty path or a NUL byte is `InvalidInput`. Pure.
pub fn file_uri_path(uri: &str) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::invalid_input(format!("bad file URI {}: {why}", preview(uri)))
            .with_operation("media.file_uri")
    };
    let rest = strip_prefix_ci(uri, "file:").ok_or_else(|| bad("not a file: URI"))?;
    let path = if let Some(after) = rest.strip_prefix("//") {
        let (host, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
            return Err(bad(&format!("remote host `{host}` (only local files)")));
        }
        path
    } else {
        rest
    };
    // A query or fragment is not part of the path.
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return Err(bad("no path"));
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    if decoded.contains(&0) {
        return Err(bad("NUL byte in the path"));
    }
    let text = String::from_utf8(decoded).map_err(|_| bad("path is not UTF-8"))?;
    Ok(PathBuf::from(text))
}

/// A decoded `data:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUri {
    /// The media type as given (`image/png`), `text/plain` when omitted.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

fn data_base64() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// Decodes a `data:[<media type>][;params][;base64],<data>` URI (RFC 2397): base64 (standard
/// or URL-safe alphabet, padding optional, whitespace ignored, percent-escapes decoded first)
/// or percent-encoded text. A payload whose decoded size is over `max_bytes` is `TooLarge`,
/// found from its length before anything is decoded. Pure.
pub fn parse_data_uri(uri: &str, max_bytes: u64) -> Result<DataUri> {
    let bad = |why: String| {
        Error::invalid_input(format!("bad data URI {}: {why}", preview(uri)))
            .with_operation("media.data_uri")
    };
    let rest = strip_prefix_ci(uri.trim(), "data:").ok_or_else(|| bad("not a data: URI".into()))?;
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| bad("no `,` before the data".into()))?;
    let mut params = header.split(';');
    let media_type = params.next().unwrap_or("").trim();
    let base64 = header
        .rsplit(';')
        .next()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("base64"))
        && header.contains(';');
    let media_type = if media_type.is_empty() || media_type.eq_ignore_ascii_case("base64") {
        "text/plain".to_owned()
    } else {
        media_type.to_ascii_lowercase()
    };
    let too_large = |size: u64| {
        Error::new(
            ErrorKind::TooLarge,
            format!(
                "data URI decodes to {size} bytes or more, over the limit of {max_bytes} bytes \
                 (NODETOOL_DATA_URI_MAX_BYTES)"
            ),
        )
        .with_operation("media.data_uri")
        .with_context("limit", max_bytes)
    };
    let len = payload.len() as u64;
    if base64 {
        // Every 4 base64 characters are at most 3 bytes: refuse before decoding anything.
        let estimate = len / 4 * 3;
        if estimate > max_bytes.saturating_add(3) {
            return Err(too_large(estimate));
        }
        let unescaped: Vec<u8> = percent_encoding::percent_decode_str(payload)
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| match b {
                b'-' => b'+',
                b'_' => b'/',
                other => other,
            })
            .collect();
        let bytes = data_base64()
            .decode(&unescaped)
            .map_err(|e| bad(format!("invalid base64 ({e})")))?;
        if bytes.len() as u64 > max_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(DataUri { media_type, bytes })
    } else {
        // Percent-decoding never grows the text, so a short payload always fits.
        if len > max_bytes.saturating_mul(3) {
            return Err(too_large(len / 3));
        }
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(payload).collect();
        if bytes.len() as u64 > max_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(DataUri { media_type, bytes })
    }
}

/// `path` with `.` dropped and `..` applied, without touching the file system (a `..` above
/// the root stays at the root). Pure.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => out.push(Component::RootDir.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
        }
    }
    out
}

fn outside_roots(path: &Path, roots: &[PathBuf]) -> Error {
    let listed = if roots.is_empty() {
        "none are configured".to_owned()
    } else {
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "refused to read {}: files may be read only inside the allowed folders ({listed}); \
             add the folder to NODETOOL_FILE_ROOTS to allow it",
            path.display()
        ),
    )
    .with_operation("media.file")
}

/// The candidates `path` may mean: itself when absolute, else joined to each root; each
/// normalised lexically and kept only if it lies under a root.
fn candidates(path: &Path, roots: &[PathBuf]) -> Vec<PathBuf> {
    let options: Vec<PathBuf> = if path.is_absolute() {
        vec![normalize_lexically(path)]
    } else {
        roots
            .iter()
            .map(|r| normalize_lexically(&r.join(path)))
            .collect()
    };
    options
        .into_iter()
        .filter(|p| roots.iter().any(|r| p.starts_with(r)))
        .collect()
}

/// The roots that exist, canonicalised (symlinks in a root's own path are the operator's).
fn canonical_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect()
}

/// What a path inside the roots is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    File,
    Dir,
}

/// Resolves `path` (absolute, or relative to a root) to a canonical path inside `roots`:
/// refused without touching the file system when it is lexically outside every root, and
/// refused after resolving symlinks when it really lies outside. Blocking: call it off the
/// async workers.
pub fn resolve_in_roots(path: &Path, roots: &[PathBuf], want: Want) -> Result<PathBuf> {
    let roots = canonical_roots(roots);
    let options = candidates(path, &roots);
    if options.is_empty() {
        return Err(outside_roots(path, &roots));
    }
    let mut first_error = None;
    for candidate in options {
        let real = match std::fs::canonicalize(&candidate) {
            Ok(real) => real,
            Err(e) => {
                first_error.get_or_insert(
                    Error::not_found(format!("no such file or folder: {}", path.display()))
                        .with_operation("media.file")
                        .with_source(e),
                );
                continue;
            }
        };
        if !roots.iter().any(|r| real.starts_with(r)) {
            return Err(outside_roots(path, &roots).with_context("resolves_to", real.display()));
        }
        let meta = std::fs::metadata(&real).map_err(|e| {
            Error::not_found(format!("cannot read {}: {e}", path.display()))
                .with_operation("media.file")
        })?;
        let ok = match want {
            Want::File => meta.is_file(),
            Want::Dir => meta.is_dir(),
        };
        if !ok {
            return Err(Error::invalid_input(format!(
                "{} is not a {}",
                path.display(),
                if want == Want::File {
                    "regular file"
                } else {
                    "folder"
                }
            ))
            .with_operation("media.file"));
        }
        return Ok(real);
    }
    Err(first_error.unwrap_or_else(|| outside_roots(path, &roots)))
}

/// Reads a whole file inside `roots` (see [`resolve_in_roots`]). The file is opened, then the
/// path the descriptor really refers to is checked again, so a symlink swapped in between the
/// check and the open cannot lead outside. Blocking.
pub fn read_file_in_roots(path: &Path, roots: &[PathBuf]) -> Result<Vec<u8>> {
    use std::io::Read;
    let real = resolve_in_roots(path, roots, Want::File)?;
    let mut file = std::fs::File::open(&real).map_err(|e| {
        Error::not_found(format!("cannot open {}: {e}", path.display()))
            .with_operation("media.file")
    })?;
    if let Some(opened) = opened_path(&file) {
        let roots = canonical_roots(roots);
        if !roots.iter().any(|r| opened.starts_with(r)) {
            return Err(outside_roots(path, &roots).with_context("resolves_to", opened.display()));
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("cannot read {}: {e}", path.display()),
        )
        .with_operation("media.file")
    })?;
    Ok(bytes)
}

/// The path an open file really is (Linux `/proc/self/fd`); `None` elsewhere.
fn opened_path(file: &std::fs::File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// The bytes of inline `data` (a list of 0..=255, or a string), within `max_bytes`.
pub fn inline_bytes(data: &serde_json::Value, max_bytes: u64) -> Result<Bytes> {
    use serde_json::Value;
    let too_large = |n: usize| {
        Error::new(
            ErrorKind::TooLarge,
            format!(
                "inline asset data has {n} bytes, over the limit of {max_bytes} bytes \
                 (NODETOOL_DATA_URI_MAX_BYTES)"
            ),
        )
        .with_operation("media.inline")
    };
    match data {
        Value::String(s) if s.len() as u64 > max_bytes => Err(too_large(s.len())),
        Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
        Value::Array(items) if items.len() as u64 > max_bytes => Err(too_large(items.len())),
        Value::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| {
                        Error::invalid_input("inline asset data must be bytes (0..=255)")
                    })
            })
            .collect::<Result<Vec<u8>>>()
            .map(Bytes::from),
        _ => Err(Error::invalid_input(
            "inline asset data must be a string or a byte list",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_form() {
        assert_eq!(classify_uri("").unwrap(), UriKind::Empty);
        assert!(matches!(classify_uri("data:,x").unwrap(), UriKind::Data(_)));
        assert!(matches!(classify_uri("DATA:,x").unwrap(), UriKind::Data(_)));
        assert!(matches!(
            classify_uri("https://a.b/c").unwrap(),
            UriKind::Http(_)
        ));
        assert_eq!(
            classify_uri("file:///tmp/a%20b.png").unwrap(),
            UriKind::File(PathBuf::from("/tmp/a b.png"))
        );
        assert_eq!(
            classify_uri("/srv/x.png").unwrap(),
            UriKind::File(PathBuf::from("/srv/x.png"))
        );
        assert_eq!(
            classify_uri("pics/x.png").unwrap(),
            UriKind::File(PathBuf::from("pics/x.png"))
        );
        assert_eq!(
            classify_uri("asset://1/a.png").unwrap(),
            UriKind::Asset("1/a.png")
        );
        assert_eq!(
            classify_uri("temp://jobs/j/a").unwrap(),
            UriKind::Temp("jobs/j/a")
        );
        assert_eq!(
            classify_uri("memory://abc").unwrap(),
            UriKind::Memory("memory://abc")
        );
        assert_eq!(
            classify_uri("/api/storage/temp/k.png").unwrap(),
            UriKind::Temp("k.png")
        );
        assert_eq!(
            classify_uri("/api/storage/1/k.png").unwrap(),
            UriKind::Asset("1/k.png")
        );
        let err = classify_uri("s3://bucket/key").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("s3:"), "{err}");
    }

    #[test]
    fn file_uris() {
        assert_eq!(
            file_uri_path("file://localhost/etc/x").unwrap(),
            PathBuf::from("/etc/x")
        );
        assert_eq!(
            file_uri_path("file:/etc/x?y#z").unwrap(),
            PathBuf::from("/etc/x")
        );
        assert!(file_uri_path("file://evil.com/etc/passwd").is_err());
        assert!(file_uri_path("file://").is_err());
        assert!(file_uri_path("file:///a%00b").is_err());
        assert!(file_uri_path("file:///%ff").is_err());
    }

    #[test]
    fn data_uris_base64_and_percent() {
        let d = parse_data_uri("data:image/png;base64,aGVsbG8=", 100).unwrap();
        assert_eq!(
            (d.media_type.as_str(), d.bytes.as_slice()),
            ("image/png", &b"hello"[..])
        );
        // Unpadded, with line breaks, URL-safe, percent-escaped.
        assert_eq!(
            parse_data_uri("data:;base64,aGVs\nbG8", 100).unwrap().bytes,
            b"hello"
        );
        assert_eq!(
            parse_data_uri("data:;base64,-_8%3D", 100).unwrap().bytes,
            [0xfb, 0xff]
        );
        let t = parse_data_uri("data:text/plain;charset=utf-8,hello%20w%C3%B6rld", 100).unwrap();
        assert_eq!(t.media_type, "text/plain");
        assert_eq!(String::from_utf8(t.bytes).unwrap(), "hello wörld");
        assert_eq!(parse_data_uri("data:,", 0).unwrap().bytes, b"");
        assert!(parse_data_uri("data:image/png;base64", 100).is_err());
        assert!(parse_data_uri("data:;base64,@@@@", 100).is_err());
    }

    #[test]
    fn oversized_data_uris_are_refused_before_decoding() {
        let big = format!("data:;base64,{}", "A".repeat(4000));
        let err = parse_data_uri(&big, 1000).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(
            err.to_string().contains("NODETOOL_DATA_URI_MAX_BYTES"),
            "{err}"
        );
        assert_eq!(parse_data_uri(&big, 3000).unwrap().bytes.len(), 3000);
        let text = format!("data:,{}", "x".repeat(50));
        assert_eq!(
            parse_data_uri(&text, 49).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(
            normalize_lexically(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
        assert_eq!(
            normalize_lexically(Path::new("/../../etc")),
            PathBuf::from("/etc")
        );
    }

    #[test]
    fn files_only_inside_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.txt"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
        let roots = vec![root.clone()];

        assert_eq!(
            read_file_in_roots(&root.join("a.txt"), &roots).unwrap(),
            b"inside"
        );
        assert_eq!(
            read_file_in_roots(Path::new("a.txt"), &roots).unwrap(),
            b"inside"
        );
        for refused in [
            PathBuf::from("/etc/passwd"),
            root.join("../secret.txt"),
            PathBuf::from("../secret.txt"),
            root.join("link.txt"),
        ] {
            let err = read_file_in_roots(&refused, &roots).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::PermissionDenied,
                "{refused:?}: {err}"
            );
            assert!(err.to_string().contains("NODETOOL_FILE_ROOTS"), "{err}");
        }
        assert_eq!(
            read_file_in_roots(&root.join("nope.txt"), &roots)
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            read_file_in_roots(Path::new("/etc/passwd"), &[])
                .unwrap_err()
                .kind(),
            ErrorKind::PermissionDenied
        );
        assert!(resolve_in_roots(&root, &roots, Want::Dir).is_ok());
        assert_eq!(
            resolve_in_roots(&root, &roots, Want::File)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
}
