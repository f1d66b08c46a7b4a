//! `nodetool serve` with `DATABASE_URL` (issue 13): jobs, job events, asset records and
//! workflows (with versions) go to PostgreSQL (the testkit's real server), not to the SQLite
//! file (which is not even created), survive a restart of the server, and stay per user;
//! `nodetool workflows` reads the same store; a bad URL or a server that is down stops startup
//! with a clear error that never shows the password.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use nodetool_testkit::postgres::PostgresServer;
use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};
use serde_json::{json, Value};

use crate::support;
use support::{Api, HANG};

/// Each test's own `HOME` (and config directory) for the `nodetool` it runs.
fn home() -> NodetoolHome {
    NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"))
}

/// A running `nodetool serve` (on the port it picked), killed when dropped.
struct Server {
    proc: ServeProcess,
}

impl Server {
    fn start(env: &NodetoolHome, vars: &[(&str, &str)]) -> Self {
        Self {
            proc: ServeProcess::start(env.cmd(&["serve"], vars), HANG),
        }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    fn api(&self) -> Api {
        Api::new(self.url(""))
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let status = self.proc.terminate(HANG);
        assert!(
            status.success(),
            "serve exited with {status}: {}",
            self.proc.log()
        );
    }
}

fn request() -> Value {
    json!({
        "graph": {
            "nodes": [
                {"id": "gen", "type": "nodetool.test.Generate", "data": {"count": 10}},
                {"id": "out", "type": "nodetool.output.Output", "data": {"name": "items"}},
            ],
            "edges": [
                {"id": "e1", "source": "gen", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
            ],
        },
        "execution_strategy": "threaded",
    })
}

async fn postgres(test: &str) -> Option<PostgresServer> {
    let pg = PostgresServer::start().await;
    if pg.is_none() {
        let why = PostgresServer::why_missing().unwrap_or_default();
        nodetool_testkit::skip_or_fail(test, &why);
    }
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_their_events_live_in_postgres_across_a_restart() {
    let Some(pg) = postgres("jobs_and_their_events_live_in_postgres_across_a_restart").await else {
        return;
    };
    let url = pg.create_database("serve");
    let env = home();
    let vars = [("DATABASE_URL", url.as_str())];

    let server = Server::start(&env, &vars);
    let (id, live) = server.api().run_streamed(&request()).await;
    let last = live.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("job_update"), Some("completed")),
        "{live:?}"
    );
    server.stop();

    // In PostgreSQL; the SQLite file is not even created.
    assert_eq!(
        pg.psql(
            "serve",
            &format!("SELECT status FROM jobs WHERE id = '{id}'")
        ),
        "completed"
    );
    let stored: usize = pg
        .psql(
            "serve",
            &format!("SELECT count(*) FROM job_events WHERE job_id = '{id}'"),
        )
        .parse()
        .unwrap();
    assert_eq!(stored, live.len());
    assert!(!env.path("nodetool.db").exists(), "no SQLite file");

    let server = Server::start(&env, &vars);
    let job = server.api().job(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(server.api().follow(&id, 0).await, live);
    let mid = live.len() as u64 / 2;
    let rest: Vec<Value> = live
        .iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > mid))
        .cloned()
        .collect();
    assert_eq!(server.api().follow(&id, mid).await, rest);
    server.stop();
}

const PASSWORD: &str = "pa55-w0rd-never-shown";

