//! `rollout up`: the whole system on one machine, for trying it out.
//!
//! A control service (state in a local directory), two demo origins that say
//! which version they are, two edges (`rollout-host` running the built
//! component, each with its own store), the edges registered, and a 10 %
//! canary pushed. Ctrl-C stops everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use rollout_api::{Change, CreateVersion, Version};
use rollout_control::client::{Api, Fail, exit};
use rollout_control::push::PushOptions;
use rollout_control::service::ServeOptions;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

/// Where the release build of the edge component lands.
const COMPONENT: &str = "target/wasm32-wasip2/release/rollout_router.wasm";

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Directory for the control store, the keys, the token and the edges' stores.
    #[arg(long, default_value = ".rollout-up")]
    dir: PathBuf,
    /// Control service port (0: any free port).
    #[arg(long, default_value_t = 7070)]
    control_port: u16,
    /// Edge ports, comma-separated (0: any free port).
    #[arg(long, value_delimiter = ',', default_values_t = [3001, 3002])]
    edge_ports: Vec<u16>,
    /// Ports of the old and new demo origins.
    #[arg(long, value_delimiter = ',', default_values_t = [8081, 8082])]
    origin_ports: Vec<u16>,
    /// The edge component; default: the workspace's release build.
    #[arg(long, env = "ROLLOUT_COMPONENT")]
    component: Option<PathBuf>,
    /// The rollout-host binary; default: next to this one, then on PATH.
    #[arg(long, env = "ROLLOUT_HOST_BIN")]
    host_bin: Option<PathBuf>,
    /// Canary weight of the first push, percent.
    #[arg(long, default_value_t = 10.0)]
    canary: f64,
}

fn find_component(given: Option<PathBuf>) -> Result<PathBuf, Fail> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut candidates = vec![PathBuf::from(COMPONENT)];
    // target/<profile>/rollout -> target/wasm32-wasip2/release/...
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.parent().and_then(Path::parent)
    {
        candidates.push(target.join("wasm32-wasip2/release/rollout_router.wasm"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Fail::new(
            exit::FAILED,
            "the edge component is not built: run scripts/up.sh, or \
             `cargo build --release --target wasm32-wasip2 -p rollout-router` first",
        )
    })
}

fn find_host(given: Option<PathBuf>) -> Result<PathBuf, Fail> {
    if let Some(p) = given {
        return Ok(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("rollout-host");
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("rollout-host"))
            .collect::<Vec<_>>()
    });
    on_path.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Fail::new(
            exit::FAILED,
            "rollout-host not found next to rollout or on PATH: run scripts/up.sh, or `cargo build -p rollout-host`",
        )
    })
}

/// A demo origin: answers every request naming itself and its version.
async fn origin(
    port: u16,
    arm: &'static str,
    version: &'static str,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port} for the {arm} origin"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let user = req
            .headers()
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        (
            [("x-origin", arm), ("x-app-version", version)],
            format!("hello from the {arm} origin, app version {version} (user {user})\n"),
        )
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// A running `rollout-host`.
struct EdgeProcess {
    child: tokio::process::Child,
    url: String,
}

async fn start_edge(
    host: &Path,
    component: &Path,
    port: u16,
    store: &Path,
    public_key: &str,
    old: &str,
    new: &str,
) -> anyhow::Result<EdgeProcess> {
    let mut child = tokio::process::Command::new(host)
        .arg("--component")
        .arg(component)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--store")
        .arg(store)
        .arg("--var")
        .arg(format!("public_key={public_key}"))
        .arg("--var")
        .arg(format!("old_origin={old}"))
        .args(["--allow-outbound", old, "--allow-outbound", new])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", host.display()))?;
    let stdout = child.stdout.take().context("edge stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // It prints its address once it listens (compiling the component first).
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .context("the edge did not start within 120 s")??
        .context("the edge exited before listening")?;
    let url = line
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("unexpected first line from rollout-host: {line}"))?
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(EdgeProcess { child, url })
}

/// Whether `exe` is what `rollout` on PATH runs.
fn on_path(exe: &Path) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| exe.parent() == Some(d.as_path())))
}

fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, Fail>,
) -> Result<String, Fail> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(_) => {
            let text = make()?;
            super::keys::write_secret(path, &format!("{text}\n"), false)?;
            Ok(text)
        }
    }
}

