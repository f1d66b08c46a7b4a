//! A real PostgreSQL server (Debian's `postgresql` package) in a temp dir on a free loopback
//! port, stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb` and `postgres` run as
//! the `postgres` user the Debian package creates (the data dir is chowned to it); otherwise as
//! the current user. Authentication is `trust` on loopback, superuser `nodetool`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of the newest installed PostgreSQL's binaries (`/usr/lib/postgresql/N/bin`),
/// or one on PATH.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A running PostgreSQL. `None` from [`PostgresServer::start`] means it is not installed (or
/// cannot run here): callers `skip_or_fail` with [`PostgresServer::why_missing`] and return.
#[derive(Debug)]
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    /// Owns the data dir; removed on drop.
    dir: tempfile::TempDir,
    run_as: Option<(u32, u32)>,
}

impl PostgresServer {
    /// Why [`PostgresServer::start`] would return `None`, or `None` if it can start.
    pub fn why_missing() -> Option<String> {
        if postgres_bin_dir().is_none() {
            return Some(
                "PostgreSQL is not installed (apt-get install postgresql; looked in /usr/lib/postgresql/*/bin and PATH)"
                    .into(),
            );
        }
        if running_as_root() && postgres_user().is_none() {
            return Some(
                "running as root and there is no postgres user to run PostgreSQL as".into(),
            );
        }
        None
    }

    /// initdb into a fresh temp dir, then starts the server on a free port.
    pub async fn start() -> Option<Self> {
        if Self::why_missing().is_some() {
            return None;
        }
        let bin = postgres_bin_dir()?;
        let run_as = if running_as_root() {
            postgres_user()
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("nodetool-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the data dir");
        }
        let data = dir.path().join("data");
        let out = Self::command(&bin, "initdb", run_as)
            .args(["-D", &data.display().to_string()])
            .args(["-U", "nodetool", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            child: None,
            port: crate::free_port(),
            bin,
            dir,
            run_as,
        };
        server.spawn().await;
        Some(server)
    }

    fn command(bin: &Path, program: &str, run_as: Option<(u32, u32)>) -> Command {
        let mut cmd = Command::new(bin.join(program));
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid).env("HOME", "/tmp");
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    async fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let child = Self::command(&self.bin, "postgres", self.run_as)
            .args(["-D", &data.display().to_string()])
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.dir.path().display()),
            ])
            // Test data: no need to survive a power cut.
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.accepts_queries() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited at start with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections on 127.0.0.1:{} within 30 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn accepts_queries(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "nodetool",
                "-q",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://nodetool@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://nodetool@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL statement with `psql` against `database`; panics with psql's stderr on error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "nodetool",
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates an empty database and returns its URL (one per test keeps tests apart).
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Stops the server (fast shutdown: clients are disconnected). For fault tests.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same port and data after [`PostgresServer::stop`].
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
