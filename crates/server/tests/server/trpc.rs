//! tRPC at `/trpc` through a real socket, as the web client's `httpBatchLink` sends it
//! (`?batch=1`, GET with `input=` or POST with methodOverride, plain JSON): the same answers as
//! REST, tRPC's error shape for every refusal, and two users on every procedure family.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;
use nodetool_testkit::ids::jid;

use jobs_support::{sleep_graph, start, token, JobServer};
use serde_json::{json, Value};

struct Trpc<'a> {
    s: &'a JobServer,
    token: String,
}

fn enc(v: &Value) -> String {
    percent_encoding::utf8_percent_encode(&v.to_string(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

impl Trpc<'_> {
    fn new<'a>(s: &'a JobServer, user: &str) -> Trpc<'a> {
        Trpc {
            s,
            token: token(user),
        }
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = self
            .s
            .client
            .request(method, self.s.u(path_and_query))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
        )
    }

    /// A batch by POST (methodOverride), as the web client sends every call.
    async fn batch(&self, calls: &[(&str, Value)]) -> (u16, Vec<Value>) {
        let paths: Vec<&str> = calls.iter().map(|(p, _)| *p).collect();
        let input: serde_json::Map<String, Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (i.to_string(), v.clone()))
            .collect();
        let (status, body) = self
            .raw(
                reqwest::Method::POST,
                &format!("/trpc/{}?batch=1", paths.join(",")),
                Some(Value::Object(input).to_string()),
            )
            .await;
        (
            status,
            body.as_array()
                .unwrap_or_else(|| panic!("not a batch answer: {body}"))
                .clone(),
        )
    }

    /// One call's data, asserting it succeeded.
    async fn data(&self, path: &str, input: Value) -> Value {
        let (status, items) = self.batch(&[(path, input)]).await;
        assert_eq!(status, 200, "{path}: {items:?}");
        items[0]["result"]["data"].clone()
    }

    /// One call's error code name (`NOT_FOUND` …), asserting the shape.
    async fn error(&self, path: &str, input: Value) -> String {
        let (status, items) = self.batch(&[(path, input)]).await;
        let e = &items[0]["error"];
        assert_eq!(e["data"]["httpStatus"], status, "{e}");
        assert_eq!(e["data"]["path"], path);
        assert!(e["code"].as_i64().unwrap() < -32000, "{e}");
        assert!(e["message"].is_string());
        e["data"]["code"].as_str().unwrap().to_owned()
    }

    async fn rest(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (_, v) = self.raw(method, path, body.map(|b| b.to_string())).await;
        v
    }
}

fn graph(v: &str) -> Value {
    json!({"nodes": [{"id": "a", "type": "nodetool.constant.String", "data": {"value": v}}], "edges": []})
}