/// `nodetool serve` that must fail at start: its stderr.
fn serve_fails(env: &NodetoolHome, database_url: &str) -> String {
    let out = env
        .cmd(&["serve", "--port", "0"], &[("DATABASE_URL", database_url)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started with {database_url}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    stderr
}

#[tokio::test]
async fn a_bad_or_unreachable_database_url_stops_serve_without_showing_the_password() {
    let env = home();
    let stderr = serve_fails(&env, &format!("mysql://app:{PASSWORD}@db/nodetool"));
    assert!(stderr.contains("only PostgreSQL"), "{stderr}");

    // Nothing listens there: retried for a few seconds, then a clear error.
    let port = nodetool_testkit::free_port();
    let stderr = serve_fails(
        &env,
        &format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/nodetool"),
    );
    assert!(stderr.contains("not reachable"), "{stderr}");
}

#[test]
fn settings_show_prints_the_database_url_without_its_password() {
    let env = home();
    let url = format!("postgres://app:{PASSWORD}@db.internal:5432/nodetool");
    let show = |args: &[&str]| {
        let out = env
            .cmd(args, &[("DATABASE_URL", url.as_str())])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = show(&["settings", "show"]);
    assert!(
        !plain.contains("db.internal"),
        "secrets are hidden: {plain}"
    );
    let secrets = show(&["settings", "show", "--secrets"]);
    let line = secrets
        .lines()
        .find(|l| l.starts_with("DATABASE_URL"))
        .unwrap();
    assert!(
        line.contains("postgres://app:****@db.internal:5432/nodetool"),
        "{line}"
    );
    assert!(line.contains("nothing to DB_PATH"), "{line}");
    assert!(!secrets.contains(PASSWORD), "{secrets}");
    assert!(show(&["settings", "show", "--reveal"]).contains(PASSWORD));
}

const JWT_SECRET: &str = "postgres-records-jwt-secret-0123456789abcdef";

/// A supabase JWT for `sub` (two users need multi-user auth).
fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "aud": "authenticated", "role": "authenticated", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// `method path` as `user` with an optional JSON body: status and JSON answer (`null` if none).
async fn call(
    server: &Server,
    user: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.parse().unwrap(), server.url(path))
        .bearer_auth(token(user));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /api/assets` as `user`: one small text file (multipart by hand: the CLI's reqwest has
/// no multipart feature).
async fn upload(server: &Server, user: &str, name: &str) -> (u16, Value) {
    let boundary = "nodetool-test-boundary-7d1c";
    let meta = json!({"name": name, "content_type": "text/plain"});
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"json\"\r\n\r\n{meta}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: text/plain\r\n\r\nhello from postgres\r\n--{boundary}--\r\n"
    );
    let resp = reqwest::Client::new()
        .post(server.url("/api/assets"))
        .bearer_auth(token(user))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_and_workflows_live_in_postgres_per_user_across_a_restart() {
    let Some(pg) =
        postgres("assets_and_workflows_live_in_postgres_per_user_across_a_restart").await
    else {
        return;
    };
    let url = pg.create_database("records");
    let env = home();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("AUTH_PROVIDER", "supabase"),
        ("SUPABASE_JWT_SECRET", JWT_SECRET),
    ];

    let server = Server::start(&env, &vars);
    let graph = json!({"nodes": [], "edges": []});
    let (status, wf) = call(
        &server,
        "alice",
        "POST",
        "/api/workflows",
        Some(json!({"name": "alice's flow", "graph": graph})),
    )
    .await;
    assert_eq!(status, 200, "{wf}");
    let wf_id = wf["id"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &server,
        "alice",
        "POST",
        &format!("/api/workflows/{wf_id}/versions"),
        Some(json!({"name": "first"})),
    )
    .await;
    assert_eq!((status, &v["version"]), (200, &json!(1)), "{v}");
    let (status, asset) = upload(&server, "alice", "notes.txt").await;
    assert_eq!(status, 201, "{asset}");
    let asset_id = asset["id"].as_str().unwrap().to_owned();
    server.stop();

    // In PostgreSQL, each store in its schema; no SQLite file at all.
    let count = |sql: &str| pg.psql("records", sql);
    assert_eq!(
        count("SELECT count(*) FROM nodetool_workflows.nodetool_workflows"),
        "1"
    );
    assert_eq!(
        count("SELECT count(*) FROM nodetool_workflows.nodetool_workflow_versions"),
        "1"
    );
    assert_eq!(
        count(&format!(
            "SELECT user_id FROM nodetool_assets.nodetool_assets WHERE id = '{asset_id}'"
        )),
        "alice"
    );
    assert!(!env.path("nodetool.db").exists(), "no SQLite file");

    let server = Server::start(&env, &vars);
    let (status, got) = call(
        &server,
        "alice",
        "GET",
        &format!("/api/workflows/{wf_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, got["name"].as_str()),
        (200, Some("alice's flow")),
        "{got}"
    );
    let (status, versions) = call(
        &server,
        "alice",
        "GET",
        &format!("/api/workflows/{wf_id}/versions"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );
    let (status, got) = call(
        &server,
        "alice",
        "GET",
        &format!("/api/assets/{asset_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, got["name"].as_str()),
        (200, Some("notes.txt")),
        "{got}"
    );
    let (status, list) = call(&server, "alice", "GET", "/api/workflows", None).await;
    assert_eq!(
        (status, list["workflows"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{list}"
    );

    // Bob sees none of it.
    for path in [
        format!("/api/workflows/{wf_id}"),
        format!("/api/assets/{asset_id}"),
    ] {
        let (status, body) = call(&server, "bob", "GET", &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, body) = call(
        &server,
        "bob",
        "GET",
        &format!("/api/workflows/{wf_id}/versions"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, list) = call(&server, "bob", "GET", "/api/workflows", None).await;
    assert_eq!(
        (status, list["workflows"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );
    let (status, list) = call(&server, "bob", "GET", "/api/assets", None).await;
    assert_eq!(status, 200);
    assert!(
        list["assets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != json!(asset_id)),
        "{list}"
    );

    // `nodetool workflows` works on the same store: an import (as the local user "1") is what
    // the server shows user "1", and `ls` lists it.
    let file = env.path("flow.json");
    std::fs::write(
        &file,
        json!({"name": "imported", "graph": graph}).to_string(),
    )
    .unwrap();
    let out = env
        .cmd(&["workflows", "import", file.to_str().unwrap()], &vars)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (status, got) = call(
        &server,
        "1",
        "GET",
        &format!("/api/workflows/{imported}"),
        None,
    )
    .await;
    assert_eq!(
        (status, got["name"].as_str()),
        (200, Some("imported")),
        "{got}"
    );
    let out = env.cmd(&["workflows", "ls"], &vars).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&imported));

    // `nodetool run` records the assets it saves in the same PostgreSQL, where the server
    // serves them to user "1".
    let save = env.path("save.json");
    let graph = json!({
        "nodes": [
            {"id": "t", "type": "nodetool.text.SaveText",
             "data": {"text": "saved by run", "name": "from-run.txt"}},
            {"id": "o", "type": "nodetool.output.Output", "data": {"name": "saved"}}
        ],
        "edges": [{"id": "e", "source": "t", "sourceHandle": "output",
                   "target": "o", "targetHandle": "value"}]
    });
    std::fs::write(&save, graph.to_string()).unwrap();
    let out = env
        .cmd(&["run", save.to_str().unwrap()], &vars)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count("SELECT user_id FROM nodetool_assets.nodetool_assets WHERE name = 'from-run.txt'"),
        "1"
    );
    let (status, list) = call(&server, "1", "GET", "/api/assets?parent_id=1", None).await;
    assert_eq!(status, 200, "{list}");
    assert!(
        list["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "from-run.txt"),
        "{list}"
    );
    server.stop();
    assert!(!env.path("nodetool.db").exists(), "no SQLite file");
}
