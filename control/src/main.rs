//! `rollout`: the control service (`rollout serve`) and its CLI.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use rollout_control::auth::Tokens;
use rollout_control::client::{Api, Fail, exit};
use rollout_control::push::PushOptions;
use rollout_control::service::{ServeOptions, StatusView};
use rollout_core::edge::{ADMIN_PATH, AppliedReply, PushReply, PushStatus};
use rollout_core::{Config, ConfigDoc, Digest, EnvelopeDoc, SecretKey, decide_key};
use serde_json::{Value, json};

mod up;

const EXIT_CODES: &str = "Exit codes: 0 done; 1 failed (network, server); 2 invalid usage or config; \
3 version conflict (someone changed it first: re-run); 4 unknown token or role not allowed; \
5 edges did not all ACK in time; 6 an edge refused (NACK); 7 no such version, edge or time.";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct WaitArgs {
    /// Wait until every edge acknowledges the new version.
    #[arg(long)]
    wait: bool,
    /// How long to wait (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct WriteArgs {
    /// The version you expect to be current; default: whatever is current now.
    #[arg(long)]
    expected: Option<u64>,
    /// Why (recorded in the envelope and the audit log).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control service.
    Serve(ServeArgs),
    /// Make an Ed25519 key pair: the secret to a file (mode 0600), the public key printed.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = "rollout.key")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Push a config file as the next version.
    Push {
        /// The config document (JSON).
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
    },
    /// Set a route's new weight, in percent.
    SetWeight {
        /// Route id.
        route: String,
        /// Percentage of keys on new (0 to 100, up to 4 decimals).
        percent: f64,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Send every key of a route to new (weight 100 %).
    Promote {
        /// Route id.
        route: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Set a flag's percentage, or toggle it fully on/off.
    Flag {
        /// Route id.
        route: String,
        /// Flag name.
        flag: String,
        /// Percentage; without it the flag is toggled between 0 and 100.
        percent: Option<f64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Restore an earlier config as a new, higher version.
    Rollback {
        /// The version whose config to restore.
        #[arg(long, conflicts_with = "at", required_unless_present = "at")]
        to: Option<u64>,
        /// Restore the config that was live at this time (RFC 3339, or e.g. "10m ago").
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Show every edge: its version, ACK / NACK / STALE / UNREACHABLE, lag.
    Status {
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List versions, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only versions below this one (paging).
        #[arg(long)]
        before: Option<u64>,
    },
    /// Show what changed between two versions.
    Diff {
        /// A version number.
        a: u64,
        /// Another version number.
        b: u64,
    },
    /// Check a config file offline, with the edges' rules.
    Validate {
        /// The config document (JSON).
        file: PathBuf,
    },
    /// Which arm a key got, and why.
    Explain {
        /// The stickiness key (user id, cookie value...).
        #[arg(long)]
        key: String,
        /// Route id; default: the default route.
        #[arg(long)]
        route: Option<String>,
        /// Under the config live at this time (RFC 3339, or e.g. "1h ago"); default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Who did what, newest first.
    Audit,
    /// Register, list and remove edges.
    Edges {
        #[command(subcommand)]
        command: EdgesCommand,
    },
    /// Run a local demo: control service, two edges, two origins, a 10 % canary.
    Up(up::UpArgs),
}

#[derive(Debug, Subcommand)]
enum EdgesCommand {
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

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The SQLite file (created on first start).
    #[arg(long, env = "ROLLOUT_DB", default_value = "rollout-control.sqlite")]
    db: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ROLLOUT_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
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
            if output == Output::Json {
                println!("{}", json!({"error": fail.message, "exit_code": fail.code}));
            }
            eprintln!("error: {}", fail.message);
            ExitCode::from(fail.code)
        }
    }
}

fn logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), Fail> {
    let api = Api::new(&cli.url, cli.token.clone());
    let out = cli.output;
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keygen { out: path, force } => keygen(&path, force, out),
        Command::Push {
            file,
            write,
            direct,
            edge,
            key,
        } => {
            let doc = read_config(&file)?;
            if direct {
                let key = key.ok_or_else(|| Fail::new(exit::INVALID, "--direct needs --key"))?;
                return push_direct(&doc, &edge, &key, write.reason, out).await;
            }
            let config = serde_json::to_value(&doc).context("config")?;
            write_version(&api, out, write, |expected, reason| {
                json!({"expected_version": expected, "reason": reason, "config": config})
            })
            .await
        }
        Command::SetWeight {
            route,
            percent,
            write,
        } => {
            patch(
                &api,
                out,
                write,
                json!({"op": "set_weight", "route": route, "percent": percent}),
            )
            .await
        }
        Command::Promote { route, write } => {
            patch(
                &api,
                out,
                write,
                json!({"op": "set_weight", "route": route, "percent": 100.0}),
            )
            .await
        }
        Command::Flag {
            route,
            flag,
            percent,
            write,
        } => {
            let p = match percent {
                Some(percent) => {
                    json!({"op": "set_flag", "route": route, "flag": flag, "percent": percent})
                }
                None => json!({"op": "toggle_flag", "route": route, "flag": flag}),
            };
            patch(&api, out, write, p).await
        }
        Command::Rollback { to, at, write } => {
            let at = at.map(|t| rfc3339(&t)).transpose()?;
            let wait = write.wait;
            let expected = match write.expected {
                Some(e) => e,
                None => api.current_version().await?,
            };
            let body =
                json!({"expected_version": expected, "to": to, "at": at, "reason": write.reason});
            let v = api.post("/v1/rollback", &body).await?;
            announce(&v, out);
            finish_write(&api, &v, wait, out).await
        }
        Command::Status { wait } => status(&api, wait, out).await,
        Command::History { limit, before } => {
            let mut path = format!("/v1/versions?limit={limit}");
            if let Some(b) = before {
                path.push_str(&format!("&before={b}"));
            }
            let v = api.get(&path).await?;
            if out == Output::Json {
                println!("{v}");
            } else {
                println!(
                    "{:>7}  {:<24}  {:<12}  {:>10}  reason",
                    "version", "issued", "actor", "converged"
                );
                for e in v["versions"].as_array().into_iter().flatten() {
                    let conv = e["converged_ms"]
                        .as_f64()
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
                    println!(
                        "{:>7}  {:<24}  {:<12}  {:>10}  {}",
                        e["version"],
                        text(&e["issued_at"]),
                        text(&e["actor"]),
                        conv,
                        text(&e["reason"])
                    );
                }
                if let Some(n) = v["next_before"].as_u64() {
                    println!("(older: --before {n})");
                }
            }
            Ok(())
        }
        Command::Diff { a, b } => {
            let va = api.get(&format!("/v1/versions/{a}")).await?;
            let vb = api.get(&format!("/v1/versions/{b}")).await?;
            let mut changes = Vec::new();
            diff_json("", &va["config"], &vb["config"], &mut changes);
            if out == Output::Json {
                let list: Vec<Value> = changes
                    .iter()
                    .map(|(p, x, y)| json!({"path": p, "a": x, "b": y}))
                    .collect();
                println!("{}", json!({"a": a, "b": b, "changes": list}));
            } else if changes.is_empty() {
                println!("versions {a} and {b} hold the same config");
            } else {
                for (p, x, y) in changes {
                    println!("{p}: {} -> {}", show(&x), show(&y));
                }
            }
            Ok(())
        }
        Command::Validate { file } => {
            let doc = read_config(&file)?;
            if out == Output::Json {
                println!("{}", json!({"valid": true, "routes": doc.routes.len()}));
            } else {
                println!("{}: valid ({} routes)", file.display(), doc.routes.len());
            }
            Ok(())
        }
        Command::Audit => {
            let v = api.get("/v1/audit").await?;
            if out == Output::Json {
                println!("{v}");
            } else {
                for e in v["audit"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<12} {:<12} {}",
                        text(&e["at"]),
                        text(&e["actor"]),
                        text(&e["action"]),
                        text(&e["detail"])
                    );
                }
            }
            Ok(())
        }
        Command::Explain { key, route, at } => {
            explain(&api, &key, route.as_deref(), at.as_deref(), out).await
        }
        Command::Edges { command } => {
            let v = match command {
                EdgesCommand::Add { edge } => api.post("/v1/edges", &json!({"url": edge})).await?,
                EdgesCommand::List => api.get("/v1/edges").await?,
                EdgesCommand::Remove { edge } => {
                    let path = format!("/v1/edges?url={}", encode(&edge));
                    api.call(reqwest::Method::DELETE, &path, None).await?
                }
            };
            if out == Output::Json {
                println!("{v}");
            } else if let Some(list) = v["edges"].as_array() {
                for e in list {
                    println!("{}", text(e));
                }
            } else if v["removed"] == true {
                println!("removed {}", text(&v["url"]));
            } else if v["added"] == true {
                println!("added {}", text(&v["url"]));
            } else {
                println!("{} was already registered", text(&v["url"]));
            }
            Ok(())
        }
        Command::Up(args) => up::run(args).await,
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn show(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or_else(|| "(absent)".to_owned(), Value::to_string)
}

/// Leaf-level differences between two JSON values, by path.
fn diff_json(
    path: &str,
    a: &Value,
    b: &Value,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff_json(&p, l, r, out),
                    (l, r) => out.push((p, l.cloned(), r.cloned())),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(l), Some(r)) => diff_json(&p, l, r, out),
                    (l, r) => out.push((p, l.cloned(), r.cloned())),
                }
            }
        }
        (x, y) if x != y => out.push((path.to_owned(), Some(x.clone()), Some(y.clone()))),
        _ => {}
    }
}

