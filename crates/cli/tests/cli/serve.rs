//! `nodetool serve` operations through the real binary: HTTPS with `--tls-cert/--tls-key`,
//! startup errors for bad TLS files, graceful shutdown, and rotating `SERVER_AUTH_TOKEN` without
//! a restart (secrets.yaml polling and SIGHUP).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nodetool_testkit::serve_process::ServeProcess;
use std::time::{Duration, Instant};

/// Generous: the binary opens its database and probes Docker before it listens.
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetool"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("NODETOOL_CONFIG_DIR", self.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().copied());
        cmd
    }

    /// Replaces secrets.yaml the way an operator's tooling should: write aside, then rename.
    fn write_secrets(&self, text: &str) {
        let tmp = self.path("secrets.yaml.tmp");
        std::fs::write(&tmp, text).expect("write secrets");
        std::fs::rename(&tmp, self.path("secrets.yaml")).expect("rename secrets");
    }
}

/// A running `nodetool serve`, killed if the test ends early.
struct Server {
    proc: ServeProcess,
    port: u16,
}

impl Server {
    fn start(env: &Env, extra_args: &[&str], vars: &[(&str, &str)]) -> Self {
        let mut args = vec!["serve"];
        args.extend_from_slice(extra_args);
        let proc = ServeProcess::start(env.cmd(&args, vars), WAIT);
        Self {
            port: proc.port(),
            proc,
        }
    }

    fn signal(&self, name: &str) {
        self.proc.signal(name);
    }

    /// Status code of `GET path` with `Authorization: Bearer token`, over plain HTTP.
    fn status(&self, path: &str, token: &str) -> u16 {
        get(self, path, token, "").0
    }

    /// Polls until `old` is refused and `new` accepted, or fails after [`WAIT`].
    fn wait_for_rotation(&self, old: &str, new: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (o, n) = (self.status("/api/jobs", old), self.status("/api/jobs", new));
            if (o, n) == (401, 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "token not rotated: old token got {o}, new token got {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(mut self) -> std::process::ExitStatus {
        self.proc.wait_exit(WAIT)
    }
}

fn stderr_of(env: &Env, args: &[&str]) -> (bool, String) {
    let out = env.cmd(args, &[]).output().expect("run nodetool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A self-signed certificate for `localhost` and its key as files; returns the cert PEM.
fn self_signed(dir: &Path) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let cert = ck.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert).expect("cert");
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).expect("key");
    cert
}

#[test]
fn bad_tls_files_stop_startup_naming_the_file() {
    let env = Env::new();
    self_signed(env.dir.path());
    let cert = env.path("cert.pem");
    let key = env.path("key.pem");
    let missing = env.path("no-such-cert.pem");
    let garbage = env.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("garbage");
    let port = "0".to_owned();
    let s = |p: &Path| p.display().to_string();

    for (cert_arg, key_arg, named) in [
        (s(&missing), s(&key), s(&missing)),
        (s(&garbage), s(&key), s(&garbage)),
        (s(&cert), s(&garbage), s(&garbage)),
        (s(&cert), s(&cert), s(&cert)),
    ] {
        let (ok, err) = stderr_of(
            &env,
            &[
                "serve",
                "--port",
                &port,
                "--tls-cert",
                &cert_arg,
                "--tls-key",
                &key_arg,
            ],
        );
        assert!(
            !ok,
            "serve started with --tls-cert {cert_arg} --tls-key {key_arg}"
        );
        assert!(err.contains("error:") && err.contains(&named), "{err}");
    }
    // One without the other is a usage error.
    let (ok, err) = stderr_of(&env, &["serve", "--port", &port, "--tls-cert", &s(&cert)]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
}

#[test]
fn serves_https_and_shuts_down_gracefully() {
    let env = Env::new();
    let cert_pem = self_signed(env.dir.path());
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    let server = Server::start(
        &env,
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
        &[],
    );
    let port = server.port;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .build()
            .expect("client");
        let resp = client
            .get(format!("https://localhost:{port}/health"))
            .send()
            .await
            .expect("https request");
        assert_eq!(resp.status(), 200);
        // Plain HTTP is not served on the HTTPS port.
        let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
        assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    });

    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn a_rewritten_secrets_file_rotates_the_static_token() {
    let env = Env::new();
    env.write_secrets("SERVER_AUTH_TOKEN: first-token-abcdef\n");
    let server = Server::start(&env, &[], &[("AUTH_PROVIDER", "static")]);
    assert_eq!(server.status("/api/jobs", "first-token-abcdef"), 200);
    assert_eq!(server.status("/api/jobs", "second-token-ghijkl"), 401);

    env.write_secrets("SERVER_AUTH_TOKEN: second-token-ghijkl\n");
    server.wait_for_rotation("first-token-abcdef", "second-token-ghijkl");
}

