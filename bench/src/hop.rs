//! The edge hop on loopback. The same wrk client, connection count and
//! keep-alive on every path, in interleaved rounds (every path once per
//! round, always in the same order):
//!
//! - straight to the origin;
//! - through nginx (`split_clients` + `proxy_pass`) and HAProxy (weighted
//!   servers, `balance hdr(x-user-id)` on a consistent hash);
//! - through rollout-host running the router, as it starts by default (a
//!   runtime per core) and with `--shared-runtime`;
//! - through rollout-host and through `wasmtime serve` running the
//!   pass-through component (`bench/passthrough`: pure wasi:http, no
//!   decision, no store), the floor any wasi:http host puts under the router;
//! - through `spin up` with the router and with the pass-through, when Spin
//!   is installed.
//!
//! Ratios between paths are taken per round, then summarised by their median
//! and spread over the rounds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::procs::{
    Child, LARGE_BODY, LARGE_PATH, Origin, Scratch, free_port, spawn_listening, until_ok,
};
use crate::report::Row;
use crate::stats::{percentile, secs};

const SECTION: &str = "hop";

/// Where the release build of the pass-through component lands, relative to
/// the workspace.
pub const PASSTHROUGH_PATH: &str = "target/wasm32-wasip2/release/rollout_passthrough.wasm";

/// Where `scripts/bench.sh` installs wasmtime-cli, relative to the workspace.
const LOCAL_WASMTIME: &str = "target/bench-tools/bin/wasmtime";

/// Client load and length of the runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The loads, each measured on every path. The latency budgets are
    /// judged at the first with small responses, the throughput budgets at
    /// the last with small responses.
    pub loads: Vec<Load>,
    /// Seconds per wrk run.
    pub seconds: u32,
    /// Rounds per load; in each, every path runs once, in the same order.
    pub rounds: usize,
    /// The paths to measure; empty for all. Direct always runs: every
    /// ratio is taken over it.
    pub only: Vec<Peer>,
}

/// One client load: wrk's threads and connections, and what the origin
/// answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// wrk threads.
    pub threads: u32,
    /// Connections, each kept alive.
    pub connections: u32,
    /// Whether the origin answers with [`LARGE_BODY`] bytes rather than a
    /// 13-byte body.
    pub large: bool,
}

impl Load {
    /// `threads` and `connections`, small responses.
    pub const fn small(threads: u32, connections: u32) -> Load {
        Load {
            threads,
            connections,
            large: false,
        }
    }

    /// `threads` and `connections`, responses of [`LARGE_BODY`] bytes.
    pub const fn large(threads: u32, connections: u32) -> Load {
        Load {
            threads,
            connections,
            large: true,
        }
    }

    fn target(&self) -> &'static str {
        if self.large { LARGE_PATH } else { "/" }
    }
}

impl Plan {
    /// The load the latency budgets are judged at: the first with small
    /// responses.
    fn latency_load(&self) -> Option<usize> {
        self.loads.iter().position(|l| !l.large)
    }

    /// The load the throughput budgets are judged at: the last with small
    /// responses.
    fn throughput_load(&self) -> Option<usize> {
        self.loads.iter().rposition(|l| !l.large)
    }

    fn wants(&self, peer: Peer) -> bool {
        peer == Peer::Direct || self.only.is_empty() || self.only.contains(&peer)
    }
}

/// What the section runs.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The release `rollout-host` binary.
    pub host_bin: PathBuf,
    /// The router component (release build).
    pub router: PathBuf,
    /// The pass-through component (release build).
    pub passthrough: PathBuf,
    /// `wasmtime` for `wasmtime serve`, when given (`--wasmtime`,
    /// `$WASMTIME`); else `target/bench-tools/bin/wasmtime`, else PATH.
    pub wasmtime: Option<PathBuf>,
    /// The project's Spin manifest, for `spin up` with the router (when
    /// `spin` is on PATH).
    pub spin_manifest: PathBuf,
    /// Another build to set beside rollout-host + router, measured in the
    /// same rounds: (rollout-host binary, router component). For measuring
    /// a change to the serving path against the build before it.
    pub baseline: Option<(PathBuf, PathBuf)>,
}

/// Every request gets its own stickiness key, so both arms see traffic.
const WRK_SCRIPT: &str = r#"local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, {["x-user-id"] = "user-" .. n})
end
"#;

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
}

fn wrk_latency(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = value.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return None,
    };
    Some(n * scale)
}

/// Reads wrk's `--latency` report; an error when it saw failed requests.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkRun> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = wrk_latency(v),
            ["99%", v] => p99 = wrk_latency(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                bail!("wrk got {n} responses that were not 2xx/3xx:\n{out}")
            }
            _ => {}
        }
        if line.trim_start().starts_with("Socket errors:") && line.contains("timeout") {
            let timeouts = line.rsplit("timeout").next().unwrap_or("").trim();
            if timeouts != "0" {
                bail!("wrk saw timeouts:\n{out}");
            }
        }
    }
    match (rps, p50, p99) {
        (Some(rps), Some(p50), Some(p99)) => Ok(WrkRun { rps, p50, p99 }),
        _ => bail!("could not read wrk's report:\n{out}"),
    }
}

async fn wrk(script: &Path, url: &str, load: Load, seconds: u32) -> anyhow::Result<WrkRun> {
    let Load {
        threads,
        connections,
        ..
    } = load;
    let out = tokio::process::Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .await
        .context("running wrk (scripts/bench.sh installs it with apt-get)")?;
    if !out.status.success() {
        bail!(
            "wrk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout)).with_context(|| format!("wrk against {url}"))
}

/// nginx in front of the same two origins: `split_clients` on the same key
/// and share, `proxy_pass` with kept-alive upstream connections.
fn nginx_conf(dir: &Path, port: u16, old: &Origin, new: &Origin) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream old {{ server {old}; keepalive 64; }}
  upstream new {{ server {new}; keepalive 64; }}
  split_clients "${{http_x_user_id}}" $arm {{ 10% new; * old; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://$arm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # Room for a 64 KiB response in memory (the default 8 x 4 KiB would
      # spill it to a temporary file).
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      add_header x-rollout-arm $arm;
    }}
  }}
}}
"#,
        old = old.addr,
        new = new.addr
    )
}

