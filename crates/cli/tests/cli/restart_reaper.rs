//! Issue 15 item 13 through the real `nodetool serve` binary: what a restarting server kills.
//!
//! - A stored worker pid is killed only when that process is still the job's worker: a process
//!   that took the pid over (even one whose command line says `worker`, which the old check
//!   trusted) survives; the job's real leftover worker group is killed.
//! - On a shared Docker engine a server reaps only its own containers: another instance's
//!   job containers survive our restart, and so does one of our instance whose owner process
//!   still runs; ours (labelled with the instance id kept next to the database) whose process is
//!   gone, and exited containers of no instance, are removed. A container of no instance that
//!   was just created (about to start) is not: other tests' servers start beside this one and
//!   used to kill it.
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
            // The reaper's decision for every container, for a failure's message.
            .env("RUST_LOG", "warn,nodetool_workers=debug,nodetool_cli=info")
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

/// What a test container is when the server restarts.
#[derive(Clone, Copy, PartialEq)]
enum Left {
    /// `sleep 300`, started.
    Running,
    /// Started and ended (`sleep 0`, waited for).
    Exited,
    /// Created, never started.
    Created,
}

fn container(image: &str, labels: &[(&str, &str)], left: Left) -> String {
    let mut args = vec!["create".to_owned()];
    for (k, v) in labels {
        args.push("--label".to_owned());
        args.push(format!("{k}={v}"));
    }
    let seconds = if left == Left::Exited { "0" } else { "300" };
    args.extend([
        image.to_owned(),
        "/usr/bin/sleep".to_owned(),
        seconds.to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = docker(&args);
    assert!(ok, "docker create: {out}");
    let id = out.trim().to_owned();
    if left != Left::Created {
        let (ok, out) = docker(&["start", &id]);
        assert!(ok, "docker start: {out}");
    }
    if left == Left::Exited {
        let (ok, out) = docker(&["wait", &id]);
        assert!(ok && out.trim() == "0", "docker wait: {out}");
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
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1))
        .unwrap_or(0);
    let job = nodetool_workers::docker::JOB_LABEL;
    let inst = nodetool_workers::docker::INSTANCE_LABEL;
    let foreign = container(
        &image,
        &[(job, "j1"), (inst, "another-server")],
        Left::Running,
    );
    let foreign_exited = container(
        &image,
        &[(job, "j2"), (inst, "another-server")],
        Left::Exited,
    );
    let legacy_running = container(&image, &[(job, "j3")], Left::Running);
    let legacy_exited = container(&image, &[(job, "j4")], Left::Exited);
    let ours_running = container(&image, &[(job, "j5"), (inst, mine)], Left::Running);
    let ours_exited = container(&image, &[(job, "j6"), (inst, mine)], Left::Exited);
    // Made a moment ago by an older server, about to start.
    let legacy_created = container(&image, &[(job, "j7")], Left::Created);
    // Ours, made by a process that still runs (this test, standing in for a `nodetool run` on
    // the same config folder) and by one that is gone (a pid above any pid_max).
    let me = nodetool_exec::reap::this_process();
    let owner = nodetool_workers::docker::OWNER_LABEL;
    let ours_live_owner = container(
        &image,
        &[(job, "j8"), (inst, mine), (owner, me.as_str())],
        Left::Running,
    );
    let ours_dead_owner = container(
        &image,
        &[(job, "j9"), (inst, mine), (owner, "4194305:12345")],
        Left::Running,
    );
    for c in [
        &foreign,
        &legacy_running,
        &ours_running,
        &ours_live_owner,
        &ours_dead_owner,
    ] {
        assert_eq!(
            state(c),
            "running",
            "a started container is not running before the restart"
        );
    }

    let server = Server::start(dir.path());
    server.answers().await;
    // The reaper runs before the server listens.
    let kept = [
        &foreign,
        &foreign_exited,
        &legacy_running,
        &legacy_created,
        &ours_live_owner,
    ];
    let removed = [
        &legacy_exited,
        &ours_running,
        &ours_exited,
        &ours_dead_owner,
    ];
    let results: Vec<(bool, bool)> = kept
        .iter()
        .map(|c| (true, exists(c)))
        .chain(removed.iter().map(|c| (false, exists(c))))
        .collect();
    // What happened to a container whose fate is wrong: a death before the reap (no `kill`
    // event) is something else on the host; a `kill` + `destroy` is the reaper.
    let history: Vec<String> = kept
        .iter()
        .chain(removed.iter())
        .zip(&results)
        .filter(|(_, (want, got))| want != got)
        .map(|(id, _)| events_since(id, since))
        .collect();
    for id in kept.iter().chain(removed.iter()) {
        let _ = docker(&["rm", "-f", id]);
    }
    let _ = docker(&["rmi", "-f", &image]);
    for (i, (want, got)) in results.iter().enumerate() {
        assert_eq!(
            want,
            got,
            "container {i} (kept: foreign, foreign exited, legacy running, legacy created, ours \
             of a live process; removed: legacy exited, ours running, ours exited, ours of a \
             gone process)\nevents: {history:?}\nserver log:\n{}",
            server.proc.log()
        );
    }
    server.answers().await;
}

/// `docker inspect`'s `State.Status` of a container.
fn state(id: &str) -> String {
    docker(&["inspect", "--format", "{{.State.Status}}", id])
        .1
        .trim()
        .to_owned()
}

/// The engine's events for container `id` since `since` (unix seconds), one per line.
fn events_since(id: &str, since: u64) -> String {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 1)
        .unwrap_or(since);
    let short = &id[..id.len().min(12)];
    let (_, out) = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={id}"),
        "--format",
        "{{.TimeNano}} {{.Action}} exitCode={{index .Actor.Attributes \"exitCode\"}} signal={{index .Actor.Attributes \"signal\"}}",
    ]);
    format!("{short}: {out}")
}
