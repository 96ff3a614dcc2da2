//! `rollout`: the control service (`rollout serve`) and its CLI.
//!
//! This file is the command line's shape and its dispatch; each command,
//! with its rendering, lives in a module of `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollout_control::client::{Api, Fail, exit};

mod cmd;

use cmd::{Ctx, Output};

const EXIT_CODES: &str = "Exit codes: 0 done; 1 failed (network, server); 2 invalid usage or config; \
3 version conflict (someone changed it first: re-run); 4 unknown token or role not allowed; \
5 edges did not all ACK in time; 6 an edge refused (NACK); 7 no such version, edge, time or plan; \
8 the plan waited for was aborted or failed (it rolled back); 9 the stored history does not verify (audit --verify).";

/// Edge rollouts where rollback is one signed push: the control service and its CLI.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Cli {
    /// The control service.
    #[arg(
        long,
        global = true,
        env = "ROLLOUT_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// Bearer token for the control service.
    #[arg(long, global = true, env = "ROLLOUT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, each with its arguments and the function that runs it,
/// written once: the macro makes the enum and its dispatch from this list.
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident($args:ty) => $run:path;)*) => {
        #[derive(Debug, Subcommand)]
        enum Command {
            $($(#[$doc])* $variant($args),)*
        }

        impl Command {
            async fn run(self, ctx: &Ctx) -> Result<(), Fail> {
                match self {
                    $(Command::$variant(args) => $run(ctx, args).await,)*
                }
            }
        }
    };
}

commands! {
    /// Run the control service.
    Serve(cmd::serve::ServeArgs) => cmd::serve::run;
    /// Bring a store written by an older rollout to this one's schema.
    Migrate(cmd::serve::MigrateArgs) => cmd::serve::migrate;
    /// Make an Ed25519 key pair: the secret to a file (mode 0600), the public key printed.
    Keygen(cmd::keys::KeygenArgs) => cmd::keys::keygen;
    /// Push a config file as the next version.
    Push(cmd::write::PushArgs) => cmd::write::push;
    /// Take a break-glass version (the record `push --direct` wrote) into the history.
    Adopt(cmd::write::AdoptArgs) => cmd::write::adopt;
    /// Set a route's new weight, in percent.
    SetWeight(cmd::write::SetWeightArgs) => cmd::write::set_weight;
    /// Send every key of a route to new (weight 100 %).
    Promote(cmd::write::PromoteArgs) => cmd::write::promote;
    /// Set a flag's percentage, or toggle it fully on/off.
    Flag(cmd::write::FlagArgs) => cmd::write::flag;
    /// Restore an earlier config as a new, higher version.
    Rollback(cmd::write::RollbackArgs) => cmd::write::rollback;
    /// Show every edge: its version, ACK / NACK / STALE / UNREACHABLE, lag.
    Status(cmd::status::StatusArgs) => cmd::status::status;
    /// List versions, newest first.
    History(cmd::history::HistoryArgs) => cmd::history::history;
    /// Show what changed between two versions.
    Diff(cmd::history::DiffArgs) => cmd::history::diff;
    /// Check a config file offline, with the edges' rules.
    Validate(cmd::validate::ValidateArgs) => cmd::validate::validate;
    /// Which arm a key got, and why.
    Explain(cmd::explain::ExplainArgs) => cmd::explain::explain;
    /// Who did what, newest first; with --verify, check the stored history's hash chain offline.
    Audit(cmd::audit::AuditArgs) => cmd::audit::run;
    /// Register, list and remove edges.
    Edges(cmd::edges::EdgesArgs) => cmd::edges::edges;
    /// Plans: ramp a route step by step while checks watch its health.
    Plan(cmd::plan::PlanArgs) => cmd::plan::plan;
    /// Start a canary plan: each weight in turn, a probe check watching.
    Canary(cmd::plan::CanaryArgs) => cmd::plan::canary;
    /// Store, list and remove the check templates plans use by name.
    Template(cmd::plan::TemplateArgs) => cmd::plan::template;
    /// Run a local demo: control service, two edges, two origins, a canary (`--scenario` runs a plan).
    Up(cmd::up::UpArgs) => cmd::up::run;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let output = cli.output;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            if output == Output::Json && !fail.reported {
                let body = serde_json::json!({"error": fail.message, "exit_code": fail.code});
                println!("{body}");
            }
            eprintln!("error: {}", fail.message);
            ExitCode::from(fail.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Fail> {
    let ctx = Ctx {
        api: Api::new(&cli.url, cli.token.clone()),
        out: cli.output,
    };
    cli.command.run(&ctx).await
}
