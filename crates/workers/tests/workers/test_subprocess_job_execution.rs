//! Subprocess strategy: the shared suite through a real worker binary, plus broken workers.

use nodetool_testkit::ids::uid;
use std::collections::BTreeMap;
use std::sync::Arc;

use nodetool_engine::Status;
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{ExecutionStrategy, JobSpec, WorkerRef};
use nodetool_testkit::strategy_suite::{self, one, run_job};
use nodetool_workers::subprocess::{allowed_env, SubprocessConfig, SubprocessStrategy};
use serde_json::json;

const WORKER: &str = env!("CARGO_BIN_EXE_nodetool-exec-worker");

fn worker_env(dir: &std::path::Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    env.insert("ENV".to_owned(), "test".to_owned());
    env.insert("NODETOOL_CONFIG_DIR".to_owned(), dir.display().to_string());
    env
}

fn subprocess(dir: &std::path::Path) -> Arc<dyn ExecutionStrategy> {
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = worker_env(dir);
    cfg.scratch_root = Some(dir.to_path_buf());
    Arc::new(SubprocessStrategy::new(cfg))
}

fn fake_worker(dir: &std::path::Path, script: &str) -> Arc<dyn ExecutionStrategy> {
    let mut cfg = SubprocessConfig::new("/bin/sh");
    cfg.args = vec!["-c".to_owned(), script.to_owned()];
    cfg.env = worker_env(dir);
    Arc::new(SubprocessStrategy::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_strategy_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let reference: Arc<dyn ExecutionStrategy> = Arc::new(
        ThreadedStrategy::new(
            nodetool_testkit::strategy_suite::test_engine(dir.path()).await,
            2,
        )
        .unwrap(),
    );
    strategy_suite::run(subprocess(dir.path()), reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_dir_is_removed_and_pid_reported() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = worker_env(dir.path());
    cfg.scratch_root = Some(scratch.clone());
    let s = SubprocessStrategy::new(cfg);
    let spec = JobSpec::new(one("nodetool.test.Sleep", json!({"value": 1})));
    let mut h = s
        .start(spec, nodetool_engine::VecSink::new())
        .await
        .unwrap();
    assert!(matches!(h.worker(), Some(WorkerRef::Pid(p)) if *p > 0));
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 1);
    assert_eq!(h.wait().await.status, Status::Completed);
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_workers_fail_the_job_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "echo 'hello, I am not a worker'; sleep 30",
            "not speaking the worker protocol",
        ),
        ("exit 3", "exited with code 3"),
        ("yes", "exceeds the limit"),
        ("head -c 1000000 /dev/zero", "garbled frame"),
        (
            "printf '\\000\\000\\001\\000abc'",
            "stream ended inside a frame",
        ),
        ("kill -SEGV $$", "SIGSEGV"),
    ];
    for (script, want) in cases {
        let s = fake_worker(dir.path(), script);
        let spec = JobSpec::new(one("nodetool.test.Sleep", json!({})));
        let (o, ev) = tokio::time::timeout(std::time::Duration::from_secs(30), run_job(&s, spec))
            .await
            .unwrap_or_else(|_| panic!("{script}: hung"));
        assert_eq!(o.status, Status::Failed, "{script}");
        let text = o.error_text().unwrap_or_default();
        assert!(text.contains(want), "{script}: {text}");
        assert!(
            matches!(ev.last().map(|e| &e.event),
            Some(nodetool_engine::Event::JobUpdate(u)) if u.status == Status::Failed),
            "{script}"
        );
    }
}

