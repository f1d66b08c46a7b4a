//! The NodeTool app's workflow surface through a real socket, two users each: a stored workflow
//! run by id (`POST /api/workflows/{id}/run` and `/ws run_job {workflow_id}`), versions and
//! autosave, and `GET /api/config`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use futures::{SinkExt, StreamExt};
use jobs_support::{sleep_graph, start, token, JobServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

struct User<'a> {
    s: &'a JobServer,
    token: String,
}

impl User<'_> {
    fn new<'a>(s: &'a JobServer, name: &str) -> User<'a> {
        User {
            s,
            token: token(name),
        }
    }
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .s
            .client
            .request(method, self.s.u(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

async fn create(user: &User<'_>, graph: Value) -> String {
    let (status, w) = user
        .post("/api/workflows", json!({"name": "w", "graph": graph}))
        .await;
    assert_eq!(status, 200, "{w}");
    w["id"].as_str().unwrap().to_owned()
}

/// A /ws client that decodes either frame kind.
struct Ws(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl Ws {
    async fn connect(s: &JobServer, token: &str) -> Ws {
        let url = format!("{}/ws", s.url.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ws(tokio_tungstenite::connect_async(req).await.unwrap().0)
    }
    async fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).await.unwrap();
    }
    async fn recv(&mut self) -> Value {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), self.0.next());
        match next.await.unwrap().unwrap().unwrap() {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            Message::Binary(b) => rmp_serde::from_slice(&b).unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    /// Frames until the terminal `job_update` of `job_id`; returns it.
    async fn until_done(&mut self, job_id: &str) -> Value {
        loop {
            let f = self.recv().await;
            if f["type"] == "job_update"
                && f["job_id"] == job_id
                && matches!(
                    f["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
            {
                return f;
            }
        }
    }
}

#[tokio::test]
async fn a_stored_workflow_runs_by_id_over_rest_and_ws_for_its_readers_only() {
    let s = start("supabase").await;
    let alice = User::new(&s, "alice");
    let bob = User::new(&s, "bob");
    let id = create(&alice, sleep_graph(0.01)).await;
    let run = format!("/api/workflows/{id}/run");

    // Blocking run: NodeTool's payload, through the manager (listed among Alice's jobs).
    let (status, out) = alice.post(&run, json!({"params": {}})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["workflow_id"], id.as_str());
    assert_eq!(out["background"], false);
    assert!(out["outputs"].to_string().contains("done"), "{out}");
    let job_id = out["job_id"].as_str().unwrap().to_owned();
    let (_, jobs) = alice.get("/api/jobs").await;
    assert!(jobs["jobs"].to_string().contains(&job_id));
    let (_, job) = alice.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["workflow_id"], id.as_str());

    // Background run: the receipt at once, the job settles on its own.
    let (status, receipt) = alice.post(&run, json!({"background": true})).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["background"], true);
    assert_eq!(receipt["id"], receipt["job_id"]);
    let bg = receipt["job_id"].as_str().unwrap().to_owned();
    let rec = s
        .manager
        .wait(&nodetool_core::JobId::parse(&bg).unwrap())
        .await
        .unwrap();
    assert_eq!(rec.status.as_str(), "completed");
    assert_eq!(rec.user_id, "alice");

    // A run with no body at all works too; a graph in the body is ignored (the stored one runs).
    let (status, out) = alice
        .post(
            &run,
            json!({"graph": {"nodes": [{"id": "x", "type": "no.such.Node"}], "edges": []}}),
        )
        .await;
    assert_eq!((status, out["status"].as_str()), (200, Some("completed")));

    // Bob: Alice's private workflow is "not found" on REST and on /ws; her jobs too.
    let (status, err) = bob.post(&run, json!({})).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["kind"], "not_found");
    assert_eq!(bob.get(&format!("/api/jobs/{job_id}")).await.0, 404);
    let mut ws = Ws::connect(&s, &bob.token).await;
    ws.send(json!({"command": "run_job", "data": {"workflow_id": id}}))
        .await;
    let reply = ws.recv().await;
    assert_eq!(reply["error"], "job_rejected", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("not found"));
    // A workflow id that exists nowhere: the same answer.
    let (status, _) = alice.post("/api/workflows/nope/run", json!({})).await;
    assert_eq!(status, 404);

    // Alice over /ws: run_job by workflow_id streams the stored graph's run.
    let mut ws_a = Ws::connect(&s, &alice.token).await;
    ws_a.send(json!({"command": "run_job", "data": {"workflow_id": id}}))
        .await;
    let reply = ws_a.recv().await;
    assert_eq!(reply["command"], "run_job", "{reply}");
    let ws_job = reply["job_id"].as_str().unwrap().to_owned();
    let done = ws_a.until_done(&ws_job).await;
    assert_eq!(done["status"], "completed", "{done}");

    // Public: Bob may run it, as himself; he still cannot change it.
    let (status, _) = alice
        .put(&format!("/api/workflows/{id}"), json!({"access": "public"}))
        .await;
    assert_eq!(status, 200);
    let (status, out) = bob.post(&run, json!({})).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("completed")));
    let bob_job = out["job_id"].as_str().unwrap();
    assert_eq!(
        s.manager
            .get(&nodetool_core::JobId::parse(bob_job).unwrap())
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "bob"
    );
    assert_eq!(alice.get(&format!("/api/jobs/{bob_job}")).await.0, 404);
    ws.send(json!({"command": "run_job", "data": {"workflow_id": id}}))
        .await;
    let reply = ws.recv().await;
    let job = reply["job_id"].as_str().unwrap().to_owned();
    assert_eq!(ws.until_done(&job).await["status"], "completed");

    // Bad input: a body that is not a run request is a 4xx with the API's error shape.
    let (status, err) = alice.post(&run, json!({"params": "not an object"})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("params"));
}

