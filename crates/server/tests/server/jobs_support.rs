//! A real server with a job manager (threaded strategy, sharing the server's SQLite pool), plus
//! SSE/NDJSON readers and test workflows. Used by the jobs, ws and other job tests.
// Each test module uses its own subset; a failed unwrap fails the test.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodetool_config::{Settings, Sources};
use nodetool_engine::Engine;
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{JobExecutionManager, JobStore, ManagerConfig};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_server::{AppState, Authenticator};
use serde_json::{json, Value};

pub const JWT_SECRET: &str = "jobs-test-jwt-secret-0123456789abcdef";

pub struct JobServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub manager: JobExecutionManager,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JobServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JobServer {
    pub fn u(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

/// `auth`: "local", "static" (token "tok") or "supabase" (HS256 JWTs, see [`token`]).
pub async fn start(auth: &str) -> JobServer {
    start_with(auth, ManagerConfig::default()).await
}

/// [`start`] with a manager configured by the test (e.g. a small replay buffer).
pub async fn start_with(auth: &str, mut config: ManagerConfig) -> JobServer {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
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
    env.insert("AUTH_PROVIDER".to_owned(), auth.to_owned());
    env.insert("SERVER_AUTH_TOKEN".to_owned(), "tok".to_owned());
    env.insert("SUPABASE_JWT_SECRET".to_owned(), JWT_SECRET.to_owned());
    let settings = Settings::load(&Sources::new(env, root.join("config"))).unwrap();
    let authenticator = Authenticator::from_settings(&settings).unwrap();
    let db_path = settings.db_path.clone();
    let resources = Arc::new(Resources::new(settings, ResourceOptions::default()));
    let db = nodetool_server::db::open(&db_path).await.unwrap();
    let registry = Arc::new(nodetool_nodes::registry());
    // As `nodetool serve` does: NodeTool's streamed-input rule knows the streaming input types.
    config.node_facts = nodetool_exec::NodeFacts::from_registry(&registry);
    let engine = Engine::new(registry, resources.engine_resources().await.unwrap());
    let store = JobStore::from_pool(db.clone()).await.unwrap();
    let manager = JobExecutionManager::new(
        store,
        vec![Arc::new(ThreadedStrategy::new(engine, 2).unwrap())],
        config,
    )
    .await
    .unwrap();
    let state = AppState::new(resources, authenticator, db).with_jobs(manager.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = nodetool_server::router(state);
    let task = tokio::spawn(async move {
        nodetool_server::serve(
            listener,
            app,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    });
    JobServer {
        url: format!("http://{addr}"),
        addr,
        manager,
        client: reqwest::Client::new(),
        _dir: dir,
        task,
    }
}

/// A Supabase-style user JWT for `sub`.
pub fn token(sub: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "aud": "authenticated", "role": "authenticated", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn graph(nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    json!({"nodes": nodes, "edges": edges})
}

/// Many events: a streaming generator of `count` items and a `steps`-step progress node.
pub fn busy_graph(count: u32, steps: u32) -> Value {
    graph(
        vec![
            json!({"id": "gen", "type": "nodetool.test.Generate", "data": {"count": count}}),
            json!({"id": "prog", "type": "nodetool.test.Progress", "data": {"steps": steps}}),
            json!({"id": "o1", "type": "nodetool.output.Output", "data": {"name": "numbers"}}),
            json!({"id": "o2", "type": "nodetool.output.Output", "data": {"name": "steps"}}),
        ],
        vec![
            json!({"id": "e1", "source": "gen", "sourceHandle": "output", "target": "o1", "targetHandle": "value"}),
            json!({"id": "e2", "source": "prog", "sourceHandle": "output", "target": "o2", "targetHandle": "value"}),
        ],
    )
}

/// A job that runs for `seconds` unless cancelled.
pub fn sleep_graph(seconds: f64) -> Value {
    graph(
        vec![
            json!({"id": "n", "type": "nodetool.test.Sleep", "data": {"seconds": seconds, "value": "done"}}),
            json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}),
        ],
        vec![
            json!({"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"}),
        ],
    )
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads SSE events from a streaming response, `max` at most (then drops the connection).
pub async fn read_sse(mut resp: reqwest::Response, max: usize) -> Vec<Sse> {
    let mut buf = String::new();
    let mut out = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = Sse {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut any = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    ev.id = Some(v.trim().to_owned());
                    any = true;
                } else if let Some(v) = line.strip_prefix("event:") {
                    ev.event = Some(v.trim().to_owned());
                    any = true;
                } else if let Some(v) = line.strip_prefix("data:") {
                    ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    any = true;
                }
            }
            // Comment-only blocks are keep-alives.
            if any {
                out.push(ev);
                if out.len() >= max {
                    return out;
                }
            }
        }
        match resp.chunk().await.unwrap() {
            Some(chunk) => buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            None => return out,
        }
    }
}

/// The seqs of `events`, asserting each `id:` equals the envelope's seq.
pub fn sse_seqs(events: &[Sse]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            assert_eq!(e.id.as_deref(), Some(seq.to_string().as_str()), "{e:?}");
            assert_eq!(e.event.as_deref(), v["type"].as_str(), "{e:?}");
            seq
        })
        .collect()
}
