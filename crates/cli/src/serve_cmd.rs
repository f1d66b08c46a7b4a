//! `nodetool serve`: the HTTP API on 127.0.0.1:7777 by default.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_server::{AppState, Authenticator};
use nodetool_storage::UrlSigner;

/// How long signed storage URLs stay valid.
pub(crate) const SIGNED_URL_TTL: Duration = Duration::from_secs(3600);
/// How often the temp-storage reaper sweeps.
const REAP_EVERY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 7777)]
    port: u16,
    /// Allow a non-loopback address with AUTH_PROVIDER none/local (everyone who can reach the
    /// port is then user "1").
    #[arg(long)]
    allow_remote: bool,
    /// Stream S3/Supabase objects through the server instead of redirecting to presigned URLs.
    #[arg(long)]
    no_presign_redirect: bool,
    /// Seconds open streams get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = crate::load_settings()?;
    let auth = Authenticator::from_settings(&settings)?;
    if !auth.requires_token() && !args.host.is_loopback() && !args.allow_remote {
        anyhow::bail!(
            "refusing to bind {} with AUTH_PROVIDER={}: anyone could act as user \"1\". \
             Use a loopback address, set AUTH_PROVIDER=static or supabase, or pass --allow-remote",
            args.host,
            settings.auth_provider
        );
    }
    let key = nodetool_runtime::url_signing_key(&settings)?;
    let signer = UrlSigner::new(&key, SIGNED_URL_TTL)?;
    let db_path = settings.db_path.clone();
    let resources =
        Arc::new(Resources::new(settings, ResourceOptions::default()).with_url_signer(signer));
    let db = nodetool_server::db::open(&db_path)
        .await
        .with_context(|| format!("opening the database at {}", db_path.display()))?;

    let temp = resources.temp_storage()?;
    let reaper = nodetool_storage::gc::spawn_reaper(temp, resources.temp_ttl(), REAP_EVERY);

    let mut state = AppState::new(resources.clone(), auth.clone(), db);
    state.options.presign_redirect = !args.no_presign_redirect;
    let app = nodetool_server::router(state);

    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, auth = ?auth, "nodetool server listening");
    eprintln!("nodetool serving on http://{local}");

    let result = nodetool_server::serve(
        listener,
        app,
        nodetool_server::shutdown_signal(),
        Duration::from_secs(args.shutdown_grace),
    )
    .await;
    reaper.abort();
    result?;
    Ok(ExitCode::SUCCESS)
}