/// HAProxy in front of the same two origins: weighted servers (90 old, 10
/// new) picked by a consistent hash of `x-user-id`, so a key sticks to its
/// server; connections to the servers kept alive and shared (`http-reuse
/// always`). Two threads, as nginx has two workers.
fn haproxy_conf(port: u16, old: SocketAddr, new: SocketAddr) -> String {
    format!(
        r#"global
  nbthread 2
  maxconn 8192

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s

frontend edge
  bind 127.0.0.1:{port}
  default_backend origins

backend origins
  balance hdr(x-user-id)
  hash-type consistent
  http-reuse always
  http-response set-header x-rollout-arm %[srv_name]
  server old {old} weight 90
  server new {new} weight 10
"#
    )
}

/// rollout-host running `component` with `extra` flags; in-memory store, as
/// `rollout up` runs it.
async fn start_host(
    host_bin: &Path,
    component: &Path,
    extra: Vec<String>,
) -> anyhow::Result<Child> {
    let mut args = vec![
        "--component".to_owned(),
        component.display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(extra);
    spawn_listening(host_bin, &args).await
}

/// The router's flags: the benchmark's key, `old` as bootstrap, both origins
/// allowed.
fn router_flags(old: &Origin, new: &Origin, shared: bool) -> Vec<String> {
    let mut args = vec![
        "--var".to_owned(),
        format!("public_key={}", rollout_tests::secret().public_key()),
        "--var".to_owned(),
        format!("old_origin={}", old.url()),
        "--allow-outbound".to_owned(),
        old.url(),
        "--allow-outbound".to_owned(),
        new.url(),
    ];
    if shared {
        args.push("--shared-runtime".to_owned());
    }
    args
}

/// Applies a one-route config: `header:x-user-id` splits 10 % to new.
async fn apply_split(
    client: &reqwest::Client,
    edge: SocketAddr,
    old: &Origin,
    new: &Origin,
) -> anyhow::Result<()> {
    let config = serde_json::from_value(json!({
        "schema": 1,
        "routes": [{"id": "web", "old": old.url(), "new": new.url(), "new_weight": 10,
                    "key": ["header:x-user-id", "cookie:rollout_id"], "assign_cookie": true}]
    }))?;
    let (body, signature) = rollout_tests::envelope(1, config);
    let (status, reply) = rollout_tests::push(client, edge, body, &signature).await;
    if status != 200 {
        bail!("the edge refused the benchmark config: {status} {reply}");
    }
    Ok(())
}

/// nginx as a foreground master process, stopped (workers too) on drop.
struct Nginx {
    master: std::process::Child,
    prefix: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    fn start(prefix: &Path, conf: &Path) -> anyhow::Result<Nginx> {
        let master = std::process::Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            // Its workers would hold our pipes open; it logs to error.log.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (scripts/bench.sh installs it with apt-get)")?;
        Ok(Nginx {
            master,
            prefix: prefix.to_owned(),
            conf: conf.to_owned(),
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A signal to the master stops its workers too; SIGKILL would orphan them.
        let stopped = std::process::Command::new("nginx")
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.master.kill();
        }
        let _ = self.master.wait();
    }
}

/// A foreground server (HAProxy, `wasmtime serve`, `spin up`) in its own
/// process group, its output in a log file. Stopped on drop: SIGTERM to the
/// group (Spin runs its trigger in a child process), SIGKILL to what is left
/// after 2 s.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn start(
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Daemon> {
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Daemon { child, log })
    }

    /// Waits (up to `limit`) until `url` answers 200; on failure the error
    /// carries the end of the log.
    async fn ready(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let answered = until_ok(client, url, limit).await;
        let exited = self.child.try_wait().ok().flatten();
        match (answered, exited) {
            (Ok(_), None) => Ok(()),
            (Ok(_), Some(status)) => bail!(
                "it exited ({status}) yet something answers: {}",
                self.tail()
            ),
            (Err(e), _) => Err(e.context(format!("its log ends:\n{}", self.tail()))),
        }
    }

    fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process_group};
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The group outlives its leader while a member is left, and its id
        // is not reused until then.
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}

/// `name` in one of PATH's directories.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `wasmtime` to serve with, or why there is none.
fn find_wasmtime(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(format!(
                "{} (--wasmtime, $WASMTIME) is not a file",
                path.display()
            ))
        };
    }
    let local = Path::new(LOCAL_WASMTIME);
    if local.is_file() {
        return Ok(local.to_owned());
    }
    on_path("wasmtime").ok_or_else(|| {
        format!(
            "no wasmtime ($WASMTIME, {LOCAL_WASMTIME} or on PATH; the full \
             scripts/bench.sh installs wasmtime-cli 48.0.8)"
        )
    })
}

/// `tool --version`'s second word (`wasmtime 48.0.8 (…)` → `48.0.8`).
fn version(tool: &Path) -> String {
    std::process::Command::new(tool)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace().nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "(version unknown)".to_owned())
}

/// The pass-through must be pure wasi:http: a host without Spin's
/// interfaces (`wasmtime serve`) has to be able to run it.
fn check_passthrough(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "the pass-through component {} is missing: build it with `cargo build --release \
             --target wasm32-wasip2 -p rollout-passthrough` (scripts/bench.sh does)",
            path.display()
        );
    }
    let (imports, _) = rollout_host::Runtime::load(path)?.interface_names();
    let spin: Vec<&String> = imports
        .iter()
        .filter(|i| i.starts_with("fermyon:"))
        .collect();
    if !spin.is_empty() {
        bail!(
            "{} is to be a pure wasi:http component, yet it imports {spin:?}",
            path.display()
        );
    }
    Ok(())
}

