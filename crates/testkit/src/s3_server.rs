//! A real S3-protocol server for tests: `moto_server` (PyPI `moto[server]`) on a free loopback
//! port, or an external endpoint (MinIO, ...) named by environment variables.
//!
//! External endpoint (all four needed; the bucket must already exist):
//! `NODETOOL_TEST_S3_ENDPOINT`, `NODETOOL_TEST_S3_ACCESS_KEY_ID`,
//! `NODETOOL_TEST_S3_SECRET_ACCESS_KEY`, `NODETOOL_TEST_S3_BUCKET`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Credentials a local moto server accepts (it accepts any unless auth is enforced).
pub const MOTO_ACCESS_KEY_ID: &str = "testing";
pub const MOTO_SECRET_ACCESS_KEY: &str = "testing";

/// A running moto server; killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates `bucket` with a plain unsigned `PUT /{bucket}` (moto accepts it; with auth
    /// enforced it counts as one of the initial unauthenticated actions). An existing bucket is
    /// fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        create_bucket_unsigned(self.port, bucket).await
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts `moto_server` on a free loopback port. `None` when the binary is missing or does not
/// come up (the caller then calls [`crate::skip_or_fail`]).
pub async fn start() -> Option<S3Server> {
    spawn_moto(None).await
}

/// Starts `moto_server` with IAM authentication enforced after `free_actions` requests
/// (`INITIAL_NO_AUTH_ACTION_COUNT`): create buckets first, then any request signed with an
/// unknown access key is refused with `InvalidAccessKeyId`.
pub async fn start_with_auth(free_actions: usize) -> Option<S3Server> {
    spawn_moto(Some(free_actions)).await
}

async fn spawn_moto(free_actions: Option<usize>) -> Option<S3Server> {
    // moto binds port 0 itself and prints the port it got: a port picked here and released
    // could be taken by another test's server before moto binds it, and then two tests would
    // share (and one would kill) the same moto.
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(n) = free_actions {
        cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("s3_server: cannot start moto_server ({e}); install it with `pip install 'moto[server]'`");
            return None;
        }
    };
    let stderr = child.stderr.take()?;
    let port = tokio::time::timeout(Duration::from_secs(30), announced_port(stderr)).await;
    match port {
        Ok(Some(port)) if crate::wait_for_port(port, Duration::from_secs(30)).await => {
            Some(S3Server { child, port })
        }
        _ => {
            let _ = child.start_kill();
            eprintln!("s3_server: moto_server did not start listening within 30 s");
            None
        }
    }
}

/// Reads moto's log until it says `Running on http://127.0.0.1:PORT`, then keeps draining it
/// on a task (moto logs every request there; a full pipe would stall it).
async fn announced_port(stderr: tokio::process::ChildStderr) -> Option<u16> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let port = line
            .split_once("Running on http://127.0.0.1:")
            .and_then(|(_, rest)| rest.trim().parse::<u16>().ok());
        if let Some(port) = port {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Some(port);
        }
    }
    None
}

/// An S3 endpoint to run the suites against.
#[derive(Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub bucket: String,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The external endpoint from `NODETOOL_TEST_S3_*`, when all four are set and non-empty.
pub fn external_target() -> Option<S3Target> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    Some(S3Target {
        endpoint: var("NODETOOL_TEST_S3_ENDPOINT")?,
        access_key_id: var("NODETOOL_TEST_S3_ACCESS_KEY_ID")?,
        secret_access_key: var("NODETOOL_TEST_S3_SECRET_ACCESS_KEY")?,
        bucket: var("NODETOOL_TEST_S3_BUCKET")?,
    })
}

/// `PUT /{bucket}` without a signature, over a raw HTTP/1.1 connection (testkit needs no HTTP
/// client for this one request).
async fn create_bucket_unsigned(port: u16, bucket: &str) -> Result<(), String> {
    let io = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .map_err(|_| format!("creating bucket {bucket}: no answer within 30 s"))?
        .map_err(|e| format!("creating bucket {bucket}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status == "200" || text.contains("BucketAlreadyOwnedByYou") {
        Ok(())
    } else {
        Err(format!(
            "creating bucket {bucket}: {}",
            text.lines().next().unwrap_or("")
        ))
    }
}
