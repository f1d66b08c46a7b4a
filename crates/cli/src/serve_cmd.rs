//! `nodetool serve`: the HTTP API on 127.0.0.1:7777 by default (HTTPS with `--tls-cert` and
//! `--tls-key`).
//!
//! With `AUTH_PROVIDER=static`, `SERVER_AUTH_TOKEN` is re-read from `secrets.yaml` /
//! `settings.yaml` without a restart: the files are polled every `--token-reload-interval`
//! seconds (2 by default; 0 turns polling off) and a change is applied once two reads in a row
//! agree (so a file caught mid-write is not taken), and SIGHUP re-reads them at once (with other
//! providers SIGHUP keeps its default action). A value in the environment keeps winning, as at
//! startup. An empty or unreadable value is logged and the current tokens stay.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
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
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With AUTH_PROVIDER=static: seconds between re-reads of secrets.yaml/settings.yaml for a
    /// new SERVER_AUTH_TOKEN (0: only on SIGHUP).
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    token_reload_interval: u64,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = crate::load_settings()?;
    // Before anything opens files: the connection cap is derived from this limit.
    match nodetool_server::listen::raise_nofile_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let limits = nodetool_server::ConnLimits::from_settings(&settings);
    let auth = Authenticator::from_settings(&settings)?;
    if !auth.requires_token() && !args.host.is_loopback() && !args.allow_remote {
        anyhow::bail!(
            "refusing to bind {} with AUTH_PROVIDER={}: anyone could act as user \"1\". \
             Use a loopback address, set AUTH_PROVIDER=static or supabase, or pass --allow-remote",
            args.host,
            settings.auth_provider
        );
    }
    // A bad certificate or key stops startup here, naming the file, before anything is bound.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(nodetool_server::TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    if settings.enable_terminal_ws {
        if settings.is_production() {
            tracing::warn!("NODETOOL_ENABLE_TERMINAL_WS is ignored with ENV=production");
        } else {
            tracing::warn!(
                "terminal WebSocket enabled: /ws/terminal gives authenticated callers a shell"
            );
        }
    }
    let key = nodetool_runtime::url_signing_key(&settings)?;
    let signer = UrlSigner::new(&key, SIGNED_URL_TTL)?;
    let db_path = settings.db_path.clone();
    // DATABASE_URL moves asset records and workflows to PostgreSQL (the file is then not opened).
    let records =
        nodetool_server::db::Records::open(&db_path, settings.database.database_url.as_deref())
            .await
            .with_context(|| match settings.database.database_url {
                Some(_) => "opening the asset and workflow stores (DATABASE_URL)".to_owned(),
                None => format!("opening the database at {}", db_path.display()),
            })?;
    tracing::info!(backend = records.backend(), "asset and workflow stores");
    // In-process jobs record the assets they save in the same table `/api/assets` lists.
    let resources = Arc::new(
        Resources::new(settings, ResourceOptions::default())
            .with_url_signer(signer)
            .with_asset_store(records.assets.clone()),
    );

    let temp = resources.temp_storage()?;
    // The temp reaper's first sweep (now) also removes the temp folder's stale partial
    // uploads; the asset folder's are swept once here, at start.
    let reaper = nodetool_storage::gc::spawn_reaper(temp, resources.temp_ttl(), REAP_EVERY);
    {
        let assets = resources.asset_storage()?;
        tokio::spawn(async move {
            if let Err(error) = assets
                .reap_interrupted(nodetool_storage::gc::STALE_PARTIAL_UPLOAD)
                .await
            {
                tracing::warn!(%error, "could not sweep partial uploads of the asset storage");
            }
        });
    }
    if nodetool_nodes::TEST_NODES {
        tracing::warn!(
            "this binary was built with the test-nodes feature: nodetool.test.* (Crash, \
             Allocate, ...) are registered; never run it in production"
        );
    }

    // DATABASE_URL moves jobs and job events to PostgreSQL too.
    let store = match (&resources.settings().database.database_url, &records.sqlite) {
        (Some(url), _) => {
            nodetool_exec::JobStore::connect(url, &nodetool_exec::PostgresOptions::default())
                .await?
        }
        (None, Some(db)) => nodetool_exec::JobStore::from_pool(db.clone()).await?,
        (None, None) => anyhow::bail!("no DATABASE_URL and no SQLite database"),
    };
    tracing::info!(backend = store.backend(), "job store");
    // One key scope for the storage routes and every job, whatever its strategy: with a
    // multi-user provider a job's storage access stays under its user's prefix.
    let keys = auth.key_scope();
    let config = nodetool_exec::ManagerConfig::from_settings(resources.settings());
    if config.queue.is_some() {
        tracing::info!("JOB_EXECUTION=queue: jobs are enqueued for `nodetool work` processes");
    }
    let (manager, bridge, node_metadata) = job_manager(&resources, store, keys, config).await?;
    let mut state = AppState::new(resources.clone(), auth.clone(), records.clone())
        .with_jobs(manager.clone())
        .with_node_metadata(node_metadata);
    state.options_mut().presign_redirect = !args.no_presign_redirect;
    // --allow-remote means other hosts reach us by name: the loopback Host check would refuse
    // them.
    state.options_mut().loopback_hosts_only = !args.allow_remote;
    let app = nodetool_server::router(state);

    // Before binding: SIGHUP is handled from the moment clients can connect.
    let token_reload = matches!(auth, Authenticator::Static { .. }).then(|| {
        let every = (args.token_reload_interval > 0)
            .then(|| Duration::from_secs(args.token_reload_interval));
        spawn_token_reload(resources.settings().clone(), auth.clone(), every)
    });
    let addr = SocketAddr::new(args.host, args.port);
    let listener = bind(addr).with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %local, %scheme, auth = ?auth, max_connections = limits.max_connections,
        header_timeout_secs = limits.header_timeout.as_secs(), "nodetool server listening");
    eprintln!("nodetool serving on {scheme}://{local}");

    let grace = Duration::from_secs(args.shutdown_grace);
    let shutdown = nodetool_server::shutdown_signal();
    let result = match tls {
        Some(tls) => {
            nodetool_server::serve_tls_with(listener, app, tls, limits, shutdown, grace).await
        }
        None => nodetool_server::serve_with(listener, app, limits, shutdown, grace).await,
    };
    if let Some(task) = token_reload {
        task.abort();
    }
    // Running jobs get the same grace as open streams, then are cancelled and recorded.
    manager
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    if let Some(bridge) = &bridge {
        bridge.shutdown(Duration::from_secs(5)).await;
    }
    reaper.abort();
    // Last: jobs recorded their outcome above. Without this the -wal file stays and a copy of
    // the database file alone can lack tables.
    drop(manager);
    if let Err(e) = records.close().await {
        tracing::warn!(error = %e, "could not checkpoint the database on shutdown");
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Keeps the static tokens in step with the config files (see the module docs).
fn spawn_token_reload(
    settings: Arc<nodetool_config::Settings>,
    auth: Authenticator,
    every: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered here, not in the task, so that it is in place when this returns.
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; token reload by polling only");
            None
        }
    };
    tokio::spawn(async move {
        let mut tick = every.map(|every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        let mut current: Vec<String> = settings
            .server_auth_tokens()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut pending: Option<Vec<String>> = None;
        // The last problem logged, so a broken file is reported once, not every poll.
        let mut problem: Option<String> = None;
        loop {
            let forced = tokio::select! {
                _ = async {
                    match tick.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let outcome = settings
                .reload_server_auth_tokens()
                .and_then(|(tokens, source)| {
                    if tokens == current {
                        pending = None;
                        if forced {
                            tracing::info!("SIGHUP: SERVER_AUTH_TOKEN unchanged");
                        }
                        return Ok(());
                    }
                    // Polling takes a change only once two reads agree; SIGHUP means "now".
                    if !forced && pending.as_ref() != Some(&tokens) {
                        pending = Some(tokens);
                        return Ok(());
                    }
                    auth.replace_static_tokens(&tokens)
                        .map_err(|e| e.with_context("source", &source))?;
                    tracing::info!(tokens = tokens.len(), %source, "SERVER_AUTH_TOKEN reloaded");
                    current = tokens;
                    pending = None;
                    Ok(())
                });
            match outcome {
                Ok(()) => problem = None,
                Err(e) => {
                    let text = e.to_string();
                    if problem.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %e, "cannot reload SERVER_AUTH_TOKEN; keeping the current tokens");
                        problem = Some(text);
                    }
                    pending = None;
                }
            }
        }
    })
}

