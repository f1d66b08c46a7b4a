//! `nodetool run FILE [--params JSON] [--jsonl] [--no-cache] [--strategy S] [--profile]
//! [--trace FILE]`: runs one workflow through the same strategies and deadline as the server's
//! jobs.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nodetool_engine::{parse_workflow, Engine, Event, EventEnvelope, Status};
use nodetool_exec::{ExecutionStrategy, JobSpec, StrategyKind};
use nodetool_runtime::{ResourceOptions, Resources};
use serde_json::{Map, Value};
use tracing::Instrument;

/// Exit code of a run that was interrupted (as shells report SIGINT).
const EXIT_CANCELLED: u8 = 130;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// NodeTool workflow file (a saved workflow or a bare `{nodes, edges}` graph); `-` for stdin.
    pub file: PathBuf,
    /// Job params as a JSON object, `{input name: value}`.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// Print every event as one JSON line on stdout (instead of the result).
    #[arg(long)]
    pub jsonl: bool,
    /// Neither read nor fill the node cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Fail the job after this many seconds (at most JOB_TIMEOUT_SECONDS, which it may only
    /// lower).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Where the job runs: in this process (threaded), in a `nodetool worker` child
    /// (subprocess), or in a container (docker).
    #[arg(long, value_name = "STRATEGY", default_value = "threaded")]
    pub strategy: String,
    /// Rewrite every model ref of a type before running, e.g.
    /// `language_model=llama_cpp:tiny` (repeatable; also NODETOOL_MODEL_OVERRIDE).
    #[arg(long, value_name = "TYPE=PROVIDER:MODEL")]
    pub model_override: Vec<String>,
    /// Print a per-node table (wall time, outputs, output bytes) on stderr after the run.
    #[arg(long)]
    pub profile: bool,
    /// Write the run's node timeline as Chrome trace-event JSON (open in Perfetto or
    /// chrome://tracing).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

impl RunArgs {
    fn profiler(&self) -> Option<crate::profile::Profile> {
        (self.profile || self.trace.is_some()).then(crate::profile::Profile::new)
    }

    /// Prints and writes what `--profile` and `--trace` asked for.
    fn report_profile(&self, profile: Option<crate::profile::Profile>) -> anyhow::Result<()> {
        let Some(mut profile) = profile else {
            return Ok(());
        };
        profile.finish();
        if self.profile {
            profile.print_table()?;
        }
        if let Some(path) = &self.trace {
            profile
                .write_trace(path)
                .with_context(|| format!("writing the trace to {}", path.display()))?;
        }
        Ok(())
    }
}

