//! Storage routes through a real socket: ranges, validators, HEAD, traversal, upload limit,
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
//! clients that stop reading.

use crate::common;

use std::time::Duration;

use common::{error_kind, start};
use reqwest::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn put_get_head_delete_nested_keys() {
    let s = start(&[]).await;
    let url = s.u("/api/storage/a/b/c.txt");
    let r = s.client.put(&url).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let meta: serde_json::Value = r.json().await.unwrap();
    assert_eq!(meta["key"], "a/b/c.txt");
    assert_eq!(meta["size"], 5);
    let r = s.client.put(&url).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 200, "overwrite answers 200");

    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/plain");
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(h[header::CONTENT_LENGTH], "5");
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let lm = h[header::LAST_MODIFIED].to_str().unwrap().to_owned();
    assert!(lm.ends_with(" GMT"), "{lm}");
    httpdate::parse_http_date(&lm).unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = s.client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
    ] {
        assert_eq!(r.headers().get(&name), h.get(&name), "HEAD {name}");
    }
    assert!(r.bytes().await.unwrap().is_empty());

    // Content type: the stored one wins over the extension.
    let r = s
        .client
        .put(s.u("/api/storage/typed.bin"))
        .header(header::CONTENT_TYPE, "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .get(s.u("/api/storage/typed.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
    // Guessed, case-insensitively, when none was given.
    s.client
        .put(s.u("/api/storage/P.JPEG"))
        .body("x")
        .send()
        .await
        .unwrap();
    let r = s
        .client
        .get(s.u("/api/storage/P.JPEG"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/jpeg");

    let r = s.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_kind(r).await, "not_found");
    let r = s.client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn temp_and_alias_routes() {
    let s = start(&[]).await;
    let r = s
        .client
        .put(s.u("/api/storage/temp/job/x.txt"))
        .body("temp!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .get(s.u("/storage/temp/job/x.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "temp!");
    // Temp and asset storage are separate.
    let r = s
        .client
        .get(s.u("/api/storage/job/x.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.client
        .put(s.u("/storage/k.txt"))
        .body("asset")
        .send()
        .await
        .unwrap();
    let r = s
        .client
        .get(s.u("/api/storage/k.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "asset");
    let temp = s.state.resources.temp_storage().unwrap();
    assert!(temp
        .exists(&nodetool_core::StorageKey::new("job/x.txt").unwrap())
        .await
        .unwrap());
}

async fn get_range(s: &common::TestServer, url: &str, range: &str) -> reqwest::Response {
    s.client
        .get(url)
        .header(header::RANGE, range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ranges_follow_rfc_9110() {
    let s = start(&[]).await;
    let url = s.u("/api/storage/r/five.txt");
    s.client.put(&url).body("hello").send().await.unwrap();

    for (range, body, content_range) in [
        ("bytes=0-0", "h", "bytes 0-0/5"),
        ("bytes=-1", "o", "bytes 4-4/5"),
        ("bytes=1-", "ello", "bytes 1-4/5"),
        ("bytes=2-100", "llo", "bytes 2-4/5"),
        ("bytes=-100", "hello", "bytes 0-4/5"),
        ("bytes=1-3", "ell", "bytes 1-3/5"),
    ] {
        let r = get_range(&s, &url, range).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()[header::CONTENT_RANGE], content_range, "{range}");
        assert_eq!(
            r.headers()[header::CONTENT_LENGTH],
            body.len().to_string().as_str(),
            "{range}"
        );
        assert_eq!(r.text().await.unwrap(), body, "{range}");
    }
    for range in ["bytes=5-", "bytes=9-3", "bytes=-0", "bytes=100-200"] {
        let r = get_range(&s, &url, range).await;
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */5", "{range}");
        assert_eq!(error_kind(r).await, "range_not_satisfiable", "{range}");
    }
    // Multi-range and unknown units: the full 200 is a valid answer.
    for range in ["bytes=0-1,3-4", "items=0-1", "bytes=x-y"] {
        let r = get_range(&s, &url, range).await;
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.text().await.unwrap(), "hello");
    }
    // HEAD with a range: 206 headers, no body.
    let r = s
        .client
        .head(&url)
        .header(header::RANGE, "bytes=1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 1-2/5");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "2");
    // If-Range with a stale validator: whole object.
    let r = s
        .client
        .get(&url)
        .header(header::RANGE, "bytes=0-0")
        .header(header::IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
    // Empty object: any range is unsatisfiable, a plain GET works.
    s.client
        .put(s.u("/api/storage/r/empty"))
        .body("")
        .send()
        .await
        .unwrap();
    let r = get_range(&s, &s.u("/api/storage/r/empty"), "bytes=0-").await;
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */0");
    let r = s
        .client
        .get(s.u("/api/storage/r/empty"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "0");
}

#[tokio::test]
async fn etag_and_last_modified_give_304() {
    let s = start(&[]).await;
    let url = s.u("/api/storage/c/x.txt");
    s.client.put(&url).body("cached").send().await.unwrap();
    let r = s.client.get(&url).send().await.unwrap();
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
    let lm = r.headers()[header::LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_owned();

    let send =
        |name: header::HeaderName, value: String| s.client.get(&url).header(name, value).send();
    let r = send(header::IF_NONE_MATCH, etag.clone()).await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()[header::ETAG], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = send(header::IF_NONE_MATCH, format!("\"other\", W/{etag}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "weak comparison, list form");
    let r = send(header::IF_NONE_MATCH, "\"other\"".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .head(&url)
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "HEAD is conditional too");

    let r = send(header::IF_MODIFIED_SINCE, lm.clone()).await.unwrap();
    assert_eq!(r.status(), 304);
    let earlier = httpdate::fmt_http_date(
        httpdate::parse_http_date(&lm).unwrap() - Duration::from_secs(3600),
    );
    let r = send(header::IF_MODIFIED_SINCE, earlier).await.unwrap();
    assert_eq!(r.status(), 200);
    for junk in ["yesterday", "Mon, 99 Foo 2020 99:99:99 GMT", ""] {
        let r = send(header::IF_MODIFIED_SINCE, junk.into()).await.unwrap();
        assert_eq!(r.status(), 200, "malformed IMS {junk:?} is ignored");
    }
    // If-None-Match wins over If-Modified-Since.
    let r = s
        .client
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"other\"")
        .header(header::IF_MODIFIED_SINCE, lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A new upload changes the ETag.
    s.client.put(&url).body("changed").send().await.unwrap();
    let r = send(header::IF_NONE_MATCH, etag.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "changed");
}

/// Small objects are served from memory after the first GET (file storage's read cache); a file
/// changed on disk behind the server is still what the next GET returns, with a new ETag.
#[tokio::test]
async fn a_file_changed_on_disk_is_served_fresh() {
    let s = start(&[]).await;
    let url = s.u("/api/storage/disk/photo.txt");
    s.client.put(&url).body("first").send().await.unwrap();
    let path = s.dir.path().join("assets/disk/photo.txt");
    let first = s.client.get(&url).send().await.unwrap();
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(first.text().await.unwrap(), "first");
    assert_eq!(
        s.client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "first"
    );

    // Same size, written in place. Like any stat-based validator (ETag, nginx's open file
    // cache), the cache cannot see a same-size rewrite within one tick of the filesystem's
    // coarse clock; step past it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&path, "FIRST").unwrap();
    let r = s
        .client
        .get(&url)
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the old ETag no longer matches");
    assert_ne!(r.headers()[header::ETAG], etag.as_str());
    assert_eq!(r.text().await.unwrap(), "FIRST");

    // Replaced by another file, then removed.
    let other = s.dir.path().join("other.txt");
    std::fs::write(&other, "second version").unwrap();
    std::fs::rename(&other, &path).unwrap();
    let r = s
        .client
        .get(&url)
        .header(header::RANGE, "bytes=0-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "second");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(s.client.get(&url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn encoded_traversal_is_400_and_never_reaches_storage() {
    let s = start(&[]).await;
    // A file next to the asset root that traversal would reach.
    std::fs::write(s.dir.path().join("secret.txt"), "top secret").unwrap();
    for path in [
        "/api/storage/%2e%2e%2fsecret.txt",
        "/api/storage/..%2fsecret.txt",
        "/api/storage/%2E%2E/secret.txt",
        "/api/storage/a/%2e%2e/%2e%2e/secret.txt",
        "/api/storage/temp/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/storage/..%2f..%2fsecret.txt",
        "/api/storage/a%5c..%5csecret.txt",
        "/api/storage/a%00b",
        "/api/storage/a//b",
    ] {
        for method in ["GET", "HEAD", "PUT", "DELETE"] {
            let body = if method == "PUT" { "x" } else { "" };
            let (status, text) = s
                .raw(&format!(
                    "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ))
                .await;
            assert_eq!(status, 400, "{method} {path}: {text}");
            if method != "HEAD" {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["error"]["kind"], "invalid_input", "{method} {path}");
            }
        }
    }
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("secret.txt")).unwrap(),
        "top secret"
    );
    let assets = s.state.resources.asset_storage().unwrap();
    assert!(assets
        .list(&nodetool_core::StoragePrefix::all())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn upload_over_the_limit_is_413_and_stores_nothing() {
    let s = start(&[("NODETOOL_MAX_UPLOAD_BYTES", "4096")]).await;
    let url = s.u("/api/storage/big/x.bin");
    // Declared length over the limit.
    let r = s
        .client
        .put(&url)
        .body(vec![1u8; 8192])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_kind(r).await, "too_large");
    assert_eq!(s.client.head(&url).send().await.unwrap().status(), 404);
    // Streamed without a length: the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![2u8; 1024])).collect();
    let r = s
        .client
        .put(&url)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.client.head(&url).send().await.unwrap().status(), 404);
    // An over-limit upload leaves the previous object intact.
    s.client.put(&url).body("small").send().await.unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![3u8; 1024])).collect();
    let r = s
        .client
        .put(&url)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "small");
    // Exactly at the limit is fine.
    let r = s
        .client
        .put(&url)
        .body(vec![4u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No temp files left behind by the refused uploads.
    let tmp = s.dir.path().join("assets/.nodetool/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hurt_the_server() {
    let s = start(&[]).await;
    let big = vec![7u8; 16 * 1024 * 1024];
    let r = s
        .client
        .put(s.u("/api/storage/big.bin"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        conn.write_all(b"GET /api/storage/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let n = conn.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        stalled.push(conn);
    }
    // Stalled readers hold their responses open; everything else still works.
    let r = s.client.get(s.u("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .get(s.u("/api/storage/big.bin"))
        .header(header::RANGE, "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &[7u8, 7, 7]);
    let gauge = |text: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix("nodetool_http_requests_in_flight "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let text = s
        .client
        .get(s.u("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(gauge(&text) >= 5, "stalled streams count as open: {text}");
    // Hanging up releases them.
    drop(stalled);
    let released = async {
        loop {
            let text = s
                .client
                .get(s.u("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if gauge(&text) == 1 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(30), released)
        .await
        .expect("open streams are released when their clients hang up");
    assert!(text.contains("nodetool_storage_operations_total{op=\"get\",status=\"200\"}"));
    assert!(text.contains("nodetool_storage_operations_total{op=\"put\",status=\"201\"}"));
}

#[tokio::test]
async fn health_is_open() {
    let s = start(&[("AUTH_PROVIDER", "static"), ("SERVER_AUTH_TOKEN", "t0k3n")]).await;
    let r = s.client.get(s.u("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_downloads_finish() {
    let mut s = start(&[]).await;
    let size = 8 * 1024 * 1024;
    let r = s
        .client
        .put(s.u("/api/storage/big.bin"))
        .body(vec![9u8; size])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Start a download and read only its first bytes.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(
        b"GET /api/storage/big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut first = [0u8; 512];
    let n = conn.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    s.shutdown.take().unwrap().send(()).unwrap();
    // New connections are refused once the listener is closed.
    let refused = async {
        while tokio::net::TcpStream::connect(s.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .expect("the listener closes on shutdown");
    // The in-flight download still completes, byte for byte.
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    let mut all = first[..n].to_vec();
    all.extend_from_slice(&rest);
    let body_start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        all.len() - body_start,
        size,
        "the whole body arrives after shutdown began"
    );
    assert!(all[body_start..].iter().all(|b| *b == 9));
    tokio::time::timeout(Duration::from_secs(20), &mut s.task)
        .await
        .expect("the server returns once the last request is done")
        .unwrap();
}
