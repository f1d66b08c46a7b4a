//! SSE (`GET /api/jobs/{id}/events`) for a reader that falls further behind than the job's
//! replay buffer: the gap is announced with an `event: lag` naming the missed seqs, never
//! skipped silently, and `Last-Event-ID` resumes from the last real event. (Resume without loss
//! inside the buffer is covered by tests/server/jobs.rs.)
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;

use std::time::Duration;

use jobs_support::{busy_graph, read_sse, start_with, Sse};
use nodetool_exec::ManagerConfig;
use serde_json::{json, Value};

const HANG: Duration = Duration::from_secs(60);
/// ~200,000 events (~40 MB of SSE): far more than the loopback socket buffers hold.
const ITEMS: u32 = 100_000;

/// (seq of each event or None for a lag notice, parsed data), checking `id:` against the seq.
fn parse(events: &[Sse]) -> Vec<(Option<u64>, Value)> {
    events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.event.as_deref(), v["type"].as_str(), "{e:?}");
            if v["type"] == "lag" {
                assert_eq!(
                    e.id, None,
                    "a lag notice must not move Last-Event-ID: {e:?}"
                );
                (None, v)
            } else {
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(e.id.as_deref(), Some(seq.to_string().as_str()), "{e:?}");
                (Some(seq), v)
            }
        })
        .collect()
}

/// Asserts every seq after `since` up to the terminal event is delivered once in order or
/// named by the lag notice right before the gap; returns (delivered seqs, notices).
fn check_coverage(items: &[(Option<u64>, Value)], since: u64) -> (Vec<u64>, Vec<Value>) {
    let mut covered = since;
    let mut pending_lag: Option<&Value> = None;
    let (mut seqs, mut lags) = (Vec::new(), Vec::new());
    for (seq, v) in items {
        match seq {
            None => {
                assert!(pending_lag.is_none(), "two notices in a row: {v}");
                pending_lag = Some(v);
                lags.push(v.clone());
            }
            Some(s) => {
                if *s != covered + 1 {
                    let lag = pending_lag.unwrap_or_else(|| panic!("silent gap before {s}"));
                    assert_eq!(lag["missed_from_seq"].as_u64(), Some(covered + 1), "{lag}");
                    assert_eq!(lag["missed_to_seq"].as_u64(), Some(s - 1), "{lag}");
                } else {
                    assert!(pending_lag.is_none(), "a notice without a gap before {s}");
                }
                pending_lag = None;
                covered = *s;
                seqs.push(*s);
            }
        }
    }
    let last = &items.last().unwrap().1;
    assert_eq!(last["type"], "job_update", "{last}");
    assert_eq!(last["status"], "completed", "{last}");
    (seqs, lags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_replay_buffer_gets_a_lag_event_then_resumes() {
    let s = start_with(
        "local",
        ManagerConfig {
            replay_events: 64,
            ..ManagerConfig::default()
        },
    )
    .await;
    let job: Value = s
        .client
        .post(s.u("/api/jobs"))
        .json(&json!({"graph": busy_graph(ITEMS, 1)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let url = s.u(&format!("/api/jobs/{id}/events"));
    let resp = s.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Read nothing until the job is over.
    let rec = tokio::time::timeout(
        HANG,
        s.manager.wait(&nodetool_core::JobId::parse(&id).unwrap()),
    )
    .await
    .expect("job hung")
    .unwrap();
    assert_eq!(rec.status.as_str(), "completed", "{:?}", rec.error);
    let items = parse(
        &tokio::time::timeout(HANG, read_sse(resp, usize::MAX))
            .await
            .expect("stream hung"),
    );
    let (seqs, lags) = check_coverage(&items, 0);
    assert!(!lags.is_empty(), "no lag event after {} events", seqs.len());
    let total = *seqs.last().unwrap();
    assert!(total > 2 * u64::from(ITEMS), "only {total} events");
    assert!(lags.iter().all(|l| l["job_id"] == id.as_str()));

    // Reconnecting with the last id seen before the first gap: the gap is announced again (the
    // events are gone), then the buffered rest, ending with the terminal event.
    let before_gap = lags[0]["missed_from_seq"].as_u64().unwrap() - 1;
    let resp = s
        .client
        .get(&url)
        .header("Last-Event-ID", before_gap.to_string())
        .send()
        .await
        .unwrap();
    let again = parse(
        &tokio::time::timeout(HANG, read_sse(resp, usize::MAX))
            .await
            .expect("stream hung"),
    );
    let (again_seqs, again_lags) = check_coverage(&again, before_gap);
    assert_eq!(again_lags.len(), 1, "{again_lags:?}");
    assert_eq!(*again_seqs.last().unwrap(), total);
    assert!(
        again_seqs.len() <= 64,
        "{} events replayed",
        again_seqs.len()
    );

    // Inside the buffer, resuming is exact: no notice, no repeat.
    let resp = s
        .client
        .get(&url)
        .header("Last-Event-ID", (total - 5).to_string())
        .send()
        .await
        .unwrap();
    let tail = parse(&read_sse(resp, usize::MAX).await);
    assert_eq!(
        tail.iter().map(|(s, _)| s.unwrap()).collect::<Vec<_>>(),
        (total - 4..=total).collect::<Vec<_>>()
    );
}
