//! `/api/workflows/examples` (and tRPC `workflows.examples`) served from a folder through a
//! real socket: the repository's own `examples/`, a bad file skipped, detail by package/name.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::{jwt, start};
use serde_json::{json, Value};

const SECRET: &str = "examples-test-jwt-secret-0123456789";

#[tokio::test]
async fn examples_come_from_the_configured_folder() {
    let dir = tempfile::tempdir().unwrap();
    let repo_examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let hello = std::fs::read(repo_examples.join("hello.json")).unwrap();
    std::fs::write(dir.path().join("hello.json"), &hello).unwrap();
    std::fs::write(
        dir.path().join("b_tagged.json"),
        json!({"name": "Tagged", "description": "x", "tags": ["Image"], "package_name": "pack",
               "graph": {"nodes": [], "edges": []}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.json"), "{not json").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let folder = dir.path().display().to_string();
    let s = start(&[
        ("AUTH_PROVIDER", "supabase"),
        ("SUPABASE_JWT_SECRET", SECRET),
        ("NODETOOL_EXAMPLES_DIR", &folder),
    ])
    .await;
    let get = |path: String, who: &str| {
        s.client
            .get(s.u(&path))
            .bearer_auth(jwt(SECRET, who, 3600))
            .send()
    };

    let r = get("/api/workflows/examples".into(), "alice")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let names: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["Tagged", "Hello"],
        "sorted by file, broken one skipped"
    );
    assert_eq!(list["next"], Value::Null);
    let hello_entry = &list["workflows"][1];
    assert_eq!(hello_entry["id"], "hello.json");
    assert_eq!(hello_entry["access"], "public");
    assert_eq!(hello_entry["package_name"], "nodetool-base");
    assert_eq!(hello_entry["graph"], json!({"nodes": [], "edges": []}));

    // Detail by package and name (or file stem), with the graph; any signed-in user.
    let r = get("/api/workflows/examples/nodetool-base/Hello".into(), "bob")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let one: Value = r.json().await.unwrap();
    let file: Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(one["graph"], file["graph"]);
    let r = get("/api/workflows/examples/pack/b_tagged".into(), "bob")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for missing in [
        "/api/workflows/examples/nodetool-base/Nope",
        "/api/workflows/examples/pack/Hello",
    ] {
        let r = get(missing.into(), "alice").await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }

    // Search, over REST and tRPC (the same handler).
    let r = get("/api/workflows/examples/search?query=image".into(), "alice")
        .await
        .unwrap();
    let found: Value = r.json().await.unwrap();
    assert_eq!(found["workflows"].as_array().unwrap().len(), 1);
    assert_eq!(found["workflows"][0]["name"], "Tagged");
    let input = percent_encoding::utf8_percent_encode(
        &json!({"0": {"query": "IMAGE"}}).to_string(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let r = get(
        format!("/trpc/workflows.examples?batch=1&input={input}"),
        "bob",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let items: Value = r.json().await.unwrap();
    assert_eq!(items[0]["result"]["data"], found);

    // Create from an example: the REST query and tRPC's input field; a stored copy of the
    // caller's, with the example's graph.
    let post = |path: &str, body: Value| {
        s.client
            .post(s.u(path))
            .bearer_auth(jwt(SECRET, "alice", 3600))
            .json(&body)
            .send()
    };
    let r = post(
        "/api/workflows?from_example_name=Hello",
        json!({"name": "mine", "graph": {"nodes": [], "edges": []}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!(
        (w["graph"].clone(), w["user_id"].as_str()),
        (file["graph"].clone(), Some("alice"))
    );
    let r = post(
        "/trpc/workflows.create?batch=1",
        json!({"0": {"name": "t", "from_example_package": "pack", "from_example_name": "Tagged"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let items: Value = r.json().await.unwrap();
    assert_eq!(items[0]["result"]["data"]["name"], "t");
    let r = post(
        "/api/workflows?from_example_name=Nope",
        json!({"name": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // No token: 401.
    let r = s
        .client
        .get(s.u("/api/workflows/examples"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_missing_examples_folder_lists_nothing() {
    let s = start(&[("NODETOOL_EXAMPLES_DIR", "/nonexistent/examples")]).await;
    let r = s
        .client
        .get(s.u("/api/workflows/examples"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["workflows"], json!([]));
}
