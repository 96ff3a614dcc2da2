//! The leader lease: one row saying which replica runs the fan-out,
//! reconciliation, verification, plans, hooks and webhooks, until when, and
//! with which fencing token.
//!
//! A replica takes the lease when it is free or expired (or already its
//! own), in a write transaction, so it is serialised with every other write.
//! Each new holder gets a higher token. Everything the leader writes in the
//! background (push bookkeeping, plan steps, hook results, deliveries)
//! checks in its own transaction that the row still carries its token: a
//! leader that lost the lease, or was frozen past its expiry, cannot write
//! once another replica has taken over.
//!
//! Expiry is judged by the database's clock on PostgreSQL (replicas' clocks
//! may differ), and by the local clock on a SQLite file (every replica is on
//! one machine).

use super::db::{Conn, Error, Result, Sql, params};
use super::{RawTx, Store, Tx, TxKind, now_ms};

/// The lease table (both databases accept this SQL).
pub(super) const LEASE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leader_lease (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
";

/// [`Store`]'s fence when no leadership is in use (a store opened by a
/// tool or a test): leader-made writes are not checked.
pub(super) const UNFENCED: i64 = -1;

/// Who holds the lease, as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The holder's replica id.
    pub holder: String,
    /// Its fencing token.
    pub token: i64,
    /// Milliseconds until it expires (negative: expired), by the clock
    /// that judges it.
    pub expires_in_ms: i64,
}

/// The time the lease is judged by, in ms since the Unix epoch.
fn lease_now(db: &impl Sql) -> Result<i64> {
    match db.conn() {
        Conn::Sqlite(_) => Ok(now_ms()),
        Conn::Pg(_) => db.query_row(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            params![],
            |r| r.get(0),
        ),
    }
}

impl Store {
    /// Takes or renews the lease for replica `holder` (this process:
    /// `nonce`) for `ttl_ms`: its token when this replica holds it now,
    /// `None` when another holder's lease has not expired. Another process
    /// under the same id (a restart, or a second process by mistake) is
    /// another holder: it waits for the expiry and then gets a new token,
    /// which fences whatever is left of the old process.
    pub fn claim_lease(&self, holder: &str, nonce: &str, ttl_ms: i64) -> Result<Option<i64>> {
        let conn = self.conn();
        let tx = RawTx::begin(&conn, TxKind::Write)?;
        tx.execute(
            "INSERT INTO leader_lease (id, holder, nonce, token, expires_ms)
             VALUES (1, '', '', 0, 0) ON CONFLICT DO NOTHING",
            params![],
        )?;
        let now = lease_now(&tx)?;
        let token = tx.query_opt(
            "UPDATE leader_lease SET
                token = CASE WHEN holder = ?1 AND nonce = ?2 THEN token ELSE token + 1 END,
                holder = ?1, nonce = ?2, expires_ms = ?3
             WHERE id = 1 AND ((holder = ?1 AND nonce = ?2) OR expires_ms < ?4)
             RETURNING token",
            params![holder, nonce, now.saturating_add(ttl_ms), now],
            |r| r.get::<i64>(0),
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// Gives the lease up (a clean shutdown), if `holder`/`nonce` holds it:
    /// another replica takes over at once instead of after the expiry.
    pub fn release_lease(&self, holder: &str, nonce: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE leader_lease SET expires_ms = 0 WHERE id = 1 AND holder = ?1 AND nonce = ?2",
            params![holder, nonce],
        )?;
        Ok(())
    }

    /// The lease as stored; `None` before any replica took it.
    pub fn lease(&self) -> Result<Option<LeaseRow>> {
        let conn = self.conn();
        let now = lease_now(&*conn)?;
        conn.query_opt(
            "SELECT holder, token, expires_ms FROM leader_lease WHERE id = 1 AND token > 0",
            params![],
            |r| {
                Ok(LeaseRow {
                    holder: r.get(0)?,
                    token: r.get(1)?,
                    expires_in_ms: r.get::<i64>(2)?.saturating_sub(now),
                })
            },
        )
    }

    /// From now on leader-made writes must carry `token` and this
    /// process's `nonce` (token 0: this replica does not lead, and they are
    /// refused).
    pub fn set_fence(&self, token: i64, nonce: &str) {
        let mut fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        *fence = (token.max(0), nonce.to_owned());
    }

    /// The token and nonce leader-made writes carry ([`UNFENCED`]: none is
    /// checked).
    fn fence(&self) -> (i64, String) {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` in a transaction that first checks this replica still holds
    /// the lease with its token ([`Error::Fenced`] otherwise, and nothing
    /// is written): for what only the leader writes.
    pub(super) fn fenced<T>(&self, f: impl FnOnce(&RawTx<'_>) -> Result<T>) -> Result<T> {
        self.fenced_then(f, |_| {})
    }

    /// [`Store::fenced`], then `after` with what `f` returned once it is
    /// committed, before the connection is let go (so whatever `after`
    /// keeps beside the rows changes with them).
    pub(super) fn fenced_then<T>(
        &self,
        f: impl FnOnce(&RawTx<'_>) -> Result<T>,
        after: impl FnOnce(&T),
    ) -> Result<T> {
        let fence = self.fence();
        let conn = self.conn();
        let tx = RawTx::begin(&conn, TxKind::Write)?;
        check_fence(&tx, &fence)?;
        let out = f(&tx)?;
        tx.commit()?;
        after(&out);
        drop(conn);
        Ok(out)
    }

    /// [`Store::write`], refused unless this replica holds the lease: for
    /// what the leader's background work commits (plan steps).
    pub fn write_fenced<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let fence = self.fence();
        self.write(|tx| {
            check_fence(&tx.0, &fence)?;
            f(tx)
        })
    }
}

/// Whether the lease row still carries `fence` (token and nonce: after a
/// failover of PostgreSQL to a standby that lost the last renewals, a token
/// number can come round again for another holder).
fn check_fence(tx: &RawTx<'_>, fence: &(i64, String)) -> Result<()> {
    let (token, nonce) = fence;
    if *token == UNFENCED {
        return Ok(());
    }
    let stored = tx.query_opt(
        "SELECT token, nonce FROM leader_lease WHERE id = 1",
        params![],
        |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
    )?;
    let holds = stored
        .as_ref()
        .is_some_and(|(t, n)| *token > 0 && t == token && n == nonce);
    if !holds {
        return Err(Error::Fenced {
            ours: *token,
            stored: stored.map_or(0, |s| s.0),
        });
    }
    Ok(())
}
