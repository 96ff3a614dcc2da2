//! Fan-out and reconciliation: every registered edge is brought to the
//! committed version and kept there.
//!
//! After a commit the service wakes the reconciler, which PUTs the committed
//! envelope to every edge that does not hold it, all at once. The same loop
//! runs on a timer, so an edge that was down, or a fan-out cut short by a
//! crash, is brought up to date without a new version. Only committed rows
//! are ever sent: the reconciler reads what to push from the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollout_core::edge::{ADMIN_PATH, AppliedReply, PushReply, PushStatus};

use crate::service::App;
use crate::store::{VersionRow, now_ms};

/// Fan-out settings.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Time limit of one PUT.
    pub timeout: Duration,
    /// Retries of a PUT that got no answer, within one round.
    pub retries: u32,
    /// First retry delay; doubles each retry.
    pub backoff: Duration,
    /// How often lagging edges are pushed again.
    pub reconcile_every: Duration,
    /// Longest wait between rounds for one failing edge.
    pub max_backoff: Duration,
    /// How often edges that acknowledged the committed version are asked
    /// (GET) whether they still hold it; one that lost it (a restart with an
    /// empty store, a push from elsewhere) is pushed again.
    pub verify_every: Duration,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Duration::from_millis(100),
            reconcile_every: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            verify_every: Duration::from_secs(10),
        }
    }
}

/// Per-edge bookkeeping that need not survive a restart.
#[derive(Debug, Default)]
pub struct Pusher {
    wake: tokio::sync::Notify,
    state: Mutex<PushState>,
    http: reqwest::Client,
}

#[derive(Debug, Default)]
struct PushState {
    in_flight: HashSet<i64>,
    /// Edges to leave alone until then, and how many rounds failed in a row.
    backoff: HashMap<i64, (Instant, u32)>,
    /// Edges whose ACK was seen by this process. After a restart every edge
    /// is pushed once, whatever the store says, so an edge that lost its
    /// state is caught.
    confirmed: HashSet<(i64, u64)>,
}

impl Pusher {
    /// A pusher with its own HTTP client.
    pub fn new() -> Pusher {
        Pusher {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(4)
                .build()
                .unwrap_or_default(),
            ..Pusher::default()
        }
    }

