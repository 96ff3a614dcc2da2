//! `rollout serve`: the control service, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rollout_control::auth::Tokens;
use rollout_control::client::{Fail, exit};
use rollout_control::events::Secret;
use rollout_control::hooks::HookSet;
use rollout_control::push::PushOptions;
use rollout_control::service::ServeOptions;

use rollout_control::keys::Keys;

use super::keys::read_text;

/// Largest token file read.
const MAX_TOKEN_FILE_BYTES: usize = 1024 * 1024;
/// Largest webhook secret file read.
const MAX_KEY_LIKE_BYTES: usize = 4096;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The store: a SQLite file (created on first start), or a PostgreSQL
    /// database, `postgres://user:password@host:port/dbname`, which any
    /// number of replicas share (docs/ha.md).
    #[arg(
        long,
        env = "ROLLOUT_DB",
        hide_env_values = true,
        default_value = "rollout-control.sqlite"
    )]
    db: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ROLLOUT_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// This replica's name, unique among the replicas on one store
    /// (`[A-Za-z0-9._:-]`; default: the host name and the listening port).
    #[arg(long, env = "ROLLOUT_REPLICA_ID")]
    replica_id: Option<String>,
    /// How long the leader lease lasts unless renewed: a dead leader's
    /// work moves to another replica after at most this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// The secret signing key file (see `rollout keygen`).
    #[arg(long, env = "ROLLOUT_KEY_FILE")]
    key: PathBuf,
    /// Token file: lines of `ROLE NAME TOKEN` (role read, deploy or admin;
    /// TOKEN may be `sha256:<hex>`). ROLLOUT_TOKENS may hold the same lines.
    #[arg(long, env = "ROLLOUT_TOKENS_FILE")]
    tokens: Option<PathBuf>,
    /// Time limit of one push to one edge.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    push_timeout: Duration,
    /// Retries of a push that got no answer.
    #[arg(long, default_value_t = 2)]
    push_retries: u32,
    /// How often edges that lag are pushed again.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    reconcile_every: Duration,
    /// How often edges that ACKed are asked whether they still hold the committed version.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    verify_every: Duration,
    /// How long an edge may go unanswered before it shows as UNREACHABLE rather than STALE.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    unreachable_after: Duration,
    /// A URL plan events are POSTed to (repeatable; ROLLOUT_WEBHOOKS: comma-separated).
    #[arg(long = "webhook", env = "ROLLOUT_WEBHOOKS", value_delimiter = ',')]
    webhooks: Vec<String>,
    /// File holding the webhook signing secret (`whsec_<base64>`, as Standard Webhooks).
    #[arg(long, env = "ROLLOUT_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Hooks file (JSON): commands or webhooks run after a version commits
    /// and when a plan starts, is promoted, aborted or fails (docs/data.md).
    #[arg(long, env = "ROLLOUT_HOOKS_FILE")]
    hooks: Option<PathBuf>,
}

fn logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) async fn run(_: &super::Ctx, args: ServeArgs) -> Result<(), Fail> {
    logging();
    let keys = Keys::from_file(&args.key)
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", args.key.display())))?;
    let token_text = match (&args.tokens, std::env::var("ROLLOUT_TOKENS")) {
        (Some(path), _) => read_text(path, MAX_TOKEN_FILE_BYTES)?,
        (None, Ok(text)) => text.replace(';', "\n"),
        (None, Err(_)) => {
            return Err(Fail::new(
                exit::INVALID,
                "give --tokens FILE or ROLLOUT_TOKENS",
            ));
        }
    };
    let tokens =
        Tokens::parse(&token_text).map_err(|e| Fail::new(exit::INVALID, format!("tokens: {e}")))?;
    for url in &args.webhooks {
        let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(Fail::new(
                exit::INVALID,
                format!("--webhook {url:?}: must be an http(s) URL"),
            ));
        }
    }
    let hooks = match &args.hooks {
        Some(path) => HookSet::from_file(path).map_err(|e| Fail::new(exit::INVALID, e))?,
        None => HookSet::default(),
    };
    let signed = args.webhooks.is_empty() && !hooks.has_urls();
    let webhook_secret = match (&args.webhook_secret_file, signed) {
        (Some(path), _) => Some(
            read_text(path, MAX_KEY_LIKE_BYTES)?
                .parse::<Secret>()
                .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", path.display())))?,
        ),
        (None, true) => None,
        (None, false) => {
            return Err(Fail::new(
                exit::INVALID,
                "--webhook and hooks with a url need --webhook-secret-file: their calls are signed",
            ));
        }
    };
    if args.lease_ttl < Duration::from_millis(200) || args.lease_ttl > Duration::from_secs(600) {
        return Err(Fail::new(
            exit::INVALID,
            "--lease-ttl: between 200ms and 10m",
        ));
    }
    if let Some(id) = &args.replica_id {
        rollout_control::lease::check_replica_id(id)
            .map_err(|e| Fail::new(exit::INVALID, format!("--replica-id {e}")))?;
    }
    let opts = ServeOptions {
        db: args.db,
        replica: args.replica_id,
        lease_ttl: args.lease_ttl,
        listen: args.listen,
        keys,
        tokens,
        push: PushOptions {
            timeout: args.push_timeout,
            retries: args.push_retries,
            reconcile_every: args.reconcile_every,
            verify_every: args.verify_every,
            ..PushOptions::default()
        },
        unreachable_after: args.unreachable_after,
        webhooks: args.webhooks,
        webhook_secret,
        hooks,
    };
    tokio::select! {
        served = rollout_control::service::serve(opts) => served.map_err(Fail::from),
        () = stop_signal() => Ok(()),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so a service manager's stop is
/// as clean as a person's.
pub(crate) async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The store `rollout serve` uses: its SQLite file or `postgres://`
    /// URL. Back it up first: a migration is one transaction, but an older
    /// rollout cannot open the result.
    #[arg(
        long,
        env = "ROLLOUT_DB",
        hide_env_values = true,
        default_value = "rollout-control.sqlite"
    )]
    db: PathBuf,
}

#[derive(serde::Serialize)]
struct MigrateReport {
    /// The store, without a password.
    db: String,
    from: i64,
    to: i64,
}

/// `rollout migrate`: bring a store written by an older rollout to this
/// one's schema, so `rollout serve` opens it.
pub(crate) async fn migrate(ctx: &super::Ctx, args: MigrateArgs) -> Result<(), Fail> {
    use rollout_control::store::{Location, NoStore, NotAStore, SchemaError};
    let shown = Location::of(&args.db).to_string();
    let done = rollout_control::store::migrate(&args.db).map_err(|e| {
        // What the file is (or is not) is the caller's to fix; a lock held
        // too long or an I/O error is not.
        let invalid = e.is::<NoStore>() || e.is::<NotAStore>() || e.is::<SchemaError>();
        let code = if invalid { exit::INVALID } else { exit::FAILED };
        Fail::new(code, format!("{e:#}"))
    })?;
    match ctx.out {
        super::Output::Json => super::print_json(&MigrateReport {
            db: shown.clone(),
            from: done.from,
            to: done.to,
        })?,
        super::Output::Text if done.from == done.to => {
            println!("{shown} is already at store schema {}", done.to);
        }
        super::Output::Text => println!(
            "{shown} migrated from store schema {} to {}",
            done.from, done.to
        ),
    }
    Ok(())
}