/// A TIME argument as RFC 3339, so relative times mean the caller's now.
fn rfc3339(t: &str) -> Result<String, Fail> {
    let ms = rollout_control::time::parse_time(t).map_err(|e| Fail::new(exit::INVALID, e))?;
    Ok(rollout_control::time::format_ms(ms))
}

fn read_config(path: &Path) -> Result<ConfigDoc, Fail> {
    let bytes = std::fs::read(path)
        .map_err(|e| Fail::new(exit::INVALID, format!("reading {}: {e}", path.display())))?;
    // Core's rules, exactly as an edge applies them.
    Config::from_json(&bytes)
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", path.display())))
}

async fn serve(args: ServeArgs) -> Result<(), Fail> {
    logging();
    let key_text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading the signing key {}", args.key.display()))?;
    let key: SecretKey = key_text
        .parse()
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", args.key.display())))?;
    let token_text = match (&args.tokens, std::env::var("ROLLOUT_TOKENS")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading tokens {}", path.display()))?,
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
    let opts = ServeOptions {
        db: args.db,
        listen: args.listen,
        key,
        tokens,
        push: PushOptions {
            timeout: args.push_timeout,
            retries: args.push_retries,
            reconcile_every: args.reconcile_every,
            verify_every: args.verify_every,
            ..PushOptions::default()
        },
        unreachable_after: args.unreachable_after,
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

/// Writes a file only the owner can read, refusing to replace one unless `force`.
pub(crate) fn write_secret(path: &Path, contents: &str, force: bool) -> Result<(), Fail> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        Fail::new(
            exit::FAILED,
            format!(
                "writing {}: {e}{}",
                path.display(),
                if force { "" } else { " (--force replaces it)" }
            ),
        )
    })?;
    // An existing file keeps its mode on open; make sure it is private.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .context("chmod 600")?;
    f.write_all(contents.as_bytes())
        .context("writing the key")?;
    Ok(())
}