/// A cancel that arrives while a frame is half read must not throw the reader out of step: the
/// rest of the frame still decodes (the worker here ignores SIGTERM and finishes its frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_frame_is_half_read_keeps_the_stream_in_step() {
    use nodetool_workers::protocol::{encode_frame, ChildFrame};
    let dir = tempfile::tempdir().unwrap();
    // The worker's own outcome, marked so the test can tell it from one the parent made up.
    let mut sent = nodetool_exec::JobOutcome::cancelled();
    sent.result
        .insert("marker".to_owned(), json!(["from the worker"]));
    let frame = encode_frame(&ChildFrame::Outcome(Box::new(sent.clone()))).unwrap();
    let octal = |b: &[u8]| b.iter().map(|b| format!("\\{b:03o}")).collect::<String>();
    let script = format!(
        "trap '' TERM; printf '{}'; sleep 1; printf '{}'; sleep 1",
        octal(&frame[..2]),
        octal(&frame[2..])
    );
    let s = fake_worker(dir.path(), &script);
    let spec = JobSpec::new(one("nodetool.test.Sleep", json!({})));
    let sink = nodetool_engine::VecSink::new();
    let mut h = s.start(spec, sink.clone()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    h.cancel();
    let o = tokio::time::timeout(std::time::Duration::from_secs(30), h.wait())
        .await
        .expect("hung");
    assert_eq!(o.status, Status::Cancelled, "{:?}", o.error_text());
    assert_eq!(o.result, sent.result, "the worker's frame was lost: {o:?}");
}

