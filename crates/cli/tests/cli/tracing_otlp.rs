//! Spans through the real binary: `nodetool serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` exports
//! each job's `job` span and its nodes' `node` spans over OTLP/HTTP (decoded here with the
//! official protobuf schema), joined to the caller's W3C `traceparent` from REST or the /ws
//! handshake, through subprocess and Docker workers as well (their spans relayed by the server);
//! a malformed `traceparent` starts a fresh trace; an unreachable collector changes nothing for
//! jobs.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use nodetool_testkit::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};

/// Hang guard, not a timing claim.
const HANG: Duration = Duration::from_secs(90);

struct Server {
    proc: ServeProcess,
    home: NodetoolHome,
}

impl Server {
    fn start(vars: &[(&str, &str)]) -> Self {
        let home = NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"));
        Self {
            proc: home.serve(vars, HANG),
            home,
        }
    }

    /// `POST /api/jobs` with `traceparent` (when given) as a header; the ended record.
    async fn rest_job(&self, strategy: &str, traceparent: Option<&str>) -> Value {
        let mut req = reqwest::Client::new()
            .post(self.proc.url("/api/jobs"))
            .json(&json!({"graph": graph(), "execution_strategy": strategy}));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        self.wait_job(body["id"].as_str().unwrap()).await
    }

