//! The storage API on `127.0.0.1:$PORT` with settings from the environment, for
//! `benches/wrk_vs_nginx.sh` (same code path as `nodetool serve`, without the CLI).

use std::sync::Arc;
use std::time::Duration;

use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_server::{AppState, Authenticator};

// As in the `nodetool` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "7777".into())
        .parse()?;
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::from_process()?)?;
    let auth = Authenticator::from_settings(&settings)?;
    let db = nodetool_server::db::open(&settings.db_path).await?;
    let resources = Arc::new(Resources::new(settings, ResourceOptions::default()));
    let app = nodetool_server::router(AppState::new(resources, auth, db));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("bench server on {}", listener.local_addr()?);
    nodetool_server::serve(
        listener,
        app,
        nodetool_server::shutdown_signal(),
        Duration::from_secs(5),
    )
    .await?;
    Ok(())
}