pub(crate) fn new_key() -> Result<SecretKey, Fail> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Fail::new(exit::FAILED, format!("no randomness: {e}")))?;
    Ok(SecretKey::from_seed(seed))
}

fn keygen(path: &Path, force: bool, out: Output) -> Result<(), Fail> {
    let key = new_key()?;
    write_secret(path, &format!("{}\n", key.to_text()), force)?;
    let public = key.public_key().to_string();
    if out == Output::Json {
        println!("{}", json!({"secret_key_file": path, "public_key": public}));
    } else {
        println!("{public}");
        eprintln!(
            "secret key written to {} (mode 0600); give the line above to every edge as its public_key variable",
            path.display()
        );
    }
    Ok(())
}

fn announce(v: &Value, out: Output) {
    if out == Output::Text {
        println!("version {} committed: {}", v["version"], text(&v["reason"]));
    }
}

async fn finish_write(api: &Api, v: &Value, wait: WaitArgs, out: Output) -> Result<(), Fail> {
    if wait.wait {
        let version = v["version"].as_u64().unwrap_or(0);
        let s = wait_for(api, version, wait.timeout, out).await;
        if out == Output::Json {
            println!("{}", json!({"version": v, "status": s.as_ref().ok()}));
        }
        s.map(|_| ())
    } else {
        if out == Output::Json {
            println!("{v}");
        }
        Ok(())
    }
}

