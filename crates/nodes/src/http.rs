//! `lib.http.{GetRequest, GetRequestDocument, DownloadFiles}` and `lib.rss.FetchRSSFeed`, all
//! through the process's guarded HTTP client (`ProcessingContext::http`: the address guard on
//! every redirect hop, the body cap and the timeout of `NODETOOL_HTTP_*`).
//!
//! As NodeTool's `http_get`, a GET is retried (three attempts, `Retry-After` honoured up to
//! 10 s) on 408, 425, 429 and 5xx, and any other non-2xx answer is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::media::{normalize_lexically, HttpRequest, HttpResponse};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

#[derive(Debug, Clone, Copy)]
enum Kind {
    GetText,
    GetDocument,
    DownloadFiles,
    Rss,
}

#[derive(Debug)]
struct HttpNode {
    spec: NodeSpec,
    kind: Kind,
}

pub fn register(r: &mut Registry) {
    let nodes = [
        (
            NodeSpec::new("lib.http.GetRequest", "GET Request")
                .input("url", "str", json!(""))
                .output("output", "str"),
            Kind::GetText,
        ),
        (
            NodeSpec::new("lib.http.GetRequestDocument", "GET Document")
                .input("url", "str", json!(""))
                .output("output", "document"),
            Kind::GetDocument,
        ),
        (
            NodeSpec::new("lib.http.DownloadFiles", "Download Files")
                .input("urls", "list[str]", json!([]))
                .input(
                    "output_folder",
                    crate::folder::PATH_TYPE,
                    json!("downloads"),
                )
                .input("max_concurrent_downloads", "int", json!(5))
                .output("success", "list[str]")
                .output("failed", "list[str]"),
            Kind::DownloadFiles,
        ),
        (
            NodeSpec::new("lib.rss.FetchRSSFeed", "Fetch RSS Feed")
                .input("url", "str", json!(""))
                .output("title", "str")
                .output("link", "str")
                .output("published", "datetime")
                .output("summary", "str")
                .output("author", "str")
                .streaming(),
            Kind::Rss,
        ),
    ];
    for (spec, kind) in nodes {
        r.register(Arc::new(HttpNode { spec, kind }));
    }
}

const RETRY_STATUSES: &[u16] = &[408, 425, 429, 500, 502, 503, 504];

fn status_error(url: &str, status: u16) -> Error {
    let kind = match status {
        404 | 410 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::PermissionDenied,
        429 => ErrorKind::RateLimited,
        s if s >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::InvalidInput,
    };
    Error::new(kind, format!("GET {url} answered HTTP {status}")).with_operation("http.get")
}

/// NodeTool's `http_get`: GET with retries on transient statuses; a non-2xx answer is an error.
pub(crate) async fn get(ctx: &ProcessingContext, url: &str) -> Result<HttpResponse> {
    if url.trim().is_empty() {
        return Err(Error::invalid_input("input `url` is empty").with_context("input", "url"));
    }
    let http = ctx.http()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = http.fetch(HttpRequest::get(url)).await?;
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        if !RETRY_STATUSES.contains(&response.status) || attempt >= 3 {
            return Err(status_error(url, response.status));
        }
        let delay = response
            .header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(0.5 * f64::from(1u32 << (attempt - 1)), |s| s.min(10.0));
        ctx.sleep(Duration::from_secs_f64(delay)).await?;
    }
}

/// The body as text in the response's charset (UTF-8 when none is named).
fn decode_text(response: &HttpResponse) -> Result<String> {
    let charset = response
        .header("content-type")
        .and_then(|ct| {
            ct.split(';')
                .filter_map(|p| p.trim().strip_prefix("charset="))
                .next()
                .map(|c| c.trim_matches('"').to_ascii_lowercase())
        })
        .unwrap_or_else(|| "utf-8".to_owned());
    match charset.as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" => String::from_utf8(response.body.to_vec())
            .map_err(|e| {
                Error::invalid_input(format!(
                    "{} sent text that is not valid {charset}: {e}",
                    response.url
                ))
                .with_operation("http.get")
            }),
        // Latin-1 maps every byte to the code point of the same value.
        "iso-8859-1" | "latin-1" | "latin1" => {
            Ok(response.body.iter().map(|b| char::from(*b)).collect())
        }
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} sent text in charset {other}, which this node does not decode",
                response.url
            ),
        )
        .with_operation("http.get")),
    }
}

