//! The Supabase double replays recorded exchanges of the real server
//! (`reference/supabase-storage-api.transcripts.txt`): status code, content type and body shape.
//! Ids, versions and timestamps differ per run, so those are checked by shape, the rest exactly.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use nodetool_testkit::supabase_double::SupabaseDouble;
use reqwest::{Client, Method, Response};

const HELLO: &[u8] = b"hello world\n";

struct Fixture {
    double: SupabaseDouble,
    http: Client,
    svc: String,
}

impl Fixture {
    /// The transcripts' setup: buckets `priv` (private) and `pub` (public), `priv/dir/a.txt`.
    async fn new() -> Self {
        let double = SupabaseDouble::start().await;
        let f = Self {
            svc: double.service_key(),
            double,
            http: Client::new(),
        };
        let r = f
            .req(Method::POST, "/bucket")
            .json(&serde_json::json!({"name": "priv", "public": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), r#"{"name":"priv"}"#);
        f.double.create_bucket("pub", true);
        let r = f
            .req(Method::POST, "/object/priv/dir/a.txt")
            .header("content-type", "text/plain")
            .header("cache-control", "max-age=3600")
            .body(HELLO)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        f
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.double.storage_url())
    }

    /// A request with the service key, as `curl -H Authorization: Bearer $SVC -H apikey: $SVC`.
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.svc)
            .header("apikey", &self.svc)
    }

    fn anon(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }
}

async fn expect(resp: Response, status: u16, body: &str) {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(resp.text().await.unwrap(), body);
}

const NO_SUCH_KEY: &str =
    r#"{"statusCode":"404","error":"not_found","message":"Object not found","code":"NoSuchKey"}"#;
const NO_SUCH_BUCKET: &str = r#"{"statusCode":"404","error":"Bucket not found","message":"Bucket not found","code":"NoSuchBucket"}"#;
const DUPLICATE: &str = r#"{"statusCode":"409","error":"Duplicate","message":"The resource already exists","code":"KeyAlreadyExists"}"#;
const NO_AUTH: &str = r#"{"statusCode":"400","error":"Error","message":"headers must have required property 'authorization'","code":"InvalidRequest"}"#;
const INVALID_RANGE: &str = r#"{"statusCode":"416","error":"invalid_range","message":"invalid range provided","code":"InvalidRange"}"#;

#[tokio::test]
async fn upload_answers_and_duplicate_rules() {
    let f = Fixture::new().await;
    let r = f
        .req(Method::POST, "/object/priv/dir/b.txt")
        .header("content-type", "text/plain")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"Key":"priv/dir/b.txt","Id":""#),
        "{text}"
    );
    assert_eq!(
        text.len(),
        r#"{"Key":"priv/dir/b.txt","Id":"9f497368-41fb-46f5-80c4-30d4573278af"}"#.len()
    );

    for upsert in [None, Some("false")] {
        let mut req = f
            .req(Method::POST, "/object/priv/dir/a.txt")
            .header("content-type", "text/plain");
        if let Some(v) = upsert {
            req = req.header("x-upsert", v);
        }
        expect(req.body(HELLO).send().await.unwrap(), 400, DUPLICATE).await;
    }
    let r = f
        .req(Method::POST, "/object/priv/dir/a.txt")
        .header("x-upsert", "true")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // PUT always upserts and ignores x-upsert.
    let r = f
        .req(Method::PUT, "/object/priv/dir/a.txt")
        .header("x-upsert", "false")
        .header("content-type", "text/plain")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = f
        .anon(Method::POST, "/object/priv/x.txt")
        .header("content-type", "text/plain")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    expect(r, 400, NO_AUTH).await;
    let r = f
        .req(Method::POST, "/object/nope/a.txt")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    expect(r, 400, NO_SUCH_BUCKET).await;
    let r = f
        .req(Method::POST, "/object/priv/sp%20ace/%C3%A9t%C3%A9.txt")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    expect(
        r,
        400,
        r#"{"statusCode":"400","error":"InvalidKey","message":"Invalid key: sp ace/été.txt","code":"InvalidKey"}"#,
    )
    .await;
}

