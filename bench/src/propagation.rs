//! Rollback propagation: edges on loopback (one process, one component
//! instance per request, each edge with its own SQLite store) registered
//! with one `rollout serve`; pushes timed from the API call to the last ACK
//! and until a request through every edge shows the new version. Then the
//! same with some edges down, and the time to reconcile them once back.
//! Last, push time by fleet size: a control service of its own for each
//! fleet (10 and 100 rollout-host edges running the component; 100 and
//! 1 000 native edges running core's push rule without Wasm, see [`native`]).

mod native;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use rollout_host::{AllowList, Edge, KvBackend, MemoryKv, RunningEdge, Runtime, SqliteKv};
use serde_json::{Value, json};

use crate::procs::{Child, Origin, Scratch, spawn_listening};
use crate::report::Row;
use crate::stats::{Spread, secs, spread};

const SECTION: &str = "propagation";
const ADMIN: &str = "bench-admin-token-0001";
const DEPLOY: &str = "bench-deploy-token-0002";
/// How long any one push may take to land before the run fails.
const LIMIT: Duration = Duration::from_secs(60);

/// Sizes of the run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Edges registered with the control service.
    pub edges: usize,
    /// Pushes with every edge up.
    pub pushes: usize,
    /// Edges taken down at a time.
    pub down: usize,
    /// Down/up cycles (a different group of edges each time).
    pub cycles: usize,
    /// Pushes per cycle while the group is down.
    pub pushes_while_down: usize,
    /// Fleets timed for the fleet-size rows, each with its own control service.
    pub fleets: &'static [Fleet],
    /// Pushes timed per fleet.
    pub fleet_pushes: usize,
}

/// One fleet of the fleet-size rows.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    /// How many edges.
    pub edges: usize,
    /// Native edges ([`native::NativeEdge`]: core's push rule, no Wasm, an
    /// in-memory store) rather than rollout-host edges running the
    /// component with SQLite stores, as the rows above.
    pub native: bool,
}

impl Fleet {
    /// `edges` rollout-host edges running the component.
    pub const fn wasm(edges: usize) -> Fleet {
        Fleet {
            edges,
            native: false,
        }
    }

    /// `edges` native edges.
    pub const fn native(edges: usize) -> Fleet {
        Fleet {
            edges,
            native: true,
        }
    }
}

/// One edge: its store outlives the process serving it, as a restart would.
struct BenchEdge {
    addr: SocketAddr,
    kv: Arc<dyn KvBackend>,
    running: Option<RunningEdge>,
}