#[tokio::test]
async fn workflows_over_trpc_are_the_rest_handlers_with_trpc_errors() {
    let s = start("supabase").await;
    let alice = Trpc::new(&s, "alice");
    let bob = Trpc::new(&s, "bob");

    // Non-batch POST: {"result": {"data"}}.
    let (status, created) = alice
        .raw(
            reqwest::Method::POST,
            "/trpc/workflows.create",
            Some(json!({"name": "t", "graph": graph("1")}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let w = &created["result"]["data"];
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(w["user_id"], "alice");

    // GET batch with input=, and the POST batch: both equal the REST answers.
    let input = json!({"0": {"id": id}, "1": {}});
    let (status, got) = alice
        .raw(
            reqwest::Method::GET,
            &format!(
                "/trpc/workflows.get,workflows.list?batch=1&input={}",
                enc(&input)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let rest_one = alice
        .rest(reqwest::Method::GET, &format!("/api/workflows/{id}"), None)
        .await;
    let rest_list = alice
        .rest(reqwest::Method::GET, "/api/workflows", None)
        .await;
    assert_eq!(got[0]["result"]["data"], rest_one);
    assert_eq!(got[1]["result"]["data"], rest_list);
    let (status, posted) = alice
        .batch(&[
            ("workflows.get", json!({"id": id})),
            ("workflows.list", json!(null)),
        ])
        .await;
    assert_eq!(status, 200);
    assert_eq!(posted[0]["result"]["data"], rest_one);
    assert_eq!(posted[1]["result"]["data"], rest_list);

    // Update and autosave, versions, restore: all through the REST handlers.
    let updated = alice
        .data(
            "workflows.update",
            json!({"id": id, "name": "renamed", "graph": graph("2")}),
        )
        .await;
    assert_eq!(
        (updated["name"].as_str(), &updated["graph"]),
        (Some("renamed"), &graph("2"))
    );
    let saved = alice
        .data(
            "workflows.autosave",
            json!({"id": id, "graph": graph("3"), "force": true}),
        )
        .await;
    assert_eq!(saved["version"]["version"], 1);
    let manual = alice
        .data("workflows.versions.create", json!({"id": id, "name": "m"}))
        .await;
    assert_eq!(manual["version"], 2);
    let versions = alice
        .data("workflows.versions.list", json!({"id": id}))
        .await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let restored = alice
        .data(
            "workflows.versions.restore",
            json!({"id": id, "version": 1}),
        )
        .await;
    assert_eq!(restored["graph"], graph("3"));

    // Bob: NOT_FOUND on everything of Alice's private workflow, in one mixed batch (207).
    let (status, items) = bob
        .batch(&[
            ("workflows.get", json!({"id": id})),
            ("workflows.list", json!({})),
            ("workflows.update", json!({"id": id, "name": "stolen"})),
            ("workflows.delete", json!({"id": id})),
            ("workflows.versions.list", json!({"id": id})),
            (
                "workflows.versions.delete",
                json!({"version_id": manual["id"]}),
            ),
            (
                "workflows.autosave",
                json!({"id": id, "graph": graph("x"), "force": true}),
            ),
        ])
        .await;
    assert_eq!(status, 207);
    assert_eq!(items[1]["result"]["data"]["workflows"], json!([]));
    for (i, item) in items.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(
            item["error"]["data"]["code"], "NOT_FOUND",
            "call {i}: {item}"
        );
        assert_eq!(item["error"]["code"], -32004);
        assert_eq!(item["error"]["data"]["httpStatus"], 404);
    }
    assert_eq!(
        alice.data("workflows.get", json!({"id": id})).await["name"],
        "renamed"
    );
    assert_eq!(
        alice
            .data("workflows.versions.list", json!({"id": id}))
            .await["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Alice deletes a version by id alone, then the workflow.
    let ok = alice
        .data(
            "workflows.versions.delete",
            json!({"version_id": manual["id"]}),
        )
        .await;
    assert_eq!(ok, json!({"ok": true}));
    assert_eq!(
        alice.data("workflows.delete", json!({"id": id})).await,
        json!({"ok": true})
    );
    assert_eq!(
        alice.error("workflows.get", json!({"id": id})).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn malformed_batches_and_unknown_procedures_get_trpc_error_shapes() {
    let s = start("supabase").await;
    let alice = Trpc::new(&s, "alice");
    use reqwest::Method;

    // Unknown procedure, in a batch and alone.
    let (status, items) = alice.batch(&[("nope.x", json!({}))]).await;
    assert_eq!(status, 404);
    assert_eq!(
        items[0]["error"]["message"],
        "No procedure found on path \"nope.x\""
    );
    assert_eq!(items[0]["error"]["code"], -32004);
    let (status, e) = alice.raw(Method::GET, "/trpc/workflows.nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["data"]["code"], "NOT_FOUND");
    assert_eq!(e["error"]["data"]["path"], "workflows.nope");

    // Not JSON: PARSE_ERROR, one error object (nothing was called).
    let (status, e) = alice
        .raw(
            Method::POST,
            "/trpc/workflows.list?batch=1",
            Some("{not json".into()),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["data"]["code"], "PARSE_ERROR");
    assert_eq!(e["error"]["code"], -32700);
    let (status, e) = alice
        .raw(
            Method::GET,
            "/trpc/workflows.list?batch=1&input=%7Bnope",
            None,
        )
        .await;
    assert_eq!(
        (status, e["error"]["data"]["code"].as_str()),
        (400, Some("PARSE_ERROR"))
    );

    // A batch input that is not an object; several paths without batch=1; too many calls.
    for (path, body) in [
        ("/trpc/workflows.list?batch=1", "[1,2]".to_owned()),
        ("/trpc/workflows.list,workflows.list", "{}".to_owned()),
        (
            &*format!("/trpc/{}?batch=1", vec!["workflows.list"; 101].join(",")),
            "{}".to_owned(),
        ),
    ] {
        let (status, e) = alice.raw(Method::POST, path, Some(body)).await;
        assert_eq!(status, 400, "{path}: {e}");
        assert_eq!(e["error"]["data"]["code"], "BAD_REQUEST");
        assert_eq!(e["error"]["code"], -32600);
    }

    // An input of the wrong shape: BAD_REQUEST naming the procedure.
    let (_, items) = alice
        .batch(&[
            ("workflows.get", json!({})),
            ("workflows.list", json!({"limit": "ten"})),
        ])
        .await;
    for item in &items {
        assert_eq!(item["error"]["data"]["code"], "BAD_REQUEST", "{item}");
    }
    assert!(items[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("workflows.get"));

    // A mutation by GET: METHOD_NOT_SUPPORTED; by POST it runs.
    let input = json!({"0": {"name": "x", "graph": graph("1")}});
    let (status, got) = alice
        .raw(
            Method::GET,
            &format!("/trpc/workflows.create?batch=1&input={}", enc(&input)),
            None,
        )
        .await;
    assert_eq!(status, 405);
    assert_eq!(got[0]["error"]["data"]["code"], "METHOD_NOT_SUPPORTED");
    assert_eq!(
        alice.data("workflows.list", json!({})).await["workflows"],
        json!([])
    );

    // A body over the JSON cap: refused by the server-wide guard before tRPC reads it (so in
    // the API's error shape), naming the limit.
    let big = format!("{{\"0\": \"{}\"}}", "x".repeat(9 * 1024 * 1024));
    let (status, e) = alice
        .raw(Method::POST, "/trpc/workflows.list?batch=1", Some(big))
        .await;
    assert_eq!(status, 413);
    assert!(
        e.to_string().contains("NODETOOL_MAX_JSON_BODY_BYTES"),
        "{e}"
    );

    // No token: the API's 401.
    let r = s
        .client
        .post(s.u("/trpc/workflows.list?batch=1"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn jobs_assets_and_storage_over_trpc_are_per_user() {
    let s = start("supabase").await;
    let alice = Trpc::new(&s, "alice");
    let bob = Trpc::new(&s, "bob");
    use reqwest::Method;

    // Jobs: a finished one and a running one.
    let done = alice
        .rest(
            Method::POST,
            "/api/jobs",
            Some(json!({"graph": sleep_graph(0.01)})),
        )
        .await;
    let done_id = done["id"].as_str().unwrap().to_owned();
    s.manager.wait(&jid(&done_id)).await.unwrap();
    let live = alice
        .rest(
            Method::POST,
            "/api/jobs",
            Some(json!({"graph": sleep_graph(30.0)})),
        )
        .await;
    let live_id = live["id"].as_str().unwrap().to_owned();

    let list = alice.data("jobs.list", json!({"limit": 10})).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(
        alice
            .data("jobs.list", json!({"workflow_id": "nope"}))
            .await["jobs"],
        json!([])
    );
    let running = alice.data("jobs.runningAll", json!(null)).await;
    assert_eq!(running.as_array().unwrap().len(), 1, "{running}");
    assert_eq!(running[0]["job_id"], live_id.as_str());
    assert_eq!(running[0]["is_running"], true);
    assert_eq!(
        alice.data("jobs.get", json!({"id": done_id})).await["status"],
        "completed"
    );

    // Bob sees none of it and can touch none of it.
    let (status, items) = bob
        .batch(&[
            ("jobs.get", json!({"id": done_id})),
            ("jobs.cancel", json!({"id": live_id})),
            ("jobs.delete", json!({"id": done_id})),
        ])
        .await;
    assert_eq!(status, 404);
    for item in &items {
        assert_eq!(item["error"]["data"]["code"], "NOT_FOUND", "{item}");
    }
    assert_eq!(bob.data("jobs.list", json!({})).await["jobs"], json!([]));
    assert_eq!(bob.data("jobs.runningAll", json!(null)).await, json!([]));

    // A running job cannot be deleted; cancel it, then it can.
    assert_eq!(
        alice.error("jobs.delete", json!({"id": live_id})).await,
        "CONFLICT"
    );
    let cancelled = alice.data("jobs.cancel", json!({"id": live_id})).await;
    assert_eq!(cancelled["job_id"], live_id.as_str());
    let rec = s.manager.wait(&jid(&live_id)).await.unwrap();
    assert_eq!(rec.status.as_str(), "cancelled");
    assert_eq!(
        alice.data("jobs.delete", json!({"id": done_id})).await,
        json!({"ok": true})
    );
    let list = alice.data("jobs.list", json!({})).await;
    assert!(
        !list.to_string().contains(&done_id),
        "deleted from the history: {list}"
    );

    // Assets: a folder with a file, made through REST multipart.
    let upload = |meta: Value, file: Option<&'static [u8]>, who: &str| {
        let mut form = reqwest::multipart::Form::new().text("json", meta.to_string());
        if let Some(bytes) = file {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name("notes.txt")
                    .mime_str("text/plain")
                    .unwrap(),
            );
        }
        s.client
            .post(s.u("/api/assets"))
            .bearer_auth(token(who))
            .multipart(form)
            .send()
    };
    let folder: Value = upload(
        json!({"name": "Docs", "content_type": "folder"}),
        None,
        "alice",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let folder_id = folder["id"].as_str().unwrap().to_owned();
    let file: Value = upload(
        json!({"name": "Meeting Notes", "parent_id": folder_id}),
        Some(b"hello"),
        "alice",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let file_id = file["id"].as_str().unwrap().to_owned();

    let children = alice
        .data("assets.children", json!({"id": folder_id}))
        .await;
    assert_eq!(
        children["assets"],
        json!([{"id": file_id, "name": "Meeting Notes", "content_type": "text/plain"}])
    );
    let rec = alice.data("assets.recursive", json!({"id": "alice"})).await;
    let ids: Vec<&str> = rec["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![folder_id.as_str(), file_id.as_str()]);
    let found = alice
        .data("assets.search", json!({"query": "meeting"}))
        .await;
    assert_eq!(found["total_count"], 1);
    assert_eq!(found["assets"][0]["id"], file_id.as_str());
    assert_eq!(found["is_global_search"], true);
    let by_name = alice
        .data("assets.byFilename", json!({"filename": "Meeting Notes"}))
        .await;
    assert_eq!(by_name["id"], file_id.as_str());
    let rest = alice
        .rest(Method::GET, &format!("/api/assets/{file_id}"), None)
        .await;
    assert_eq!(alice.data("assets.get", json!({"id": file_id})).await, rest);
    assert_eq!(
        alice.error("assets.search", json!({"query": " "})).await,
        "BAD_REQUEST"
    );
    assert_eq!(
        alice.error("assets.children", json!({"id": file_id})).await,
        "BAD_REQUEST"
    );

    // Bob: Alice's folders and files do not exist for him.
    let (_, items) = bob
        .batch(&[
            ("assets.children", json!({"id": folder_id})),
            ("assets.recursive", json!({"id": folder_id})),
            ("assets.byFilename", json!({"filename": "Meeting Notes"})),
            ("assets.get", json!({"id": file_id})),
            ("assets.update", json!({"id": file_id, "name": "mine"})),
            ("assets.delete", json!({"id": file_id})),
        ])
        .await;
    for item in &items {
        assert_eq!(item["error"]["data"]["code"], "NOT_FOUND", "{item}");
    }
    assert_eq!(
        bob.data("assets.search", json!({"query": "meeting"})).await["total_count"],
        0
    );
    assert_eq!(
        bob.data("assets.recursive", json!({"id": "bob"})).await["assets"],
        json!([])
    );

    // storage.signUrl: the caller's own keys only.
    let key = format!("alice/{file_id}.txt");
    let signed = alice.data("storage.signUrl", json!({"key": key})).await;
    let url = signed["url"].as_str().unwrap();
    assert!(url.contains(&file_id), "{url}");
    assert_eq!(
        bob.error("storage.signUrl", json!({"key": key})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        alice
            .error("storage.signUrl", json!({"key": "../etc"}))
            .await,
        "BAD_REQUEST"
    );

    // Alice renames and deletes through tRPC.
    let renamed = alice
        .data("assets.update", json!({"id": file_id, "name": "Minutes"}))
        .await;
    assert_eq!(renamed["name"], "Minutes");
    let gone = alice.data("assets.delete", json!({"id": folder_id})).await;
    assert_eq!(gone["deleted_asset_ids"].as_array().unwrap().len(), 2);
}
