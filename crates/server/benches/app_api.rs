//! The NodeTool app's boot and load calls through a real socket (issue 18):
//!
//! - `GET /api/nodes/metadata` with every native node type registered: body size and latency
//!   (p50/p99 over sequential requests on one keep-alive connection).
//! - Loading 10 workflows: one tRPC batch of 10 `workflows.get` (POST `?batch=1`, as the web
//!   client's `httpBatchLink` sends it) vs 10 sequential REST `GET /api/workflows/{id}` vs the
//!   same 10 REST calls concurrently; interleaved rounds in one run, p50/p99 per load.
//!
//! The server runs in this process on its own multi-threaded runtime (Supabase-style JWT auth,
//! SQLite in a temp dir); the client is reqwest on another runtime.
//!
//! `cargo bench -p nodetool-server --bench app_api`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a failed unwrap is a failed run

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SECRET: &str = "bench-jwt-secret-0123456789abcdef";
const METADATA_ROUNDS: usize = 200;
const LOAD_ROUNDS: usize = 300;
const WORKFLOWS: usize = 10;

fn token(sub: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "aud": "authenticated", "role": "authenticated", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Starts the server; returns its base URL (the runtime lives as long as the process).
fn serve(dir: &std::path::Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let root = dir.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut env = BTreeMap::new();
            env.insert("ENV".to_owned(), "test".to_owned());
            env.insert("HOME".to_owned(), root.display().to_string());
            env.insert(
                "ASSET_FOLDER".to_owned(),
                root.join("assets").display().to_string(),
            );
            env.insert(
                "DB_PATH".to_owned(),
                root.join("nodetool.db").display().to_string(),
            );
            env.insert("AUTH_PROVIDER".to_owned(), "supabase".to_owned());
            env.insert("SUPABASE_JWT_SECRET".to_owned(), SECRET.to_owned());
            let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(
                env,
                root.join("config"),
            ))
            .unwrap();
            let auth = nodetool_server::Authenticator::from_settings(&settings).unwrap();
            let db = nodetool_server::db::open(&settings.db_path).await.unwrap();
            let resources = Arc::new(nodetool_runtime::Resources::new(
                settings,
                nodetool_runtime::ResourceOptions::default(),
            ));
            let registry = nodetool_nodes::registry();
            let metadata = nodetool_engine::metadata::registry_metadata(&registry, &|_| false);
            let state =
                nodetool_server::AppState::new(resources, auth, db).with_node_metadata(metadata);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            nodetool_server::serve(
                listener,
                nodetool_server::router(state),
                std::future::pending(),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        });
    });
    rx.recv().unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&url));
}

async fn run(url: &str) {
    let client = reqwest::Client::new();
    let bearer = token("bench-user");
    let get = |path: String| client.get(format!("{url}{path}")).bearer_auth(&bearer);

    // Node metadata.
    let body = get("/api/nodes/metadata".into())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let types = serde_json::from_slice::<Vec<Value>>(&body).unwrap().len();
    let mut lat = Vec::with_capacity(METADATA_ROUNDS);
    for _ in 0..METADATA_ROUNDS {
        let t = Instant::now();
        let b = get("/api/nodes/metadata".into())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        lat.push(t.elapsed());
        assert_eq!(b.len(), body.len());
    }
    println!(
        "GET /api/nodes/metadata: {types} node types, {} bytes ({:.1} KiB); p50 {}, p99 {} over {METADATA_ROUNDS} sequential requests",
        body.len(),
        body.len() as f64 / 1024.0,
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99)),
    );

    // Ten stored workflows, each a realistic small graph (the bundled hello example's).
    let example: Value =
        serde_json::from_str(include_str!("../../../examples/hello.json")).unwrap();
    let mut ids = Vec::new();
    for i in 0..WORKFLOWS {
        let w: Value = client
            .post(format!("{url}/api/workflows"))
            .bearer_auth(&bearer)
            .json(&json!({"name": format!("w{i}"), "graph": example["graph"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(w["id"].as_str().unwrap().to_owned());
    }
    let paths = ["workflows.get"; WORKFLOWS].join(",");
    let batch_input: serde_json::Map<String, Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i.to_string(), json!({ "id": id })))
        .collect();
    let batch_body = Value::Object(batch_input).to_string();

    let trpc = || async {
        let t = Instant::now();
        let items: Vec<Value> = client
            .post(format!("{url}/trpc/{paths}?batch=1"))
            .bearer_auth(&bearer)
            .header("content-type", "application/json")
            .body(batch_body.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let d = t.elapsed();
        assert_eq!(items.len(), WORKFLOWS);
        assert!(items.iter().all(|i| i["result"]["data"]["id"].is_string()));
        d
    };
    let rest_one = |id: String| {
        let req = get(format!("/api/workflows/{id}"));
        async move {
            let w: Value = req.send().await.unwrap().json().await.unwrap();
            assert!(w["id"].is_string());
        }
    };
    let rest_seq = || async {
        let t = Instant::now();
        for id in &ids {
            rest_one(id.clone()).await;
        }
        t.elapsed()
    };
    let rest_par = || async {
        let t = Instant::now();
        futures::future::join_all(ids.iter().map(|id| rest_one(id.clone()))).await;
        t.elapsed()
    };
    // Warm up the connection pool for the concurrent case.
    rest_par().await;
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..LOAD_ROUNDS {
        a.push(trpc().await);
        b.push(rest_seq().await);
        c.push(rest_par().await);
    }
    let (a50, b50, c50) = (pct(&mut a, 0.5), pct(&mut b, 0.5), pct(&mut c, 0.5));
    println!("load {WORKFLOWS} workflows, {LOAD_ROUNDS} interleaved rounds:");
    println!(
        "  tRPC batch of {WORKFLOWS} workflows.get: p50 {}, p99 {}",
        ms(a50),
        ms(pct(&mut a, 0.99))
    );
    println!(
        "  {WORKFLOWS} sequential REST GETs:        p50 {}, p99 {} ({:.2}x the batch)",
        ms(b50),
        ms(pct(&mut b, 0.99)),
        b50.as_secs_f64() / a50.as_secs_f64()
    );
    println!(
        "  {WORKFLOWS} concurrent REST GETs:        p50 {}, p99 {} ({:.2}x the batch)",
        ms(c50),
        ms(pct(&mut c, 0.99)),
        c50.as_secs_f64() / a50.as_secs_f64()
    );
}