    async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + HANG;
        loop {
            let rec: Value = reqwest::get(self.proc.url(&format!("/api/jobs/{id}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if ["completed", "failed", "cancelled"].contains(&rec["status"].as_str().unwrap_or(""))
            {
                return rec;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {rec}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `run_job` over a /ws whose handshake carried `traceparent`; the job id once it ended.
    async fn ws_job(&self, traceparent: &str) -> String {
        let url = format!("ws://127.0.0.1:{}/ws", self.proc.port());
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ws.send(Message::text(
            json!({"command": "set_mode", "data": {"mode": "text"}}).to_string(),
        ))
        .await
        .unwrap();
        let cmd = json!({"command": "run_job", "data": {"graph": graph(), "execution_strategy": "threaded"}});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let deadline = Instant::now() + HANG;
        loop {
            assert!(Instant::now() < deadline, "no terminal job_update over /ws");
            let Ok(Some(Ok(msg))) = tokio::time::timeout(HANG, ws.next()).await else {
                panic!("/ws closed before the job ended");
            };
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "job_update" && v["status"] == "completed" {
                return v["job_id"].as_str().unwrap().to_owned();
            }
            assert_ne!(v["status"], "failed", "{v}");
        }
    }
}

impl Server {
    /// `nodetool_dropped_spans_total` from `/metrics`.
    async fn dropped_spans(&self) -> u64 {
        let text = reqwest::get(self.proc.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("nodetool_dropped_spans_total "))
            .unwrap_or_else(|| panic!("no nodetool_dropped_spans_total in {text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until at least `n` spans were counted as dropped.
    async fn wait_dropped_spans(&self, n: u64) {
        let deadline = Instant::now() + HANG;
        while self.dropped_spans().await < n {
            assert!(Instant::now() < deadline, "no dropped spans counted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn graph() -> Value {
    json!({
        "nodes": [
            {"id": "n", "type": "nodetool.test.Sleep", "data": {"seconds": 0.0, "value": "done"}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}},
        ],
        "edges": [
            {"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
        ],
    })
}

/// A sampled `traceparent` with a fresh trace id: (header, trace id, parent id).
fn traceparent() -> (String, String, String) {
    // 32 lower-case hex digits each; the parent id is the last 16 of another one.
    let trace = nodetool_core::id::new_id();
    let parent = nodetool_core::id::new_id()[16..].to_owned();
    (format!("00-{trace}-{parent}-01"), trace, parent)
}

fn job_span<'a>(
    spans: &'a [ReceivedSpan],
    job_id: &str,
    strategy: &str,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.name == "job"
            && s.attribute("job_id") == Some(job_id)
            && s.attribute("strategy") == Some(strategy)
    })
}

fn children<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent.span_id)
        .collect()
}

/// Both node types of [`graph`] have a `node` span under `job`, in its trace.
fn assert_node_spans(spans: &[ReceivedSpan], job: &ReceivedSpan) {
    let nodes = children(spans, job, "node");
    let mut types: Vec<&str> = nodes
        .iter()
        .filter_map(|s| s.attribute("node_type"))
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        ["nodetool.output.Output", "nodetool.test.Sleep"],
        "{spans:#?}"
    );
    for n in nodes {
        assert_eq!(n.trace_id, job.trace_id);
        assert!(n.attribute("node_id").is_some(), "{n:?}");
        // What the node did: one firing (from the cache or not: a later job of the same
        // graph hits it), its own thread CPU time.
        assert_eq!(n.attribute("firings"), Some("1"), "{n:?}");
        assert!(n.attribute("cache_hits").is_some(), "{n:?}");
        let cpu: f64 = n
            .attribute("cpu_ms")
            .unwrap_or("x")
            .parse()
            .expect("cpu_ms");
        assert!(cpu >= 0.0, "{n:?}");
    }
}

/// Runs a job on the worker `strategy` with a caller's `traceparent`: the manager's job span is a
/// child of the caller's, the worker's job span a child of the manager's, its nodes under it.
/// Returns the worker's job span.
async fn assert_worker_trace(
    server: &Server,
    receiver: &OtlpReceiver,
    strategy: &str,
) -> ReceivedSpan {
    let (tp, trace, parent) = traceparent();
    let rec = server.rest_job(strategy, Some(&tp)).await;
    assert_eq!(rec["status"], "completed", "{strategy}: {rec}");
    let job_id = rec["id"].as_str().unwrap().to_owned();
    let spans = receiver
        .wait_for(HANG, |s| {
            job_span(s, &job_id, "worker").is_some_and(|w| children(s, w, "node").len() == 2)
                && job_span(s, &job_id, strategy).is_some()
        })
        .await;
    let manager_span = job_span(&spans, &job_id, strategy).expect("the manager's job span");
    assert_eq!(manager_span.trace_id, trace);
    assert_eq!(manager_span.parent_span_id, parent);
    let worker_span = job_span(&spans, &job_id, "worker").expect("the worker's job span");
    assert_eq!(worker_span.trace_id, trace);
    assert_eq!(worker_span.parent_span_id, manager_span.span_id);
    assert_node_spans(&spans, worker_span);
    worker_span.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_join_the_callers_trace_on_rest_ws_and_a_worker() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "nodetool-under-test"),
    ]);

    // REST, threaded: the job span is a child of the caller's span, its nodes children of it.
    let (tp, trace, parent) = traceparent();
    let rec = server.rest_job("threaded", Some(&tp)).await;
    assert_eq!(rec["status"], "completed", "{rec}");
    let job_id = rec["id"].as_str().unwrap().to_owned();
    let spans = receiver
        .wait_for(HANG, |s| {
            job_span(s, &job_id, "threaded").is_some_and(|j| children(s, j, "node").len() == 2)
        })
        .await;
    let job = job_span(&spans, &job_id, "threaded").expect("a job span");
    assert_eq!(job.trace_id, trace);
    assert_eq!(job.parent_span_id, parent);
    assert_eq!(job.attribute("user_id"), Some("1"), "{job:?}");
    assert_eq!(job.service, "nodetool-under-test");
    assert_node_spans(&spans, job);

    // REST, subprocess: the worker's own job span hangs under the manager's, its nodes under it.
    assert_worker_trace(&server, &receiver, "subprocess").await;

    // /ws: the handshake's traceparent.
    let (tp, trace, parent) = traceparent();
    let job_id = server.ws_job(&tp).await;
    let spans = receiver
        .wait_for(HANG, |s| job_span(s, &job_id, "threaded").is_some())
        .await;
    let job = job_span(&spans, &job_id, "threaded").expect("a /ws job span");
    assert_eq!(
        (job.trace_id.as_str(), job.parent_span_id.as_str()),
        (trace.as_str(), parent.as_str())
    );

    // An unsampled caller: the job's spans are not recorded. Spans leave in order, so once a
    // later job's spans have arrived, any of this one's would have too.
    let (tp, _, _) = traceparent();
    let unsampled = tp.replace("-01", "-00");
    let unsampled_trace = unsampled.split('-').nth(1).unwrap().to_owned();
    let rec = server.rest_job("threaded", Some(&unsampled)).await;
    assert_eq!(rec["status"], "completed", "{rec}");
    let quiet_job = rec["id"].as_str().unwrap().to_owned();

    // A malformed traceparent is ignored: the job runs, in a trace of its own.
    let rec = server.rest_job("threaded", Some("00-not-a-trace-01")).await;
    assert_eq!(rec["status"], "completed", "{rec}");
    let job_id = rec["id"].as_str().unwrap().to_owned();
    let spans = receiver
        .wait_for(HANG, |s| job_span(s, &job_id, "threaded").is_some())
        .await;
    let job = job_span(&spans, &job_id, "threaded").expect("a job span without a caller");
    assert!(job.parent_span_id.is_empty(), "{job:?}");
    assert_eq!(job.trace_id.len(), 32);
    assert!(spans
        .iter()
        .filter(|s| s.name == "job" && s.attribute("job_id") != Some(job_id.as_str()))
        .all(|s| s.trace_id != job.trace_id));
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id != unsampled_trace
                && s.attribute("job_id") != Some(quiet_job.as_str())),
        "an unsampled trace was recorded"
    );
    // A collector that takes every batch: nothing was dropped.
    assert_eq!(server.dropped_spans().await, 0);
}

