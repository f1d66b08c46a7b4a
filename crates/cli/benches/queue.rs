//! The durable queue through real processes (issue 13), every figure beside its same-run
//! baseline:
//!
//! - `throughput`: K trivial jobs (`constant.Integer` → `Output`) sent by one client with a
//!   bounded number in flight, each as `POST /api/jobs?stream=true` read to the end of the
//!   stream (submit → completed as a client sees it). First one `nodetool serve` on SQLite
//!   running the jobs itself (threaded strategy, the default); then one `nodetool serve` with
//!   `JOB_EXECUTION=queue` on PostgreSQL and 1, 2, 4, 8 `nodetool work` processes. Jobs/s,
//!   p50/p99, the ratio to the SQLite run, jobs/s per worker against Windmill's published 981
//!   jobs/s at 100 workers, CPU per job of each process kind, and where a queued job's time goes
//!   (from the job rows: created → claimed → finished, and finished → the client's stream end).
//! - `fanout`: 2 queue-mode servers + 1 worker; one job of ~100,000 events; 100 SSE subscribers
//!   (50 on each server) following it from seq 0. Loss per subscriber (every seq once, in order,
//!   one terminal event), events/s, time to the last event, RSS peaks. Once with
//!   `JOB_EVENTS_MAX_PER_JOB` holding the whole job, once with the default (10,000).
//!
//! Every process is the `nodetool` binary this package builds (with the test nodes, as for its
//! tests); PostgreSQL is the testkit's (Debian's, `fsync=off`). Client, servers, workers and
//! PostgreSQL share the machine's cores.
//!
//! `cargo bench -p nodetool-cli --bench queue` (`-- throughput` or `-- fanout` for one part;
//! `jobs=N`, `rounds=N`, `items=N` to change the run).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a failed unwrap is a failed run

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nodetool_testkit::postgres::PostgresServer;
use nodetool_testkit::serve_process::NodetoolHome;
use serde_json::{json, Value};
use tokio::sync::Barrier;

/// Jobs per measured run (after [`WARMUP`]), and jobs in flight from the client.
const JOBS: usize = 2_000;
const WARMUP: usize = 100;
const IN_FLIGHT: usize = 64;
/// Jobs run one at a time for the latency of a job that waits for nothing.
const ALONE: usize = 50;
const WORKER_COUNTS: [usize; 4] = [1, 2, 4, 8];
/// `nodetool work --concurrency`: 8 workers × 8 = the client's 64 in flight.
const CONCURRENCY: usize = 8;
const ROUNDS: usize = 2;
/// Windmill's published figure: 981 jobs/s with 100 workers.
const WINDMILL_PER_WORKER: f64 = 981.0 / 100.0;
const SUBSCRIBERS: usize = 100;
/// `Generate` items; each posts an `edge_update` and an `output_update`: ~100,000 events.
const ITEMS: u64 = 50_000;
/// A run that takes longer than this is a hang, not a measurement.
const HANG: Duration = Duration::from_secs(600);
/// Worker logs: warnings, and the line a worker prints once it claims.
const WORKER_LOG: &str = "warn,nodetool_exec::work=info";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut jobs = JOBS;
    let mut rounds = ROUNDS;
    let mut items = ITEMS;
    let mut filters = Vec::new();
    for a in &args {
        if let Some(v) = a.strip_prefix("jobs=") {
            jobs = v.parse().expect("jobs=N");
        } else if let Some(v) = a.strip_prefix("items=") {
            items = v.parse().expect("items=N");
        } else if let Some(v) = a.strip_prefix("rounds=") {
            rounds = v.parse().expect("rounds=N");
        } else if !a.starts_with("--") {
            // `cargo bench` passes `--bench`; anything else is a filter.
            filters.push(a.as_str());
        }
    }
    let wants = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let Some(pg) = PostgresServer::start().await else {
            panic!(
                "PostgreSQL is needed: {}",
                PostgresServer::why_missing().unwrap_or_default()
            );
        };
        println!(
            "machine: {} cores, load average {}; PostgreSQL: testkit (fsync=off, synchronous_commit=off)",
            std::thread::available_parallelism().map_or(0, usize::from),
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        if wants("throughput") {
            throughput(&pg, jobs, rounds).await;
        }
        if wants("fanout") {
            fanout(&pg, items, None).await;
            fanout(&pg, items, Some(10_000)).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Processes.

fn home() -> NodetoolHome {
    NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"))
}

/// A `nodetool work` process (stderr in a file), killed when dropped.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn start(env: &NodetoolHome, name: &str, vars: &[(&str, &str)]) -> Self {
        let log = env.path(&format!("{name}.log"));
        let concurrency = CONCURRENCY.to_string();
        let args = ["work", "--concurrency", &concurrency, "--log", WORKER_LOG];
        let mut cmd = env.cmd(&args, vars);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd.stderr(std::fs::File::create(&log).unwrap()).spawn();
        let mut worker = Self {
            child: child.unwrap(),
            log,
        };
        let deadline = Instant::now() + HANG;
        while !worker.log().contains("queue worker started") {
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!("{name} exited at start with {status}: {}", worker.log());
            }
            assert!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        worker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (VmRSS, VmHWM) of `pid` in KiB (0 once it is gone).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let (mut now, mut peak) = (0, 0);
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = value.trim().trim_end_matches(" kB").parse().unwrap_or(0);
        match key {
            "VmRSS" => now = kib,
            "VmHWM" => peak = kib,
            _ => {}
        }
    }
    (now, peak)
}