async fn write_version(
    api: &Api,
    out: Output,
    write: WriteArgs,
    body: impl FnOnce(u64, Option<String>) -> Value,
) -> Result<(), Fail> {
    let expected = match write.expected {
        Some(e) => e,
        None => api.current_version().await?,
    };
    let v = api
        .post("/v1/versions", &body(expected, write.reason))
        .await?;
    announce(&v, out);
    finish_write(api, &v, write.wait, out).await
}

async fn patch(api: &Api, out: Output, write: WriteArgs, patch: Value) -> Result<(), Fail> {
    write_version(
        api,
        out,
        write,
        |expected, reason| json!({"expected_version": expected, "reason": reason, "patch": patch}),
    )
    .await
}

fn print_status(s: &StatusView) {
    let conv = s.converged_ms.map_or_else(
        || "not yet".to_owned(),
        |ms| format!("{ms:.1} ms after commit"),
    );
    println!(
        "committed version {} ({}), all edges ACKed: {conv}",
        s.version,
        s.issued_at.as_deref().unwrap_or("-")
    );
    println!(
        "{:<32} {:<12} {:>7} {:>4}  detail",
        "edge", "state", "version", "lag"
    );
    for e in &s.edges {
        let detail = match (&e.error, e.push_latency_ms) {
            (Some(err), _) => err.clone(),
            (None, Some(ms)) => format!("push {ms:.1} ms"),
            (None, None) => String::new(),
        };
        println!(
            "{:<32} {:<12} {:>7} {:>4}  {detail}",
            e.url, e.state, e.acked_version, e.lag
        );
    }
}

async fn fetch_status(api: &Api) -> Result<StatusView, Fail> {
    let v = api.get("/v1/status").await?;
    serde_json::from_value(v).map_err(|e| Fail::new(exit::FAILED, format!("status reply: {e}")))
}

async fn status(api: &Api, wait: WaitArgs, out: Output) -> Result<(), Fail> {
    if !wait.wait {
        let s = fetch_status(api).await?;
        if out == Output::Json {
            println!("{}", serde_json::to_string(&s).context("json")?);
        } else {
            print_status(&s);
        }
        return Ok(());
    }
    let s = wait_for(api, 0, wait.timeout, out).await;
    if out == Output::Json
        && let Ok(s) = &s
    {
        println!("{}", serde_json::to_string(s).context("json")?);
    }
    s.map(|_| ())
}

