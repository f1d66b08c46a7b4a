//! A job's outcome that cannot be written is not reported as `completed` (issue 15, item 14).
//!
//! The database lives on a small tmpfs of its own. The job sleeps, then builds a 2 MiB output;
//! while it sleeps the test fills the tmpfs, so recording the outcome fails with a real
//! SQLITE_FULL. The manager retries, then reports the job `failed` with an `unavailable:` error
//! (live, on SSE and in the record) instead of the `completed` it could not store, and the server
//! keeps serving: with room again the next job completes. The same job on an identical tmpfs
//! with room completes, so the failure is the full disk's.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodetool_testkit::serve_process::ServeProcess;
use serde_json::{json, Value};

const HANG: Duration = Duration::from_secs(90);
const TEST: &str = "outcome_durability";

/// A tmpfs of `size` mounted on a fresh folder, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root, or no CAP_SYS_ADMIN).
    fn mount(parent: &Path, name: &str, size: &str) -> Option<Self> {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("mount: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Self { dir })
    }

    /// Writes zeros until the filesystem is full (ENOSPC); returns the filler's path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial page too.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

struct Server {
    proc: ServeProcess,
}

impl Server {
    fn start(home: &Path, db: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.arg("serve")
            .env_clear()
            .env("HOME", home)
            .env("NODETOOL_CONFIG_DIR", home)
            .env("ASSET_FOLDER", home.join("assets"))
            .env("DB_PATH", db)
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        let proc = ServeProcess::start(cmd, HANG);
        Self { proc }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    async fn submit(&self, request: &Value) -> String {
        let resp = reqwest::Client::new()
            .post(self.url("/api/jobs"))
            .json(request)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// The job's `job_update` events (SSE from the start) up to the terminal one.
    async fn job_updates(&self, id: &str) -> Vec<Value> {
        let text = tokio::time::timeout(HANG, async {
            reqwest::get(self.url(&format!("/api/jobs/{id}/events")))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await
        .expect("the job's events did not end");
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap())
            .filter(|v| v["type"] == "job_update")
            .collect()
    }

    async fn record(&self, id: &str) -> Value {
        reqwest::get(self.url(&format!("/api/jobs/{id}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Sleeps `seconds`, then outputs a string of `bytes` bytes.
fn request(seconds: f64, bytes: u64) -> Value {
    json!({
        "graph": {
            "nodes": [
                {"id": "wait", "type": "nodetool.test.Sleep", "data": {"seconds": seconds, "value": bytes}},
                {"id": "big", "type": "nodetool.test.BigOutput", "data": {}},
                {"id": "out", "type": "nodetool.output.Output", "data": {"name": "text"}},
            ],
            "edges": [
                {"id": "e1", "source": "wait", "sourceHandle": "output", "target": "big", "targetHandle": "bytes"},
                {"id": "e2", "source": "big", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
            ],
        },
        "execution_strategy": "threaded",
    })
}

const BIG: u64 = 2 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_cannot_be_written_is_reported_unavailable() {
    let home = tempfile::tempdir().unwrap();
    let (Some(roomy), Some(full)) = (
        Tmpfs::mount(home.path(), "roomy", "32m"),
        Tmpfs::mount(home.path(), "full", "32m"),
    ) else {
        nodetool_testkit::skip_or_fail(TEST, "cannot mount a tmpfs (needs root)");
        return;
    };

    // With room: the job completes and its 2 MiB result is recorded.
    let server = Server::start(home.path(), &roomy.dir.join("nodetool.db"));
    let id = server.submit(&request(0.5, BIG)).await;
    let updates = server.job_updates(&id).await;
    let last = updates.last().unwrap();
    assert_eq!(last["status"], "completed", "{}", last["error"]);
    let rec = server.record(&id).await;
    assert_eq!(rec["status"], "completed");
    assert_eq!(
        rec["result"]["text"][0].as_str().map(str::len),
        Some(BIG as usize)
    );
    drop(server);

    // Full disk while the job runs: never `completed`.
    let server = Server::start(home.path(), &full.dir.join("nodetool.db"));
    let id = server.submit(&request(2.0, BIG)).await;
    let filler = full.fill();
    let updates = server.job_updates(&id).await;
    assert!(
        updates.iter().all(|u| u["status"] != "completed"),
        "a completion that was never recorded was reported: {:?}",
        updates.iter().map(|u| &u["status"]).collect::<Vec<_>>()
    );
    let last = updates.last().unwrap();
    assert_eq!(last["status"], "failed", "{}", last["error"]);
    let error = last["error"].as_str().unwrap();
    assert!(error.starts_with("unavailable:"), "{error}");
    assert!(error.contains("could not be recorded"), "{error}");
    assert!(last["result"].is_null(), "a result was reported");
    // The record tells the same.
    let rec = server.record(&id).await;
    assert_eq!(rec["status"], "failed", "{}", rec["error"]);
    assert_eq!(rec["error"].as_str(), Some(error));

    // The server survives; with room again the next job completes.
    std::fs::remove_file(filler).unwrap();
    let status = reqwest::get(server.url("/health")).await.unwrap().status();
    assert_eq!(status.as_u16(), 200);
    let id = server.submit(&request(0.0, 16)).await;
    let updates = server.job_updates(&id).await;
    assert_eq!(updates.last().unwrap()["status"], "completed");
    drop(server);
}
