//! Issue 15 item 13 through the real `nodetool serve` binary: what a restarting server kills.
//!
//! - A stored worker pid is killed only when that process is still the job's worker: a process
//!   that took the pid over (even one whose command line says `worker`, which the old check
//!   trusted) survives; the job's real leftover worker group is killed.
//! - On a shared Docker engine a server reaps only its own containers: another instance's
//!   running job container survives our restart; ours (labelled with the instance id kept
//!   next to the database) and exited containers of no instance are removed.
//!
//! After each, the server answers.

#![allow(clippy::unwrap_used)]

use nodetool_testkit::ids::{jid, uid};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nodetool_engine::Status;
use nodetool_exec::{JobRecord, JobStore, StrategyKind, WorkerRef};
use nodetool_testkit::serve_process::ServeProcess;

const WAIT: Duration = Duration::from_secs(60);

struct Server {
    proc: ServeProcess,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.arg("serve")
            .env_clear()
            .env("HOME", dir)
            .env("NODETOOL_CONFIG_DIR", dir)
            .env("DB_PATH", dir.join("nodetool.db"))
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        let proc = ServeProcess::start(cmd, WAIT);
        Self { proc }
    }

    async fn answers(&self) {
        let r = reqwest::get(self.proc.url("/health")).await.unwrap();
        assert!(r.status().is_success(), "health: {}", r.status());
    }
}

/// A process group leader whose command line says `worker`, with `job` in its environment as
/// a subprocess worker has it.
fn fake_worker(job: Option<&str>) -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 120; :", "worker"]).process_group(0);
    if let Some(job) = job {
        cmd.env(nodetool_exec::reap::WORKER_JOB_ENV, job);
    }
    cmd.spawn().unwrap()
}

fn running_job(id: &str, pid: u32) -> JobRecord {
    let now = Utc::now() - chrono::Duration::seconds(30);
    JobRecord {
        id: jid(id),
        user_id: uid("1"),
        workflow_id: String::new(),
        strategy: StrategyKind::Subprocess,
        status: Status::Running,
        params: serde_json::json!({}),
        created_at: now,
        started_at: Some(now),
        finished_at: None,
        error: None,
        result: None,
        worker: Some(WorkerRef::Pid(pid)),
    }
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_worker_pid_is_not_killed_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut stranger = fake_worker(None);
    let mut other_jobs = fake_worker(Some("job-elsewhere"));
    let mut leftover = fake_worker(Some("job-leftover"));
    // Let exec happen, so /proc shows each process's own environment.
    std::thread::sleep(Duration::from_millis(200));
    {
        let store = JobStore::open(&dir.path().join("nodetool.db"))
            .await
            .unwrap();
        // Two records whose pids now belong to other processes, one whose worker is still there.
        store
            .insert(&running_job("job-reused", stranger.id()))
            .await
            .unwrap();
        store
            .insert(&running_job("job-reused-2", other_jobs.id()))
            .await
            .unwrap();
        store
            .insert(&running_job("job-leftover", leftover.id()))
            .await
            .unwrap();
    }
    let server = Server::start(dir.path());
    server.answers().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&mut leftover) {
        assert!(
            Instant::now() < deadline,
            "the job's leftover worker was not killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        alive(&mut stranger),
        "a process that reused a worker pid was killed"
    );
    assert!(alive(&mut other_jobs), "another job's worker was killed");
    // The records are failed either way.
    let store = JobStore::open(&dir.path().join("nodetool.db"))
        .await
        .unwrap();
    for id in ["job-reused", "job-reused-2", "job-leftover"] {
        let r = store.get(&jid(id)).await.unwrap().unwrap();
        assert_eq!(r.status, Status::Failed, "{id}");
    }
    server.answers().await;
    for c in [&mut stranger, &mut other_jobs] {
        // The whole group: sh and its sleep.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", c.id())])
            .status();
        let _ = c.wait();
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output();
    match out {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// A tiny image with `sleep` and its libraries, imported from the host's files.
fn sleep_image(dir: &Path) -> Option<String> {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let ldd = Command::new("ldd").arg(sleep).output().ok()?;
    let mut files = vec![sleep.to_owned()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.to_owned());
        }
    }
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-chf")
        .arg(&tar)
        .args(&files)
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let tag = "nodetool-test-sleep:reaper";
    let (ok, _) = docker(&["import", tar.to_str()?, tag]);
    ok.then(|| tag.to_owned())
}

fn container(image: &str, labels: &[(&str, &str)], start: bool) -> String {
    let mut args = vec!["create".to_owned()];
    for (k, v) in labels {
        args.push("--label".to_owned());
        args.push(format!("{k}={v}"));
    }
    args.extend([
        image.to_owned(),
        "/usr/bin/sleep".to_owned(),
        "300".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = docker(&args);
    assert!(ok, "docker create: {out}");
    let id = out.trim().to_owned();
    if start {
        let (ok, out) = docker(&["start", &id]);
        assert!(ok, "docker start: {out}");
    }
    id
}

fn exists(id: &str) -> bool {
    docker(&["inspect", "--format", "{{.Id}}", id]).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reaps_only_this_instances_containers() {
    const TEST: &str = "a_restart_reaps_only_this_instances_containers";
    if !docker(&["info"]).0 {
        nodetool_testkit::skip_or_fail(TEST, "no Docker engine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = sleep_image(dir.path()) else {
        nodetool_testkit::skip_or_fail(TEST, "cannot import a test image");
        return;
    };
    // Our instance id, as a previous run of this server left it next to the database.
    let mine = "instance-under-test";
    std::fs::write(dir.path().join("nodetool.db.instance"), mine).unwrap();
    let job = nodetool_workers::docker::JOB_LABEL;
    let inst = nodetool_workers::docker::INSTANCE_LABEL;
    let foreign = container(&image, &[(job, "j1"), (inst, "another-server")], true);
    let foreign_exited = container(&image, &[(job, "j2"), (inst, "another-server")], false);
    let legacy_running = container(&image, &[(job, "j3")], true);
    let legacy_exited = container(&image, &[(job, "j4")], false);
    let ours_running = container(&image, &[(job, "j5"), (inst, mine)], true);
    let ours_exited = container(&image, &[(job, "j6"), (inst, mine)], false);

    let server = Server::start(dir.path());
    server.answers().await;
    // The reaper runs before the server listens.
    let kept = [&foreign, &foreign_exited, &legacy_running];
    let removed = [&legacy_exited, &ours_running, &ours_exited];
    let results: Vec<(bool, bool)> = kept
        .iter()
        .map(|c| (true, exists(c)))
        .chain(removed.iter().map(|c| (false, exists(c))))
        .collect();
    for id in kept.iter().chain(removed.iter()) {
        let _ = docker(&["rm", "-f", id]);
    }
    let _ = docker(&["rmi", "-f", &image]);
    for (i, (want, got)) in results.iter().enumerate() {
        assert_eq!(want, got, "container {i} (kept: foreign, foreign exited, legacy running; removed: legacy exited, ours running, ours exited)");
    }
    server.answers().await;
}
