//! Submit→completed latency of a trivial workflow: threaded (through the manager, with the
//! SQLite store) and subprocess (strategy only; needs the `nodetool-exec-worker` binary built),
//! cold (a worker started per job) and warm (pre-started workers, one job each) side by side,
//! with where a cold job's time goes.
//! `cargo bench -p nodetool-exec --bench exec`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodetool_core::UserId;
use nodetool_engine::{Engine, Graph, NullSink};
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{
    ExecutionStrategy, JobExecutionManager, JobSpec, JobStore, ManagerConfig, RunJobRequest,
};
use nodetool_workers::subprocess::{SubprocessConfig, SubprocessStrategy};
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
        let m = JobExecutionManager::new(store, vec![threaded.clone()], ManagerConfig::default())
            .await
            .unwrap();
        let req = RunJobRequest {
            graph: Some(graph()),
            ..Default::default()
        };
        let user = UserId::from("u");

        let mut lat = vec![];
        for _ in 0..2000 {
            let t = Instant::now();
            let id = m.submit(req.clone(), &user).await.unwrap();
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
            ids.push(m.submit(req.clone(), &user).await.unwrap());
        }
        for id in &ids {
            m.wait(id).await.unwrap();
        }
        println!(
            "threaded throughput: {:.0} jobs/s ({n} jobs, 16 concurrent)",
            n as f64 / t.elapsed().as_secs_f64()
        );

        // Drift: 100k jobs back to back on the same manager (default config: finished jobs
        // stay in memory for `retain_finished`), the latency of the first and the last 10k and
        // this process's RSS along the way.
        let drift_n = 100_000;
        let window = 10_000;
        let mut lat = Vec::with_capacity(drift_n);
        let mut rss = vec![("start", rss_kib(std::process::id()))];
        let t = Instant::now();
        for i in 0..drift_n {
            if i == drift_n / 2 {
                rss.push(("middle", rss_kib(std::process::id())));
            }
            let t = Instant::now();
            let id = m.submit(req.clone(), &user).await.unwrap();
            m.wait(&id).await.unwrap();
            lat.push(t.elapsed());
        }
        let took = t.elapsed();
        rss.push(("end", rss_kib(std::process::id())));
        println!(
            "threaded drift, {drift_n} jobs back to back in {took:.1?}: p50 first {window} {:?}, \
             last {window} {:?}; p99 first {:?}, last {:?}; RSS {}",
            pct(lat[..window].to_vec(), 0.5),
            pct(lat[drift_n - window..].to_vec(), 0.5),
            pct(lat[..window].to_vec(), 0.99),
            pct(lat[drift_n - window..].to_vec(), 0.99),
            rss.iter()
                .map(|(at, kib)| format!("{at} {:.1} MiB", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if std::env::args().any(|a| a == "threaded") {
            // `cargo bench -p nodetool-exec --bench exec -- threaded`: only the above.
            return;
        }

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
        let warm_n = 2;
        let sub = SubprocessStrategy::new(cfg.clone());
        let warm = SubprocessStrategy::new(SubprocessConfig {
            warm_workers: warm_n,
            ..cfg.clone()
        });

        // Where a cold job's time goes: a bare fork/exec, the worker's own start and exit
        // (runtime, node registry; stdin at EOF so it exits at once), and the job in-process.
        let rounds = 100;
        let mut bare = vec![];
        let mut worker_start = vec![];
        let mut in_process = vec![];
        for _ in 0..rounds {
            let t = Instant::now();
            tokio::process::Command::new("/bin/true")
                .status()
                .await
                .unwrap();
            bare.push(t.elapsed());
            let t = Instant::now();
            tokio::process::Command::new(&worker)
                .env_clear()
                .envs(&cfg.env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .unwrap();
            worker_start.push(t.elapsed());
            let t = Instant::now();
            let mut h = threaded
                .start(JobSpec::new(graph()), Arc::new(NullSink))
                .await
                .unwrap();
            h.wait().await;
            in_process.push(t.elapsed());
        }
        println!(
            "fork/exec of /bin/true: p50 {:?}; worker start+exit without a request: p50 {:?} \
             p99 {:?}; the job in-process (threaded strategy, no manager): p50 {:?}",
            pct(bare, 0.5),
            pct(worker_start.clone(), 0.5),
            pct(worker_start, 0.99),
            pct(in_process, 0.5)
        );

        // The exit alone: a started, idle process whose stdin is closed, until `wait` returns —
        // `cat` (a small process) and the worker (which ends at EOF before a request).
        let mut exits = Vec::new();
        for program in [std::path::Path::new("/bin/cat"), worker.as_path()] {
            let mut lat = vec![];
            for _ in 0..50 {
                let mut child = tokio::process::Command::new(program)
                    .env_clear()
                    .envs(&cfg.env)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
                let t = Instant::now();
                drop(child.stdin.take());
                child.wait().await.unwrap();
                lat.push(t.elapsed());
            }
            exits.push(pct(lat, 0.5));
        }
        println!(
            "stdin closed -> exited (idle process): cat p50 {:?}, worker p50 {:?}",
            exits[0], exits[1]
        );

        // Cold and warm side by side, alternating, so both see the same machine.
        while warm.warm_pids().len() < warm_n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_rss: Vec<u64> = warm.warm_pids().into_iter().map(rss_kib).collect();
        // Per job: start→first event (the worker has its request and runs the job), start→the
        // worker's terminal event (the job is done), start→outcome (`wait` returns: the worker
        // has exited and its scratch directory is gone).
        // Back to back, and settled: 20 ms before each job (untimed) for the previous worker's
        // exit and the pool's refill, which otherwise share the 2 cores with the timed job.
        let mut pids = std::collections::HashSet::new();
        for (mode, pause) in [
            ("back to back", Duration::ZERO),
            ("settled", Duration::from_millis(20)),
        ] {
            let mut cold_lat = Phases::default();
            let mut warm_lat = Phases::default();
            for _ in 0..200 {
                for (s, lat) in [(&sub, &mut cold_lat), (&warm, &mut warm_lat)] {
                    tokio::time::sleep(pause).await;
                    let stamps = Arc::new(Stamps::default());
                    let t = Instant::now();
                    let mut h = s
                        .start(JobSpec::new(graph()), stamps.clone())
                        .await
                        .unwrap();
                    if let Some(nodetool_exec::WorkerRef::Pid(pid)) = h.worker() {
                        assert!(pids.insert(*pid), "a worker ran two jobs");
                    }
                    let o = h.wait().await;
                    assert_eq!(o.status, nodetool_engine::Status::Completed, "{o:?}");
                    lat.push(t, &stamps);
                }
            }
            let (c50, c99) = (
                pct(cold_lat.done.clone(), 0.5),
                pct(cold_lat.done.clone(), 0.99),
            );
            let (w50, w99) = (
                pct(warm_lat.done.clone(), 0.5),
                pct(warm_lat.done.clone(), 0.99),
            );
            println!(
                "subprocess ({}) start->completed, 200 jobs each, alternating, {mode}: cold p50 \
             {c50:?} p99 {c99:?}; warm ({warm_n} workers) p50 {w50:?} p99 {w99:?}; warm/cold p50 \
             {:.2}",
                worker.display(),
                w50.as_secs_f64() / c50.as_secs_f64()
            );
            for (name, p) in [("cold", &cold_lat), ("warm", &warm_lat)] {
                println!(
                    "  {name} p50: start->first event {:?}, ->terminal event {:?}, ->outcome {:?}",
                    pct(p.first.clone(), 0.5),
                    pct(p.terminal.clone(), 0.5),
                    pct(p.done.clone(), 0.5)
                );
            }
        }
        println!("subprocess idle warm worker RSS: {idle_rss:?} KiB");
        drop(warm);

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
            ids.push(
                m.submit(sleeping.clone(), &UserId::from("u"))
                    .await
                    .unwrap(),
            );
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

/// When a job's first and terminal events arrived.
#[derive(Debug, Default)]
struct Stamps {
    first: std::sync::Mutex<Option<Instant>>,
    terminal: std::sync::Mutex<Option<Instant>>,
}

impl nodetool_engine::EventSink for Stamps {
    fn send(&self, event: nodetool_engine::EventEnvelope) {
        let now = Instant::now();
        self.first.lock().unwrap().get_or_insert(now);
        if matches!(&event.event, nodetool_engine::Event::JobUpdate(u) if u.status.is_terminal()) {
            self.terminal.lock().unwrap().get_or_insert(now);
        }
    }
}

#[derive(Default)]
struct Phases {
    first: Vec<Duration>,
    terminal: Vec<Duration>,
    done: Vec<Duration>,
}

impl Phases {
    fn push(&mut self, start: Instant, stamps: &Stamps) {
        let since = |at: Option<Instant>| at.map_or(Duration::ZERO, |at| at - start);
        self.done.push(start.elapsed());
        self.first.push(since(*stamps.first.lock().unwrap()));
        self.terminal.push(since(*stamps.terminal.lock().unwrap()));
    }
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
