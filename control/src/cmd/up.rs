//! `rollout up`: the whole system on one machine, for trying it out.
//!
//! A control service (state in a local directory), two demo origins that say
//! which version they are, two edges (`rollout-host` running the built
//! component, each with its own store), the edges registered, and a 10 %
//! canary pushed. Ctrl-C stops everything.
//!
//! `--replicas N --db postgres://...` runs the control service as N
//! `rollout serve` processes on one PostgreSQL store instead, to try
//! failover: stop the leader and watch another replica take over.
//!
//! `--scenario bad-canary` / `good-canary` shows a plan at work instead: the
//! origins fail a share of requests (new 20 % and old 1 %, or both 1 %), the
//! first push is at 0 %, and a canary plan on route web (10, 50, 100 % with
//! 20 s between, the probe check in the background) rolls back or promotes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use rollout_api::{Change, CreateVersion, PlanQuery, PlanView, StartPlan, Version};
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
    /// Control service port (0: any free port); replicas take the ports
    /// after it.
    #[arg(long, default_value_t = 7070)]
    control_port: u16,
    /// Control service replicas: separate `rollout serve` processes on one
    /// store, one of them the leader (more than one needs --db postgres://...).
    #[arg(long, default_value_t = 1)]
    replicas: u16,
    /// The control store: a `postgres://` URL the replicas share; default,
    /// control.sqlite in --dir.
    #[arg(long)]
    db: Option<PathBuf>,
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
    #[arg(long, default_value_t = 10.0, conflicts_with = "scenario")]
    canary: f64,
    /// Show a canary plan at work: the origins fail a share of requests, the
    /// first push is at 0 % and a plan ramps route web, watched by a probe.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
}

/// What `rollout up --scenario` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// New fails 20 % of requests, old 1 %: the plan rolls back.
    BadCanary,
    /// Both fail 1 %: the plan promotes.
    GoodCanary,
}

impl Scenario {
    /// Percent of requests the old and the new origin answer with 500.
    fn failures(self) -> (u64, u64) {
        match self {
            Scenario::BadCanary => (1, 20),
            Scenario::GoodCanary => (1, 1),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::BadCanary => "bad-canary",
            Scenario::GoodCanary => "good-canary",
        }
    }
}

/// The weights a scenario's plan steps through, percent.
const SCENARIO_STEPS: [f64; 3] = [10.0, 50.0, 100.0];
/// Seconds each of its weights holds: long enough for the probe check's
/// two failing intervals to end a bad canary at its first step.
const SCENARIO_PAUSE_S: u64 = 20;

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

/// A demo origin: answers every request naming itself and its version,
/// except `fail_percent` of them, spread evenly, which get a 500.
async fn origin(
    port: u16,
    arm: &'static str,
    version: &'static str,
    fail_percent: u64,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port} for the {arm} origin"))?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        // Request n fails when (n+1)k/100 passes a whole number: k in every
        // 100, evenly spaced, so each probe interval sees the true share.
        let n = served.fetch_add(1, Ordering::Relaxed);
        let fails = (n + 1) * fail_percent / 100 > n * fail_percent / 100;
        let (status, body) = if fails {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the {arm} origin failed on purpose (rollout up --scenario)\n"),
            )
        } else {
            let user = req
                .headers()
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            (
                StatusCode::OK,
                format!("hello from the {arm} origin, app version {version} (user {user})\n"),
            )
        };
        async move {
            (
                status,
                [("x-origin", arm), ("x-app-version", version)],
                body,
            )
        }
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
    // It prints its address once it listens (compiling the component first).
    let url = listening_url(&mut child, Duration::from_secs(120), "the edge").await?;
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

/// The control service `rollout up` runs.
enum ControlService {
    /// In this process.
    InProcess(tokio::task::JoinHandle<anyhow::Result<()>>),
    /// `rollout serve` processes on one store.
    Replicas(Vec<Replica>),
}

/// A `rollout serve` replica.
struct Replica {
    name: String,
    child: tokio::process::Child,
    url: String,
}

