//! Engine overhead: a trivial 2-node run, a 1,000-node chain, a 100,000-item stream.
//!
//! `cargo bench -p nodetool-engine --bench engine`

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nodetool_engine::{
    Engine, EngineResources, Graph, NullSink, Registry, RunOptions, RunRequest, Status,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn engine(rt: &tokio::runtime::Runtime) -> Engine {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path()))
        .expect("settings");
    let resources = nodetool_runtime::Resources::new(settings, Default::default());
    let res = rt
        .block_on(EngineResources::from_resources(&resources))
        .expect("resources");
    Engine::new(Arc::new(Registry::builtin()), res)
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
