//! `nodetool docker ...`: building the worker image the Docker strategy runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use nodetool_workers::docker::{self, image};

#[derive(Debug, clap::Subcommand)]
pub enum DockerCommand {
    /// Build the worker image (FROM scratch + this nodetool binary + its shared libraries)
    /// with the local Docker engine; no registry is needed.
    BuildImage {
        /// Image tag (never `latest`). Default: nodetool-worker:<version>-<binary hash>, also
        /// tagged nodetool-worker:<version> (the default DOCKER_IMAGE).
        #[arg(long)]
        tag: Option<String>,
        /// The binary to package (default: this nodetool).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Docker engine socket.
        #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
        socket: PathBuf,
        /// The image's default user (uid:gid; root is refused). Default: DOCKER_USER.
        #[arg(long)]
        user: Option<String>,
        /// Skip running `/nodetool --version` in the new image.
        #[arg(long)]
        no_verify: bool,
    },
}

pub async fn run(cmd: DockerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DockerCommand::BuildImage {
            tag,
            binary,
            socket,
            user,
            no_verify,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("cannot locate the nodetool binary")?,
            };
            let user = match user {
                Some(u) => u,
                None => {
                    let sources = nodetool_config::Sources::from_process()?;
                    nodetool_config::Settings::load(&sources)?.docker_user
                }
            };
            docker::config::check_user(&user)?;
            let tags = match tag {
                Some(t) => vec![t],
                None => vec![image::pinned_tag(&binary)?, image::default_image()],
            };
            let client = docker::connect_engine(&socket).await?;
            eprintln!("building {} from {}", tags.join(", "), binary.display());
            let built =
                image::build_image(&client, &binary, &tags, &user, &["worker".to_owned()]).await?;
            eprintln!(
                "packaged {} shared libraries ({} MiB context)",
                built.libraries.len(),
                built.context_bytes / (1024 * 1024)
            );
            if !no_verify {
                let out = image::run_binary(&client, &tags[0], &["--version"]).await?;
                eprintln!("verified: {}", out.trim());
            }
            for t in &built.tags {
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