/// The paths, in the order every round runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Straight to the origin.
    Direct,
    /// nginx `split_clients`.
    Nginx,
    /// HAProxy with weighted servers.
    Haproxy,
    /// rollout-host + router, a runtime per core.
    Host,
    /// The baseline build (`--baseline-host`, `--baseline-component`).
    Baseline,
    /// rollout-host --shared-runtime + router.
    HostShared,
    /// rollout-host + pass-through.
    HostPass,
    /// `wasmtime serve` + pass-through.
    WasmtimePass,
    /// `spin up` + router.
    SpinRouter,
    /// `spin up` + pass-through.
    SpinPass,
}

const PEERS: [Peer; 10] = [
    Peer::Direct,
    Peer::Nginx,
    Peer::Haproxy,
    Peer::Host,
    Peer::Baseline,
    Peer::HostShared,
    Peer::HostPass,
    Peer::WasmtimePass,
    Peer::SpinRouter,
    Peer::SpinPass,
];

/// A path: measured (its URL) or not (why).
#[derive(Debug)]
struct HopPath {
    peer: Peer,
    name: String,
    url: Result<String, String>,
}

/// How two paths are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Added p50 (over direct) of one over the other's; rps over rps.
    Ratio,
    /// p50 of one minus the other's; rps of one over the other's, minus 1.
    Cost,
}

/// A budget: what it says, and whether a median meets it.
type Budget = (&'static str, fn(f64) -> bool);

/// Two paths compared in every round; budgets judged on the medians.
#[derive(Debug)]
struct Compare {
    what: &'static str,
    a: Peer,
    b: Peer,
    kind: Kind,
    /// Judged at the first load (the unloaded one).
    latency: Option<Budget>,
    /// Judged at the last load (the loaded one).
    throughput: Option<Budget>,
}

const COMPARE: [Compare; 9] = [
    Compare {
        what: "rollout-host + router vs nginx",
        a: Peer::Host,
        b: Peer::Nginx,
        kind: Kind::Ratio,
        latency: Some(("added p50 ≤ 2× nginx's", |r| r <= 2.0)),
        throughput: Some(("rps ≥ 0.5× nginx's", |r| r >= 0.5)),
    },
    Compare {
        what: "rollout-host --shared-runtime + router vs nginx",
        a: Peer::HostShared,
        b: Peer::Nginx,
        kind: Kind::Ratio,
        latency: Some(("added p50 ≤ 2× nginx's", |r| r <= 2.0)),
        throughput: Some(("rps ≥ 0.5× nginx's", |r| r >= 0.5)),
    },
    Compare {
        what: "rollout-host vs wasmtime serve, both running the pass-through",
        a: Peer::HostPass,
        b: Peer::WasmtimePass,
        kind: Kind::Ratio,
        latency: Some(("added p50 below wasmtime serve's", |r| r < 1.0)),
        throughput: Some(("rps above wasmtime serve's", |r| r > 1.0)),
    },
    Compare {
        what: "the router's cost over the pass-through, both on rollout-host",
        a: Peer::Host,
        b: Peer::HostPass,
        kind: Kind::Cost,
        latency: Some(("≤ 10 µs p50", |d| d <= 10e-6)),
        throughput: Some(("≤ 10 % fewer rps", |q| q >= -0.10)),
    },
    Compare {
        what: "rollout-host + router against the baseline build",
        a: Peer::Host,
        b: Peer::Baseline,
        kind: Kind::Cost,
        latency: None,
        throughput: None,
    },
    Compare {
        what: "HAProxy vs nginx",
        a: Peer::Haproxy,
        b: Peer::Nginx,
        kind: Kind::Ratio,
        latency: None,
        throughput: None,
    },
    Compare {
        what: "rollout-host + pass-through vs nginx",
        a: Peer::HostPass,
        b: Peer::Nginx,
        kind: Kind::Ratio,
        latency: None,
        throughput: None,
    },
    Compare {
        what: "spin up + router vs nginx",
        a: Peer::SpinRouter,
        b: Peer::Nginx,
        kind: Kind::Ratio,
        latency: None,
        throughput: None,
    },
    Compare {
        what: "the router's cost over the pass-through, both on spin up",
        a: Peer::SpinRouter,
        b: Peer::SpinPass,
        kind: Kind::Cost,
        latency: None,
        throughput: None,
    },
];

/// Median, smallest and largest of `values` (NaN ones left out); `None`
/// when none is left.
fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    let median = percentile(&mut v, 0.5)?;
    Some((median, v[0], v[v.len() - 1]))
}

/// An added latency with its sign: `+83.0 µs`, `-12.0 µs`.
fn added(s: f64) -> String {
    if s < 0.0 {
        secs(s)
    } else {
        format!("+{}", secs(s))
    }
}

/// Ratios per round `a[r] / b[r]`; NaN where `b[r]` is not above zero (an
/// added latency that noise decides the sign of means nothing as a divisor).
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(a, b)| if *b > 0.0 { a / b } else { f64::NAN })
        .collect()
}

/// One comparison's figures at one load, from the per-round runs of both
/// paths and of direct.
#[derive(Debug, Clone, PartialEq)]
struct Compared {
    /// The latency figure per round: ratio of added p50s, or p50 difference.
    latency: Vec<f64>,
    /// The throughput figure per round: rps ratio, or rps ratio minus 1.
    throughput: Vec<f64>,
    /// Median added p50 of each path (for the text).
    added: (f64, f64),
    /// Median rps of each path (for the text).
    rps: (f64, f64),
}

