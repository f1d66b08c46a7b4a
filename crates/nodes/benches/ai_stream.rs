//! Time to first token and whole-stream time of one chat completion from a real llama.cpp
//! server (the tiny GGUF model), through `nodetool.agents.Agent` in the engine versus the same
//! request made with `curl -N`, interleaved in one run.
//!
//!     ./scripts/ai-test-env && cargo bench -p nodetool-nodes --bench ai_stream
//!
//! TTFT is measured to the first non-empty content delta: for the node, the first `chunk`
//! event; for curl, the first `data:` line whose delta has non-empty `content`. Whole-stream
//! time ends at the node's completion (`node_update completed`) or curl's `[DONE]`.

#![allow(clippy::unwrap_used)] // a bench: a failed unwrap is a failed run

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodetool_config::{Settings, Sources};
use nodetool_engine::{Engine, Event, EventEnvelope, EventSink, RunOptions, RunRequest, Status};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_testkit::llama_server::LlamaServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 30;
const MAX_TOKENS: u32 = 96;
const SYSTEM: &str = "You are a friendly assistant";
const PROMPT: &str = "Tell me a story.";

/// Records when the first chunk and the node's completion arrive.
#[derive(Debug)]
struct Timing {
    start: Instant,
    first: Mutex<Option<Duration>>,
    done: Mutex<Option<Duration>>,
}

impl EventSink for Timing {
    fn send(&self, env: EventEnvelope) {
        match &env.event {
            Event::Chunk(c) if !c.content.is_empty() => {
                self.first
                    .lock()
                    .unwrap()
                    .get_or_insert(self.start.elapsed());
            }
            Event::NodeUpdate(n) if n.status == Status::Completed => {
                *self.done.lock().unwrap() = Some(self.start.elapsed());
            }
            _ => {}
        }
    }
}

async fn node_round(engine: &Engine) -> (Duration, Duration) {
    let graph = serde_json::from_value(
        json!({"nodes": [{"id": "a", "type": "nodetool.agents.Agent", "data": {
        "model": {"type": "language_model", "provider": "llama_cpp", "id": "tiny"},
        "system": SYSTEM, "prompt": PROMPT, "max_tokens": MAX_TOKENS}}], "edges": []}),
    )
    .unwrap();
    let timing = Arc::new(Timing {
        start: Instant::now(),
        first: Mutex::new(None),
        done: Mutex::new(None),
    });
    let outcome = engine
        .run(
            RunRequest::new(graph),
            RunOptions::default(),
            timing.clone(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    let first = timing.first.lock().unwrap().expect("a chunk");
    let done = timing.done.lock().unwrap().expect("completed");
    (first, done)
}

fn curl_round(url: &str) -> (Duration, Duration) {
    let body = json!({"model": "tiny", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]});
    let start = Instant::now();
    let mut child = Command::new("curl")
        .args([
            "-sN",
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
            url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut first = None;
    let mut done = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if first.is_none() && line.starts_with("data: {") {
            let v: serde_json::Value = serde_json::from_str(&line[6..]).unwrap();
            if v.pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
                .is_some_and(|c| !c.is_empty())
            {
                first = Some(start.elapsed());
            }
        }
        if line.trim() == "data: [DONE]" {
            done = Some(start.elapsed());
        }
    }
    child.wait().unwrap();
    (first.expect("a content delta"), done.expect("[DONE]"))
}

/// How long curl takes to start, connect and read a tiny answer (`GET /v1/models`): its
/// process start-up, which the node path does not pay.
fn curl_overhead(models_url: &str) -> Duration {
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-s", models_url])
        .output()
        .expect("curl");
    assert!(out.status.success());
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = match LlamaServer::start().await {
            Ok(s) => s,
            Err(why) => {
                eprintln!("ai_stream bench skipped: {why}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let env: BTreeMap<String, String> =
            [("ENV".to_owned(), "test".to_owned()), ("LLAMA_CPP_URL".to_owned(), server.root_url())].into();
        let settings = Settings::load(&Sources::new(env, dir.path())).unwrap();
        let resources = Resources::new(settings, ResourceOptions::default());
        let engine = Engine::new(Arc::new(nodetool_nodes::registry()), resources.engine_resources().await.unwrap());
        let url = format!("{}/chat/completions", server.base_url());
        // Warm both paths (model pages, connection pool).
        for _ in 0..3 {
            node_round(&engine).await;
            let u = url.clone();
            tokio::task::spawn_blocking(move || curl_round(&u)).await.unwrap();
        }
        let (mut nf, mut nd, mut cf, mut cd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let models = format!("{}/models", server.base_url());
        let overhead = median((0..ROUNDS).map(|_| curl_overhead(&models)).collect());
        for i in 0..ROUNDS {
            // Interleaved, alternating who goes first.
            let node_first = i % 2 == 0;
            if node_first {
                let (f, d) = node_round(&engine).await;
                nf.push(f);
                nd.push(d);
            }
            let u = url.clone();
            let (f, d) = tokio::task::spawn_blocking(move || curl_round(&u)).await.unwrap();
            cf.push(f);
            cd.push(d);
            if !node_first {
                let (f, d) = node_round(&engine).await;
                nf.push(f);
                nd.push(d);
            }
        }
        let (nf, nd, cf, cd) = (median(nf), median(nd), median(cf), median(cd));
        println!("rounds: {ROUNDS}, max_tokens: {MAX_TOKENS} (llama.cpp, tiny GGUF)");
        println!("TTFT   node {:>8.2} ms   curl {:>8.2} ms   ratio {:.3}", ms(nf), ms(cf), ms(nf) / ms(cf));
        let cf_net = cf.saturating_sub(overhead);
        println!(
            "TTFT   node {:>8.2} ms   curl minus its start-up ({:.2} ms, GET /v1/models) {:>8.2} ms   ratio {:.3}",
            ms(nf),
            ms(overhead),
            ms(cf_net),
            ms(nf) / ms(cf_net)
        );
        println!("stream node {:>8.2} ms   curl {:>8.2} ms   ratio {:.3}", ms(nd), ms(cd), ms(nd) / ms(cd));
        println!(
            "tokens/s (max_tokens / stream time)  node {:.0}   curl {:.0}",
            f64::from(MAX_TOKENS) / nd.as_secs_f64(),
            f64::from(MAX_TOKENS) / cd.as_secs_f64()
        );
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