/// `--model-override` first, then `NODETOOL_MODEL_OVERRIDE` (the first rule for a type wins).
fn apply_model_overrides(
    workflow: &mut nodetool_engine::Workflow,
    flags: &[String],
) -> anyhow::Result<()> {
    let mut items = flags.to_vec();
    if let Ok(settings) = crate::load_settings() {
        items.extend(settings.provider_values().model_overrides);
    }
    let overrides = nodetool_nodes::ai::parse_model_overrides(&items)?;
    let changed = nodetool_nodes::ai::apply_model_overrides(&mut workflow.graph, &overrides);
    if changed > 0 {
        tracing::info!(changed, "model refs rewritten by --model-override");
    }
    Ok(())
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the workflow from stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let workflow =
        parse_workflow(&text).with_context(|| format!("loading {}", args.file.display()))?;
    let mut workflow = workflow;
    apply_model_overrides(&mut workflow, &args.model_override)?;
    let params = parse_params(args.params.as_deref())?;
    let requested_timeout = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Some(s),
        Some(s) => anyhow::bail!("--timeout must be a positive number of seconds, got {s}"),
        None => None,
    };
    let strategy: nodetool_exec::StrategyKind = args.strategy.parse()?;

    let settings = crate::load_settings()?;
    // Asset records go to the same database `nodetool serve` uses (DATABASE_URL's PostgreSQL,
    // else DB_PATH), opened on the first save or listing only.
    let store: Arc<dyn nodetool_core::AssetStore> = match &settings.database.database_url {
        Some(url) => Arc::new(nodetool_assets::PostgresAssetStore::lazy(
            url.clone(),
            nodetool_assets::PgOptions::default(),
        )),
        None => Arc::new(nodetool_assets::SqliteAssetStore::lazy(
            settings.db_path.clone(),
        )),
    };
    let resources = Resources::new(settings, ResourceOptions::default()).with_asset_store(store);
    let settings = resources.settings().clone();
    let (runner, bridge) = strategy_for(strategy, &resources, &workflow.graph).await?;

    // One job path for every strategy, as the server's: a `JobSpec` under the operator's
    // deadline (`--timeout` may only lower JOB_TIMEOUT_SECONDS), started and awaited.
    let mut spec = JobSpec::new(workflow.graph);
    spec.workflow_id = workflow.id;
    spec.params = params;
    spec.use_cache = !args.no_cache;
    spec.resource_limits.time_seconds =
        nodetool_exec::effective_time_limit(requested_timeout, settings.job_timeout);

    let node_count = spec.graph.nodes.len();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<EventEnvelope>();
    let printer = tokio::spawn(print_events(rx, args.jsonl, node_count, args.profiler()));
    // The job's span (exported when OTEL_EXPORTER_OTLP_ENDPOINT is set), open until the job
    // ends; a worker's spans hang under it.
    let span = nodetool_exec::trace::job_span(&spec, strategy.as_str());
    spec.traceparent = nodetool_exec::trace::traceparent_of(&span);
    let mut handle = runner
        .start(spec, Arc::new(tx))
        .instrument(span.clone())
        .await?;
    let job_id = handle.job_id().to_owned();
    let cancel = handle.cancel_token();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let outcome = handle.wait().await;
    drop(span);
    ctrl_c.abort();
    drop(handle);
    drop(runner);
    if let Some(bridge) = &bridge {
        bridge
            .end_job(job_id.as_str(), outcome.status.as_str())
            .await;
        bridge.shutdown(Duration::from_secs(5)).await;
    }
    // The printer ends at the terminal `job_update`, which every strategy sends last.
    let profile = printer.await.context("event printer")??;
    args.report_profile(profile)?;
    report(outcome, args.jsonl)
}

/// The strategy `nodetool run --strategy` names, built as `nodetool serve` builds it, and the
/// Python bridge threaded jobs run Python nodes on (to end and shut down after the job).
async fn strategy_for(
    strategy: nodetool_exec::StrategyKind,
    resources: &Resources,
    graph: &nodetool_engine::Graph,
) -> anyhow::Result<(
    Arc<dyn ExecutionStrategy>,
    Option<nodetool_bridge::PythonBridge>,
)> {
    use nodetool_exec::threaded::ThreadedStrategy;
    use nodetool_workers::subprocess::SubprocessStrategy;

    let settings = resources.settings();
    match strategy {
        StrategyKind::Threaded => {
            // Native nodes, then the Python worker's when the workflow needs a type they lack.
            let (registry, bridge) =
                crate::python_cmd::registry(settings, crate::python_cmd::Need::For(graph)).await?;
            nodetool_exec::NodeFacts::from_registry(&registry)
                .check_vram(graph, settings.vram_gb)?;
            let engine = Engine::new(Arc::new(registry), resources.engine_resources().await?);
            let threaded = ThreadedStrategy::new(engine, settings.thread_pool_size.max(1))?;
            Ok((Arc::new(threaded), bridge))
        }
        StrategyKind::Subprocess => {
            // The worker gets no storage or cache settings: it asks this process, which lends it
            // the same storages, node cache and asset records (DB_PATH) a threaded run uses.
            let services =
                nodetool_workers::WorkerServices::new(resources.engine_resources().await?);
            let mut cfg = crate::subprocess_config(settings)?;
            // One job: a pool would only start processes nobody uses.
            cfg.warm_workers = 0;
            let subprocess: Arc<dyn ExecutionStrategy> =
                Arc::new(SubprocessStrategy::new(cfg).with_services(services));
            // The worker starts its own Python worker; from ours it needs only the secrets
            // the Python nodes declare, which the worker (reading no settings) cannot look up.
            let (registry, bridge) =
                crate::python_cmd::registry(settings, crate::python_cmd::Need::For(graph)).await?;
            let fits = nodetool_exec::NodeFacts::from_registry(&registry)
                .check_vram(graph, settings.vram_gb);
            let wrapped =
                crate::python_cmd::LendPythonSecrets::wrap(subprocess, bridge.as_ref(), settings);
            if let Some(b) = bridge {
                b.shutdown(Duration::from_secs(2)).await;
            }
            fits?;
            Ok((wrapped, None))
        }
        StrategyKind::Docker => {
            let services =
                nodetool_workers::WorkerServices::new(resources.engine_resources().await?);
            let cfg = nodetool_workers::docker::config::DockerConfig::for_runtime(settings)?;
            let docker: Arc<dyn ExecutionStrategy> = Arc::new(
                nodetool_workers::docker::DockerStrategy::connect(cfg)
                    .await?
                    .with_services(services),
            );
            // Containers have no Python: a workflow with Python nodes is refused up front.
            let (registry, bridge) =
                crate::python_cmd::registry(settings, crate::python_cmd::Need::For(graph)).await?;
            nodetool_exec::NodeFacts::from_registry(&registry)
                .check_vram(graph, settings.vram_gb)?;
            Ok((
                crate::python_cmd::RefusePythonNodes::wrap(docker, bridge.as_ref()),
                None,
            ))
        }
    }
}

