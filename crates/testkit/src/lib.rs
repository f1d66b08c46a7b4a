//! Behaviour suites run against every implementation of a contract, and the real services the
//! tests need (an S3 server, memcached, PostgreSQL, the Supabase Storage double).
//!
//! Dev-dependency only. A suite whose service is missing skips loudly when run by hand and fails
//! when `NODETOOL_TEST_REQUIRE=1` (set by `.ci/run`).

pub mod ai_env;
pub mod anthropic_double;
pub mod cache_suite;
pub mod fixtures;
pub mod gemini_double;
pub mod ids;
pub mod llama_server;
pub mod memcached;
pub mod openai_peer;
pub mod otlp_receiver;
pub mod postgres;
pub mod python_worker;
pub mod s3_server;
pub mod scripted;
pub mod serve_process;
pub mod storage_suite;
#[cfg(feature = "strategy")]
pub mod strategy_suite;
pub mod supabase_double;

/// True when CI demands that every suite runs (`NODETOOL_TEST_REQUIRE=1`).
pub fn services_required() -> bool {
    std::env::var("NODETOOL_TEST_REQUIRE").is_ok_and(|v| v == "1" || v == "true")
}

/// Call when a service a test needs is missing: panics under `NODETOOL_TEST_REQUIRE=1`,
/// otherwise prints a loud skip notice. The caller returns right after.
pub fn skip_or_fail(test: &str, why: &str) {
    if services_required() {
        panic!("{test}: required service unavailable ({why}) and NODETOOL_TEST_REQUIRE=1");
    }
    eprintln!(
        "\n*** SKIPPED {test}: {why} (set NODETOOL_TEST_REQUIRE=1 to make this a failure) ***\n"
    );
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for starting a child server).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until process `pid` itself listens on TCP `port` (checked in `/proc`), or it exits.
/// A port from [`free_port`] may be taken by another test's server before the child binds
/// it: then something answers on the port, but not our child, and [`wait_for_port`] alone
/// would hand the test someone else's server.
pub async fn wait_for_child_port(pid: u32, port: u16, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        if listens_on(pid, port) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Whether one of `pid`'s open sockets is a listening TCP socket on `port`.
fn listens_on(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
                inodes.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.contains(target.to_string_lossy().as_ref()))
    })
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub async fn wait_for_port(port: u16, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
