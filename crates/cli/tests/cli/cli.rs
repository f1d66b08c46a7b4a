//! The `nodetool` binary end to end, with a scrubbed environment and a temporary config dir.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("NODETOOL_CONFIG_DIR", self.config_dir())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd
    }

    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = self.cmd(args);
        cmd.envs(vars.iter().copied());
        cmd.output().expect("run nodetool")
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nodetool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn settings_show_reports_sources_and_masks_secrets() {
    let env = Env::new();
    std::fs::write(
        env.config_dir().join("settings.yaml"),
        "ASSET_BUCKET: from-settings\nS3_REGION: eu-west-1\n",
    )
    .expect("settings.yaml");
    std::fs::write(
        env.config_dir().join("secrets.yaml"),
        "SUPABASE_KEY: service-role-key-abcd\nS3_REGION: eu-central-1\n",
    )
    .expect("secrets.yaml");
    let vars = [("ENV", "test"), ("S3_REGION", "ap-south-1")];

    let out = env.run(&["settings", "show"], &vars);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .to_owned()
    };
    assert!(line("S3_REGION").contains("ap-south-1") && line("S3_REGION").contains("env"));
    assert!(
        line("ASSET_BUCKET").contains("from-settings")
            && line("ASSET_BUCKET").contains("settings.yaml")
    );
    assert!(line("ENV").contains("test"));
    assert!(line("THREAD_POOL_SIZE").contains("default"));
    assert!(
        !text.lines().any(|l| l.starts_with("SUPABASE_KEY ")),
        "secrets are hidden without --secrets"
    );
    assert!(!text.contains("service-role-key-abcd"));

    let out = env.run(&["settings", "show", "--secrets"], &vars);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("SUPABASE_KEY "))
        .expect("row");
    assert!(
        row.contains("****abcd") && row.contains("secrets.yaml"),
        "{row}"
    );
    assert!(!text.contains("service-role-key-abcd"));

    let out = env.run(&["settings", "show", "--reveal"], &vars);
    assert!(stdout(&out).contains("service-role-key-abcd"));

    let out = env.run(&["settings", "show", "--json"], &vars);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let region = json
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["name"] == "S3_REGION")
        .expect("S3_REGION");
    assert_eq!(region["source"], "env");
}

