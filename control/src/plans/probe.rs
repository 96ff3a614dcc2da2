//! Probes: requests the control service sends through every edge, the arm
//! forced by a header override, counted per arm.
//!
//! A response counts as an error when its status is 5xx, when the request
//! failed or timed out, or when an edge that holds the override answered
//! from the other arm (it failed over from new to old). A response from an
//! edge still on a version without the override is not counted at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollout_api::Version;
use rollout_core::Arm;
use rollout_core::plan::Probe;
use rollout_core::plan::judge::{Counts, ProbeSample, p95};

use crate::store::Store;

/// Most requests of one check in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Most of a response body read (then the rest is dropped).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How a probe forces its arm.
#[derive(Debug, Clone)]
pub struct Target {
    /// The override header, and the token to send with the arm (`None`:
    /// the override takes none). No header: the route has no usable override.
    pub header: Option<(String, Option<String>)>,
    /// The first version that has it.
    pub since: Version,
}

/// What a sampler needs.
#[derive(Debug)]
pub struct Setup {
    /// The probe.
    pub probe: Probe,
    /// Requests per second per arm.
    pub rate_per_arm: f64,
    /// Totals to go on from (old, new), as the plan's state last stored them.
    pub totals: (Counts, Counts),
    /// Where the edges are listed.
    pub store: Arc<Store>,
    /// The client.
    pub http: reqwest::Client,
    /// How to force the arm.
    pub target: Target,
}

#[derive(Debug, Default)]
struct Tally {
    total: [Counts; 2],
    interval: [Counts; 2],
    latency: [Vec<Duration>; 2],
    /// Edges at the last listing.
    edges: usize,
}

/// One check's probes, running until dropped.
#[derive(Debug)]
pub struct Sampler {
    task: tokio::task::JoinHandle<()>,
    tally: Arc<Mutex<Tally>>,
    /// Whether the route has an override the probe can use.
    forced: bool,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Outcome {
    Ok(Duration),
    Error(Duration),
    /// Served by an edge that does not know the override yet.
    Unforced,
}

fn slot(arm: Arm) -> usize {
    match arm {
        Arm::Old => 0,
        Arm::New => 1,
    }
}

impl Sampler {
    /// Starts sending.
    pub fn start(setup: Setup) -> Sampler {
        let tally = Arc::new(Mutex::new(Tally {
            total: [setup.totals.0, setup.totals.1],
            ..Tally::default()
        }));
        let forced = setup.target.header.is_some();
        let task = tokio::spawn(run(setup, tally.clone()));
        Sampler {
            task,
            tally,
            forced,
        }
    }

    /// The counts so far and this interval's, which start again from zero;
    /// an error when the probe cannot measure (no override, no edges), so
    /// that a blind check fails the plan instead of never failing.
    pub fn snapshot(&self) -> Result<ProbeSample, String> {
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if !self.forced {
            return Err(
                "the route has no header override the probe token opens: retry the plan to add one"
                    .to_owned(),
            );
        }
        if t.edges == 0 {
            return Err("no edges are registered to probe through".to_owned());
        }
        for i in 0..2 {
            t.total[i] = t.total[i].plus(t.interval[i]);
        }
        let sample = ProbeSample {
            total_old: t.total[0],
            total_new: t.total[1],
            interval_old: t.interval[0],
            interval_new: t.interval[1],
            p95_old_ms: p95(&mut t.latency[0]),
            p95_new_ms: p95(&mut t.latency[1]),
        };
        t.interval = [Counts::default(); 2];
        t.latency = [Vec::new(), Vec::new()];
        Ok(sample)
    }
}

async fn run(setup: Setup, tally: Arc<Mutex<Tally>>) {
    let Setup {
        probe,
        rate_per_arm,
        store,
        http,
        target,
        ..
    } = setup;
    let (probe, target) = (Arc::new(probe), Arc::new(target));
    let period = Duration::from_secs_f64(1.0 / (2.0 * rate_per_arm.max(0.01)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut edges: Vec<String> = Vec::new();
    let mut listed: Option<Instant> = None;
    let mut n: usize = 0;
    loop {
        ticker.tick().await;
        if listed.is_none_or(|at| at.elapsed() > Duration::from_secs(2)) {
            if let Ok(rows) = store.edges() {
                edges = rows.into_iter().map(|e| e.url).collect();
                tally.lock().unwrap_or_else(|p| p.into_inner()).edges = edges.len();
            }
            listed = Some(Instant::now());
        }
        if edges.is_empty() {
            continue;
        }
        let arm = if n.is_multiple_of(2) {
            Arm::Old
        } else {
            Arm::New
        };
        let edge = edges[(n / 2) % edges.len()].clone();
        n = n.wrapping_add(1);
        // An edge that stops answering must not pile up requests.
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let (http, probe, target, tally) =
            (http.clone(), probe.clone(), target.clone(), tally.clone());
        tokio::spawn(async move {
            let outcome = send(&http, &edge, &probe, &target, arm).await;
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            let i = slot(arm);
            match outcome {
                Outcome::Ok(latency) => {
                    t.interval[i].samples += 1;
                    t.latency[i].push(latency);
                }
                Outcome::Error(latency) => {
                    t.interval[i].samples += 1;
                    t.interval[i].errors += 1;
                    t.latency[i].push(latency);
                }
                Outcome::Unforced => {}
            }
            drop(permit);
        });
    }
}

async fn send(
    http: &reqwest::Client,
    edge: &str,
    probe: &Probe,
    target: &Target,
    arm: Arm,
) -> Outcome {
    let method =
        reqwest::Method::from_bytes(probe.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let url = format!("{}{}", edge.trim_end_matches('/'), probe.path);
    let mut req = http.request(method, url).timeout(probe.timeout);
    if let Some(host) = &probe.host {
        req = req.header(reqwest::header::HOST, host);
    }
    if let Some((header, token)) = &target.header {
        let value = match token {
            Some(t) => format!("{}:{t}", arm.as_str()),
            None => arm.as_str().to_owned(),
        };
        req = req.header(header.as_str(), value);
    }
    let started = Instant::now();
    let Ok(mut resp) = req.send().await else {
        return Outcome::Error(started.elapsed());
    };
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let served = header("x-rollout-arm");
    let version: u64 = header("x-rollout-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut read = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                read += c.len();
                if read > MAX_BODY_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => return Outcome::Error(started.elapsed()),
        }
    }
    let latency = started.elapsed();
    if served.as_deref() != Some(arm.as_str()) {
        return if version >= target.since.get() && target.header.is_some() {
            Outcome::Error(latency)
        } else {
            Outcome::Unforced
        };
    }
    if status >= 500 {
        Outcome::Error(latency)
    } else {
        Outcome::Ok(latency)
    }
}
