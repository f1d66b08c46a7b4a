//! Issue 15 through the real `nodetool serve` binary and real sockets: an operator's
//! `ALLOWED_STRATEGIES` binds REST and /ws; a template spinning in minijinja ends at its time
//! limit and on cancel, and frees its slot; huge ranges and templates fail with a clear
//! `too large`, and templates that grow a value in a loop stop at their memory budget; `nodetool storage gc` reaps stale partial uploads and Docker job workspaces.
//! After each, the server still answers and a follow-up job completes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use nodetool_testkit::serve_process::ServeProcess;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "hardening-test-token-0123456789";

struct Server {
    proc: ServeProcess,
    _dir: tempfile::TempDir,
}

fn nodetool(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
    cmd.args(args)
        .env_clear()
        .env("HOME", dir)
        .env("NODETOOL_CONFIG_DIR", dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied());
    cmd
}

impl Server {
    fn start(vars: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![("AUTH_PROVIDER", "static"), ("SERVER_AUTH_TOKEN", TOKEN)];
        all.extend_from_slice(vars);
        let proc = ServeProcess::start(nodetool(dir.path(), &["serve"], &all), WAIT);
        Self { proc, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    async fn submit(&self, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url("/api/jobs"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn job(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(self.url(&format!("/api/jobs/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the job until it is terminal; fails after `within`.
    async fn finished(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let j = self.job(id).await;
            if ["completed", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} still {}", j["status"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server answers, and a small job completes (a slot is free).
    async fn still_serves(&self) {
        let r = reqwest::get(self.url("/health")).await.unwrap();
        assert!(r.status().is_success(), "health: {}", r.status());
        let (status, job) = self
            .submit(json!({"graph": one("nodetool.constant.Integer", json!({"value": 7}))}))
            .await;
        assert_eq!(status, 200, "{job}");
        let done = self
            .finished(job["id"].as_str().unwrap(), Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    }
}

fn one(node_type: &str, data: Value) -> Value {
    json!({
        "nodes": [
            {"id": "n", "type": node_type, "data": data},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}},
        ],
        "edges": [
            {"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
        ],
    })
}

/// 10^10 loop steps: minutes of CPU were it not stopped.
const SPIN: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";

async fn ws_run_job(server: &Server, data: Value) -> Value {
    let mut req = server
        .url("/ws")
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let frame = json!({"command": "run_job", "data": data});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v.get("command").is_some() {
                    return v;
                }
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_strategies_are_refused_on_rest_and_ws() {
    let server = Server::start(&[("ALLOWED_STRATEGIES", "subprocess")]);
    let graph = one("nodetool.constant.Integer", json!({"value": 1}));
    for strategy in ["threaded", "docker"] {
        let (status, body) = server
            .submit(json!({"graph": graph, "execution_strategy": strategy}))
            .await;
        assert_eq!(status, 403, "{strategy}: {body}");
        let text = body.to_string();
        assert!(text.contains("ALLOWED_STRATEGIES"), "{strategy}: {text}");
        assert!(text.contains(strategy), "{strategy}: {text}");

        let reply = ws_run_job(
            &server,
            json!({"graph": graph, "execution_strategy": strategy}),
        )
        .await;
        assert_eq!(reply["error"], "job_rejected", "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("is not allowed on this server"),
            "{reply}"
        );
    }
    // Naming none runs on the allowed strategy; naming it works too.
    for body in [
        json!({"graph": graph}),
        json!({"graph": graph, "execution_strategy": "subprocess"}),
    ] {
        let (status, job) = server.submit(body).await;
        assert_eq!(status, 200, "{job}");
        assert_eq!(job["execution_strategy"], "subprocess", "{job}");
        let done = server
            .finished(job["id"].as_str().unwrap(), Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let reply = ws_run_job(&server, json!({"graph": graph})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert!(reply["job_id"].is_string(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_templates_end_at_their_deadline_and_on_cancel() {
    // One slot: a spinning job that kept it would block the follow-up job.
    let server = Server::start(&[("MAX_WORKFLOW_THREADS", "1"), ("THREAD_POOL_SIZE", "1")]);
    for strategy in ["threaded", "subprocess"] {
        let started = Instant::now();
        let (status, job) = server
            .submit(json!({
                "graph": one("nodetool.text.FormatText", json!({"template": SPIN})),
                "execution_strategy": strategy,
                "resource_limits": {"time_seconds": 2},
            }))
            .await;
        assert_eq!(status, 200, "{job}");
        let done = server
            .finished(job["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(done["status"], "failed", "{strategy}: {done}");
        assert!(
            done["error"].to_string().contains("time limit"),
            "{strategy}: {done}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        server.still_serves().await;

        // No time limit: cancel ends it.
        let (_, job) = server
            .submit(json!({
                "graph": one("nodetool.text.FormatText", json!({"template": SPIN})),
                "execution_strategy": strategy,
            }))
            .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + WAIT;
        while server.job(&id).await["status"] != "running" {
            assert!(Instant::now() < deadline, "never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = reqwest::Client::new()
            .post(server.url(&format!("/api/jobs/{id}/cancel")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "cancel: {}", r.status());
        let done = server.finished(&id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "cancelled", "{strategy}: {done}");
        server.still_serves().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_ranges_and_templates_fail_clearly() {
    let server = Server::start(&[]);
    for graph in [
        one(
            "nodetool.list.Range",
            json!({"start": i64::MIN, "stop": i64::MAX, "step": 1}),
        ),
        one(
            "nodetool.list.Range",
            json!({"start": 0, "stop": 4_000_000_000i64, "step": 1}),
        ),
        one(
            "nodetool.text.FormatText",
            json!({"template": "{{ 'x' * 100000000 }}"}),
        ),
    ] {
        let (status, job) = server.submit(json!({"graph": graph})).await;
        assert_eq!(status, 200, "{job}");
        let done = server
            .finished(job["id"].as_str().unwrap(), Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "failed", "{done}");
        assert!(done["error"].to_string().contains("too large"), "{done}");
    }
    server.still_serves().await;
}

/// Templates whose values grow with no cap minijinja knows of: each doubles something in a
/// loop until it would need 2^60 bytes. Fuel does not stop them (a few hundred steps); the
/// render's memory budget does.
const GROWING_TEMPLATES: [(&str, &str); 5] = [
    (
        "`~` in a range loop",
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    ),
    (
        "`~` in a loop over a string (no range)",
        "{% set ns = namespace(s='x') %}{% for c in 'abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz' %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    ),
    (
        "a macro's captured output fed back into it",
        "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = twice(ns.s) %}{% endfor %}{{ ns.s|length }}",
    ),
    (
        "a recursive macro",
        "{% macro grow(s, n) %}{% if n > 0 %}{{ grow(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ grow('x', 60) }}",
    ),
    (
        "the join filter",
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}{{ ns.s|length }}",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_that_outgrow_their_memory_fail_and_the_server_survives() {
    let server = Server::start(&[]);
    let submit = |strategy: &'static str, template: &'static str| {
        let server = &server;
        async move {
            let (status, job) = server
                .submit(json!({
                    "graph": one("nodetool.text.FormatText", json!({"template": template})),
                    "execution_strategy": strategy,
                }))
                .await;
            assert_eq!(status, 200, "{job}");
            server
                .finished(job["id"].as_str().unwrap(), Duration::from_secs(60))
                .await
        }
    };
    // A worker process ends with its job, and its memory with it: every shape, every time.
    let stopped_at_budget = |done: &Value, context: &str| {
        assert_eq!(done["status"], "failed", "{context}: {done}");
        let error = done["error"].to_string();
        assert!(
            error.contains("the render needed more than 256 MiB of memory"),
            "{context}: {done}"
        );
    };
    for (what, template) in GROWING_TEMPLATES {
        let done = submit("subprocess", template).await;
        stopped_at_budget(&done, &format!("subprocess, {what}"));
    }
    server.still_serves().await;

    // In the server's own process each stopped render keeps what it held, so after
    // MAX_RUNAWAY_TEMPLATES (4) of them templates are refused; everything else goes on.
    for (what, template) in &GROWING_TEMPLATES[..4] {
        let done = submit("threaded", template).await;
        stopped_at_budget(&done, &format!("threaded, {what}"));
        server.still_serves().await;
    }
    let done = submit("threaded", "{{ 'still' }} here").await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"]
            .to_string()
            .contains("template rendering is off until nodetool restarts"),
        "{done}"
    );
    // A subprocess job's render is its own process's: still fine.
    let done = submit("subprocess", "{{ 'still' }} here").await;
    assert_eq!(done["status"], "completed", "{done}");
    server.still_serves().await;
}

fn age(path: &Path, by: Duration) {
    let f = std::fs::File::options().read(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn storage_gc_reaps_stale_partial_uploads_and_workspaces() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    let temp = dir.path().join("temp");
    let vars: [(&str, &str); 0] = [];
    let mut stale: Vec<PathBuf> = Vec::new();
    let mut fresh: Vec<PathBuf> = Vec::new();
    for root in [&assets, &temp] {
        let tmp = root.join(".nodetool/tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let s = tmp.join("killed-mid-upload");
        std::fs::write(&s, vec![0u8; 1024]).unwrap();
        age(&s, Duration::from_secs(3 * 3600));
        stale.push(s);
        let f = tmp.join("in-flight");
        std::fs::write(&f, b"x").unwrap();
        fresh.push(f);
    }
    let workspaces = dir.path().join("workspaces");
    let old_ws = workspaces.join("nodetool-job-killed");
    std::fs::create_dir_all(old_ws.join("out")).unwrap();
    std::fs::write(old_ws.join("out/frame.png"), b"png").unwrap();
    age(&old_ws, Duration::from_secs(3600));
    let new_ws = workspaces.join("nodetool-job-starting");
    std::fs::create_dir_all(&new_ws).unwrap();

    let out = nodetool(dir.path(), &["storage", "gc"], &vars)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("removed 2 partial uploads"), "{stdout}");
    for s in &stale {
        assert!(!s.exists(), "{} survived gc", s.display());
    }
    for f in &fresh {
        assert!(f.exists(), "{} (live) was removed", f.display());
    }
    if std::path::Path::new("/var/run/docker.sock").exists()
        && stdout.contains("Docker job workspaces")
    {
        assert!(!old_ws.exists(), "stale workspace survived: {stdout}");
        assert!(new_ws.exists(), "fresh workspace removed: {stdout}");
    } else {
        nodetool_testkit::skip_or_fail(
            "storage_gc_reaps_stale_partial_uploads_and_workspaces (workspaces)",
            "no Docker engine to tell live workspaces from stale ones",
        );
    }
}
