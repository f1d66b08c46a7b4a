//! Operator limits through the real binary, on every strategy and entry point:
//! - `JOB_TIMEOUT_SECONDS` is one deadline for `nodetool run`, REST and `/ws`, on threaded,
//!   subprocess and Docker jobs alike (same status, error kind and message), and a ceiling: a
//!   request's `time_seconds` (or `--timeout`) may lower it, never lift it.
//! - A request's `docker_image` is the image that runs when `DOCKER_ALLOWED_IMAGES` admits it,
//!   and a clear error otherwise.
//! - A Docker job of a server started with no setting at all carries the default CPU, memory and
//!   pids limits (`docker inspect`).
//! - A subprocess job's `memory_mb` measures what the job allocates.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use nodetool_testkit::serve_process::{NodetoolHome, ServeProcess};
use nodetool_workers::docker::{bollard, image, JOB_LABEL};

use crate::support::{docker_client, tag, worker_image};

/// Every `nodetool serve` reaps the job containers it finds at start, so the tests of this file
/// (each starts servers) take turns.
/// (Async: the guard is held across awaits, and works across the tests' runtimes.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A job that would run for 30 s: every deadline below ends it long before.
const SLOW: f64 = 30.0;

/// Hang guard: a job that has not ended after this is a failure (not a timing claim).
const HANG: Duration = Duration::from_secs(90);

/// A clean `HOME` for the binary (`nodetool_testkit::serve_process::NodetoolHome`).
type Env = NodetoolHome;

fn new_env() -> Env {
    NodetoolHome::new(env!("CARGO_BIN_EXE_nodetool"))
}

fn graph(node_type: &str, data: Value) -> Value {
    json!({
        "nodes": [
            {"id": "n", "type": node_type, "data": data},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}},
        ],
        "edges": [
            {"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
        ],
    })
}

fn sleep_graph(seconds: f64) -> Value {
    graph(
        "nodetool.test.Sleep",
        json!({"seconds": seconds, "value": "done"}),
    )
}

/// The engine's time-out text, which every path must report word for word.
fn timeout_message(seconds: f64) -> String {
    let text = nodetool_engine::job_timeout_error(Duration::from_secs_f64(seconds)).to_string();
    assert!(
        text.contains(&format!("job exceeded its time limit of {seconds:.3}s")),
        "{text}"
    );
    text
}

/// A running `nodetool serve`, killed when dropped.
struct Server {
    proc: ServeProcess,
    port: u16,
}

