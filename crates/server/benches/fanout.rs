//! Event fan-out of the jobs API through real sockets:
//!
//! - `sse`: 100 SSE subscribers on one job that emits ~100,000 events; delivered events/s in
//!   total and per subscriber, and loss per subscriber (every seq 1..=N once and in order, gaps
//!   counted, lag notices checked against the gaps). Run twice: with the manager's default replay
//!   buffer and with one that holds the whole job.
//! - `ws`: 1,000 concurrent `/ws` clients: connect, `ping`, then each runs a trivial 2-node job;
//!   connect time, ping and run_job → completed latency (p50/p99), total time, server RSS, and
//!   the kernel's listen-queue overflows during the run. Run with the listen backlog
//!   `nodetool serve` has (tokio's `TcpListener::bind`: 128) and with 4096.
//!
//! The server is this binary re-executed with `--serve` (a separate process with its own tokio
//! runtime, built as `nodetool serve` builds it), so clients and server do not share a runtime
//! and the server's RSS is its own. Both still share the machine's cores.
//!
//! `cargo bench -p nodetool-server --bench fanout` (`-- sse` or `-- ws` for one part).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a failed unwrap is a failed run

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 100;
/// `Generate` items; each posts an `edge_update` and an `output_update`: ~100,000 events.
const ITEMS: u64 = 50_000;
const WS_CLIENTS: usize = 1_000;
/// A run that takes longer than this is a hang, not a measurement.
const HANG: Duration = Duration::from_secs(600);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let replay = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
        let backlog = args.get(i + 2).and_then(|v| v.parse().ok()).unwrap_or(0);
        serve(replay, backlog);
        return;
    }
    // `cargo bench` passes `--bench`; anything else is a filter.
    let filters: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    raise_nofile(4 * WS_CLIENTS as u64 + 256);
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "machine: {} cores; server: separate process, tokio default runtime (as `nodetool serve`)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    if wants("sse") {
        // The manager's default replay buffer (131,072 events), then the former default of
        // 10,000, which the subscribers outrun: every gap must come with a lag notice.
        rt.block_on(sse_fanout(None));
        rt.block_on(sse_fanout(Some(10_000)));
    }
    if wants("ws") {
        // The listen backlog of tokio's `TcpListener::bind` (128), then the 4096 that
        // `nodetool serve` asks for.
        rt.block_on(ws_clients(None));
        rt.block_on(ws_clients(Some(4096)));
    }
}

