//! The nodetool HTTP API: storage routes, the assets API, jobs, node metadata, `/ws`,
//! `/ws/terminal`, auth, `/health` and `/metrics`.
//!
//! [`router`] is a plain function of an [`AppState`]; [`serve`] (or [`tls::serve_tls`] for
//! HTTPS) runs it on a listener until a shutdown future resolves, letting in-flight requests
//! finish. The `nodetool serve` command (crates/cli) builds the state from settings and calls
//! both.
//!
//! Ownership of blobs: with a multi-user provider (Supabase) every object a user may touch
//! through `/api/storage` lives under `{user_id}/`, and the assets API stores blobs at
//! `{user_id}/{asset_id}.{ext}`; a request for another user's prefix is 403 on every method.
//! Single-user providers (none/local/static) own the whole store. Signed URLs grant GET/HEAD of
//! exactly their path.

pub mod asset_queries;
pub mod asset_thumbs;
pub mod assets;
pub mod auth;
pub mod body_timeout;
pub mod config_route;
pub mod db;
mod edge;
pub mod error;
pub mod guard;
pub mod http;
pub mod job_queries;
pub mod jobs;
pub mod listen;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod storage_routes;
pub mod terminal;
pub mod tls;
pub mod trpc;
pub mod wire;
pub mod workflow_examples;
pub mod workflow_run;
pub mod workflow_store;
pub mod workflow_versions;
pub mod workflows;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use nodetool_core::Result;
use nodetool_runtime::Resources;
use nodetool_storage::UrlSigner;

pub use auth::{AuthUser, Authenticator, Caller, StaticTokens, LOCAL_USER};
pub use error::ApiError;
pub use listen::ConnLimits;
pub use metrics::{Metrics, StreamKind};
pub use tls::{serve_tls, serve_tls_with, TlsConfig};

/// Per-server switches that are not settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body accepted by PUT and asset upload (`NODETOOL_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// GET on a backend that can presign (S3, Supabase) answers 307 to a presigned URL instead
    /// of streaming through us.
    pub presign_redirect: bool,
    /// `/ws/terminal` is served (else 404): `NODETOOL_ENABLE_TERMINAL_WS` and `ENV` is not
    /// production. See [`terminal`].
    pub terminal: bool,
    /// Under `AUTH_PROVIDER` none/local, serve only loopback `Host` values (see [`guard`]);
    /// `nodetool serve --allow-remote` turns it off.
    pub loopback_hosts_only: bool,
    /// `ALLOWED_ORIGINS`, normalised.
    pub allowed_origins: Vec<String>,
    /// `NODETOOL_CONTENT_DOMAIN`.
    pub content_domain: Option<String>,
    /// `NODETOOL_WS_MAX_MESSAGE_BYTES`.
    pub ws_max_message_bytes: usize,
    /// `NODETOOL_MAX_JSON_BODY_BYTES`.
    pub max_json_body_bytes: u64,
    /// `NODETOOL_EXAMPLES_DIR`, or `./examples` when it exists (see [`workflow_examples`]).
    pub examples_dir: Option<std::path::PathBuf>,
    /// `SERVER_BODY_TIMEOUT` (see [`body_timeout`]); zero turns the check off.
    pub body_timeout: Duration,
}

impl ServerOptions {
    /// The options the settings ask for.
    pub fn from_settings(settings: &nodetool_config::Settings) -> Self {
        Self {
            max_upload_bytes: settings.max_upload_bytes,
            presign_redirect: true,
            terminal: settings.enable_terminal_ws && !settings.is_production(),
            loopback_hosts_only: true,
            allowed_origins: settings.server.allowed_origins.clone(),
            content_domain: settings.server.content_domain.clone(),
            ws_max_message_bytes: usize::try_from(settings.server.ws_max_message_bytes)
                .unwrap_or(usize::MAX),
            max_json_body_bytes: settings.server.max_json_body_bytes,
            examples_dir: workflow_examples::default_dir(settings.server.examples_dir.as_deref()),
            body_timeout: settings.server.body_timeout,
        }
    }
}

/// Everything a handler needs. Cloning is one reference-count increment: axum clones the state
/// for every extractor and middleware of every request.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppStateInner>);

