//! Submit→completed latency of a trivial workflow: threaded (through the manager, with the
//! SQLite store) and subprocess (strategy only; needs the `nodetool-exec-worker` binary built).
//! `cargo bench -p nodetool-exec --bench exec`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodetool_engine::{Engine, Graph, NullSink};
use nodetool_exec::subprocess::{SubprocessConfig, SubprocessStrategy};
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{
    ExecutionStrategy, JobExecutionManager, JobSpec, JobStore, ManagerConfig, RunJobRequest,
};
use serde_json::json;

fn graph() -> Graph {
    serde_json::from_value(json!({"nodes": [
        {"id": "n", "type": "nodetool.constant.Integer", "data": {"value": 1}},
        {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}],
        "edges": [{"id": "e", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"}]}))
    .unwrap()
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
        let settings =
            nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path()))
                .unwrap();
        let resources = nodetool_runtime::Resources::new(settings, Default::default());
        let engine = Engine::new(
            Arc::new(nodetool_nodes::registry()),
            resources.engine_resources().await.unwrap(),
        );
        let threaded: Arc<dyn ExecutionStrategy> =
            Arc::new(ThreadedStrategy::new(engine, 2).unwrap());
        let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
        let m = JobExecutionManager::new(store, vec![threaded], ManagerConfig::default())
            .await
            .unwrap();
        let req = RunJobRequest {
            graph: Some(graph()),
            ..Default::default()
        };

        let mut lat = vec![];
        for _ in 0..2000 {
            let t = Instant::now();
            let id = m.submit(req.clone(), "u").await.unwrap();
            m.wait(&id).await.unwrap();
            lat.push(t.elapsed());
        }
        println!(
            "threaded submit->completed: p50 {:?} p99 {:?}",
            pct(lat.clone(), 0.5),
            pct(lat, 0.99)
        );
        let n = 4000;
        let t = Instant::now();
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(m.submit(req.clone(), "u").await.unwrap());
        }
        for id in &ids {
            m.wait(id).await.unwrap();
        }
        println!(
            "threaded throughput: {:.0} jobs/s ({n} jobs, 16 concurrent)",
            n as f64 / t.elapsed().as_secs_f64()
        );

        let worker = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/release/nodetool-exec-worker");
        let worker = if worker.exists() {
            worker
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/debug/nodetool-exec-worker")
        };
        let mut cfg = SubprocessConfig::new(&worker);
        cfg.args = vec![];
        cfg.env = [("ENV", "test"), ("PATH", "/usr/bin:/bin")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cfg.env.insert(
            "NODETOOL_CONFIG_DIR".into(),
            dir.path().display().to_string(),
        );
        let sub = SubprocessStrategy::new(cfg);
        let mut lat = vec![];
        for _ in 0..100 {
            let t = Instant::now();
            let mut h = sub
                .start(JobSpec::new(graph()), Arc::new(NullSink))
                .await
                .unwrap();
            let o = h.wait().await;
            assert_eq!(o.status, nodetool_engine::Status::Completed, "{o:?}");
            lat.push(t.elapsed());
        }
        println!(
            "subprocess ({}) start->completed: p50 {:?} p99 {:?}",
            worker.display(),
            pct(lat.clone(), 0.5),
            pct(lat, 0.99)
        );

        // Memory per idle job: jobs parked in a Sleep node. Threaded: growth of this process's
        // RSS per job; subprocess: the RSS of one parked worker process.
        let sleeping = RunJobRequest {
            graph: Some(sleep_graph()),
            ..Default::default()
        };
        let idle = 200;
        let m = JobExecutionManager::new(
            JobStore::open(&dir.path().join("idle.db")).await.unwrap(),
            vec![Arc::new(
                ThreadedStrategy::new(
                    Engine::new(
                        Arc::new(nodetool_nodes::registry()),
                        resources.engine_resources().await.unwrap(),
                    ),
                    2,
                )
                .unwrap(),
            ) as Arc<dyn ExecutionStrategy>],
            ManagerConfig {
                max_concurrent_jobs: idle,
                ..ManagerConfig::default()
            },
        )
        .await
        .unwrap();
        let before = rss_kib(std::process::id());
        let mut ids = Vec::with_capacity(idle);
        for _ in 0..idle {
            ids.push(m.submit(sleeping.clone(), "u").await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = rss_kib(std::process::id());
        println!(
            "threaded idle job memory: {:.1} KiB per job ({idle} jobs parked in Sleep)",
            (during.saturating_sub(before)) as f64 / idle as f64
        );
        for id in &ids {
            m.cancel(id).await.unwrap();
        }
        let mut h = sub
            .start(JobSpec::new(sleep_graph()), Arc::new(NullSink))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(nodetool_exec::WorkerRef::Pid(pid)) = h.worker() {
            println!(
                "subprocess idle job memory: {} KiB RSS of one parked worker",
                rss_kib(*pid)
            );
        }
        h.cancel();
        h.wait().await;
    });
}

fn sleep_graph() -> Graph {
    serde_json::from_value(json!({"nodes": [
        {"id": "s", "type": "nodetool.test.Sleep", "data": {"seconds": 30, "value": 1}},
        {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}],
        "edges": [{"id": "e", "source": "s", "sourceHandle": "output", "target": "out", "targetHandle": "value"}]}))
    .unwrap()
}

/// Resident set size of a process, KiB (`VmRSS` in /proc).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
