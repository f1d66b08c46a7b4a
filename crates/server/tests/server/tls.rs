//! HTTPS with a certificate made in the test (rcgen), a client that trusts it, clear errors for
//! bad files, and graceful shutdown over TLS.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use nodetool_core::ErrorKind;
use nodetool_server::TlsConfig;

struct Pem {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Pem {
    /// A self-signed certificate for `localhost` and its key, written to files.
    fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_pem = ck.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Self { dir, cert_pem }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn client(&self, addr: SocketAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", addr)
            .build()
            .unwrap()
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<nodetool_core::Result<()>>,
}

async fn serve(app: Router, tls: TlsConfig, grace: Duration) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(nodetool_server::serve_tls(
        listener,
        app,
        tls,
        async move {
            let _ = stopped.await;
        },
        grace,
    ));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

fn error_of(cert: &Path, key: &Path) -> nodetool_core::Error {
    TlsConfig::from_pem_files(cert, key).unwrap_err()
}

#[tokio::test]
async fn the_api_over_https_with_a_trusted_certificate() {
    let pem = Pem::new();
    let tls = TlsConfig::from_pem_files(&pem.cert(), &pem.key()).unwrap();

    // The real router, so that the whole API (auth, metrics) runs under TLS.
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ENV", "test"),
        ("HOME", dir.path().to_str().unwrap()),
        ("DB_PATH", dir.path().join("nt.db").to_str().unwrap()),
        ("AUTH_PROVIDER", "static"),
        ("SERVER_AUTH_TOKEN", "tls-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings =
        nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path())).unwrap();
    let auth = nodetool_server::Authenticator::from_settings(&settings).unwrap();
    let db_path = settings.db_path.clone();
    let resources = Arc::new(nodetool_runtime::Resources::new(
        settings,
        nodetool_runtime::ResourceOptions::default(),
    ));
    let db = nodetool_server::db::open(&db_path).await.unwrap();
    let app = nodetool_server::router(nodetool_server::AppState::new(resources, auth, db));
    let mut server = serve(app, tls, Duration::from_secs(5)).await;

    let client = pem.client(server.addr);
    let base = format!("https://localhost:{}", server.addr.port());
    let resp = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let resp = client.get(format!("{base}/api/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "auth still applies under TLS");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("nodetool_http_requests_total"));

    // A client that does not trust the certificate is refused by the handshake.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr))
        .send()
        .await;
    assert!(
        plain.as_ref().map(|r| r.status() != 200).unwrap_or(true),
        "{plain:?}"
    );

    server.stop.take().unwrap().send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let pem = Pem::new();
    let tls = TlsConfig::from_pem_files(&pem.cert(), &pem.key()).unwrap();
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let app = Router::new().route(
        "/slow",
        get(move || {
            let (e, r) = (e.clone(), r.clone());
            async move {
                e.notify_one();
                r.notified().await;
                "done"
            }
        }),
    );
    let mut server = serve(app, tls, Duration::from_secs(30)).await;
    let client = pem.client(server.addr);
    let url = format!("https://localhost:{}/slow", server.addr.port());
    let request = tokio::spawn(async move { client.get(url).send().await });
    entered.notified().await;

    server.stop.take().unwrap().send(()).unwrap();
    // New connections are refused once shutdown has begun.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!server.task.is_finished(), "a request is still in flight");
    release.notify_one();
    let resp = request.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "done");
    server.task.await.unwrap().unwrap();
}

#[test]
fn bad_files_are_config_errors_naming_the_file() {
    let pem = Pem::new();
    let missing = pem.dir.path().join("missing.pem");
    let err = error_of(&missing, &pem.key());
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let err = error_of(&pem.cert(), &missing);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let garbage = pem.write("garbage.pem", "this is not PEM\n");
    let err = error_of(&garbage, &pem.key());
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    let err = error_of(&pem.cert(), &garbage);
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    // A key given as the certificate, and a certificate given as the key.
    let err = error_of(&pem.key(), &pem.key());
    assert!(err.to_string().contains("key.pem"), "{err}");
    let err = error_of(&pem.cert(), &pem.cert());
    assert!(err.to_string().contains("cert.pem"), "{err}");

    // A key that belongs to another certificate.
    let other = Pem::new();
    let err = error_of(&pem.cert(), &other.key());
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(
        err.to_string().contains(&other.key().display().to_string()),
        "{err}"
    );
}