/// The open-file limit must cover a socket per client here and one per client in the server
/// (which inherits the limit).
fn raise_nofile(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < want {
        let new = want.min(hard);
        setrlimit(Resource::RLIMIT_NOFILE, new, hard).unwrap();
        assert!(
            new >= want,
            "open-file limit {hard} is below the {want} this bench needs: raise `ulimit -Hn`"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: `fanout --serve <replay_events> <listen_backlog>` (0: the manager's default;
// 0: `TcpListener::bind`'s backlog of 128; `nodetool serve` listens with 4096).

fn serve(replay: usize, backlog: u32) {
    // The same runtime `nodetool serve` uses.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        use nodetool_engine::Engine;
        use nodetool_exec::threaded::ThreadedStrategy;
        use nodetool_exec::{JobExecutionManager, JobStore, ManagerConfig};

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let env: BTreeMap<String, String> = [
            ("ENV", "development".to_owned()),
            ("HOME", root.display().to_string()),
            ("ASSET_FOLDER", root.join("assets").display().to_string()),
            ("DB_PATH", root.join("nodetool.db").display().to_string()),
            ("AUTH_PROVIDER", "local".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(
            env,
            root.join("config"),
        ))
        .unwrap();
        let auth = nodetool_server::Authenticator::from_settings(&settings).unwrap();
        let db = nodetool_server::db::open(&settings.db_path).await.unwrap();
        let threads = settings.thread_pool_size.max(1);
        let mut config = ManagerConfig::from_settings(&settings);
        // 1,000 clients of one user each submit a job at once: the per-user queue bound
        // (MAX_QUEUED_JOBS_PER_USER, 100 by default) would refuse most of them.
        config.max_queued_jobs_per_user = config.max_queued_jobs_per_user.max(2_000);
        if replay > 0 {
            config.replay_events = replay;
        }
        let resources = Arc::new(nodetool_runtime::Resources::new(
            settings,
            Default::default(),
        ));
        let engine = Engine::new(
            Arc::new(nodetool_nodes::registry()),
            resources.engine_resources().await.unwrap(),
        );
        let store = JobStore::from_pool(db.clone()).await.unwrap();
        let manager = JobExecutionManager::new(
            store,
            vec![Arc::new(ThreadedStrategy::new(engine, threads).unwrap())],
            config.clone(),
        )
        .await
        .unwrap();
        let state = nodetool_server::AppState::new(resources, auth, db).with_jobs(manager.clone());
        let listener = if backlog == 0 {
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
        } else {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            socket.listen(backlog).unwrap()
        };
        println!(
            "listening {} replay_events={} max_concurrent_jobs={} engine_threads={threads} listen_backlog={}",
            listener.local_addr().unwrap().port(),
            config.replay_events,
            config.max_concurrent_jobs,
            if backlog == 0 { "128 (TcpListener::bind)".to_owned() } else { backlog.to_string() },
        );
        // The parent closes our stdin (or dies): stop.
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            })
            .await;
        };
        nodetool_server::serve(
            listener,
            nodetool_server::router(state),
            stdin_closed,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        manager.shutdown(Duration::from_secs(1)).await;
    });
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    banner: String,
}

impl Server {
    fn start(replay: Option<usize>, backlog: Option<u32>) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(replay.unwrap_or(0).to_string())
            .arg(backlog.unwrap_or(0).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("server said {line:?}"));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            stdin: child.stdin.take(),
            banner: line.trim().to_owned(),
            child,
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel's count of connections dropped because a listen queue was full.
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// SSE fan-out.

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    attached: Option<Instant>,
    /// First `output_update` (the job's streaming phase has begun).
    first_item: Option<Instant>,
    done: Option<Instant>,
    events: u64,
    last_seq: u64,
    /// Events whose seq was not the previous one + 1 (ahead of it).
    gaps: u64,
    missing: u64,
    /// Missed events that a `lag` notice named.
    announced: u64,
    lag_notices: u64,
    /// Seqs at or below one already seen.
    repeats: u64,
    terminal: Option<String>,
}

/// A minimal SSE reader: only `id:` is parsed for every event; `data:` only for `lag` and
/// `job_update`, so the client spends little CPU per event.
#[derive(Default)]
struct SseScan {
    partial: Vec<u8>,
    id: Option<u64>,
    kind: Vec<u8>,
    data: Vec<u8>,
}

impl SseScan {
    fn feed(&mut self, chunk: &[u8], seen: &mut Seen) {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&rest[..nl], seen);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..nl]);
                self.line(&line, seen);
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, line: &[u8], seen: &mut Seen) {
        if line.is_empty() {
            self.dispatch(seen);
        } else if let Some(v) = line.strip_prefix(b"id:") {
            self.id = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        } else if let Some(v) = line.strip_prefix(b"event:") {
            self.kind = v.trim_ascii().to_vec();
        } else if let Some(v) = line.strip_prefix(b"data:") {
            if self.kind.is_empty() || self.kind == b"lag" || self.kind == b"job_update" {
                self.data = v.to_vec();
            }
        }
    }

    fn dispatch(&mut self, seen: &mut Seen) {
        let kind = std::mem::take(&mut self.kind);
        let data = std::mem::take(&mut self.data);
        let id = self.id.take();
        if kind == b"lag" {
            seen.lag_notices += 1;
            let v: Value = serde_json::from_slice(&data).unwrap();
            let (from, to) = (
                v["missed_from_seq"].as_u64().unwrap(),
                v["missed_to_seq"].as_u64().unwrap(),
            );
            seen.announced += to + 1 - from;
            return;
        }
        let Some(seq) = id else { return };
        seen.events += 1;
        match seq.cmp(&(seen.last_seq + 1)) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Greater => {
                seen.gaps += 1;
                seen.missing += seq - seen.last_seq - 1;
            }
            std::cmp::Ordering::Less => {
                seen.repeats += 1;
                return;
            }
        }
        seen.last_seq = seq;
        if kind == b"output_update" && seen.first_item.is_none() {
            seen.first_item = Some(Instant::now());
        }
        if kind == b"job_update" {
            let v: Value = serde_json::from_slice(&data).unwrap();
            let status = v["status"].as_str().unwrap_or("").to_owned();
            if ["completed", "failed", "cancelled"].contains(&status.as_str()) {
                seen.terminal = Some(status);
            }
        }
    }
}

async fn subscribe(client: reqwest::Client, url: String, attached: Arc<Barrier>) -> Seen {
    let mut resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = Seen {
        attached: Some(Instant::now()),
        ..Seen::default()
    };
    attached.wait().await;
    let mut scan = SseScan::default();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        scan.feed(&chunk, &mut seen);
    }
    seen.done = Some(Instant::now());
    seen
}

