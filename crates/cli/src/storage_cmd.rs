//! `nodetool storage info|put|get|ls|rm|url|gc`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use nodetool_core::storage::{ByteStream, ObjectMeta, Progress};
use nodetool_core::{ErrorKind, PutOptions, Storage, StorageKey, StoragePrefix};
use nodetool_runtime::{ResourceOptions, Resources, StorageRole};
use nodetool_storage::blocking_io;
use std::io::Write;
use tokio_util::io::ReaderStream;

/// Transfers at least this big get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 4 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct Target {
    /// Use temp storage instead of asset storage.
    #[arg(long)]
    temp: bool,
    /// Force S3 even when the settings would select local files.
    #[arg(long)]
    s3: bool,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Which backend serves assets, temp files and the node cache, and why.
    Info {
        #[arg(long)]
        s3: bool,
        #[arg(long)]
        json: bool,
    },
    /// Upload FILE (or stdin with `-` or no FILE) to KEY.
    Put {
        key: String,
        file: Option<PathBuf>,
        /// Content type to store (default: guessed from the key's extension).
        #[arg(long)]
        content_type: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Download KEY to FILE (or stdout with `-` or no FILE).
    Get {
        key: String,
        file: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List objects under PREFIX.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete KEY (succeeds when it is already gone).
    Rm {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print the URL clients use for KEY.
    Url {
        key: String,
        /// A presigned URL valid this many seconds (S3, Supabase).
        #[arg(long, value_name = "SECONDS")]
        presign: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete temp objects older than ASSET_TEMP_TTL.
    Gc {
        #[arg(long)]
        s3: bool,
    },
}

pub async fn run(command: StorageCommand) -> anyhow::Result<ExitCode> {
    match command {
        StorageCommand::Info { s3, json } => info(s3, json),
        StorageCommand::Put {
            key,
            file,
            content_type,
            target,
        } => {
            let (storage, key) = open(&target, &key)?;
            put(storage, &key, file.as_deref(), content_type).await
        }
        StorageCommand::Get { key, file, target } => {
            let (storage, key) = open(&target, &key)?;
            get(storage, &key, file.as_deref()).await
        }
        StorageCommand::Ls {
            prefix,
            json,
            target,
        } => {
            let storage = resources(target.s3)?.storage(role(&target))?;
            let prefix = StoragePrefix::new(prefix)?;
            let objects = storage.list(&prefix).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&objects)?);
            } else {
                for o in &objects {
                    println!(
                        "{:>12}  {}  {}",
                        o.size,
                        o.last_modified.format("%Y-%m-%dT%H:%M:%SZ"),
                        o.key
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StorageCommand::Rm { key, target } => {
            let (storage, key) = open(&target, &key)?;
            storage.delete(&key).await?;
            Ok(ExitCode::SUCCESS)
        }
        StorageCommand::Url {
            key,
            presign,
            target,
        } => {
            // Sign file/memory URLs with the server's key so that they open without a token.
            let key = StorageKey::new(key)?;
            let settings = crate::load_settings()?;
            let signer = nodetool_storage::UrlSigner::new(
                &nodetool_runtime::url_signing_key(&settings)?,
                crate::serve_cmd::SIGNED_URL_TTL,
            )?;
            let storage = Resources::new(settings, ResourceOptions { use_s3: target.s3 })
                .with_url_signer(signer)
                .storage(role(&target))?;
            let url = match presign {
                Some(secs) => {
                    storage
                        .presigned_url(&key, Duration::from_secs(secs))
                        .await?
                }
                None => storage.url(&key).await?,
            };
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        StorageCommand::Gc { s3 } => {
            let resources = resources(s3)?;
            let storage = resources.temp_storage()?;
            let report = nodetool_storage::gc::reap(
                storage.as_ref(),
                &StoragePrefix::all(),
                resources.temp_ttl(),
                chrono::Utc::now(),
            )
            .await?;
            // Partial uploads a killed process left in the asset folder too (the temp sweep
            // above cleaned the temp folder's).
            let asset_leftovers = resources
                .asset_storage()?
                .reap_interrupted(nodetool_storage::gc::STALE_PARTIAL_UPLOAD)
                .await?;
            let workspaces = reap_docker_workspaces(resources.settings()).await;
            println!(
                "scanned {} temp objects, deleted {} ({} bytes), removed {} partial uploads{}{}",
                report.scanned,
                report.deleted,
                report.deleted_bytes,
                report.interrupted + asset_leftovers,
                match workspaces {
                    Some(n) => format!(", removed {n} stale Docker job workspaces"),
                    None => String::new(),
                },
                if report.failed > 0 {
                    format!(", {} could not be deleted (see log)", report.failed)
                } else {
                    String::new()
                }
            );
            Ok(if report.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn resources(use_s3: bool) -> anyhow::Result<Resources> {
    Ok(Resources::new(
        crate::load_settings()?,
        ResourceOptions { use_s3 },
    ))
}

fn role(target: &Target) -> StorageRole {
    if target.temp {
        StorageRole::Temp
    } else {
        StorageRole::Asset
    }
}

fn open(target: &Target, key: &str) -> anyhow::Result<(Arc<dyn Storage>, StorageKey)> {
    // Validate the key before building anything: a bad key never reaches a backend.
    let key = StorageKey::new(key)?;
    let storage = resources(target.s3)?.storage(role(target))?;
    Ok((storage, key))
}

fn info(s3: bool, json: bool) -> anyhow::Result<ExitCode> {
    let resources = resources(s3)?;
    let reports = resources.report();
    if json {
        let out: Vec<_> = reports
            .iter()
            .map(|r| match r {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for report in &reports {
            match report {
                Ok(r) => println!(
                    "{:<11} {:<9} {}\n{:<11} {:<9} why: {}",
                    r.role, r.backend, r.location, "", "", r.reason
                ),
                Err(e) => println!("error: {e}"),
            }
        }
    }
    Ok(if reports.iter().any(Result::is_err) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn progress(len: Option<u64>, verb: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match len {
        Some(n) if n >= PROGRESS_THRESHOLD => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .ok()?
            .progress_chars("=> "),
        ),
        Some(_) => return None,
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}").ok()?,
        ),
    };
    bar.set_message(verb.to_owned());
    Some(bar)
}

fn counted(body: ByteStream, bar: Option<ProgressBar>) -> ByteStream {
    match bar {
        None => body,
        Some(bar) => body
            .inspect(move |chunk| {
                if let Ok(c) = chunk {
                    bar.inc(c.len() as u64);
                }
            })
            .boxed(),
    }
}

async fn put(
    storage: Arc<dyn Storage>,
    key: &StorageKey,
    file: Option<&Path>,
    content_type: Option<String>,
) -> anyhow::Result<ExitCode> {
    let opts = PutOptions { content_type };
    let (body, bar) = match file {
        Some(p) if p != Path::new("-") => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let len = f.metadata()?.len();
            let bar = progress(Some(len), "upload");
            let tick = bar
                .clone()
                .map(|bar| -> Progress { Arc::new(move |n| bar.inc(n)) });
            // File storage lets the kernel copy; other backends get the file as a stream.
            match storage.upload_file(key, &f, opts.clone(), tick).await {
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    (blocking_io::read_stream(f, 0, len), bar)
                }
                stored => {
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    report_stored(&stored?, storage.as_ref());
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        _ => {
            let body = ReaderStream::with_capacity(tokio::io::stdin(), blocking_io::FILE_CHUNK)
                .map(|r| r.map_err(nodetool_core::Error::from))
                .boxed();
            (body, progress(None, "upload"))
        }
    };
    let meta = storage
        .upload(key, counted(body, bar.clone()), opts)
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report_stored(&meta, storage.as_ref());
    Ok(ExitCode::SUCCESS)
}

fn report_stored(meta: &ObjectMeta, storage: &dyn Storage) {
    eprintln!(
        "stored {} ({} bytes, {}) in {} storage",
        meta.key,
        meta.size,
        meta.content_type.as_deref().unwrap_or("?"),
        storage.info().scheme
    );
}

async fn get(
    storage: Arc<dyn Storage>,
    key: &StorageKey,
    file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let target = file.filter(|p| *p != Path::new("-"));
    if let (Some(p), Some(src)) = (target, storage.local_path(key)) {
        match std::fs::File::open(&src) {
            Ok(src) if src.metadata().is_ok_and(|m| m.is_file()) => {
                copy_local(src, p).await?;
                return Ok(ExitCode::SUCCESS);
            }
            // Missing or odd: the storage's own download reports it properly.
            _ => {}
        }
    }
    let download = storage.download(key, None).await?;
    let bar = progress(Some(download.meta.size), "download");
    let body = counted(download.body, bar.clone());
    match target {
        Some(p) => {
            replace_file(p, |out| blocking_io::write_stream(out, body, |_| Ok(()))).await?;
        }
        None => {
            blocking_io::write_stream(std::io::stdout(), body, |out| out.flush()).await?;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(ExitCode::SUCCESS)
}

/// File storage to a local file: the kernel copies (`copy_file_range`), with no pass through
/// our memory.
async fn copy_local(src: std::fs::File, p: &Path) -> anyhow::Result<()> {
    let len = src.metadata()?.len();
    let bar = progress(Some(len), "download");
    let tick = bar
        .clone()
        .map(|bar| -> Progress { Arc::new(move |n| bar.inc(n)) });
    replace_file(p, move |out| blocking_io::copy_file(src, out, tick, false)).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Writes `p` through a temp file beside it and renames it into place, so an interrupted
/// download leaves no partial file.
async fn replace_file<F, Fut>(p: &Path, write: F) -> anyhow::Result<()>
where
    F: FnOnce(std::fs::File) -> Fut,
    Fut: std::future::Future<Output = nodetool_core::Result<u64>>,
{
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    let (out, temp_path) = temp.into_parts();
    write(out).await?;
    // The copy is complete, so the old file may go. Removing it before the rename matters:
    // ext4 (auto_da_alloc) flushes a file renamed *over* another one synchronously inside
    // rename(2), which halved download throughput. In between, the target is briefly absent,
    // never partial.
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => {
            std::fs::remove_file(p).with_context(|| format!("cannot replace {}", p.display()))?
        }
        _ => {}
    }
    temp_path
        .persist(p)
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

/// Stale Docker job workspaces (of jobs whose container is gone), when a Docker engine
/// answers; `None` when there is none to ask (nothing can be told live from stale then).
async fn reap_docker_workspaces(settings: &nodetool_config::Settings) -> Option<usize> {
    let cfg = nodetool_workers::docker::config::DockerConfig::for_runtime(settings).ok()?;
    if !cfg.workspace_root.exists() {
        return Some(0);
    }
    let strategy = tokio::time::timeout(
        Duration::from_secs(5),
        nodetool_workers::docker::DockerStrategy::connect(cfg),
    )
    .await
    .ok()?
    .ok()?;
    match strategy
        .reap_workspaces(nodetool_workers::docker::STALE_WORKSPACE)
        .await
    {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not reap stale Docker job workspaces");
            None
        }
    }
}
