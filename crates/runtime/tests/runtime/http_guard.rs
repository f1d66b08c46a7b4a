//! The node HTTP guard against real HTTP servers on loopback sockets: redirects into loopback
//! are refused before anything connects there, direct loopback URLs are refused, bodies over the
//! cap and slow servers fail cleanly, and the allow settings open exactly what they name.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use nodetool_core::ErrorKind;
use nodetool_engine::{HttpFetch, HttpRequest};
use nodetool_runtime::{GuardedHttp, HttpPolicy};

/// A server on 127.0.0.1 that counts every request it gets.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn serve(redirect_to: Option<String>) -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    #[derive(Clone)]
    struct S {
        hits: Arc<AtomicUsize>,
        redirect_to: Option<String>,
        port: u16,
    }
    let state = S {
        hits: hits.clone(),
        redirect_to,
        port,
    };
    fn count(s: &S) {
        s.hits.fetch_add(1, Ordering::SeqCst);
    }
    let app = Router::new()
        .route(
            "/secret",
            get(|State(s): State<S>| async move {
                count(&s);
                "metadata-credentials"
            }),
        )
        .route(
            "/redirect",
            get(|State(s): State<S>| async move {
                count(&s);
                let to = s.redirect_to.clone().unwrap_or_default();
                (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
            }),
        )
        .route(
            "/loop",
            get(|State(s): State<S>| async move {
                count(&s);
                let to = format!("http://127.0.0.1:{}/loop", s.port);
                (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
            }),
        )
        .route(
            "/big",
            get(|State(s): State<S>| async move {
                count(&s);
                vec![7u8; 2 << 20]
            }),
        )
        .route(
            "/big-chunked",
            get(|State(s): State<S>| async move {
                count(&s);
                let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![1u8; 64 << 10]));
                Response::new(axum::body::Body::from_stream(futures::stream::iter(chunks)))
            }),
        )
        .route(
            "/slow",
            get(|State(s): State<S>| async move {
                count(&s);
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/hello",
            get(|State(s): State<S>| async move {
                count(&s);
                ([(header::CONTENT_TYPE, "text/plain")], "hello")
            }),
        )
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { port, hits }
}

fn guard(policy: HttpPolicy) -> GuardedHttp {
    GuardedHttp::new(policy)
}

#[tokio::test]
async fn a_redirect_to_loopback_is_refused_and_never_followed() {
    let target = serve(None).await;
    let secret = format!("http://127.0.0.1:{}/secret", target.port);
    let front = serve(Some(secret.clone())).await;
    // The guard is on; only the front server's exact host:port is exempt, as an operator would
    // list one internal service. The redirect's target is another port on loopback.
    let http = guard(HttpPolicy {
        allow_hosts: vec![("127.0.0.1".to_owned(), front.port)],
        ..HttpPolicy::default()
    });
    let err = http
        .fetch(HttpRequest::get(format!(
            "http://127.0.0.1:{}/redirect",
            front.port
        )))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains("redirect"), "{text}");
    assert!(text.contains("loopback"), "{text}");
    assert!(text.contains("NODETOOL_HTTP_ALLOW_PRIVATE"), "{text}");
    assert_eq!(front.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "nothing may reach the redirect target"
    );

    // A redirect by name (localhost) is resolved, then refused the same way.
    let by_name = serve(Some(format!("http://localhost:{}/secret", target.port))).await;
    let http = guard(HttpPolicy {
        allow_hosts: vec![("127.0.0.1".to_owned(), by_name.port)],
        ..HttpPolicy::default()
    });
    let err = http
        .fetch(HttpRequest::get(format!(
            "http://127.0.0.1:{}/redirect",
            by_name.port
        )))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn internal_urls_are_refused_before_connecting() {
    let target = serve(None).await;
    let http = guard(HttpPolicy::default());
    for url in [
        format!("http://127.0.0.1:{}/secret", target.port),
        format!("http://localhost:{}/secret", target.port),
        format!("http://[::ffff:127.0.0.1]:{}/secret", target.port),
        format!("http://2130706433:{}/secret", target.port),
        format!("http://0x7f.1:{}/secret", target.port),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
        "http://100.100.100.200/latest/meta-data/".to_owned(),
    ] {
        let err = http.fetch(HttpRequest::get(url.clone())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{url}: {err}");
    }
    let err = http
        .fetch(HttpRequest::get("file:///etc/passwd"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn allow_settings_open_exactly_what_they_name() {
    let server = serve(None).await;
    let url = format!("http://127.0.0.1:{}/hello", server.port);
    let open = guard(HttpPolicy {
        allow_private: true,
        ..HttpPolicy::default()
    });
    let got = open.fetch(HttpRequest::get(url.clone())).await.unwrap();
    assert_eq!((got.status, &got.body[..]), (200, &b"hello"[..]));
    assert_eq!(got.content_type(), Some("text/plain"));

    let listed = guard(HttpPolicy {
        allow_hosts: vec![("127.0.0.1".to_owned(), server.port)],
        ..HttpPolicy::default()
    });
    assert_eq!(
        listed.fetch(HttpRequest::get(url)).await.unwrap().status,
        200
    );
    // Another port of the same host is not listed.
    let other = format!("http://127.0.0.1:{}/hello", server.port.wrapping_add(1));
    assert_eq!(
        listed
            .fetch(HttpRequest::get(other))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
}

#[tokio::test]
async fn caps_timeouts_and_redirect_limits() {
    let server = serve(None).await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let http = guard(HttpPolicy {
        allow_private: true,
        max_bytes: 1 << 20,
        timeout: Duration::from_millis(800),
        max_redirects: 3,
        ..HttpPolicy::default()
    });
    for path in ["/big", "/big-chunked"] {
        let err = http
            .fetch(HttpRequest::get(format!("{base}{path}")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{path}: {err}");
        assert!(err.to_string().contains("NODETOOL_HTTP_MAX_BYTES"), "{err}");
    }
    let err = http
        .fetch(HttpRequest::get(format!("{base}/slow")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    let before = server.hits.load(Ordering::SeqCst);
    let err = http
        .fetch(HttpRequest::get(format!("{base}/loop")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("redirected more than 3 times"),
        "{err}"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst) - before, 4);
}
