//! A real `memcached` child process on a free loopback port, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running memcached. `None` from [`MemcachedServer::start`] means the binary is missing:
/// callers then `skip_or_fail` and return.
#[derive(Debug)]
pub struct MemcachedServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    item_size: Option<String>,
}

/// The `memcached` binary, if installed (PATH, then the Debian locations).
pub fn memcached_binary() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|dir: PathBuf| dir.join("memcached"))
        .find(|p| p.is_file())
}

impl MemcachedServer {
    /// Starts memcached on a free port with the default 1 MiB item size.
    pub async fn start() -> Option<Self> {
        Self::start_with(crate::free_port(), None).await
    }

    /// Starts memcached on `port`; `item_size` is passed as `-I` (e.g. `"2m"`).
    pub async fn start_with(port: u16, item_size: Option<&str>) -> Option<Self> {
        let binary = memcached_binary()?;
        let mut server = Self {
            child: None,
            port,
            binary,
            item_size: item_size.map(str::to_owned),
        };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "-l",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ])
        // memcached refuses to run as root without -u; as another user it ignores it.
        .args(["-u", "root"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if let Some(size) = &self.item_size {
            cmd.args(["-I", size]);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        let pid = child.id();
        self.child = Some(child);
        assert!(
            crate::wait_for_child_port(pid, self.port, Duration::from_secs(10)).await,
            "memcached did not listen on 127.0.0.1:{} within 10 s",
            self.port
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Kills the server (the port is free again once this returns). For fault tests.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Alias of [`MemcachedServer::stop`].
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Starts a fresh (empty) server on the same port after [`MemcachedServer::stop`].
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        self.stop();
    }
}
