//! The edge hop on loopback: the same wrk client and connection count,
//! keep-alive, straight to an origin, through rollout-host running the
//! component, and through nginx (`split_clients` + `proxy_pass`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::procs::{Child, Origin, Scratch, free_port, spawn_listening, until_ok};
use crate::report::Row;
use crate::stats::{percentile, secs};

const SECTION: &str = "hop";

/// Client load and length of the runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// (wrk threads, connections) pairs, each measured on every path.
    pub loads: Vec<(u32, u32)>,
    /// Seconds per wrk run.
    pub seconds: u32,
    /// Runs per (load, path), interleaved; the table shows their medians.
    pub rounds: usize,
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

async fn wrk(
    script: &Path,
    url: &str,
    (threads, connections): (u32, u32),
    seconds: u32,
) -> anyhow::Result<WrkRun> {
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
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
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
      add_header x-rollout-arm $arm;
    }}
  }}
}}
"#,
        old = old.addr,
        new = new.addr
    )
}

/// rollout-host running the component in front of `old` and `new`, with
/// 10 % of keys on new; in-memory store, as `rollout up` runs it.
pub async fn start_edge(
    host_bin: &Path,
    component: &Path,
    old: &Origin,
    new: &Origin,
    per_core: bool,
) -> anyhow::Result<Child> {
    let mut args = vec![
        "--component".to_owned(),
        component.display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--var".to_owned(),
        format!("public_key={}", rollout_tests::secret().public_key()),
        "--var".to_owned(),
        format!("old_origin={}", old.url()),
        "--allow-outbound".to_owned(),
        old.url(),
        "--allow-outbound".to_owned(),
        new.url(),
    ];
    if per_core {
        args.push("--per-core".to_owned());
    }
    spawn_listening(host_bin, &args).await
}

/// Applies a one-route config: `header:x-user-id` splits 10 % to new.
pub async fn apply_split(
    client: &reqwest::Client,
    edge: &Child,
    old: &Origin,
    new: &Origin,
) -> anyhow::Result<()> {
    let config = serde_json::from_value(json!({
        "schema": 1,
        "routes": [{"id": "web", "old": old.url(), "new": new.url(), "new_weight": 10,
                    "key": ["header:x-user-id", "cookie:rollout_id"], "assign_cookie": true}]
    }))?;
    let (body, signature) = rollout_tests::envelope(1, config);
    let (status, reply) = rollout_tests::push(client, edge.addr, body, &signature).await;
    if status != 200 {
        bail!("the edge refused the benchmark config: {status} {reply}");
    }
    Ok(())
}

/// nginx as a foreground master process, stopped (workers too) on drop.
struct Nginx {
    master: std::process::Child,
    prefix: std::path::PathBuf,
    conf: std::path::PathBuf,
}

impl Nginx {
    fn start(prefix: &Path, conf: &Path) -> anyhow::Result<Nginx> {
        let master = std::process::Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            // Its workers would hold our pipes open; it logs to error.log.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
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
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.master.kill();
        }
        let _ = self.master.wait();
    }
}

/// An added latency with its sign: `+83.0 µs`, `-12.0 µs`.
fn added(s: f64) -> String {
    if s < 0.0 {
        secs(s)
    } else {
        format!("+{}", secs(s))
    }
}

/// Edge's added latency over nginx's; `None` when nginx added none (a
/// ratio would mean nothing: noise decides its sign).
fn ratio(edge: f64, nginx: f64) -> Option<f64> {
    (nginx > 0.0).then(|| edge / nginx)
}

fn shown(ratio: Option<f64>) -> String {
    ratio.map_or_else(
        || " (no ratio: nginx added none)".to_owned(),
        |r| format!(" = {r:.2}×"),
    )
}

fn median(runs: &[WrkRun], f: impl Fn(&WrkRun) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    percentile(&mut v, 0.5).unwrap_or(f64::NAN)
}

/// Runs the section.
pub async fn run(host_bin: &Path, component: &Path, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let scratch = Scratch::new("hop")?;
    let client = rollout_tests::client();
    let (old, new) = (Origin::start("old").await?, Origin::start("new").await?);
    let edge = start_edge(host_bin, component, &old, &new, false).await?;
    apply_split(&client, &edge, &old, &new).await?;
    let per_core = start_edge(host_bin, component, &old, &new, true).await?;
    apply_split(&client, &per_core, &old, &new).await?;

    let port = free_port()?;
    let conf = scratch.0.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&scratch.0, port, &old, &new))?;
    let nginx = Nginx::start(&scratch.0, &conf)?;
    let script = scratch.0.join("keys.lua");
    std::fs::write(&script, WRK_SCRIPT)?;

    let paths = [
        ("direct to the origin", old.url()),
        (
            "through rollout-host + component",
            format!("http://{}", edge.addr),
        ),
        (
            "through nginx split_clients",
            format!("http://127.0.0.1:{port}"),
        ),
        (
            "through rollout-host --per-core + component",
            format!("http://{}", per_core.addr),
        ),
    ];
    for (_, url) in &paths {
        if let Err(e) = until_ok(&client, &format!("{url}/"), Duration::from_secs(10)).await {
            let log = std::fs::read_to_string(scratch.0.join("error.log")).unwrap_or_default();
            return Err(e.context(format!("nginx's error log:\n{log}")));
        }
    }
    let mut rows = Vec::new();
    for &load in &plan.loads {
        let mut runs: Vec<Vec<WrkRun>> = vec![Vec::new(); paths.len()];
        for _ in 0..plan.rounds {
            for (i, (_, url)) in paths.iter().enumerate() {
                runs[i].push(wrk(&script, &format!("{url}/"), load, plan.seconds).await?);
            }
        }
        let (threads, connections) = load;
        let label = format!(
            "wrk -t{threads} -c{connections}, {}×{} s",
            plan.rounds, plan.seconds
        );
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for (i, (name, _)) in paths.iter().enumerate() {
            let (rps, a, b) = (
                median(&runs[i], |r| r.rps),
                median(&runs[i], |r| r.p50),
                median(&runs[i], |r| r.p99),
            );
            p50.push(a);
            p99.push(b);
            rows.push(Row::info(
                SECTION,
                format!("{name} ({label})"),
                format!("{rps:.0} rps · p50 {} · p99 {}", secs(a), secs(b)),
            ));
        }
        let (nginx50, nginx99) = (p50[2] - p50[0], p99[2] - p99[0]);
        for (edge, variant) in [(1, "edge"), (3, "edge --per-core")] {
            let (edge50, edge99) = (p50[edge] - p50[0], p99[edge] - p99[0]);
            let r50 = ratio(edge50, nginx50);
            rows.push(Row::budget(
                SECTION,
                format!("added latency, {variant} vs nginx ({label})"),
                format!(
                    "p50: {} vs {}{} · p99: {} vs {}{}",
                    added(edge50),
                    added(nginx50),
                    shown(r50),
                    added(edge99),
                    added(nginx99),
                    shown(ratio(edge99, nginx99))
                ),
                "≤ 1.5× nginx's",
                r50.is_some_and(|r| r <= 1.5),
            ));
        }
    }
    drop(nginx);
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
}