/// Starts replica `name` of the control service on `db`, listening on `port`.
async fn start_replica(name: &str, db: &Path, port: u16, dir: &Path) -> anyhow::Result<Replica> {
    let exe = std::env::current_exe().context("finding the rollout binary")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        // In the environment, not the command line: the URL may hold a password.
        .env("ROLLOUT_DB", db)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--key")
        .arg(dir.join("control.key"))
        .arg("--tokens")
        .arg(dir.join("tokens"))
        .args(["--replica-id", name])
        .env("RUST_LOG", "warn")
        // The demo runs no hooks or webhooks of the caller's.
        .env_remove("ROLLOUT_HOOKS_FILE")
        .env_remove("ROLLOUT_WEBHOOKS")
        .env_remove("ROLLOUT_WEBHOOK_SECRET_FILE")
        .env_remove("ROLLOUT_REPLICA_ID")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting rollout serve")?;
    let what = format!("replica {name}");
    let url = listening_url(&mut child, Duration::from_secs(30), &what).await?;
    Ok(Replica {
        name: name.to_owned(),
        child,
        url,
    })
}

/// The URL a child we started (`what`) prints as the last word of its
/// first line once it listens, within `limit`; the rest of its output is
/// read on in the background so it never blocks on a full pipe.
async fn listening_url(
    child: &mut tokio::process::Child,
    limit: Duration,
    what: &str,
) -> anyhow::Result<String> {
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("{what}: no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(limit, lines.next_line())
        .await
        .with_context(|| format!("{what} did not start within {} s", limit.as_secs()))??
        .with_context(|| format!("{what} exited before listening"))?;
    let url = line
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("unexpected first line from {what}: {line}"))?
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(url)
}

