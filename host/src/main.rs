//! `rollout-host`: serve the edge component on a local port, as Spin would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
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
    /// Serving threads, each with its own runtime and listener; 0: one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
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
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let addr = rollout_host::serve_per_core(runtime, edge, args.listen, threads)?;
    println!("rollout-host listening on http://{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