#[test]
fn malformed_setting_names_variable_and_file() {
    let env = Env::new();
    std::fs::write(
        env.config_dir().join("settings.yaml"),
        "MEMCACHE_PORT: abc\n",
    )
    .expect("write");
    let out = env.run(&["settings", "show"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("MEMCACHE_PORT") && err.contains("settings.yaml"),
        "{err}"
    );
}

#[test]
fn storage_round_trip_on_default_file_storage() {
    let env = Env::new();
    let out = env.run(&["storage", "info"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = stdout(&out);
    assert!(info.contains("asset") && info.contains("file"), "{info}");
    assert!(
        info.contains(&env.config_dir().join("assets").display().to_string()),
        "{info}"
    );
    assert!(
        info.contains(&env.config_dir().join("temp").display().to_string()),
        "{info}"
    );

    let out = env.run_stdin(
        &["storage", "put", "demo/hello.txt", "-"],
        b"hello, nodetool\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(env.config_dir().join("assets/demo/hello.txt")).expect("file on disk"),
        b"hello, nodetool\n"
    );

    let out = env.run(&["storage", "get", "demo/hello.txt", "-"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"hello, nodetool\n");

    let target = env.dir.path().join("copy.txt");
    let out = env.run(
        &[
            "storage",
            "get",
            "demo/hello.txt",
            target.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).expect("copy"), b"hello, nodetool\n");

    // Put from a named file (file storage copies it in the kernel), then a missing file.
    let out = env.run(
        &[
            "storage",
            "put",
            "demo/again.txt",
            target.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("16 bytes, text/plain"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(env.config_dir().join("assets/demo/again.txt")).expect("file on disk"),
        b"hello, nodetool\n"
    );
    let missing = env.dir.path().join("missing.txt");
    let out = env.run(
        &[
            "storage",
            "put",
            "demo/none.txt",
            missing.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot open"), "{}", stderr(&out));
    let out = env.run(&["storage", "rm", "demo/again.txt"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = env.run(&["storage", "ls", "demo/", "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["key"], "demo/hello.txt");
    assert_eq!(listed[0]["content_type"], "text/plain");

    let out = env.run(
        &["storage", "url", "demo/hello.txt"],
        &[("NODETOOL_API_URL", "http://localhost:7777")],
    );
    let url = stdout(&out).trim().to_owned();
    assert!(
        url.starts_with("http://localhost:7777/api/storage/demo/hello.txt?expires=")
            && url.contains("&sig="),
        "file storage URLs are signed so <img src> works with auth on: {url}"
    );

    let out = env.run(&["storage", "rm", "demo/hello.txt"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["storage", "get", "demo/hello.txt", "-"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    // A failed download to a file leaves the file that was there untouched.
    let out = env.run(
        &[
            "storage",
            "get",
            "demo/hello.txt",
            target.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).expect("copy"), b"hello, nodetool\n");
}

#[test]
fn temp_storage_is_separate_and_gc_removes_expired_objects() {
    let env = Env::new();
    let out = env.run_stdin(&["storage", "put", "--temp", "scratch.bin", "-"], b"tmp");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.config_dir().join("temp/scratch.bin").exists());
    assert!(!env.config_dir().join("assets/scratch.bin").exists());

    // With the default 24 h TTL nothing is old enough.
    let out = env.run(&["storage", "gc"], &[]);
    assert!(stdout(&out).contains("deleted 0"), "{}", stdout(&out));
    assert!(env.config_dir().join("temp/scratch.bin").exists());

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.run(&["storage", "gc"], &[("ASSET_TEMP_TTL", "1")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deleted 1"), "{}", stdout(&out));
    assert!(!env.config_dir().join("temp/scratch.bin").exists());
}

#[test]
fn bad_keys_are_refused_before_any_io() {
    let env = Env::new();
    for key in ["../x", "a/../../b", "/etc/passwd", "a\\b", "", "a//b"] {
        let out = env.run_stdin(&["storage", "put", key, "-"], b"x");
        assert!(!out.status.success(), "{key:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains("invalid storage key"), "{key:?}: {err}");
    }
    // Refused before the backend was even built: no asset folder was created.
    assert!(!env.config_dir().join("assets").exists());
}

#[test]
fn test_env_selects_memory_storage() {
    let env = Env::new();
    let out = env.run(&["storage", "info", "--json"], &[("ENV", "test")]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info[0]["backend"], "memory");
    assert_eq!(info[1]["backend"], "memory");
    assert_eq!(info[2]["backend"], "memory");
}

#[test]
fn s3_and_memcached_selection_is_reported() {
    let env = Env::new();
    let vars = [
        ("S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("S3_SECRET_ACCESS_KEY", "secret-example"),
        ("S3_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("ASSET_BUCKET", "nodetool-assets"),
        ("MEMCACHE_HOST", "127.0.0.1"),
        ("MEMCACHE_PORT", "11211"),
    ];
    let out = env.run(&["storage", "info", "--json"], &vars);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info[0]["backend"], "s3");
    assert!(info[0]["location"]
        .as_str()
        .expect("str")
        .contains("nodetool-assets"));
    assert_eq!(info[1]["backend"], "s3");
    assert!(info[1]["location"].as_str().expect("str").contains("temp/"));
    assert_eq!(info[2]["backend"], "memcached");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("secret-example"),
        "secrets must not appear in storage info"
    );
}

#[test]
fn unreachable_s3_fails_fast_naming_the_endpoint() {
    let env = Env::new();
    let vars = [
        ("S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("S3_SECRET_ACCESS_KEY", "secret-example"),
        ("S3_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("S3_TIMEOUT_SECONDS", "2"),
        ("ASSET_BUCKET", "nodetool-assets"),
    ];
    let out = env.run(&["storage", "ls"], &vars);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

#[test]
fn run_executes_the_example_workflow() {
    let env = Env::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.json");
    let out = env.run(&["run", example], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json result");
    assert_eq!(result["greeting"], serde_json::json!(["Hello, world!"]));
    assert_eq!(result["shout"], serde_json::json!(["HELLO, WORLD!"]));
    assert_eq!(result["sorted"], serde_json::json!([[1, 2, 3]]));
    assert_eq!(result["sum"], serde_json::json!([6]));

    let out = env.run(
        &["run", example, "--params", r#"{"name": "nodetool"}"#],
        &[],
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json result");
    assert_eq!(result["greeting"], serde_json::json!(["Hello, nodetool!"]));

    let out = env.run(&["run", example, "--jsonl"], &[]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert_eq!(events.first().expect("events")["type"], "job_update");
    let last_job = events
        .iter()
        .rev()
        .find(|e| e["type"] == "job_update")
        .expect("final job_update");
    assert_eq!(last_job["status"], "completed");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq is 1, 2, 3, ...: {seqs:?}"
    );
}

/// `--profile` prints a per-node table and `--trace` writes Chrome trace-event JSON, from the
/// job's own events, the same way for an in-process and a worker run.
#[test]
fn run_profiles_and_traces_every_node_on_every_local_strategy() {
    let env = Env::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.json");
    for strategy in ["threaded", "subprocess"] {
        let trace = env.dir.path().join(format!("{strategy}.trace.json"));
        let trace_arg = trace.to_string_lossy().into_owned();
        let out = env.run(
            &[
                "run",
                example,
                "--strategy",
                strategy,
                "--profile",
                "--trace",
                &trace_arg,
            ],
            &[],
        );
        assert!(out.status.success(), "{strategy}: {}", stderr(&out));
        // The result on stdout is unchanged by profiling.
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json result");
        assert_eq!(result["shout"], serde_json::json!(["HELLO, WORLD!"]));

        let table = stderr(&out);
        assert!(table.contains("wall ms"), "{strategy}: {table}");
        for node in ["name", "greet", "upper", "nums", "sort", "sum"] {
            assert!(
                table
                    .lines()
                    .any(|l| l.starts_with(node) && l.ends_with("completed")),
                "{strategy}: no completed row for {node}: {table}"
            );
        }

        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&trace).expect("trace file")).expect("json");
        let events = trace["traceEvents"].as_array().expect("traceEvents");
        let by_node = |id: &str| {
            events
                .iter()
                .find(|e| e["args"]["node_id"] == id)
                .unwrap_or_else(|| panic!("{strategy}: no span for {id}: {trace}"))
        };
        assert_eq!(events.len(), 10, "{strategy}: one span per node: {trace}");
        for e in events {
            assert_eq!(e["ph"], "X");
            assert!(e["ts"].is_u64() && e["dur"].is_u64() && e["tid"].as_u64() >= Some(1));
        }
        // An edge's target starts no earlier than its source started and ends after it ended.
        let (greet, upper) = (by_node("greet"), by_node("upper"));
        let end = |e: &serde_json::Value| e["ts"].as_u64().unwrap() + e["dur"].as_u64().unwrap();
        assert!(upper["ts"].as_u64() >= greet["ts"].as_u64());
        assert!(end(upper) >= end(greet));
        assert_eq!(greet["cat"], "nodetool.text.FormatText");
        assert!(greet["args"]["output_bytes"].as_u64() > Some(0));
    }
    // A trace that cannot be written is a clear error naming the file, not a panic.
    let out = env.run(&["run", example, "--trace", "/nonexistent-dir/t.json"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent-dir/t.json"),
        "{}",
        stderr(&out)
    );
}

/// Each firing's terminal update says what it cost — CPU time, bytes read and written through
/// storage — the same on every local strategy (a worker's figures reach the parent), and
/// `--profile` shows them: one SaveText writes a 1,000-byte asset, the next reads it back and
/// writes its copy.
#[test]
fn each_firing_reports_its_storage_bytes_on_every_local_strategy() {
    let env = Env::new();
    let chain = env.dir.path().join("chain.json");
    let text = "x".repeat(1000);
    std::fs::write(
        &chain,
        serde_json::json!({
            "nodes": [
                {"id": "first", "type": "nodetool.text.SaveText",
                 "data": {"text": text, "name": "a.txt"}},
                {"id": "copy", "type": "nodetool.text.SaveText", "data": {"name": "b.txt"}},
                {"id": "o", "type": "nodetool.output.Output", "data": {"name": "saved"}}
            ],
            "edges": [
                {"id": "e1", "source": "first", "sourceHandle": "output", "target": "copy", "targetHandle": "text"},
                {"id": "e2", "source": "copy", "sourceHandle": "output", "target": "o", "targetHandle": "value"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let chain = chain.to_string_lossy().into_owned();
    for strategy in ["threaded", "subprocess"] {
        let out = env.run(&["run", &chain, "--strategy", strategy, "--jsonl"], &[]);
        assert!(out.status.success(), "{strategy}: {}", stderr(&out));
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let done = |node: &str| {
            events
                .iter()
                .find(|e| {
                    e["type"] == "node_update" && e["node_id"] == node && e["status"] == "completed"
                })
                .unwrap_or_else(|| panic!("{strategy}: no completed {node}: {events:?}"))
                ["resources"]
                .clone()
        };
        let (first, copy) = (done("first"), done("copy"));
        assert_eq!(
            (
                first["bytes_read"].as_u64(),
                first["bytes_written"].as_u64()
            ),
            (Some(0), Some(1000)),
            "{strategy}: {first}"
        );
        assert_eq!(
            (copy["bytes_read"].as_u64(), copy["bytes_written"].as_u64()),
            (Some(1000), Some(1000)),
            "{strategy}: {copy}"
        );
        for r in [&first, &copy] {
            for time in ["cpu_ms", "wall_ms"] {
                assert!(r[time].as_f64().is_some_and(|t| t >= 0.0), "{time}: {r}");
            }
        }
        // Running updates carry no figures: they open a firing.
        assert!(events
            .iter()
            .filter(|e| e["type"] == "node_update" && e["status"] == "running")
            .all(|e| e.get("resources").is_none()));

        let out = env.run(&["run", &chain, "--strategy", strategy, "--profile"], &[]);
        assert!(out.status.success(), "{strategy}: {}", stderr(&out));
        let table = stderr(&out);
        let header = table
            .lines()
            .find(|l| l.starts_with("node "))
            .unwrap_or_default();
        for column in ["cpu ms", "read", "written", "cache"] {
            assert!(header.contains(column), "{strategy}: {table}");
        }
        let copy_row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("copy "))
            .unwrap_or_else(|| panic!("{strategy}: {table}"))
            .split_whitespace()
            .collect();
        // node, type, start, wall, cpu, outputs, output bytes, read, written, cache, status
        assert_eq!(
            (copy_row[7], copy_row[8]),
            ("1000", "1000"),
            "{strategy}: {table}"
        );
        // A worker run says what its process held at most; a threaded run shares the heap.
        let peak = table
            .lines()
            .find(|l| l.starts_with("worker peak memory: "));
        assert_eq!(
            peak.is_some(),
            strategy == "subprocess",
            "{strategy}: {table}"
        );
        let terminal = events
            .iter()
            .rev()
            .find(|e| e["type"] == "job_update")
            .unwrap();
        let bytes = terminal["peak_memory_bytes"].as_u64();
        match strategy {
            // More than nothing, less than what a worker that size could not be.
            "subprocess" => assert!(
                bytes.is_some_and(|b| b > 1 << 20 && b < 8 << 30),
                "{terminal}"
            ),
            _ => assert_eq!(bytes, None, "{terminal}"),
        }
    }
}

/// `run --strategy subprocess`: the worker saves through its parent (no storage settings of its
/// own), so the blob lands in the asset folder and the row in the database, where another
/// worker and a threaded run list it.
#[test]
fn run_in_a_subprocess_saves_and_lists_assets_through_the_parent() {
    let env = Env::new();
    let save = env.dir.path().join("save.json");
    std::fs::write(
        &save,
        serde_json::json!({
            "nodes": [
                {"id": "t", "type": "nodetool.text.SaveText",
                 "data": {"text": "hello from a worker", "name": "greeting.txt"}},
                {"id": "o", "type": "nodetool.output.Output", "data": {"name": "saved"}}
            ],
            "edges": [{"id": "e", "source": "t", "sourceHandle": "output",
                       "target": "o", "targetHandle": "value"}]
        })
        .to_string(),
    )
    .expect("write");
    let out = env.run(
        &[
            "run",
            "--strategy",
            "subprocess",
            save.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json result");
    let uri = result["saved"][0]["uri"].as_str().expect("an asset ref");
    let key = uri.strip_prefix("asset://").expect("asset uri");
    assert!(key.starts_with("1/"), "{key}");
    assert_eq!(
        std::fs::read_to_string(env.config_dir().join("assets").join(key)).expect("blob"),
        "hello from a worker"
    );

    let load = env.dir.path().join("load.json");
    std::fs::write(
        &load,
        serde_json::json!({
            "nodes": [
                {"id": "l", "type": "nodetool.text.LoadTextAssets", "data": {"folder": "1"}},
                {"id": "o", "type": "nodetool.output.Output", "data": {"name": "names"}}
            ],
            "edges": [{"id": "e", "source": "l", "sourceHandle": "name",
                       "target": "o", "targetHandle": "value"}]
        })
        .to_string(),
    )
    .expect("write");
    for strategy in ["subprocess", "threaded"] {
        let out = env.run(
            &["run", "--strategy", strategy, load.to_str().expect("utf8")],
            &[],
        );
        assert!(out.status.success(), "{strategy}: {}", stderr(&out));
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            result["names"],
            serde_json::json!(["greeting.txt"]),
            "{strategy}"
        );
    }
}

#[test]
fn run_rejects_bad_workflows_and_params_clearly() {
    let env = Env::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.json");
    let out = env.run(&["run", example, "--params", r#"{"name": 42}"#], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("name"), "{}", stderr(&out));

    let bad = env.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"nodes\": [\n  {\"id\": 1,,}]}").expect("write");
    let out = env.run(&["run", bad.to_str().expect("utf8")], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));

    std::fs::write(
        &bad,
        r#"{"nodes":[{"id":"a","type":"nodetool.text.Concatt"}],"edges":[]}"#,
    )
    .expect("write");
    let out = env.run(&["run", bad.to_str().expect("utf8")], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unknown node type") && err.contains("nodetool.text.Concat"),
        "{err}"
    );
}

/// One HTTP/1.1 GET over a plain socket: (status code, body).
fn http_get(port: u16, path_and_query: &str) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, response[split + 4..].to_vec())
}

#[test]
fn serve_accepts_signed_urls_from_storage_url_and_requires_a_token_otherwise() {
    let env = Env::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let vars = [
        ("AUTH_PROVIDER", "static"),
        ("SERVER_AUTH_TOKEN", "test-token-123456"),
        ("NODETOOL_API_URL", api.as_str()),
    ];
    let out = env.run_stdin(&["storage", "put", "pics/a.txt", "-"], b"signed body");
    assert!(out.status.success(), "{}", stderr(&out));

    let mut server = env
        .cmd(&["serve", "--port", &port.to_string()])
        .envs(vars)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nodetool serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not start listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let out = env.run(&["storage", "url", "pics/a.txt"], &vars);
    let url = stdout(&out).trim().to_owned();
    let path = url.strip_prefix(&api).expect("absolute URL on the API");
    let (status, body) = http_get(port, path);
    assert_eq!(status, 200, "a signed URL works without a token");
    assert_eq!(body, b"signed body");

    let (status, _) = http_get(port, "/api/storage/pics/a.txt");
    assert_eq!(
        status, 401,
        "without a token or a signature the API refuses"
    );
    let tampered = path.replace("a.txt", "b.txt");
    let (status, _) = http_get(port, &tampered);
    assert_eq!(status, 401, "a signature covers exactly one key");

    server.kill().expect("stop serve");
    let _ = server.wait();
}

/// `nodetool workflows`: import a file, list, export, run by id, and clear errors for a file
/// that is not a workflow and an id that is not stored.
#[test]
fn workflows_import_list_export_and_run_by_id() {
    let env = Env::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.json");
    let out = env.run(&["workflows", "import", example], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 32, "a new id: {id}");

    let out = env.run(&["workflows", "ls"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let out = env.run(&["workflows", "ls", "--json"], &[]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(all[0]["id"], serde_json::json!(id));
    assert_eq!(all[0]["user_id"], "1");

    let out = env.run(&["workflows", "export", &id], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
    assert_eq!(exported["graph"], original["graph"]);

    let out = env.run(
        &["workflows", "run", &id, "--params", r#"{"name": "store"}"#],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json result");
    assert_eq!(result["greeting"], serde_json::json!(["Hello, store!"]));

    let out = env.run(&["workflows", "export", "no-such-id"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let bad = env.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"nodes": "nope"}"#).unwrap();
    let out = env.run(&["workflows", "import", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nodes"), "{}", stderr(&out));
}