pub(crate) async fn run(_: &super::Ctx, args: UpArgs) -> Result<(), Fail> {
    if args.edge_ports.is_empty() || args.origin_ports.len() != 2 {
        return Err(Fail::new(
            exit::INVALID,
            "give at least one edge port and exactly two origin ports",
        ));
    }
    let shared = args.db.as_deref().map(rollout_control::store::Location::of);
    if args.replicas == 0 || args.replicas > 9 {
        return Err(Fail::new(exit::INVALID, "--replicas: 1 to 9"));
    }
    if args.replicas > 1 && !matches!(shared, Some(rollout_control::store::Location::Postgres(_))) {
        return Err(Fail::new(
            exit::INVALID,
            "--replicas above 1 needs --db postgres://...: replicas share a PostgreSQL store",
        ));
    }
    let component = find_component(args.component)?;
    let host = find_host(args.host_bin)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir).context("state directory")?;

    let key_path = dir.join("control.key");
    read_or_create(&key_path, || Ok(super::keys::new_key()?.to_text()))?;
    let keys = rollout_control::keys::Keys::from_file(&key_path)
        .map_err(|e| Fail::new(exit::FAILED, format!("control.key: {e}")))?;
    let new_token = || {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| Fail::new(exit::FAILED, format!("no randomness: {e}")))?;
        Ok(hex::encode(bytes))
    };
    let token = read_or_create(&dir.join("admin.token"), new_token)?;
    // A read and a deploy token too, to try the dashboard with each role.
    let read_token = read_or_create(&dir.join("read.token"), new_token)?;
    let deploy_token = read_or_create(&dir.join("deploy.token"), new_token)?;
    let token_lines =
        format!("admin local {token}\nread viewer {read_token}\ndeploy deployer {deploy_token}\n");
    let tokens = rollout_control::auth::Tokens::parse(&token_lines)
        .map_err(|e| Fail::new(exit::FAILED, e))?;
    // Edges are deployed with every key the file holds; versions then
    // declare what they trust.
    let public_key = keys
        .current()
        .public_keys()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");

    let (old_fails, new_fails) = args.scenario.map_or((0, 0), Scenario::failures);
    let (old_addr, old_task) = origin(args.origin_ports[0], "old", "v1", old_fails).await?;
    let (new_addr, new_task) = origin(args.origin_ports[1], "new", "v2", new_fails).await?;
    let (old, new) = (format!("http://{old_addr}"), format!("http://{new_addr}"));

    let (control, control_url) = match &args.db {
        Some(db) => {
            super::keys::write_secret(&dir.join("tokens"), &token_lines, true)?;
            let mut replicas = Vec::new();
            for i in 0..args.replicas {
                let port = match args.control_port {
                    0 => 0,
                    p => p.saturating_add(i),
                };
                let name = format!("up-{}", i + 1);
                replicas.push(start_replica(&name, db, port, &dir).await?);
            }
            let url = replicas[0].url.clone();
            (ControlService::Replicas(replicas), url)
        }
        None => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.control_port))
                .await
                .with_context(|| {
                    format!(
                        "binding 127.0.0.1:{} for the control service",
                        args.control_port
                    )
                })?;
            let url = format!(
                "http://{}",
                listener.local_addr().context("control address")?
            );
            let app = rollout_control::service::open(ServeOptions {
                replica: None,
                lease_ttl: rollout_control::lease::DEFAULT_TTL,
                db: dir.join("control.sqlite"),
                listen: listener.local_addr().context("control address")?,
                keys,
                tokens,
                push: PushOptions::default(),
                unreachable_after: Duration::from_secs(30),
                webhooks: Vec::new(),
                webhook_secret: None,
                hooks: Default::default(),
            })?;
            let task = tokio::spawn(rollout_control::service::serve_on(app, listener));
            (ControlService::InProcess(task), url)
        }
    };

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
        // A scenario's plan does the ramping, from 0 %.
        let weight = if args.scenario.is_some() {
            0.0
        } else {
            args.canary
        };
        let config = json!({
            "schema": 1,
            "debug_headers": true,
            "routes": [{
                "id": "web", "old": old, "new": new, "new_weight": weight,
                "key": ["header:x-user-id", "cookie:rollout_id"], "assign_cookie": true,
            }]
        });
        let doc = serde_json::from_value(config)
            .map_err(|e| Fail::new(exit::FAILED, format!("demo config: {e}")))?;
        let req = CreateVersion {
            expected_version: Version::NONE,
            reason: match args.scenario {
                Some(s) => format!("rollout up --scenario {}: new at 0 %", s.name()),
                None => "rollout up: first canary".to_owned(),
            }
            .parse()
            .ok(),
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

    let scenario = match args.scenario {
        Some(s) => Some((s, start_scenario(&api, s).await?)),
        None => None,
    };

    let edge1 = &edges[0].url;
    println!("rollout up: ready");
    match &control {
        ControlService::InProcess(_) => println!(
            "  control service  {control_url}   (state in {})",
            dir.display()
        ),
        ControlService::Replicas(replicas) => {
            for r in replicas {
                println!(
                    "  control replica  {}   {} (pid {})",
                    r.url,
                    r.name,
                    r.child.id().unwrap_or(0)
                );
            }
            println!(
                "                   (store {}; `rollout status` names the leader: kill -STOP its \
                 pid, then ask another replica, `ROLLOUT_URL=<its url> rollout status`, to watch it \
                 take over; kill -CONT to wake it)",
                shared.as_ref().map(ToString::to_string).unwrap_or_default()
            );
        }
    }
    for (i, e) in edges.iter().enumerate() {
        println!("  edge {}           {}", i + 1, e.url);
    }
    println!(
        "  dashboard        {control_url}/   (sign in with a token from {}: admin.token, deploy.token or read.token)",
        dir.display()
    );
    let export = format!("  export ROLLOUT_URL={control_url} ROLLOUT_TOKEN={token}");
    let alias = std::env::current_exe()
        .ok()
        .filter(|exe| !on_path(exe))
        .map(|bin| format!("  alias rollout={}", bin.display()));
    if let Some((s, plan)) = scenario {
        println!(
            "  origins          old {old} (fails {old_fails} %), new {new} (fails {new_fails} %)"
        );
        println!();
        explain_scenario(s, plan.id);
        println!();
        println!("Watch it (in another terminal):");
        println!("{export}");
        if let Some(alias) = alias {
            println!("{alias}");
        }
        println!(
            "  rollout plan status web --watch      # phase, step, weight, the check's verdicts"
        );
        println!("  rollout plan events web              # each step and check failure, and why");
        println!("  rollout history                      # the versions the plan committed");
        println!("  curl -i -H 'x-user-id: alice' {edge1}/        # x-rollout-arm says old or new");
        if s == Scenario::BadCanary {
            println!("  rollout plan retry web --wait        # run the aborted plan again");
        }
        println!("Ctrl-C stops everything.");
        return stop(edges, control, [old_task, new_task]).await;
    }
    println!("  origins          old {old}, new {new}");
    println!();
    println!("Try it (in another terminal):");
    println!("{export}");
    if let Some(alias) = alias {
        println!("{alias}");
    }
    println!("  curl -i -H 'x-user-id: alice' {edge1}/        # x-rollout-arm says old or new");
    println!("  for i in $(seq 1 20); do curl -s -H \"x-user-id: user-$i\" {edge1}/; done");
    println!("  rollout status --wait                # every edge's version, ACK / NACK / STALE");
    println!("  rollout set-weight web 50 --wait     # ramp the canary");
    println!("  rollout promote web --wait           # everyone on new");
    println!("  rollout rollback --to 1 --wait       # back to the first canary, as a new version");
    println!("  rollout history; rollout explain --key alice");
    println!("Ctrl-C stops everything.");
    stop(edges, control, [old_task, new_task]).await
}