/// NodeTool's `Datetime` of a feed date (UTC).
fn datetime(t: chrono::DateTime<chrono::Utc>) -> Value {
    use chrono::{Datelike, Timelike};
    json!({
        "type": "datetime",
        "year": t.year(), "month": t.month(), "day": t.day(),
        "hour": t.hour(), "minute": t.minute(), "second": t.second(),
        "microsecond": t.nanosecond() / 1000,
        "tzinfo": "UTC", "utc_offset": 0.0,
    })
}

/// A file name from `Content-Disposition` or the URL's last segment, without any directory
/// part (a server cannot write outside the folder).
fn file_name(response: &HttpResponse, url: &str) -> String {
    let from_header = response
        .header("content-disposition")
        .and_then(|v| v.split("filename=").nth(1))
        .map(|f| f.trim().trim_matches(['"', '\'']).to_owned());
    let raw = from_header.unwrap_or_else(|| {
        let path = url.split(['?', '#']).next().unwrap_or("");
        path.rsplit('/').next().unwrap_or("").to_owned()
    });
    let name: String = raw
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        "unnamed_file".to_owned()
    } else {
        name
    }
}

/// The download folder: absolute or relative to the first file root, inside the roots.
fn download_folder(folder: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    const OP: &str = "http.download_files";
    if folder.is_empty() {
        return Err(Error::invalid_input("output_folder cannot be empty").with_operation(OP));
    }
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let Some(first) = roots.first() else {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "DownloadFiles writes only inside the allowed folders, and none are configured: set \
             NODETOOL_FILE_ROOTS",
        )
        .with_operation(OP));
    };
    let wanted = normalize_lexically(&first.join(folder));
    if !roots.iter().any(|r| wanted.starts_with(r)) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "refused to write into {folder}: downloads go only inside the allowed folders \
                 (NODETOOL_FILE_ROOTS)"
            ),
        )
        .with_operation(OP));
    }
    std::fs::create_dir_all(&wanted).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("cannot create {}: {e}", wanted.display()),
        )
        .with_operation(OP)
    })?;
    let real = std::fs::canonicalize(&wanted).map_err(|e| {
        Error::not_found(format!("cannot open {}: {e}", wanted.display())).with_operation(OP)
    })?;
    if !roots.iter().any(|r| real.starts_with(r)) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("refused to write into {folder}: it resolves outside the allowed folders"),
        )
        .with_operation(OP));
    }
    Ok(real)
}

/// Writes `bytes` to `folder/name` through a temporary file and a rename: a reader sees the
/// old file or the whole new one, never part of it.
fn write_whole(folder: &Path, name: &str, bytes: &Bytes) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let target = folder.join(name);
    let mut tmp = tempfile::NamedTempFile::new_in(folder)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(target)
}