fn compare(kind: Kind, a: &[WrkRun], b: &[WrkRun], direct: &[WrkRun]) -> Compared {
    let over = |runs: &[WrkRun]| -> Vec<f64> {
        runs.iter()
            .zip(direct)
            .map(|(r, d)| r.p50 - d.p50)
            .collect()
    };
    let (added_a, added_b) = (over(a), over(b));
    let rps_a: Vec<f64> = a.iter().map(|r| r.rps).collect();
    let rps_b: Vec<f64> = b.iter().map(|r| r.rps).collect();
    let rps_ratio = ratios(&rps_a, &rps_b);
    let (latency, throughput) = match kind {
        Kind::Ratio => (ratios(&added_a, &added_b), rps_ratio),
        Kind::Cost => (
            a.iter().zip(b).map(|(a, b)| a.p50 - b.p50).collect(),
            rps_ratio.iter().map(|q| q - 1.0).collect(),
        ),
    };
    let median = |v: &[f64]| summary(v).map_or(f64::NAN, |s| s.0);
    Compared {
        latency,
        throughput,
        added: (median(&added_a), median(&added_b)),
        rps: (median(&rps_a), median(&rps_b)),
    }
}

/// `1.95× (1.80–2.10×)`, or why there is no ratio.
fn ratio_text(values: &[f64], b: &str) -> String {
    let without = values.iter().filter(|v| v.is_nan()).count();
    match summary(values) {
        None => format!("no ratio: {b} added none"),
        Some((m, lo, hi)) => {
            let mut text = format!("{m:.2}× ({lo:.2}–{hi:.2}×)");
            if without > 0 {
                text.push_str(&format!(
                    ", {without} of {} rounds without a ratio ({b} added none)",
                    values.len()
                ));
            }
            text
        }
    }
}

/// `+12.3 % (+8.0 – +15.0 %)` for fractions.
fn percent_text(values: &[f64]) -> String {
    summary(values).map_or_else(
        || "none".to_owned(),
        |(m, lo, hi)| {
            format!(
                "{:+.1} % ({:+.1} – {:+.1} %)",
                m * 100.0,
                lo * 100.0,
                hi * 100.0
            )
        },
    )
}

/// `+12.3 µs (+8.00 µs – +15.0 µs)` for seconds.
fn seconds_text(values: &[f64]) -> String {
    summary(values).map_or_else(
        || "none".to_owned(),
        |(m, lo, hi)| format!("{} ({} – {})", added(m), added(lo), added(hi)),
    )
}

fn compared_text(kind: Kind, c: &Compared, b: &str) -> String {
    match kind {
        Kind::Ratio => format!(
            "added p50 {} vs {}: {} · rps {:.0} vs {:.0}: {}",
            added(c.added.0),
            added(c.added.1),
            ratio_text(&c.latency, b),
            c.rps.0,
            c.rps.1,
            ratio_text(&c.throughput, b).replace(" added none", " served none"),
        ),
        Kind::Cost => format!(
            "p50 {} · rps {} ({:.0} vs {:.0})",
            seconds_text(&c.latency),
            percent_text(&c.throughput),
            c.rps.0,
            c.rps.1
        ),
    }
}

/// Whether the median of `values` meets `budget` (not met without one).
fn meets(values: &[f64], budget: Budget) -> bool {
    summary(values).is_some_and(|(m, _, _)| (budget.1)(m))
}

/// The short name of a path's tool in comparison text.
fn short(peer: Peer) -> &'static str {
    match peer {
        Peer::Direct => "direct",
        Peer::Nginx => "nginx",
        Peer::Haproxy => "HAProxy",
        Peer::Host | Peer::HostShared | Peer::HostPass => "rollout-host",
        Peer::Baseline => "the baseline",
        Peer::WasmtimePass => "wasmtime serve",
        Peer::SpinRouter | Peer::SpinPass => "spin up",
    }
}

/// The table's rows for one load: every path, then every comparison.
fn load_rows(
    paths: &[HopPath],
    runs: &[Vec<WrkRun>],
    label: &str,
    first: bool,
    last: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (path, runs) in paths.iter().zip(runs) {
        let figure = match &path.url {
            Err(why) => format!("not measured: {why}"),
            Ok(_) => {
                let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
                let p50: Vec<f64> = runs.iter().map(|r| r.p50).collect();
                let p99: Vec<f64> = runs.iter().map(|r| r.p99).collect();
                let nan = (f64::NAN, f64::NAN, f64::NAN);
                let (rps, lo, hi) = summary(&rps).unwrap_or(nan);
                format!(
                    "{rps:.0} rps ({lo:.0}–{hi:.0}) · p50 {} · p99 {}",
                    secs(summary(&p50).unwrap_or(nan).0),
                    secs(summary(&p99).unwrap_or(nan).0)
                )
            }
        };
        rows.push(Row::info(
            SECTION,
            format!("{} ({label})", path.name),
            figure,
        ));
    }
    let index = |peer: Peer| paths.iter().position(|p| p.peer == peer);
    let Some(direct) = index(Peer::Direct) else {
        return rows;
    };
    for c in &COMPARE {
        // (budget, whether it judges latency rather than throughput)
        let budgets: Vec<(Budget, bool)> = [
            (c.latency.filter(|_| first), true),
            (c.throughput.filter(|_| last), false),
        ]
        .into_iter()
        .filter_map(|(budget, latency)| Some((budget?, latency)))
        .collect();
        let what = format!("{} ({label})", c.what);
        let (Some(a), Some(b)) = (index(c.a), index(c.b)) else {
            // A path left out by --hop-paths: a budget says it has no
            // verdict, as for a tool that is not installed.
            if !budgets.is_empty() {
                let target: Vec<&str> = budgets.iter().map(|(b, _)| b.0).collect();
                let why = "left out (--hop-paths)".to_owned();
                rows.push(Row::unmeasured(SECTION, what, why, target.join("; ")));
            }
            continue;
        };
        let unmeasured = [&paths[a], &paths[b]].into_iter().find_map(|p| {
            p.url
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", short(p.peer)))
        });
        if let Some(why) = unmeasured {
            // Comparisons without a budget are left out; budgeted ones say why
            // there is no verdict.
            if !budgets.is_empty() {
                let target: Vec<&str> = budgets.iter().map(|(b, _)| b.0).collect();
                rows.push(Row::unmeasured(SECTION, what, why, target.join("; ")));
            }
            continue;
        }
        let figures = compare(c.kind, &runs[a], &runs[b], &runs[direct]);
        let figure = compared_text(c.kind, &figures, short(c.b));
        if budgets.is_empty() {
            rows.push(Row::info(SECTION, what, figure));
            continue;
        }
        let target: Vec<&str> = budgets.iter().map(|(b, _)| b.0).collect();
        let met = budgets.iter().all(|(budget, is_latency)| {
            meets(
                if *is_latency {
                    &figures.latency
                } else {
                    &figures.throughput
                },
                *budget,
            )
        });
        rows.push(Row::budget(SECTION, what, figure, target.join("; "), met));
    }
    rows
}

