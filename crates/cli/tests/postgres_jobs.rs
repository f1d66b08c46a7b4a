//! `nodetool serve` with `DATABASE_URL` (issue 13): jobs and job events go to PostgreSQL (the
//! testkit's real server), not to the SQLite file, and survive a restart of the server; a bad
//! URL or a server that is down stops startup with a clear error that never shows the password.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nodetool_testkit::postgres::PostgresServer;
use nodetool_testkit::serve_process::ServeProcess;
use serde_json::{json, Value};

const HANG: Duration = Duration::from_secs(90);

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("NODETOOL_CONFIG_DIR", self.dir.path())
            .env("ASSET_FOLDER", self.path("assets"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().copied());
        cmd
    }
}

/// A running `nodetool serve` (on the port it picked), killed when dropped.
struct Server {
    proc: ServeProcess,
}

impl Server {
    fn start(env: &Env, vars: &[(&str, &str)]) -> Self {
        Self {
            proc: ServeProcess::start(env.cmd(&["serve"], vars), HANG),
        }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
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

    /// `POST /api/jobs?stream=true`: the job's id and its live SSE events.
    async fn run_streamed(&self, request: &Value) -> (String, Vec<Value>) {
        let resp = reqwest::Client::new()
            .post(self.url("/api/jobs?stream=true"))
            .json(request)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let text = tokio::time::timeout(HANG, resp.text())
            .await
            .expect("the streamed job did not end")
            .unwrap();
        let events = parse_sse(&text);
        let id = events[0]["job_id"].as_str().unwrap().to_owned();
        (id, events)
    }

    /// `GET /api/jobs/{id}/events` with `Last-Event-ID: since`.
    async fn sse_replay(&self, id: &str, since: u64) -> Vec<Value> {
        let resp = reqwest::Client::new()
            .get(self.url(&format!("/api/jobs/{id}/events")))
            .header("Last-Event-ID", since.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let text = tokio::time::timeout(HANG, resp.text())
            .await
            .expect("the replay did not end")
            .unwrap();
        parse_sse(&text)
    }

    async fn get_job(&self, id: &str) -> Value {
        let resp = reqwest::get(self.url(&format!("/api/jobs/{id}")))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }
}

fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|block| {
            let data = block.lines().find_map(|l| l.strip_prefix("data:"))?;
            Some(serde_json::from_str(data.trim()).unwrap())
        })
        .collect()
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

/// Rows of `table` in the SQLite file (0 when the table is not there).
async fn sqlite_rows(db: &std::path::Path, table: &str) -> i64 {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Row};
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_their_events_live_in_postgres_across_a_restart() {
    let Some(pg) = postgres("jobs_and_their_events_live_in_postgres_across_a_restart").await else {
        return;
    };
    let url = pg.create_database("serve");
    let env = Env::new();
    let vars = [("DATABASE_URL", url.as_str())];

    let server = Server::start(&env, &vars);
    let (id, live) = server.run_streamed(&request()).await;
    let last = live.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("job_update"), Some("completed")),
        "{live:?}"
    );
    server.stop();

    // In PostgreSQL, not in the SQLite file (which still holds the other tables).
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
    assert_eq!(sqlite_rows(&env.path("nodetool.db"), "jobs").await, 0);

    let server = Server::start(&env, &vars);
    let job = server.get_job(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(server.sse_replay(&id, 0).await, live);
    let mid = live.len() as u64 / 2;
    let rest: Vec<Value> = live
        .iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > mid))
        .cloned()
        .collect();
    assert_eq!(server.sse_replay(&id, mid).await, rest);
    server.stop();
}

const PASSWORD: &str = "pa55-w0rd-never-shown";

/// `nodetool serve` that must fail at start: its stderr.
fn serve_fails(env: &Env, database_url: &str) -> String {
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
    let env = Env::new();
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
    let env = Env::new();
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
    assert!(line.contains("stay in DB_PATH"), "{line}");
    assert!(!secrets.contains(PASSWORD), "{secrets}");
    assert!(show(&["settings", "show", "--reveal"]).contains(PASSWORD));
}