    /// Starts a round now (after a commit, or when an edge is added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PushState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs reconciliation rounds until the task is dropped.
pub async fn run(app: Arc<App>) {
    let mut verified = Instant::now();
    loop {
        if let Err(e) = round(&app) {
            tracing::warn!("reconcile round failed: {e}");
        }
        if verified.elapsed() >= app.push.verify_every {
            verified = Instant::now();
            tokio::spawn(verify(app.clone()));
        }
        tokio::select! {
            () = app.pusher.wake.notified() => {}
            () = tokio::time::sleep(app.push.reconcile_every) => {}
        }
    }
}

/// One round: start a push to every edge that lags and is not waiting.
fn round(app: &Arc<App>) -> anyhow::Result<()> {
    let Some(current) = app.store.current()? else {
        return Ok(());
    };
    let current = Arc::new(current);
    let edges = app.store.edges()?;
    let now = Instant::now();
    let mut state = app.pusher.lock();
    for edge in edges {
        let holds = edge.acked_version == current.version
            && edge.acked_digest.as_deref() == Some(current.digest.as_str());
        if holds && state.confirmed.contains(&(edge.id, current.version)) {
            continue;
        }
        if state.in_flight.contains(&edge.id) {
            continue;
        }
        if state
            .backoff
            .get(&edge.id)
            .is_some_and(|(until, _)| *until > now)
        {
            continue;
        }
        state.in_flight.insert(edge.id);
        let (app, current) = (app.clone(), current.clone());
        tokio::spawn(async move {
            let outcome = push_edge(&app, edge.id, &edge.url, &current).await;
            let mut state = app.pusher.lock();
            state.in_flight.remove(&edge.id);
            match outcome {
                Outcome::Ack => {
                    state.backoff.remove(&edge.id);
                    state.confirmed.insert((edge.id, current.version));
                }
                Outcome::Nack | Outcome::NoAnswer => {
                    let fails = state.backoff.get(&edge.id).map_or(0, |b| b.1) + 1;
                    // A refusal will not change by asking again soon; a
                    // silent edge may be back any moment.
                    let wait = match outcome {
                        Outcome::Nack => app.push.max_backoff,
                        _ => (app.push.reconcile_every * 2u32.saturating_pow(fails.min(8)))
                            .min(app.push.max_backoff),
                    };
                    state
                        .backoff
                        .insert(edge.id, (Instant::now() + wait, fails));
                }
            }
        });
    }
    Ok(())
}

/// Asks every edge believed to hold the committed version what it holds,
/// and forgets the belief where it is wrong, so the next round pushes again.
async fn verify(app: Arc<App>) {
    let (Ok(Some(current)), Ok(edges)) = (app.store.current(), app.store.edges()) else {
        return;
    };
    let checks = edges.into_iter().filter(|e| {
        let state = app.pusher.lock();
        state.confirmed.contains(&(e.id, current.version)) && !state.in_flight.contains(&e.id)
    });
    let checks = checks.map(|edge| {
        let (app, digest) = (app.clone(), current.digest.clone());
        async move {
            let url = format!("{}{ADMIN_PATH}", edge.url.trim_end_matches('/'));
            let sent = app
                .pusher
                .http
                .get(&url)
                .timeout(app.push.timeout)
                .send()
                .await;
            let Ok(held) = (match sent {
                Ok(r) => r.json::<AppliedReply>().await,
                Err(e) => Err(e),
            }) else {
                // Silence is for the push path to judge, at the next version.
                return;
            };
            let held_digest = held.digest.map(|d| d.to_string());
            if held.version == current.version && held_digest.as_deref() == Some(digest.as_str()) {
                return;
            }
            tracing::warn!(
                "{} holds version {} instead of {}: pushing again",
                edge.url,
                held.version,
                current.version
            );
            record(
                app.store
                    .record_held(edge.id, held.version, held_digest.as_deref()),
            );
            app.pusher
                .lock()
                .confirmed
                .remove(&(edge.id, current.version));
            app.pusher.wake();
        }
    });
    futures_util::future::join_all(checks).await;
}

enum Outcome {
    Ack,
    Nack,
    NoAnswer,
}

/// Pushes `version` to one edge, retrying when it gets no answer.
async fn push_edge(app: &App, edge: i64, url: &str, version: &VersionRow) -> Outcome {
    if let Err(e) = app.store.record_sent(edge, version.version) {
        tracing::warn!("recording a push to {url}: {e}");
    }
    let target = format!("{}{ADMIN_PATH}", url.trim_end_matches('/'));
    let mut last_error = String::new();
    for attempt in 0..=app.push.retries {
        if attempt > 0 {
            tokio::time::sleep(app.push.backoff * 2u32.pow(attempt - 1)).await;
        }
        app.metrics.pushes.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let sent = app
            .pusher
            .http
            .put(&target)
            .timeout(app.push.timeout)
            .header(rollout_core::SIGNATURE_HEADER, &version.signature)
            .header("content-type", "application/json")
            .body(version.body.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                last_error = describe(&e);
                continue;
            }
        };
        let status = resp.status().as_u16();
        let reply = match resp.bytes().await {
            Ok(b) => serde_json::from_slice::<PushReply>(&b).ok(),
            Err(e) => {
                last_error = describe(&e);
                continue;
            }
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match reply {
            Some(r) if r.status == PushStatus::Ack && r.version == version.version => {
                app.metrics.acks.fetch_add(1, Ordering::Relaxed);
                record(
                    app.store
                        .record_ack(edge, version.version, &version.digest, latency_ms),
                );
                converged(app, version);
                return Outcome::Ack;
            }
            Some(r) => {
                app.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                let error = r.error.unwrap_or_else(|| {
                    format!("edge answered {status} holding version {}", r.version)
                });
                tracing::warn!("{url} refused version {}: {error}", version.version);
                let digest = r.digest.map(|d| d.to_string());
                let holds = (r.version, digest.as_deref());
                record(app.store.record_nack(edge, version.version, holds, &error));
                return Outcome::Nack;
            }
            None => last_error = format!("HTTP {status} without a push reply"),
        }
    }
    app.metrics.failures.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        "{url}: no answer to version {}: {last_error}",
        version.version
    );
    record(app.store.record_failure(edge, &last_error));
    Outcome::NoAnswer
}

fn record(result: rusqlite::Result<()>) {
    if let Err(e) = result {
        tracing::warn!("recording a push outcome: {e}");
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection refused or unreachable".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }
}

/// Records the commit-to-last-ACK time once every edge holds `version`.
fn converged(app: &App, version: &VersionRow) {
    let Ok(edges) = app.store.edges() else {
        return;
    };
    let all = !edges.is_empty()
        && edges.iter().all(|e| {
            e.acked_version == version.version
                && e.acked_digest.as_deref() == Some(version.digest.as_str())
        });
    if !all {
        return;
    }
    // The commit's own clock when this process made it; the wall clock
    // otherwise (a version committed before a restart).
    let ms = app.committed_at(version.version).map_or_else(
        || (now_ms() - version.issued_ms).max(0) as f64,
        |at| at.elapsed().as_secs_f64() * 1000.0,
    );
    if let Ok(true) = app
        .store
        .record_convergence(version.version, edges.len(), ms)
    {
        app.metrics.observe_convergence(ms / 1000.0);
        app.forget_commits_up_to(version.version);
        tracing::info!(
            "version {} on all {} edges {ms:.1} ms after commit",
            version.version,
            edges.len()
        );
    }
}
