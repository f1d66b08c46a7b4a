//! `nodetool nodes`: the node types this build knows, their status and what enables the ones
//! that do not run here; `--markdown` prints `docs/nodes.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use nodetool_nodes::docs;

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Show one type in full (properties, outputs, what it needs).
    node_type: Option<String>,
    /// Print the whole table as Markdown (docs/nodes.md).
    #[arg(long)]
    markdown: bool,
    /// Folder of NodeTool workflows whose types the Markdown counts (the bundled examples).
    #[arg(long, value_name = "DIR")]
    examples: Option<PathBuf>,
}

pub fn run(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let registry = nodetool_nodes::registry();
    if args.markdown {
        let uses = match &args.examples {
            Some(dir) => docs::example_uses(dir)?,
            None => Default::default(),
        };
        print!("{}", docs::markdown(&registry, &uses));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(t) = args.node_type {
        let e = docs::entry(&registry, &t);
        println!("{}: {}", e.node_type, e.status.label());
        if let Some(target) = &e.alias_of {
            println!("  older name of {target}");
        }
        if let Some(spec) = &e.spec {
            for i in &spec.inputs {
                println!("  property {}: {}", i.name, i.type_name);
            }
            for o in &spec.outputs {
                println!("  output   {}: {}", o.name, o.type_name);
            }
        }
        if let Some(needs) = &e.needs {
            println!("  needs: {needs}");
        }
        return Ok(if e.status == docs::Status::Missing {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    for e in docs::entries(&registry) {
        match &e.alias_of {
            Some(target) => println!(
                "{:<60} {} (older name of {target})",
                e.node_type,
                e.status.label()
            ),
            None => println!("{:<60} {}", e.node_type, e.status.label()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
