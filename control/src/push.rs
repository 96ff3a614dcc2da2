//! Fan-out and reconciliation: every registered edge is brought to the
//! committed version and kept there.
//!
//! After a commit the reconciler PUTs the committed envelope to every edge
//! that does not hold it, all at once, whatever state the edge was in: a
//! push of an older version still under way is stopped, and the backoff of
//! a failing edge applies only to retries of the version it failed on. The
//! same loop runs on a timer, so an edge that was down, or a fan-out cut
//! short by a crash, is brought up to date without a new version. Only
//! committed rows are ever sent: the reconciler reads what to push from the
//! store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rollout_api::{Version, holds, shorten};
use rollout_core::Applied;

use crate::edge_client::{Answer, EdgeClient, Retries, Signed};
use crate::keys::Keys;
use crate::lease::LeaseClock;
use crate::metrics::Metrics;
use crate::store::{EdgeId, EdgeRow, Store, VersionRow, now_ms};

/// Most intermediate versions one push goes through to bring an edge
/// through key rotations it missed.
const MAX_KEY_STEPS: usize = 8;
/// What an edge's refusal says when it does not trust the signing key.
const UNTRUSTED_KEY: &str = "is not trusted by this edge";

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

impl From<&VersionRow> for Signed {
    fn from(row: &VersionRow) -> Signed {
        Signed {
            version: row.version,
            digest: row.digest,
            body: row.body.clone(),
            signature: row.signature.clone(),
            stamp: true,
        }
    }
}

/// The fan-out: pushes, retries, verification, convergence times.
#[derive(Debug)]
pub struct Fanout {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    edges: EdgeClient,
    opts: PushOptions,
    wake: tokio::sync::Notify,
    /// Told when an edge reported holding a version the history lacks.
    ahead: tokio::sync::Notify,
    state: Mutex<PushState>,
    /// When this process committed each version not yet converged.
    commits: Mutex<HashMap<Version, Instant>>,
}

/// A push under way to one edge.
#[derive(Debug)]
struct InFlight {
    version: Version,
    /// Tells this push from a later one to the same edge.
    id: u64,
    task: tokio::task::AbortHandle,
}

/// Retries of one version to one edge wait until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    version: Version,
    until: Instant,
    fails: u32,
}

/// What follows a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It holds the version.
    Done,
    /// It refused: retry this version after the longest backoff.
    Refused,
    /// It did not answer: retry this version after a growing backoff.
    Silent,
}

/// Per-edge bookkeeping that need not survive a restart.
#[derive(Debug, Default)]
struct PushState {
    in_flight: HashMap<EdgeId, InFlight>,
    backoff: HashMap<EdgeId, Backoff>,
    /// Edges whose ACK was seen by this process. After a restart every edge
    /// is pushed once, whatever the store says, so an edge that lost its
    /// state is caught.
    confirmed: HashSet<(EdgeId, Version)>,
    next_id: u64,
}

/// What a round does with one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing: it holds the version, it is being pushed it, or its retry
    /// of this version is not due.
    Leave,
    /// Push the committed version now.
    Push,
}

impl PushState {
    /// The rule of a round for one edge against the committed `version`.
    fn step(&self, edge: EdgeId, holds: bool, version: Version, now: Instant) -> Step {
        if holds && self.confirmed.contains(&(edge, version)) {
            return Step::Leave;
        }
        if self
            .in_flight
            .get(&edge)
            .is_some_and(|f| f.version == version)
        {
            return Step::Leave;
        }
        // A backoff holds back only retries of the version that failed: a
        // new commit (a rollback above all) goes out at once.
        if self
            .backoff
            .get(&edge)
            .is_some_and(|b| b.version == version && b.until > now)
        {
            return Step::Leave;
        }
        Step::Push
    }
}

