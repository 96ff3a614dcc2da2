//! Leadership among replicas of the control service on one store.
//!
//! Every replica serves the API and commits versions. One at a time, the
//! leader, runs the fan-out, reconciliation, verification, plans, hooks and
//! webhooks: the replica holding the lease row ([`crate::store::LeaseRow`]).
//! It renews the lease every quarter of its time to live, and counts itself
//! the leader only until three quarters of it have passed since the renewal
//! was sent, by its monotonic clock: a replica that cannot reach the store,
//! or was frozen, stops before any other can take over. What it writes in
//! the background also carries its fencing token, checked in the same
//! transaction, so a write delayed past a takeover is refused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Store;

/// How long a lease lasts unless renewed, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Until when this replica may act as the leader; shared with what pushes,
/// which checks it before every request to an edge.
#[derive(Debug, Default)]
pub struct LeaseClock {
    until: Mutex<Option<Instant>>,
}

impl LeaseClock {
    /// A clock that is always valid: for a fan-out run without leadership
    /// (tests, tools).
    pub fn always() -> Arc<LeaseClock> {
        Arc::new(LeaseClock {
            until: Mutex::new(Some(
                Instant::now() + Duration::from_secs(100 * 365 * 86_400),
            )),
        })
    }

    /// Whether this replica leads now.
    pub fn valid(&self) -> bool {
        self.until().is_some_and(|u| Instant::now() < u)
    }

    /// When its lead runs out, unless renewed.
    pub fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, until: Option<Instant>) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

/// This replica's part in leadership.
#[derive(Debug)]
pub struct Leadership {
    store: Arc<Store>,
    id: String,
    nonce: String,
    ttl: Duration,
    clock: Arc<LeaseClock>,
    /// The token while this replica leads, `None` otherwise.
    token: tokio::sync::watch::Sender<Option<i64>>,
    /// Set once the lease was given up for good (the service stops).
    released: std::sync::atomic::AtomicBool,
}

/// Whether `id` can name a replica: `[A-Za-z0-9._:-]`, 1 to 128 bytes (it
/// is a metrics label value and a log field).
pub fn check_replica_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("{id:?}: 1 to 128 bytes"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "{id:?}: {c:?} is not allowed (A-Z a-z 0-9 . _ : -)"
        ));
    }
    Ok(())
}

impl Leadership {
    /// Replica `id` on `store`, with leases of `ttl`.
    pub fn new(store: Arc<Store>, id: String, ttl: Duration) -> Leadership {
        let mut nonce = [0u8; 8];
        // Without randomness the process id tells one start from another.
        if getrandom::fill(&mut nonce).is_err() {
            nonce = u64::from(std::process::id()).to_le_bytes();
        }
        Leadership {
            store,
            id,
            nonce: hex::encode(nonce),
            ttl,
            clock: Arc::default(),
            token: tokio::sync::watch::Sender::new(None),
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The clock the fan-out checks before every push.
    pub fn clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    /// The token while this replica leads, as it changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Option<i64>> {
        self.token.subscribe()
    }

    /// Takes or renews the lease now; whether this replica leads after.
    pub fn claim(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if self.released.load(SeqCst) {
            return false;
        }
        let sent = Instant::now();
        let ttl_ms = self.ttl.as_millis().min(i64::MAX as u128) as i64;
        match self.store.claim_lease(&self.id, &self.nonce, ttl_ms) {
            Ok(Some(_)) if self.released.load(SeqCst) => {
                // Given up while this claim was under way: give it up again.
                self.release();
                false
            }
            Ok(Some(token)) => {
                let until = sent + self.ttl.mul_f64(0.75);
                if Instant::now() >= until {
                    tracing::warn!("renewing the leader lease took too long");
                    self.lose();
                    return false;
                }
                self.clock.set(Some(until));
                self.store.set_fence(token, &self.nonce);
                self.token.send_if_modified(|t| {
                    let changed = *t != Some(token);
                    if changed {
                        tracing::info!("replica {} leads (lease token {token})", self.id);
                    }
                    *t = Some(token);
                    changed
                });
                if self.released.load(SeqCst) {
                    // Released while this claim was being recorded.
                    self.lose();
                    return false;
                }
                true
            }
            Ok(None) => {
                self.lose();
                false
            }
            Err(e) => {
                // The lead, if any, runs out on its own.
                tracing::warn!("renewing the leader lease: {e}");
                self.clock.valid()
            }
        }
    }

    /// Stops leading at once.
    fn lose(&self) {
        self.clock.set(None);
        self.store.set_fence(0, &self.nonce);
        self.token.send_if_modified(|t| {
            let changed = t.is_some();
            if changed {
                tracing::warn!("replica {} no longer leads", self.id);
            }
            *t = None;
            changed
        });
    }

    /// Claims and renews the lease every quarter of its time to live,
    /// counted from when each claim was sent (a slow claim is followed by
    /// the next at once, before the lead runs out), until the task is
    /// dropped. The lead itself ends when its clock runs out
    /// ([`LeaseClock::valid`]), whatever this loop is doing.
    pub async fn run(self: Arc<Self>) {
        loop {
            let sent = tokio::time::Instant::now();
            let me = self.clone();
            // The claim blocks on the store.
            let _ = tokio::task::spawn_blocking(move || me.claim()).await;
            tokio::time::sleep_until(sent + self.ttl / 4).await;
        }
    }

    /// Gives the lease up (a clean shutdown), so another replica takes over
    /// without waiting for it to expire.
    pub fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.lose();
        if let Err(e) = self.store.release_lease(&self.id, &self.nonce) {
            tracing::warn!("giving up the leader lease: {e}");
        }
    }