/// `/proc/PID/stat` fields after the command: (ppid, user + system ticks, reaped children's
/// user + system ticks).
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces; the fields start after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // state=0, ppid=1, ..., utime=11, stime=12, cutime=13, cstime=14.
    Some((n(1) as u32, n(11) + n(12), n(13) + n(14)))
}

/// CPU seconds used so far by `pid` (its own; with `children`, also every reaped child and
/// every live direct child: PostgreSQL's postmaster and its backends).
fn cpu_secs(pid: u32, children: bool) -> f64 {
    // Linux's USER_HZ.
    const TICK: f64 = 0.01;
    let Some((_, own, reaped)) = stat(pid) else {
        return 0.0;
    };
    if !children {
        return own as f64 * TICK;
    }
    let mut total = own + reaped;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((ppid, ticks, _)) = stat(child) {
            if ppid == pid {
                total += ticks;
            }
        }
    }
    total as f64 * TICK
}

/// The postmaster's pid: the first line of `postmaster.pid` in the data directory.
fn postmaster(pg: &PostgresServer) -> u32 {
    let data = pg.psql("postgres", "SHOW data_directory");
    let text = std::fs::read_to_string(format!("{data}/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Throughput.

fn trivial(i: usize) -> Value {
    json!({
        "graph": {
            "nodes": [
                {"id": "n", "type": "nodetool.constant.Integer", "data": {"value": i}},
                {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}},
            ],
            "edges": [
                {"id": "e", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
            ],
        },
        "execution_strategy": "threaded",
    })
}

/// One job streamed to its end: (submit → end of stream, job id). Checks the stream: seqs
/// increasing, exactly one terminal event, last, `completed`.
async fn run_one(client: &reqwest::Client, base: &str, request: &Value) -> (Duration, String) {
    let started = Instant::now();
    let resp = client
        .post(format!("{base}/api/jobs?stream=true"))
        .json(request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.text().await.unwrap();
    let took = started.elapsed();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{body}");
    let terminal = |e: &Value| {
        e["type"] == "job_update"
            && matches!(
                e["status"].as_str(),
                Some("completed" | "failed" | "cancelled" | "timed_out")
            )
    };
    assert_eq!(events.iter().filter(|e| terminal(e)).count(), 1, "{body}");
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed", "{body}");
    (took, last["job_id"].as_str().unwrap().to_owned())
}

/// `n` jobs with [`IN_FLIGHT`] at once: (wall time, each job's latency and id).
async fn drive(base: &str, n: usize, first: usize) -> (Duration, Vec<(Duration, String)>) {
    drive_with(base, n, first, IN_FLIGHT).await
}

/// Latency with nothing queued: [`ALONE`] jobs one after another (p50, p99, the runs).
async fn alone(base: &str) -> (Duration, Duration, Vec<(Duration, String)>) {
    let (_, runs) = drive_with(base, ALONE, 1_000_000, 1).await;
    let mut lat: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99), runs)
}

async fn drive_with(
    base: &str,
    n: usize,
    first: usize,
    in_flight: usize,
) -> (Duration, Vec<(Duration, String)>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap();
    let started = Instant::now();
    let runs: Vec<(Duration, String)> = tokio::time::timeout(
        HANG,
        futures::stream::iter(first..first + n)
            .map(|i| {
                let client = client.clone();
                async move { run_one(&client, base, &trivial(i)).await }
            })
            .buffer_unordered(in_flight)
            .collect(),
    )
    .await
    .expect("the jobs hung");
    (started.elapsed(), runs)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// What one configuration measured.
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

impl Run {
    fn new(wall: Duration, runs: &[(Duration, String)]) -> Self {
        let mut lat: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        Self {
            rate: runs.len() as f64 / wall.as_secs_f64(),
            p50: pct(&mut lat, 0.5),
            p99: pct(&mut lat, 0.99),
        }
    }
}

async fn throughput(pg: &PostgresServer, jobs: usize, rounds: usize) {
    println!(
        "\n## throughput: {jobs} trivial jobs per run (+{WARMUP} warm-up), {IN_FLIGHT} in flight, \
         POST /api/jobs?stream=true to the stream's end; workers: --concurrency {CONCURRENCY}"
    );
    let postmaster = postmaster(pg);
    for round in 1..=rounds {
        println!("\n### round {round}");
        // Baseline: one server on SQLite running its jobs in-process.
        // Baselines: one server on SQLite running its jobs in-process, with its default number
        // of jobs at once (MAX_WORKFLOW_THREADS = the cores), and with as many as one worker
        // runs (--concurrency).
        let concurrency = CONCURRENCY.to_string();
        let mut baselines = Vec::new();
        for vars in [vec![], vec![("MAX_WORKFLOW_THREADS", concurrency.as_str())]] {
            let env = home();
            let server = env.serve(&vars, HANG);
            let base = server.url("");
            drive(&base, WARMUP, 0).await;
            let cpu0 = cpu_secs(server.pid(), false);
            let (wall, runs) = drive(&base, jobs, WARMUP).await;
            let cpu = cpu_secs(server.pid(), false) - cpu0;
            let run = Run::new(wall, &runs);
            let (a50, a99, _) = alone(&base).await;
            println!(
                "sqlite, in-process, MAX_WORKFLOW_THREADS={}: {:.0} jobs/s, p50 {}, p99 {}; \
                 one at a time p50 {}, p99 {}; server CPU {:.2} ms/job; RSS peak {} MiB",
                vars.first().map_or("default", |v| v.1),
                run.rate,
                ms(run.p50),
                ms(run.p99),
                ms(a50),
                ms(a99),
                cpu * 1e3 / jobs as f64,
                rss(server.pid()).1 / 1024
            );
            baselines.push(run);
        }
        let (baseline, matched) = (&baselines[0], &baselines[1]);
        for &n in &WORKER_COUNTS {
            let db = format!("tp_{round}_{n}");
            let url = pg.create_database(&db);
            let env = home();
            let vars = [("DATABASE_URL", url.as_str()), ("JOB_EXECUTION", "queue")];
            let server = env.serve(&vars, HANG);
            let workers: Vec<Worker> = (0..n)
                .map(|i| Worker::start(&env, &format!("w{i}"), &vars))
                .collect();
            let base = server.url("");
            drive(&base, WARMUP, 0).await;
            let commits = xact_commits(pg, &db).await;
            let pids: Vec<u32> = workers.iter().map(|w| w.child.id()).collect();
            let worker_cpu = || pids.iter().map(|&p| cpu_secs(p, false)).sum::<f64>();
            let (s0, w0, p0) = (
                cpu_secs(server.pid(), false),
                worker_cpu(),
                cpu_secs(postmaster, true),
            );
            let (wall, runs) = drive(&base, jobs, WARMUP).await;
            let (s1, w1, p1) = (
                cpu_secs(server.pid(), false),
                worker_cpu(),
                cpu_secs(postmaster, true),
            );
            let commits = (xact_commits(pg, &db).await - commits) as f64 / jobs as f64;
            let run = Run::new(wall, &runs);
            let (a50, a99, alone_runs) = alone(&base).await;
            let per_job = |a: f64, b: f64| (b - a) * 1e3 / jobs as f64;
            println!(
                "queue, {n} worker(s): {:.0} jobs/s ({:.2}× sqlite default, {:.2}× sqlite {CONCURRENCY} at once), \
                 p50 {} ({:.1}× sqlite default), p99 {}; \
                 one at a time p50 {}, p99 {}; {:.0} jobs/s per worker ({:.0}× Windmill's {WINDMILL_PER_WORKER:.1}); \
                 CPU ms/job: server {:.2}, workers {:.2}, PostgreSQL {:.2}; \
                 {commits:.1} PostgreSQL transactions per job",
                run.rate,
                run.rate / baseline.rate,
                run.rate / matched.rate,
                ms(run.p50),
                run.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
                ms(run.p99),
                ms(a50),
                ms(a99),
                run.rate / n as f64,
                run.rate / n as f64 / WINDMILL_PER_WORKER,
                per_job(s0, s1),
                per_job(w0, w1),
                per_job(p0, p1),
            );
            breakdown(pg, &db, "loaded", &runs);
            breakdown(pg, &db, "one at a time", &alone_runs);
            // Each measured job ran once, on a worker.
            let ids: Vec<String> = runs.iter().map(|r| format!("'{}'", r.1)).collect();
            let once = pg.psql(
                &db,
                &format!(
                    "SELECT count(*) FROM jobs WHERE id IN ({}) AND attempts = 1 \
                     AND status = 'completed' AND lease_owner IS NOT NULL",
                    ids.join(",")
                ),
            );
            assert_eq!(once, jobs.to_string(), "jobs not run exactly once");
            drop(workers);
            drop(server);
        }
    }
}

/// Transactions committed in `db` so far. PostgreSQL publishes a backend's counts at most once a
/// second, so this waits that long first (idle workers poll meanwhile: 2 transactions per
/// worker per 0.5 s, a few hundredths per job of a 2,000-job run).
async fn xact_commits(pg: &PostgresServer, db: &str) -> u64 {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    pg.psql(
        db,
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .parse()
    .unwrap()
}

/// Where a queued job's time went, from its row (PostgreSQL's clock; `now()` is the start of
/// each transaction) and the client's latency: created → claimed, claimed → finished,
/// finished → the client's stream end (the server's follow: NOTIFY or the 0.5 s poll).
fn breakdown(pg: &PostgresServer, db: &str, label: &str, runs: &[(Duration, String)]) {
    let ids: Vec<String> = runs.iter().map(|r| format!("'{}'", r.1)).collect();
    let rows = pg.psql(
        db,
        &format!(
            "SELECT id, extract(epoch FROM started_at - created_at) * 1000, \
             extract(epoch FROM finished_at - started_at) * 1000, \
             extract(epoch FROM finished_at - created_at) * 1000 \
             FROM jobs WHERE id IN ({})",
            ids.join(",")
        ),
    );
    let latency: std::collections::HashMap<&str, f64> = runs
        .iter()
        .map(|(d, id)| (id.as_str(), d.as_secs_f64() * 1e3))
        .collect();
    let (mut wait, mut run, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for line in rows.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        wait.push(num(1));
        run.push(num(2));
        rest.push(latency[f[0]] - num(3));
    }
    let p = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    println!(
        "  where the time goes, {label} (p50 / p99): created → claimed {:.1} / {:.1} ms; claimed → finished \
         {:.1} / {:.1} ms; the rest (client → row created + finished → stream end) {:.1} / {:.1} ms",
        p(&mut wait, 0.5),
        p(&mut wait, 0.99),
        p(&mut run, 0.5),
        p(&mut run, 0.99),
        p(&mut rest, 0.5),
        p(&mut rest, 0.99),
    );
}

// ---------------------------------------------------------------------------------------------
// Fan-out across processes.

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    first: Option<Instant>,
    done: Option<Instant>,
    events: u64,
    last_seq: u64,
    /// Events whose seq was not the previous one + 1 (ahead of it), and the seqs skipped.
    gaps: u64,
    missing: u64,
    lag_notices: u64,
    /// Seqs the lag notices named as missed.
    announced: u64,
    /// Seqs at or below one already seen.
    repeats: u64,
    terminals: u64,
    status: Option<String>,
}

impl Seen {
    /// One SSE event block (the lines between blank lines). Only `job_update` and `lag` have
    /// their `data` parsed, so the client spends little CPU per event.
    fn block(&mut self, block: &str) {
        let (mut seq, mut kind, mut data) = (None, "", "");
        for line in block.lines() {
            match line.split_once(':') {
                Some(("id", v)) => seq = v.trim().parse::<u64>().ok(),
                Some(("event", v)) => kind = v.trim(),
                Some(("data", v)) => data = v,
                _ => {}
            }
        }
        if kind == "lag" {
            self.lag_notices += 1;
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            let seq = |k: &str| v[k].as_u64().expect("a lag notice names its seqs");
            self.announced += seq("missed_to_seq") + 1 - seq("missed_from_seq");
            return;
        }
        let Some(seq) = seq else { return };
        self.first.get_or_insert_with(Instant::now);
        self.events += 1;
        if seq <= self.last_seq {
            self.repeats += 1;
            return;
        }
        if seq > self.last_seq + 1 {
            self.gaps += 1;
            self.missing += seq - self.last_seq - 1;
        }
        self.last_seq = seq;
        if kind == "job_update" {
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            let status = v["status"].as_str().unwrap_or("");
            if ["completed", "failed", "cancelled", "timed_out"].contains(&status) {
                self.terminals += 1;
                self.status = Some(status.to_owned());
            }
        }
    }
}

async fn subscribe(client: reqwest::Client, url: String, attached: Arc<Barrier>) -> Seen {
    let mut resp = client
        .get(&url)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    attached.wait().await;
    let mut seen = Seen::default();
    // Bytes after the last complete block; a block ends at a blank line.
    let mut pending = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        pending.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
        let Some(end) = pending.rfind("\n\n") else {
            continue;
        };
        for block in pending[..end].split("\n\n") {
            seen.block(block);
        }
        pending.drain(..end + 2);
    }
    seen.done = Some(Instant::now());
    seen
}

async fn fanout(pg: &PostgresServer, items: u64, max_per_job: Option<u64>) {
    let db = format!("fanout_{}", max_per_job.unwrap_or(0));
    let url = pg.create_database(&db);
    let env = home();
    let keep = max_per_job.unwrap_or(4 * items).to_string();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("JOB_EXECUTION", "queue"),
        ("JOB_EVENTS_MAX_PER_JOB", keep.as_str()),
    ];
    let servers = [env.serve(&vars, HANG), env.serve(&vars, HANG)];
    let worker = Worker::start(&env, "w", &vars);
    let idle: Vec<u64> = servers.iter().map(|s| rss(s.pid()).0).collect();
    let postmaster = postmaster(pg);
    let cpu = || {
        (
            cpu_secs(servers[0].pid(), false) + cpu_secs(servers[1].pid(), false),
            cpu_secs(worker.child.id(), false),
            cpu_secs(postmaster, true),
        )
    };
    let cpu0 = cpu();
    println!(
        "\n## fan-out: 2 queue servers + 1 worker, {SUBSCRIBERS} SSE subscribers (half on each) \
         from seq 0, JOB_EVENTS_MAX_PER_JOB={keep}{}",
        if max_per_job.is_some() {
            " (the default)"
        } else {
            " (the whole job)"
        }
    );
    let client = reqwest::Client::new();
    // Sleep → Generate → Output: the Sleep lets every subscriber attach before the events
    // begin; its value is the Generate's count.
    let node = |id: &str, kind: &str, data: Value| json!({"id": id, "type": kind, "data": data});
    let edge = |from: &str, to: &str, handle: &str| {
        json!({"id": format!("{from}-{to}"), "source": from, "sourceHandle": "output",
               "target": to, "targetHandle": handle})
    };
    let graph = json!({
        "nodes": [
            node("wait", "nodetool.test.Sleep", json!({"seconds": 2.0, "value": items})),
            node("gen", "nodetool.test.Generate", json!({})),
            node("out", "nodetool.output.Output", json!({"name": "numbers"})),
        ],
        "edges": [edge("wait", "gen", "count"), edge("gen", "out", "value")],
    });
    let request = json!({"graph": graph, "execution_strategy": "threaded"});
    let resp = client.post(servers[0].url("/api/jobs")).json(&request);
    let job: Value = resp.send().await.unwrap().json().await.unwrap();
    let id = job["id"].as_str().expect("job id").to_owned();
    let submitted = Instant::now();
    let attached = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SUBSCRIBERS {
        let url = servers[i % 2].url(&format!("/api/jobs/{id}/events"));
        tasks.spawn(subscribe(client.clone(), url, attached.clone()));
    }
    attached.wait().await;
    let all_attached = submitted.elapsed();
    let seen: Vec<Seen> = tokio::time::timeout(HANG, tasks.join_all())
        .await
        .expect("fan-out hung");
    let cpu1 = cpu();
    let stored_last: u64 = pg
        .psql(
            &db,
            &format!("SELECT COALESCE(max(seq), 0) FROM job_events WHERE job_id = '{id}'"),
        )
        .parse()
        .unwrap();
    let job_ms: f64 = pg
        .psql(
            &db,
            &format!(
                "SELECT extract(epoch FROM finished_at - started_at) * 1000 FROM jobs WHERE id = '{id}'"
            ),
        )
        .parse()
        .unwrap();
    let complete = seen
        .iter()
        .filter(|s| {
            s.events == stored_last
                && s.last_seq == stored_last
                && s.gaps == 0
                && s.repeats == 0
                && s.terminals == 1
                && s.status.as_deref() == Some("completed")
        })
        .count();
    let events: u64 = seen.iter().map(|s| s.events).sum();
    let first = seen.iter().filter_map(|s| s.first).min().unwrap();
    let last = seen.iter().filter_map(|s| s.done).max().unwrap();
    let spread = last - first;
    let sum = |f: fn(&Seen) -> u64| seen.iter().map(f).sum::<u64>();
    let (gaps, missing, lags, announced, repeats) = (
        sum(|s| s.gaps),
        sum(|s| s.missing),
        sum(|s| s.lag_notices),
        sum(|s| s.announced),
        sum(|s| s.repeats),
    );
    let silent = seen.iter().filter(|s| s.missing != s.announced).count();
    println!(
        "job {id}: {stored_last} events (last seq), run on the worker in {job_ms:.0} ms (Sleep 2 s \
         included); subscribers attached {}",
        ms(all_attached)
    );
    println!(
        "{complete}/{SUBSCRIBERS} saw every seq once, in order, one terminal `completed`; gaps {gaps} \
         ({missing} seqs missing), lag notices {lags} (naming {announced} seqs; \
         {silent} subscribers with a gap no notice named), repeats {repeats}"
    );
    println!(
        "delivered {events} events in {} from the first to the last (submit → last event {}): \
         {:.0} k events/s in total, {:.1} k/s per subscriber",
        ms(spread),
        ms(last - submitted),
        events as f64 / spread.as_secs_f64() / 1e3,
        events as f64 / SUBSCRIBERS as f64 / spread.as_secs_f64() / 1e3,
    );
    for (i, s) in servers.iter().enumerate() {
        let (now, peak) = rss(s.pid());
        println!(
            "server {i}: RSS idle {} MiB, peak {} MiB, now {} MiB",
            idle[i] / 1024,
            peak / 1024,
            now / 1024
        );
    }
    println!("worker: RSS peak {} MiB", rss(worker.child.id()).1 / 1024);
    println!(
        "CPU seconds during the run: servers {:.1}, worker {:.1}, PostgreSQL {:.1}",
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        cpu1.2 - cpu0.2
    );
    if complete < SUBSCRIBERS {
        for (i, s) in seen.iter().enumerate().filter(|(_, s)| s.gaps > 0).take(3) {
            println!("  subscriber {i} (server {}): {s:?}", i % 2);
        }
    }
}