impl Fanout {
    /// A fan-out over `store`'s edges.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        keys: Arc<Keys>,
        opts: PushOptions,
    ) -> Result<Fanout, reqwest::Error> {
        Ok(Fanout {
            store,
            metrics,
            edges: EdgeClient::new(opts.timeout)?.stamping_with(keys),
            opts,
            wake: tokio::sync::Notify::new(),
            ahead: tokio::sync::Notify::new(),
            state: Mutex::default(),
            commits: Mutex::default(),
        })
    }

    /// Pushes only while `clock` says this replica leads (checked before
    /// every request to an edge).
    #[must_use]
    pub fn gated_by(mut self, clock: Arc<LeaseClock>) -> Fanout {
        self.edges = self.edges.gated_by(clock);
        self
    }

    /// Forgets every push under way (aborting it), every backoff and every
    /// ACK seen: when this replica starts or stops leading, the next round
    /// pushes every edge once, as after a restart.
    pub fn reset(&self) {
        let mut state = lock(&self.state);
        for (_, f) in state.in_flight.drain() {
            f.task.abort();
        }
        state.backoff.clear();
        state.confirmed.clear();
    }

    /// A version was just committed: note when, and push it now.
    pub fn committed(&self, version: Version) {
        lock(&self.commits).insert(version, Instant::now());
        self.wake();
    }

    /// Starts a round now (after a commit, or when an edge is added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until an edge reports holding a version the history lacks:
    /// numbered above the committed one, or the committed number with
    /// another digest (the store lost what the edges hold).
    pub async fn edge_ahead(&self) {
        self.ahead.notified().await;
    }

    /// The client this fan-out speaks to edges with.
    pub fn client(&self) -> &EdgeClient {
        &self.edges
    }

    /// Notes what an edge reported holding against the committed `head`.
    fn reported(&self, held: Option<Applied>, head: Applied) {
        if held.is_some_and(|h| {
            h.version > head.version || (h.version == head.version && h.digest != head.digest)
        }) {
            self.ahead.notify_one();
        }
    }

    /// Forgets what is known of an edge that was removed.
    pub fn forget(&self, edge: EdgeId) {
        let mut state = lock(&self.state);
        if let Some(f) = state.in_flight.remove(&edge) {
            f.task.abort();
        }
        state.backoff.remove(&edge);
        state.confirmed.retain(|(e, _)| *e != edge);
    }

    /// Runs reconciliation rounds until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut verified = Instant::now();
        // Verify passes under way: stopped with this task.
        let mut verifying = tokio::task::JoinSet::new();
        loop {
            if let Err(e) = self.round() {
                tracing::warn!("reconcile round failed: {e}");
            }
            while verifying.try_join_next().is_some() {}
            if verified.elapsed() >= self.opts.verify_every {
                verified = Instant::now();
                verifying.spawn(self.clone().verify());
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.opts.reconcile_every) => {}
            }
        }
    }

    /// One round: start a push to every edge that lags and is not waiting.
    fn round(self: &Arc<Self>) -> crate::store::Result<()> {
        let Some(current) = self.store.current()? else {
            return Ok(());
        };
        let signed = Arc::new(Signed::from(&current));
        let edges = self.store.edges()?;
        let now = Instant::now();
        let mut state = lock(&self.state);
        let lagging: Vec<EdgeRow> = edges
            .into_iter()
            .filter(|edge| {
                let held = holds(edge.acked, current.applied());
                state.step(edge.id, held, current.version, now) == Step::Push
            })
            .collect();
        // What each is sent, in one transaction before any PUT goes out.
        let ids: Vec<EdgeId> = lagging.iter().map(|e| e.id).collect();
        record(self.store.record_sent(&ids, current.version));
        for edge in lagging {
            // An older version still under way is superseded.
            if let Some(older) = state.in_flight.remove(&edge.id) {
                older.task.abort();
            }
            state.next_id += 1;
            let id = state.next_id;
            let (me, signed, edge_id) = (self.clone(), signed.clone(), edge.id);
            let task = tokio::spawn(async move { me.push_one(edge, id, &signed).await });
            state.in_flight.insert(
                edge_id,
                InFlight {
                    version: current.version,
                    id,
                    task: task.abort_handle(),
                },
            );
        }
        Ok(())
    }

    /// Pushes `signed` to one edge and records what came of it.
    async fn push_one(&self, edge: EdgeRow, id: u64, signed: &Signed) {
        let retries = Retries {
            count: self.opts.retries,
            backoff: self.opts.backoff,
        };
        let mut pushed = self.edges.push(&edge.url, signed, retries).await;
        // An edge that missed a key rotation trusts only keys the committed
        // version is no longer signed by: bring it through the versions
        // that changed the keys, each signed by a key it trusts by then.
        let mut steps = 0;
        while steps < MAX_KEY_STEPS
            && matches!(&pushed.answer, Answer::Nack { error, .. } if error.contains(UNTRUSTED_KEY))
        {
            let Answer::Nack { held, .. } = &pushed.answer else {
                break;
            };
            let Some(step) = self.key_step(&edge.url, *held, signed.version).await else {
                break;
            };
            steps += 1;
            tracing::info!(
                "{} does not trust the key of version {}: pushing version {} first",
                edge.url,
                signed.version,
                step.version
            );
            let stepped = self.edges.push(&edge.url, &step, retries).await;
            self.metrics
                .pushes
                .fetch_add(u64::from(stepped.attempts), Ordering::Relaxed);
            if !matches!(stepped.answer, Answer::Ack { .. }) {
                pushed = stepped;
                break;
            }
            pushed = self.edges.push(&edge.url, signed, retries).await;
        }
        self.metrics
            .pushes
            .fetch_add(u64::from(pushed.attempts), Ordering::Relaxed);
        self.settle(&edge, id, signed, pushed.answer);
    }

    /// Records what an edge made of push `id` of `signed`: its row, its
    /// retry state, and the version's convergence when it was the last
    /// edge to acknowledge it. Work of its own only: no read of the other
    /// edges' rows.
    fn settle(&self, edge: &EdgeRow, id: u64, signed: &Signed, answer: Answer) {
        let version = signed.version;
        let next = match answer {
            Answer::Ack { held, latency_ms } => {
                self.metrics.acks.fetch_add(1, Ordering::Relaxed);
                record(self.store.record_ack(edge.id, held, latency_ms));
                Next::Done
            }
            Answer::Nack { held, error } => {
                self.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{} refused version {version}: {}",
                    edge.url,
                    shorten(&error, 200)
                );
                record(self.store.record_nack(edge.id, version, held, &error));
                self.reported(held, signed.applied());
                Next::Refused
            }
            Answer::NoAnswer(error) => {
                self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!("{}: no answer to version {version}: {error}", edge.url);
                record(self.store.record_failure(edge.id, &error));
                Next::Silent
            }
        };
        {
            let mut state = lock(&self.state);
            if state.in_flight.get(&edge.id).is_some_and(|f| f.id == id) {
                state.in_flight.remove(&edge.id);
            }
            if next == Next::Done {
                state.backoff.remove(&edge.id);
                state.confirmed.insert((edge.id, version));
            } else {
                let fails = state
                    .backoff
                    .get(&edge.id)
                    .filter(|b| b.version == version)
                    .map_or(0, |b| b.fails)
                    + 1;
                let wait = match next {
                    // A refusal will not change by asking again soon.
                    Next::Refused => self.opts.max_backoff,
                    // A silent edge may be back any moment: retry soon, then
                    // less and less often.
                    _ => (self.opts.reconcile_every * 2u32.saturating_pow(fails.min(8)))
                        .min(self.opts.max_backoff),
                };
                let until = Instant::now() + wait;
                state.backoff.insert(
                    edge.id,
                    Backoff {
                        version,
                        until,
                        fails,
                    },
                );
            }
        }
        if next == Next::Done {
            self.converged(signed);
        }
    }

    /// The newest version between what `edge` holds and `target` that is
    /// signed by a key the edge trusts now: the step that brings it through
    /// a key rotation it missed. `None` when there is none.
    async fn key_step(&self, edge: &str, held: Option<Applied>, target: Version) -> Option<Signed> {
        let trusted = self.edges.report(edge).await.ok()?.keys;
        let above = Version::new(held.map_or(0, |h| h.version));
        // Signatures only (no bodies), newest first: cheap however long the
        // history an edge missed.
        let step = self
            .store
            .signatures_between(above, target)
            .ok()?
            .into_iter()
            .find(|(_, signature)| {
                rollout_core::SignatureHeader::parse(signature)
                    .ok()
                    .and_then(|h| h.key)
                    .is_some_and(|id| trusted.contains(&id))
            })?;
        let row = self.store.version(step.0).ok()??;
        Some(Signed {
            stamp: false,
            ..Signed::from(&row)
        })
    }

    /// Asks every edge believed to hold the committed version what it holds,
    /// and forgets the belief where it is wrong, so the next round pushes again.
    async fn verify(self: Arc<Self>) {
        let (Ok(Some(current)), Ok(edges)) = (self.store.current(), self.store.edges()) else {
            return;
        };
        let checks = edges.into_iter().filter(|e| {
            let state = lock(&self.state);
            state.confirmed.contains(&(e.id, current.version))
                && !state.in_flight.contains_key(&e.id)
        });
        let checks = checks.map(|edge| {
            let me = self.clone();
            let committed = current.applied();
            async move {
                // Silence is for the push path to judge, at the next version.
                let Ok(held) = me.edges.held(&edge.url).await else {
                    return;
                };
                if holds(held, committed) {
                    return;
                }
                tracing::warn!(
                    "{} holds version {} instead of {}: pushing again",
                    edge.url,
                    held.map_or(0, |h| h.version),
                    committed.version
                );
                record(me.store.record_held(edge.id, held));
                me.reported(held, committed);
                lock(&me.state)
                    .confirmed
                    .remove(&(edge.id, Version::new(committed.version)));
                me.wake();
            }
        });
        futures_util::future::join_all(checks).await;
    }

    /// Records the commit-to-last-ACK time once every edge holds `signed`
    /// (called after each ACK of it). Whether every edge holds it is
    /// counted by the store as the rows change, not read from every row:
    /// one lookup per ACK, so a fan-out's work grows with the fleet, not
    /// with its square.
    fn converged(&self, signed: &Signed) {
        let version = signed.version;
        let held = self.store.holding(signed.applied());
        if held.edges == 0 || !held.all() {
            return;
        }
        let Ok(Some(issued_ms)) = self.store.issued_ms(version) else {
            return;
        };
        // The commit's own clock when this process made it; the wall clock
        // otherwise (a version committed before a restart).
        let since = lock(&self.commits).get(&version).copied();
        let ms = since.map_or_else(
            || (now_ms() - issued_ms).max(0) as f64,
            |at| at.elapsed().as_secs_f64() * 1000.0,
        );
        if let Ok(true) = self.store.record_convergence(version, held.edges, ms) {
            self.metrics.observe_convergence(ms / 1000.0);
            lock(&self.commits).retain(|v, _| *v > version);
            tracing::info!(
                "version {version} on all {} edges {ms:.1} ms after commit",
                held.edges
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state whole; a panic elsewhere
    // does not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(result: crate::store::Result<()>) {
    if let Err(e) = result {
        tracing::warn!("recording a push outcome: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keyring;
    use crate::store::NewVersion;

    /// A store in a directory of its own with `edges` edges and version 1
    /// (issued `age_ms` ago) committed, and a fan-out over it.
    fn fleet(name: &str, edges: usize, age_ms: i64) -> (std::path::PathBuf, Arc<Store>, Fanout) {
        let dir = std::env::temp_dir().join(format!("rollout-push-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir.join("control.sqlite")).expect("store"));
        for i in 0..edges {
            store
                .add_edge(&format!("http://edge-{i}.test"))
                .expect("edge");
        }
        store
            .commit(Version::NONE, "push", |_, _| {
                let body = b"version 1".to_vec();
                Ok::<_, std::convert::Infallible>(NewVersion {
                    digest: rollout_core::Digest::of(&body),
                    body,
                    signature: "sig".into(),
                    actor: "t".into(),
                    reason: "r".into(),
                    issued_at: "then".into(),
                    issued_ms: now_ms() - age_ms,
                })
            })
            .expect("v1");
        let ring = Keyring::new(vec![rollout_core::SecretKey::from_seed([7; 32])]).expect("keys");
        let fanout = Fanout::new(
            store.clone(),
            Arc::new(Metrics::default()),
            Keys::in_memory(ring),
            PushOptions::default(),
        )
        .expect("fan-out");
        (dir, store, fanout)
    }

    fn ack(signed: &Signed) -> Answer {
        Answer::Ack {
            held: signed.applied(),
            latency_ms: 1.0,
        }
    }

    /// 1 000 ACKs of a fan-out read no edge's row (whether every edge holds
    /// the version is counted as the rows change), and the version is
    /// recorded as converged at the last ACK, not before.
    #[test]
    fn acks_of_a_fan_out_to_1000_edges_read_no_other_edges_row() {
        let (dir, store, fanout) = fleet("1000", 1000, 0);
        let current = store.current().expect("read").expect("v1");
        fanout.committed(current.version);
        let signed = Signed::from(&current);
        let edges = store.edges().expect("edges");
        let read = store.edge_rows_read();
        for (i, edge) in edges.iter().enumerate() {
            assert_eq!(
                store.convergence(current.version).expect("read"),
                None,
                "converged after {i} of 1000 ACKs"
            );
            fanout.settle(edge, i as u64, &signed, ack(&signed));
        }
        assert!(store.convergence(current.version).expect("read").is_some());
        assert_eq!(store.edge_rows_read(), read, "edge rows read by 1000 ACKs");
        let text = fanout.metrics.render(&crate::metrics::Gauges {
            version: 1,
            versions: 1,
            edges: 1000,
            edges_acked: 1000,
            edges_unreachable: 0,
            plans_by_phase: Vec::new(),
            running: Vec::new(),
            leadership: rollout_api::LeadershipView {
                leader: None,
                token: 0,
                replica: "r".into(),
                leading: false,
            },
        });
        assert!(text.contains("rollout_convergence_seconds_count 1\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An edge that refuses or does not answer holds the version back
    /// until it acknowledges; a version committed before this process
    /// started is timed from its issue time.
    #[test]
    fn an_edge_that_refuses_or_is_silent_holds_convergence_back() {
        let (dir, store, fanout) = fleet("behind", 3, 5_000);
        let current = store.current().expect("read").expect("v1");
        let signed = Signed::from(&current);
        let edges = store.edges().expect("edges");
        let nack = Answer::Nack {
            held: None,
            error: "signature does not verify".into(),
        };
        fanout.settle(&edges[0], 1, &signed, ack(&signed));
        fanout.settle(&edges[1], 2, &signed, nack);
        fanout.settle(&edges[2], 3, &signed, Answer::NoAnswer("timed out".into()));
        assert_eq!(store.convergence(current.version).expect("read"), None);
        {
            let state = lock(&fanout.state);
            assert!(state.confirmed.contains(&(edges[0].id, current.version)));
            assert_eq!(
                (state.backoff.get(&edges[1].id).map(|b| b.fails)),
                Some(1),
                "the refusal is retried"
            );
            assert!(state.backoff.contains_key(&edges[2].id), "so is silence");
        }
        fanout.settle(&edges[1], 4, &signed, ack(&signed));
        assert_eq!(store.convergence(current.version).expect("read"), None);
        fanout.settle(&edges[2], 5, &signed, ack(&signed));
        let ms = store.convergence(current.version).expect("read");
        assert!(
            ms.is_some_and(|ms| ms >= 5_000.0),
            "timed from its issue: {ms:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_backoff_holds_back_only_retries_of_the_version_that_failed() {
        let now = Instant::now();
        let (v1, v2) = (Version::new(1), Version::new(2));
        let mut state = PushState::default();
        state.backoff.insert(
            7,
            Backoff {
                version: v1,
                until: now + Duration::from_secs(5),
                fails: 3,
            },
        );
        assert_eq!(state.step(7, false, v1, now), Step::Leave, "v1 waits");
        assert_eq!(state.step(7, false, v2, now), Step::Push, "v2 goes now");
        assert_eq!(
            state.step(7, false, v1, now + Duration::from_secs(6)),
            Step::Push,
            "v1 once the backoff is over"
        );
        state.confirmed.insert((7, v2));
        assert_eq!(state.step(7, true, v2, now), Step::Leave, "it holds v2");
        assert_eq!(
            state.step(7, false, v2, now),
            Step::Push,
            "it said it held v2 but no longer does"
        );
    }
}
