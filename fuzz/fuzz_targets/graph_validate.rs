//! Workflow JSON → `Graph` → `validate` and `preflight` with the default node registry: the
//! path every entry point (`nodetool run`, REST, /ws) takes before a job runs.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nodetool_engine::{
    parse_workflow, preflight, validate, EngineResources, Extensions, MediaServices, Registry,
};
use serde_json::{Map, Value};

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(nodetool_nodes::registry)
}

fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(workflow) = parse_workflow(text) else {
        return;
    };
    // Job params ride along in the seed files as a top-level `params` object.
    let params = match workflow.extra.get("params") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let registry = registry();
    let first = validate(&workflow.graph, registry, &params);
    if let Err(e) = &first {
        // Messages are built from user text: formatting them must not panic either.
        let _ = e.to_string();
    }
    let checked = preflight(&workflow.graph, registry, resources(), &BTreeMap::new());
    if let Err(e) = &checked {
        let _ = e.to_string();
    }
    // What we write must load again (a workflow we save is one we, and NodeTool, can read).
    let written = serde_json::to_string(&workflow).expect("a parsed workflow serialises");
    let again = parse_workflow(&written)
        .unwrap_or_else(|e| panic!("re-reading a written workflow failed: {e}\n{written}"));
    assert_eq!(again.graph.nodes.len(), workflow.graph.nodes.len());
    assert_eq!(again.graph.edges.len(), workflow.graph.edges.len());
    assert_eq!(
        validate(&again.graph, registry, &params).is_ok(),
        first.is_ok(),
        "validation changed after a write/read round trip"
    );
}

/// Nodes and request handlers run on tokio workers: 2 MiB stacks.
const STACK: usize = 2 * 1024 * 1024;

fn resources() -> &'static EngineResources {
    static RESOURCES: OnceLock<EngineResources> = OnceLock::new();
    RESOURCES.get_or_init(|| EngineResources {
        asset_storage: Arc::new(nodetool_storage::MemoryStorage::new("/api/storage")),
        temp_storage: Arc::new(nodetool_storage::MemoryStorage::new("/api/storage/temp")),
        asset_store: None,
        node_cache: Arc::new(nodetool_cache::MemoryNodeCache::new(1 << 20)),
        node_cache_ttl: Duration::from_secs(60),
        media: MediaServices::default(),
        extensions: Extensions::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || run(&data))
        .expect("spawn")
        .join()
        .expect("no panic");
});
