//! The commands that make a version: `push`, `set-weight`, `promote`,
//! `flag`, `rollback`. Each sends the version it expects to be current,
//! prints what was committed and, with `--wait`, waits for every edge.

use std::path::PathBuf;

use rollout_api::{
    Change, CreateVersion, Reason, RollbackRequest, RollbackTarget, StatusView, Version,
    VersionView, shorten,
};
use rollout_control::client::{Fail, exit};
use rollout_core::config::Patch;
use serde::Serialize;

use super::{Ctx, Output, WaitArgs, print_json, rfc3339};

#[derive(Debug, clap::Args)]
pub(crate) struct WriteArgs {
    /// The version you expect to be current; default: whatever is current now.
    #[arg(long)]
    expected: Option<Version>,
    /// Why (recorded in the envelope and the audit log; at most 1024 bytes).
    #[arg(long)]
    reason: Option<Reason>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The config document (JSON); `-` reads stdin.
    file: PathBuf,
    #[command(flatten)]
    write: WriteArgs,
    /// Break glass: sign locally and push straight to edges, without the control service.
    #[arg(long, requires_all = ["edge", "key"])]
    direct: bool,
    /// An edge to push to with --direct (repeatable).
    #[arg(long)]
    edge: Vec<String>,
    /// The secret key file for --direct.
    #[arg(long)]
    key: Option<PathBuf>,
    /// With --direct: where to record the signed envelope, for `rollout
    /// adopt` once the control service is back (default
    /// `break-glass-v<VERSION>.json` in the current directory).
    #[arg(long, requires = "direct")]
    record: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AdoptArgs {
    /// The record `rollout push --direct` wrote.
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SetWeightArgs {
    /// Route id.
    route: String,
    /// Percentage of keys on new (0 to 100, up to 4 decimals).
    percent: f64,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PromoteArgs {
    /// Route id.
    route: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FlagArgs {
    /// Route id.
    route: String,
    /// Flag name.
    flag: String,
    /// Percentage; without it the flag is toggled between 0 and 100.
    percent: Option<f64>,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// The version whose config to restore.
    #[arg(long, conflicts_with = "at", required_unless_present = "at")]
    to: Option<Version>,
    /// Restore the config that was live at this time (RFC 3339, or e.g. "10m ago").
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    write: WriteArgs,
}

pub(crate) async fn push(ctx: &Ctx, args: PushArgs) -> Result<(), Fail> {
    let doc = super::validate::read_config(&args.file)?;
    if args.direct {
        let key = args
            .key
            .ok_or_else(|| Fail::new(exit::INVALID, "--direct needs --key"))?;
        return super::break_glass::push(
            ctx,
            &doc,
            &args.edge,
            &key,
            args.write.reason,
            args.record.as_deref(),
        )
        .await;
    }
    write(ctx, args.write, Change::Config(doc)).await
}

/// Largest break-glass record read: an envelope at its limit, escaped.
const MAX_RECORD_BYTES: usize = 4 * rollout_core::MAX_ENVELOPE_BYTES;

pub(crate) async fn adopt(ctx: &Ctx, args: AdoptArgs) -> Result<(), Fail> {
    let text = super::keys::read_text(&args.file, MAX_RECORD_BYTES)?;
    let req: rollout_api::AdoptRequest = serde_json::from_str(&text).map_err(|e| {
        Fail::new(
            exit::INVALID,
            format!("{}: not a break-glass record: {e}", args.file.display()),
        )
    })?;
    let view = ctx.api.adopt(&req).await?;
    match ctx.out {
        Output::Json => print_json(&view),
        Output::Text => {
            println!(
                "adopted version {} ({}) by {}: {}",
                view.version, view.digest, view.actor, view.reason
            );
            Ok(())
        }
    }
}

pub(crate) async fn set_weight(ctx: &Ctx, args: SetWeightArgs) -> Result<(), Fail> {
    let patch = Patch::SetWeight {
        route: args.route,
        percent: args.percent,
    };
    write(ctx, args.write, Change::Patch(patch)).await
}

pub(crate) async fn promote(ctx: &Ctx, args: PromoteArgs) -> Result<(), Fail> {
    let patch = Patch::SetWeight {
        route: args.route,
        percent: 100.0,
    };
    write(ctx, args.write, Change::Patch(patch)).await
}

pub(crate) async fn flag(ctx: &Ctx, args: FlagArgs) -> Result<(), Fail> {
    let patch = match args.percent {
        Some(percent) => Patch::SetFlag {
            route: args.route,
            flag: args.flag,
            percent,
        },
        None => Patch::ToggleFlag {
            route: args.route,
            flag: args.flag,
        },
    };
    write(ctx, args.write, Change::Patch(patch)).await
}

pub(crate) async fn rollback(ctx: &Ctx, args: RollbackArgs) -> Result<(), Fail> {
    let target = match (args.to, args.at) {
        (Some(v), _) => RollbackTarget::To(v),
        (None, Some(t)) => RollbackTarget::At(rfc3339(&t)?),
        (None, None) => return Err(Fail::new(exit::INVALID, "give --to or --at")),
    };
    let restored_at = target.clone();
    let req = RollbackRequest {
        expected_version: expected(ctx, args.write.expected).await?,
        target,
        reason: args.write.reason,
    };
    let version = ctx.api.rollback(&req).await?;
    if ctx.out == Output::Text {
        // The version whose config came back, for what its hooks recorded
        // (the data restore point that matches). The rollback is done: a
        // failed lookup only says so.
        let restored = match &restored_at {
            RollbackTarget::To(v) => ctx.api.version(*v).await,
            RollbackTarget::At(t) => ctx.api.at(t).await,
        };
        match restored {
            Ok(restored) => {
                println!(
                    "restoring the config of version {} ({}); traffic only: data is not rolled back",
                    restored.version, restored.issued_at
                );
                if restored.hooks.is_empty() {
                    println!(
                        "  no hook recorded anything for version {}",
                        restored.version
                    );
                } else {
                    println!("  its hook runs (restore points to recover data to, docs/data.md):");
                    super::history::print_hooks("    ", &restored.hooks);
                }
            }
            Err(e) => eprintln!(
                "warning: could not read the restored version's hook runs: {}",
                e.message
            ),
        }
    }
    finish(ctx, version, args.write.wait).await
}

/// The version the caller expects, or the current one.
async fn expected(ctx: &Ctx, given: Option<Version>) -> Result<Version, Fail> {
    match given {
        Some(v) => Ok(v),
        None => ctx.api.current_version().await,
    }
}

async fn write(ctx: &Ctx, args: WriteArgs, change: Change) -> Result<(), Fail> {
    let req = CreateVersion {
        expected_version: expected(ctx, args.expected).await?,
        reason: args.reason,
        change,
    };
    let version = ctx.api.create(&req).await?;
    finish(ctx, version, args.wait).await
}

#[derive(Serialize)]
struct Waited {
    version: VersionView,
    status: Option<StatusView>,
}

/// Says what was committed and, with `--wait`, waits for the edges.
async fn finish(ctx: &Ctx, version: VersionView, wait: WaitArgs) -> Result<(), Fail> {
    if ctx.out == Output::Text {
        println!(
            "version {} committed: {}",
            version.version,
            shorten(&version.reason, 200)
        );
    }
    if !wait.wait {
        return match ctx.out {
            Output::Json => print_json(&version),
            Output::Text => Ok(()),
        };
    }
    let waited = super::status::wait_for(ctx, version.version, wait.timeout).await;
    if ctx.out == Output::Json {
        print_json(&Waited {
            version,
            status: waited.as_ref().ok().cloned(),
        })?;
        return waited.map(drop).map_err(Fail::reported);
    }
    waited.map(drop)
}
