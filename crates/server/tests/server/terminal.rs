//! `/ws/terminal` through a real WebSocket: gating, auth, a real shell on a PTY, a scrubbed
//! environment, resizing, and the end of the session from either side.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "terminal-test-token-0123456789";
const S3_SECRET: &str = "fake-s3-secret-value-abcdef";
/// Generous: a login shell on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

fn enabled_static() -> Vec<(&'static str, &'static str)> {
    vec![
        ("NODETOOL_ENABLE_TERMINAL_WS", "true"),
        ("AUTH_PROVIDER", "static"),
        ("SERVER_AUTH_TOKEN", TOKEN),
        ("S3_SECRET_ACCESS_KEY", S3_SECRET),
    ]
}

fn url(s: &common::TestServer, query: &str) -> String {
    format!("ws://{}/ws/terminal{query}", s.addr)
}

async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes());
        req.headers_mut().insert(name.unwrap(), v.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// The HTTP status a refused upgrade got.
async fn refused(url: &str, headers: &[(&str, &str)]) -> u16 {
    match connect(url, headers).await {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

async fn open(s: &common::TestServer) -> Ws {
    connect(
        &url(s, ""),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .unwrap()
}

async fn type_line(ws: &mut Ws, line: &str) {
    ws.send(Message::binary(line.as_bytes().to_vec()))
        .await
        .unwrap();
}

/// Terminal output until `done` holds for it, or a failure showing what came.
async fn read_until(ws: &mut Ws, done: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&out) {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; terminal output so far:\n{out}"));
        match frame {
            Some(Ok(Message::Binary(b))) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}; output so far:\n{out}"),
        }
    }
    out
}

/// The number after the first `label` that is followed by digits.
fn number_after(text: &str, label: &str) -> Option<i32> {
    text.match_indices(label).find_map(|(i, _)| {
        let digits: String = text[i + label.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn disabled_by_default_and_in_production() {
    let s = common::start(&[]).await;
    assert_eq!(refused(&url(&s, ""), &[]).await, 404);
    // A plain GET too, whatever it carries.
    let resp = s.client.get(s.u("/ws/terminal")).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let s = common::start(&[
        ("NODETOOL_ENABLE_TERMINAL_WS", "true"),
        ("ENV", "production"),
        ("AUTH_PROVIDER", "static"),
        ("SERVER_AUTH_TOKEN", TOKEN),
    ])
    .await;
    assert_eq!(
        refused(
            &url(&s, ""),
            &[("authorization", &format!("Bearer {TOKEN}"))]
        )
        .await,
        404,
        "ENV=production wins over NODETOOL_ENABLE_TERMINAL_WS"
    );
}

#[tokio::test]
async fn always_authenticated() {
    let s = common::start(&enabled_static()).await;
    assert_eq!(refused(&url(&s, ""), &[]).await, 401);
    assert_eq!(
        refused(&url(&s, ""), &[("authorization", "Bearer wrong")]).await,
        401
    );
    assert_eq!(refused(&url(&s, "?api_key=wrong"), &[]).await, 401);
    let mut ws = connect(&url(&s, &format!("?api_key={TOKEN}")), &[])
        .await
        .unwrap();
    type_line(&mut ws, "echo via-$((6*7))\n").await;
    read_until(&mut ws, |o| o.contains("via-42")).await;

    // The local provider has no token: only a local client, not through a proxy, not from a
    // foreign web page.
    let s = common::start(&[("NODETOOL_ENABLE_TERMINAL_WS", "true")]).await;
    assert_eq!(
        refused(&url(&s, ""), &[("origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(
        refused(&url(&s, ""), &[("x-forwarded-for", "192.0.2.7")]).await,
        403
    );
    // Another local page is a foreign origin too (the guard's same-origin rule).
    assert_eq!(
        refused(&url(&s, ""), &[("origin", "http://localhost:1")]).await,
        403
    );
    let own = s.url.clone();
    let mut ws = connect(&url(&s, ""), &[("origin", own.as_str())])
        .await
        .unwrap();
    type_line(&mut ws, "echo local-$((40+2))\n").await;
    read_until(&mut ws, |o| o.contains("local-42")).await;
}

#[tokio::test]
async fn a_real_shell_with_a_scrubbed_environment() {
    let s = common::start(&enabled_static()).await;
    let mut ws = open(&s).await;
    type_line(&mut ws, "echo hi-$((40+2))\n").await;
    read_until(&mut ws, |o| o.contains("hi-42")).await;

    type_line(&mut ws, "env; echo env-done-$((1+1))\n").await;
    let out = read_until(&mut ws, |o| o.contains("env-done-2")).await;
    assert!(out.contains("PATH=/usr/local/sbin:"), "{out}");
    assert!(out.contains("TERM=xterm-256color"), "{out}");
    for leaked in [
        TOKEN,
        S3_SECRET,
        "SERVER_AUTH_TOKEN",
        "S3_SECRET_ACCESS_KEY",
    ] {
        assert!(!out.contains(leaked), "{leaked} reached the shell:\n{out}");
    }
    // Cargo sets this for the test process (and so for the in-process server): the shell's
    // environment does not inherit the server's.
    assert!(!out.contains("CARGO_MANIFEST_DIR"), "{out}");

    ws.send(Message::text(r#"{"type":"resize","cols":101,"rows":33}"#))
        .await
        .unwrap();
    type_line(&mut ws, "stty size\n").await;
    read_until(&mut ws, |o| o.contains("33 101")).await;
}

#[tokio::test]
async fn closing_the_socket_kills_the_whole_session() {
    let s = common::start(&enabled_static()).await;
    let mut ws = open(&s).await;
    assert_eq!(
        s.state
            .metrics
            .open_streams(nodetool_server::StreamKind::Terminal),
        1
    );
    // A background job: in its own process group under job control, but in the same session.
    type_line(&mut ws, "sleep 1000 & echo BG=$! SH=$$\n").await;
    let out = read_until(&mut ws, |o| {
        number_after(o, "BG=").is_some() && number_after(o, "SH=").is_some()
    })
    .await;
    let shell = number_after(&out, "SH=").unwrap();
    let background = number_after(&out, "BG=").unwrap();
    assert!(alive(shell) && alive(background), "{out}");

    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = tokio::time::Instant::now() + WAIT;
    while alive(shell) || alive(background) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: shell {shell} {}, background {background} {}",
            alive(shell),
            alive(background)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while s
        .state
        .metrics
        .open_streams(nodetool_server::StreamKind::Terminal)
        != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "terminal still counted as open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shell_exit_closes_the_socket_with_its_status() {
    let s = common::start(&enabled_static()).await;
    let mut ws = open(&s).await;
    type_line(&mut ws, "echo bye-$((1+2)); exit 3\n").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = String::new();
    let close = loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close frame; output:\n{out}"));
        match frame {
            Some(Ok(Message::Binary(b))) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}; output:\n{out}"),
        }
    };
    assert!(
        out.contains("bye-3"),
        "output before the close is delivered:\n{out}"
    );
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::from(4003), "{close:?}");
    assert!(close.reason.contains("status 3"), "{close:?}");
}