/// `text` on one line, fit for a table cell.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/")
}

/// `wasmtime serve` running the pass-through in front of `old`.
async fn start_wasmtime(
    client: &reqwest::Client,
    bin: &Path,
    passthrough: &Path,
    old: &Origin,
    dir: &Path,
) -> anyhow::Result<(Daemon, String)> {
    let port = free_port()?;
    let args = [
        "serve".to_owned(),
        "--addr".to_owned(),
        format!("127.0.0.1:{port}"),
        // wasi:cli (the environment `ORIGIN` is read from) besides the
        // proxy world's imports.
        "-S".to_owned(),
        "cli=y".to_owned(),
        "--env".to_owned(),
        format!("ORIGIN={}", old.url()),
        passthrough.display().to_string(),
    ];
    let mut daemon = Daemon::start(bin, &args, &[], dir.join("wasmtime.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    daemon
        .ready(client, &format!("{url}/"), Duration::from_secs(60))
        .await?;
    Ok((daemon, url))
}

/// `spin up` of `manifest` with `env`, its state (the key-value store) in
/// `state`, so no earlier run's config is found.
async fn start_spin(
    client: &reqwest::Client,
    bin: &Path,
    manifest: &Path,
    env: &[(&str, String)],
    state: &Path,
) -> anyhow::Result<(Daemon, String)> {
    std::fs::create_dir_all(state)?;
    let port = free_port()?;
    let args = [
        "up".to_owned(),
        "--from".to_owned(),
        manifest.display().to_string(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--state-dir".to_owned(),
        state.display().to_string(),
    ];
    let mut daemon = Daemon::start(bin, &args, env, state.with_extension("log"))?;
    let url = format!("http://127.0.0.1:{port}");
    daemon
        .ready(client, &format!("{url}/"), Duration::from_secs(60))
        .await?;
    Ok((daemon, url))
}

/// A Spin manifest running the pass-through in front of `origin`.
fn spin_passthrough_manifest(passthrough: &Path, origin: &str) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "rollout-passthrough"
version = "0.1.0"

[[trigger.http]]
route = "/..."
component = "passthrough"

[component.passthrough]
source = {source:?}
allowed_outbound_hosts = [{origin:?}]
environment = {{ ORIGIN = {origin:?} }}
"#,
        source = passthrough.display().to_string(),
    )
}

/// Starts an optional peer; its failure is a row saying so, not an error.
fn optional<T>(tool: &str, started: anyhow::Result<T>) -> Result<T, String> {
    started.map_err(|e| {
        eprintln!("rollout-bench: hop: {tool} not measured: {e:#}");
        one_line(&format!("{tool} did not start: {e} (its log is on stderr)"))
    })
}

/// The order the paths run in one round: always the same, except that the
/// baseline build runs before this one in every other round, so neither of
/// the two builds a change is judged by always follows the other.
fn round_order(paths: &[HopPath], round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..paths.len()).collect();
    let at = |peer: Peer| paths.iter().position(|p| p.peer == peer);
    if round.is_multiple_of(2)
        && let (Some(host), Some(baseline)) = (at(Peer::Host), at(Peer::Baseline))
    {
        order.swap(host, baseline);
    }
    order
}

