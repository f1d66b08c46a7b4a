//! `nodetool work`: a queue worker. Claims jobs that `JOB_EXECUTION=queue` servers enqueued in
//! `DATABASE_URL`'s PostgreSQL, runs them on this machine's strategies (threaded, subprocess,
//! Docker when its engine answers) and writes their events and outcomes back, fenced by each
//! job's lease. Jobs run with this process's settings: provider keys and storage credentials
//! come from its own environment and config files, never from the queue.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nodetool_exec::queue::ClaimFilter;
use nodetool_exec::work::{QueueWorker, WorkerConfig};
use nodetool_exec::{JobStore, ManagerConfig, PostgresOptions, StrategyKind};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_storage::UrlSigner;

#[derive(Debug, Args)]
#[command(after_help = "\
Needs DATABASE_URL (postgres://…), the same database as the servers (JOB_EXECUTION=queue).
JOB_LEASE_SECONDS (default 30) is the claim's lifetime without a heartbeat (sent every third of
it); a job whose worker stops heartbeating is retried (JOB_MAX_ATTEMPTS, set on the server,
default 2 runs) when all its nodes are idempotent, else failed \"worker lost\". Claims respect
MAX_JOBS_PER_USER and JOB_QUEUE_MAX_RUNNING across all workers (set them alike everywhere).
A worker registers in the queue_workers table while it runs; a job whose tags, strategy or
spec version no live worker offers fails after JOB_CLAIM_TIMEOUT_SECONDS (default 300).
A cancel on any server reaches the job within one heartbeat. SIGTERM/SIGINT stops claiming;
running jobs get --shutdown-grace seconds, then are cancelled and recorded.")]
pub struct WorkArgs {
    /// Jobs run at once (also the most claimed in one batch).
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,
    /// This worker's tags (comma-separated, e.g. `gpu,docker`): it claims only jobs whose
    /// request's `worker_tags` are all among them (jobs without tags: every worker).
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    tags: Vec<String>,
    /// Strategies it runs (comma-separated: threaded, subprocess, docker); default: those of
    /// ALLOWED_STRATEGIES available here. Jobs of other strategies wait for another worker.
    #[arg(long, value_delimiter = ',', value_name = "STRATEGIES")]
    strategy: Vec<String>,
    /// Seconds running jobs get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    shutdown_grace: u64,
}

pub async fn run(args: WorkArgs) -> anyhow::Result<ExitCode> {
    let settings = crate::load_settings()?;
    let Some(url) = settings.database.database_url.clone() else {
        anyhow::bail!(
            "nodetool work needs DATABASE_URL (a postgres:// URL): the job queue is in PostgreSQL, \
             shared with the servers (JOB_EXECUTION=queue)"
        );
    };
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let lease = settings.database.job_lease;
    // Cluster-wide limits, applied in the claim: give every worker the same values.
    let max_per_user = settings
        .max_jobs_per_user
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let max_running = settings.database.job_queue_max_running;
    let max_per_job = settings.database.job_events_max_per_job;
    let auth = nodetool_server::Authenticator::from_settings(&settings)?;
    let key = nodetool_runtime::url_signing_key(&settings)?;
    let signer = UrlSigner::new(&key, crate::serve_cmd::SIGNED_URL_TTL)?;
    // Asset records go where the servers keep them: DATABASE_URL's PostgreSQL (this worker
    // opens no SQLite file, so workers sharing a home do not race to migrate one).
    let records = nodetool_server::db::Records::open(&settings.db_path, Some(url.as_str()))
        .await
        .context("opening the asset store (DATABASE_URL)")?;
    let resources = Arc::new(
        Resources::new(settings, ResourceOptions::default())
            .with_url_signer(signer)
            .with_asset_store(records.assets.clone()),
    );
    let queue = JobStore::connect(&url, &PostgresOptions::default()).await?;

    // The local manager runs the jobs; its records are bookkeeping only (the queue has the
    // real ones) and its events reach the queue through the worker, fenced by the lease.
    let mut config = ManagerConfig::from_settings(resources.settings());
    config.max_concurrent_jobs = args.concurrency;
    config.max_jobs_per_user = None;
    config.max_queued_jobs_per_user = usize::MAX;
    config.event_log = None;
    config.queue = None;
    config.retain_finished = Duration::from_secs(5);
    let allowed = config.allowed_strategies.clone();
    let local_store = JobStore::in_memory().await?;
    let (manager, bridge, _) =
        crate::serve_cmd::job_manager(&resources, local_store, auth.key_scope(), config).await?;

    let available = manager.strategies();
    let strategies: Vec<StrategyKind> = if args.strategy.is_empty() {
        allowed
            .iter()
            .copied()
            .filter(|k| available.contains(k))
            .collect()
    } else {
        let mut out = Vec::new();
        for name in &args.strategy {
            let kind = StrategyKind::from_str(name.trim())
                .map_err(|e| anyhow::anyhow!("--strategy {name}: {e}"))?;
            if !available.contains(&kind) {
                anyhow::bail!("--strategy {kind}: not available on this machine");
            }
            if !allowed.contains(&kind) {
                anyhow::bail!("--strategy {kind}: not in ALLOWED_STRATEGIES");
            }
            out.push(kind);
        }
        out
    };
    if strategies.is_empty() {
        anyhow::bail!("no strategy to run: none of ALLOWED_STRATEGIES is available here");
    }
    let tags: Vec<String> = args
        .tags
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let owner = worker_id();
    let mut cfg = WorkerConfig::new(
        owner.clone(),
        args.concurrency,
        ClaimFilter {
            strategies: strategies.iter().map(|k| k.as_str().to_owned()).collect(),
            tags,
            max_per_user,
            max_running,
            vram_gb: resources.settings().vram_gb,
        },
        lease,
    );
    cfg.max_per_job = max_per_job;
    let worker = QueueWorker::new(queue, manager.clone(), cfg);
    eprintln!(
        "nodetool work {owner}: claiming jobs ({} at once; strategies {})",
        args.concurrency,
        strategies
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );

    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            nodetool_server::shutdown_signal().await;
            stop.cancel();
        });
    }
    // After the signal, running jobs get the grace, then are cancelled (and recorded).
    let grace = Duration::from_secs(args.shutdown_grace);
    let stopper = {
        let (stop, manager) = (stop.clone(), manager.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            manager.shutdown(grace).await;
        })
    };
    worker.run(stop.cancelled()).await?;
    let _ = stopper.await;
    if let Some(bridge) = &bridge {
        bridge.shutdown(Duration::from_secs(5)).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `host-pid-random`: unique per process, readable in `jobs.lease_owner`.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".to_owned());
    let id = nodetool_core::id::new_id();
    let tail: String = id.chars().rev().take(6).collect();
    format!("{host}-{}-{tail}", std::process::id())
}
