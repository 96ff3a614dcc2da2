//! `rollout-host`: serve the edge component on a local port, as Spin would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Parser;
use rollout_host::{AllowList, COMPONENT_PATH, Edge, KvBackend, MemoryKv, Runtime, SqliteKv};

/// Run the rollout edge component locally: wasi:http on a TCP port, Spin's
/// key-value store and variables, outbound HTTP to allowed origins only.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The component to run.
    #[arg(long, default_value = COMPONENT_PATH)]
    component: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "ROLLOUT_HOST_LISTEN")]
    listen: SocketAddr,
    /// SQLite file for the key-value store; without it the store is in memory
    /// and a restart forgets the applied config.
    #[arg(long, env = "ROLLOUT_HOST_STORE")]
    store: Option<PathBuf>,
    /// A Spin variable, NAME=VALUE (repeatable). SPIN_VARIABLE_NAME=VALUE in
    /// the environment works too, as with Spin.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// An origin outbound requests may go to, scheme://host:port, or * for any (repeatable).
    #[arg(long = "allow-outbound", value_name = "ORIGIN")]
    allow_outbound: Vec<String>,
    /// One single-threaded runtime and SO_REUSEPORT listener per core,
    /// instead of one runtime shared by all cores: more requests per second
    /// under load, more latency per request when idle (see BENCHMARKS.md).
    #[arg(long)]
    per_core: bool,
}

fn variables(args: &Args) -> anyhow::Result<HashMap<String, String>> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase(), v)))
        .collect();
    for var in &args.vars {
        let Some((name, value)) = var.split_once('=') else {
            bail!("--var {var:?} must be NAME=VALUE");
        };
        vars.insert(name.trim().to_ascii_lowercase(), value.to_owned());
    }
    Ok(vars)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let variables = variables(&args)?;
    let allow = AllowList::new(&args.allow_outbound)?;
    let kv: Arc<dyn KvBackend> = match &args.store {
        Some(path) => Arc::new(SqliteKv::open(path)?),
        None => Arc::new(MemoryKv::default()),
    };
    let runtime = Arc::new(Runtime::load(&args.component)?);
    let edge = Arc::new(Edge {
        kv,
        variables,
        allow,
    });
    if args.per_core {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let addr = rollout_host::serve_per_core(runtime, edge, args.listen, threads)?;
        tracing::info!("serving on {threads} threads, one runtime and listener each");
        println!("rollout-host listening on http://{addr}");
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return Ok(signals.block_on(tokio::signal::ctrl_c())?);
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!(
            "rollout-host listening on http://{}",
            listener.local_addr()?
        );
        tokio::select! {
            served = rollout_host::serve(runtime, edge, listener) => served,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
