//! `nodetool serve` hardening through the real binary (issue 15): slowloris connections and a
//! low open-file limit cannot starve `/health`, the connection cap holds, query secrets never
//! reach the log, and a clean shutdown leaves a complete database file without its `-wal`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use nodetool_testkit::serve_process::ServeProcess;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous: the binary opens its database and probes Docker before it listens.
const WAIT: Duration = Duration::from_secs(60);

struct Server {
    proc: ServeProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    /// `nodetool serve` with the open-file soft limit set to `nofile` (through the shell's
    /// `ulimit`, as a service manager would).
    fn start(vars: &[(&str, &str)], nofile: Option<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = env!("CARGO_BIN_EXE_nodetool");
        let limit = nofile.map_or(String::new(), |n| format!("ulimit -Sn {n} && "));
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{limit}exec \"$0\" serve \"$@\""))
            .arg(bin)
            .env_clear()
            .env("HOME", dir.path())
            .env("NODETOOL_CONFIG_DIR", dir.path())
            .env("DB_PATH", dir.path().join("nodetool.db"))
            .env("ASSET_FOLDER", dir.path().join("assets"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().copied());
        let proc = ServeProcess::start(cmd, WAIT);
        Self {
            port: proc.port(),
            proc,
            dir,
        }
    }

    fn log(&self) -> String {
        self.proc.log()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A connection that has sent half a request head and then goes quiet.
    fn half_sent(&self) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        s
    }

    /// `GET path` on a fresh connection; `None` if no answer arrives within `within`.
    fn get(&self, path: &str, within: Duration) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(within)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text))
    }

    fn signal(&self, name: &str) {
        self.proc.signal(name);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.proc.wait_exit(WAIT)
    }
}

/// True once the server has closed `s` (EOF or reset), within `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // hyper may answer 408 before closing.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// `(soft, hard)` "Max open files" of a running process.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line.split_whitespace().skip(3);
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

#[test]
fn slowloris_beyond_the_soft_fd_limit_does_not_starve_health() {
    // A soft limit of 256 (the hard one stays) and more half-sent connections than that, which
    // do not time out during the test: the server raises its soft limit to the hard one at
    // start, so it still has descriptors and connection slots for /health.
    let server = Server::start(&[("SERVER_HEADER_TIMEOUT", "600")], Some(256));
    let (soft, hard) = nofile_limits(server.proc.pid());
    assert_eq!(soft, hard, "the soft open-file limit was not raised");
    let _hogs: Vec<TcpStream> = (0..400).map(|_| server.half_sent()).collect();
    let (status, _) = server
        .get("/health", WAIT)
        .expect("/health answers while 400 half-sent connections are open");
    assert_eq!(status, 200);
}

#[test]
fn half_sent_and_idle_connections_are_closed_after_the_header_timeout() {
    let server = Server::start(&[("SERVER_HEADER_TIMEOUT", "2")], None);
    let mut hogs: Vec<TcpStream> = (0..50).map(|_| server.half_sent()).collect();
    for (i, hog) in hogs.iter_mut().enumerate() {
        assert!(
            closed_by_server(hog, Duration::from_secs(30)),
            "half-sent connection {i} still open after the header timeout"
        );
    }
    // A keep-alive connection that goes idle after one request is closed too.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(30)),
        "idle keep-alive connection"
    );
    assert_eq!(server.get("/health", WAIT).map(|r| r.0), Some(200));
}

#[test]
fn the_connection_cap_holds_and_frees_slots_as_connections_close() {
    let server = Server::start(
        &[
            ("SERVER_MAX_CONNECTIONS", "16"),
            ("SERVER_HEADER_TIMEOUT", "120"),
        ],
        None,
    );
    let hogs: Vec<TcpStream> = (0..16).map(|_| server.half_sent()).collect();
    // Every slot is taken: a 17th connection waits in the backlog, unanswered.
    assert!(
        server.get("/health", Duration::from_millis(1500)).is_none(),
        "a connection past SERVER_MAX_CONNECTIONS was served"
    );
    drop(hogs);
    assert_eq!(server.get("/health", WAIT).map(|r| r.0), Some(200));
}

#[test]
fn query_secrets_never_reach_the_log() {
    let server = Server::start(&[("RUST_LOG", "debug")], None);
    for path in [
        "/ws?api_key=very-secret-api-key-123",
        "/api/storage/x.txt?expires=1&sig=very-secret-signature-456",
        "/api/assets?token=very-secret-token-789",
    ] {
        assert!(server.get(path, WAIT).is_some(), "{path}");
    }
    assert_eq!(server.get("/health", WAIT).map(|r| r.0), Some(200));
    // The request spans are written as the requests end; give the writer a moment.
    let deadline = Instant::now() + WAIT;
    while !server.log().contains("token=REDACTED") {
        assert!(Instant::now() < deadline, "no redacted request in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    assert!(log.contains("api_key=REDACTED"), "{log}");
    assert!(log.contains("sig=REDACTED"), "{log}");
    for secret in [
        "very-secret-api-key-123",
        "very-secret-signature-456",
        "very-secret-token-789",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

async fn tables(db: &Path) -> Vec<String> {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

#[test]
fn a_clean_shutdown_checkpoints_the_wal_and_leaves_a_complete_db() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(&[], None);
        assert_eq!(server.get("/api/assets", WAIT).map(|r| r.0), Some(200));
        server.signal(signal);
        let status = server.wait_exit();
        assert!(status.success(), "exit after SIG{signal}: {status}");
        let wal = server.path("nodetool.db-wal");
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "SIG{signal}: the -wal file is left with data"
        );
        // The database file alone, copied elsewhere, has every table.
        let copy = tempfile::tempdir().unwrap();
        let db = copy.path().join("copy.db");
        std::fs::copy(server.path("nodetool.db"), &db).unwrap();
        let names = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(tables(&db));
        for table in ["nodetool_assets", "jobs"] {
            assert!(names.iter().any(|n| n == table), "SIG{signal}: {names:?}");
        }
    }
}