fn edge_setup(kv: Arc<dyn KvBackend>, old: &Origin, new: &Origin) -> anyhow::Result<Edge> {
    Ok(Edge {
        kv,
        variables: [
            (
                "public_key".to_owned(),
                rollout_tests::secret().public_key().to_string(),
            ),
            ("old_origin".to_owned(), old.url()),
        ]
        .into(),
        allow: AllowList::new(&[old.url(), new.url()])?,
    })
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

struct Control {
    _child: Child,
    url: String,
    http: reqwest::Client,
}

impl Control {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Control> {
        let key = dir.join("control.key");
        std::fs::write(&key, rollout_tests::secret().to_text())?;
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("admin ops {ADMIN}\ndeploy ci {DEPLOY}\n"))?;
        let args: Vec<String> = [
            "serve",
            "--db",
            &dir.join("control.sqlite").display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--key",
            &key.display().to_string(),
            "--tokens",
            &tokens.display().to_string(),
            // Verification GETs would move `last_contact`, which times the ACKs.
            "--verify-every",
            "1h",
        ]
        .map(str::to_owned)
        .into();
        let child = spawn_listening(bin, &args).await?;
        Ok(Control {
            url: format!("http://{}", child.addr),
            _child: child,
            http: rollout_tests::client(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("control {path}"))?;
        let status = resp.status();
        let json: Value = resp
            .json()
            .await
            .with_context(|| format!("control {path} reply"))?;
        if !status.is_success() {
            bail!("control {path}: {status} {json}");
        }
        Ok(json)
    }

    /// Commits a version; returns its number.
    async fn commit(&self, body: Value) -> anyhow::Result<u64> {
        let reply = self
            .call(reqwest::Method::POST, "/v1/versions", DEPLOY, Some(body))
            .await?;
        reply["version"]
            .as_u64()
            .context("commit reply has no version")
    }

    /// Waits until every edge in `urls` has ACKed `version`; then the
    /// latest of their ACK instants (ms since the epoch), and each one's.
    async fn acked(&self, urls: &[String], version: u64) -> anyhow::Result<(f64, Vec<f64>)> {
        let start = Instant::now();
        loop {
            let status = self
                .call(reqwest::Method::GET, "/v1/status", DEPLOY, None)
                .await?;
            let by_url: HashMap<&str, &Value> = status["edges"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| Some((e["url"].as_str()?.trim_end_matches('/'), e)))
                        .collect()
                })
                .unwrap_or_default();
            let mut times = Vec::with_capacity(urls.len());
            for url in urls {
                let Some(e) = by_url.get(url.as_str()) else {
                    bail!("edge {url} is not registered");
                };
                if e["acked_version"].as_u64().unwrap_or(0) < version {
                    break;
                }
                let contact = e["last_contact"]
                    .as_str()
                    .context("an ACKed edge has no last_contact")?;
                let at = humantime::parse_rfc3339(contact)
                    .with_context(|| format!("last_contact {contact:?}"))?;
                times.push(at.duration_since(UNIX_EPOCH)?.as_secs_f64() * 1e3);
            }
            if times.len() == urls.len() {
                let last = times.iter().copied().fold(f64::MIN, f64::max);
                return Ok((last, times));
            }
            if start.elapsed() > LIMIT {
                bail!("edges did not all ACK version {version} within {LIMIT:?}");
            }
            // Every 5 ms up to 100 edges; less often for more, so that
            // listing them all does not take the control service's time
            // from the fan-out it times (the figure comes from the ACK
            // times it recorded, not from when this loop sees them).
            let every = u64::try_from(urls.len() / 20).unwrap_or(u64::MAX).max(5);
            tokio::time::sleep(Duration::from_millis(every)).await;
        }
    }
}

/// Requests through every edge in `addrs` until each shows `version` (or a
/// later one) in `x-rollout-version`; the time from `since` to the last.
async fn probe(
    http: &reqwest::Client,
    addrs: &[SocketAddr],
    version: u64,
    since: Instant,
) -> anyhow::Result<Duration> {
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    let mut last = Duration::ZERO;
    while !pending.is_empty() {
        if since.elapsed() > LIMIT {
            bail!(
                "{} edges still serve an older version after {LIMIT:?}",
                pending.len()
            );
        }
        let seen: Vec<(SocketAddr, bool)> = futures_util::stream::iter(pending.iter().copied())
            .map(|addr| async move {
                let shown = match http
                    .get(format!("http://{addr}/"))
                    .header("x-user-id", "probe")
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let v = resp
                            .headers()
                            .get("x-rollout-version")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                        let _ = resp.bytes().await;
                        v
                    }
                    Err(_) => 0,
                };
                (addr, shown >= version)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let now = since.elapsed();
        for (addr, ok) in seen {
            if ok {
                last = last.max(now);
                pending.retain(|a| *a != addr);
            }
        }
    }
    Ok(last)
}

fn one_route(old: &Origin, new: &Origin, percent: f64) -> Value {
    json!({"schema": 1, "routes": [{"id": "web", "old": old.url(), "new": new.url(),
        "new_weight": percent, "key": ["header:x-user-id", "cookie:rollout_id"]}]})
}

/// [`one_route`] at `percent`, with a flag whose allow-list pads the
/// document to at least `target` bytes.
fn padded(old: &Origin, new: &Origin, percent: f64, target: usize) -> Value {
    let mut config = one_route(old, new, percent);
    let base = serde_json::to_vec(&config).map_or(0, |v| v.len()) + 64;
    // Each entry is `"user-0000001",`: 15 bytes.
    let entries = target.saturating_sub(base) / 15;
    let allow: Vec<String> = (0..entries).map(|i| format!("user-{i:07}")).collect();
    config["routes"][0]["flags"] = json!([{"name": "padded", "percent": 0, "allow": allow}]);
    config
}

/// The weights pushes alternate between: a ramp step and its rollback.
fn weight(i: usize) -> u32 {
    if i.is_multiple_of(2) { 10 } else { 0 }
}

struct Samples {
    ack: Vec<f64>,
    probe: Vec<f64>,
    api: Vec<f64>,
}

