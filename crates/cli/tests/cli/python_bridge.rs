//! Python nodes through the real binary: `nodetool run` (threaded and subprocess), `nodetool
//! serve` over REST (NDJSON) and `/ws`, `nodetool python doctor`, secrets from the settings,
//! Docker's refusal, and what a missing or broken Python setup says. Mixed workflows (native →
//! Python → native) must give the same events as the native workflow of the same shape.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use nodetool_testkit::python_worker::{self, PythonEnv};
use nodetool_testkit::serve_process::ServeProcess;

struct Env {
    dir: tempfile::TempDir,
    python: Option<PythonEnv>,
}

impl Env {
    fn new(python: Option<PythonEnv>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            python,
        }
    }

    fn cmd(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("NODETOOL_CONFIG_DIR", self.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ENV", "test");
        if let Some(py) = &self.python {
            cmd.env("NODETOOL_PYTHON", &py.python)
                .env("PYTHONPATH", &py.packs);
        }
        cmd.envs(vars.iter().copied());
        cmd
    }

    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.cmd(args, vars).output().expect("run nodetool")
    }

    fn write(&self, name: &str, v: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        path
    }
}

fn python(test: &str) -> Option<Env> {
    python_worker::require(test).map(|p| Env::new(Some(p)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn graph(nodes: &[(&str, &str, Value)], edges: &[(&str, &str, &str, &str)]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|(id, t, data)| json!({"id": id, "type": t, "data": data}))
        .collect();
    let edges: Vec<Value> = edges
        .iter()
        .enumerate()
        .map(|(i, (s, sh, t, th))| json!({"id": format!("e{}", i + 1), "source": s, "sourceHandle": sh, "target": t, "targetHandle": th}))
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

/// String → Python Echo (×2) → Concat "!" → Output.
fn mixed() -> Value {
    graph(
        &[
            ("a", "nodetool.constant.String", json!({"value": "ab"})),
            ("b", "bridgetest.basic.Echo", json!({"times": 2})),
            ("c", "nodetool.text.Concat", json!({"b": "!"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[
            ("a", "output", "b", "text"),
            ("b", "output", "c", "a"),
            ("c", "output", "out", "value"),
        ],
    )
}

/// The same shape, all native (Concat "ab" plays Echo ×2).
fn native() -> Value {
    graph(
        &[
            ("a", "nodetool.constant.String", json!({"value": "ab"})),
            ("b", "nodetool.text.Concat", json!({"b": "ab"})),
            ("c", "nodetool.text.Concat", json!({"b": "!"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[
            ("a", "output", "b", "a"),
            ("b", "output", "c", "a"),
            ("c", "output", "out", "value"),
        ],
    )
}

/// What a client may rely on (see the bridge's engine tests): job updates, each node's status
/// sequence, and the order of completions and outputs. Node b's type is hidden.
fn shape(events: &[Value]) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut order = Vec::new();
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in events {
        let node = v["node_id"].as_str().unwrap_or("").to_owned();
        match v["type"].as_str().unwrap_or("") {
            "job_update" => order.push(format!("job {}", v["status"].as_str().unwrap_or(""))),
            "node_update" => {
                let status = v["status"].as_str().unwrap_or("").to_owned();
                if status != "running" {
                    order.push(format!("node {node} {status}"));
                }
                per_node.entry(node).or_default().push(status);
            }
            "output_update" => {
                order.push(format!("output {node} {}", v["value"]));
                per_node.entry(node).or_default().push("output".to_owned());
            }
            _ => {}
        }
    }
    (order, per_node)
}

fn jsonl(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            // `nodetool run --jsonl` prints envelopes: {job_id, seq, ...event}.
            v
        })
        .collect()
}

#[test]
fn run_mixed_workflows_threaded_and_subprocess_with_native_events() {
    let Some(env) = python("run_mixed_workflows") else {
        return;
    };
    let wf = env.write("mixed.json", &mixed());
    let nat = env.write("native.json", &native());
    let native_out = env.run(&["run", "--jsonl", nat.to_str().unwrap()], &[]);
    assert!(native_out.status.success(), "{}", text(&native_out.stderr));
    let want = shape(&jsonl(&native_out));
    for strategy in ["threaded", "subprocess"] {
        let out = env.run(&["run", "--strategy", strategy, wf.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{strategy}: {}", text(&out.stderr));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result, json!({"out": ["abab!"]}), "{strategy}");

        let out = env.run(
            &[
                "run",
                "--jsonl",
                "--strategy",
                strategy,
                wf.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{strategy}: {}", text(&out.stderr));
        assert_eq!(
            shape(&jsonl(&out)),
            want,
            "{strategy}: the same events as the native run"
        );
    }
}

#[test]
fn run_streams_a_python_generator_into_native_nodes() {
    let Some(env) = python("run_streams_a_python_generator") else {
        return;
    };
    let wf = env.write(
        "stream.json",
        &graph(
            &[
                (
                    "count",
                    "bridgetest.basic.Count",
                    json!({"n": 3, "prefix": "n"}),
                ),
                ("up", "nodetool.text.Concat", json!({"b": "?"})),
                ("out", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[
                ("count", "label", "up", "a"),
                ("up", "output", "out", "value"),
            ],
        ),
    );
    for strategy in ["threaded", "subprocess"] {
        let out = env.run(&["run", "--strategy", strategy, wf.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{strategy}: {}", text(&out.stderr));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result, json!({"out": ["n0?", "n1?", "n2?"]}), "{strategy}");
    }
}

#[test]
fn secrets_come_from_the_settings_only_when_declared_and_never_via_the_environment() {
    let Some(env) = python("secrets_come_from_the_settings") else {
        return;
    };
    std::fs::write(
        env.dir.path().join("secrets.yaml"),
        "BRIDGE_TEST_SECRET: from-secrets-file\n",
    )
    .unwrap();
    let wf = env.write(
        "secret.json",
        &graph(
            &[
                ("s", "bridgetest.basic.ReadSecret", json!({})),
                ("o1", "nodetool.output.Output", json!({"name": "secret"})),
                (
                    "o2",
                    "nodetool.output.Output",
                    json!({"name": "undeclared"}),
                ),
                ("o3", "nodetool.output.Output", json!({"name": "in_env"})),
            ],
            &[
                ("s", "secret", "o1", "value"),
                ("s", "undeclared", "o2", "value"),
                ("s", "in_env", "o3", "value"),
            ],
        ),
    );
    for strategy in ["threaded", "subprocess"] {
        let out = env.run(
            &["run", "--strategy", strategy, wf.to_str().unwrap()],
            &[("BRIDGE_TEST_UNDECLARED", "leak")],
        );
        assert!(out.status.success(), "{strategy}: {}", text(&out.stderr));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            result,
            json!({"secret": ["from-secrets-file"], "undeclared": [""], "in_env": [false]}),
            "{strategy}"
        );
    }
}

/// A Python node's VRAM hint (`get_required_vram_gb`, sent in `discover`) is checked against
/// `NODETOOL_VRAM_GB`: too little refuses the job before anything runs, naming the node, its
/// type and both figures; enough, or no setting, runs it.
#[test]
fn a_python_nodes_vram_hint_is_checked_against_nodetool_vram_gb() {
    let Some(env) = python("a_python_nodes_vram_hint_is_checked_against_nodetool_vram_gb") else {
        return;
    };
    let wf = env.write(
        "gpu.json",
        &graph(
            &[
                ("gpu", "bridgetest.basic.NeedsGpu", json!({"text": "drawn"})),
                ("o", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[("gpu", "output", "o", "value")],
        ),
    );
    let wf = wf.to_string_lossy().into_owned();
    for strategy in ["threaded", "subprocess"] {
        let args = ["run", wf.as_str(), "--strategy", strategy];
        let out = env.run(&args, &[("NODETOOL_VRAM_GB", "4")]);
        assert!(!out.status.success(), "{strategy}");
        let err = text(&out.stderr);
        for part in [
            "node `gpu`",
            "bridgetest.basic.NeedsGpu",
            "12 GB",
            "4 GB",
            "NODETOOL_VRAM_GB",
        ] {
            assert!(err.contains(part), "{strategy}: {part}: {err}");
        }
    }
    for vars in [&[("NODETOOL_VRAM_GB", "24")][..], &[]] {
        let out = env.run(&["run", &wf], vars);
        assert!(out.status.success(), "{vars:?}: {}", text(&out.stderr));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result["out"], json!(["drawn"]), "{result}");
    }
}

#[test]
fn without_nodetool_python_a_python_type_fails_validation_saying_how_to_enable_it() {
    let env = Env::new(None);
    let wf = env.write("mixed.json", &mixed());
    let out = env.run(&["run", wf.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown node type `bridgetest.basic.Echo`"),
        "{err}"
    );
    assert!(err.contains("set NODETOOL_PYTHON"), "{err}");
    // A native-only workflow never starts (or needs) Python.
    let nat = env.write("native.json", &native());
    let out = env.run(
        &["run", nat.to_str().unwrap()],
        &[("NODETOOL_PYTHON", "/nonexistent/python")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_nodetool_python_that_does_not_exist_is_named_in_the_error() {
    let env = Env::new(None);
    let wf = env.write("mixed.json", &mixed());
    let out = env.run(
        &["run", wf.to_str().unwrap()],
        &[("NODETOOL_PYTHON", "/nonexistent/python")],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown node type `bridgetest.basic.Echo`"),
        "{err}"
    );
    assert!(
        err.contains("NODETOOL_PYTHON=/nonexistent/python: cannot start it (no such file)"),
        "{err}"
    );
    let doctor = env.run(
        &["python", "doctor"],
        &[("NODETOOL_PYTHON", "/nonexistent/python")],
    );
    assert!(!doctor.status.success());
    assert!(
        text(&doctor.stdout).contains("BROKEN"),
        "{}",
        text(&doctor.stdout)
    );
}

#[test]
fn doctor_reports_versions_namespaces_and_load_errors() {
    let Some(env) = python("doctor_reports_versions") else {
        return;
    };
    let out = env.run(&["python", "doctor"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("Python bridge: ok"), "{report}");
    assert!(report.contains("nodetool-core 0.8.2"), "{report}");
    assert!(report.contains("protocol:     6"), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.trim_start().starts_with("bridgetest") && l.trim_end().ends_with(" 12")),
        "{report}"
    );
    assert!(report.contains("load errors:  none"), "{report}");

    // A pack with a module that cannot import: the load error is listed.
    let broken = env.dir.path().join("broken");
    let pack = broken.join("nodetool/nodes/brokenpack");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("__init__.py"), "").unwrap();
    std::fs::write(pack.join("bad.py"), "import does_not_exist_anywhere\n").unwrap();
    let packs = format!(
        "{}:{}",
        env.python.as_ref().unwrap().packs.display(),
        broken.display()
    );
    let out = env.run(&["python", "doctor", "--json"], &[("PYTHONPATH", &packs)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["status"]["load_errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .unwrap()
            .contains("nodetool.nodes.brokenpack.bad (import): ModuleNotFoundError")),
        "{report:#}"
    );
    assert_eq!(report["status"]["protocol_version"], 6);

    let off = Env::new(None).run(&["python", "doctor"], &[]);
    assert!(off.status.success());
    assert!(text(&off.stdout).contains("off (NODETOOL_PYTHON is not set)"));
}

#[test]
fn docker_jobs_refuse_python_nodes_clearly() {
    let Some(env) = python("docker_jobs_refuse_python_nodes") else {
        return;
    };
    if !Path::new("/var/run/docker.sock").exists() {
        nodetool_testkit::skip_or_fail("docker_jobs_refuse_python_nodes", "no Docker socket");
        return;
    }
    let wf = env.write("mixed.json", &mixed());
    let out = env.run(
        &["run", "--strategy", "docker", wf.to_str().unwrap()],
        &[("DOCKER_IMAGE", "nodetool-worker:bridge-refusal-test")],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("Python nodes cannot run in docker jobs"),
        "{err}"
    );
    assert!(err.contains("`b` (bridgetest.basic.Echo)"), "{err}");
    assert!(err.contains("threaded or subprocess strategy"), "{err}");
}

/// A running `nodetool serve`.
struct Server {
    proc: ServeProcess,
    port: u16,
}

impl Server {
    fn start(env: &Env) -> Server {
        Self::start_with(env, &[])
    }

    fn start_with(env: &Env, vars: &[(&str, &str)]) -> Server {
        let proc = ServeProcess::start(env.cmd(&["serve"], vars), Duration::from_secs(90));
        Server {
            port: proc.port(),
            proc,
        }
    }

    fn url(&self) -> String {
        self.proc.url("")
    }

    /// Submits over REST with `?stream=true` and reads the NDJSON events to the end.
    async fn rest_events(&self, graph: &Value, strategy: &str) -> Vec<Value> {
        self.rest_request(json!({"graph": graph, "execution_strategy": strategy}))
            .await
    }

    async fn rest_request(&self, request: Value) -> Vec<Value> {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/jobs?stream=true", self.url()))
            .header("accept", "application/x-ndjson")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let body = resp.text().await.unwrap();
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn ws_events(&self, graph: &Value, strategy: &str) -> Vec<Value> {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let cmd =
            json!({"command": "run_job", "data": {"graph": graph, "execution_strategy": strategy}});
        ws.send(Message::text(cmd.to_string())).await.unwrap();
        let mut events = Vec::new();
        loop {
            let msg = ws.next().await.expect("socket open").unwrap();
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v.get("seq").is_none() {
                continue; // the command's reply
            }
            let done = v["type"] == "job_update"
                && ["completed", "failed", "cancelled"]
                    .contains(&v["status"].as_str().unwrap_or(""));
            events.push(v);
            if done {
                return events;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_mixed_workflows_over_rest_and_ws_with_native_events() {
    let Some(env) = python("serve_runs_mixed_workflows") else {
        return;
    };
    let server = Server::start(&env);
    for strategy in ["threaded", "subprocess"] {
        let want = shape(&server.rest_events(&native(), strategy).await);
        let rest = server.rest_events(&mixed(), strategy).await;
        let last = rest.last().unwrap();
        assert_eq!(last["status"], "completed", "{strategy}: {last}");
        assert_eq!(last["result"]["out"], json!(["abab!"]), "{strategy}");
        assert_eq!(shape(&rest), want, "{strategy} over REST");
        let ws = server.ws_events(&mixed(), strategy).await;
        assert_eq!(shape(&ws), want, "{strategy} over /ws");
    }

    // A failing Python node fails its job; the server and its bridge carry on.
    let failing = graph(
        &[
            ("f", "bridgetest.basic.Crash", json!({"code": 9})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("f", "output", "out", "value")],
    );
    let events = server.rest_events(&failing, "threaded").await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("exit code 9"),
        "{last}"
    );
    let again = server.rest_events(&mixed(), "threaded").await;
    assert_eq!(again.last().unwrap()["result"]["out"], json!(["abab!"]));

    // The app's node menu lists the bridged types with the worker's own metadata.
    let metadata: Vec<Value> = reqwest::get(format!("{}/api/nodes/metadata", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let echo = metadata
        .iter()
        .find(|m| m["node_type"] == "bridgetest.basic.Echo")
        .expect("bridged type in /api/nodes/metadata");
    assert_eq!(echo["namespace"], "bridgetest.basic");
    assert!(
        echo["description"]
            .as_str()
            .unwrap()
            .contains("Repeats a text"),
        "{echo}"
    );
    let count = metadata
        .iter()
        .find(|m| m["node_type"] == "bridgetest.basic.Count")
        .unwrap();
    assert_eq!(count["is_streaming_output"], true);
    assert!(metadata
        .iter()
        .any(|m| m["node_type"] == "nodetool.text.Concat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workers_get_an_allow_listed_environment_and_live_inside_a_subprocess_job() {
    let Some(env) = python("python_workers_get_an_allow_listed_environment") else {
        return;
    };
    let server = Server::start_with(
        &env,
        &[
            ("BRIDGE_TEST_SECRET", "in-the-server-env"),
            ("OPENAI_API_KEY", "sk-test"),
            ("SOME_OTHER_VAR", "x"),
        ],
    );
    let g = graph(
        &[
            ("w", "bridgetest.basic.Whereabouts", json!({})),
            ("o", "nodetool.output.Output", json!({"name": "w"})),
        ],
        &[("w", "env", "o", "value")],
    );
    let keys_of = |events: &[Value]| -> Vec<String> {
        let last = events.last().unwrap();
        assert_eq!(last["status"], "completed", "{last}");
        serde_json::from_value(last["result"]["w"][0].clone()).unwrap()
    };
    for strategy in ["threaded", "subprocess"] {
        let keys = keys_of(&server.rest_events(&g, strategy).await);
        for leaked in [
            "BRIDGE_TEST_SECRET",
            "OPENAI_API_KEY",
            "SOME_OTHER_VAR",
            "NODETOOL_CONFIG_DIR",
            "ENV",
        ] {
            assert!(
                !keys.contains(&leaked.to_owned()),
                "{strategy}: {leaked} reached the worker: {keys:?}"
            );
        }
        assert!(
            keys.contains(&"PYTHONPATH".to_owned()),
            "{strategy}: {keys:?}"
        );
    }

    // Under the subprocess strategy the Python worker is inside the job: its scratch dir, its
    // rlimits, its process group (so it dies with the job).
    let g = graph(
        &[
            ("w", "bridgetest.basic.Whereabouts", json!({})),
            ("t", "nodetool.output.Output", json!({"name": "tmpdir"})),
            ("n", "nodetool.output.Output", json!({"name": "nofile"})),
        ],
        &[("w", "tmpdir", "t", "value"), ("w", "nofile", "n", "value")],
    );
    let events = server
        .rest_request(json!({"graph": g, "execution_strategy": "subprocess", "resource_limits": {"open_files": 200}}))
        .await;
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    let tmpdir = last["result"]["tmpdir"][0].as_str().unwrap();
    assert!(
        tmpdir.contains("nodetool-job-"),
        "the job's scratch dir: {tmpdir}"
    );
    assert!(!Path::new(tmpdir).exists(), "removed with the job");
    assert_eq!(
        last["result"]["nofile"],
        json!([200]),
        "the job's rlimits apply"
    );

    // Cancelling the job takes its Python worker with it.
    let pid_file = env.dir.path().join("sleeper.pid");
    let g = graph(
        &[
            (
                "s",
                "bridgetest.basic.Sleep",
                json!({"seconds": 60.0, "pid_file": pid_file.display().to_string()}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "o"})),
        ],
        &[("s", "output", "o", "value")],
    );
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{}/api/jobs", server.url()))
        .json(&json!({"graph": g, "execution_strategy": "subprocess"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"]
        .as_str()
        .or(job["job_id"].as_str())
        .unwrap()
        .to_owned();
    let pid = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(p) = std::fs::read_to_string(&pid_file) {
                return p.trim().parse::<u32>().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sleeper started");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let resp = http
        .post(format!("{}/api/jobs/{id}/cancel", server.url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    tokio::time::timeout(Duration::from_secs(30), async {
        // Gone, or a zombie its (dead) parent left for init.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the job's Python worker ended with the job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_broken_python_setup_keeps_serving_and_says_why() {
    let env = Env::new(None);
    let server = Server::start_with(&env, &[("NODETOOL_PYTHON", "/nonexistent/python")]);
    for strategy in ["threaded", "subprocess"] {
        let events = server.rest_events(&mixed(), strategy).await;
        let last = events.last().unwrap();
        assert_eq!(last["status"], "failed", "{strategy}: {last}");
        let err = last["error"].as_str().unwrap();
        assert!(
            err.contains("unknown node type `bridgetest.basic.Echo`"),
            "{strategy}: {err}"
        );
        assert!(
            err.contains("NODETOOL_PYTHON=/nonexistent/python: cannot start it"),
            "{strategy}: {err}"
        );
        let events = server.rest_events(&native(), strategy).await;
        assert_eq!(
            events.last().unwrap()["result"]["out"],
            json!(["abab!"]),
            "{strategy}: native jobs run"
        );
    }
}
