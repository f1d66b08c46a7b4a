//! Shared test helpers: an engine on ENV=test resources (memory storage, in-process cache).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use nodetool_config::{Settings, Sources};
use nodetool_engine::{
    Engine, EngineResources, EventEnvelope, Graph, Registry, RunOptions, RunOutcome, RunRequest,
    VecSink,
};
use nodetool_runtime::{ResourceOptions, Resources};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

pub async fn test_resources() -> EngineResources {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = Settings::load(&Sources::new(env, dir.path())).unwrap();
    // Asset records in a private in-memory SQLite database, as `nodetool run` has one on disk.
    let store = nodetool_assets::SqliteAssetStore::in_memory()
        .await
        .unwrap();
    let resources =
        Resources::new(settings, ResourceOptions::default()).with_asset_store(Arc::new(store));
    resources.engine_resources().await.unwrap()
}

pub async fn engine_with(registry: Registry) -> Engine {
    Engine::new(Arc::new(registry), test_resources().await)
}

pub async fn engine() -> Engine {
    engine_with(nodetool_nodes::registry()).await
}

/// Runs and returns the outcome plus every event.
pub async fn run(
    engine: &Engine,
    graph: Graph,
    params: Value,
    opts: RunOptions,
) -> (RunOutcome, Vec<EventEnvelope>) {
    run_with_cancel(engine, graph, params, opts, CancellationToken::new()).await
}

pub async fn run_with_cancel(
    engine: &Engine,
    graph: Graph,
    params: Value,
    opts: RunOptions,
    cancel: CancellationToken,
) -> (RunOutcome, Vec<EventEnvelope>) {
    let sink = VecSink::new();
    let params: Map<String, Value> = match params {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let outcome = engine
        .run(
            RunRequest::new(graph).with_params(params),
            opts,
            sink.clone(),
            cancel,
        )
        .await;
    (outcome, sink.events())
}

/// A graph from a compact description: nodes `(id, type, data)` and edges
/// `(source, sourceHandle, target, targetHandle)`.
pub fn graph(nodes: &[(&str, &str, Value)], edges: &[(&str, &str, &str, &str)]) -> Graph {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|(id, t, data)| json!({"id": id, "type": t, "data": data}))
        .collect();
    let edges: Vec<Value> = edges
        .iter()
        .enumerate()
        .map(|(i, (s, sh, t, th))| {
            json!({"id": format!("e{}", i + 1), "source": s, "sourceHandle": sh,
                   "target": t, "targetHandle": th})
        })
        .collect();
    serde_json::from_value(json!({"nodes": nodes, "edges": edges})).unwrap()
}

pub fn with_sync_mode(mut g: Graph, node: &str, mode: &str) -> Graph {
    let n = g.nodes.iter_mut().find(|n| n.id == node).unwrap();
    n.sync_mode = serde_json::from_value(json!(mode)).unwrap();
    g
}

pub fn with_dynamic(mut g: Graph, node: &str, props: &[&str]) -> Graph {
    let n = g.nodes.iter_mut().find(|n| n.id == node).unwrap();
    for p in props {
        n.dynamic_properties.insert((*p).to_owned(), Value::Null);
    }
    g
}

/// `shared/` beside the repo clone (`NODETOOL_SHARED_DIR` overrides it, for a worktree that
/// does not sit beside it).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("NODETOOL_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// `/work/shared/conformance`, or a clear failure when shared/ is not beside the repo.
pub fn conformance_dir() -> PathBuf {
    let dir = shared_dir().join("conformance");
    assert!(
        dir.is_dir(),
        "conformance fixtures not found at {} (shared/ must sit beside the repo clone)",
        dir.display()
    );
    dir
}

/// Statuses of node_update events per node, consecutive repeats collapsed, with output_update
/// events shown as "output".
pub fn per_node_sequences(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        let (node, label) = match e["type"].as_str() {
            Some("node_update") => (
                e["node_id"].as_str(),
                e["status"].as_str().map(str::to_owned),
            ),
            Some("output_update") => (e["node_id"].as_str(), Some("output".to_owned())),
            _ => continue,
        };
        let (Some(node), Some(label)) = (node, label) else {
            continue;
        };
        let seq = out.entry(node.to_owned()).or_default();
        if seq.last() != Some(&label) {
            seq.push(label);
        }
    }
    out
}

/// message_sent counters per edge.
pub fn per_edge_counters(events: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        if e["type"] == "edge_update" && e["status"] == "message_sent" {
            out.entry(e["edge_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(e["counter"].as_u64().unwrap());
        }
    }
    out
}

pub fn to_values(events: &[EventEnvelope]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

pub fn node_statuses(events: &[EventEnvelope], node: &str) -> Vec<String> {
    per_node_sequences(&to_values(events))
        .remove(node)
        .unwrap_or_default()
}

/// Serves the files of `dir` over HTTP on a free loopback port (`GET /{name}`) and returns the
/// base URL and the number of requests served so far.
pub async fn serve_dir(dir: PathBuf) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = (dir, hits.clone());
    let app = axum::Router::new()
        .route(
            "/{*name}",
            axum::routing::get(
                |State((dir, hits)): State<(PathBuf, Arc<AtomicUsize>)>,
                 UrlPath(name): UrlPath<String>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    match std::fs::read(dir.join(name)) {
                        Ok(bytes) => Ok(bytes),
                        Err(_) => Err(StatusCode::NOT_FOUND),
                    }
                },
            ),
        )
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

/// ENV=test resources whose media policy allows `roots` and whose HTTP guard lets exactly
/// `allow_hosts` (`host:port`) through.
pub async fn resources_with_media(
    roots: Vec<PathBuf>,
    allow_hosts: Vec<(String, u16)>,
) -> EngineResources {
    let res = test_resources().await;
    let mut media = res.media.clone();
    media.policy.file_roots = roots;
    media.http = Some(Arc::new(nodetool_runtime::GuardedHttp::new(
        nodetool_runtime::HttpPolicy {
            allow_hosts,
            ..nodetool_runtime::HttpPolicy::default()
        },
    )));
    res.with_media(media)
}
