//! Processes the benchmarks start (rollout-host, rollout serve, nginx) and
//! the small loopback origin they all proxy to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::Full;
use tokio::io::AsyncBufReadExt as _;

/// A loopback origin answering every request with a fixed 13-byte body.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The path an [`Origin`] answers with [`LARGE_BODY`] bytes; every other
/// path gets `hello, world\n`.
pub const LARGE_PATH: &str = "/large";

/// Bytes of an [`Origin`]'s large response: a page with its assets inline,
/// or a JSON listing.
pub const LARGE_BODY: usize = 64 * 1024;

impl Origin {
    /// Starts one; `name` is sent back in `x-origin`.
    pub async fn start(name: &'static str) -> anyhow::Result<Origin> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| async move {
                        let body = if req.uri().path() == LARGE_PATH {
                            Bytes::from_static(&[b'x'; LARGE_BODY])
                        } else {
                            Bytes::from_static(b"hello, world\n")
                        };
                        let mut resp = hyper::Response::new(Full::new(body));
                        resp.headers_mut()
                            .insert("x-origin", hyper::header::HeaderValue::from_static(name));
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Origin { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A child process, killed on drop.
#[derive(Debug)]
pub struct Child {
    /// Held so the process lives as long as this does.
    _process: tokio::process::Child,
    /// The address it said it listens on.
    pub addr: SocketAddr,
}

/// Starts `program args` and waits (up to 60 s) for a stdout line ending in
/// `http://ADDR`, as `rollout-host` and `rollout serve` print.
pub async fn spawn_listening(program: &Path, args: &[String]) -> anyhow::Result<Child> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .with_context(|| format!("{} printed no address within 60 s", program.display()))??
        .with_context(|| format!("{} exited before listening", program.display()))?;
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("{} printed {line:?}, not an address", program.display()))?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Child {
        _process: child,
        addr,
    })
}

/// A binary built next to this one (same profile directory).
pub fn sibling(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it first (scripts/bench.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// Polls `url` until it answers 200; the time that took.
pub async fn until_ok(
    client: &reqwest::Client,
    url: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status() == 200
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("{url} did not answer 200 within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `$TMPDIR/rollout-bench-NAME-PID`.
    pub fn new(name: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("rollout-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
