//! A manager process killed mid-job (SIGKILL, no chance to clean up): the next manager on the
//! same database marks the job failed with a clear reason, and no worker is left running.
//!
//! The test runs itself twice: as the parent, and (with `NODETOOL_RESTART_CHILD_DB` set) as the
//! child manager that the parent kills.

use nodetool_testkit::ids::{jid, uid};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodetool_engine::Status;
use nodetool_exec::{
    ExecutionStrategy, JobExecutionManager, JobStore, ManagerConfig, RunJobRequest, WorkerRef,
};
use nodetool_workers::subprocess::{SubprocessConfig, SubprocessStrategy};
use serde_json::json;

const WORKER: &str = env!("CARGO_BIN_EXE_nodetool-exec-worker");
const CHILD_DB: &str = "NODETOOL_RESTART_CHILD_DB";
// The name libtest knows it by in the one `workers` test binary, for `--exact`.
const TEST_NAME: &str = "test_manager_restart::a_killed_manager_is_reconciled_on_restart";

async fn manager(dir: &std::path::Path) -> JobExecutionManager {
    manager_with(
        dir,
        Arc::new(SubprocessStrategy::new(subprocess_config(dir, 0))),
    )
    .await
}

fn subprocess_config(dir: &std::path::Path, warm_workers: usize) -> SubprocessConfig {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    env.insert("ENV".to_owned(), "test".to_owned());
    env.insert("NODETOOL_CONFIG_DIR".to_owned(), dir.display().to_string());
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = env;
    cfg.scratch_root = Some(dir.to_path_buf());
    cfg.warm_workers = warm_workers;
    cfg
}

async fn manager_with(dir: &std::path::Path, s: Arc<dyn ExecutionStrategy>) -> JobExecutionManager {
    let strategies = vec![s];
    let store = JobStore::open(&dir.join("jobs.db")).await.expect("store");
    let config = ManagerConfig {
        default_strategy: nodetool_exec::StrategyKind::Subprocess,
        ..ManagerConfig::default()
    };
    JobExecutionManager::new(store, strategies, config)
        .await
        .expect("manager")
}

/// A live, non-zombie process?
fn alive(pid: u32) -> bool {
    !nodetool_exec::reap::exiting(pid)
}

/// Child mode: start a long job, report it, then wait to be killed.
async fn child(db_dir: &str) -> ! {
    let dir = std::path::Path::new(db_dir);
    let m = manager(dir).await;
    let (id, pid) = long_job(&m).await;
    println!("READY {id} {pid}");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Submits a two-minute job; its id and worker pid once it runs.
async fn long_job(m: &JobExecutionManager) -> (nodetool_core::JobId, u32) {
    let request = RunJobRequest {
        graph: Some(nodetool_testkit::strategy_suite::one(
            "nodetool.test.Sleep",
            json!({"seconds": 120, "value": 1}),
        )),
        execution_strategy: Some("subprocess".into()),
        ..Default::default()
    };
    let id = m.submit(request, &uid("u")).await.expect("submit");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = m.get(&id).await.expect("get").expect("record");
        if let (Status::Running, Some(WorkerRef::Pid(pid))) = (record.status, &record.worker) {
            return (id, *pid);
        }
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manager_is_reconciled_on_restart() {
    if let Ok(db_dir) = std::env::var(CHILD_DB) {
        child(&db_dir).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut manager_process = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DB, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child manager");
    let stdout = manager_process.stdout.take().expect("stdout");
    let (job_id, worker_pid) = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            // libtest prints "test NAME ... " without a newline first: look inside the line.
            let rest = line.split_once("READY ")?.1.to_owned();
            let (id, pid) = rest.split_once(' ')?;
            Some((id.to_owned(), pid.parse::<u32>().ok()?))
        })
        .expect("the child manager reports its running job");
    assert!(alive(worker_pid), "the worker runs while its manager does");

    // Kill the manager the hard way: no shutdown, no chance to update the record.
    manager_process.kill().expect("SIGKILL the manager");
    manager_process.wait().expect("reap the manager");
    let store = JobStore::open(&dir.path().join("jobs.db"))
        .await
        .expect("store");
    let before = store
        .get(&jid(&job_id))
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        before.status,
        Status::Running,
        "the dead manager left the row running"
    );
    drop(store);
    // The worker's stdin closed with its parent: by the protocol that cancels its job, so it is
    // gone or going; if it lingers, the restarted manager kills its recorded process group.

    let m = manager(dir.path()).await;
    let after = m.get(&jid(&job_id)).await.expect("get").expect("record");
    assert_eq!(after.status, Status::Failed);
    let error = after.error.unwrap_or_default();
    assert!(error.contains("restarted"), "the reason is clear: {error}");
    assert!(after.finished_at.is_some());

    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(worker_pid) {
        assert!(
            Instant::now() < deadline,
            "the leftover worker process group {worker_pid} was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WARM_CHILD_DB: &str = "NODETOOL_RESTART_WARM_CHILD_DB";
const WARM_TEST_NAME: &str = "test_manager_restart::a_killed_server_leaves_no_warm_worker";

/// Warm child mode: a job on a warm worker, two more idle; report the three pids, then wait.
async fn warm_child(db_dir: &str) -> ! {
    let dir = std::path::Path::new(db_dir);
    let s = Arc::new(SubprocessStrategy::new(subprocess_config(dir, 2)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.warm_pids().len() < 2 {
        assert!(Instant::now() < deadline, "the pool never filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = manager_with(dir, s.clone()).await;
    let (_, busy) = long_job(&m).await;
    while s.warm_pids().len() < 2 {
        assert!(Instant::now() < deadline, "the pool never refilled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = s.warm_pids();
    println!("WARM {busy} {} {}", idle[0], idle[1]);
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// A server killed with warm workers (one running a job, two idle) leaves none of them running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_leaves_no_warm_worker() {
    if let Ok(db_dir) = std::env::var(WARM_CHILD_DB) {
        warm_child(&db_dir).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            WARM_TEST_NAME,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(WARM_CHILD_DB, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child server");
    let stdout = server.stdout.take().expect("stdout");
    let pids: Vec<u32> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.split_once("WARM ")?.1.to_owned();
            rest.split_whitespace()
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()
        })
        .expect("the child server reports its warm workers");
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter().all(|p| alive(*p)),
        "its workers run while it does"
    );
    server.kill().expect("SIGKILL the server");
    server.wait().expect("reap the server");
    // Their stdin closed with their server, so they exit by themselves; a restarted manager reaps
    // any that would linger (the busy one by its job record, idle ones by their server's identity).
    let _m = manager(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(pid) = pids.iter().find(|p| alive(**p)) {
        assert!(
            Instant::now() < deadline,
            "the warm worker {pid} outlived its server: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