/// The fields behind [`AppState`] (reached through `Deref`).
#[derive(Clone)]
pub struct AppStateInner {
    pub resources: Arc<Resources>,
    pub auth: Authenticator,
    /// Asset records (`/api/assets`), in SQLite or PostgreSQL.
    pub assets: Arc<dyn nodetool_core::AssetStore>,
    /// Workflows and their versions, in SQLite or PostgreSQL.
    pub workflows: workflow_store::WorkflowStore,
    /// Verifies signed storage URLs; `None` disables them.
    pub signer: Option<UrlSigner>,
    pub metrics: Arc<Metrics>,
    pub options: ServerOptions,
    /// Runs jobs for `/api/jobs` and `/ws`; `None` answers those with 503.
    pub jobs: Option<nodetool_exec::JobExecutionManager>,
    /// `GET /api/nodes/metadata`: the JSON array of NodeTool `NodeMetadata`, rendered once.
    pub node_metadata: nodes::MetadataBody,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl std::fmt::Debug for AppStateInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStateInner")
            .field("auth", &self.auth)
            .field("signer", &self.signer)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State with options from the settings and the signer the resources sign URLs with.
    /// `records`: a SQLite pool from [`db::open`] or the stores of [`db::Records::open`].
    pub fn new(
        resources: Arc<Resources>,
        auth: Authenticator,
        records: impl Into<db::Records>,
    ) -> Self {
        let records = records.into();
        let options = ServerOptions::from_settings(resources.settings());
        Self(Arc::new(AppStateInner {
            signer: resources.url_signer().cloned(),
            resources,
            auth,
            assets: records.assets,
            workflows: records.workflows,
            metrics: Arc::new(Metrics::default()),
            options,
            jobs: None,
            node_metadata: nodes::MetadataBody::default(),
        }))
    }

    /// Enables `/api/jobs` and `/ws` with this manager, and feeds the job metrics from it.
    pub fn with_jobs(mut self, manager: nodetool_exec::JobExecutionManager) -> Self {
        let metrics = self.metrics.clone();
        manager.on_finished(move |record| metrics.job_finished(record));
        Arc::make_mut(&mut self.0).jobs = Some(manager);
        self
    }

    /// Serves `metadata` (NodeTool's `NodeMetadata` of every runnable type) at
    /// `GET /api/nodes/metadata`.
    pub fn with_node_metadata(mut self, metadata: Vec<serde_json::Value>) -> Self {
        Arc::make_mut(&mut self.0).node_metadata = nodes::MetadataBody::new(&metadata);
        self
    }

    pub fn with_options(mut self, options: ServerOptions) -> Self {
        Arc::make_mut(&mut self.0).options = options;
        self
    }

    /// The options, to change before the state is handed to [`router`].
    pub fn options_mut(&mut self) -> &mut ServerOptions {
        &mut Arc::make_mut(&mut self.0).options
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::render))
        .merge(storage_routes::routes())
        .merge(assets::routes())
        .merge(asset_queries::routes())
        .merge(asset_thumbs::routes())
        .merge(jobs::routes())
        .merge(job_queries::routes())
        .merge(nodes::routes())
        .merge(workflows::routes())
        .merge(workflow_run::routes())
        .merge(workflow_versions::routes())
        .merge(workflow_examples::routes())
        .merge(trpc::routes())
        .layer(auth::AuthLayer::new(state.clone()))
        // `/ws` and `/ws/terminal` authenticate themselves: they also take `?api_key=`, which
        // the middleware does not, and the terminal has its own rules for the local provider.
        .merge(ws::routes())
        .merge(terminal::routes())
        // Read by the app before anyone signs in.
        .merge(config_route::routes())
        .layer(edge::EdgeLayer::new(state.clone()))
        .layer(observe::ObserveLayer::new(state.metrics.clone()))
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Serves `app` on `listener` until `shutdown` resolves; in-flight requests then finish (open
/// streams get `grace` to complete before the server returns anyway). Default [`ConnLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    serve_with(listener, app, ConnLimits::default(), shutdown, grace).await
}

/// [`serve`] with explicit connection limits (header timeout, connection cap).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    };
    let server = std::pin::pin!(listen::serve(listener, app, limits, signal));
    let io_err = |e: std::io::Error| nodetool_core::Error::from(e).with_operation("server.serve");
    tokio::select! {
        r = server => r.map_err(io_err),
        () = async {
            // Only start the grace clock once shutdown has begun.
            if stopped_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; dropping open connections");
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