#[test]
fn sighup_rotates_the_static_token_at_once() {
    let env = Env::new();
    env.write_secrets("SERVER_AUTH_TOKEN: old-token-123456\n");
    // Polling off: only the signal can bring the change in.
    let server = Server::start(
        &env,
        &["--token-reload-interval", "0"],
        &[("AUTH_PROVIDER", "static")],
    );
    assert_eq!(server.status("/api/jobs", "old-token-123456"), 200);

    env.write_secrets("SERVER_AUTH_TOKEN: new-token-654321, newer-token-777\n");
    assert_eq!(
        server.status("/api/jobs", "new-token-654321"),
        401,
        "nothing re-reads the file before the signal"
    );
    server.signal("HUP");
    server.wait_for_rotation("old-token-123456", "new-token-654321");
    assert_eq!(server.status("/api/jobs", "newer-token-777"), 200);

    // SIGHUP reloads; it does not stop the server.
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

/// `GET path` with a bearer token and extra headers: (status, headers, body).
fn get(server: &Server, path: &str, token: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head, raw[split + 4..].to_vec())
}

/// Undoes `Transfer-Encoding: chunked` when the server chose it.
fn dechunk(head: &str, body: &[u8]) -> Vec<u8> {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&rest[..line_end])
                .expect("ascii size")
                .trim(),
            16,
        )
        .expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
}

#[test]
fn node_metadata_lists_every_runnable_type_in_nodetools_shape() {
    let env = Env::new();
    env.write_secrets("SERVER_AUTH_TOKEN: meta-token-abcdef\n");
    let server = Server::start(&env, &[], &[("AUTH_PROVIDER", "static")]);
    assert_eq!(
        server.status("/api/nodes/metadata", "wrong-token-000000"),
        401
    );

    let (status, head, body) = get(&server, "/api/nodes/metadata", "meta-token-abcdef", "");
    assert_eq!(status, 200, "{head}");
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&dechunk(&head, &body)).expect("a JSON array");
    // Every type `nodetool nodes` lists as runnable (native or provider) appears.
    let out = env.cmd(&["nodes"], &[]).output().expect("nodetool nodes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let runnable: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .filter(|(_, label)| matches!(label.trim(), "native" | "provider"))
        .map(|(t, _)| t)
        .collect();
    assert!(runnable.len() > 100, "{listing}");
    let served: Vec<&str> = list
        .iter()
        .filter_map(|m| m["node_type"].as_str())
        .collect();
    assert!(served.len() > 100, "{} types", served.len());
    for t in &runnable {
        assert!(served.contains(t), "{t} missing from /api/nodes/metadata");
    }
    // NodeTool's NodeMetadata fields, with TypeMetadata trees.
    let concat = list
        .iter()
        .find(|m| m["node_type"] == "nodetool.text.Concat")
        .expect("Concat");
    for field in [
        "title",
        "description",
        "namespace",
        "node_type",
        "layout",
        "properties",
        "outputs",
        "the_model_info",
        "recommended_models",
        "basic_fields",
        "required_settings",
        "is_dynamic",
        "is_streaming_output",
        "expose_as_tool",
        "supports_dynamic_outputs",
    ] {
        assert!(concat.get(field).is_some(), "{field} missing: {concat}");
    }
    assert_eq!(concat["namespace"], "nodetool.text");
    assert_eq!(concat["properties"][0]["type"]["type"], "str");
    assert_eq!(concat["outputs"][0]["name"], "output");
    let tti = list
        .iter()
        .find(|m| m["node_type"] == "nodetool.image.TextToImage")
        .expect("TextToImage");
    assert_eq!(tti["expose_as_tool"], true);

    // The app reloads it often: an ETag and a 304.
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .expect("etag header")
        .to_owned();
    let (status, _, body) = get(
        &server,
        "/api/nodes/metadata",
        "meta-token-abcdef",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!((status, body.len()), (304, 0));
}
