//! `rollout validate`: a config file checked offline with the edges' rules.

use std::path::{Path, PathBuf};

use rollout_control::client::{Fail, exit};
use rollout_control::input::read_bounded;
use rollout_core::config::MAX_CONFIG_BYTES;
use rollout_core::{Config, ConfigDoc};
use serde::Serialize;

use super::{Ctx, Output, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// The config document (JSON); `-` reads stdin.
    file: PathBuf,
}

#[derive(Serialize)]
struct Valid {
    valid: bool,
    routes: usize,
}

pub(crate) async fn validate(ctx: &Ctx, args: ValidateArgs) -> Result<(), Fail> {
    let doc = read_config(&args.file)?;
    match ctx.out {
        Output::Json => print_json(&Valid {
            valid: true,
            routes: doc.routes.len(),
        }),
        Output::Text => {
            println!(
                "{}: valid ({} routes)",
                args.file.display(),
                doc.routes.len()
            );
            Ok(())
        }
    }
}

/// A config file (`-`: stdin), read up to core's size limit and checked
/// with core's rules, exactly as an edge applies them.
pub(crate) fn read_config(path: &Path) -> Result<ConfigDoc, Fail> {
    let invalid = |e: &dyn std::fmt::Display| Fail::new(exit::INVALID, e.to_string());
    let bytes = read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| invalid(&e))?;
    Config::from_json(&bytes).map_err(|e| invalid(&format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(&format!("{}: {e}", path.display())))
}