/// Pushes `count` set-weights, each timed to the last ACK and the last
/// probe over `up`; `version` is the current version and moves on.
async fn pushes(
    control: &Control,
    http: &reqwest::Client,
    up: &[SocketAddr],
    version: &mut u64,
    count: usize,
) -> anyhow::Result<Samples> {
    let urls: Vec<String> = up.iter().map(|a| format!("http://{a}")).collect();
    let mut s = Samples {
        ack: Vec::new(),
        probe: Vec::new(),
        api: Vec::new(),
    };
    for i in 0..count {
        let called = now_ms();
        let start = Instant::now();
        let v = control
            .commit(json!({"expected_version": *version, "reason": "bench",
                "patch": {"op": "set_weight", "route": "web", "percent": weight(i)}}))
            .await?;
        s.api.push(start.elapsed().as_secs_f64());
        *version = v;
        s.probe.push(probe(http, up, v, start).await?.as_secs_f64());
        let (last_ack, _) = control.acked(&urls, v).await?;
        s.ack.push((last_ack - called).max(0.0) / 1e3);
    }
    Ok(s)
}

/// Runs the section.
pub async fn run(
    runtime: &Arc<Runtime>,
    rollout_bin: &Path,
    plan: Plan,
) -> anyhow::Result<Vec<Row>> {
    if plan.down * plan.cycles > plan.edges {
        bail!(
            "cannot take {} groups of {} down among {} edges",
            plan.cycles,
            plan.down,
            plan.edges
        );
    }
    let scratch = Scratch::new("propagation")?;
    let (old, new) = (Origin::start("old").await?, Origin::start("new").await?);
    let mut edges = Vec::with_capacity(plan.edges);
    for i in 0..plan.edges {
        let kv: Arc<dyn KvBackend> =
            Arc::new(SqliteKv::open(&scratch.0.join(format!("edge-{i}.sqlite")))?);
        let running = RunningEdge::start(
            runtime.clone(),
            edge_setup(kv.clone(), &old, &new)?,
            "127.0.0.1:0".parse()?,
        )
        .await?;
        edges.push(BenchEdge {
            addr: running.addr,
            kv,
            running: Some(running),
        });
    }
    let control = Control::start(rollout_bin, &scratch.0).await?;
    for e in &edges {
        control
            .call(
                reqwest::Method::POST,
                "/v1/edges",
                ADMIN,
                Some(json!({"url": format!("http://{}", e.addr)})),
            )
            .await?;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()?;
    let all: Vec<SocketAddr> = edges.iter().map(|e| e.addr).collect();
    let mut version = control
        .commit(json!({"expected_version": 0, "reason": "bench start",
            "config": one_route(&old, &new, 0.0)}))
        .await?;
    probe(&http, &all, version, Instant::now()).await?;

    let mut rows = Vec::new();
    let n = plan.edges;
    let mut s = pushes(&control, &http, &all, &mut version, plan.pushes).await?;
    let ack = Spread::of(&mut s.ack).context("no pushes")?;
    let probed = Spread::of(&mut s.probe).context("no pushes")?;
    let api = Spread::of(&mut s.api).context("no pushes")?;
    rows.push(ack_row(
        format!("push to {n} edges: API call → last ACK ({} pushes)", ack.n),
        &ack,
    ));
    rows.push(Row::budget(
        SECTION,
        format!("push to {n} edges: API call → a request through every edge shows it"),
        spread(&probed),
        "well under 1 s (rollback)",
        probed.p99 < 1.0,
    ));
    rows.push(Row::info(
        SECTION,
        "the API call itself (validate, sign, commit with fsync)",
        spread(&api),
    ));

    // Push time by config size: the same route with a flag whose allow-list
    // pads the document to about 1 KiB, 64 KiB and 250 KiB (the limit is
    // 256 KiB); every push a whole config, weight alternating.
    for (label, target) in [
        ("1 KiB", 1024),
        ("64 KiB", 64 * 1024),
        ("250 KiB", 250 * 1024),
    ] {
        let mut ack = Vec::new();
        let mut probed = Vec::new();
        let urls: Vec<String> = all.iter().map(|a| format!("http://{a}")).collect();
        let mut size = 0;
        for i in 0..plan.pushes.clamp(2, 20) {
            let config = padded(&old, &new, f64::from(weight(i)), target);
            size = serde_json::to_vec(&config)?.len();
            let called = now_ms();
            let start = Instant::now();
            let v = control
                .commit(json!({"expected_version": version, "reason": "bench", "config": config}))
                .await?;
            version = v;
            probed.push(probe(&http, &all, v, start).await?.as_secs_f64());
            let (last_ack, _) = control.acked(&urls, v).await?;
            ack.push((last_ack - called).max(0.0) / 1e3);
        }
        let ack = Spread::of(&mut ack).context("no pushes")?;
        let probed = Spread::of(&mut probed).context("no pushes")?;
        rows.push(Row::info(
            SECTION,
            format!(
                "push of a {label} config ({size} bytes) to {n} edges: API call → last ACK ({} pushes)",
                ack.n
            ),
            spread(&ack),
        ));
        rows.push(Row::info(
            SECTION,
            format!("push of a {label} config to {n} edges: API call → a request through every edge shows it"),
            spread(&probed),
        ));
    }

    // Back to the small config, so the rows below time what they did before.
    version = control
        .commit(json!({"expected_version": version, "reason": "bench",
            "config": one_route(&old, &new, 0.0)}))
        .await?;
    probe(&http, &all, version, Instant::now()).await?;

    let up_count = n - plan.down;
    let mut while_down = Samples {
        ack: Vec::new(),
        probe: Vec::new(),
        api: Vec::new(),
    };
    let mut reconcile_ack = Vec::new();
    let mut reconcile_probe = Vec::new();
    for cycle in 0..plan.cycles {
        let group: Vec<usize> = (cycle * plan.down..(cycle + 1) * plan.down).collect();
        for &i in &group {
            edges[i].running = None;
        }
        // Let the aborted serve tasks close their listeners and connections.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let up: Vec<SocketAddr> = edges
            .iter()
            .enumerate()
            .filter(|(i, _)| !group.contains(i))
            .map(|(_, e)| e.addr)
            .collect();
        let mut s = pushes(&control, &http, &up, &mut version, plan.pushes_while_down).await?;
        while_down.ack.append(&mut s.ack);
        while_down.probe.append(&mut s.probe);

        let back = now_ms();
        let since = Instant::now();
        for &i in &group {
            let e = &mut edges[i];
            let kv = e.kv.clone();
            let make = || edge_setup(kv.clone(), &old, &new);
            e.running = Some(restart(runtime, make, e.addr).await?);
        }
        let addrs: Vec<SocketAddr> = group.iter().map(|&i| edges[i].addr).collect();
        reconcile_probe.push(probe(&http, &addrs, version, since).await?.as_secs_f64());
        let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
        let (_, each) = control.acked(&urls, version).await?;
        reconcile_ack.extend(each.iter().map(|t| (t - back).max(0.0) / 1e3));
    }
    if plan.cycles > 0 {
        let down = plan.down;
        let ack = Spread::of(&mut while_down.ack).context("no pushes")?;
        let probed = Spread::of(&mut while_down.probe).context("no pushes")?;
        rows.push(ack_row(
            format!(
                "{down} of {n} edges down: API call → last ACK of the other {up_count} ({} pushes)",
                ack.n
            ),
            &ack,
        ));
        rows.push(Row::info(
            SECTION,
            format!("{down} of {n} edges down: API call → a request through each of the other {up_count} shows it"),
            spread(&probed),
        ));
        let rack = Spread::of(&mut reconcile_ack).context("no edges")?;
        let rprobe = Spread::of(&mut reconcile_probe).context("no cycles")?;
        rows.push(Row::info(
            SECTION,
            format!(
                "reconcile: edge back up → its ACK of the current version ({} edges over {} cycles; control defaults: reconcile every 500 ms, failing edges back off up to 5 s)",
                rack.n, plan.cycles
            ),
            format!("{} · max {}", spread(&rack), secs(rack.max)),
        ));
        rows.push(Row::info(
            SECTION,
            format!("reconcile: edges back up → a request through all {down} shows the current version ({} cycles)", rprobe.n),
            spread(&rprobe),
        ));
    }
    // The fleets below have their own edges and control services.
    drop(control);
    drop(edges);
    for &fleet in plan.fleets {
        rows.push(fleet_row(runtime, rollout_bin, &old, &new, fleet, plan.fleet_pushes).await?);
    }
    Ok(rows)
}

/// `1 000` for 1000: the figures' own spelling.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Push time by fleet size: `fleet`'s edges registered with a control
/// service of their own (its defaults, as above: fan-out to every edge at
/// once), `pushes` set-weights each timed from the API call to the last
/// ACK. Nothing else runs meanwhile: no requests through the edges, so the
/// rows compare fleets, not probes.
async fn fleet_row(
    runtime: &Arc<Runtime>,
    rollout_bin: &Path,
    old: &Origin,
    new: &Origin,
    fleet: Fleet,
    pushes: usize,
) -> anyhow::Result<Row> {
    let n = fleet.edges;
    // Each edge is a listener and a connection from control in this
    // process, and a connection in control's (which inherits the limit).
    let files = rollout_host::raise_open_file_limit();
    let needed = 2 * n as u64 + 256;
    if files < needed {
        bail!("a fleet of {n} edges needs about {needed} open files; the limit is {files}");
    }
    let scratch = Scratch::new(&format!("fleet-{n}"))?;
    let public_key = rollout_tests::secret().public_key().to_string();
    let mut wasm = Vec::new();
    let mut natives = Vec::new();
    let mut addrs = Vec::with_capacity(n);
    for i in 0..n {
        if fleet.native {
            let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
            let edge = native::NativeEdge::start(kv, public_key.clone()).await?;
            addrs.push(edge.addr);
            natives.push(edge);
        } else {
            let kv: Arc<dyn KvBackend> =
                Arc::new(SqliteKv::open(&scratch.0.join(format!("edge-{i}.sqlite")))?);
            let running = RunningEdge::start(
                runtime.clone(),
                edge_setup(kv, old, new)?,
                "127.0.0.1:0".parse()?,
            )
            .await?;
            addrs.push(running.addr);
            wasm.push(running);
        }
    }
    let control = Control::start(rollout_bin, &scratch.0).await?;
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let added: Vec<anyhow::Result<Value>> = futures_util::stream::iter(&urls)
        .map(|url| {
            control.call(
                reqwest::Method::POST,
                "/v1/edges",
                ADMIN,
                Some(json!({"url": url})),
            )
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for a in added {
        a?;
    }
    let mut version = control
        .commit(json!({"expected_version": 0, "reason": "bench start",
            "config": one_route(old, new, 0.0)}))
        .await?;
    control.acked(&urls, version).await?;
    let mut ack = Vec::with_capacity(pushes);
    for i in 0..pushes {
        let called = now_ms();
        version = control
            .commit(json!({"expected_version": version, "reason": "bench",
                "patch": {"op": "set_weight", "route": "web", "percent": weight(i)}}))
            .await?;
        let (last_ack, _) = control.acked(&urls, version).await?;
        ack.push((last_ack - called).max(0.0) / 1e3);
    }
    let ack = Spread::of(&mut ack).context("no pushes")?;
    let edges = if fleet.native {
        format!(
            "{} native in-process edges (real push rule, no Wasm)",
            count(n)
        )
    } else {
        format!(
            "{} rollout-host edges (the component, SQLite stores)",
            count(n)
        )
    };
    Ok(Row::info(
        SECTION,
        format!(
            "fleet size: push to {edges}: API call → last ACK ({} pushes; control's fan-out as shipped: every edge at once)",
            ack.n
        ),
        spread(&ack),
    ))
}

/// DESIGN's budget for a push: every edge ACKed within 200 ms p50, 1 s p99.
fn ack_row(what: String, ack: &Spread) -> Row {
    Row::budget(
        SECTION,
        what,
        spread(ack),
        "≤ 200 ms p50, ≤ 1 s p99",
        ack.p50 <= 0.2 && ack.p99 <= 1.0,
    )
}

/// Serves the edge `make` builds on `addr` again, retrying while the old
/// socket lets go.
async fn restart(
    runtime: &Arc<Runtime>,
    make: impl Fn() -> anyhow::Result<Edge>,
    addr: SocketAddr,
) -> anyhow::Result<RunningEdge> {
    let start = Instant::now();
    loop {
        match RunningEdge::start(runtime.clone(), make()?, addr).await {
            Ok(r) => return Ok(r),
            Err(_) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.context(format!("restarting the edge on {addr}"))),
        }
    }
}