/// Polls status until every edge ACKs the committed version (at least
/// `min_version`), one NACKs it, or `timeout` passes. A progress bar shows on
/// a terminal.
async fn wait_for(
    api: &Api,
    min_version: u64,
    timeout: Duration,
    out: Output,
) -> Result<StatusView, Fail> {
    let deadline = Instant::now() + timeout;
    let bar = (out == Output::Text && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} version {msg} [{bar:30}] {pos}/{len} edges ACKed {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    loop {
        let s = fetch_status(api).await?;
        let acked = s.edges.iter().filter(|e| e.state == "ACK").count();
        if let Some(bar) = &bar {
            bar.set_length(s.edges.len() as u64);
            bar.set_position(acked as u64);
            bar.set_message(s.version.to_string());
        }
        let done = s.version >= min_version && acked == s.edges.len();
        let nack = s.edges.iter().find(|e| e.state == "NACK");
        if done || nack.is_some() || Instant::now() >= deadline {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if out == Output::Text {
                print_status(&s);
            }
            if let Some(e) = nack {
                return Err(Fail::new(
                    exit::NACK,
                    format!(
                        "{} refused version {}: {}",
                        e.url,
                        s.version,
                        e.error.as_deref().unwrap_or("")
                    ),
                ));
            }
            if !done {
                return Err(Fail::new(
                    exit::TIMEOUT,
                    format!(
                        "{acked} of {} edges ACKed version {} within {}",
                        s.edges.len(),
                        s.version,
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn explain(
    api: &Api,
    key: &str,
    route: Option<&str>,
    at: Option<&str>,
    out: Output,
) -> Result<(), Fail> {
    let v = match at {
        Some(t) => {
            api.get(&format!("/v1/at?time={}", encode(&rfc3339(t)?)))
                .await?
        }
        None => api.get("/v1/current").await?,
    };
    let bytes = serde_json::to_vec(&v["config"]).context("config")?;
    let config = Config::from_json(&bytes)
        .map_err(|e| Fail::new(exit::FAILED, format!("stored config: {e}")))?;
    let route = match route {
        Some(id) => config.route(id).ok_or_else(|| {
            Fail::new(
                exit::NOT_FOUND,
                format!("no route {id:?} in version {}", v["version"]),
            )
        })?,
        None => config
            .routes()
            .last()
            .ok_or_else(|| Fail::new(exit::FAILED, "config without routes"))?,
    };
    let d = decide_key(route, key);
    let weight = route.weight();
    let why = match d.bucket {
        Some(b) => format!(
            "bucket {} of 1000000 is {} the weight {} ppm ({} %)",
            b.get(),
            if d.arm == rollout_core::Arm::New {
                "below"
            } else {
                "not below"
            },
            u32::from(weight),
            weight.percent()
        ),
        None => "no key: old".to_owned(),
    };
    if out == Output::Json {
        println!(
            "{}",
            json!({
                "version": v["version"], "issued_at": v["issued_at"], "route": route.id(), "key": key,
                "salt": route.salt(), "bucket": d.bucket.map(|b| b.get()), "weight_ppm": u32::from(weight),
                "arm": d.arm.as_str(), "reason": d.reason.as_str(), "flags": d.flags, "why": why,
            })
        );
    } else {
        println!(
            "key {key:?} on route {} under version {} ({}): {}",
            route.id(),
            v["version"],
            text(&v["issued_at"]),
            d.arm
        );
        println!("  why: {why}; salt {:?}", route.salt());
        println!(
            "  flags on: {}",
            if d.flags.is_empty() {
                "none".to_owned()
            } else {
                d.flags.join(",")
            }
        );
        println!("  (an override header or cookie in a request can still force an arm)");
    }
    Ok(())
}

/// Break glass: sign locally and PUT straight to edges. The version is one
/// above the highest any edge holds; the control service, when back, numbers
/// its next version above it and so takes over again.
async fn push_direct(
    doc: &ConfigDoc,
    edges: &[String],
    key: &Path,
    reason: Option<String>,
    out: Output,
) -> Result<(), Fail> {
    let text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key: SecretKey = text
        .parse()
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", key.display())))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("http client")?;
    let mut top: Option<AppliedReply> = None;
    for edge in edges {
        let url = format!("{}{ADMIN_PATH}", edge.trim_end_matches('/'));
        let held: AppliedReply = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("asking {edge} what it holds"))?
            .json()
            .await
            .with_context(|| format!("{edge} reply"))?;
        if top.is_none_or(|t| held.version > t.version) {
            top = Some(held);
        }
    }
    let top = top.ok_or_else(|| Fail::new(exit::INVALID, "--direct needs at least one --edge"))?;
    let actor = std::env::var("USER").unwrap_or_else(|_| "operator".to_owned());
    let body = EnvelopeDoc {
        version: top.version + 1,
        parent: top.digest,
        issued_at: rollout_control::time::format_ms(rollout_control::store::now_ms()),
        actor: format!("break-glass:{actor}"),
        reason: reason.unwrap_or_else(|| "break-glass push".to_owned()),
        config: doc.clone(),
    }
    .to_body();
    let signature = key.sign(&body);
    let digest = Digest::of(&body).to_string();
    let mut results = Vec::new();
    let mut code = exit::OK;
    for edge in edges {
        let url = format!("{}{ADMIN_PATH}", edge.trim_end_matches('/'));
        let reply = http
            .put(&url)
            .header(rollout_core::SIGNATURE_HEADER, &signature)
            .body(body.clone())
            .send()
            .await;
        let (state, detail) = match reply {
            Ok(r) => match r.json::<PushReply>().await {
                Ok(p) if p.status == PushStatus::Ack => ("ACK", String::new()),
                Ok(p) => {
                    code = code.max(exit::NACK);
                    ("NACK", p.error.unwrap_or_default())
                }
                Err(e) => {
                    code = code.max(exit::FAILED);
                    ("FAILED", e.to_string())
                }
            },
            Err(e) => {
                code = code.max(exit::FAILED);
                ("UNREACHABLE", e.to_string())
            }
        };
        results.push(json!({"edge": edge, "state": state, "error": detail}));
        if out == Output::Text {
            println!("{edge:<32} {state:<12} {detail}");
        }
    }
    if out == Output::Json {
        println!(
            "{}",
            json!({"version": top.version + 1, "digest": digest, "edges": results})
        );
    } else {
        println!(
            "break-glass version {} ({digest}) signed locally",
            top.version + 1
        );
    }
    if code == exit::OK {
        Ok(())
    } else {
        Err(Fail::new(code, "not every edge took the break-glass push"))
    }
}
