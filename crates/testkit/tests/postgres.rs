//! The PostgreSQL harness: a real server from Debian's binaries, started as the postgres user
//! when the tests run as root, on a free loopback port; it keeps its data across a restart and
//! is gone after drop.
#![allow(clippy::unwrap_used)]

use nodetool_testkit::postgres::PostgresServer;

#[tokio::test]
async fn starts_answers_restarts_and_stops() {
    let Some(mut pg) = PostgresServer::start().await else {
        let why = PostgresServer::why_missing().unwrap_or_default();
        nodetool_testkit::skip_or_fail("postgres harness", &why);
        return;
    };
    let url = pg.create_database("harness");
    assert_eq!(
        url,
        format!("postgres://nodetool@127.0.0.1:{}/harness", pg.port())
    );
    pg.psql(
        "harness",
        "CREATE TABLE t (n INT); INSERT INTO t VALUES (41), (1)",
    );
    assert_eq!(pg.psql("harness", "SELECT sum(n) FROM t"), "42");
    // Only loopback.
    assert_eq!(pg.psql("postgres", "SHOW listen_addresses"), "127.0.0.1");

    pg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
    pg.restart().await;
    assert_eq!(pg.psql("harness", "SELECT count(*) FROM t"), "2");

    let port = pg.port();
    drop(pg);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
