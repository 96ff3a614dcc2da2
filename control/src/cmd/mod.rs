//! The `rollout` commands, each with its rendering, and what they share.

pub(crate) mod audit;
pub(crate) mod break_glass;
pub(crate) mod edges;
pub(crate) mod explain;
pub(crate) mod history;
pub(crate) mod keys;
pub(crate) mod plan;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod up;
pub(crate) mod validate;
pub(crate) mod write;

use std::time::Duration;

use clap::ValueEnum;
use rollout_control::client::{Api, Fail, exit};
use serde::Serialize;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// For people.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// What every client command gets.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The control API.
    pub api: Api,
    /// How to print.
    pub out: Output,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct WaitArgs {
    /// Wait until every edge acknowledges the new version.
    #[arg(long)]
    pub wait: bool,
    /// How long to wait (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), Fail> {
    let text = serde_json::to_string(value)
        .map_err(|e| Fail::new(exit::FAILED, format!("writing JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// A TIME argument as RFC 3339, so relative times mean the caller's now.
pub(crate) fn rfc3339(t: &str) -> Result<String, Fail> {
    let ms = rollout_control::time::parse_time(t).map_err(|e| Fail::new(exit::INVALID, e))?;
    Ok(rollout_control::time::format_ms(ms))
}