async fn sse_fanout(replay: Option<usize>) {
    let server = Server::start(replay, None);
    println!("\n## SSE fan-out ({})", server.banner);
    let client = reqwest::Client::new();
    // A Sleep first, so every subscriber is attached before the stream of events begins; the
    // sleep's value is the Generate's count.
    let graph = json!({"nodes": [
        {"id": "wait", "type": "nodetool.test.Sleep", "data": {"seconds": 2.0, "value": ITEMS}},
        {"id": "gen", "type": "nodetool.test.Generate", "data": {}},
        {"id": "out", "type": "nodetool.output.Output", "data": {"name": "numbers"}}],
        "edges": [
        {"id": "e0", "source": "wait", "sourceHandle": "output", "target": "gen", "targetHandle": "count"},
        {"id": "e1", "source": "gen", "sourceHandle": "output", "target": "out", "targetHandle": "value"}]});
    let job: Value = client
        .post(format!("{}/api/jobs", server.url))
        .json(&json!({"graph": graph}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().expect("job id").to_owned();
    let submitted = Instant::now();
    let url = format!("{}/api/jobs/{id}/events", server.url);
    let attached = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let tasks: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| tokio::spawn(subscribe(client.clone(), url.clone(), attached.clone())))
        .collect();
    attached.wait().await;
    let all_attached = submitted.elapsed();
    let seen: Vec<Seen> = tokio::time::timeout(HANG, futures::future::join_all(tasks))
        .await
        .expect("fan-out hung")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let rec: Value = client
        .get(format!("{}/api/jobs/{id}", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (rss, hwm) = server.rss();

    let total_seq = seen.iter().map(|s| s.last_seq).max().unwrap_or(0);
    let start = seen.iter().filter_map(|s| s.first_item).min().unwrap();
    let end = seen.iter().filter_map(|s| s.done).max().unwrap();
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let wall = end - start;
    let mut per_sub: Vec<f64> = seen
        .iter()
        .map(|s| {
            let from = s.first_item.or(s.attached).unwrap();
            s.events as f64 / (s.done.unwrap() - from).as_secs_f64()
        })
        .collect();
    per_sub.sort_by(f64::total_cmp);
    let lossless = seen
        .iter()
        .filter(|s| s.missing == 0 && s.repeats == 0 && s.events == total_seq)
        .count();
    let missing: u64 = seen.iter().map(|s| s.missing).sum();
    let announced: u64 = seen.iter().map(|s| s.announced).sum();
    let repeats: u64 = seen.iter().map(|s| s.repeats).sum();
    let gaps: u64 = seen.iter().map(|s| s.gaps).sum();
    let notices: u64 = seen.iter().map(|s| s.lag_notices).sum();
    let completed = seen
        .iter()
        .filter(|s| s.terminal.as_deref() == Some("completed"))
        .count();
    let job_secs = match (rec["started_at"].as_str(), rec["finished_at"].as_str()) {
        (Some(a), Some(b)) => {
            let a = chrono::DateTime::parse_from_rfc3339(a).unwrap();
            let b = chrono::DateTime::parse_from_rfc3339(b).unwrap();
            format!("{:.2} s", (b - a).num_milliseconds() as f64 / 1e3 - 2.0)
        }
        _ => "?".to_owned(),
    };
    let attached_before = seen.iter().filter(|s| s.attached.unwrap() < start).count();
    println!("job: {} events (last seq), status {}; its streaming phase took {job_secs} (record, minus the 2 s sleep)", total_seq, rec["status"]);
    println!(
        "subscribers: {SUBSCRIBERS} attached in {} ({attached_before} before the first item event); {completed} saw the terminal completed job_update",
        ms(all_attached)
    );
    println!(
        "delivered: {delivered} events in {:.2} s = {:.0} events/s total; per subscriber p50 {:.0} events/s (min {:.0}, max {:.0})",
        wall.as_secs_f64(),
        delivered as f64 / wall.as_secs_f64(),
        per_sub[per_sub.len() / 2],
        per_sub[0],
        per_sub[per_sub.len() - 1],
    );
    println!(
        "loss: {lossless}/{SUBSCRIBERS} subscribers saw every seq 1..={total_seq} exactly once in order; \
         gaps {gaps}, missing events {missing} (announced by {notices} lag notices: {announced}; silent: {}), repeats/out-of-order {repeats}",
        missing.saturating_sub(announced)
    );
    println!(
        "server RSS after: {} MiB (peak {} MiB)",
        rss / 1024,
        hwm / 1024
    );
}

// ---------------------------------------------------------------------------------------------
// 1,000 WebSocket clients.

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("socket open").unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[derive(Debug, Default)]
struct WsTimes {
    connect: Duration,
    ping: Duration,
    job: Duration,
}

async fn ws_client(url: String, phase: Arc<Barrier>) -> WsTimes {
    let mut t = WsTimes::default();
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    t.connect = started.elapsed();
    phase.wait().await; // all connected

    phase.wait().await; // ping together
    let sent = Instant::now();
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    t.ping = sent.elapsed();
    phase.wait().await;

    phase.wait().await; // run jobs together
    let graph = json!({"nodes": [
        {"id": "n", "type": "nodetool.constant.Integer", "data": {"value": 1}},
        {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}],
        "edges": [{"id": "e", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"}]});
    let sent = Instant::now();
    let run = json!({"command": "run_job", "data": {"graph": graph}});
    ws.send(Message::text(run.to_string())).await.unwrap();
    loop {
        let v = recv_json(&mut ws).await;
        if v["type"] == "job_update" && v["status"] == "completed" {
            assert_eq!(v["result"]["result"], json!([1]), "{v}");
            break;
        }
        assert!(
            v["error"].is_null() && v["status"] != "failed",
            "job failed: {v}"
        );
    }
    t.job = sent.elapsed();
    phase.wait().await; // done; the server's RSS is read with every socket still open

    phase.wait().await;
    let _ = ws.close(None).await;
    t
}

async fn ws_clients(backlog: Option<u32>) {
    let server = Server::start(None, backlog);
    println!("\n## {WS_CLIENTS} WebSocket clients ({})", server.banner);
    let (rss0, _) = server.rss();
    let overflows0 = listen_overflows();
    let url = format!("{}/ws", server.url.replacen("http://", "ws://", 1));
    let phase = Arc::new(Barrier::new(WS_CLIENTS + 1));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..WS_CLIENTS)
        .map(|_| tokio::spawn(ws_client(url.clone(), phase.clone())))
        .collect();
    let run = async {
        phase.wait().await;
        let connected = t0.elapsed();
        let (rss_idle, _) = server.rss();
        phase.wait().await;
        let t = Instant::now();
        phase.wait().await;
        let pinged = t.elapsed();
        phase.wait().await;
        let t = Instant::now();
        phase.wait().await;
        let jobs = t.elapsed();
        let (rss_done, hwm) = server.rss();
        phase.wait().await;
        (connected, rss_idle, pinged, jobs, rss_done, hwm)
    };
    let (connected, rss_idle, pinged, jobs, rss_done, hwm) = tokio::time::timeout(HANG, run)
        .await
        .expect("ws bench hung");
    let total = t0.elapsed();
    let times: Vec<WsTimes> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut connect: Vec<Duration> = times.iter().map(|t| t.connect).collect();
    let mut ping: Vec<Duration> = times.iter().map(|t| t.ping).collect();
    let mut job: Vec<Duration> = times.iter().map(|t| t.job).collect();
    println!(
        "connect: all {WS_CLIENTS} in {}; per client p50 {} p99 {}",
        ms(connected),
        ms(pct(&mut connect, 0.5)),
        ms(pct(&mut connect, 0.99))
    );
    println!(
        "ping→pong, all at once: {} for all; p50 {} p99 {}",
        ms(pinged),
        ms(pct(&mut ping, 0.5)),
        ms(pct(&mut ping, 0.99))
    );
    println!(
        "run_job→job_update completed, all at once: {} for all ({:.0} jobs/s); p50 {} p99 {}",
        ms(jobs),
        WS_CLIENTS as f64 / jobs.as_secs_f64(),
        ms(pct(&mut job, 0.5)),
        ms(pct(&mut job, 0.99))
    );
    println!("total (connect → all jobs done → closed): {}", ms(total));
    println!(
        "listen queue overflows during the run (TcpExt ListenOverflows, whole machine): {}",
        listen_overflows().saturating_sub(overflows0)
    );
    println!(
        "server RSS: {} MiB idle before, {} MiB with {WS_CLIENTS} sockets open ({:.1} KiB per socket), {} MiB after the jobs, peak {} MiB",
        rss0 / 1024,
        rss_idle / 1024,
        (rss_idle.saturating_sub(rss0)) as f64 / WS_CLIENTS as f64,
        rss_done / 1024,
        hwm / 1024
    );
}