#[test]
fn env_allow_list_drops_secrets_and_settings() {
    let env: BTreeMap<String, String> = [
        ("PATH", "/bin"),
        ("HOME", "/home/u"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("OPENAI_API_KEY", "x"),
        ("NODETOOL_CONFIG_DIR", "/c"),
        ("NODETOOL_SERVER_AUTH_TOKEN", "x"),
        ("S3_ENDPOINT_URL", "http://s3"),
        ("S3_ACCESS_KEY_ID", "AKIA"),
        ("ASSET_BUCKET", "assets"),
        ("MEMCACHE_HOST", "cache"),
        ("NODETOOL_STORAGE_PUBLIC_URL", "http://x"),
        ("SUPABASE_URL", "http://supabase"),
        ("RUST_LOG", "debug"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let kept: Vec<String> = allowed_env(&env, &[]).into_keys().collect();
    // No setting reaches a worker: its storage and cache are the parent's, through calls.
    assert_eq!(kept, vec!["HOME", "PATH", "RUST_LOG"]);
}

// --- The warm pool (`SubprocessConfig::warm_workers`). ---

fn warm(dir: &std::path::Path, n: usize) -> Arc<SubprocessStrategy> {
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = worker_env(dir);
    cfg.scratch_root = Some(dir.to_path_buf());
    cfg.warm_workers = n;
    Arc::new(SubprocessStrategy::new(cfg))
}

/// A live, non-zombie process?
fn alive(pid: u32) -> bool {
    !nodetool_exec::reap::exiting(pid)
}

/// Waits (a hang guard of 30 s, not a timing claim) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("not within 30 s: {what}");
}

/// The pool's workers, once it holds `n`.
async fn full_pool(s: &SubprocessStrategy, n: usize) -> Vec<u32> {
    until("the pool fills", || s.warm_pids().len() == n).await;
    s.warm_pids()
}

fn pid_of(h: &nodetool_exec::JobHandle) -> u32 {
    match h.worker() {
        Some(WorkerRef::Pid(p)) => *p,
        other => panic!("no worker pid: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_strategy_with_warm_workers_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let reference: Arc<dyn ExecutionStrategy> = Arc::new(
        ThreadedStrategy::new(
            nodetool_testkit::strategy_suite::test_engine(dir.path()).await,
            2,
        )
        .unwrap(),
    );
    let s = warm(dir.path(), 2);
    full_pool(&s, 2).await;
    strategy_suite::run(s, reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_worker_serves_one_job_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 2);
    let idle = full_pool(&s, 2).await;
    let mut pids = Vec::new();
    for value in [1, 2] {
        let spec = JobSpec::new(one("nodetool.test.Sleep", json!({"value": value})));
        let mut h = s
            .start(spec, nodetool_engine::VecSink::new())
            .await
            .unwrap();
        let pid = pid_of(&h);
        let o = h.wait().await;
        assert_eq!(o.status, Status::Completed, "{:?}", o.error_text());
        assert_eq!(o.result["result"], json!([value]));
        assert!(!alive(pid), "the worker {pid} exits after its one job");
        assert!(
            !s.warm_pids().contains(&pid),
            "and never goes back to the pool"
        );
        pids.push(pid);
    }
    assert_eq!(
        pids, idle,
        "both jobs ran on warm workers, oldest first, one each"
    );
    assert_ne!(pids[0], pids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_jobs_never_share_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 2);
    full_pool(&s, 2).await;
    let mut pids = std::collections::HashSet::new();
    // Side by side, then one after the other, alternating users.
    for round in 0..2 {
        let mut handles = Vec::new();
        for user in ["alice", "bob"] {
            let mut spec = JobSpec::new(one(
                "nodetool.test.Sleep",
                json!({"seconds": 0.2, "value": user}),
            ));
            spec.user_id = uid(user);
            let h = s
                .start(spec, nodetool_engine::VecSink::new())
                .await
                .unwrap();
            assert!(
                pids.insert(pid_of(&h)),
                "round {round}: {user}'s job got a used process"
            );
            handles.push((user, h));
        }
        for (user, mut h) in handles {
            let o = h.wait().await;
            assert_eq!(o.status, Status::Completed, "{user}: {:?}", o.error_text());
            assert_eq!(o.result["result"], json!([user]));
        }
    }
    for user in ["alice", "bob", "alice", "bob"] {
        let mut spec = JobSpec::new(one("nodetool.test.Sleep", json!({"value": user})));
        spec.user_id = uid(user);
        let mut h = s
            .start(spec, nodetool_engine::VecSink::new())
            .await
            .unwrap();
        assert!(pids.insert(pid_of(&h)), "{user}'s job got a used process");
        assert_eq!(h.wait().await.status, Status::Completed);
    }
    assert_eq!(pids.len(), 8, "eight jobs, eight processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_limits_apply_on_a_warm_worker() {
    const MIB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 1);
    // The limits are on the running process: /proc shows them while the job runs.
    let idle = full_pool(&s, 1).await;
    let mut spec = JobSpec::new(one(
        "nodetool.test.Sleep",
        json!({"seconds": 1, "value": 1}),
    ));
    spec.resource_limits.memory_bytes = Some(300 * MIB);
    spec.resource_limits.open_files = Some(200);
    let mut h = s
        .start(spec, nodetool_engine::VecSink::new())
        .await
        .unwrap();
    let pid = pid_of(&h);
    assert_eq!(vec![pid], idle, "the job ran on the warm worker");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert!(
        line("Max data size").contains(&format!("{0} {0}", 300 * MIB)),
        "{limits}"
    );
    assert!(line("Max open files").contains("200 200"), "{limits}");
    assert_eq!(h.wait().await.status, Status::Completed);

    // And they bite: an over-allocating job on a warm worker is killed for memory.
    let idle = full_pool(&s, 1).await;
    let mut spec = JobSpec::new(one("nodetool.test.Allocate", json!({"megabytes": 400})));
    spec.resource_limits.memory_bytes = Some(256 * MIB);
    let mut h = s
        .start(spec, nodetool_engine::VecSink::new())
        .await
        .unwrap();
    assert_eq!(vec![pid_of(&h)], idle, "the job ran on the warm worker");
    let o = h.wait().await;
    assert_eq!(o.status, Status::Failed);
    let text = o.error_text().unwrap_or_default();
    assert!(text.contains("out of memory"), "{text}");
    // The next job's worker has none of that job's limits.
    let idle = full_pool(&s, 1).await;
    let spec = JobSpec::new(one("nodetool.test.Allocate", json!({"megabytes": 400})));
    let mut h = s
        .start(spec, nodetool_engine::VecSink::new())
        .await
        .unwrap();
    assert_eq!(vec![pid_of(&h)], idle);
    let o = h.wait().await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_warm_workers_die_with_their_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 2);
    let idle = full_pool(&s, 2).await;
    assert!(idle.iter().all(|p| alive(*p)));
    drop(s);
    until("the idle workers are gone", || {
        idle.iter().all(|p| !alive(*p))
    })
    .await;
    // Their scratch directories go with them.
    until("the scratch directories are removed", || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("nodetool-job-"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_shutdown_kills_the_idle_warm_workers() {
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 2);
    let idle = full_pool(&s, 2).await;
    let store = nodetool_exec::JobStore::open(&dir.path().join("jobs.db"))
        .await
        .unwrap();
    let m = nodetool_exec::JobExecutionManager::new(
        store,
        vec![s.clone() as Arc<dyn ExecutionStrategy>],
        nodetool_exec::ManagerConfig {
            default_strategy: nodetool_exec::StrategyKind::Subprocess,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let request = nodetool_exec::RunJobRequest {
        graph: Some(one("nodetool.test.Sleep", json!({"value": 1}))),
        ..Default::default()
    };
    let id = m.submit(request, &uid("u")).await.unwrap();
    assert_eq!(m.wait(&id).await.unwrap().status, Status::Completed);
    let idle = {
        let mut now = full_pool(&s, 2).await;
        now.extend(idle);
        now
    };
    m.shutdown(std::time::Duration::from_secs(5)).await;
    // The strategy is still referenced here: the shutdown itself killed them.
    until("the idle workers are gone", || {
        idle.iter().all(|p| !alive(*p))
    })
    .await;
    assert!(s.warm_pids().is_empty(), "and the pool does not refill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_worker_killed_while_idle_is_replaced() {
    use nix::sys::signal::{kill, Signal};
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 2);
    let idle = full_pool(&s, 2).await;
    let victim = idle[0];
    kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    until("the killed worker is gone", || !alive(victim)).await;
    let spec = JobSpec::new(one("nodetool.test.Sleep", json!({"value": 5})));
    let mut h = s
        .start(spec, nodetool_engine::VecSink::new())
        .await
        .unwrap();
    // A live worker took it: the other idle one, or (had the pool noticed the death and
    // refilled meanwhile) a new one — never the dead one.
    let took = pid_of(&h);
    assert_ne!(took, victim, "the killed worker cannot run a job");
    let o = h.wait().await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error_text());
    assert_eq!(o.result["result"], json!([5]));
    let refilled = full_pool(&s, 2).await;
    assert!(
        !refilled.contains(&victim) && !refilled.contains(&took),
        "two workers that ran nothing yet: {refilled:?} (was {idle:?}, the job took {took})"
    );
    assert!(refilled.iter().all(|p| alive(*p)));
}

/// A limit the running warm worker cannot take is not dropped: the job goes to a cold start,
/// which sets it before exec and so fails the same way (here: more open files than the kernel
/// allows any process, `fs.nr_open`), and the warm worker is thrown away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_a_warm_worker_cannot_take_falls_back_to_a_cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = warm(dir.path(), 1);
    let idle = full_pool(&s, 1).await;
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut spec = JobSpec::new(one("nodetool.test.Sleep", json!({"value": 1})));
    spec.resource_limits.open_files = Some(nr_open + 1);
    let err = s
        .start(spec, nodetool_engine::VecSink::new())
        .await
        .expect_err("no worker can run under that limit");
    assert!(err.to_string().contains("cannot start the worker"), "{err}");
    until("the warm worker that could not take it is gone", || {
        !alive(idle[0])
    })
    .await;
    // The pool is whole again and serves the next job.
    full_pool(&s, 1).await;
    let (o, _) = run_job(
        &(s as Arc<dyn ExecutionStrategy>),
        JobSpec::new(one("nodetool.test.Sleep", json!({"value": 2}))),
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error_text());
}
