//! The `nodetool` binary. Wiring only: parse arguments, load settings once, build `Resources`,
//! call into the library crates, turn errors into messages and exit codes.

mod docker_cmd;
mod nodes_cmd;
mod profile;
mod python_cmd;
mod run_cmd;
mod serve_cmd;
mod settings_cmd;
mod storage_cmd;
mod telemetry;
mod work_cmd;
mod worker_cmd;
mod workflows_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The server's per-request allocations cost less under mimalloc than glibc malloc
// (docs/bench/server.md). `Budgeted` lets a template render be stopped at its memory budget
// instead of taking the process down (crates/alloc).
#[global_allocator]
static GLOBAL: nodetool_alloc::Budgeted<mimalloc::MiMalloc> =
    nodetool_alloc::Budgeted::new(mimalloc::MiMalloc);

#[derive(Debug, Parser)]
#[command(name = "nodetool", version, about = "NodeTool workflow runtime")]
struct Cli {
    /// Log filter, e.g. `info` or `nodetool=debug` (default: warn).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a NodeTool workflow file and print its outputs.
    Run(run_cmd::RunArgs),
    /// Serve the HTTP API (storage, assets) on 127.0.0.1:7777.
    Serve(serve_cmd::ServeArgs),
    /// Claim and run queued jobs (JOB_EXECUTION=queue servers enqueue them in DATABASE_URL).
    Work(work_cmd::WorkArgs),
    /// Show settings and where each value came from.
    Settings {
        #[command(subcommand)]
        command: settings_cmd::SettingsCommand,
    },
    /// Operate the configured asset or temp storage.
    Storage {
        #[command(subcommand)]
        command: storage_cmd::StorageCommand,
    },
    /// Build the Docker worker image from this binary (no registry needed).
    Docker {
        #[command(subcommand)]
        command: docker_cmd::DockerCommand,
    },
    /// List the node types this build knows and what enables the ones it cannot run.
    Nodes(nodes_cmd::NodesArgs),
    /// The Python node bridge (NODETOOL_PYTHON).
    Python {
        #[command(subcommand)]
        command: python_cmd::PythonCommand,
    },
    /// The stored workflows `nodetool serve` offers at /api/workflows.
    Workflows {
        #[command(subcommand)]
        command: workflows_cmd::WorkflowsCommand,
    },
    /// The child side of the subprocess and Docker strategies (reads a job on stdin; not for humans).
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Read before tracing starts (so a settings warning here is not printed twice: the command
    // loads its settings again). A worker loads no settings: its parent passes these in its
    // environment.
    let telemetry = match cli.command {
        Command::Worker => nodetool_config::Sources::from_process()
            .map(|s| nodetool_config::TelemetrySettings::from_env(&s.env))
            .unwrap_or_default(),
        _ => load_settings().map(|s| s.telemetry).unwrap_or_default(),
    };
    let telemetry = telemetry::init(cli.log.as_deref(), &telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_cmd::run(args).await,
            Command::Serve(args) => serve_cmd::run(args).await,
            Command::Work(args) => work_cmd::run(args).await,
            Command::Settings { command } => settings_cmd::run(command),
            Command::Storage { command } => storage_cmd::run(command).await,
            Command::Docker { command } => docker_cmd::run(command).await,
            Command::Python { command } => python_cmd::run(command).await,
            Command::Worker => worker_cmd::run().await,
            Command::Nodes(args) => nodes_cmd::run(args),
            Command::Workflows { command } => workflows_cmd::run(command).await,
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        // `nodetool run --jsonl | head`: the reader left; that is not an error worth a message.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Settings for this process; the one place the binary reads its environment.
pub(crate) fn load_settings() -> anyhow::Result<nodetool_config::Settings> {
    let sources = nodetool_config::Sources::from_process()?;
    Ok(nodetool_config::Settings::load(&sources)?)
}

/// How subprocess workers start: this binary, with an environment allow-listed from ours minus
/// every secret setting (workers get storage and caches from us through calls, not settings).
pub(crate) fn subprocess_config(
    settings: &nodetool_config::Settings,
) -> anyhow::Result<nodetool_workers::subprocess::SubprocessConfig> {
    use anyhow::Context;
    let sources = nodetool_config::Sources::from_process()?;
    let secret_names: Vec<&str> = settings
        .entries()
        .into_iter()
        .filter(|e| e.secret)
        .map(|e| e.name)
        .collect();
    let mut cfg = nodetool_workers::subprocess::SubprocessConfig::new(
        std::env::current_exe().context("locating the nodetool binary")?,
    );
    cfg.env = nodetool_workers::subprocess::allowed_env(&sources.env, &secret_names);
    cfg.env
        .extend(python_cmd::subprocess_env(settings, &sources.env));
    // Workers hand their spans (children of the job's) to us for our collector.
    cfg.env.extend(settings.telemetry.worker_env());
    // Idle workers only where subprocess jobs may run at all.
    cfg.warm_workers = if settings.allowed_strategies.contains(&"subprocess") {
        settings.subprocess_warm_workers
    } else {
        0
    };
    Ok(cfg)
}
