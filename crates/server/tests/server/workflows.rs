//! `/api/workflows` through a real socket: NodeTool's Workflow record, pages, drafts saved as
//! sent, bad input, and two users (a private workflow of another user is "not found"; a public
//! one is readable, never writable).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::{error_kind, jwt, start, TestServer};
use serde_json::{json, Value};

const SECRET: &str = "super-secret-jwt-key-for-tests-only";

async fn server() -> TestServer {
    start(&[
        ("AUTH_PROVIDER", "supabase"),
        ("SUPABASE_JWT_SECRET", SECRET),
    ])
    .await
}

struct User<'a> {
    s: &'a TestServer,
    token: String,
}

impl User<'_> {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.s
            .client
            .request(method, self.s.u(path))
            .bearer_auth(&self.token)
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path).send().await.unwrap()
    }
    async fn delete(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::DELETE, path)
            .send()
            .await
            .unwrap()
    }
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> reqwest::Response {
        self.req(method, path).json(&body).send().await.unwrap()
    }
}

fn graph() -> Value {
    json!({"nodes": [{"id": "a", "type": "nodetool.constant.String", "data": {"value": "hi"}}],
           "edges": []})
}

#[tokio::test]
async fn workflows_are_per_user_with_public_read_only_sharing() {
    let s = server().await;
    let alice = User {
        s: &s,
        token: jwt(SECRET, "alice", 3600),
    };
    let bob = User {
        s: &s,
        token: jwt(SECRET, "bob", 3600),
    };
    use reqwest::Method;

    // Create: NodeTool's Workflow shape; a user_id in the body is ignored.
    let r = alice
        .send(
            Method::POST,
            "/api/workflows",
            json!({"name": "Mine", "tags": ["t1"],
            "graph": graph(), "user_id": "bob", "description": "d"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(w["user_id"], "alice");
    assert_eq!(w["access"], "private");
    assert_eq!(w["tags"], json!(["t1"]));
    assert_eq!(w["graph"], graph());
    for field in [
        "created_at",
        "updated_at",
        "thumbnail",
        "settings",
        "run_mode",
        "description",
    ] {
        assert!(w.get(field).is_some(), "{field} missing: {w}");
    }

    // Bob cannot see, change or delete Alice's private workflow: "not found", as if absent.
    assert_eq!(bob.get(&format!("/api/workflows/{id}")).await.status(), 404);
    let r = bob
        .send(
            Method::PUT,
            &format!("/api/workflows/{id}"),
            json!({"name": "stolen"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = bob.delete(&format!("/api/workflows/{id}")).await;
    assert_eq!(r.status(), 404);
    let page: Value = bob.get("/api/workflows").await.json().await.unwrap();
    assert_eq!(page["workflows"], json!([]));

    // Public: readable by Bob, still not writable or deletable by him.
    let r = alice
        .send(
            Method::PUT,
            &format!("/api/workflows/{id}"),
            json!({"access": "public"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let seen: Value = bob
        .get(&format!("/api/workflows/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (seen["name"].as_str(), seen["access"].as_str()),
        (Some("Mine"), Some("public"))
    );
    let r = bob
        .send(
            Method::PUT,
            &format!("/api/workflows/{id}"),
            json!({"name": "stolen"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_kind(r).await, "forbidden");
    let r = bob.delete(&format!("/api/workflows/{id}")).await;
    assert_eq!(r.status(), 403);
    let again: Value = alice
        .get(&format!("/api/workflows/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["name"], "Mine");

    // PUT by a new id creates it (the app names new workflows itself); a partial PUT keeps
    // the other fields.
    let r = bob
        .send(
            Method::PUT,
            "/api/workflows/bob-wf-1",
            json!({"name": "B", "graph": graph()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = bob
        .send(
            Method::PUT,
            "/api/workflows/bob-wf-1",
            json!({"description": "x"}),
        )
        .await;
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["name"].as_str(), b["description"].as_str()),
        (Some("B"), Some("x"))
    );
    assert_eq!(b["graph"], graph());

    // Delete: gone for the owner too.
    let r = alice.delete(&format!("/api/workflows/{id}")).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        alice.get(&format!("/api/workflows/{id}")).await.status(),
        404
    );
}

#[tokio::test]
async fn lists_page_newest_first_and_drafts_save_as_sent() {
    let s = start(&[]).await;
    let me = User {
        s: &s,
        token: String::new(),
    };
    use reqwest::Method;
    let mut ids = Vec::new();
    for i in 0..5 {
        // A draft with an unknown node type and a dangling edge is saved: validation is for runs.
        let draft = json!({"nodes": [{"id": "x", "type": "no.such.Type"}],
                           "edges": [{"id": "e", "source": "x", "sourceHandle": "o",
                                      "target": "ghost", "targetHandle": "i"}]});
        let r = me
            .send(
                Method::POST,
                "/api/workflows",
                json!({"name": format!("w{i}"), "graph": draft}),
            )
            .await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = me
            .get(&format!("/api/workflows?limit=2&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        for w in page["workflows"].as_array().unwrap() {
            seen.push(w["id"].as_str().unwrap().to_owned());
        }
        cursor = page["next"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every workflow once, newest first");

    // Bad input: each a clear 4xx in the API's error shape, nothing stored.
    for (body, status) in [
        (json!({"name": "g", "graph": {"nodes": "not a list"}}), 400),
        (json!({"name": "g", "graph": [1, 2]}), 400),
        (json!({"name": "g", "access": "everyone"}), 400),
        (json!({"name": "x".repeat(2000)}), 400),
    ] {
        let r = me.send(Method::POST, "/api/workflows", body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        let err: Value = r.json().await.unwrap();
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    let r = me.get("/api/workflows?limit=0").await;
    assert_eq!(r.status(), 400);
    let r = me
        .send(
            Method::PUT,
            "/api/workflows/bad%20id%2F..",
            json!({"name": "n"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let huge = json!({"nodes": [{"id": "n", "type": "t", "data": {"v": "x".repeat(9 << 20)}}],
                      "edges": []});
    let r = me
        .send(Method::POST, "/api/workflows", json!({"graph": huge}))
        .await;
    assert!(matches!(r.status().as_u16(), 400 | 413), "{}", r.status());
    let page: Value = me
        .get("/api/workflows?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["workflows"].as_array().unwrap().len(), 5);
}
