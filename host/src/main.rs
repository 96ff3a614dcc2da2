//! `rollout-host`: serve the edge component on a local port, as Spin would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Parser;
use rollout_host::{
    AllowList, COMPONENT_PATH, Edge, KvBackend, MemoryKv, Metrics, Runtime, SqliteKv,
};
use tokio::net::TcpListener;

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
    /// Address for a second listener that serves Prometheus metrics at
    /// GET /metrics; without it no metrics are kept.
    #[arg(long, value_name = "ADDR", env = "ROLLOUT_HOST_METRICS")]
    metrics: Option<SocketAddr>,
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

/// The metrics listener, when `--metrics` asks for one. Bound before the edge
/// announces itself, so a bad address fails the start rather than leaving an
/// edge nobody can scrape.
async fn bind_metrics(
    addr: Option<SocketAddr>,
) -> anyhow::Result<Option<(Arc<Metrics>, TcpListener)>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(Some((Arc::new(Metrics::default()), listener)))
}

/// Serves metrics if asked to, else waits forever.
async fn export(exporter: Option<(Arc<Metrics>, TcpListener)>) -> anyhow::Result<()> {
    match exporter {
        Some((metrics, listener)) => rollout_host::serve_metrics(metrics, listener).await,
        None => std::future::pending().await,
    }
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
        // This thread waits for ctrl-c and answers scrapes; the per-core
        // threads serve traffic.
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let exporter = signals.block_on(bind_metrics(args.metrics))?;
        let metrics = exporter.as_ref().map(|(m, _)| m.clone());
        let addr = rollout_host::serve_per_core_with_metrics(
            runtime,
            edge,
            args.listen,
            threads,
            metrics,
        )?;
        tracing::info!("serving on {threads} threads, one runtime and listener each");
        println!("rollout-host listening on http://{addr}");
        return signals.block_on(async move {
            tokio::select! {
                exported = export(exporter) => exported,
                stop = tokio::signal::ctrl_c() => Ok(stop?),
            }
        });
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let exporter = bind_metrics(args.metrics).await?;
        let metrics = exporter.as_ref().map(|(m, _)| m.clone());
        println!(
            "rollout-host listening on http://{}",
            listener.local_addr()?
        );
        tokio::select! {
            served = rollout_host::serve_with_metrics(runtime, edge, listener, metrics) => served,
            exported = export(exporter) => exported,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
