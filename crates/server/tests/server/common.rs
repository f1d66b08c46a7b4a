//! A real server on 127.0.0.1:<free port> with its own config dir, database and storage.
// Each test module uses its own subset; a failed unwrap fails the test.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodetool_config::{Settings, Sources};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_server::{AppState, Authenticator};
use nodetool_storage::UrlSigner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SIGNING_KEY: &[u8] = b"test-signing-key-0123456789abcdef";

pub struct TestServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// Send to begin a graceful shutdown.
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server with file storage under a temp dir; `env` overrides settings.
pub async fn start(env: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut map = BTreeMap::new();
    map.insert("ENV".to_owned(), "development".to_owned());
    map.insert("HOME".to_owned(), root.display().to_string());
    map.insert(
        "ASSET_FOLDER".to_owned(),
        root.join("assets").display().to_string(),
    );
    map.insert(
        "DB_PATH".to_owned(),
        root.join("nodetool.db").display().to_string(),
    );
    map.insert("AUTH_PROVIDER".to_owned(), "local".to_owned());
    for (k, v) in env {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::load(&Sources::new(map, root.join("config"))).unwrap();
    let auth = Authenticator::from_settings(&settings).unwrap();
    start_with(dir, settings, auth).await
}

pub async fn start_with(
    dir: tempfile::TempDir,
    settings: Settings,
    auth: Authenticator,
) -> TestServer {
    let signer = UrlSigner::new(SIGNING_KEY, Duration::from_secs(3600)).unwrap();
    let db_path = settings.db_path.clone();
    let resources =
        Arc::new(Resources::new(settings, ResourceOptions::default()).with_url_signer(signer));
    let db = nodetool_server::db::open(&db_path).await.unwrap();
    let state = AppState::new(resources, auth, db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = nodetool_server::router(state.clone());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        nodetool_server::serve(
            listener,
            app,
            async move {
                let _ = stop.await;
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    });
    TestServer {
        url: format!("http://{addr}"),
        addr,
        state,
        dir,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown: Some(shutdown),
        task,
    }
}

impl TestServer {
    pub fn u(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends `request` byte for byte (no client-side path normalisation) and returns the status
    /// and the body.
    pub async fn raw(&self, request: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// An HS256 Supabase-style user JWT.
pub fn jwt(secret: &str, sub: &str, exp_offset_secs: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + exp_offset_secs;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "aud": "authenticated", "role": "authenticated", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub async fn error_kind(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap();
    v["error"]["kind"].as_str().unwrap_or_default().to_owned()
}