/// A Docker worker has no network: its spans reach the collector through the server, in the
/// job's trace, under the manager's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_workers_spans_reach_the_collector_through_the_server() {
    let Some(client) = crate::support::docker_client(
        "a_docker_workers_spans_reach_the_collector_through_the_server",
    )
    .await
    else {
        return;
    };
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let server = Server::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    crate::support::worker_image(&server.home, &client).await;

    let worker_span = assert_worker_trace(&server, &receiver, "docker").await;
    assert_eq!(worker_span.service, "nodetool");
    assert_eq!(server.dropped_spans().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_changes_nothing_for_jobs() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = Server::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let (tp, _, _) = traceparent();
    for strategy in ["threaded", "subprocess"] {
        let rec = server.rest_job(strategy, Some(&tp)).await;
        assert_eq!(rec["status"], "completed", "{strategy}: {rec}");
    }
    let health = reqwest::get(server.proc.url("/health")).await.unwrap();
    assert!(health.status().is_success());
    // Every span, refused by the collector that is not there, is counted: the threaded job's
    // (job + 2 nodes), the manager's span of the subprocess job, and the 3 its worker relayed.
    server.wait_dropped_spans(7).await;
}

/// A collector that accepts connections and never answers: exports wait out their timeout, the
/// bounded queue fills, and the spans past it are dropped and counted while every job
/// completes and the server stays responsive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_fills_the_queue_and_drops_are_counted() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let server = Server::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    assert_eq!(server.dropped_spans().await, 0);
    // Each job makes a job span and one per node: enough jobs to pass the queue's bound.
    let spans_per_job = 1 + graph()["nodes"].as_array().unwrap().len();
    let jobs = 2048 / spans_per_job + 200;
    for _ in 0..jobs {
        let resp = reqwest::Client::new()
            .post(server.proc.url("/api/jobs?stream=true"))
            .json(&json!({"graph": graph(), "execution_strategy": "threaded"}))
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        assert!(text.contains("\"status\":\"completed\""), "{text}");
    }
    server.wait_dropped_spans(1).await;
    let health = reqwest::get(server.proc.url("/health")).await.unwrap();
    assert!(health.status().is_success());
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodetool_run_exports_its_job_and_its_workers_spans() {
    let receiver = OtlpReceiver::start().await;
    let home = NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"));
    let file = home.path("wf.json");
    std::fs::write(
        &file,
        json!({"id": "wf-trace", "graph": graph()}).to_string(),
    )
    .unwrap();
    let endpoint = receiver.endpoint();
    let mut cmd = home.cmd(
        &["run", file.to_str().unwrap(), "--strategy", "subprocess"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The process flushed its spans before it exited; the worker flushed its own before.
    let spans = receiver.spans();
    let run = spans
        .iter()
        .find(|s| s.name == "job" && s.attribute("strategy") == Some("subprocess"))
        .unwrap_or_else(|| panic!("no job span from nodetool run: {spans:#?}"));
    assert_eq!(run.attribute("workflow_id"), Some("wf-trace"));
    let worker = job_span(&spans, run.attribute("job_id").unwrap(), "worker").expect("worker span");
    assert_eq!(worker.parent_span_id, run.span_id);
    assert_node_spans(&spans, worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_call_carries_the_jobs_trace_to_the_model_server() {
    let receiver = OtlpReceiver::start().await;
    let peer = nodetool_testkit::openai_peer::OpenAiPeer::start(&["gpt-test"]).await;
    peer.script()
        .set_default(nodetool_testkit::scripted::Reply::text("traced"));
    let endpoint = receiver.endpoint();
    let base = peer.base_url();
    let server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", "sk-trace-test"),
    ]);
    let agent = json!({"nodes": [
        {"id": "a", "type": "nodetool.agents.Agent", "data": {
            "model": {"type": "language_model", "provider": "openai", "id": "gpt-test", "name": "gpt-test"},
            "prompt": "hi"}},
        {"id": "o", "type": "nodetool.output.Output", "data": {"name": "answer"}}],
        "edges": [{"id": "e", "source": "a", "sourceHandle": "text", "target": "o", "targetHandle": "value"}]});
    let (tp, trace, _) = traceparent();
    let resp = reqwest::Client::new()
        .post(server.proc.url("/api/jobs"))
        .header("traceparent", &tp)
        .json(&json!({"graph": agent, "execution_strategy": "threaded"}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let rec = server.wait_job(body["id"].as_str().unwrap()).await;
    assert_eq!(rec["status"], "completed", "{rec}");

    // The model server saw the job's trace, with the provider span as the parent.
    let received = peer.script().received();
    let sent = received
        .iter()
        .find_map(|r| r.header("traceparent"))
        .unwrap_or_else(|| panic!("no traceparent reached the model server: {received:?}"));
    let sent = nodetool_core::trace::TraceParent::parse(sent).expect("a valid traceparent");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&sent.trace_id), trace);
    let spans = receiver
        .wait_for(HANG, |s| s.iter().any(|x| x.name == "provider"))
        .await;
    let provider = spans
        .iter()
        .find(|s| s.name == "provider")
        .expect("a provider span");
    assert_eq!(provider.span_id, hex(&sent.parent_id));
    assert_eq!(
        provider.attribute("provider"),
        Some("openai"),
        "{provider:?}"
    );
    assert_eq!(provider.attribute("model"), Some("gpt-test"));
    let node = spans
        .iter()
        .find(|s| s.span_id == provider.parent_span_id)
        .expect("the provider span's parent");
    assert_eq!(
        (node.name.as_str(), node.attribute("node_type")),
        ("node", Some("nodetool.agents.Agent"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answered_from_the_cache_says_so_in_its_span() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let server = Server::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let stringify = json!({"nodes": [
        {"id": "j", "type": "lib.json.StringifyJSON", "data": {"data": {"cached": true}}},
        {"id": "o", "type": "nodetool.output.Output", "data": {"name": "text"}}],
        "edges": [{"id": "e", "source": "j", "sourceHandle": "output", "target": "o", "targetHandle": "value"}]});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = reqwest::Client::new()
            .post(server.proc.url("/api/jobs"))
            .json(&json!({"graph": stringify, "execution_strategy": "threaded"}))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        let rec = server.wait_job(body["id"].as_str().unwrap()).await;
        assert_eq!(rec["status"], "completed", "{rec}");
        ids.push(rec["id"].as_str().unwrap().to_owned());
    }
    let node_of = |spans: &[ReceivedSpan], job_id: &str| -> Option<ReceivedSpan> {
        let job = job_span(spans, job_id, "threaded")?;
        children(spans, job, "node")
            .into_iter()
            .find(|n| n.attribute("node_type") == Some("lib.json.StringifyJSON"))
            .cloned()
    };
    let spans = receiver
        .wait_for(HANG, |s| ids.iter().all(|id| node_of(s, id).is_some()))
        .await;
    let first = node_of(&spans, &ids[0]).expect("first run's node span");
    let second = node_of(&spans, &ids[1]).expect("second run's node span");
    assert_eq!(first.attribute("cache_hits"), Some("0"), "{first:?}");
    assert_eq!(second.attribute("cache_hits"), Some("1"), "{second:?}");
    assert_eq!(second.attribute("firings"), Some("1"), "{second:?}");
}
