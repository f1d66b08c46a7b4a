//! `/ws` under backpressure, through real sockets: a client that stops reading is told what it
//! missed (a `lag` notice) and never slows the job or another client of the same job.
//!
//! The jobs below emit ~200,000 events (~40 MB of JSON frames): about ten times what the kernel's
//! loopback socket buffers, the socket's queue (`SOCKET_QUEUE`) and the broadcast hold together,
//! so a client that does not read really does stall its forwarder.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jobs_support::{busy_graph, start_with};
use nodetool_exec::ManagerConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Fails the test only on a hang, never on slowness.
const HANG: Duration = Duration::from_secs(60);
/// `Generate` items; with the `output_update` and `edge_update` each item posts, ~2× events.
const ITEMS: u32 = 100_000;

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, fut)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

async fn connect(http: &str) -> Ws {
    let url = format!("{}/ws", http.replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Sends a JSON text frame (which also puts the socket in text mode).
async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match within("next frame", ws.next()).await.expect("socket open") {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

fn is_done(v: &Value) -> bool {
    v["type"] == "job_update"
        && ["completed", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))
}

/// Frames until the job's terminal `job_update`: (events, lag notices), in arrival order.
async fn drain(ws: &mut Ws, job_id: &str) -> (Vec<Value>, Vec<Value>) {
    let (mut events, mut lags) = (Vec::new(), Vec::new());
    loop {
        let v = recv(ws).await;
        assert_eq!(v["job_id"], job_id, "{v}");
        if v["type"] == "lag" {
            lags.push(v);
            continue;
        }
        let done = is_done(&v);
        events.push(v);
        if done {
            return (events, lags);
        }
    }
}

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap()
}

async fn run_job(ws: &mut Ws) -> String {
    send(
        ws,
        json!({"command": "run_job", "data": {"graph": busy_graph(ITEMS, 1)}}),
    )
    .await;
    let reply = recv(ws).await;
    assert_eq!(reply["message"], "Job started", "{reply}");
    reply["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_a_lag_notice_and_can_recover() {
    // A small replay buffer: whatever does not fit in the socket's buffers, its queue and the
    // last 64 events is lost to a client that does not read.
    let s = start_with(
        "local",
        ManagerConfig {
            replay_events: 64,
            ..ManagerConfig::default()
        },
    )
    .await;
    let mut ws = connect(&s.url).await;
    let job_id = run_job(&mut ws).await;

    // Read nothing until the job is over: it must finish regardless.
    let rec = within(
        "job",
        s.manager
            .wait(&nodetool_core::JobId::parse(&job_id).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(rec.status.as_str(), "completed", "{:?}", rec.error);

    let (events, lags) = drain(&mut ws, &job_id).await;
    assert!(
        !lags.is_empty(),
        "no lag notice after {} events",
        events.len()
    );
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    let total = seq(last);
    assert!(total > 2 * u64::from(ITEMS), "only {total} events");

    // Every seq 1..=total is either delivered once, in order, or named by exactly one notice
    // that sits right where the gap is.
    let mut covered = 0u64;
    let mut lag_iter = lags.iter().peekable();
    for e in &events {
        let s = seq(e);
        if s != covered + 1 {
            let lag = lag_iter
                .next()
                .unwrap_or_else(|| panic!("silent gap before {s}"));
            assert_eq!(lag["missed_from_seq"].as_u64(), Some(covered + 1), "{lag}");
            assert_eq!(lag["missed_to_seq"].as_u64(), Some(s - 1), "{lag}");
        }
        covered = s;
    }
    assert!(lag_iter.next().is_none(), "a lag notice without a gap");
    assert_eq!(covered, total);
    let missed: u64 = lags
        .iter()
        .map(|l| l["missed_to_seq"].as_u64().unwrap() - l["missed_from_seq"].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(missed + events.len() as u64, total);

    // Recovery: the result is complete in the record and in get_status ...
    let job: Value = s
        .client
        .get(s.u(&format!("/api/jobs/{job_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "completed");
    assert_eq!(
        job["result"]["numbers"].as_array().unwrap().len(),
        ITEMS as usize
    );
    send(
        &mut ws,
        json!({"command": "get_status", "data": {"job_id": job_id}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "completed");

    // ... and reconnect_job replays what the buffer still holds, exactly once.
    send(
        &mut ws,
        json!({"command": "reconnect_job", "data": {"job_id": job_id, "since_seq": total - 10}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["command"], "reconnect_job");
    let (tail, tail_lags) = drain(&mut ws, &job_id).await;
    assert!(tail_lags.is_empty(), "{tail_lags:?}");
    assert_eq!(
        tail.iter().map(seq).collect::<Vec<_>>(),
        (total - 9..=total).collect::<Vec<_>>()
    );
    assert_eq!(tail, events[events.len() - 10..].to_vec());

    // Asking for seqs that left the buffer says so again instead of skipping them.
    let first_missed = lags[0]["missed_from_seq"].as_u64().unwrap();
    send(
        &mut ws,
        json!({"command": "reconnect_job", "data": {"job_id": job_id, "since_seq": first_missed - 1}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["command"], "reconnect_job");
    let (again, again_lags) = drain(&mut ws, &job_id).await;
    assert_eq!(again_lags.len(), 1, "{again_lags:?}");
    assert_eq!(
        again_lags[0]["missed_from_seq"].as_u64(),
        Some(first_missed)
    );
    assert_eq!(
        again_lags[0]["missed_to_seq"].as_u64(),
        Some(seq(&again[0]) - 1)
    );
    assert_eq!(seq(again.last().unwrap()), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_slows_neither_the_job_nor_another_client() {
    // The buffer holds the whole job, so the healthy client cannot lose anything even when it is
    // slower than the job: the question here is only whether the stalled one holds anyone up.
    let s = start_with(
        "local",
        ManagerConfig {
            replay_events: 4 * ITEMS as usize,
            ..ManagerConfig::default()
        },
    )
    .await;
    let mut healthy = connect(&s.url).await;
    let mut stalled = connect(&s.url).await;
    let job_id = run_job(&mut stalled).await;
    // From here on `stalled` reads nothing until the end of the test.

    send(
        &mut healthy,
        json!({"command": "reconnect_job", "data": {"job_id": job_id, "since_seq": 0}}),
    )
    .await;
    assert_eq!(recv(&mut healthy).await["command"], "reconnect_job");
    let (reader, job) = tokio::join!(drain(&mut healthy, &job_id), async {
        within(
            "job",
            s.manager
                .wait(&nodetool_core::JobId::parse(&job_id).unwrap()),
        )
        .await
        .unwrap()
    });
    assert_eq!(job.status.as_str(), "completed", "{:?}", job.error);
    let (events, lags) = reader;
    assert!(lags.is_empty(), "{lags:?}");
    let seqs: Vec<u64> = events.iter().map(seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        seqs.len() > 2 * ITEMS as usize,
        "only {} events",
        seqs.len()
    );
    assert_eq!(events.last().unwrap()["status"], "completed");

    // The stalled client was connected all along and still gets its stream from the start.
    let first = recv(&mut stalled).await;
    assert_eq!(first["job_id"], job_id.as_str(), "{first}");
    assert_eq!(seq(&first), 1, "{first}");
    send(&mut healthy, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut healthy).await["type"], "pong");
}