#[tokio::test]
async fn downloads_public_route_and_missing_objects() {
    let f = Fixture::new().await;
    let r = f
        .req(Method::GET, "/object/priv/dir/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["etag"], "\"6f5902ac237024bdd0c176cb93063dc4\"");
    assert_eq!(h["x-robots-tag"], "none");
    assert_eq!(h["cache-control"], "max-age=3600");
    assert_eq!(h["content-length"], "12");
    assert!(h["last-modified"].to_str().unwrap().ends_with(" GMT"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), HELLO);

    expect(
        f.anon(Method::GET, "/object/priv/dir/a.txt")
            .send()
            .await
            .unwrap(),
        400,
        NO_SUCH_BUCKET,
    )
    .await;
    expect(
        f.anon(Method::GET, "/object/public/priv/dir/a.txt")
            .send()
            .await
            .unwrap(),
        400,
        NO_SUCH_BUCKET,
    )
    .await;
    expect(
        f.anon(Method::GET, "/object/public/pub/missing.txt")
            .send()
            .await
            .unwrap(),
        400,
        NO_SUCH_KEY,
    )
    .await;
    expect(
        f.req(Method::GET, "/object/priv/dir/missing.txt")
            .send()
            .await
            .unwrap(),
        400,
        NO_SUCH_KEY,
    )
    .await;
    expect(
        f.anon(Method::GET, "/object/authenticated/priv/dir/a.txt")
            .send()
            .await
            .unwrap(),
        400,
        NO_AUTH,
    )
    .await;

    // HEAD errors keep status and length but have no body.
    let r = f
        .req(Method::HEAD, "/object/priv/dir/missing.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-length"], "88");
    assert!(r.bytes().await.unwrap().is_empty());

    let r = f
        .req(Method::GET, "/object/priv/dir/a.txt")
        .header("if-none-match", "\"6f5902ac237024bdd0c176cb93063dc4\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[tokio::test]
async fn ranges_as_the_file_backend_answers() {
    let f = Fixture::new().await;
    for (range, content_range, body) in [
        ("bytes=0-4", "bytes 0-4/12", &b"hello"[..]),
        ("bytes=6-", "bytes 6-11/12", b"world\n"),
        ("bytes=-3", "bytes 9-11/12", b"ld\n"),
        ("bytes=5-100", "bytes 5-11/12", b" world\n"),
    ] {
        let r = f
            .req(Method::GET, "/object/priv/dir/a.txt")
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], content_range);
        assert_eq!(r.bytes().await.unwrap().as_ref(), body);
    }
    for range in ["bytes=100-200", "items=0-1", "bytes=0-1,3-4"] {
        let r = f
            .req(Method::GET, "/object/priv/dir/a.txt")
            .header("range", range)
            .send()
            .await
            .unwrap();
        expect(r, 416, INVALID_RANGE).await;
    }
}