/// Starts every path whose tool is there, then runs the rounds.
pub async fn run(peers: &Peers, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    check_passthrough(&peers.passthrough)?;
    let scratch = Scratch::new("hop")?;
    let client = rollout_tests::client();
    let (old, new) = (Origin::start("old").await?, Origin::start("new").await?);
    // What keeps the paths serving; dropping it stops them.
    let mut guards: Vec<Box<dyn Send>> = Vec::new();
    let mut paths = vec![HopPath {
        peer: Peer::Direct,
        name: "direct to the origin".to_owned(),
        url: Ok(old.url()),
    }];

    if plan.wants(Peer::Nginx) {
        let port = free_port()?;
        let conf = scratch.0.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&scratch.0, port, &old, &new))?;
        let nginx = Nginx::start(&scratch.0, &conf)?;
        let url = format!("http://127.0.0.1:{port}");
        if let Err(e) = until_ok(&client, &format!("{url}/"), Duration::from_secs(10)).await {
            let log = std::fs::read_to_string(scratch.0.join("error.log")).unwrap_or_default();
            return Err(e.context(format!("nginx's error log:\n{log}")));
        }
        guards.push(Box::new(nginx));
        paths.push(HopPath {
            peer: Peer::Nginx,
            name: "through nginx split_clients".to_owned(),
            url: Ok(url),
        });
    }

    if plan.wants(Peer::Haproxy) {
        let port = free_port()?;
        let conf = scratch.0.join("haproxy.cfg");
        std::fs::write(&conf, haproxy_conf(port, old.addr, new.addr))?;
        let args = [
            "-db".to_owned(),
            "-f".to_owned(),
            conf.display().to_string(),
        ];
        let mut haproxy = Daemon::start(
            Path::new("haproxy"),
            &args,
            &[],
            scratch.0.join("haproxy.log"),
        )
        .context("starting haproxy (scripts/bench.sh installs it with apt-get)")?;
        let url = format!("http://127.0.0.1:{port}");
        haproxy
            .ready(&client, &format!("{url}/"), Duration::from_secs(10))
            .await
            .context("HAProxy did not answer")?;
        guards.push(Box::new(haproxy));
        paths.push(HopPath {
            peer: Peer::Haproxy,
            name: "through HAProxy, hdr(x-user-id) consistent hash, weights 90/10".to_owned(),
            url: Ok(url),
        });
    }

    let baseline = peers
        .baseline
        .as_ref()
        .map(|(host, router)| (Peer::Baseline, host, router, false));
    let ours = [(Peer::Host, false), (Peer::HostShared, true)]
        .map(|(peer, shared)| (peer, &peers.host_bin, &peers.router, shared));
    for (peer, host_bin, router, shared) in ours.into_iter().chain(baseline) {
        if !plan.wants(peer) {
            continue;
        }
        let flags = router_flags(&old, &new, shared);
        let edge = start_host(host_bin, router, flags).await?;
        apply_split(&client, edge.addr, &old, &new).await?;
        let name = match peer {
            Peer::HostShared => "through rollout-host --shared-runtime + router".to_owned(),
            Peer::Baseline => format!(
                "through the baseline {} + {}",
                host_bin.display(),
                router.display()
            ),
            _ => "through rollout-host + router".to_owned(),
        };
        paths.push(HopPath {
            peer,
            name,
            url: Ok(format!("http://{}", edge.addr)),
        });
        guards.push(Box::new(edge));
    }

    if plan.wants(Peer::HostPass) {
        let flags = vec![
            "--env".to_owned(),
            format!("ORIGIN={}", old.url()),
            "--allow-outbound".to_owned(),
            old.url(),
        ];
        let edge = start_host(&peers.host_bin, &peers.passthrough, flags).await?;
        let url = format!("http://{}", edge.addr);
        until_ok(&client, &format!("{url}/"), Duration::from_secs(10)).await?;
        guards.push(Box::new(edge));
        paths.push(HopPath {
            peer: Peer::HostPass,
            name: "through rollout-host + pass-through".to_owned(),
            url: Ok(url),
        });
    }

    if plan.wants(Peer::WasmtimePass) {
        let (name, url) = match find_wasmtime(peers.wasmtime.as_deref()) {
            Err(why) => ("through wasmtime serve + pass-through".to_owned(), Err(why)),
            Ok(bin) => {
                let started =
                    start_wasmtime(&client, &bin, &peers.passthrough, &old, &scratch.0).await;
                let url = optional("wasmtime serve", started).map(|(daemon, url)| {
                    guards.push(Box::new(daemon));
                    url
                });
                let name = format!("through wasmtime serve {} + pass-through", version(&bin));
                (name, url)
            }
        };
        paths.push(HopPath {
            peer: Peer::WasmtimePass,
            name,
            url,
        });
    }

    let spin = on_path("spin");
    let spin_version = spin.as_deref().map(version).unwrap_or_default();
    for peer in [Peer::SpinRouter, Peer::SpinPass] {
        if !plan.wants(peer) {
            continue;
        }
        let router = peer == Peer::SpinRouter;
        let what = if router { "router" } else { "pass-through" };
        let url = match &spin {
            None => Err("spin is not on PATH".to_owned()),
            Some(_) if router && !peers.spin_manifest.is_file() => Err(format!(
                "no Spin manifest at {}",
                peers.spin_manifest.display()
            )),
            Some(bin) => {
                let started = if router {
                    // The project's spin.toml, its variables as Spin reads them.
                    let env = [
                        (
                            "SPIN_VARIABLE_PUBLIC_KEY",
                            rollout_tests::secret().public_key().to_string(),
                        ),
                        ("SPIN_VARIABLE_OLD_ORIGIN", old.url()),
                        ("SPIN_VARIABLE_NEW_ORIGIN", new.url()),
                    ];
                    let state = scratch.0.join("spin-router");
                    match start_spin(&client, bin, &peers.spin_manifest, &env, &state).await {
                        Ok((daemon, url)) => {
                            let addr: SocketAddr = url
                                .trim_start_matches("http://")
                                .parse()
                                .context("spin's address")?;
                            apply_split(&client, addr, &old, &new)
                                .await
                                .map(|()| (daemon, url))
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    let manifest = scratch.0.join("spin-passthrough.toml");
                    let component = std::fs::canonicalize(&peers.passthrough)?;
                    std::fs::write(&manifest, spin_passthrough_manifest(&component, &old.url()))?;
                    let state = scratch.0.join("spin-passthrough");
                    start_spin(&client, bin, &manifest, &[], &state).await
                };
                optional("spin up", started).map(|(daemon, url)| {
                    guards.push(Box::new(daemon));
                    url
                })
            }
        };
        let name = match &spin {
            Some(_) => format!("through spin up {spin_version} + {what}"),
            None => format!("through spin up + {what}"),
        };
        paths.push(HopPath { peer, name, url });
    }
    paths.sort_by_key(|p| PEERS.iter().position(|q| *q == p.peer));

    let script = scratch.0.join("keys.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let mut rows = Vec::new();
    for (i, &load) in plan.loads.iter().enumerate() {
        let Load {
            threads,
            connections,
            large,
        } = load;
        let body = if large {
            format!(", {} KiB responses", LARGE_BODY / 1024)
        } else {
            String::new()
        };
        let label = format!(
            "wrk -t{threads} -c{connections}{body}, {}×{} s",
            plan.rounds, plan.seconds
        );
        let mut runs: Vec<Vec<WrkRun>> = vec![Vec::new(); paths.len()];
        for round in 1..=plan.rounds {
            eprintln!(
                "rollout-bench: hop: {label}: round {round} of {}",
                plan.rounds
            );
            for i in round_order(&paths, round) {
                if let Ok(url) = &paths[i].url {
                    let target = format!("{url}{}", load.target());
                    runs[i].push(wrk(&script, &target, load, plan.seconds).await?);
                }
            }
        }
        rows.extend(load_rows(
            &paths,
            &runs,
            &label,
            Some(i) == plan.latency_load(),
            Some(i) == plan.throughput_load(),
        ));
    }
    drop(guards);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 1s test @ http://127.0.0.1:8080/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.52us  101.23us   3.01ms   93.10%
    Req/Sec    18.40k     1.20k   19.90k    80.00%
  Latency Distribution
     50%  190.00us
     75%  230.00us
     90%  280.00us
     99%    1.02ms
  18321 requests in 1.00s, 2.10MB read
Requests/sec:  18310.25
Transfer/sec:      2.10MB
";

    #[test]
    fn reads_wrk_reports() {
        let run = parse_wrk(REPORT).expect("parses");
        assert_eq!(run.rps, 18310.25);
        assert!((run.p50 - 190e-6).abs() < 1e-12);
        assert!((run.p99 - 1.02e-3).abs() < 1e-12);
    }

    #[test]
    fn failed_requests_and_timeouts_are_errors() {
        let bad = REPORT.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        assert!(parse_wrk(&bad).is_err());
        let timeouts = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 0, write 0, timeout 3\nRequests/sec",
        );
        assert!(parse_wrk(&timeouts).is_err());
        let fine = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 0, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&fine).is_ok());
        assert!(parse_wrk("Running 1s test").is_err());
    }

    fn run(rps: f64, p50_us: f64) -> WrkRun {
        WrkRun {
            rps,
            p50: p50_us * 1e-6,
            p99: 2.0 * p50_us * 1e-6,
        }
    }

    #[test]
    fn ratios_are_taken_per_round_over_direct() {
        let direct = [
            run(10_000.0, 100.0),
            run(10_000.0, 90.0),
            run(10_000.0, 110.0),
        ];
        let nginx = [run(8_000.0, 150.0), run(8_000.0, 90.0), run(8_000.0, 130.0)];
        let edge = [
            run(2_000.0, 200.0),
            run(4_000.0, 190.0),
            run(3_000.0, 170.0),
        ];
        let c = compare(Kind::Ratio, &edge, &nginx, &direct);
        // Added: edge 100, 100, 60; nginx 50, 0 (no ratio), 20.
        assert!((c.latency[0] - 2.0).abs() < 1e-9);
        assert!(c.latency[1].is_nan());
        assert!((c.latency[2] - 3.0).abs() < 1e-9);
        assert_eq!(c.throughput, [0.25, 0.5, 0.375]);
        let text = ratio_text(&c.latency, "nginx");
        // Two rounds left: the lower median (nearest rank).
        assert!(text.starts_with("2.00× (2.00–3.00×)"), "{text}");
        assert!(text.contains("1 of 3 rounds without a ratio"), "{text}");
        assert_eq!(summary(&c.throughput), Some((0.375, 0.25, 0.5)));

        let cost = compare(Kind::Cost, &edge, &nginx, &direct);
        let expect = [50e-6, 100e-6, 40e-6];
        for (got, want) in cost.latency.iter().zip(expect) {
            assert!((got - want).abs() < 1e-12);
        }
        assert_eq!(cost.throughput, [-0.75, -0.5, -0.625]);
        assert_eq!(percent_text(&cost.throughput), "-62.5 % (-75.0 – -50.0 %)");
    }

    fn paths(wasmtime: bool) -> Vec<HopPath> {
        PEERS
            .into_iter()
            .filter(|peer| *peer != Peer::Baseline)
            .map(|peer| {
                let absent = match peer {
                    Peer::SpinRouter | Peer::SpinPass => true,
                    Peer::WasmtimePass => !wasmtime,
                    _ => false,
                };
                HopPath {
                    peer,
                    name: format!("{peer:?}"),
                    url: if absent {
                        Err("not on PATH".to_owned())
                    } else {
                        Ok("http://127.0.0.1:1".to_owned())
                    },
                }
            })
            .collect()
    }

    fn runs(paths: &[HopPath]) -> Vec<Vec<WrkRun>> {
        paths
            .iter()
            .map(|p| match (&p.url, p.peer) {
                (Err(_), _) => vec![],
                (_, Peer::Direct) => vec![run(10_000.0, 100.0); 3],
                (_, Peer::Nginx) => vec![run(8_000.0, 150.0); 3],
                (_, Peer::Host) => vec![run(4_500.0, 190.0); 3],
                (_, Peer::HostPass) => vec![run(5_000.0, 185.0); 3],
                (_, Peer::WasmtimePass) => vec![run(4_000.0, 220.0); 3],
                _ => vec![run(3_000.0, 400.0); 3],
            })
            .collect()
    }

    fn row<'a>(rows: &'a [Row], what: &str) -> &'a Row {
        rows.iter()
            .find(|r| r.what.starts_with(what))
            .unwrap_or_else(|| panic!("no row {what:?} in {rows:#?}"))
    }

    #[test]
    fn latency_budgets_at_the_first_load_throughput_at_the_last() {
        let paths = paths(true);
        let runs = runs(&paths);
        let first = load_rows(&paths, &runs, "unloaded", true, false);
        let host = row(&first, "rollout-host + router vs nginx");
        // Added 90 µs against nginx's 50 µs: 1.8×.
        assert_eq!(host.target.as_deref(), Some("added p50 ≤ 2× nginx's"));
        assert_eq!(host.met, Some(true));
        let shared = row(&first, "rollout-host --shared-runtime + router vs nginx");
        assert_eq!(shared.met, Some(false));
        let floor = row(&first, "rollout-host vs wasmtime serve");
        assert_eq!(floor.met, Some(true));
        // The router costs 5 µs over the pass-through.
        let cost = row(
            &first,
            "the router's cost over the pass-through, both on rollout-host",
        );
        assert_eq!(cost.target.as_deref(), Some("≤ 10 µs p50"));
        assert_eq!(cost.met, Some(true));
        let haproxy = row(&first, "HAProxy vs nginx");
        assert_eq!(haproxy.met, None);
        // Comparisons without a budget and without figures are left out.
        assert!(!first.iter().any(|r| r.what.contains("spin up + router vs")));
        assert!(
            row(&first, "SpinRouter")
                .figure
                .starts_with("not measured: ")
        );

        let last = load_rows(&paths, &runs, "loaded", false, true);
        let host = row(&last, "rollout-host + router vs nginx");
        assert_eq!(host.target.as_deref(), Some("rps ≥ 0.5× nginx's"));
        assert_eq!(host.met, Some(true));
        // 10 % fewer requests/s than the pass-through: just within.
        let cost = row(
            &last,
            "the router's cost over the pass-through, both on rollout-host",
        );
        assert_eq!(cost.met, Some(true));

        let both = load_rows(&paths, &runs, "smoke", true, true);
        let host = row(&both, "rollout-host + router vs nginx");
        assert_eq!(
            host.target.as_deref(),
            Some("added p50 ≤ 2× nginx's; rps ≥ 0.5× nginx's")
        );
        assert_eq!(host.met, Some(true));
    }

    #[test]
    fn budgets_are_judged_on_small_responses_only() {
        let plan = |loads: Vec<Load>| Plan {
            loads,
            seconds: 1,
            rounds: 1,
            only: Vec::new(),
        };
        let full = plan(vec![
            Load::small(1, 1),
            Load::large(2, 32),
            Load::small(2, 32),
        ]);
        assert_eq!(
            (full.latency_load(), full.throughput_load()),
            (Some(0), Some(2))
        );
        let ends_large = plan(vec![
            Load::large(1, 4),
            Load::small(1, 4),
            Load::large(1, 4),
        ]);
        assert_eq!(
            (ends_large.latency_load(), ends_large.throughput_load()),
            (Some(1), Some(1))
        );
        let only_large = plan(vec![Load::large(1, 4)]);
        assert_eq!(
            (only_large.latency_load(), only_large.throughput_load()),
            (None, None)
        );
    }

    #[test]
    fn the_baseline_and_this_build_swap_places_every_other_round() {
        let mut paths = paths(true);
        paths.insert(
            4,
            HopPath {
                peer: Peer::Baseline,
                name: "Baseline".to_owned(),
                url: Ok("http://127.0.0.1:1".to_owned()),
            },
        );
        let (host, baseline) = (3, 4);
        assert_eq!(
            (paths[host].peer, paths[baseline].peer),
            (Peer::Host, Peer::Baseline)
        );
        let odd = round_order(&paths, 1);
        let even = round_order(&paths, 2);
        assert_eq!(odd, (0..paths.len()).collect::<Vec<_>>());
        let position = |order: &[usize], i: usize| order.iter().position(|&j| j == i);
        assert!(position(&odd, host) < position(&odd, baseline));
        assert!(position(&even, baseline) < position(&even, host));
        assert_eq!(even.len(), paths.len());
        // Without a baseline every round runs in the one order.
        paths.remove(baseline);
        assert_eq!(round_order(&paths, 2), (0..paths.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_budgeted_comparison_whose_path_was_left_out_says_so() {
        let paths: Vec<HopPath> = paths(true)
            .into_iter()
            .filter(|p| p.peer != Peer::Nginx)
            .collect();
        let runs = runs(&paths);
        let rows = load_rows(&paths, &runs, "unloaded", true, false);
        let host = row(&rows, "rollout-host + router vs nginx");
        assert_eq!(host.met, None);
        assert!(
            host.figure.contains("left out (--hop-paths)"),
            "{}",
            host.figure
        );
        assert_eq!(host.target.as_deref(), Some("added p50 ≤ 2× nginx's"));
        // Unbudgeted comparisons with a missing path are simply absent.
        assert!(!rows.iter().any(|r| r.what.starts_with("HAProxy vs nginx")));
    }

    #[test]
    fn without_wasmtime_its_budgets_have_no_verdict() {
        let paths = paths(false);
        let rows = load_rows(&paths, &runs(&paths), "unloaded", true, true);
        let floor = row(&rows, "rollout-host vs wasmtime serve");
        assert_eq!(floor.met, None);
        assert!(floor.target.is_some());
        assert!(
            floor
                .figure
                .starts_with("not measured: wasmtime serve: not on PATH"),
            "{}",
            floor.figure
        );
    }

    #[test]
    fn haproxy_hashes_the_key_onto_weighted_servers() {
        let old = "127.0.0.1:8081".parse().expect("addr");
        let new = "127.0.0.1:8082".parse().expect("addr");
        let conf = haproxy_conf(4000, old, new);
        for line in [
            "bind 127.0.0.1:4000",
            "balance hdr(x-user-id)",
            "hash-type consistent",
            "http-reuse always",
            "option http-keep-alive",
            "server old 127.0.0.1:8081 weight 90",
            "server new 127.0.0.1:8082 weight 10",
        ] {
            assert!(conf.contains(line), "{line}\n{conf}");
        }
    }
}
