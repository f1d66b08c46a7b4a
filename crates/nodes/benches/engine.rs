//! Engine overhead: a trivial 2-node run, a 1,000-node chain, a 100,000-item stream, and the heap
//! memory a waiting node holds (1,000- and 10,000-node chains).
//!
//! `cargo bench -p nodetool-nodes --bench engine`
//!
//! Memory is counted by an instrumented global allocator (`stats_alloc`), so the figure is live
//! heap bytes, deterministic up to allocator-independent noise, not RSS.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nodetool_engine::{Engine, Graph, NullSink, RunOptions, RunRequest, Status};
use serde_json::{json, Value};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn engine(rt: &tokio::runtime::Runtime) -> Engine {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path()))
        .expect("settings");
    let resources = nodetool_runtime::Resources::new(settings, Default::default());
    let res = rt
        .block_on(resources.engine_resources())
        .expect("resources");
    Engine::new(Arc::new(nodetool_nodes::registry()), res)
}

fn graph(nodes: Vec<Value>, edges: Vec<Value>) -> Graph {
    serde_json::from_value(json!({"nodes": nodes, "edges": edges})).expect("graph")
}

fn edge(i: usize, s: &str, sh: &str, t: &str, th: &str) -> Value {
    json!({"id": format!("e{i}"), "source": s, "sourceHandle": sh, "target": t, "targetHandle": th})
}

fn two_node() -> Graph {
    graph(
        vec![
            json!({"id": "s", "type": "nodetool.constant.String", "data": {"value": "hi"}}),
            json!({"id": "o", "type": "nodetool.output.Output", "data": {"name": "out"}}),
        ],
        vec![edge(1, "s", "output", "o", "value")],
    )
}

fn chain(n: usize) -> Graph {
    let mut nodes =
        vec![json!({"id": "n0", "type": "nodetool.constant.Integer", "data": {"value": 0}})];
    let mut edges = Vec::new();
    for i in 1..n - 1 {
        nodes.push(json!({"id": format!("n{i}"), "type": "nodetool.math.Add", "data": {"b": 1}}));
        edges.push(edge(
            i,
            &format!("n{}", i - 1),
            "output",
            &format!("n{i}"),
            "a",
        ));
    }
    nodes.push(json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "out"}}));
    edges.push(edge(n, &format!("n{}", n - 2), "output", "out", "value"));
    graph(nodes, edges)
}

/// `test.Sleep` → (n - 2) × `math.Add` → `Output`: while the head sleeps every other node is
/// planned, spawned and waiting on its inbox, which is the state whose memory we count.
fn sleeping_chain(n: usize, seconds: f64) -> Graph {
    let mut g = chain(n);
    g.nodes[0] = serde_json::from_value(json!({
        "id": "n0", "type": "nodetool.test.Sleep", "data": {"seconds": seconds, "value": 0}
    }))
    .expect("node");
    g
}

/// Live heap bytes the run holds while its nodes wait (peak of allocated − freed, sampled every
/// millisecond), and bytes allocated over the whole run; the graph is built before counting.
fn memory_of_run(rt: &tokio::runtime::Runtime, engine: &Engine, g: Graph) -> (i64, u64) {
    let region = Region::new(GLOBAL);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0i64;
            while !done.load(Ordering::Relaxed) {
                let s = region.change();
                let live = s.bytes_allocated as i64 - s.bytes_deallocated as i64
                    + s.bytes_reallocated as i64;
                peak = peak.max(live);
                std::thread::sleep(Duration::from_millis(1));
            }
            (peak, region.change().bytes_allocated as u64)
        })
    };
    let opts = RunOptions {
        use_cache: false,
        ..RunOptions::default()
    };
    let out = rt.block_on(engine.run(
        RunRequest::new(g),
        opts,
        Arc::new(NullSink),
        CancellationToken::new(),
    ));
    assert_eq!(out.status, Status::Completed, "{:?}", out.error);
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler")
}

fn memory_per_node(rt: &tokio::runtime::Runtime, engine: &Engine) {
    for (n, sleep) in [(1_000usize, 0.5), (10_000, 2.0)] {
        // Warm-up run: one-time allocations (registry lookups, runtime slabs) are not per node.
        memory_of_run(rt, engine, sleeping_chain(n, 0.05));
        let (peak, allocated) = memory_of_run(rt, engine, sleeping_chain(n, sleep));
        println!(
            "memory/chain/{n}_nodes: live {:.2} KiB per waiting node ({:.1} MiB peak), \
             {:.2} KiB allocated per node over the run",
            peak as f64 / n as f64 / 1024.0,
            peak as f64 / (1024.0 * 1024.0),
            allocated as f64 / n as f64 / 1024.0,
        );
    }
}

fn stream(count: usize) -> Graph {
    graph(
        vec![
            json!({"id": "g", "type": "nodetool.test.Generate", "data": {"count": count}}),
            json!({"id": "c", "type": "nodetool.control.Collect", "data": {}}),
            json!({"id": "l", "type": "nodetool.list.Length", "data": {}}),
            json!({"id": "o", "type": "nodetool.output.Output", "data": {"name": "n"}}),
        ],
        vec![
            edge(1, "g", "output", "c", "input_item"),
            edge(2, "c", "output", "l", "values"),
            edge(3, "l", "output", "o", "value"),
        ],
    )
}

async fn run_once(engine: &Engine, g: Graph) {
    let out = engine
        .run(
            RunRequest::new(g),
            RunOptions::default(),
            Arc::new(NullSink),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out.status, Status::Completed, "{:?}", out.error);
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = engine(&rt);

    memory_per_node(&rt, &engine);

    let g = two_node();
    c.bench_function("run/trivial_2_node", |b| {
        b.to_async(&rt).iter(|| run_once(&engine, g.clone()))
    });

    let g = chain(1000);
    let mut group = c.benchmark_group("run/chain");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_nodes", |b| {
        b.to_async(&rt).iter(|| run_once(&engine, g.clone()))
    });
    group.finish();

    let g = stream(100_000);
    let mut group = c.benchmark_group("run/stream");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("generate_100k_collect", |b| {
        b.to_async(&rt).iter(|| run_once(&engine, g.clone()))
    });
    group.finish();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