/// Waits for Ctrl-C, then stops the edges, the service and the origins.
async fn stop(
    edges: Vec<EdgeProcess>,
    control: ControlService,
    origins: [tokio::task::JoinHandle<()>; 2],
) -> Result<(), Fail> {
    super::serve::stop_signal().await;
    println!("rollout up: stopping");
    for mut e in edges {
        let _ = e.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), e.child.wait()).await;
    }
    match control {
        ControlService::InProcess(task) => task.abort(),
        ControlService::Replicas(replicas) => {
            for mut r in replicas {
                // SIGCONT first: a replica someone stopped to try failover
                // must be able to die.
                if let Some(pid) = r.child.id() {
                    let _ = std::process::Command::new("kill")
                        .args(["-s", "CONT", &pid.to_string()])
                        .status();
                }
                let _ = r.child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), r.child.wait()).await;
            }
        }
    }
    origins.iter().for_each(tokio::task::JoinHandle::abort);
    println!("rollout up: stopped");
    Ok(())
}

/// Starts the scenario's canary plan on route web, after aborting one an
/// earlier `rollout up` left running in the same state directory (the
/// service allows one running plan per route).
async fn start_scenario(api: &Api, scenario: Scenario) -> Result<PlanView, Fail> {
    let q = PlanQuery {
        route: Some("web".to_owned()),
        limit: Some(1),
    };
    if let Some(left) = api.plans(&q).await?.plans.into_iter().next()
        && !left.phase.is_terminal()
    {
        println!(
            "rollout up: aborting plan {} left running on route web by an earlier run",
            left.id
        );
        api.plan_command(left.id, "abort").await?;
    }
    let plan =
        super::plan::canary_doc(&SCENARIO_STEPS, &format!("{SCENARIO_PAUSE_S}s"), "/", None)?;
    api.start_plan(&StartPlan {
        route: "web".to_owned(),
        plan,
        reason: format!("rollout up --scenario {}", scenario.name())
            .parse()
            .ok(),
    })
    .await
}

/// What the scenario does and what to expect, for someone new to plans.
fn explain_scenario(scenario: Scenario, plan: i64) {
    use rollout_core::plan::defaults::{FAILURE_LIMIT, INTERVAL, MIN_SAMPLES};
    let (old_fails, new_fails) = scenario.failures();
    let steps = SCENARIO_STEPS.map(|w| format!("{w} %")).join(" -> ");
    let interval = INTERVAL.as_secs();
    println!(
        "Scenario {}: the new origin (v2) answers 500 to {new_fails} % of requests, the old one (v1) to {old_fails} %.",
        scenario.name()
    );
    println!("Plan {plan} on route web: {steps}, {SCENARIO_PAUSE_S} s between steps.");
    println!(
        "Its check \"errors\" probes / through the edges with each arm forced, at least {MIN_SAMPLES} requests"
    );
    println!(
        "an arm every {interval} s, and fails an interval when new's error share is higher than old's."
    );
    match scenario {
        Scenario::BadCanary => println!(
            "Expect: {FAILURE_LIMIT} failed intervals, then the plan aborts and route web goes back to 0 % on every\n\
             edge, about {} s after the plan started (phase aborted, reason \"check errors failed ...\").",
            interval * u64::from(FAILURE_LIMIT)
        ),
        Scenario::GoodCanary => println!(
            "Expect: the check passes and the plan promotes new to 100 % on every edge a little over\n\
             {} s after it started, once each weight has held (phase promoted).",
            (SCENARIO_STEPS.len() as u64 - 1) * SCENARIO_PAUSE_S
        ),
    }
}