pub(crate) async fn run(_: &super::Ctx, args: UpArgs) -> Result<(), Fail> {
    if args.edge_ports.is_empty() || args.origin_ports.len() != 2 {
        return Err(Fail::new(
            exit::INVALID,
            "give at least one edge port and exactly two origin ports",
        ));
    }
    let component = find_component(args.component)?;
    let host = find_host(args.host_bin)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir).context("state directory")?;

    let key_text = read_or_create(&dir.join("control.key"), || {
        Ok(super::keys::new_key()?.to_text())
    })?;
    let key: rollout_core::SecretKey = key_text
        .parse()
        .map_err(|e| Fail::new(exit::FAILED, format!("control.key: {e}")))?;
    let token = read_or_create(&dir.join("admin.token"), || {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| Fail::new(exit::FAILED, format!("no randomness: {e}")))?;
        Ok(hex::encode(bytes))
    })?;
    let tokens = rollout_control::auth::Tokens::parse(&format!("admin local {token}"))
        .map_err(|e| Fail::new(exit::FAILED, e))?;
    let public_key = key.public_key().to_string();

    let (old_addr, old_task) = origin(args.origin_ports[0], "old", "v1").await?;
    let (new_addr, new_task) = origin(args.origin_ports[1], "new", "v2").await?;
    let (old, new) = (format!("http://{old_addr}"), format!("http://{new_addr}"));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.control_port))
        .await
        .with_context(|| {
            format!(
                "binding 127.0.0.1:{} for the control service",
                args.control_port
            )
        })?;
    let control_url = format!(
        "http://{}",
        listener.local_addr().context("control address")?
    );
    let app = rollout_control::service::open(ServeOptions {
        db: dir.join("control.sqlite"),
        listen: listener.local_addr().context("control address")?,
        key,
        tokens,
        push: PushOptions::default(),
        unreachable_after: Duration::from_secs(30),
        webhooks: Vec::new(),
        webhook_secret: None,
    })?;
    let control = tokio::spawn(rollout_control::service::serve_on(app, listener));

    let mut edges = Vec::new();
    for (i, port) in args.edge_ports.iter().enumerate() {
        let store = dir.join(format!("edge-{}.sqlite", i + 1));
        edges.push(start_edge(&host, &component, *port, &store, &public_key, &old, &new).await?);
    }

    let api = Api::new(&control_url, Some(token.clone()));
    for e in &edges {
        api.add_edge(&e.url).await?;
    }
    if api.current_version().await?.is_none() {
        let config = json!({
            "schema": 1,
            "debug_headers": true,
            "routes": [{
                "id": "web", "old": old, "new": new, "new_weight": args.canary,
                "key": ["header:x-user-id", "cookie:rollout_id"], "assign_cookie": true,
            }]
        });
        let doc = serde_json::from_value(config)
            .map_err(|e| Fail::new(exit::FAILED, format!("demo config: {e}")))?;
        let req = CreateVersion {
            expected_version: Version::NONE,
            reason: "rollout up: first canary".parse().ok(),
            change: Change::Config(doc),
        };
        api.create(&req).await?;
    }
    // Wait for both edges to hold the committed version.
    let mut acked = false;
    for _ in 0..200 {
        if api.status().await?.converged_at(Version::new(1)) {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !acked {
        return Err(Fail::new(
            exit::TIMEOUT,
            "the edges did not acknowledge the config within 20 s",
        ));
    }

    let edge1 = &edges[0].url;
    println!("rollout up: ready");
    println!(
        "  control service  {control_url}   (state in {})",
        dir.display()
    );
    for (i, e) in edges.iter().enumerate() {
        println!("  edge {}           {}", i + 1, e.url);
    }
    println!("  origins          old {old}, new {new}");
    println!();
    println!("Try it (in another terminal):");
    println!("  export ROLLOUT_URL={control_url} ROLLOUT_TOKEN={token}");
    if let Some(bin) = std::env::current_exe().ok().filter(|exe| !on_path(exe)) {
        println!("  alias rollout={}", bin.display());
    }
    println!("  curl -i -H 'x-user-id: alice' {edge1}/        # x-rollout-arm says old or new");
    println!("  for i in $(seq 1 20); do curl -s -H \"x-user-id: user-$i\" {edge1}/; done");
    println!("  rollout status --wait                # every edge's version, ACK / NACK / STALE");
    println!("  rollout set-weight web 50 --wait     # ramp the canary");
    println!("  rollout promote web --wait           # everyone on new");
    println!("  rollout rollback --to 1 --wait       # back to the first canary, as a new version");
    println!("  rollout history; rollout explain --key alice");
    println!("Ctrl-C stops everything.");

    super::serve::stop_signal().await;
    println!("rollout up: stopping");
    for mut e in edges {
        let _ = e.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), e.child.wait()).await;
    }
    control.abort();
    old_task.abort();
    new_task.abort();
    println!("rollout up: stopped");
    Ok(())
}
