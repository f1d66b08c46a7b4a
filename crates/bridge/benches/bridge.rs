//! The Python bridge's costs, each beside its baseline in the same run (BENCHMARKS.md):
//!
//! 1. per-node overhead: a trivial node (`bridgetest.basic.Echo`) through the bridge vs the same
//!    node called in-process by the worker's own executor (`execute_node`), and a one-node
//!    workflow with that Python node vs with a native node;
//! 2. a 64 MiB image through the bridge and back (`PassBytes`: bytes in as a blob, out over the
//!    chunked transfer) vs the worker executor handling the same 64 MiB in-process;
//! 3. worker start (spawn → `discover` answered) and the resident memory of an idle worker.
//!
//! Needs the test venv (`scripts/test` creates it): `cargo bench -p nodetool-bridge --bench
//! bridge`. `BRIDGE_BENCH_N` sets the per-node iterations (default 2000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{json, Value};

use nodetool_bridge::{BlobInput, BridgeConfig, ExecEvent, ExecuteRequest, PythonBridge};
use nodetool_engine::{Engine, Graph, NullSink, RunOptions, RunRequest};
use tokio_util::sync::CancellationToken;

const MIB: usize = 1024 * 1024;

fn request(node_type: &str) -> ExecuteRequest {
    ExecuteRequest {
        node_type: node_type.to_owned(),
        label: format!("bench ({node_type})"),
        node_id: "n".to_owned(),
        job_id: "bench".to_owned(),
        max_result_blob_bytes: 1 << 31,
        ..ExecuteRequest::default()
    }
}

async fn run_to_end(bridge: &PythonBridge, req: &ExecuteRequest) -> nodetool_bridge::Outputs {
    let mut exec = bridge.execute(req).await.expect("execute");
    loop {
        match exec.next().await.expect("next") {
            Some(ExecEvent::Result(out)) => return out,
            Some(_) => continue,
            None => panic!("no result"),
        }
    }
}

/// The worker's own executor, in-process, on the same node and payload, driven line by line
/// (`echo N`, `pass`) so that its rounds interleave with the bridge's on a shared machine.
const PYTHON_BASELINE: &str = r#"
import asyncio, fcntl, json, os, struct, subprocess, sys, time
import msgpack
from nodetool.worker.node_loader import load_nodes
from nodetool.worker.executor import execute_node
load_nodes(["bridgetest"])
data = b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024 * 1024 - 8)

# The lower bound of the wire: a minimal Python client of the same worker, same frames, same
# 1 MiB pipes, no engine, no checks.
worker = subprocess.Popen([sys.executable, "-m", "nodetool.worker", "--stdio"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
for fd in (worker.stdin.fileno(), worker.stdout.fileno()):
    fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
def send(m):
    b = msgpack.packb(m)
    worker.stdin.write(struct.pack(">I", len(b)) + b)
def readn(n):
    buf = bytearray()
    while len(buf) < n:
        buf += worker.stdout.read(n - len(buf))
    return bytes(buf)
def recv():
    (n,) = struct.unpack(">I", readn(4))
    return msgpack.unpackb(readn(n), raw=False)
def wire(node, blobs, fields):
    send({"type": "execute", "request_id": "w", "data": {"node_type": node, "fields": fields,
          "secrets": {}, "blobs": blobs, "blob_transfer": "chunked-v1"}})
    while recv()["type"] not in ("result", "error"):
        pass
send({"type": "discover", "request_id": "d", "data": {}})
recv()

async def main():
    for _ in range(100):
        await execute_node("bridgetest.basic.Echo", {"text": "a"}, {}, {})
        wire("bridgetest.basic.Echo", {}, {"text": "a"})
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        t = time.perf_counter()
        if cmd[0] == "echo":
            for _ in range(int(cmd[1])):
                await execute_node("bridgetest.basic.Echo", {"text": "a"}, {}, {})
        elif cmd[0] == "wire_echo":
            for _ in range(int(cmd[1])):
                wire("bridgetest.basic.Echo", {}, {"text": "a"})
        elif cmd[0] == "wire_pass":
            wire("bridgetest.basic.PassBytes", {"image": data}, {})
        else:
            r = await execute_node("bridgetest.basic.PassBytes", {}, {}, {"image": data})
            assert len(r["blobs"]["output"]) == len(data)
        print(time.perf_counter() - t, flush=True)
asyncio.run(main())
"#;

/// The baseline process: one command, its seconds.
struct Baseline {
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl Baseline {
    async fn start(python: &std::path::Path, env: &BTreeMap<String, String>) -> Baseline {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(python)
            .args(["-c", PYTHON_BASELINE])
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python baseline");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        loop {
            let line = stdout
                .next_line()
                .await
                .expect("read")
                .expect("baseline exited");
            if line.trim() == "ready" {
                break;
            }
        }
        Baseline {
            stdin,
            stdout,
            _child: child,
        }
    }

    async fn time(&mut self, cmd: &str) -> f64 {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write");
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .expect("read")
                .expect("baseline exited");
            if let Ok(v) = line.trim().parse::<f64>() {
                return v;
            }
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `len` nodes of `node_type` in a chain (`input` wired from the previous one), then an output.
fn chain(node_type: &str, input: &str, data: Value, len: usize) -> Graph {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for i in 0..len {
        nodes.push(json!({"id": format!("n{i}"), "type": node_type, "data": data}));
        if i > 0 {
            edges.push(json!({"id": format!("e{i}"), "source": format!("n{}", i - 1), "sourceHandle": "output",
                              "target": format!("n{i}"), "targetHandle": input}));
        }
    }
    nodes.push(json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "out"}}));
    edges.push(
        json!({"id": "last", "source": format!("n{}", len - 1), "sourceHandle": "output",
                      "target": "out", "targetHandle": "value"}),
    );
    serde_json::from_value(json!({"nodes": nodes, "edges": edges})).expect("graph")
}

async fn engine_resources() -> nodetool_engine::EngineResources {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path()))
        .expect("settings");
    nodetool_runtime::Resources::new(settings, nodetool_runtime::ResourceOptions::default())
        .engine_resources()
        .await
        .expect("resources")
}

