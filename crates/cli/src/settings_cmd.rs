//! `nodetool settings show`.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Every setting with its value, source and description.
    Show {
        /// Include secrets (masked unless --reveal).
        #[arg(long)]
        secrets: bool,
        /// Print secret values in full (implies --secrets).
        #[arg(long)]
        reveal: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: SettingsCommand) -> anyhow::Result<ExitCode> {
    let SettingsCommand::Show {
        secrets,
        reveal,
        json,
    } = command;
    let settings = crate::load_settings()?;
    let show_secrets = secrets || reveal;
    let rows: Vec<_> = settings
        .entries()
        .into_iter()
        .filter(|e| show_secrets || !e.secret)
        .map(|e| {
            let value = e.display_value(reveal);
            (e, value)
        })
        .collect();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(e, value)| {
                serde_json::json!({
                    "name": e.name,
                    "value": value,
                    "source": e.source.label(),
                    "path": e.source.path().map(|p| p.display().to_string()),
                    "secret": e.secret,
                    "description": e.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let name_w = rows.iter().map(|(e, _)| e.name.len()).max().unwrap_or(0);
    let value_w = rows
        .iter()
        .map(|(_, v)| v.as_deref().map_or(1, str::len).min(48))
        .max()
        .unwrap_or(0);
    println!(
        "{:name_w$}  {:value_w$}  {:13}  DESCRIPTION",
        "SETTING", "VALUE", "SOURCE"
    );
    for (e, value) in &rows {
        let value = value.as_deref().unwrap_or("-");
        println!(
            "{:name_w$}  {:value_w$}  {:13}  {}",
            e.name,
            value,
            e.source.label(),
            e.description
        );
    }
    println!(
        "\nconfig dir: {}{}",
        settings.config_dir().display(),
        if show_secrets {
            ""
        } else {
            " (secrets hidden; --secrets to list them masked)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