/// The job manager: threaded and subprocess strategies always, Docker when its engine answers.
/// `store` shares the server's database; workers use this process's resources through calls,
/// with storage keys limited by `keys`. Threaded jobs run Python nodes on this process's bridge
/// (returned, for shutdown). Also returns NodeTool's metadata of every type it runs.
pub(crate) async fn job_manager(
    resources: &Arc<Resources>,
    store: nodetool_exec::JobStore,
    keys: nodetool_workers::KeyScope,
    mut config: nodetool_exec::ManagerConfig,
) -> anyhow::Result<(
    nodetool_exec::JobExecutionManager,
    Option<nodetool_bridge::PythonBridge>,
    Vec<serde_json::Value>,
)> {
    use nodetool_engine::Engine;
    use nodetool_exec::threaded::ThreadedStrategy;
    use nodetool_exec::{ExecutionStrategy, JobExecutionManager};
    use nodetool_workers::subprocess::SubprocessStrategy;

    let settings = resources.settings();
    let mut engine_resources = resources.engine_resources().await?;
    // Threaded jobs (and the Python bridge inside them) and workers' calls apply the same scope.
    engine_resources.media.policy.key_scope = keys;
    let services = nodetool_workers::WorkerServices::new(engine_resources.clone());
    let (registry, bridge) =
        crate::python_cmd::registry(settings, crate::python_cmd::Need::Always).await?;
    let node_metadata = nodetool_engine::metadata::registry_metadata(&registry, &|t| {
        nodetool_nodes::ai::tools::EXPOSED_NODE_TYPES.contains(&t)
    });
    // The streamed-input rule, queued jobs' retries and the NODETOOL_VRAM_GB check ask this.
    config.node_facts = nodetool_exec::NodeFacts::from_registry(&registry);
    let engine = Engine::new(Arc::new(registry), engine_resources);
    let mut strategies: Vec<Arc<dyn ExecutionStrategy>> = vec![Arc::new(ThreadedStrategy::new(
        engine,
        settings.thread_pool_size.max(1),
    )?)];

    let cfg = crate::subprocess_config(settings)?;
    strategies.push(crate::python_cmd::LendPythonSecrets::wrap(
        Arc::new(SubprocessStrategy::new(cfg).with_services(services.clone())),
        bridge.as_ref(),
        settings,
    ));

    match docker_strategy(settings, services).await {
        Ok(d) => strategies.push(crate::python_cmd::RefusePythonNodes::wrap(
            d,
            bridge.as_ref(),
        )),
        Err(e) => {
            tracing::info!(error = %e, "docker strategy unavailable; jobs run threaded or in subprocesses")
        }
    }

    let manager = JobExecutionManager::new(store, strategies, config).await?;
    if let Some(bridge) = &bridge {
        // job.end lets the worker release what a finished threaded job loaded.
        let bridge = bridge.clone();
        let handle = tokio::runtime::Handle::current();
        manager.on_finished(move |record| {
            if record.strategy == nodetool_exec::StrategyKind::Threaded {
                let (bridge, id, status) = (bridge.clone(), record.id.clone(), record.status);
                handle.spawn(async move { bridge.end_job(id.as_str(), status.as_str()).await });
            }
        });
    }
    Ok((manager, bridge, node_metadata))
}

async fn docker_strategy(
    settings: &nodetool_config::Settings,
    services: nodetool_workers::WorkerServices,
) -> anyhow::Result<Arc<dyn nodetool_exec::ExecutionStrategy>> {
    let cfg = nodetool_workers::docker::config::DockerConfig::for_runtime(settings)?;
    // A missing engine must not hold up start-up.
    let strategy = tokio::time::timeout(
        Duration::from_secs(5),
        nodetool_workers::docker::DockerStrategy::connect(cfg),
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
    if let Err(e) = strategy
        .reap_workspaces(nodetool_workers::docker::STALE_WORKSPACE)
        .await
    {
        tracing::warn!(error = %e, "could not reap leftover job workspaces");
    }
    Ok(Arc::new(strategy.with_services(services)))
}

/// Listens on `addr` with a deep accept queue: `TcpListener::bind` asks for 128, and a burst
/// of connects beyond that (1,000 WebSocket clients in the fan-out bench) is dropped and
/// retried by the clients only after the kernel's 1 s SYN timeout.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