/// Mean seconds per workflow run; each finished job gets its `job.end` off the critical path,
/// as `nodetool serve` sends it.
async fn per_run(engine: &Engine, bridge: &PythonBridge, g: &Graph, n: usize) -> f64 {
    let opts = RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };
    for _ in 0..5 {
        engine
            .run(
                RunRequest::new(g.clone()),
                opts.clone(),
                Arc::new(NullSink),
                CancellationToken::new(),
            )
            .await;
    }
    let t = Instant::now();
    for _ in 0..n {
        let o = engine
            .run(
                RunRequest::new(g.clone()),
                opts.clone(),
                Arc::new(NullSink),
                CancellationToken::new(),
            )
            .await;
        assert!(o.error.is_none(), "{:?}", o.error);
        let b = bridge.clone();
        tokio::spawn(async move { b.end_job(&o.job_id, "completed").await });
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let Some(env) = nodetool_testkit::python_worker::require("bridge bench") else {
        return;
    };
    let n: usize = std::env::var("BRIDGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut cfg = BridgeConfig::new(&env.python);
        cfg.env = nodetool_bridge::env::worker_env(&env.worker_env(), &[], cfg.max_frame_bytes);

        // 3. Start time and idle memory.
        let mut starts = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let b = PythonBridge::start(cfg.clone()).await.expect("start");
            starts.push(t.elapsed().as_secs_f64());
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Some(kib) = b.worker_pids().first().and_then(|p| rss_kib(*p)) {
                rss.push(kib);
            }
            b.shutdown(Duration::from_secs(2)).await;
        }
        starts.sort_by(f64::total_cmp);
        let start_median = starts[starts.len() / 2];
        let rss_mib = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0;

        let bridge = PythonBridge::start(cfg.clone()).await.expect("start");

        // 1. The same node in-process and through the bridge, in alternating rounds.
        let mut baseline = Baseline::start(&env.python, &cfg.env).await;
        let mut echo = request("bridgetest.basic.Echo");
        echo.fields = vec![("text".to_owned(), Mp::from("a"))];
        for _ in 0..100 {
            run_to_end(&bridge, &echo).await;
        }
        const ROUNDS: usize = 5;
        let per_round = (n / ROUNDS).max(1);
        let (mut py_total, mut wire_total, mut bridge_total) = (0.0, 0.0, 0.0);
        for _ in 0..ROUNDS {
            py_total += baseline.time(&format!("echo {per_round}")).await;
            wire_total += baseline.time(&format!("wire_echo {per_round}")).await;
            let t = Instant::now();
            for _ in 0..per_round {
                run_to_end(&bridge, &echo).await;
            }
            bridge_total += t.elapsed().as_secs_f64();
        }
        let calls = (per_round * ROUNDS) as f64;
        let py_echo = py_total / calls;
        let wire_echo = wire_total / calls;
        let bridge_echo = bridge_total / calls;

        // 1c. One-node workflows: the Python node vs a native node.
        let mut registry = nodetool_nodes::registry();
        nodetool_bridge::register_python_nodes(&mut registry, &bridge);
        let engine = Engine::new(Arc::new(registry), engine_resources().await);
        let runs = (n / 10).max(20);
        let (mut wf_native, mut wf_python, mut one_native, mut one_python) = (0.0, 0.0, 0.0, 0.0);
        const CHAIN: usize = 10;
        for _ in 0..ROUNDS {
            wf_native += per_run(&engine, &bridge, &chain("nodetool.text.Concat", "a", json!({"a": "a"}), CHAIN), runs).await;
            wf_python += per_run(&engine, &bridge, &chain("bridgetest.basic.Echo", "text", json!({"text": "a"}), CHAIN), runs).await;
            one_native += per_run(&engine, &bridge, &chain("nodetool.text.Concat", "a", json!({"a": "a"}), 1), runs).await;
            one_python += per_run(&engine, &bridge, &chain("bridgetest.basic.Echo", "text", json!({"text": "a"}), 1), runs).await;
        }
        let r = ROUNDS as f64;
        let (wf_native, wf_python, one_native, one_python) =
            (wf_native / r, wf_python / r, one_native / r, one_python / r);

        // 2. 64 MiB there and back.
        let mut payload = vec![0u8; 64 * MIB];
        payload[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
        let payload = Bytes::from(payload);
        let mut pass = request("bridgetest.basic.PassBytes");
        pass.fields = vec![(
            "image".to_owned(),
            Mp::Map(vec![(Mp::from("type"), Mp::from("image")), (Mp::from("uri"), Mp::from("temp://x"))]),
        )];
        pass.blobs = vec![("image".to_owned(), BlobInput::One(payload.clone()))];
        let (mut best, mut py_pass, mut wire_pass) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..5 {
            py_pass = py_pass.min(baseline.time("pass").await);
            wire_pass = wire_pass.min(baseline.time("wire_pass").await);
            let t = Instant::now();
            let out = run_to_end(&bridge, &pass).await;
            let dt = t.elapsed().as_secs_f64();
            let back = out.blobs.get("output").expect("blob back");
            assert_eq!(back.len(), payload.len());
            best = best.min(dt);
        }
        let mib = 64.0;

        println!("\n## Python bridge (nodetool-core 0.8.2 worker, {n} iterations)\n");
        println!("| measurement | through our bridge | worker executor in-process | minimal Python client of the worker |");
        println!("|---|---|---|---|");
        println!(
            "| trivial node, per call | {:.3} ms | {:.3} ms (bridge +{:.3} ms) | {:.3} ms (bridge {:+.3} ms) |",
            bridge_echo * 1e3,
            py_echo * 1e3,
            (bridge_echo - py_echo) * 1e3,
            wire_echo * 1e3,
            (bridge_echo - wire_echo) * 1e3
        );
        println!(
            "| 64 MiB image there and back, best of 5 | {:.0} ms = {:.0} MiB/s | {:.0} ms | {:.0} ms = {:.0} MiB/s |",
            best * 1e3,
            mib / best,
            py_pass * 1e3,
            wire_pass * 1e3,
            mib / wire_pass
        );
        println!("\n| workflow, per run | Python nodes | native nodes (same run) | difference |");
        println!("|---|---|---|---|");
        println!(
            "| chain of {CHAIN} nodes | {:.3} ms | {:.3} ms | +{:.3} ms per node |",
            wf_python * 1e3,
            wf_native * 1e3,
            (wf_python - wf_native) * 1e3 / CHAIN as f64
        );
        println!(
            "| one node (adds the job's job.start/job.end) | {:.3} ms | {:.3} ms | +{:.3} ms |",
            one_python * 1e3,
            one_native * 1e3,
            (one_python - one_native) * 1e3
        );
        println!("\n| worker | value |");
        println!("|---|---|");
        println!("| start (spawn → discover answered), median of 5 | {:.0} ms |", start_median * 1e3);
        println!("| idle resident memory (VmRSS), mean of 5 | {rss_mib:.0} MiB |");
        bridge.shutdown(Duration::from_secs(2)).await;
    });
}
