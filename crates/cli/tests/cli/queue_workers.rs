//! The durable queue through real processes (issue 13): one `nodetool serve` with
//! `JOB_EXECUTION=queue` and two `nodetool work` processes on the testkit's PostgreSQL. Jobs
//! submitted over REST complete exactly once (each claimed by one worker, every event seen once,
//! one terminal event), a client follows a job over SSE from the server while a worker runs it,
//! a cancel on the server stops the job on its worker, and a worker killed with SIGKILL mid-job
//! loses its lease: an idempotent job is retried on the other worker, one with a node that is
//! not idempotent fails "worker lost" naming the worker, each with one terminal state; a job
//! whose tags no live worker offers fails after JOB_CLAIM_TIMEOUT_SECONDS, naming them; a second server follows a job it never saw; `worker_tags` route a job to a
//! worker started with `--tags`; a PostgreSQL restart pauses claiming, which then resumes.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nodetool_testkit::postgres::PostgresServer;
use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};
use serde_json::{json, Value};

use crate::support;
use support::{
    check_stream, generate, held_at_the_boundary, is_node, one, resumed_to_the_end, sleep,
    sleep_chain, stored_terminals_sql, Api, WsClient, HANG,
};

/// Each test's own `HOME` (and config directory) for the `nodetool` it runs.
fn home() -> NodetoolHome {
    NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"))
}

/// The testkit's PostgreSQL, or `None` after reporting the skip (a failure under
/// `NODETOOL_TEST_REQUIRE=1`).
async fn postgres(test: &str) -> Option<PostgresServer> {
    let pg = PostgresServer::start().await;
    if pg.is_none() {
        let why = PostgresServer::why_missing().unwrap_or_default();
        nodetool_testkit::skip_or_fail(test, &why);
    }
    pg
}