#[tokio::test]
async fn info_list_and_delete_shapes() {
    let f = Fixture::new().await;
    let r = f
        .req(Method::GET, "/object/info/priv/dir/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = text
        .trim_matches(['{', '}'])
        .split(",\"")
        .map(|kv| kv.trim_start_matches('"').split('"').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "version",
            "bucket_id",
            "size",
            "content_type",
            "cache_control",
            "etag",
            "metadata",
            "last_modified",
            "created_at"
        ]
    );
    assert_eq!(v["name"], "dir/a.txt");
    assert_eq!(v["etag"], "\"6f5902ac237024bdd0c176cb93063dc4\"");
    assert_eq!(v["metadata"], serde_json::json!({}));
    let lm = v["last_modified"].as_str().unwrap();
    assert!(
        lm.len() == 24 && lm.ends_with('Z') && lm.as_bytes()[19] == b'.',
        "{lm}"
    );

    for (k, body) in [("data.json", &b"{\"a\":1}"[..]), ("empty.txt", b"")] {
        let r = f
            .req(Method::POST, &format!("/object/priv/{k}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = f
        .req(Method::POST, "/object/list/priv")
        .json(&serde_json::json!({"prefix": ""}))
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = r.json().await.unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["data.json", "dir", "empty.txt"]);
    assert_eq!(
        list[1],
        serde_json::json!({"name":"dir","id":null,"updated_at":null,"created_at":null,"last_accessed_at":null,"metadata":null})
    );
    let meta = &list[0]["metadata"];
    assert_eq!(meta["size"], 7);
    assert_eq!(meta["mimetype"], "application/octet-stream");
    assert_eq!(meta["cacheControl"], "no-cache");
    assert_eq!(meta["httpStatusCode"], 200);
    // Case-insensitive folder and search, one level, names relative to the prefix.
    let r = f
        .req(Method::POST, "/object/list/priv")
        .json(&serde_json::json!({"prefix": "DIR", "search": "A."}))
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "a.txt");
    for (body, want) in [
        (serde_json::json!({"prefix": ""}), "[]"),
        (
            serde_json::json!({}),
            r#"{"statusCode":"400","error":"Error","message":"body must have required property 'prefix'","code":"InvalidRequest"}"#,
        ),
    ] {
        let r = f
            .req(Method::POST, "/object/list/nope")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = if want == "[]" { 200 } else { 400 };
        expect(r, status, want).await;
    }
    let r = f
        .req(Method::POST, "/object/list/priv")
        .json(&serde_json::json!({"prefix": "", "limit": 0}))
        .send()
        .await
        .unwrap();
    expect(r, 400, r#"{"statusCode":"400","error":"Error","message":"body/limit must be >= 1","code":"InvalidRequest"}"#).await;

    // "prefixes" are exact keys; missing ones are left out silently.
    let r = f
        .req(Method::DELETE, "/object/priv")
        .json(&serde_json::json!({"prefixes": ["dir", "dir/"]}))
        .send()
        .await
        .unwrap();
    expect(r, 200, "[]").await;
    let r = f
        .req(Method::DELETE, "/object/priv")
        .json(&serde_json::json!({"prefixes": ["dir/a.txt", "dir/missing.txt"]}))
        .send()
        .await
        .unwrap();
    let deleted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(deleted.as_array().unwrap().len(), 1);
    assert_eq!(deleted[0]["name"], "dir/a.txt");
    assert_eq!(deleted[0]["bucket_id"], "priv");
    let r = f
        .req(Method::DELETE, "/object/priv")
        .json(&serde_json::json!({"prefixes": []}))
        .send()
        .await
        .unwrap();
    expect(r, 400, r#"{"statusCode":"400","error":"Error","message":"body/prefixes must NOT have fewer than 1 items","code":"InvalidRequest"}"#).await;
}

#[tokio::test]
async fn signed_urls_and_token_errors() {
    let f = Fixture::new().await;
    let r = f
        .req(Method::POST, "/object/sign/priv/dir/a.txt")
        .json(&serde_json::json!({"expiresIn": "60"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let signed = v["signedURL"].as_str().unwrap().to_owned();
    assert!(
        signed.starts_with("/object/sign/priv/dir/a.txt?token=eyJhbGciOiJIUzI1NiJ9."),
        "{signed}"
    );
    let r = f.anon(Method::GET, &signed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("expires"));
    assert!(!r.headers().contains_key("cache-control"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), HELLO);

    let other = signed.replace("dir/a.txt?", "dir/c.txt?");
    expect(
        f.anon(Method::GET, &other).send().await.unwrap(),
        400,
        r#"{"statusCode":"400","error":"InvalidSignature","message":"Invalid signature","code":"InvalidSignature"}"#,
    )
    .await;
    let mut tampered = signed.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    expect(
        f.anon(Method::GET, &tampered).send().await.unwrap(),
        400,
        r#"{"statusCode":"400","error":"InvalidJWT","message":"signature verification failed","code":"InvalidJWT"}"#,
    )
    .await;
    let expired = f.double.sign_jwt(&serde_json::json!({
        "url": "priv/dir/a.txt", "scope": "download", "iat": 1_795_366_959, "exp": 1_795_366_960_i64 - 100_000_000
    }));
    expect(
        f.anon(Method::GET, &format!("/object/sign/priv/dir/a.txt?token={expired}")).send().await.unwrap(),
        400,
        r#"{"statusCode":"400","error":"InvalidJWT","message":"\"exp\" claim timestamp check failed","code":"InvalidJWT"}"#,
    )
    .await;
    expect(
        f.anon(Method::GET, "/object/sign/priv/dir/a.txt").send().await.unwrap(),
        400,
        r#"{"statusCode":"400","error":"Error","message":"querystring must have required property 'token'","code":"InvalidRequest"}"#,
    )
    .await;
    let r = f
        .req(Method::POST, "/object/sign/nope/a.txt")
        .json(&serde_json::json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    expect(r, 400, NO_SUCH_KEY).await;
}

#[tokio::test]
async fn auth_and_routing_errors() {
    let f = Fixture::new().await;
    expect(
        f.anon(Method::GET, "/bucket/priv")
            .header("apikey", &f.svc)
            .send()
            .await
            .unwrap(),
        400,
        NO_AUTH,
    )
    .await;
    expect(
        f.anon(Method::GET, "/bucket/priv").bearer_auth("abc.def.ghi").send().await.unwrap(),
        400,
        r#"{"statusCode":"403","error":"Unauthorized","message":"JWS Protected Header is invalid","code":"AccessDenied"}"#,
    )
    .await;
    expect(
        f.req(Method::GET, "/bucket/nope").send().await.unwrap(),
        400,
        NO_SUCH_BUCKET,
    )
    .await;
    let r = f
        .req(Method::POST, "/bucket")
        .json(&serde_json::json!({"name": "priv"}))
        .send()
        .await
        .unwrap();
    expect(r, 400, r#"{"statusCode":"409","error":"Duplicate","message":"The resource already exists","code":"BucketAlreadyExists"}"#).await;
    let r = f.req(Method::GET, "/bucket/priv").send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"id":"priv","name":"priv","owner":"","public":false,"file_size_limit":null,"allowed_mime_types":null,"created_at":""#),
        "{text}"
    );
    expect(
        f.req(Method::GET, "/objects/foo").send().await.unwrap(),
        404,
        r#"{"message":"Route GET:/objects/foo not found","error":"Not Found","statusCode":404}"#,
    )
    .await;
    let r = f
        .req(Method::PATCH, "/object/priv/dir/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"statusCode":"404","error":"Not Found","message":"Route PATCH:/object/priv/dir/a.txt not found","code":"InvalidRequest"}"#
    );
}

#[tokio::test]
async fn multipart_upload_drops_part_type_parameters() {
    let f = Fixture::new().await;
    // storage3's shape: part `file`, type text/plain;charset=UTF-8, plus a cacheControl field.
    let boundary = "XyZ";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"thumb.jpg\"\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(HELLO);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = f
        .req(Method::POST, "/object/priv/py/thumb.jpg")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("x-upsert", "false")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .req(Method::GET, "/object/info/priv/py/thumb.jpg")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["content_type"], "text/plain");
    assert_eq!(v["cache_control"], "max-age=3600");
    assert_eq!(v["size"], 12);
    // Raw uploads keep the header verbatim.
    f.req(Method::POST, "/object/priv/py/cs.txt")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    let r = f
        .req(Method::GET, "/object/priv/py/cs.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain;charset=UTF-8");
    assert_eq!(r.headers()["cache-control"], "no-cache");
}
