//! A `nodetool serve` child process for binary tests, on a port it picks itself.
//!
//! The server is started with `--port 0` and its port read from the line it prints on stderr
//! (`nodetool serving on http://127.0.0.1:PORT`): a port picked by the test and released before
//! the server binds it can be taken by another test's server in between, and the test would
//! then talk to (and kill) the wrong one. Everything the server writes to stderr is kept for
//! [`ServeProcess::log`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A clean environment for the `nodetool` binary: a temp dir as `HOME` and config dir, `PATH`
/// kept, nothing else inherited (so no setting of the machine running the tests leaks in).
#[derive(Debug)]
pub struct NodetoolHome {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl NodetoolHome {
    /// `bin` is the test's `env!("CARGO_BIN_EXE_nodetool")`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            bin: bin.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `nodetool ARGS` with only `HOME`, `NODETOOL_CONFIG_DIR`, `PATH` and `vars` set.
    pub fn cmd(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("NODETOOL_CONFIG_DIR", self.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().copied());
        cmd
    }

    /// `nodetool serve` in this home with `vars`, once it listens.
    pub fn serve(&self, vars: &[(&str, &str)], wait: Duration) -> ServeProcess {
        ServeProcess::start(self.cmd(&["serve"], vars), wait)
    }
}

/// A running `nodetool serve`; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl ServeProcess {
    /// Spawns `cmd` — `nodetool serve ...` with its environment set, without `--port` — with
    /// `--port 0` appended, and waits up to `wait` for the port it announces. Panics, showing
    /// its log, when it exits first or announces nothing in time.
    pub fn start(mut cmd: Command, wait: Duration) -> Self {
        let mut child = cmd
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !announced {
                    if let Some(port) = announced_port(&line) {
                        announced = true;
                        let _ = port_tx.send(port);
                    }
                }
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + wait;
        let mut server = Self {
            child,
            port: 0,
            log,
        };
        loop {
            match port_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(port) => {
                    server.port = port;
                    return server;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the server is gone; let the exit status say why.
                    let status = server.child.wait().ok();
                    panic!("serve exited early ({status:?}): {}", server.log());
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("serve exited early with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not start listening within {wait:?}: {}",
                server.log()
            );
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its exit status once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on nodetool serve")
    }

    /// Sends signal `name` (`TERM`, `HUP`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// Waits up to `wait` for the server to exit; panics if it does not.
    pub fn wait_exit(&mut self, wait: Duration) -> ExitStatus {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {wait:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to `wait` for the exit.
    pub fn terminate(&mut self, wait: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(wait)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of `nodetool serving on http(s)://HOST:PORT`.
fn announced_port(line: &str) -> Option<u16> {
    let rest = line.split_once("nodetool serving on ")?.1;
    rest.trim().rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::announced_port;

    #[test]
    fn reads_the_announced_port() {
        assert_eq!(
            announced_port("nodetool serving on http://127.0.0.1:40123"),
            Some(40123)
        );
        assert_eq!(
            announced_port("nodetool serving on https://[::1]:8443\n"),
            Some(8443)
        );
        assert_eq!(announced_port("nodetool server listening"), None);
    }
}