/// Queue mode on `url` with a 2 s lease (so a lost worker's jobs move on quickly).
fn queue_vars(url: &str) -> [(&'static str, &str); 3] {
    [
        ("DATABASE_URL", url),
        ("JOB_EXECUTION", "queue"),
        ("JOB_LEASE_SECONDS", "2"),
    ]
}

fn two_servers(env: &NodetoolHome, vars: &[(&str, &str)]) -> [ServeProcess; 2] {
    [
        ServeProcess::start(env.cmd(&["serve"], vars), HANG),
        ServeProcess::start(env.cmd(&["serve"], vars), HANG),
    ]
}

/// A `nodetool work` process (stderr in a file), killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(env: &NodetoolHome, name: &str, vars: &[(&str, &str)]) -> Self {
        Self::start_with(env, name, &[], vars)
    }

    fn start_with(env: &NodetoolHome, name: &str, extra: &[&str], vars: &[(&str, &str)]) -> Self {
        let log = env.path(&format!("{name}.log"));
        let mut args = vec!["work", "--concurrency", "4", "--log", "info"];
        args.extend_from_slice(extra);
        let child = env
            .cmd(&args, vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut worker = Self { child, log };
        // Ready once it says so; a worker that dies at start fails the test here, with its log.
        let deadline = std::time::Instant::now() + HANG;
        while !worker.log().contains("queue worker started") {
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!("{name} exited at start with {status}: {}", worker.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not start: {}",
                worker.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        worker
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let ok = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_two_workers_run_every_job_exactly_once() {
    let test = "one_server_two_workers_run_every_job_exactly_once";
    let Some(mut pg) = postgres(test).await else {
        return;
    };
    let url = pg.create_database("queue");
    let env = home();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("JOB_EXECUTION", "queue"),
        ("JOB_LEASE_SECONDS", "2"),
        ("JOB_CLAIM_TIMEOUT_SECONDS", "5"),
    ];
    let mut server = ServeProcess::start(env.cmd(&["serve"], &vars), HANG);
    let mut workers = vec![
        Worker::start(&env, "w1", &vars),
        Worker::start(&env, "w2", &vars),
    ];
    let api = Api::new(server.url(""));

    // --- N jobs, streamed live from the server while workers run them; each exactly once.
    let n = 12;
    let requests: Vec<Value> = (0..n).map(|i| generate(5 + i)).collect();
    let runs = futures::future::join_all(requests.iter().map(|r| api.run_streamed(r))).await;
    let mut ids = HashSet::new();
    for (id, live) in &runs {
        check_stream(id, live);
        assert_eq!(live.last().unwrap()["status"], "completed", "{live:?}");
        // Replay from the store gives the same events.
        assert_eq!(&api.follow(id, 0).await, live, "{id}");
        assert_eq!(api.job(id).await["status"], "completed");
        ids.insert(id.clone());
    }
    assert_eq!(ids.len(), n as usize);
    // Each claimed once (one attempt, one owner), by one of the two workers.
    let logs = [workers[0].log(), workers[1].log()];
    for id in &ids {
        assert_eq!(
            pg.psql(
                "queue",
                &format!("SELECT attempts FROM jobs WHERE id = '{id}'")
            ),
            "1"
        );
        let claims: usize = logs
            .iter()
            .map(|l| {
                l.lines()
                    .filter(|line| line.contains("claimed a job") && line.contains(id.as_str()))
                    .count()
            })
            .sum();
        assert_eq!(
            claims, 1,
            "{id} claimed {claims} times:\n{}\n{}",
            logs[0], logs[1]
        );
        let terminal_rows = pg.psql(
            "queue",
            &format!(
                "SELECT count(*) FROM job_events WHERE job_id = '{id}' \
                 AND event LIKE '%\"type\":\"job_update\"%' AND event LIKE '%\"status\":\"completed\"%'"
            ),
        );
        assert_eq!(terminal_rows, "1", "{id}");
    }
    // The server ran nothing itself: no job of these has a worker pid of the server's.
    assert_eq!(
        pg.psql(
            "queue",
            "SELECT count(*) FROM jobs WHERE NOT queued OR lease_owner IS NULL"
        ),
        "0"
    );

    // --- Followers on the server (SSE and /ws) see a running job's events as the worker
    // emits them, with the same seqs.
    let id = api.submit(&sleep(3.0, "follow")).await;
    api.wait_status(&id, "running").await;
    // A second server, which never saw the job, follows it the same way.
    let mut other = ServeProcess::start(env.cmd(&["serve"], &vars), HANG);
    let other_api = Api::new(other.url(""));
    let (events, ws_events, elsewhere) = tokio::join!(
        api.follow(&id, 0),
        api.ws_follow(&id, 0),
        other_api.follow(&id, 0)
    );
    check_stream(&id, &events);
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let seqs = |v: &[Value]| v.iter().map(|e| e["seq"].as_u64()).collect::<Vec<_>>();
    assert_eq!(seqs(&ws_events), seqs(&events), "{ws_events:?}");
    assert_eq!(elsewhere, events);
    let status = other.terminate(HANG);
    assert!(status.success(), "second serve: {}", other.log());
    // From the middle: only what came after.
    let mid = events[events.len() / 2]["seq"].as_u64().unwrap();
    let rest: Vec<Value> = events
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() > mid)
        .cloned()
        .collect();
    assert_eq!(api.follow(&id, mid).await, rest);

    // --- Cancel on the server: the owning worker stops the job within a heartbeat.
    let id = api.submit(&sleep(60.0, "cancel")).await;
    api.wait_status(&id, "running").await;
    let follower = {
        let (base, id) = (api.base.clone(), id.clone());
        tokio::spawn(async move { Api::new(base).follow(&id, 0).await })
    };
    let resp = api
        .request(reqwest::Method::POST, &format!("/api/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let events = follower.await.unwrap();
    check_stream(&id, &events);
    assert_eq!(events.last().unwrap()["status"], "cancelled", "{events:?}");
    assert_eq!(api.job(&id).await["status"], "cancelled");

    // --- SIGKILL of the worker running a job: its lease expires. An idempotent job (Sleep is
    // cacheable) runs again on the other worker (one retry by default); one terminal state.
    let (victim, id, events) = kill_owner(&api, &pg, &mut workers, &sleep(4.0, "kill")).await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed", "{events:?}");
    assert!(
        workers[1 - victim].log().contains(&id),
        "the retry did not run on the other worker"
    );
    assert_eq!(
        pg.psql(
            "queue",
            &format!("SELECT attempts FROM jobs WHERE id = '{id}'")
        ),
        "2"
    );
    assert_eq!(
        stored_terminals(&pg, &id),
        "1",
        "stored terminal events of {id}"
    );

    // --- A job with a node that is not idempotent (Block stands for side effects) is not run
    // again: it fails "worker lost", naming the worker, with no stored terminal event of a run.
    workers.push(Worker::start(&env, "w3", &vars));
    let (lost, id, events) = kill_owner(
        &api,
        &pg,
        &mut workers,
        &one("nodetool.test.Block", json!({"seconds": 6.0})),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "failed", "{events:?}");
    let error = api.job(&id).await["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("worker lost"), "{error}");
    assert!(
        error.contains(&format!("-{}-", workers[lost].pid())),
        "{error}"
    );
    assert!(error.contains("not idempotent"), "{error}");
    assert_eq!(
        pg.psql(
            "queue",
            &format!("SELECT attempts FROM jobs WHERE id = '{id}'")
        ),
        "1"
    );
    assert_eq!(
        stored_terminals(&pg, &id),
        "0",
        "stored terminal events of {id}"
    );
    let alive: Vec<usize> = (0..workers.len())
        .filter(|&i| i != victim && i != lost)
        .collect();

    // --- A job asking for a tag no live worker offers: reported, then failed after
    // JOB_CLAIM_TIMEOUT_SECONDS, naming the tags it needs and those the workers offer.
    let mut tpu = generate(2);
    tpu["worker_tags"] = json!(["tpu"]);
    let (id, live) = api.run_streamed(&tpu).await;
    check_stream(&id, &live);
    let last = live.last().unwrap();
    assert_eq!(last["status"], "failed", "{live:?}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("worker_tags [tpu]"), "{error}");
    assert!(error.contains("live workers offer"), "{error}");
    // Before that, its followers were told why it waited.
    let waiting = &live[live.len() - 2];
    assert_eq!(
        (&waiting["type"], &waiting["status"]),
        (&json!("job_update"), &json!("scheduled")),
        "{live:?}"
    );
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or_default()
            .contains("worker_tags [tpu]"),
        "{waiting}"
    );
    assert!(
        error.contains(&format!("-{}-", workers[alive[0]].pid())),
        "{error}"
    );
    assert!(
        server.log().contains("no live worker able to take it"),
        "{}",
        server.log()
    );

    // --- Tags route: a job asking for `gpu` waits for a worker started with `--tags gpu`.
    let gpu = Worker::start_with(&env, "gpu", &["--tags", "gpu,big"], &vars);
    let mut tagged = generate(4);
    tagged["worker_tags"] = json!(["gpu"]);
    let (id, live) = api.run_streamed(&tagged).await;
    check_stream(&id, &live);
    assert_eq!(live.last().unwrap()["status"], "completed", "{live:?}");
    let owner = pg.psql(
        "queue",
        &format!("SELECT lease_owner FROM jobs WHERE id = '{id}'"),
    );
    assert!(
        owner.contains(&format!("-{}-", gpu.pid())),
        "{id} ran on {owner}, not on the gpu worker"
    );
    drop(gpu);

    // --- PostgreSQL restarts: claiming pauses and resumes; nothing is lost or run twice.
    pg.restart().await;
    let requests: Vec<Value> = (0..4).map(|i| generate(3 + i)).collect();
    let runs = futures::future::join_all(requests.iter().map(|r| api.run_streamed(r))).await;
    for (id, live) in &runs {
        check_stream(id, live);
        assert_eq!(live.last().unwrap()["status"], "completed", "{live:?}");
        assert_eq!(
            pg.psql(
                "queue",
                &format!("SELECT attempts FROM jobs WHERE id = '{id}'")
            ),
            "1"
        );
    }

    // SIGTERM: the surviving workers stop claiming, leave the registry and exit cleanly.
    for &i in &alive {
        let survivor = &mut workers[i];
        let ok = Command::new("kill")
            .args(["-TERM", &survivor.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let status = survivor.child.wait().unwrap();
        assert!(
            status.success(),
            "work exited with {status}: {}",
            survivor.log()
        );
    }
    for &i in &alive {
        let pid = workers[i].pid();
        assert_eq!(
            pg.psql(
                "queue",
                &format!("SELECT count(*) FROM queue_workers WHERE id LIKE '%-{pid}-%'")
            ),
            "0"
        );
    }

    let status = server.terminate(HANG);
    assert!(status.success(), "serve: {}", server.log());
}

/// Two servers and three workers on one PostgreSQL: jobs submitted to both servers, each followed
/// from the other server (SSE, or `/ws` for every other job) while one worker is killed mid-run;
/// every job ends exactly once, completed (all are idempotent, so the lost ones are retried), and
/// every client saw every event once, in seq order, the same as the store's replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_three_workers_every_client_sees_every_event_once() {
    let test = "two_servers_three_workers_every_client_sees_every_event_once";
    let Some(pg) = postgres(test).await else {
        return;
    };
    let url = pg.create_database("queue");
    let env = home();
    let vars = queue_vars(&url);
    let mut servers = two_servers(&env, &vars);
    let mut workers = [
        Worker::start(&env, "w1", &vars),
        Worker::start(&env, "w2", &vars),
        Worker::start(&env, "w3", &vars),
    ];
    let apis: Vec<Api> = servers.iter().map(|s| Api::new(s.url(""))).collect();

    let n = 10;
    let mut ids = Vec::new();
    for i in 0..n {
        let request = if i % 3 == 0 {
            generate(20 + i)
        } else {
            sleep(2.0, &format!("job-{i}"))
        };
        ids.push(apis[i as usize % 2].submit(&request).await);
    }
    // Each followed from the server it was not submitted to.
    let followers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (base, id) = (apis[(i + 1) % 2].base.clone(), id.clone());
            tokio::spawn(async move {
                let api = Api::new(base);
                if i % 2 == 0 {
                    api.follow(&id, 0).await
                } else {
                    api.ws_follow(&id, 0).await
                }
            })
        })
        .collect();
    // Kill the worker running the first sleeping job, mid-run.
    let sleeper = &ids[1];
    apis[0].wait_status(sleeper, "running").await;
    let owner = pg.psql(
        "queue",
        &format!("SELECT coalesce(lease_owner, '') FROM jobs WHERE id = '{sleeper}'"),
    );
    let victim = workers
        .iter()
        .position(|w| owner.contains(&format!("-{}-", w.pid())))
        .unwrap_or_else(|| panic!("owner {owner:?} is no worker of ours"));
    workers[victim].kill9();

    for (i, (id, follower)) in ids.iter().zip(followers).enumerate() {
        let seen = follower.await.unwrap();
        check_stream(id, &seen);
        assert_eq!(seen.last().unwrap()["status"], "completed", "{seen:?}");
        let stored = apis[i % 2].follow(id, 0).await;
        let seqs = |v: &[Value]| v.iter().map(|e| e["seq"].as_u64()).collect::<Vec<_>>();
        assert_eq!(seqs(&seen), seqs(&stored), "{id}");
        for api in &apis {
            assert_eq!(api.job(id).await["status"], "completed", "{id}");
        }
        assert_eq!(
            stored_terminals(&pg, id),
            "1",
            "stored terminal events of {id}"
        );
    }
    let retried = pg.psql("queue", "SELECT count(*) FROM jobs WHERE attempts = 2");
    assert_ne!(retried, "0", "the killed worker's jobs were not retried");
    assert_eq!(
        pg.psql(
            "queue",
            "SELECT count(*) FROM jobs WHERE status <> 'completed'"
        ),
        "0"
    );
    for server in &mut servers {
        let status = server.terminate(HANG);
        assert!(status.success(), "serve: {}", server.log());
    }
}

/// Streamed inputs, pause and resume sent to one server reach a job that a worker runs for a
/// job submitted on the other: the values arrive in order and the job collects them; a pause
/// holds the job at a node boundary until a resume from the first server; mistakes a server
/// can see (an input of a job that streams none, an ended job) are its errors at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streamed_inputs_and_pause_reach_a_queued_job_from_any_server() {
    let test = "streamed_inputs_and_pause_reach_a_queued_job_from_any_server";
    let Some(pg) = postgres(test).await else {
        return;
    };
    let url = pg.create_database("queue");
    let env = home();
    let vars = queue_vars(&url);
    let servers = two_servers(&env, &vars);
    let _worker = Worker::start(&env, "w1", &vars);
    let (a, b) = (Api::new(servers[0].url("")), Api::new(servers[1].url("")));
    let (mut on_a, mut on_b) = (WsClient::connect(&a).await, WsClient::connect(&b).await);

    // --- StringInput `text` → Collect → Output, started on A, fed from B.
    let graph = json!({
        "nodes": [
            {"id": "in", "type": "nodetool.input.StringInput", "data": {"name": "text"}},
            {"id": "col", "type": "nodetool.control.Collect", "data": {}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "items"}}
        ],
        "edges": [
            {"id": "e1", "source": "in", "sourceHandle": "output", "target": "col", "targetHandle": "input_item"},
            {"id": "e2", "source": "col", "sourceHandle": "output", "target": "out", "targetHandle": "value"}
        ]
    });
    let r = on_a
        .command("run_job", json!({"graph": graph, "streaming_inputs": true}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let job = r["job_id"].as_str().unwrap().to_owned();
    for v in ["v1", "v2", "v3"] {
        let r = on_b
            .command(
                "stream_input",
                json!({"job_id": job, "input": "text", "value": v}),
            )
            .await;
        assert_eq!(r["message"], "Input value pushed", "{r}");
    }
    let r = on_b
        .command("end_input_stream", json!({"job_id": job, "input": "text"}))
        .await;
    assert_eq!(r["message"], "Input stream ended", "{r}");
    let frames = on_a.until_done().await;
    let done = frames.last().unwrap();
    assert_eq!(done["status"], "completed", "{frames:?}");
    assert_eq!(
        done["result"]["items"],
        json!([["v1", "v2", "v3"]]),
        "{done}"
    );
    // A job fed by a stream is never run twice.
    assert_eq!(
        pg.psql(
            "queue",
            &format!("SELECT idempotent FROM jobs WHERE id = '{job}'")
        ),
        "f"
    );
    // An ended job's input is refused as locally.
    let r = on_b
        .command(
            "stream_input",
            json!({"job_id": job, "input": "text", "value": "late"}),
        )
        .await;
    assert_eq!(r["error"], "not_running", "{r}");

    // --- s1 sleeps, then s2: paused from B while s1 runs, resumed from A.
    let chain = json!({"graph": sleep_chain(), "use_cache": false});
    let job = a.submit(&chain).await;
    let r = on_a
        .command("reconnect_job", json!({"job_id": job, "since_seq": 0}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    while !is_node(&on_a.frame().await, "s1", "running") {}
    // Inputs of a job that streams none: the server says so without asking the worker.
    let r = on_b
        .command(
            "stream_input",
            json!({"job_id": job, "input": "text", "value": 1}),
        )
        .await;
    assert_eq!(r["error"], "not_found", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("no streamed inputs"),
        "{r}"
    );
    let r = on_b.command("pause_job", json!({"job_id": job})).await;
    assert_eq!(r["message"], "Job paused", "{r}");
    assert_eq!(r["status"], "paused", "{r}");
    held_at_the_boundary(&mut on_a).await;
    let r = on_a.command("resume_job", json!({"job_id": job})).await;
    assert_eq!(r["message"], "Job resumed", "{r}");
    resumed_to_the_end(&mut on_a).await;
}

/// Submits `request`, waits until a worker runs it, SIGKILLs that worker and follows the job to
/// its end: (the killed worker's index, the job id, its events, checked).
async fn kill_owner(
    api: &Api,
    pg: &PostgresServer,
    workers: &mut [Worker],
    request: &Value,
) -> (usize, String, Vec<Value>) {
    let id = api.submit(request).await;
    api.wait_status(&id, "running").await;
    let owner = loop {
        let owner = pg.psql(
            "queue",
            &format!("SELECT coalesce(lease_owner, '') FROM jobs WHERE id = '{id}'"),
        );
        if !owner.is_empty() {
            break owner;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = workers
        .iter()
        .position(|w| owner.contains(&format!("-{}-", w.pid())))
        .unwrap_or_else(|| panic!("owner {owner} is no worker of ours"));
    workers[victim].kill9();
    let events = api.follow(&id, 0).await;
    check_stream(&id, &events);
    let job = api.job(&id).await;
    assert_eq!(job["status"], events.last().unwrap()["status"], "{job}");
    (victim, id, events)
}

/// The terminal `job_update` events stored for `id`.
fn stored_terminals(pg: &PostgresServer, id: &str) -> String {
    pg.psql("queue", &stored_terminals_sql(id))
}

#[test]
fn queue_mode_without_database_url_is_refused_and_work_needs_one() {
    let env = home();
    let out = env
        .cmd(&["serve", "--port", "0"], &[("JOB_EXECUTION", "queue")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JOB_EXECUTION=queue needs DATABASE_URL"),
        "{stderr}"
    );
    let out = env
        .cmd(&["work"], &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nodetool work needs DATABASE_URL"),
        "{stderr}"
    );
    let out = env.cmd(&["work", "--help"], &[]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["--concurrency", "--tags", "--strategy", "JOB_LEASE_SECONDS"] {
        assert!(help.contains(word), "{word}: {help}");
    }
}