impl Server {
    fn start(env: &Env, vars: &[(&str, &str)]) -> Self {
        let proc = ServeProcess::start(env.cmd(&["serve"], vars), HANG);
        Self {
            port: proc.port(),
            proc,
        }
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    /// POST /api/jobs: (status code, body).
    async fn submit(&self, request: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.url("/api/jobs"))
            .json(request)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// The job's record once it is terminal.
    async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + HANG;
        loop {
            let rec: Value = reqwest::get(self.url(&format!("/api/jobs/{id}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let status = rec["status"].as_str().unwrap_or("");
            if ["completed", "failed", "cancelled"].contains(&status) {
                return rec;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {rec}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits over REST and returns the final record.
    async fn rest_job(&self, request: Value) -> Value {
        let (status, body) = self.submit(&request).await;
        assert_eq!(status, 200, "{body}");
        self.wait_job(body["id"].as_str().unwrap()).await
    }

    /// `run_job` over /ws: the terminal `job_update`.
    async fn ws_job(&self, request: Value) -> Value {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let cmd = json!({"command": "run_job", "data": request});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let read = async {
            loop {
                let msg = ws.next().await.expect("socket open").unwrap();
                let Message::Text(t) = msg else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                // A reply (no seq) with an error is a refusal; events carry `error: null`.
                assert!(
                    v.get("seq").is_some() || v["error"].is_null(),
                    "run_job refused: {v}"
                );
                // `/ws` says `timed_out` where REST says `failed` (NodeTool's web client).
                let terminal = v["type"] == "job_update"
                    && ["completed", "failed", "cancelled", "timed_out"]
                        .contains(&v["status"].as_str().unwrap_or(""));
                if terminal {
                    return v;
                }
            }
        };
        tokio::time::timeout(HANG, read)
            .await
            .expect("the /ws job did not end")
    }
}

/// `nodetool run --jsonl --strategy S FILE [extra]` on the slow graph: the terminal `job_update`
/// and the exit code.
fn cli_job(env: &Env, strategy: &str, extra: &[&str], vars: &[(&str, &str)]) -> (Value, i32) {
    cli_job_on(env, &sleep_graph(SLOW), strategy, extra, vars)
}

/// [`cli_job`] on any graph.
fn cli_job_on(
    env: &Env,
    graph: &Value,
    strategy: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> (Value, i32) {
    let file = env.path("job.json");
    std::fs::write(&file, graph.to_string()).unwrap();
    let file = file.display().to_string();
    let mut args = vec!["run", "--jsonl", "--strategy", strategy];
    args.extend_from_slice(extra);
    args.push(&file);
    let mut child = env
        .cmd(&args, vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nodetool run --strategy {strategy} did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|e| e["type"] == "job_update")
        .unwrap_or_else(|| {
            panic!(
                "no job_update from nodetool run --strategy {strategy}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (last, out.status.code().unwrap_or(-1))
}

/// The container of job `job_id` once it runs, inspected.
async fn inspect_job_container(
    client: &bollard::Docker,
    job_id: &str,
) -> bollard::models::ContainerInspectResponse {
    let mut filters = std::collections::HashMap::new();
    filters.insert("label".to_owned(), vec![format!("{JOB_LABEL}={job_id}")]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let deadline = Instant::now() + HANG;
    loop {
        let list = client.list_containers(Some(opts.clone())).await.unwrap();
        if let Some(id) = list.into_iter().find_map(|c| c.id) {
            // The engine lists a container a moment before it can inspect it (its listing
            // view is written before the container is registered): a 404 here means "not yet".
            match client
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => return c,
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => panic!("inspect {id}: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no running container for job {job_id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_timed_out(what: &str, status: &Value, error: &Value, seconds: f64) {
    // `/ws` frames carry NodeTool's `timed_out`; every other entry point says `failed`.
    let want = if what.starts_with("/ws") {
        "timed_out"
    } else {
        "failed"
    };
    assert_eq!(status, want, "{what}: {error}");
    assert_eq!(
        error.as_str(),
        Some(timeout_message(seconds).as_str()),
        "{what}"
    );
}

/// Every strategy, every entry point: `JOB_TIMEOUT_SECONDS=1` ends a 30 s job with the same
/// `failed` status and message, whatever the request asks for; a request may only lower it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_is_one_ceiling_for_every_strategy_and_entry_point() {
    let _serial = SERIAL.lock().await;
    let env = new_env();
    let mut strategies = vec!["threaded", "subprocess"];
    if let Some(client) =
        docker_client("job_timeout_is_one_ceiling_for_every_strategy_and_entry_point").await
    {
        worker_image(&env, &client).await;
        strategies.push("docker");
    }
    let vars = [("JOB_TIMEOUT_SECONDS", "1")];
    let server = Server::start(&env, &vars);
    for strategy in strategies {
        // `nodetool run`: the setting alone, and a --timeout above it.
        let (update, code) = cli_job(&env, strategy, &[], &vars);
        assert_timed_out(
            &format!("nodetool run --strategy {strategy}"),
            &update["status"],
            &update["error"],
            1.0,
        );
        assert_eq!(code, 1, "nodetool run --strategy {strategy} exit code");
        let (update, _) = cli_job(&env, strategy, &["--timeout", "600"], &vars);
        assert_timed_out(
            &format!("nodetool run --strategy {strategy} --timeout 600"),
            &update["status"],
            &update["error"],
            1.0,
        );

        // REST: a request asking for more gets the operator's limit.
        let rec = server
            .rest_job(json!({
                "graph": sleep_graph(SLOW),
                "execution_strategy": strategy,
                "resource_limits": {"time_seconds": 600},
            }))
            .await;
        assert_timed_out(
            &format!("REST {strategy}"),
            &rec["status"],
            &rec["error"],
            1.0,
        );

        // /ws run_job: the same.
        let update = server
            .ws_job(json!({
                "graph": sleep_graph(SLOW),
                "execution_strategy": strategy,
                "resource_limits": {"time_seconds": 600},
            }))
            .await;
        assert_timed_out(
            &format!("/ws {strategy}"),
            &update["status"],
            &update["error"],
            1.0,
        );
    }

    // Lowering is a request's right, on every entry point.
    let rec = server
        .rest_job(json!({
            "graph": sleep_graph(SLOW),
            "execution_strategy": "subprocess",
            "resource_limits": {"time_seconds": 0.5},
        }))
        .await;
    assert_timed_out("REST lowered", &rec["status"], &rec["error"], 0.5);
    let (update, _) = cli_job(&env, "threaded", &["--timeout", "0.5"], &vars);
    assert_timed_out(
        "nodetool run lowered",
        &update["status"],
        &update["error"],
        0.5,
    );

    // With no JOB_TIMEOUT_SECONDS, `nodetool run --timeout` is the deadline.
    let (update, _) = cli_job(&env, "threaded", &["--timeout", "1"], &[]);
    assert_timed_out(
        "nodetool run --timeout",
        &update["status"],
        &update["error"],
        1.0,
    );

    // The server is fine afterwards.
    let rec = server
        .rest_job(json!({"graph": sleep_graph(0.0), "execution_strategy": "threaded"}))
        .await;
    assert_eq!(rec["status"], "completed", "{rec}");
}

/// A node that blocks its thread and ignores cancellation still ends at the deadline (plus the
/// hard-deadline grace) with the same time-out outcome, on every strategy: the worker is killed,
/// or the threaded task abandoned so `nodetool run` exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ignoring_cancellation_still_ends_at_the_deadline() {
    let _serial = SERIAL.lock().await;
    let env = new_env();
    let mut strategies = vec!["threaded", "subprocess"];
    if let Some(client) =
        docker_client("a_node_ignoring_cancellation_still_ends_at_the_deadline").await
    {
        worker_image(&env, &client).await;
        strategies.push("docker");
    }
    // Far beyond the hang guard: only the hard deadline can end this job in time.
    let blocking = graph("nodetool.test.Block", json!({"seconds": 600.0}));
    for strategy in strategies {
        let (update, code) = cli_job_on(
            &env,
            &blocking,
            strategy,
            &[],
            &[("JOB_TIMEOUT_SECONDS", "1")],
        );
        assert_timed_out(
            &format!("blocked node, nodetool run --strategy {strategy}"),
            &update["status"],
            &update["error"],
            1.0,
        );
        assert_eq!(code, 1, "{strategy}");
    }
}

/// A server started with no setting at all runs Docker jobs with the default limits (visible in
/// `docker inspect` and in `settings show`), runs the default image, and refuses any other image
/// a request names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_jobs_of_a_server_with_no_settings_carry_default_limits() {
    let _serial = SERIAL.lock().await;
    let Some(client) =
        docker_client("docker_jobs_of_a_server_with_no_settings_carry_default_limits").await
    else {
        return;
    };
    let env = new_env();
    let pinned = worker_image(&env, &client).await;

    // No settings at all: every limit is on, visible in `docker inspect`.
    let server = Server::start(&env, &[]);
    let (status, body) = server
        .submit(&json!({"graph": sleep_graph(SLOW), "execution_strategy": "docker"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let job_id = body["id"].as_str().unwrap().to_owned();
    let c = inspect_job_container(&client, &job_id).await;
    let h = c.host_config.clone().unwrap();
    let defaults = nodetool_config::docker_defaults();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    assert_eq!(h.pids_limit, Some(512), "default DOCKER_PIDS_LIMIT");
    assert_eq!(
        h.nano_cpus,
        Some(cpus * 1_000_000_000),
        "default DOCKER_CPU_LIMIT"
    );
    assert_eq!(
        h.memory,
        Some(defaults.memory_bytes as i64),
        "default DOCKER_MEMORY_LIMIT"
    );
    assert!(defaults.memory_bytes <= 8 << 30);
    assert_eq!(h.memory_swap, h.memory, "no swap");
    assert_eq!(
        c.config.unwrap().image.as_deref(),
        Some(image::default_image().as_str())
    );
    // `settings show` states the same defaults.
    let out = env
        .cmd(&["settings", "show", "--json"], &[])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let value_of = |name: &str| {
        shown
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| (e["value"].clone(), e["source"].clone()))
            .unwrap()
    };
    assert_eq!(value_of("DOCKER_PIDS_LIMIT").0, "512");
    assert_eq!(value_of("DOCKER_CPU_LIMIT").0, cpus.to_string().as_str());
    assert_eq!(
        value_of("DOCKER_MEMORY_LIMIT").0,
        format!("{}m", defaults.memory_bytes >> 20).as_str()
    );
    reqwest::Client::new()
        .post(server.url(&format!("/api/jobs/{job_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(server.wait_job(&job_id).await["status"], "cancelled");

    // An image the operator did not allow is refused at submit, over REST and /ws, naming the
    // setting; so is docker_image on another strategy.
    let (status, body) = server
        .submit(&json!({
            "graph": sleep_graph(0.0),
            "execution_strategy": "docker",
            "docker_image": pinned,
        }))
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body.to_string();
    assert!(
        msg.contains("not allowed")
            && msg.contains("DOCKER_ALLOWED_IMAGES")
            && msg.contains(&pinned),
        "{msg}"
    );
    let (status, body) = server
        .submit(&json!({
            "graph": sleep_graph(0.0),
            "execution_strategy": "threaded",
            "docker_image": pinned,
        }))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("applies only to execution_strategy docker"),
        "{body}"
    );
}

/// DOCKER_ALLOWED_IMAGES lets a request pick another image, and that image is the one that runs;
/// an image it does not list is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_docker_image_is_the_image_that_runs() {
    let _serial = SERIAL.lock().await;
    let Some(client) = docker_client("a_requested_docker_image_is_the_image_that_runs").await
    else {
        return;
    };
    let env = new_env();
    let pinned = worker_image(&env, &client).await;
    let alt = pinned.replacen("nodetool-worker:", "nodetool-worker-alt:", 1);
    tag(&client, &pinned, &alt).await;
    let server = Server::start(&env, &[("DOCKER_ALLOWED_IMAGES", "nodetool-worker-alt:*")]);
    let (status, body) = server
        .submit(&json!({
            "graph": sleep_graph(SLOW),
            "execution_strategy": "docker",
            "docker_image": alt,
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    let job_id = body["id"].as_str().unwrap().to_owned();
    let c = inspect_job_container(&client, &job_id).await;
    assert_eq!(c.config.unwrap().image.as_deref(), Some(alt.as_str()));
    reqwest::Client::new()
        .post(server.url(&format!("/api/jobs/{job_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(server.wait_job(&job_id).await["status"], "cancelled");
    // Allowed is not "anything": the pinned tag is still refused here, over /ws as well.
    let url = format!("ws://127.0.0.1:{}/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let cmd = json!({"command": "run_job", "data": {
        "graph": sleep_graph(0.0), "execution_strategy": "docker", "docker_image": "other-image:1",
    }});
    ws.send(Message::text(cmd.to_string())).await.unwrap();
    let reply = loop {
        let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        break serde_json::from_str::<Value>(t.as_str()).unwrap();
    };
    assert_eq!(reply["error"], "job_rejected", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or("")
            .contains("not allowed"),
        "{reply}"
    );
}

/// `memory_mb` of a subprocess job measures what the job allocates: 100 MiB fit in 256, 400 MiB
/// fail with a clear resource error, and the server carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_memory_limit_measures_allocations() {
    let _serial = SERIAL.lock().await;
    let env = new_env();
    let server = Server::start(&env, &[]);
    let allocate = |mb: i64| {
        json!({
            "graph": graph("nodetool.test.Allocate", json!({"megabytes": mb})),
            "execution_strategy": "subprocess",
            "resource_limits": {"memory_mb": 256},
        })
    };
    let rec = server.rest_job(allocate(100)).await;
    assert_eq!(rec["status"], "completed", "100 MiB under 256 MiB: {rec}");
    assert_eq!(rec["result"]["result"], json!([100]), "{rec}");

    let rec = server.rest_job(allocate(400)).await;
    assert_eq!(rec["status"], "failed", "400 MiB under 256 MiB: {rec}");
    let error = rec["error"].as_str().unwrap_or("");
    assert!(error.contains("ran out of memory"), "{error}");

    // The smallest accepted limit still runs a job.
    let mut small = allocate(0);
    small["resource_limits"]["memory_mb"] = json!(32);
    let rec = server.rest_job(small).await;
    assert_eq!(rec["status"], "completed", "memory_mb=32: {rec}");

    let rec = server
        .rest_job(json!({"graph": sleep_graph(0.0), "execution_strategy": "subprocess"}))
        .await;
    assert_eq!(rec["status"], "completed", "{rec}");
}
