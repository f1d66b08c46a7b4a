//! `/api/jobs` through a real socket: submit, list, get, cancel, SSE with resume, NDJSON.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::jobs_support;
use nodetool_testkit::ids::jid;

use jobs_support::{busy_graph, read_sse, sleep_graph, sse_seqs, start, token};
use nodetool_engine::Status;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_list_get_cancel_and_owner_isolation() {
    let s = start("supabase").await;
    let (alice, bob) = (token("alice"), token("bob"));

    // A user_id in the body is ignored: the authenticated user owns the job.
    let resp = s
        .client
        .post(s.u("/api/jobs"))
        .bearer_auth(&alice)
        .json(&json!({"graph": sleep_graph(30.0), "user_id": "bob", "execution_strategy": "threaded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["user_id"], "alice");
    assert_eq!(job["execution_strategy"], "threaded");
    assert!(
        ["scheduled", "running"].contains(&job["status"].as_str().unwrap()),
        "{job}"
    );

    // Alice sees it; Bob sees nothing.
    let list: Value = s
        .client
        .get(s.u("/api/jobs"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let list: Value = s
        .client
        .get(s.u("/api/jobs"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"], json!([]));

    let got = s
        .client
        .get(s.u(&format!("/api/jobs/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap()["id"], id.as_str());

    // Every route: Bob gets 404, as for a job that does not exist.
    let routes = [
        s.client.get(s.u(&format!("/api/jobs/{id}"))),
        s.client.get(s.u(&format!("/api/jobs/{id}/events"))),
        s.client.post(s.u(&format!("/api/jobs/{id}/cancel"))),
        s.client.delete(s.u(&format!("/api/jobs/{id}"))),
    ];
    for req in routes {
        let resp = req.bearer_auth(&bob).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{:?}", resp.url());
    }
    let missing = s
        .client
        .get(s.u("/api/jobs/no-such-job"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Bob's attempts did not touch the job.
    let rec = s.manager.get(&jid(&id)).await.unwrap().unwrap();
    assert!(!rec.status.is_terminal(), "{rec:?}");

    // No token: 401 with WWW-Authenticate.
    let anon = s.client.get(s.u("/api/jobs")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    assert!(anon.headers().contains_key("www-authenticate"));

    // Alice cancels.
    let resp = s
        .client
        .post(s.u(&format!("/api/jobs/{id}/cancel")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "cancelled");
    let rec = s.manager.wait(&jid(&id)).await.unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    let got: Value = s
        .client
        .get(s.u(&format!("/api/jobs/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "cancelled");
    // Cancelling again is fine and says so.
    let again: Value = s
        .client
        .delete(s.u(&format!("/api/jobs/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "not_found_or_completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_rejects_an_invalid_request() {
    let s = start("local").await;
    let resp = s
        .client
        .post(s.u("/api/jobs"))
        .json(&json!({"params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resume_with_last_event_id_loses_and_repeats_nothing() {
    let s = start("supabase").await;
    let alice = token("alice");
    let job: Value = s
        .client
        .post(s.u("/api/jobs"))
        .bearer_auth(&alice)
        .json(&json!({"graph": busy_graph(40, 20)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let events_url = s.u(&format!("/api/jobs/{id}/events"));

    // First connection: read a few events, then hang up.
    let resp = s
        .client
        .get(&events_url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let first = read_sse(resp, 5).await;
    assert_eq!(first.len(), 5);
    let first_seqs = sse_seqs(&first);
    let last_id = first.last().unwrap().id.clone().unwrap();

    // Resume: exactly the rest, up to and including the terminal job_update; the stream ends.
    let resp = s
        .client
        .get(&events_url)
        .bearer_auth(&alice)
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let rest = read_sse(resp, usize::MAX).await;
    let rest_seqs = sse_seqs(&rest);
    let all: Vec<u64> = first_seqs.iter().chain(&rest_seqs).copied().collect();
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>());
    assert!(all.len() > 60, "only {} events", all.len());
    let last: Value = serde_json::from_str(&rest.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "job_update");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["job_id"], id.as_str());

    // A full replay from the start is the same stream, event for event.
    let resp = s
        .client
        .get(&events_url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let full = read_sse(resp, usize::MAX).await;
    let joined: Vec<_> = first.iter().chain(&rest).cloned().collect();
    assert_eq!(full, joined);

    // `?since_seq=` is the same as Last-Event-ID.
    let resp = s
        .client
        .get(format!("{events_url}?since_seq={last_id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(read_sse(resp, usize::MAX).await, rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_with_stream_true_sends_ndjson_or_sse() {
    let s = start("local").await;
    let resp = s
        .client
        .post(s.u("/api/jobs?stream=true"))
        .header("Accept", "application/x-ndjson")
        .json(&json!({"graph": busy_graph(5, 3)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    let job_id = lines[0]["job_id"].as_str().unwrap();
    assert!(lines.iter().all(|l| l["job_id"] == job_id));
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "job_update");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["result"]["numbers"], json!([0, 1, 2, 3, 4]));

    // Without the Accept header the same request streams SSE.
    let resp = s
        .client
        .post(s.u("/api/jobs?stream=true"))
        .json(&json!({"graph": busy_graph(5, 3)}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_sse(resp, usize::MAX).await;
    let seqs = sse_seqs(&events);
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().event.as_deref(), Some("job_update"));
}