/// Prints a finished job for a person: the outputs as JSON (unless `--jsonl` already printed
/// every event), or the error; the exit code says which.
fn report(outcome: nodetool_exec::JobOutcome, jsonl: bool) -> anyhow::Result<ExitCode> {
    match outcome.status {
        Status::Completed => {
            if !jsonl {
                let mut out = std::io::stdout().lock();
                serde_json::to_writer_pretty(&mut out, &Value::Object(outcome.result))?;
                writeln!(out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Status::Cancelled => {
            eprintln!("cancelled");
            Ok(ExitCode::from(EXIT_CANCELLED))
        }
        _ => {
            match outcome.error_text() {
                Some(e) => eprintln!("error: {e}"),
                None => eprintln!("error: the job failed"),
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn parse_params(raw: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    let Some(raw) = raw else {
        return Ok(Map::new());
    };
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        anyhow::anyhow!(
            "--params is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => anyhow::bail!(
            "--params must be a JSON object of {{input name: value}}, got {}",
            nodetool_engine::types::type_of(&other)
        ),
    }
}

/// `--jsonl`: every event on stdout. Otherwise, on a TTY, a progress bar on stderr. Every
/// event also goes to the profiler when `--profile`/`--trace` asked for one. Ends after the
/// terminal `job_update`.
async fn print_events(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<EventEnvelope>,
    jsonl: bool,
    node_count: usize,
    mut profile: Option<crate::profile::Profile>,
) -> anyhow::Result<Option<crate::profile::Profile>> {
    if jsonl {
        // Not locked across awaits: a stdout lock is not Send.
        let mut out = std::io::stdout();
        while let Some(event) = rx.recv().await {
            if let Some(p) = profile.as_mut() {
                p.observe(&event);
            }
            let mut line = serde_json::to_vec(&event)?;
            line.push(b'\n');
            out.write_all(&line)?;
            if is_terminal(&event) {
                break;
            }
        }
        return Ok(profile);
    }
    if !std::io::stderr().is_terminal() {
        while let Some(event) = rx.recv().await {
            if let Some(p) = profile.as_mut() {
                p.observe(&event);
            }
            if is_terminal(&event) {
                break;
            }
        }
        return Ok(profile);
    }
    let bar = indicatif::ProgressBar::new(node_count as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut done = HashSet::new();
    while let Some(event) = rx.recv().await {
        if let Some(p) = profile.as_mut() {
            p.observe(&event);
        }
        match &event.event {
            Event::NodeUpdate(n) => {
                if n.status == Status::Running {
                    bar.set_message(format!("{} ({})", n.node_name, n.node_id));
                } else if n.status.is_terminal() && done.insert(n.node_id.clone()) {
                    bar.inc(1);
                }
            }
            Event::NodeProgress(p) => {
                bar.set_message(format!("{}: {}/{}", p.node_id, p.progress, p.total));
            }
            _ => {}
        }
        if is_terminal(&event) {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(profile)
}

/// The job's last event. The printer stops there rather than at the channel's end: a threaded
/// job abandoned at its hard deadline keeps its sender alive on the thread it blocks.
fn is_terminal(event: &EventEnvelope) -> bool {
    matches!(&event.event, Event::JobUpdate(u) if u.status.is_terminal())
}
