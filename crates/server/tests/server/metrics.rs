//! `/metrics` through a real socket: job counters and durations, live jobs, node cache hits,
//! and open SSE / WebSocket streams.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use std::time::Duration;

use futures::StreamExt;
use jobs_support::{sleep_graph, start, JobServer};
use serde_json::{json, Value};

/// How long a gauge may take to settle (a dropped SSE client is noticed when the server next
/// reads or writes that connection).
const SETTLE: Duration = Duration::from_secs(40);

async fn scrape(s: &JobServer) -> String {
    let resp = s.client.get(s.u("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    resp.text().await.unwrap()
}

/// The value of the sample `series` (name with labels, exactly as rendered); `None` if absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// Scrapes until `series` has `want`, or fails after [`SETTLE`] with the last scrape.
async fn wait_for(s: &JobServer, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let text = scrape(s).await;
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {want}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit(s: &JobServer, graph: Value) -> String {
    let resp = s
        .client
        .post(s.u("/api/jobs"))
        .json(&json!({"graph": graph, "execution_strategy": "threaded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_feed_the_counters_the_histogram_and_the_cache_ratio() {
    let s = start("local").await;
    let completed = "strategy=\"threaded\",status=\"completed\"";
    let before = scrape(&s).await;
    assert_eq!(
        sample(
            &before,
            &format!("nodetool_jobs_finished_total{{{completed}}}")
        ),
        None,
        "no job has finished yet:\n{before}"
    );
    assert_eq!(sample(&before, "nodetool_node_cache_hits_total"), Some(0.0));
    assert!(
        before.contains("nodetool_node_cache_hit_ratio NaN\n"),
        "{before}"
    );
    assert_eq!(
        sample(&before, "nodetool_jobs{status=\"running\"}"),
        Some(0.0)
    );

    // The same cacheable node twice: one miss, then one hit.
    let graph = sleep_graph(0.0);
    for _ in 0..2 {
        let id = submit(&s, graph.clone()).await;
        let rec = s
            .manager
            .wait(&nodetool_core::JobId::parse(&id).unwrap())
            .await
            .unwrap();
        assert_eq!(rec.status.as_str(), "completed", "{rec:?}");
    }
    // The manager reports a finished job to its observers just after `wait` can see it.
    wait_for(
        &s,
        &format!("nodetool_jobs_finished_total{{{completed}}}"),
        2.0,
    )
    .await;
    let text = scrape(&s).await;
    assert_eq!(
        sample(
            &text,
            &format!("nodetool_job_duration_seconds_count{{{completed}}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("nodetool_job_duration_seconds_bucket{{{completed},le=\"+Inf\"}}")
        ),
        Some(2.0)
    );
    let sum = sample(
        &text,
        &format!("nodetool_job_duration_seconds_sum{{{completed}}}"),
    )
    .unwrap();
    assert!((0.0..60.0).contains(&sum), "{sum}");
    assert_eq!(
        sample(&text, "nodetool_node_cache_hits_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "nodetool_node_cache_misses_total"), Some(1.0));
    assert_eq!(sample(&text, "nodetool_node_cache_hit_ratio"), Some(0.5));
    // Per node type, from each firing's figures: two Sleep firings, one answered by the cache.
    let sleep = "node_type=\"nodetool.test.Sleep\"";
    for (series, want) in [
        (
            format!("nodetool_node_firings_total{{{sleep},status=\"completed\"}}"),
            2.0,
        ),
        (
            format!("nodetool_node_cache_lookups_total{{{sleep},result=\"hit\"}}"),
            1.0,
        ),
        (
            format!("nodetool_node_cache_lookups_total{{{sleep},result=\"miss\"}}"),
            1.0,
        ),
        (
            format!("nodetool_node_storage_written_bytes_total{{{sleep}}}"),
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series}:\n{text}");
    }
    let wall = sample(
        &text,
        &format!("nodetool_node_wall_seconds_total{{{sleep}}}"),
    )
    .unwrap();
    assert!((0.0..60.0).contains(&wall), "{wall}");

    // A failed job is counted under its own status.
    let failing = json!({
        "nodes": [
            {"id": "f", "type": "nodetool.test.Fail", "data": {"message": "boom"}},
            {"id": "o", "type": "nodetool.output.Output", "data": {"name": "out"}},
        ],
        "edges": [
            {"id": "e", "source": "f", "sourceHandle": "output", "target": "o", "targetHandle": "value"},
        ],
    });
    let id = submit(&s, failing).await;
    assert_eq!(
        s.manager
            .wait(&nodetool_core::JobId::parse(&id).unwrap())
            .await
            .unwrap()
            .status
            .as_str(),
        "failed"
    );
    wait_for(
        &s,
        "nodetool_jobs_finished_total{strategy=\"threaded\",status=\"failed\"}",
        1.0,
    )
    .await;
    let text = scrape(&s).await;
    assert_eq!(
        sample(
            &text,
            "nodetool_node_firings_total{node_type=\"nodetool.test.Fail\",status=\"failed\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sse_streams_and_running_jobs_are_gauged() {
    let s = start("local").await;
    let id = submit(&s, sleep_graph(60.0)).await;
    wait_for(&s, "nodetool_jobs{status=\"running\"}", 1.0).await;
    assert_eq!(
        sample(&scrape(&s).await, "nodetool_open_streams{kind=\"sse\"}"),
        Some(0.0)
    );

    // A separate client, so that dropping it closes its connection.
    let sse_client = reqwest::Client::new();
    let resp = sse_client
        .get(s.u(&format!("/api/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    // The first event proves the stream is being served.
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    wait_for(&s, "nodetool_open_streams{kind=\"sse\"}", 1.0).await;

    drop(body);
    drop(sse_client);
    wait_for(&s, "nodetool_open_streams{kind=\"sse\"}", 0.0).await;

    let resp = s
        .client
        .post(s.u(&format!("/api/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for(&s, "nodetool_jobs{status=\"running\"}", 0.0).await;
    wait_for(
        &s,
        "nodetool_jobs_finished_total{strategy=\"threaded\",status=\"cancelled\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_are_gauged() {
    let s = start("local").await;
    let url = format!("{}/ws", s.url.replacen("http://", "ws://", 1));
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    wait_for(&s, "nodetool_open_streams{kind=\"websocket\"}", 1.0).await;
    drop(ws);
    wait_for(&s, "nodetool_open_streams{kind=\"websocket\"}", 0.0).await;
}