    /// The lease as stored, for status and metrics: (leader, token), the
    /// leader `None` when the lease has expired.
    pub fn current(&self) -> crate::store::Result<(Option<String>, i64)> {
        Ok(match self.store.lease()? {
            Some(row) => ((row.expires_in_ms > 0).then_some(row.holder), row.token),
            None => (None, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_whose_lead_ran_out_sends_no_push() {
        use crate::edge_client::{Answer, EdgeClient, Retries, Signed};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let edge = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Ok((_tcp, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let clock = Arc::new(LeaseClock::default());
        let client = EdgeClient::new(Duration::from_millis(200))
            .expect("client")
            .gated_by(clock.clone());
        let body = bytes::Bytes::from_static(b"{}");
        let signed = Signed {
            version: rollout_api::Version::new(1),
            digest: rollout_core::Digest::of(&body),
            body,
            signature: "ed25519=x".into(),
            stamp: false,
        };
        let retries = Retries {
            count: 2,
            backoff: Duration::from_millis(10),
        };
        // Never led, then led until a moment ago: nothing goes out.
        for until in [None, Some(Instant::now())] {
            clock.set(until);
            let pushed = client.push(&edge, &signed, retries).await;
            assert_eq!(pushed.attempts, 0);
            assert!(
                matches!(pushed.answer, Answer::NoAnswer(ref e) if e.contains("does not lead"))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        // While it leads, the push goes out (this listener never answers).
        clock.set(Some(Instant::now() + Duration::from_secs(60)));
        let pushed = client.push(&edge, &signed, retries).await;
        assert_eq!(pushed.attempts, 3);
        assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }

    #[test]
    fn replica_ids_are_label_safe() {
        for ok in ["a", "control-1", "host.example:8080", "r_2"] {
            assert!(check_replica_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x\"y", "é", &"a".repeat(129)] {
            assert!(check_replica_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_replica_leads_and_a_restarted_one_fences_the_old_process() {
        let dir = std::env::temp_dir().join(format!("rollout-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir.join("s.sqlite")).expect("open"));
        let ttl = Duration::from_secs(30);
        let a = Leadership::new(store.clone(), "a".into(), ttl);
        let b = Leadership::new(store.clone(), "b".into(), ttl);
        assert!(a.claim(), "a free lease is taken");
        let first = *a.watch().borrow();
        assert!(!b.claim(), "another replica waits for the expiry");
        assert!(a.claim(), "the holder renews");
        assert_eq!(*a.watch().borrow(), first, "renewing keeps the token");
        assert_eq!(a.current().expect("lease"), (Some("a".to_owned()), 1));

        // A restart of `a`: same id, another process.
        let again = Leadership::new(store.clone(), "a".into(), ttl);
        assert!(
            !again.claim(),
            "another process under the same id waits for the expiry"
        );
        a.release();
        assert!(again.claim(), "a released lease is taken at once");
        assert_eq!(*again.watch().borrow(), Some(2), "with a new token");
        // The old process's background writes are refused from now on,
        // plan steps included.
        store.set_fence(1, &a.nonce);
        let refused = store.record_convergence(rollout_api::Version::new(1), 0, 1.0);
        assert!(
            matches!(
                refused,
                Err(crate::store::Error::Fenced { ours: 1, stored: 2 })
            ),
            "{refused:?}"
        );
        let step = store.write_fenced(|tx| tx.audit("plan:1", "plan", "a step"));
        assert!(
            matches!(step, Err(crate::store::Error::Fenced { .. })),
            "{step:?}"
        );
        // The same token from another process (a lease row rolled back by
        // a database failover) is no fence either.
        store.set_fence(2, &a.nonce);
        let refused = store.record_convergence(rollout_api::Version::new(1), 0, 1.0);
        assert!(
            matches!(refused, Err(crate::store::Error::Fenced { .. })),
            "{refused:?}"
        );
        store.set_fence(2, &again.nonce);
        store
            .write_fenced(|tx| tx.audit("plan:1", "plan", "a step"))
            .expect("the holder writes");
        again.release();
        assert!(b.claim(), "then another replica takes it");
        assert_eq!(*b.watch().borrow(), Some(3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
