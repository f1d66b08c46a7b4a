//! Behaviour suites run against every implementation of a contract, and the real services the
//! tests need (an S3 server, memcached, PostgreSQL, the Supabase Storage double).
//!
//! Dev-dependency only. A suite whose service is missing skips loudly when run by hand and fails
//! when `NODETOOL_TEST_REQUIRE=1` (set by `.ci/run`).

pub mod ai_env;
pub mod anthropic_double;
pub mod cache_suite;
pub mod gemini_double;
pub mod llama_server;
pub mod memcached;
pub mod openai_peer;
pub mod postgres;
pub mod python_worker;
pub mod s3_server;
pub mod scripted;
pub mod storage_suite;
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
