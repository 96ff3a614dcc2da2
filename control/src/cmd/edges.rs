//! `rollout edges add|list|remove`.

use rollout_control::client::Fail;

use super::{Ctx, Output, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct EdgesArgs {
    #[command(subcommand)]
    command: EdgesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum EdgesCommand {
    /// Register an edge by its base URL.
    Add {
        /// e.g. http://127.0.0.1:3000
        #[arg(value_name = "URL")]
        edge: String,
    },
    /// List registered edges.
    List,
    /// Forget an edge.
    Remove {
        /// Its base URL.
        #[arg(value_name = "URL")]
        edge: String,
    },
}

pub(crate) async fn edges(ctx: &Ctx, args: EdgesArgs) -> Result<(), Fail> {
    let json = ctx.out == Output::Json;
    match args.command {
        EdgesCommand::Add { edge } => {
            let added = ctx.api.add_edge(&edge).await?;
            if json {
                return print_json(&added);
            }
            if added.added {
                println!("added {}", added.url);
            } else {
                println!("{} was already registered", added.url);
            }
        }
        EdgesCommand::List => {
            let list = ctx.api.edges().await?;
            if json {
                return print_json(&list);
            }
            for url in &list.edges {
                println!("{url}");
            }
        }
        EdgesCommand::Remove { edge } => {
            let removed = ctx.api.remove_edge(&edge).await?;
            if json {
                return print_json(&removed);
            }
            println!("removed {}", removed.url);
        }
    }
    Ok(())
}
