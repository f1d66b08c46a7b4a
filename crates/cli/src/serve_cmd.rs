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

    let store = nodetool_exec::JobStore::from_pool(db.clone()).await?;
    let manager = job_manager(&resources, store).await?;
    let mut state = AppState::new(resources.clone(), auth.clone(), db).with_jobs(manager.clone());
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
    // Running jobs get the same grace as open streams, then are cancelled and recorded.
    manager
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    reaper.abort();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The job manager: threaded and subprocess strategies always, Docker when its engine answers.
/// `store` shares the server's database.
async fn job_manager(
    resources: &Arc<Resources>,
    store: nodetool_exec::JobStore,
) -> anyhow::Result<nodetool_exec::JobExecutionManager> {
    use nodetool_engine::{Engine, EngineResources, Registry};
    use nodetool_exec::subprocess::{allowed_env, SubprocessConfig, SubprocessStrategy};
    use nodetool_exec::threaded::ThreadedStrategy;
    use nodetool_exec::{ExecutionStrategy, JobExecutionManager, ManagerConfig};

    let settings = resources.settings();
    let engine = Engine::new(
        Arc::new(Registry::builtin()),
        EngineResources::from_resources(resources).await?,
    );
    let mut strategies: Vec<Arc<dyn ExecutionStrategy>> = vec![Arc::new(ThreadedStrategy::new(
        engine,
        settings.thread_pool_size.max(1),
    )?)];

    let sources = nodetool_config::Sources::from_process()?;
    let secret_names: Vec<&str> = settings
        .entries()
        .into_iter()
        .filter(|e| e.secret)
        .map(|e| e.name)
        .collect();
    let mut cfg =
        SubprocessConfig::new(std::env::current_exe().context("locating the nodetool binary")?);
    cfg.env = allowed_env(&sources.env, &secret_names);
    strategies.push(Arc::new(SubprocessStrategy::new(cfg)));

    match docker_strategy(settings).await {
        Ok(d) => strategies.push(d),
        Err(e) => {
            tracing::info!(error = %e, "docker strategy unavailable; jobs run threaded or in subprocesses")
        }
    }

    Ok(JobExecutionManager::new(store, strategies, ManagerConfig::from_settings(settings)).await?)
}

async fn docker_strategy(
    settings: &nodetool_config::Settings,
) -> anyhow::Result<Arc<dyn nodetool_exec::ExecutionStrategy>> {
    let cfg = nodetool_exec::docker::config::DockerConfig::for_runtime(settings)?;
    // A missing engine must not hold up start-up.
    let strategy = tokio::time::timeout(
        Duration::from_secs(5),
        nodetool_exec::docker::DockerStrategy::connect(cfg),
    )
    .await
    .context("the Docker engine did not answer within 5 s")??;
    // Containers of jobs that a previous server left behind (crash, SIGKILL) are ours to remove.
    match strategy.reap_leftovers().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            containers = n,
            "removed job containers left by a previous run"
        ),
        Err(e) => tracing::warn!(error = %e, "could not reap leftover job containers"),
    }
    Ok(Arc::new(strategy))
}