#[async_trait]
impl NodeImpl for HttpNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        match self.kind {
            Kind::GetText => {
                let response = get(ctx, &inputs.str("url")?).await?;
                out.emit("output", json!(decode_text(&response)?)).await
            }
            Kind::GetDocument => {
                let response = get(ctx, &inputs.str("url")?).await?;
                let name = format!("{}.bin", nodetool_core::id::new_id());
                let key = ctx.put_temp(&name, response.body.clone()).await?;
                let mut doc = json!({
                    "type": "document",
                    "uri": format!("temp://{}", key.as_str()),
                    "asset_id": null,
                    "data": null,
                });
                if let Some(ct) = response.content_type() {
                    doc["content_type"] = json!(ct);
                }
                out.emit("output", doc).await
            }
            Kind::DownloadFiles => self.download_files(ctx, inputs, out).await,
            Kind::Rss => {
                let response = get(ctx, &inputs.str("url")?).await?;
                let feed = feed_rs::parser::parse(response.body.as_ref()).map_err(|e| {
                    Error::invalid_input(format!(
                        "{} is not an RSS or Atom feed: {e}",
                        response.url
                    ))
                    .with_operation("rss.fetch")
                })?;
                for entry in feed.entries {
                    ctx.check_cancelled()?;
                    let published = entry
                        .published
                        .or(entry.updated)
                        .unwrap_or_else(chrono::Utc::now);
                    let link = entry
                        .links
                        .first()
                        .map(|l| l.href.clone())
                        .unwrap_or_default();
                    let summary = entry
                        .summary
                        .map(|t| t.content)
                        .or_else(|| entry.content.and_then(|c| c.body))
                        .unwrap_or_default();
                    let author = entry
                        .authors
                        .first()
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    out.emit(
                        "title",
                        json!(entry.title.map(|t| t.content).unwrap_or_default()),
                    )
                    .await?;
                    out.emit("link", json!(link)).await?;
                    out.emit("published", datetime(published)).await?;
                    out.emit("summary", json!(summary)).await?;
                    out.emit("author", json!(author)).await?;
                }
                Ok(())
            }
        }
    }
}

impl HttpNode {
    /// Downloads each URL (at most `max_concurrent_downloads` at once) into the folder; a URL
    /// that fails for any reason goes to `failed`, as in NodeTool.
    async fn download_files(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        const OP: &str = "http.download_files";
        let urls: Vec<String> = inputs
            .list("urls")?
            .into_iter()
            .map(|u| match u {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        let folder = crate::folder::path_text(inputs, "output_folder")?;
        let roots = ctx.file_roots();
        let folder = tokio::task::spawn_blocking(move || download_folder(&folder, &roots))
            .await
            .map_err(|e| {
                Error::unexpected(format!("folder task failed: {e}")).with_operation(OP)
            })??;
        let batch = inputs
            .opt_i64("max_concurrent_downloads")?
            .unwrap_or(5)
            .clamp(1, 64) as usize;
        let (mut success, mut failed) = (Vec::new(), Vec::new());
        let total = urls.len() as i64;
        let mut done = 0;
        for chunk in urls.chunks(batch) {
            let results = futures::future::join_all(chunk.iter().map(|url| {
                let folder = folder.clone();
                async move {
                    let response = get(ctx, url).await.ok()?;
                    let name = file_name(&response, url);
                    let body = response.body;
                    tokio::task::spawn_blocking(move || write_whole(&folder, &name, &body).ok())
                        .await
                        .ok()
                        .flatten()
                }
            }))
            .await;
            for (url, saved) in chunk.iter().zip(results) {
                match saved {
                    Some(path) => success.push(json!(path.display().to_string())),
                    None => failed.push(json!(url)),
                }
            }
            done += chunk.len() as i64;
            ctx.post_progress(done, total);
            ctx.check_cancelled()?;
        }
        out.emit("success", Value::Array(success)).await?;
        out.emit("failed", Value::Array(failed)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        HttpResponse {
            status: 200,
            url: "http://x/".to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn file_names_never_leave_the_folder() {
        let r = response(
            &[(
                "Content-Disposition",
                "attachment; filename=\"../../etc/x\"",
            )],
            b"",
        );
        assert_eq!(file_name(&r, "http://h/a.png"), "x");
        let r = response(&[], b"");
        assert_eq!(file_name(&r, "http://h/dir/a.png?x=1"), "a.png");
        assert_eq!(file_name(&r, "http://h/"), "unnamed_file");
        assert_eq!(file_name(&r, "http://h/.."), "unnamed_file");
    }

    #[test]
    fn text_in_its_charset() {
        let latin = response(
            &[("content-type", "text/plain; charset=ISO-8859-1")],
            b"caf\xe9",
        );
        assert_eq!(decode_text(&latin).unwrap(), "café");
        let bad = response(&[], b"\xff\xfe");
        assert!(decode_text(&bad).is_err());
    }
}
