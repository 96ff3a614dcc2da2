//! `rollout-host`: serve the edge component on a local port, as Spin would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use rollout_host::{
    AllowList, COMPONENT_PATH, Edge, KvBackend, Limits, MemoryKv, Metrics, Runtime, SqliteKv,
};
use tokio::net::TcpListener;

// Every request allocates many small, short-lived objects (headers, wasi:http
// resources, futures); mimalloc serves them from per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// An environment variable the component sees, NAME=VALUE (repeatable);
    /// the component sees no other (the edge component reads none: it takes
    /// Spin variables).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// An origin outbound requests may go to, scheme://host:port, or * for any (repeatable).
    #[arg(long = "allow-outbound", value_name = "ORIGIN")]
    allow_outbound: Vec<String>,
    /// Serving threads. Each runs its own single-threaded runtime and
    /// SO_REUSEPORT listener, so a request, its origin connection and its
    /// body streams stay on one thread. Default: one per core.
    #[arg(long, value_name = "N", conflicts_with = "shared_runtime")]
    threads: Option<std::num::NonZeroUsize>,
    /// Serve with one work-stealing runtime shared by all cores instead:
    /// connections are not tied to a thread, but every request wakes
    /// threads across cores, which costs latency and about a third of the
    /// throughput (see BENCHMARKS.md).
    #[arg(long)]
    shared_runtime: bool,
    /// One runtime per core is the default now; kept so that existing
    /// command lines still start.
    #[arg(long, hide = true, conflicts_with = "shared_runtime")]
    per_core: bool,
    /// Address for a second listener that serves Prometheus metrics at
    /// GET /metrics; without it no metrics are kept.
    #[arg(long, value_name = "ADDR", env = "ROLLOUT_HOST_METRICS")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What keeps the edge answering under slow or numerous clients (see
/// docs/edge.md, "Slow clients and limits"). The defaults are
/// `rollout_host::Limits::default()`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Component instances in flight at once (the pool holds 256); past
    /// it, requests get 503 with retry-after.
    #[arg(long, value_name = "N", default_value_t = 240)]
    max_instances: usize,
    /// Of --max-instances, how many only requests to the admin endpoint
    /// whose body was read whole (see --buffer-body-bytes) may take, so that
    /// pushes and rollbacks always land.
    #[arg(long, value_name = "N", default_value_t = 8)]
    admin_reserved: usize,
    /// Client connections served at once; past it, a connection gets 503
    /// with retry-after and connection: close (or, far past it, is closed).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// Time to deliver a request head, from when the connection starts
    /// waiting for one; also how long a kept-alive connection may idle.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Longest wait for the next part of a request body: 408 if nothing
    /// went to an origin yet, else the connection is cut.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// Largest request head (request line and headers); larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024)]
    max_header_bytes: usize,
    /// Bodies up to this size are read whole before an instance is taken.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    buffer_body_bytes: usize,
    /// The retry-after of every 503 from these limits (whole seconds).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    retry_after: Duration,
    /// Longest wait for the next part of an origin's response body; past
    /// it the client's response is cut and the instance freed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    origin_body_timeout: Duration,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_instances: self.max_instances,
            admin_reserved: self.admin_reserved,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            max_header_bytes: self.max_header_bytes,
            buffer_body_bytes: self.buffer_body_bytes,
            retry_after: self.retry_after,
            origin_body_timeout: self.origin_body_timeout,
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every client
/// connection, and every connection to an origin, is one. Warns when the
/// connection cap cannot be reached under it.
fn raise_open_files(limits: &Limits) {
    let files = rollout_host::raise_open_file_limit();
    // A served connection, an origin connection per instance, and a margin
    // for listeners, the store and the refused connections.
    let needed = limits
        .max_connections
        .saturating_add(limits.max_instances)
        .saturating_add(256);
    if files < needed as u64 {
        tracing::warn!(
            "the open-file limit is {files}: under load, connections fail before the \
             --max-connections cap of {} is reached",
            limits.max_connections
        );
    }
}

fn environment(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    args.env
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => bail!("--env {pair:?} must be NAME=VALUE"),
        })
        .collect()
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
    let limits = args.limits.limits();
    raise_open_files(&limits);
    let variables = variables(&args)?;
    let allow = AllowList::new(&args.allow_outbound)?;
    let kv: Arc<dyn KvBackend> = match &args.store {
        Some(path) => Arc::new(SqliteKv::open(path)?),
        None => Arc::new(MemoryKv::default()),
    };
    let runtime = Arc::new(Runtime::load(&args.component)?.with_env(environment(&args)?));
    let edge = Arc::new(Edge {
        kv,
        variables,
        allow,
    });
    if args.per_core {
        tracing::info!("--per-core is the default now; the flag changes nothing");
    }
    if !args.shared_runtime {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = args.threads.map_or(cores, |n| n.get());
        // This thread waits for ctrl-c and answers scrapes; the per-core
        // threads serve traffic.
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let exporter = signals.block_on(bind_metrics(args.metrics))?;
        let metrics = exporter.as_ref().map(|(m, _)| m.clone());
        let addr = rollout_host::serve_per_core_with(
            runtime,
            edge,
            args.listen,
            threads,
            metrics,
            limits,
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
            served = rollout_host::serve_with(runtime, edge, listener, metrics, limits) => served,
            exported = export(exporter) => exported,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_flags_default_to_the_library_defaults() {
        let args = Args::parse_from(["rollout-host"]);
        assert_eq!(args.limits.limits(), Limits::default());
    }

    #[test]
    fn threads_default_to_one_runtime_per_core() {
        let args = Args::parse_from(["rollout-host"]);
        assert!(!args.shared_runtime);
        assert_eq!(args.threads, None);
        let args = Args::parse_from(["rollout-host", "--threads", "3"]);
        assert_eq!(args.threads.map(|n| n.get()), Some(3));
        assert!(Args::try_parse_from(["rollout-host", "--threads", "0"]).is_err());
        assert!(
            Args::try_parse_from(["rollout-host", "--threads", "2", "--shared-runtime"]).is_err()
        );
        // Old command lines still start.
        assert!(Args::try_parse_from(["rollout-host", "--per-core"]).is_ok());
    }

    #[test]
    fn limit_flags_take_durations_and_counts() {
        let args = Args::parse_from([
            "rollout-host",
            "--header-timeout",
            "500ms",
            "--body-timeout",
            "2s",
            "--max-instances",
            "16",
        ]);
        let limits = args.limits.limits();
        assert_eq!(limits.header_timeout, Duration::from_millis(500));
        assert_eq!(limits.body_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_instances, 16);
    }
}
