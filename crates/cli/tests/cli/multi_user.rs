//! Issue 15 through the real `nodetool serve` binary, real sockets and two users under
//! multi-user auth (supabase JWTs).
//!
//! Item 2: one key scope for the storage routes and every job, on every strategy. User B's job cannot read user A's asset or temp object by key (an
//! `asset://`/`temp://` ref); a job's temp objects are `{user}/jobs/{job}/...`, so they are that
//! job's and that user's: A's HTTP client and A's next job read them, B's client and B's jobs do
//! not. After each refusal the server still answers and A's jobs still complete.
//!
//! Item 9: per-user queue limits and fair scheduling: A's ten jobs do not starve B's one job
//! (it starts when A's first ends), a submission past `MAX_QUEUED_JOBS_PER_USER` is `429` with
//! `Retry-After` on REST and an error frame on /ws, while B is still served.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nodetool_testkit::serve_process::ServeProcess;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "isolation-test-jwt-secret-0123456789abcdef";
const ALICE: &str = "alice";
const BOB: &str = "bob";
/// A 1×1 PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "aud": "authenticated", "role": "authenticated", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct Server {
    proc: ServeProcess,
    port: u16,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
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
        let mut all = vec![
            ("AUTH_PROVIDER", "supabase"),
            ("SUPABASE_JWT_SECRET", SECRET),
            ("ALLOWED_STRATEGIES", "threaded,subprocess"),
        ];
        all.extend_from_slice(vars);
        let proc = ServeProcess::start(nodetool(dir.path(), &["serve"], &all), WAIT);
        Self {
            port: proc.port(),
            proc,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    async fn put(&self, user: &str, path: &str, body: &'static str) -> u16 {
        self.http
            .put(self.url(path))
            .bearer_auth(token(user))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    /// Submits `graph` as `user` on `strategy`: status, `Retry-After`, body.
    async fn submit(
        &self,
        user: &str,
        strategy: &str,
        graph: Value,
    ) -> (u16, Option<String>, Value) {
        let r = self
            .http
            .post(self.url("/api/jobs"))
            .bearer_auth(token(user))
            .json(&json!({"graph": graph, "execution_strategy": strategy}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry, r.json().await.unwrap_or(Value::Null))
    }

    async fn job(&self, user: &str, id: &str) -> Value {
        self.http
            .get(self.url(&format!("/api/jobs/{id}")))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn finished(&self, user: &str, id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let j = self.job(user, id).await;
            if ["completed", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} still {}", j["status"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits `graph` as `user` on `strategy` and waits for the terminal record.
    async fn run(&self, user: &str, strategy: &str, graph: Value) -> Value {
        let (status, _, job) = self.submit(user, strategy, graph).await;
        assert_eq!(status, 200, "{job}");
        self.finished(user, job["id"].as_str().unwrap()).await
    }

    async fn still_serves(&self) {
        let r = reqwest::get(self.url("/health")).await.unwrap();
        assert!(r.status().is_success(), "health: {}", r.status());
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

/// A job that reads the text behind `uri` and saves it as the caller's asset.
fn read_text(uri: &str) -> Value {
    one(
        "nodetool.text.SaveText",
        json!({"text": {"type": "text", "uri": uri}, "name": "copy.txt"}),
    )
}

/// A job that reads the image behind `uri` and saves it as the caller's asset.
fn read_image(uri: &str) -> Value {
    one(
        "nodetool.image.SaveImage",
        json!({"image": {"type": "image", "uri": uri}, "name": "copy.png"}),
    )
}

/// B's job failed without reading A's bytes: "not found" for this user, naming the key.
fn refused(job: &Value, key: &str, secret: &str, what: &str) {
    assert_eq!(job["status"], "failed", "{what}: {job}");
    let error = job["error"].to_string();
    assert!(
        error.contains("not found") || error.contains("for this user"),
        "{what}: {error}"
    );
    assert!(error.contains(key), "{what}: {error}");
    assert!(!error.contains(secret), "{what}: {error}");
    assert!(job["result"].is_null(), "{what}: {job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_only_its_users_keys_on_every_strategy() {
    let server = Server::start(&[]);
    // A's objects, put through the storage routes (their own prefix).
    assert_eq!(
        server
            .put(ALICE, "/api/storage/alice/secret.txt", "alice-asset-secret")
            .await,
        201
    );
    assert_eq!(
        server
            .put(ALICE, "/api/storage/temp/alice/t.txt", "alice-temp-secret")
            .await,
        201
    );
    // The routes' rule: B cannot reach them over HTTP either.
    assert_eq!(
        server.get(BOB, "/api/storage/alice/secret.txt").await.0,
        403
    );
    assert_eq!(
        server.get(BOB, "/api/storage/temp/alice/t.txt").await.0,
        403
    );

    for strategy in ["threaded", "subprocess"] {
        // A's job makes a temp object: it lives under A's folder, in the job's own area.
        let made = server
            .run(
                ALICE,
                strategy,
                one(
                    "lib.pillow.filter.Invert",
                    json!({"image": {"type": "image", "uri": format!("data:image/png;base64,{PNG_B64}")}}),
                ),
            )
            .await;
        assert_eq!(made["status"], "completed", "{strategy}: {made}");
        let uri = made["result"]["result"][0]["uri"]
            .as_str()
            .unwrap()
            .to_owned();
        let job_id = made["id"].as_str().unwrap();
        let key = uri.strip_prefix("temp://").unwrap().to_owned();
        assert!(
            key.starts_with(&format!("alice/jobs/{job_id}/")),
            "{strategy}: {uri}"
        );
        // One rule: A's client reads it through the temp route, B's does not.
        let (status, png) = server.get(ALICE, &format!("/api/storage/temp/{key}")).await;
        assert_eq!(status, 200, "{strategy}");
        assert!(png.starts_with(b"\x89PNG"), "{strategy}");
        assert_eq!(
            server.get(BOB, &format!("/api/storage/temp/{key}")).await.0,
            403
        );

        // B's jobs, by key: A's asset, A's temp object, A's job's temp object.
        let o = server
            .run(BOB, strategy, read_text("asset://alice/secret.txt"))
            .await;
        refused(&o, "alice/secret.txt", "alice-asset-secret", strategy);
        let o = server
            .run(BOB, strategy, read_text("temp://alice/t.txt"))
            .await;
        refused(&o, "alice/t.txt", "alice-temp-secret", strategy);
        // NodeTool's URL forms of the same keys.
        let o = server
            .run(BOB, strategy, read_text("/api/storage/alice/secret.txt"))
            .await;
        refused(&o, "alice/secret.txt", "alice-asset-secret", strategy);
        let o = server.run(BOB, strategy, read_image(&uri)).await;
        refused(&o, &key, "PNG", strategy);
        server.still_serves().await;

        // A's jobs read the same keys (the refusals above are about the user, not the keys).
        let o = server
            .run(ALICE, strategy, read_text("asset://alice/secret.txt"))
            .await;
        assert_eq!(o["status"], "completed", "{strategy}: {o}");
        let copy = o["result"]["result"][0]["uri"].as_str().unwrap();
        let copy_key = copy.strip_prefix("asset://").unwrap();
        assert!(copy_key.starts_with("alice/"), "{copy}");
        let (status, text) = server.get(ALICE, &format!("/api/storage/{copy_key}")).await;
        assert_eq!((status, text.as_slice()), (200, &b"alice-asset-secret"[..]));
        let o = server
            .run(ALICE, strategy, read_text("temp://alice/t.txt"))
            .await;
        assert_eq!(o["status"], "completed", "{strategy}: {o}");
        let o = server.run(ALICE, strategy, read_image(&uri)).await;
        assert_eq!(o["status"], "completed", "{strategy}: {o}");
    }
    server.still_serves().await;
}

fn sleep(seconds: f64, tag: usize) -> Value {
    // A distinct value per job: Sleep is cacheable.
    one(
        "nodetool.test.Sleep",
        json!({"seconds": seconds, "value": tag}),
    )
}

fn started(job: &Value) -> chrono::DateTime<chrono::Utc> {
    job["started_at"]
        .as_str()
        .unwrap_or_else(|| panic!("not started: {job}"))
        .parse()
        .unwrap()
}

/// A `run_job` over /ws as `user`: the command's reply frame.
async fn ws_run_job(server: &Server, user: &str, graph: Value) -> Value {
    let mut req = server
        .url("/ws")
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(user)).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let frame =
        json!({"command": "run_job", "data": {"graph": graph, "execution_strategy": "threaded"}});
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
async fn one_users_many_jobs_do_not_starve_anothers_and_queues_are_bounded() {
    // One slot; A may have 9 jobs waiting.
    let server = Server::start(&[
        ("MAX_WORKFLOW_THREADS", "1"),
        ("MAX_QUEUED_JOBS_PER_USER", "9"),
    ]);
    let mut a_jobs = Vec::new();
    for i in 0..10 {
        // The first holds the slot long enough for everything below to be submitted meanwhile.
        let seconds = if i == 0 { 2.0 } else { 0.3 };
        let (status, _, job) = server.submit(ALICE, "threaded", sleep(seconds, i)).await;
        assert_eq!(status, 200, "A's job {i}: {job}");
        a_jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    // A's 11th: one running, nine waiting, the queue is full.
    let (status, retry, body) = server.submit(ALICE, "threaded", sleep(0.4, 10)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(body["error"]["kind"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("MAX_QUEUED_JOBS_PER_USER"), "{message}");
    // The same on /ws: an error frame, the socket's command answered.
    let reply = ws_run_job(&server, ALICE, sleep(0.4, 11)).await;
    assert_eq!(reply["command"], "run_job", "{reply}");
    assert_eq!(reply["error"], "job_rejected", "{reply}");
    assert!(
        reply["message"]
            .to_string()
            .contains("MAX_QUEUED_JOBS_PER_USER"),
        "{reply}"
    );
    // B is not A: B's one job is accepted, and starts when A's first ends, not after all ten.
    let (status, _, job) = server.submit(BOB, "threaded", sleep(0.1, 0)).await;
    assert_eq!(status, 200, "{job}");
    let b_id = job["id"].as_str().unwrap().to_owned();
    let b = server.finished(BOB, &b_id).await;
    assert_eq!(b["status"], "completed", "{b}");
    let mut a_done = Vec::new();
    for id in &a_jobs {
        let j = server.finished(ALICE, id).await;
        assert_eq!(j["status"], "completed", "{j}");
        a_done.push(j);
    }
    let b_started = started(&b);
    assert!(started(&a_done[0]) < b_started, "{:?}", a_done[0]);
    assert!(
        b_started <= started(&a_done[1]),
        "B started at {b_started}, A's second at {}: B waited behind A",
        started(&a_done[1])
    );
    // A's own jobs ran one at a time, in submission order.
    for w in a_done.windows(2) {
        assert!(started(&w[0]) < started(&w[1]), "{} / {}", w[0], w[1]);
    }
    // The queue drained: A is served again.
    let (status, _, job) = server.submit(ALICE, "threaded", sleep(0.0, 99)).await;
    assert_eq!(status, 200, "{job}");
    let j = server.finished(ALICE, job["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "completed", "{j}");
    server.still_serves().await;
}

/// Issue 15 item 6 at the REST level: a symbolic link in the asset folder — even one pointing
/// into another user's folder — is refused by the storage routes (nothing read, written or
/// deleted through it) and by jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_in_the_asset_folder_are_refused_by_the_routes_and_jobs() {
    let assets = tempfile::tempdir().unwrap();
    let folder = assets.path().to_str().unwrap().to_owned();
    let server = Server::start(&[("ASSET_FOLDER", folder.as_str())]);
    assert_eq!(
        server.put(ALICE, "/api/storage/alice/a.txt", "mine").await,
        201
    );
    assert_eq!(
        server
            .put(BOB, "/api/storage/bob/secret.txt", "bob-secret")
            .await,
        201
    );
    let alice = assets.path().join("alice");
    let bob = assets.path().join("bob");
    std::os::unix::fs::symlink(bob.join("secret.txt"), alice.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&bob, alice.join("dir")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", alice.join("host.txt")).unwrap();

    for path in ["alice/link.txt", "alice/dir/secret.txt", "alice/host.txt"] {
        let (status, body) = server.get(ALICE, &format!("/api/storage/{path}")).await;
        assert!(matches!(status, 403 | 404), "GET {path}: {status}");
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("bob-secret"), "GET {path}: {body}");
        let head = server
            .http
            .head(server.url(&format!("/api/storage/{path}")))
            .bearer_auth(token(ALICE))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(matches!(head, 403 | 404), "HEAD {path}: {head}");
    }
    // No write through a linked folder, no delete of the link's target.
    let status = server
        .put(ALICE, "/api/storage/alice/dir/planted.txt", "x")
        .await;
    assert!(matches!(status, 403 | 404), "PUT through a link: {status}");
    assert!(!bob.join("planted.txt").exists());
    let status = server
        .http
        .delete(server.url("/api/storage/alice/dir/secret.txt"))
        .bearer_auth(token(ALICE))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert!(
        status != 204 || bob.join("secret.txt").exists(),
        "DELETE through a link: {status}"
    );
    assert_eq!(
        std::fs::read_to_string(bob.join("secret.txt")).unwrap(),
        "bob-secret"
    );
    // A job of Alice's cannot read through the links either.
    for uri in ["asset://alice/link.txt", "asset://alice/dir/secret.txt"] {
        let o = server.run(ALICE, "subprocess", read_text(uri)).await;
        assert_eq!(o["status"], "failed", "{uri}: {o}");
        assert!(!o["error"].to_string().contains("bob-secret"), "{o}");
    }
    // Alice's own plain file still reads.
    let (status, body) = server.get(ALICE, "/api/storage/alice/a.txt").await;
    assert_eq!((status, body.as_slice()), (200, &b"mine"[..]));
    server.still_serves().await;
}

/// Sends a request head announcing a large body, then trickles it a few bytes a second; returns
/// what the server answered and whether it closed the connection, within `within`.
fn trickle(port: u16, head: &str, within: Duration) -> (String, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        // A write may fail once the server has closed: that is the point.
        let _ = s.write_all(b"xxxx");
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&answer).into_owned(), true),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&answer).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), false)
}

/// Issue 15 item 10, the body half: a request body that trickles (slowloris after the head)
/// gets 408 and its connection is closed, on an upload route and on a JSON route; nothing is
/// stored, and the server goes on answering. A body at a normal pace is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_gets_408_and_frees_the_connection() {
    let server = Server::start(&[("SERVER_BODY_TIMEOUT", "2")]);
    let bearer = token(ALICE);
    for (what, head) in [
        (
            "upload",
            format!(
                "PUT /api/storage/alice/slow.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
            ),
        ),
        (
            "json",
            format!(
                "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            ),
        ),
    ] {
        let started = Instant::now();
        let (answer, closed) = trickle(server.port, &head, Duration::from_secs(20));
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
        assert!(answer.contains("SERVER_BODY_TIMEOUT"), "{what}: {answer}");
        assert!(closed, "{what}: the connection stayed open");
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        server.still_serves().await;
    }
    assert_eq!(
        server.get(ALICE, "/api/storage/alice/slow.txt").await.0,
        404
    );
    // A body sent at once is fine, large or small.
    let big = vec![b'a'; 4 << 20];
    let r = server
        .http
        .put(server.url("/api/storage/alice/big.bin"))
        .bearer_auth(token(ALICE))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}
