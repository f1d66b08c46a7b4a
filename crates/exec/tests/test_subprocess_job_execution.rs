//! Subprocess strategy: the shared suite through a real worker binary, plus broken workers.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::strategy_suite::{self, one, run_job};
use nodetool_engine::Status;
use nodetool_exec::subprocess::{allowed_env, SubprocessConfig, SubprocessStrategy};
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{ExecutionStrategy, JobSpec, WorkerRef};
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
    let reference: Arc<dyn ExecutionStrategy> =
        Arc::new(ThreadedStrategy::new(common::test_engine(dir.path()).await, 2).unwrap());
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
    use nodetool_exec::protocol::{encode_frame, ChildFrame};
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
