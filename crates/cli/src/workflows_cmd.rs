//! `nodetool workflows ls|import|export|run`: the workflow store `nodetool serve` uses
//! (`/api/workflows`, the same database), as the single local user that `none`, `local` and
//! `static` auth serve.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use nodetool_server::workflows::store;
use nodetool_server::LOCAL_USER;

#[derive(Debug, clap::Subcommand)]
pub enum WorkflowsCommand {
    /// List stored workflows, newest first (`--json` for the records).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Store a NodeTool workflow file (a saved workflow or a bare `{nodes, edges}` graph).
    Import { file: PathBuf },
    /// Print a stored workflow as NodeTool JSON (`nodetool run` reads it back).
    Export { id: String },
    /// Run a stored workflow, as `nodetool run` runs a file.
    Run {
        id: String,
        /// Job params as a JSON object, `{input name: value}`.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        /// Print every event as one JSON line on stdout.
        #[arg(long)]
        jsonl: bool,
        #[arg(long, value_name = "STRATEGY", default_value = "threaded")]
        strategy: String,
    },
}

pub async fn run(command: WorkflowsCommand) -> anyhow::Result<ExitCode> {
    let settings = crate::load_settings()?;
    // DATABASE_URL: the workflows `nodetool serve` keeps in PostgreSQL; else the DB_PATH file.
    let records = nodetool_server::db::Records::open(
        &settings.db_path,
        settings.database.database_url.as_deref(),
    )
    .await
    .with_context(|| match &settings.database.database_url {
        Some(url) => format!(
            "opening the workflow store at DATABASE_URL={}",
            nodetool_config::database::redact_url(url)
        ),
        None => format!("opening {}", settings.db_path.display()),
    })?;
    let pool = &records.workflows;
    match command {
        WorkflowsCommand::Ls { json } => {
            let all = store::list(pool, LOCAL_USER).await?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &all)?;
                writeln!(out)?;
            } else {
                for w in &all {
                    let nodes = w["graph"]["nodes"].as_array().map_or(0, Vec::len);
                    writeln!(
                        out,
                        "{:<34} {:<40} {:>5} nodes  {}",
                        w["id"].as_str().unwrap_or(""),
                        w["name"].as_str().unwrap_or(""),
                        nodes,
                        w["updated_at"].as_str().unwrap_or("")
                    )?;
                }
            }
        }
        WorkflowsCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let id = store::import(pool, LOCAL_USER, &value)
                .await
                .with_context(|| format!("importing {}", file.display()))?;
            println!("{id}");
        }
        WorkflowsCommand::Export { id } => {
            let w = store::get(pool, LOCAL_USER, &id).await?;
            println!("{}", serde_json::to_string_pretty(&w)?);
        }
        WorkflowsCommand::Run {
            id,
            params,
            jsonl,
            strategy,
        } => {
            let w = store::get(pool, LOCAL_USER, &id).await?;
            close(&records).await;
            // `nodetool run` reads files: hand it the stored record (its id names the run's
            // workflow) through a private temp file.
            let dir = tempfile::tempdir().context("temp dir for the workflow")?;
            let file = dir.path().join("workflow.json");
            std::fs::write(&file, serde_json::to_vec(&w)?)?;
            return crate::run_cmd::run(crate::run_cmd::RunArgs {
                file,
                params,
                jsonl,
                no_cache: false,
                timeout: None,
                strategy,
                model_override: Vec::new(),
                profile: false,
                trace: None,
            })
            .await;
        }
    }
    close(&records).await;
    Ok(ExitCode::SUCCESS)
}

/// Closes the SQLite pool (as before: no checkpoint); a PostgreSQL pool just goes.
async fn close(records: &nodetool_server::db::Records) {
    if let Some(pool) = &records.sqlite {
        pool.close().await;
    }
}
