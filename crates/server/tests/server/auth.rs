//! Auth providers, 401s, signed URLs and two users who cannot see each other's blobs or assets.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{error_kind, jwt, start, TestServer};
use nodetool_storage::UrlSigner;
use reqwest::{header, Method};

const SECRET: &str = "super-secret-jwt-key-for-tests-only";

async fn supabase_server() -> TestServer {
    start(&[
        ("AUTH_PROVIDER", "supabase"),
        ("SUPABASE_JWT_SECRET", SECRET),
    ])
    .await
}

fn assert_401(r: &reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    let www = r
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(www.to_str().unwrap().starts_with("Bearer"), "{what}");
}

#[tokio::test]
async fn local_provider_needs_no_token() {
    let s = start(&[("AUTH_PROVIDER", "local")]).await;
    let r = s
        .client
        .put(s.u("/api/storage/x.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s.client.get(s.u("/api/assets")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn static_tokens_with_rotation() {
    let s = start(&[
        ("AUTH_PROVIDER", "static"),
        ("SERVER_AUTH_TOKEN", "old-token, new-token"),
    ])
    .await;
    let url = s.u("/api/storage/k.txt");
    let r = s.client.get(&url).send().await.unwrap();
    assert_401(&r, "no token");
    assert_eq!(error_kind(r).await, "unauthorized");
    for bad in [
        "Bearer wrong",
        "Bearer old-token2",
        "Basic b2xkLXRva2Vu",
        "Bearer ",
    ] {
        let r = s
            .client
            .get(&url)
            .header(header::AUTHORIZATION, bad)
            .send()
            .await
            .unwrap();
        assert_401(&r, bad);
    }
    for token in ["old-token", "new-token"] {
        let r = s
            .client
            .put(&url)
            .bearer_auth(token)
            .body(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{token}: {}", r.status());
        let r = s.client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), token);
    }
    let r = s.client.get(s.u("/api/assets")).send().await.unwrap();
    assert_401(&r, "assets without token");
    // /health and /metrics stay open for probes and scrapers.
    assert_eq!(
        s.client.get(s.u("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        s.client.get(s.u("/metrics")).send().await.unwrap().status(),
        200
    );
}

#[test]
fn static_provider_without_tokens_is_a_config_error() {
    let err = nodetool_server::Authenticator::static_tokens(Vec::<String>::new()).unwrap_err();
    assert_eq!(err.kind(), nodetool_core::ErrorKind::ConfigInvalid);
}

#[tokio::test]
async fn supabase_jwt_secret_validates_tokens() {
    let s = supabase_server().await;
    let url = s.u("/api/storage/alice/a.txt");
    let alice = jwt(SECRET, "alice", 3600);
    let r = s
        .client
        .put(&url)
        .bearer_auth(&alice)
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (what, token) in [
        ("expired", jwt(SECRET, "alice", -3600)),
        (
            "wrong secret",
            jwt("another-secret-entirely-different", "alice", 3600),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let r = s.client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_401(&r, what);
    }
    // A token without `sub` (like the anon key) is not a user.
    let no_sub = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"role": "anon", "aud": "authenticated", "exp": chrono::Utc::now().timestamp() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let r = s
        .client
        .get(&url)
        .bearer_auth(&no_sub)
        .send()
        .await
        .unwrap();
    assert_401(&r, "no sub");
}

#[tokio::test]
async fn supabase_user_endpoint_with_cache() {
    use axum::http::HeaderMap;
    // A stand-in for Supabase Auth's GET /auth/v1/user.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/auth/v1/user",
        axum::routing::get(move |headers: HeaderMap| {
            let calls = counted.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                match auth.strip_prefix("Bearer ") {
                    Some(t) if t.starts_with("good-") => (
                        axum::http::StatusCode::OK,
                        axum::Json(serde_json::json!({"id": &t[5..], "aud": "authenticated"})),
                    ),
                    _ => (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({"code": 401, "msg": "invalid JWT"})),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_url = format!("http://{}", listener.local_addr().unwrap());
    let double = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let s = start(&[
        ("AUTH_PROVIDER", "supabase"),
        ("SUPABASE_URL", &auth_url),
        // No SUPABASE_KEY: storage stays on local files, only auth goes to Supabase.
        ("AUTH_CACHE_TTL", "300"),
    ])
    .await;
    let url = s.u("/api/storage/carol/x.txt");
    let r = s
        .client
        .put(&url)
        .bearer_auth("good-carol")
        .body("c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    for _ in 0..3 {
        let r = s
            .client
            .get(&url)
            .bearer_auth("good-carol")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the user lookup is cached");
    let r = s
        .client
        .get(&url)
        .bearer_auth("bad-token")
        .send()
        .await
        .unwrap();
    assert_401(&r, "refused by Supabase");
    let r = s
        .client
        .get(&url)
        .bearer_auth("good-dave")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "dave is not carol");
    double.abort();
}

async fn send(s: &TestServer, method: Method, path: &str, token: &str) -> reqwest::Response {
    let mut req = s
        .client
        .request(method.clone(), s.u(path))
        .bearer_auth(token);
    if method == Method::PUT {
        req = req.body("mallory");
    }
    req.send().await.unwrap()
}

async fn create_asset(
    s: &TestServer,
    token: &str,
    json: serde_json::Value,
    bytes: &'static [u8],
) -> serde_json::Value {
    let form = reqwest::multipart::Form::new()
        .text("json", json.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("note.txt")
                .mime_str("text/plain")
                .unwrap(),
        );
    let r = s
        .client
        .post(s.u("/api/assets"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn two_users_cannot_touch_each_others_blobs_or_assets() {
    let s = supabase_server().await;
    let alice = jwt(SECRET, "alice", 3600);
    let bob = jwt(SECRET, "bob", 3600);

    // Blobs: every method on alice's prefix, asset and temp, is refused to bob.
    for prefix in [
        "/api/storage",
        "/api/storage/temp",
        "/storage",
        "/storage/temp",
    ] {
        let path = format!("{prefix}/alice/secret.txt");
        let r = send(&s, Method::PUT, &path, &alice).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            let r = send(&s, method.clone(), &path, &bob).await;
            assert_eq!(r.status(), 403, "bob {method} {path}");
        }
        // Keys outside any user prefix are nobody's.
        let r = send(&s, Method::PUT, &format!("{prefix}/shared.txt"), &alice).await;
        assert_eq!(r.status(), 403, "alice PUT outside her prefix");
        let r = send(&s, Method::GET, &path, &alice).await;
        assert_eq!(
            r.text().await.unwrap(),
            "mallory",
            "alice's PUT body, untouched by bob"
        );
    }
    // Bob's own prefix works for bob.
    let r = send(&s, Method::PUT, "/api/storage/bob/mine.txt", &bob).await;
    assert_eq!(r.status(), 201);

    // Assets: alice's asset is invisible to bob on every route; a user_id in the body is ignored.
    let asset = create_asset(
        &s,
        &alice,
        serde_json::json!({"name": "note.txt", "user_id": "bob"}),
        b"alice's note",
    )
    .await;
    assert_eq!(asset["user_id"], "alice", "user_id in the body is ignored");
    let id = asset["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/assets/{id}")),
        (Method::DELETE, format!("/api/assets/{id}")),
        (Method::GET, format!("/api/assets/{id}/download")),
        (Method::HEAD, format!("/api/assets/{id}/download")),
    ] {
        let r = send(&s, method.clone(), &path, &bob).await;
        assert_eq!(r.status(), 404, "bob {method} {path}");
    }
    let r = s
        .client
        .put(s.u(&format!("/api/assets/{id}")))
        .bearer_auth(&bob)
        .json(&serde_json::json!({"name": "pwned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "bob renames alice's asset");
    let list: serde_json::Value = s
        .client
        .get(s.u("/api/assets"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["assets"].as_array().unwrap().len(),
        0,
        "bob lists nothing"
    );
    let list: serde_json::Value = s
        .client
        .get(s.u("/api/assets?parent_id=alice"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["assets"].as_array().unwrap().len(),
        0,
        "even with alice's folder id"
    );
    // Bob cannot file his asset under alice's folder.
    let form = reqwest::multipart::Form::new()
        .text(
            "json",
            serde_json::json!({"name": "f", "parent_id": id}).to_string(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".as_slice()).file_name("x.txt"),
        );
    let r = s
        .client
        .post(s.u("/api/assets"))
        .bearer_auth(&bob)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Alice still has everything.
    let r = s
        .client
        .get(s.u(&format!("/api/assets/{id}/download")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "alice's note");
    // Bob's blob key is under his prefix; the asset blob of alice is under hers.
    let get_url = asset["get_url"].as_str().unwrap();
    assert!(
        get_url.starts_with(&format!("/api/storage/alice/{id}.txt?")),
        "{get_url}"
    );
    let path = get_url.split('?').next().unwrap();
    let r = send(&s, Method::GET, path, &bob).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn signed_urls_work_without_a_token_and_only_as_signed() {
    let s = start(&[("AUTH_PROVIDER", "static"), ("SERVER_AUTH_TOKEN", "tok")]).await;
    let asset = create_asset(&s, "tok", serde_json::json!({"name": "n"}), b"signed bytes").await;
    let get_url = asset["get_url"].as_str().unwrap().to_owned();
    assert!(
        get_url.contains("expires=") && get_url.contains("&sig="),
        "{get_url}"
    );

    let r = s.client.get(s.u(&get_url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "signed URL without a token");
    assert_eq!(r.text().await.unwrap(), "signed bytes");
    let r = s.client.head(s.u(&get_url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The /storage alias accepts the same signature.
    let alias = get_url.replacen("/api/storage/", "/storage/", 1);
    assert_eq!(
        s.client.get(s.u(&alias)).send().await.unwrap().status(),
        200
    );

    // Writes never accept a signature.
    let r = s.client.put(s.u(&get_url)).body("x").send().await.unwrap();
    assert_401(&r, "PUT with a signature");
    let r = s.client.delete(s.u(&get_url)).send().await.unwrap();
    assert_401(&r, "DELETE with a signature");

    // Tampered signature, tampered expiry, another key, the temp mount: all refused.
    let (path, query) = get_url.split_once('?').unwrap();
    let sig = query
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap();
    let expires = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .unwrap();
    let mut flipped = sig.to_owned();
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(flipped.len() - 1.., last);
    let later: i64 = expires.parse::<i64>().unwrap() + 86_400;
    let other_path = path.replace(".txt", ".png");
    let temp_path = path.replacen("/api/storage/", "/api/storage/temp/", 1);
    for bad in [
        format!("{path}?expires={expires}&sig={flipped}"),
        format!("{path}?expires={later}&sig={sig}"),
        format!("{other_path}?expires={expires}&sig={sig}"),
        format!("{temp_path}?expires={expires}&sig={sig}"),
        format!("{path}?expires={expires}"),
        format!("{path}?expires=soon&sig={sig}"),
    ] {
        let r = s.client.get(s.u(&bad)).send().await.unwrap();
        assert_401(&r, &bad);
    }
    // Expired: a correct signature whose time has passed.
    let signer = UrlSigner::new(common::SIGNING_KEY, Duration::from_secs(60)).unwrap();
    let past = chrono::Utc::now().timestamp() - 10;
    let decoded = nodetool_storage::signing::decoded_path(path);
    let expired_sig = signer.signature(&decoded, past);
    let r = s
        .client
        .get(s.u(&format!("{path}?expires={past}&sig={expired_sig}")))
        .send()
        .await
        .unwrap();
    assert_401(&r, "expired");
    // The same construction with a future expiry passes: the test above is not vacuous.
    let future = chrono::Utc::now().timestamp() + 60;
    let ok_sig = signer.signature(&decoded, future);
    let r = s
        .client
        .get(s.u(&format!("{path}?expires={future}&sig={ok_sig}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A signature never opens the assets API.
    let r = s
        .client
        .get(s.u(&format!("/api/assets?expires={expires}&sig={sig}")))
        .send()
        .await
        .unwrap();
    assert_401(&r, "assets with a signature");
}
