//! Pause and resume of a subprocess job end to end: the real `nodetool serve` runs a job in a
//! `nodetool worker` child, and the NodeTool web client's `pause_job` / `resume_job` over `/ws`
//! hold it between two nodes and let it go on (issue 18).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};

use crate::support;
use support::{
    held_at_the_boundary, is_node, resumed_to_the_end, sleep_chain, Api, WsClient, HANG,
};

/// `nodetool serve` in a clean home, on the port it picked.
struct Server {
    proc: ServeProcess,
    _home: NodetoolHome,
}

impl Server {
    fn start() -> Self {
        let home = NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"));
        let proc = home.serve(&[("AUTH_PROVIDER", "local")], HANG);
        Self { proc, _home: home }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subprocess_job_pauses_and_resumes_over_ws() {
    let server = Server::start();
    let api = Api::new(server.proc.url(""));
    let mut c = WsClient::connect(&api).await;
    let job_id = "ws-pause-subprocess-job";
    let graph = sleep_chain();
    let r = c
        .command(
            "run_job",
            json!({
                "type": "run_job_request", "job_id": job_id, "workflow_id": "wf-pause",
                "job_type": "workflow", "execution_strategy": "subprocess", "params": {},
                "graph": graph, "use_cache": false,
            }),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let record: Value = api.job(job_id).await;
    assert_eq!(record["execution_strategy"], "subprocess", "{record}");
    while !is_node(&c.frame().await, "s1", "running") {}

    let r = c.command("pause_job", json!({"job_id": job_id})).await;
    assert_eq!(r["message"], "Job paused", "{r}");
    assert_eq!(r["status"], "paused", "{r}");

    // s1 finishes in the worker; s2 waits at its boundary.
    held_at_the_boundary(&mut c).await;
    let st = c.command("get_status", json!({"job_id": job_id})).await;
    assert_eq!(st["status"], "paused", "{st}");

    let r = c.command("resume_job", json!({"job_id": job_id})).await;
    assert_eq!(r["message"], "Job resumed", "{r}");
    assert_eq!(r["status"], "running", "{r}");
    resumed_to_the_end(&mut c).await;
}