#[tokio::test]
async fn versions_and_bounded_autosave_are_the_owners_only() {
    let s = start("supabase").await;
    let alice = User::new(&s, "alice");
    let bob = User::new(&s, "bob");
    let g1 = json!({"nodes": [{"id": "a", "type": "nodetool.constant.String", "data": {"value": "1"}}], "edges": []});
    let g2 = json!({"nodes": [{"id": "a", "type": "nodetool.constant.String", "data": {"value": "2"}}], "edges": []});
    let id = create(&alice, g1.clone()).await;
    let base = format!("/api/workflows/{id}");

    // A manual version snapshots the current graph.
    let (status, v1) = alice
        .post(&format!("{base}/versions"), json!({"name": "first"}))
        .await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(
        (v1["version"].as_i64(), v1["save_type"].as_str()),
        (Some(1), Some("manual"))
    );
    assert_eq!(v1["graph"], g1);
    assert_eq!(v1["name"], "first");

    // Autosave writes the graph and an autosave version; a second one within 30 s is skipped
    // unless forced.
    let (status, a) = alice
        .post(&format!("{base}/autosave"), json!({"graph": g2}))
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["skipped"], false);
    assert_eq!(a["version"]["version"], 2);
    assert_eq!(a["version"]["save_type"], "autosave");
    assert_eq!(alice.get(&base).await.1["graph"], g2);
    let (_, skipped) = alice
        .put(&format!("{base}/autosave"), json!({"graph": g1}))
        .await;
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["version"], Value::Null);
    assert_eq!(
        alice.get(&base).await.1["graph"],
        g2,
        "a skipped autosave saves nothing"
    );

    // Bounded: with max_versions 3, only the newest 3 autosaves stay; the manual one stays.
    for _ in 0..5 {
        let (status, a) = alice
            .post(
                &format!("{base}/autosave"),
                json!({"graph": g2, "force": true, "max_versions": 3}),
            )
            .await;
        assert_eq!((status, a["skipped"].as_bool()), (200, Some(false)), "{a}");
    }
    let (_, list) = alice.get(&format!("{base}/versions")).await;
    let versions: Vec<(i64, String)> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["save_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            (7, "autosave".to_owned()),
            (6, "autosave".to_owned()),
            (5, "autosave".to_owned()),
            (1, "manual".to_owned())
        ]
    );

    // Get by number, restore, delete by id.
    let (status, got) = alice.get(&format!("{base}/versions/1")).await;
    assert_eq!((status, &got["graph"]), (200, &g1));
    let (status, restored) = alice
        .post(&format!("{base}/versions/1/restore"), json!({}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["graph"], g1);
    assert_eq!(alice.get(&base).await.1["graph"], g1);
    let vid = got["id"].as_str().unwrap();
    assert_eq!(alice.delete(&format!("{base}/versions/{vid}")).await.0, 204);
    assert_eq!(alice.get(&format!("{base}/versions/1")).await.0, 404);

    // Bad input.
    assert_eq!(alice.get(&format!("{base}/versions/0")).await.0, 400);
    assert_eq!(alice.get(&format!("{base}/versions/x")).await.0, 400);
    assert_eq!(alice.get(&format!("{base}/versions/99")).await.0, 404);
    let (status, _) = alice
        .post(&format!("{base}/autosave"), json!({"force": true}))
        .await;
    assert_eq!(status, 400, "autosave without a graph");
    let (status, _) = alice
        .post(
            &format!("{base}/autosave"),
            json!({"graph": g1, "force": true, "max_versions": 0}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = alice
        .post(
            &format!("{base}/autosave"),
            json!({"graph": {"nodes": 1}, "force": true}),
        )
        .await;
    assert_eq!(status, 400);

    // Bob: a private workflow's history is "not found" on every route.
    for (status, _) in [
        bob.get(&format!("{base}/versions")).await,
        bob.post(&format!("{base}/versions"), json!({})).await,
        bob.get(&format!("{base}/versions/5")).await,
        bob.post(&format!("{base}/versions/5/restore"), json!({}))
            .await,
        bob.delete(&format!("{base}/versions/5")).await,
        bob.post(
            &format!("{base}/autosave"),
            json!({"graph": g2, "force": true}),
        )
        .await,
    ] {
        assert_eq!(status, 404);
    }
    // Public: readable, but its history and saves stay the owner's (403, with the reason).
    alice.put(&base, json!({"access": "public"})).await;
    let (status, err) = bob.get(&format!("{base}/versions")).await;
    assert_eq!(status, 403, "{err}");
    let (status, _) = bob
        .post(
            &format!("{base}/autosave"),
            json!({"graph": g2, "force": true}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(alice.get(&base).await.1["graph"], g1, "Bob changed nothing");

    // Deleting the workflow deletes its versions.
    assert_eq!(alice.delete(&base).await.0, 204);
    let id2 = create(&alice, g1.clone()).await;
    assert_eq!(
        alice.get(&format!("/api/workflows/{id2}/versions")).await.1["versions"],
        json!([])
    );
}

#[tokio::test]
async fn config_tells_the_app_its_auth_mode_without_a_token() {
    let s = start("supabase").await;
    let r = s.client.get(s.u("/api/config")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["authMode"], "supabase");
    assert_eq!(c["authProvider"], "supabase");
    assert_eq!(c["features"]["jobs"], true);
    assert_eq!(c["features"]["trpc"], true);
    assert!(c["version"].is_string());
    assert!(
        !c.to_string().contains(jobs_support::JWT_SECRET),
        "no secret in the public config"
    );

    let s = start("static").await;
    let c: Value = s
        .client
        .get(s.u("/api/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (c["authMode"].as_str(), c["authProvider"].as_str()),
        (Some("local"), Some("static"))
    );
    assert_eq!(c["supabaseUrl"], Value::Null);
}
