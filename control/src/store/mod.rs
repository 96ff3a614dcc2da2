//! The control service's store: one SQLite file in WAL mode, or a
//! PostgreSQL database that several replicas share (see [`db`]).
//!
//! Versions are immutable rows (triggers refuse UPDATE and DELETE), so the
//! history and its hash chain can only grow. Edges, their push state, the
//! convergence time of each version and an audit of who did what live beside
//! them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context as _;
use bytes::Bytes;
use rollout_api::Version;
use rollout_core::{Applied, Digest, MAX_VERSION};
use rusqlite::{Connection, OpenFlags};

pub mod db;
mod hooks;
mod lease;
mod plans;

use db::{Conn, RawTx, Row, Sql, TxKind, params};
pub use db::{Error, Result};

pub use hooks::{HookRunRow, NewHookRun};
pub use lease::LeaseRow;
pub use plans::{CheckRow, EventRow, OutboxRow, PlanId, PlanRow};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    version    INTEGER PRIMARY KEY,
    parent     TEXT,
    digest     TEXT NOT NULL UNIQUE,
    body       BLOB NOT NULL,
    signature  TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    issued_at  TEXT NOT NULL,
    issued_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (issued_ms);
CREATE TABLE IF NOT EXISTS edges (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    url       TEXT NOT NULL UNIQUE,
    added_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS edge_state (
    edge_id          INTEGER PRIMARY KEY REFERENCES edges (id) ON DELETE CASCADE,
    sent_version     INTEGER NOT NULL DEFAULT 0,
    acked_version    INTEGER NOT NULL DEFAULT 0,
    acked_digest     TEXT,
    reported_version INTEGER NOT NULL DEFAULT 0,
    nack_version     INTEGER,
    nack_error       TEXT,
    last_error       TEXT,
    failing_since_ms INTEGER,
    last_contact_ms  INTEGER,
    latency_ms       REAL
);
CREATE TABLE IF NOT EXISTS convergence (
    version INTEGER PRIMARY KEY REFERENCES versions (version),
    edges   INTEGER NOT NULL,
    ms      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_ms);
CREATE TABLE IF NOT EXISTS plans (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    route      TEXT NOT NULL,
    doc        TEXT NOT NULL,
    state      TEXT NOT NULL,
    phase      TEXT NOT NULL,
    rev        INTEGER NOT NULL DEFAULT 0,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_running_plan_per_route ON plans (route)
    WHERE phase NOT IN ('promoted', 'aborted', 'failed');
CREATE TABLE IF NOT EXISTS plan_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    plan    INTEGER NOT NULL REFERENCES plans (id),
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL,
    version INTEGER
);
CREATE TABLE IF NOT EXISTS check_results (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    plan        INTEGER NOT NULL REFERENCES plans (id),
    name        TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    verdict     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    measurement TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_results_by_plan ON check_results (plan, id);
CREATE TABLE IF NOT EXISTS templates (
    name       TEXT PRIMARY KEY,
    doc        TEXT NOT NULL,
    actor      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event      INTEGER NOT NULL REFERENCES plan_events (id),
    url        TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_ms    INTEGER NOT NULL,
    done_ms    INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (done_ms, next_ms);
";

/// Tables whose rows are never changed nor removed, and what a statement
/// that tries is told.
const VERSIONS_FIXED: (&str, &str) = ("versions", "versions are immutable");
const LOST_FIXED: (&str, &str) = ("lost_versions", "lost versions are recorded once");

/// Triggers that refuse every UPDATE and DELETE on each `(table, why)`,
/// in SQLite's words or (after [`PG_TRIGGERS`], which defines
/// `rollout_refuse`) PostgreSQL's.
pub(super) fn refusing_changes(postgres: bool, tables: &[(&str, &str)]) -> String {
    tables
        .iter()
        .map(|(table, why)| {
            if postgres {
                format!(
                    "CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION rollout_refuse('{why}');
"
                )
            } else {
                format!(
                    "CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
    BEGIN SELECT RAISE(ABORT, '{why}'); END;
CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
    BEGIN SELECT RAISE(ABORT, '{why}'); END;
"
                )
            }
        })
        .collect()
}

/// Version numbers the store lost: versions `first..=last` committed,
/// then lost by the database (an asynchronous standby took over, a backup
/// was restored), that no edge held when version `followed_by` (one above
/// `last`) was adopted back from the edges. `audit --verify` reads them as
/// a known loss, not as a gap or a break. Schema 3; rows only ever added.
const LOST_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lost_versions (
    first       BIGINT PRIMARY KEY,
    last        BIGINT NOT NULL,
    followed_by BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL
);
";

/// Most version numbers one adoption may record as lost.
pub const MAX_LOST_VERSIONS: u64 = 10_000;

/// What PostgreSQL needs before its triggers: the function they call, and
/// the table it keeps the schema number in (SQLite keeps it in
/// `user_version`).
const PG_TRIGGERS: &str = "
CREATE TABLE IF NOT EXISTS rollout_schema (schema BIGINT NOT NULL);
CREATE OR REPLACE FUNCTION rollout_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
";

/// Tables and indexes written for SQLite, in PostgreSQL's types: one
/// schema text, so the two databases cannot drift apart.
fn for_postgres(sqlite: &str) -> String {
    sqlite
        .replace(
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA")
        .replace("REAL", "DOUBLE PRECISION")
}

/// One issued version, as stored.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// Version number.
    pub version: Version,
    /// Digest of the previous envelope body.
    pub parent: Option<Digest>,
    /// Digest of `body`.
    pub digest: Digest,
    /// The signed envelope body (cheap to clone for every edge).
    pub body: Bytes,
    /// The `rollout-signature` header value.
    pub signature: String,
    /// Who issued it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Issue time, RFC 3339.
    pub issued_at: String,
    /// Issue time, ms since the Unix epoch.
    pub issued_ms: i64,
}

impl VersionRow {
    /// What an edge holds once it applied this version.
    pub fn applied(&self) -> Applied {
        Applied {
            version: self.version.get(),
            digest: self.digest,
        }
    }
}

/// A registered edge's row id.
pub type EdgeId = i64;

/// A registered edge and what is known about it.
#[derive(Debug, Clone)]
pub struct EdgeRow {
    /// Row id.
    pub id: EdgeId,
    /// Base URL, e.g. `http://127.0.0.1:3000`.
    pub url: String,
    /// Last version pushed to it.
    pub sent_version: Version,
    /// What it holds, as far as the service knows: the version it last
    /// acknowledged, or reported holding when it refused one or was asked.
    pub acked: Option<Applied>,
    /// Version it refused, and why.
    pub nack: Option<(Version, String)>,
    /// Whether pushes to it get no answer, since when and why.
    pub silent: Option<Silence>,
    /// Last time it answered.
    pub last_contact_ms: Option<i64>,
    /// Duration of the last successful push, ms.
    pub latency_ms: Option<f64>,
    /// Highest version it ever reported holding.
    pub reported_version: Version,
}

impl EdgeRow {
    /// The version it holds ([`Version::NONE`]: nothing known).
    pub fn held_version(&self) -> Version {
        self.acked
            .map_or(Version::NONE, |a| Version::new(a.version))
    }
}

/// Pushes to an edge that get no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// The first unanswered push, ms since the Unix epoch.
    pub since_ms: i64,
    /// The last transport error.
    pub error: String,
}

/// One audit entry as stored.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Details.
    pub detail: String,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError<E> {
    /// The caller expected another current version.
    #[error("expected version {expected}, but the current version is {current}")]
    Conflict {
        /// What the caller expected.
        expected: Version,
        /// What is current.
        current: Version,
    },
    /// The builder refused the new version before anything was written.
    #[error(transparent)]
    Refused(E),
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] Error),
}

/// Why a version made around the service cannot join its history.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdoptRefusal(pub String);

/// What a commit writes, built from the version number and the parent row.
#[derive(Debug)]
pub struct NewVersion {
    /// Signed body.
    pub body: Vec<u8>,
    /// Its signature header value.
    pub signature: String,
    /// Its digest.
    pub digest: Digest,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When, RFC 3339.
    pub issued_at: String,
    /// When, ms.
    pub issued_ms: i64,
}

/// The store. One connection behind a mutex: every statement is short,
/// and serialising writers is what makes the expected-version check exact.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Conn>,
    /// What the edge rows say each edge holds, counted: changed only while
    /// `conn` is locked, in the same critical section as the rows, so it
    /// is always what a read of every row would give.
    holdings: Mutex<Holdings>,
    /// The lease token and process nonce leader-made writes carry (see
    /// [`lease`]).
    fence: Mutex<(i64, String)>,
    /// Edge rows read by [`Store::edges`], for tests that pin how much a
    /// fan-out reads.
    #[cfg(test)]
    edge_rows_read: std::sync::atomic::AtomicUsize,
}

/// What every registered edge holds, as its `edge_state` row says, and how
/// many edges hold each version: "does every edge hold X" is one lookup,
/// not a read of every row (which, after every ACK of a fan-out, made a
/// push's work grow with the square of the fleet).
#[derive(Debug, Default, PartialEq, Eq)]
struct Holdings {
    /// Every registered edge (with a state row) and what it holds.
    by_edge: HashMap<EdgeId, Option<Applied>>,
    /// How many edges hold each `(version, digest)`; no zero entries.
    count: HashMap<(u64, Digest), usize>,
}

impl Holdings {
    /// `edge` holds `now` (as the row reads back; see [`as_stored`]).
    fn set(&mut self, edge: EdgeId, now: Option<Applied>) {
        let before = self.by_edge.insert(edge, now);
        self.uncount(before.flatten());
        if let Some(a) = now {
            *self.count.entry((a.version, a.digest)).or_default() += 1;
        }
    }

    /// `edge` is no longer registered.
    fn remove(&mut self, edge: EdgeId) {
        let before = self.by_edge.remove(&edge);
        self.uncount(before.flatten());
    }

    fn uncount(&mut self, held: Option<Applied>) {
        let Some(a) = held else { return };
        let key = (a.version, a.digest);
        if let Some(n) = self.count.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&key);
            }
        }
    }

    fn of(rows: impl IntoIterator<Item = (EdgeId, Option<Applied>)>) -> Holdings {
        let mut h = Holdings::default();
        for (edge, held) in rows {
            h.set(edge, held);
        }
        h
    }
}

/// How many registered edges hold a version, and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Edges whose row says they hold it.
    pub holding: usize,
    /// Registered edges.
    pub edges: usize,
}

impl Holding {
    /// Whether every edge holds it (true when there are none).
    pub fn all(&self) -> bool {
        self.holding == self.edges
    }
}

const VERSION_COLUMNS: &str =
    "version, parent, digest, body, signature, actor, reason, issued_at, issued_ms";

/// A digest column, refusing what is not one.
fn digest_at(r: &Row, i: usize) -> Result<Option<Digest>> {
    let Some(text) = r.get::<Option<String>>(i)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|e| Error::column(i, e))
}

fn version_at(r: &Row, i: usize) -> Result<Version> {
    Ok(Version::new(r.get::<i64>(i)?.max(0) as u64))
}

fn sql(v: Version) -> i64 {
    // Versions are numbered from 1 by this service, so they fit.
    v.get().min(i64::MAX as u64) as i64
}

fn version_row(r: &Row) -> Result<VersionRow> {
    let digest = digest_at(r, 2)?.ok_or_else(|| Error::column(2, "no digest"))?;
    Ok(VersionRow {
        version: version_at(r, 0)?,
        parent: digest_at(r, 1)?,
        digest,
        body: Bytes::from(r.get::<Vec<u8>>(3)?),
        signature: r.get(4)?,
        actor: r.get(5)?,
        reason: r.get(6)?,
        issued_at: r.get(7)?,
        issued_ms: r.get(8)?,
    })
}

/// What an edge holds as its version and digest columns.
fn held_columns(held: Option<Applied>) -> (i64, Option<String>) {
    match held {
        Some(h) => (sql(Version::new(h.version)), Some(h.digest.to_string())),
        None => (0, None),
    }
}

/// What an edge holds, from its version and digest columns.
fn held(version: Version, digest: Option<Digest>) -> Option<Applied> {
    digest.filter(|_| !version.is_none()).map(|digest| Applied {
        version: version.get(),
        digest,
    })
}

/// What a row reads back as holding once `held` is written to it through
/// [`held_columns`] (a version past `i64::MAX` is stored as `i64::MAX`;
/// version 0 reads back as nothing).
fn as_stored(held_now: Option<Applied>) -> Option<Applied> {
    held_now.and_then(|h| {
        held(
            Version::new(sql(Version::new(h.version)) as u64),
            Some(h.digest),
        )
    })
}

/// An edge's id and what it holds, from `id, acked_version, acked_digest`
/// columns. A digest that does not parse counts as holding nothing: such a
/// row makes [`Store::edges`] fail, and no version converges while it does.
fn holder(r: &Row) -> Result<(EdgeId, Option<Applied>)> {
    let digest = digest_at(r, 2).ok().flatten();
    Ok((r.get(0)?, held(version_at(r, 1)?, digest)))
}

/// Every registered edge's id and what its row says it holds.
fn holdings_in(db: &impl Sql) -> Result<Holdings> {
    let rows = db.query_map(
        "SELECT e.id, s.acked_version, s.acked_digest
         FROM edges e JOIN edge_state s ON s.edge_id = e.id",
        params![],
        holder,
    )?;
    Ok(Holdings::of(rows))
}

/// The schema this build reads and writes, kept in SQLite's `user_version`
/// (PostgreSQL: the `rollout_schema` table). A change to the schema raises
/// it and adds its step to [`migrate`].
pub const SCHEMA_VERSION: i64 = 3;

/// A store whose schema is not the one this build uses: opening it refuses,
/// rather than guess, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Written by an older build (0: before schemas were numbered).
    #[error(
        "{path} has store schema {found}, older than this rollout's {SCHEMA_VERSION}: \
         back the store up, then run `rollout migrate --db {path}`"
    )]
    Older {
        /// The store (a file, or a database URL without its password).
        path: String,
        /// Its schema.
        found: i64,
    },
    /// Written by a newer build, which may store what this one cannot read.
    #[error(
        "{path} has store schema {found}, newer than this rollout's {SCHEMA_VERSION}: \
         it was written by a newer rollout; run that one (a store is never migrated down)"
    )]
    Newer {
        /// The store.
        path: String,
        /// Its schema.
        found: i64,
    },
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema the store had.
    pub from: i64,
    /// The schema it has now ([`SCHEMA_VERSION`]).
    pub to: i64,
}

/// Where a store is: `--db` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location<'a> {
    /// A SQLite file.
    File(&'a Path),
    /// A PostgreSQL database (`postgres://` or `postgresql://`).
    Postgres(&'a str),
}

impl<'a> Location<'a> {
    /// `--db` read as a location.
    pub fn of(db: &'a Path) -> Location<'a> {
        match db.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Location::Postgres(url)
            }
            _ => Location::File(db),
        }
    }
}

impl std::fmt::Display for Location<'_> {
    /// The file, or the URL without its user information (which may hold a
    /// password, perhaps with `/` or `@` in it) and without its query
    /// parameters (which may hold one too).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let (hidden, host) = match rest.rsplit_once('@') {
                    Some((_, host)) => ("***@", host),
                    None => ("", rest),
                };
                let host = host.split('?').next().unwrap_or_default();
                write!(f, "{scheme}://{hidden}{host}")
            }
        }
    }
}

/// Opens the file at `path` with the settings every connection uses;
/// `create` also makes the file when there is none. The journal mode is set
/// by [`use_wal`], once the file is known to be a store.
fn connect(path: &Path, create: bool) -> anyhow::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    // synchronous=NORMAL survives a crash of the process; commits of
    // versions switch to FULL so an answered commit also survives a crash
    // of the machine, while the frequent per-edge updates skip the fsync.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Refuses a "file" that is a mistyped database URL or a connection string
/// (`POSTGRES://`, `postgress://`, `host=... password=...`): it must not
/// quietly become a new SQLite file that a replica then leads alone. What it
/// says names no part of the value (it may hold a password).
fn refuse_lookalike(at: &Location<'_>) -> anyhow::Result<()> {
    if let Location::File(path) = at {
        let text = path.to_string_lossy();
        if text.contains("://") || text.contains("password=") || text.contains("host=") {
            anyhow::bail!(
                "--db is neither a postgres:// (or postgresql://) URL nor a plain file path"
            );
        }
    }
    Ok(())
}

/// Connects to the store at `at` (a SQLite file is created when `create`).
fn connect_to(at: &Location<'_>, create: bool) -> anyhow::Result<Conn> {
    refuse_lookalike(at)?;
    Ok(match at {
        Location::File(path) => Conn::Sqlite(connect(path, create)?),
        Location::Postgres(url) => Conn::Pg(Box::new(
            db::PgConn::connect(url).with_context(|| format!("connecting to {at}"))?,
        )),
    })
}

/// Puts the store in WAL mode (readers never block the writer). Switching
/// needs the file to itself, and SQLite answers "busy" at once rather than
/// wait when another connection is switching too (two services started on a
/// new file together), so that is retried for as long as a lock is waited.
/// PostgreSQL has nothing to switch.
fn use_wal(conn: &Conn) -> rusqlite::Result<()> {
    let Conn::Sqlite(conn) = conn else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a file holds, as far as opening it as a store goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No tables and no schema number: a new store, to be created.
    Empty,
    /// A control store of this schema number.
    Store(i64),
    /// Something else (every build of the store created `versions`).
    Foreign,
}

fn found_in(db: &impl Sql) -> Result<Found> {
    match db.conn() {
        Conn::Sqlite(conn) => {
            let number: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let tables = |pattern: &str| -> Result<i64> {
                db.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE ?1",
                    params![pattern],
                    |r| r.get(0),
                )
            };
            Ok(if tables("versions")? > 0 {
                Found::Store(number)
            } else if tables("%")? > 0 || number != 0 {
                Found::Foreign
            } else {
                Found::Empty
            })
        }
        // A database may hold other applications' tables: it is a store
        // when it has the schema table, and not one when it has a
        // `versions` table of someone else's.
        Conn::Pg(_) => {
            let (numbered, versions) = db.query_row(
                "SELECT to_regclass('rollout_schema') IS NOT NULL,
                        to_regclass('versions') IS NOT NULL",
                params![],
                |r| Ok((r.get::<i64>(0)? == 1, r.get::<i64>(1)? == 1)),
            )?;
            if numbered {
                let number =
                    db.query_opt("SELECT MAX(schema) FROM rollout_schema", params![], |r| {
                        r.get::<Option<i64>>(0)
                    })?;
                Ok(Found::Store(number.flatten().unwrap_or(0)))
            } else if versions {
                Ok(Found::Foreign)
            } else {
                Ok(Found::Empty)
            }
        }
    }
}

/// A file that is not a rollout control store; it is never changed.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a rollout control store (it has no versions table)")]
pub struct NotAStore(String);

/// `migrate` was given a path with no file.
#[derive(Debug, thiserror::Error)]
#[error("no store at {0}")]
pub struct NoStore(String);

fn foreign(at: &Location<'_>) -> anyhow::Error {
    match at {
        Location::File(_) => NotAStore(at.to_string()).into(),
        Location::Postgres(_) => anyhow::anyhow!(
            "{at} is not a rollout control store: it has a versions table but no rollout_schema table"
        ),
    }
}

/// Brings the schema from `from` to [`SCHEMA_VERSION`], inside the caller's
/// transaction. Schema 0 is every store written before schemas were
/// numbered: they differ only in tables and indexes added since, which the
/// schema's `IF NOT EXISTS` statements create. Schema 2 added the leader
/// lease, schema 3 the lost versions.
fn upgrade(db: &impl Sql, from: i64) -> Result<()> {
    match db.conn() {
        Conn::Sqlite(conn) => {
            if from < 1 {
                db.batch(SCHEMA)?;
                db.batch(hooks::HOOK_SCHEMA)?;
                db.batch(&refusing_changes(
                    false,
                    &[VERSIONS_FIXED, hooks::RUNS_FIXED, hooks::RESULTS_FIXED],
                ))?;
            }
            if from < 2 {
                db.batch(lease::LEASE_SCHEMA)?;
            }
            if from < 3 {
                db.batch(LOST_SCHEMA)?;
                db.batch(&refusing_changes(false, &[LOST_FIXED]))?;
            }
            Ok(conn.pragma_update(None, "user_version", SCHEMA_VERSION)?)
        }
        Conn::Pg(_) => {
            if from < 1 {
                db.batch(&for_postgres(SCHEMA))?;
                db.batch(PG_TRIGGERS)?;
                db.batch(&for_postgres(hooks::HOOK_SCHEMA))?;
                db.batch(&refusing_changes(
                    true,
                    &[VERSIONS_FIXED, hooks::RUNS_FIXED, hooks::RESULTS_FIXED],
                ))?;
            }
            if from < 2 {
                db.batch(lease::LEASE_SCHEMA)?;
            }
            if from < 3 {
                db.batch(LOST_SCHEMA)?;
                db.batch(&refusing_changes(true, &[LOST_FIXED]))?;
            }
            db.execute("DELETE FROM rollout_schema", params![])?;
            db.execute(
                "INSERT INTO rollout_schema (schema) VALUES (?1)",
                params![SCHEMA_VERSION],
            )?;
            Ok(())
        }
    }
}

/// Migrates the store at `db` to this build's schema, in one transaction:
/// on any failure the store is as it was. A store already at it is left
/// alone. A newer store, a file that is not a store (an empty file
/// included), or no file, is an error, and nothing is created or changed.
pub fn migrate(db: &Path) -> anyhow::Result<Migrated> {
    let at = Location::of(db);
    if let Location::File(path) = at
        && !path.is_file()
    {
        return Err(NoStore(at.to_string()).into());
    }
    let conn = connect_to(&at, false)?;
    let from = {
        let tx = RawTx::begin(&conn, TxKind::Write).with_context(|| format!("locking {at}"))?;
        let from = match found_in(&tx).with_context(|| format!("reading {at}"))? {
            Found::Store(n) => n,
            // A database with no store in it; an empty file is no store either.
            Found::Empty if matches!(at, Location::Postgres(_)) => {
                return Err(NoStore(at.to_string()).into());
            }
            Found::Empty | Found::Foreign => return Err(foreign(&at)),
        };
        if from > SCHEMA_VERSION {
            let path = at.to_string();
            return Err(SchemaError::Newer { path, found: from }.into());
        }
        if from < SCHEMA_VERSION {
            upgrade(&tx, from).with_context(|| format!("migrating {at} from schema {from}"))?;
        }
        tx.commit()?;
        from
    };
    use_wal(&conn).with_context(|| format!("{at}: switching to WAL"))?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

impl Store {
    /// Opens the store at `db`: a SQLite file, created (with its directory)
    /// on first start, or a `postgres://` database, whose tables are created
    /// on first start. A store of another schema is refused ([`SchemaError`]).
    pub fn open(db: &Path) -> anyhow::Result<Store> {
        let at = Location::of(db);
        refuse_lookalike(&at)?;
        if let Location::File(path) = at
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = connect_to(&at, true)?;
        {
            let tx = RawTx::begin(&conn, TxKind::Write).with_context(|| format!("locking {at}"))?;
            let shown = || at.to_string();
            match found_in(&tx).with_context(|| format!("reading {at}"))? {
                Found::Empty => {
                    upgrade(&tx, 0).with_context(|| format!("creating the schema in {at}"))?;
                }
                Found::Foreign => return Err(foreign(&at)),
                Found::Store(SCHEMA_VERSION) => {}
                Found::Store(found) if found < SCHEMA_VERSION => {
                    return Err(SchemaError::Older {
                        path: shown(),
                        found,
                    }
                    .into());
                }
                Found::Store(found) => {
                    return Err(SchemaError::Newer {
                        path: shown(),
                        found,
                    }
                    .into());
                }
            }
            tx.commit()?;
        }
        use_wal(&conn).with_context(|| format!("{at}: switching to WAL"))?;
        let holdings = holdings_in(&conn).with_context(|| format!("reading the edges in {at}"))?;
        Ok(Store {
            conn: Mutex::new(conn),
            holdings: Mutex::new(holdings),
            fence: Mutex::new((lease::UNFENCED, String::new())),
            #[cfg(test)]
            edge_rows_read: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the database consistent
        // (every write is one transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counts of what edges hold. Lock it only while holding `conn`
    /// to change it (after the statement that changed the rows succeeded),
    /// so no reader sees it ahead of or behind the rows.
    fn holdings(&self) -> MutexGuard<'_, Holdings> {
        // Every change to it is whole before the lock is let go.
        self.holdings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many registered edges hold `applied` (version and digest), and
    /// how many edges there are: what a read of every edge row would say,
    /// without reading them.
    pub fn holding(&self, applied: Applied) -> Holding {
        let h = self.holdings();
        Holding {
            holding: h
                .count
                .get(&(applied.version, applied.digest))
                .copied()
                .unwrap_or(0),
            edges: h.by_edge.len(),
        }
    }

    /// An edge's row now says it holds `held` (when `changed`: the
    /// statement updated its row). Called with `conn` locked, once committed.
    fn held_now(&self, edge: EdgeId, changed: usize, held_now: Option<Applied>) {
        if changed == 1 {
            self.holdings().set(edge, as_stored(held_now));
        }
    }

    /// The newest version.
    pub fn current(&self) -> Result<Option<VersionRow>> {
        current_in(&*self.conn())
    }

    /// Version `n`.
    pub fn version(&self, n: Version) -> Result<Option<VersionRow>> {
        self.conn().query_opt(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE version = ?1"),
            params![sql(n)],
            version_row,
        )
    }

    /// When version `n` was issued (ms since the Unix epoch), without
    /// reading its body.
    pub fn issued_ms(&self, n: Version) -> Result<Option<i64>> {
        self.conn().query_opt(
            "SELECT issued_ms FROM versions WHERE version = ?1",
            params![sql(n)],
            |r| r.get(0),
        )
    }

    /// The version that was current at `ms` (the newest issued at or before it).
    pub fn at(&self, ms: i64) -> Result<Option<VersionRow>> {
        self.conn().query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE issued_ms <= ?1
                 ORDER BY version DESC LIMIT 1"
            ),
            params![ms],
            version_row,
        )
    }

    /// Up to `limit` versions below `before` (all when `None`), newest first.
    pub fn history(&self, before: Option<Version>, limit: u32) -> Result<Vec<VersionRow>> {
        let before = before.map_or(i64::MAX, sql);
        self.conn().query_map(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE version < ?1
                 ORDER BY version DESC LIMIT ?2"
            ),
            params![before, limit],
            version_row,
        )
    }

    /// `(version, signature)` of every version above `above` and below
    /// `below`, newest first.
    pub fn signatures_between(
        &self,
        above: Version,
        below: Version,
    ) -> Result<Vec<(Version, String)>> {
        self.conn().query_map(
            "SELECT version, signature FROM versions WHERE version > ?1 AND version < ?2
             ORDER BY version DESC",
            params![sql(above), sql(below)],
            |r| Ok((version_at(r, 0)?, r.get(1)?)),
        )
    }

    /// Runs `f` in one write transaction, fsynced when it commits: what
    /// it wrote is all stored, or (when it returns an error) none of it.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.conn();
        let sqlite = match &*conn {
            Conn::Sqlite(c) => Some(c),
            Conn::Pg(_) => None,
        };
        if let Some(c) = sqlite {
            c.pragma_update(None, "synchronous", "FULL")
                .map_err(Error::from)?;
        }
        let written = Self::write_in(&conn, f);
        if let Some(c) = sqlite {
            c.pragma_update(None, "synchronous", "NORMAL")
                .map_err(Error::from)?;
        }
        written
    }

    fn write_in<T, E: From<Error>>(
        conn: &Conn,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = Tx(RawTx::begin(conn, TxKind::Write)?);
        let out = f(&tx)?;
        tx.0.commit()?;
        Ok(out)
    }

    /// Commits a new version if `expected` is still current (see
    /// [`Tx::commit_version`]).
    pub fn commit<E>(
        &self,
        expected: Version,
        action: &str,
        build: impl FnOnce(Version, Option<&VersionRow>) -> Result<NewVersion, E>,
    ) -> Result<VersionRow, CommitError<E>> {
        self.write(|tx| tx.commit_version(Some(expected), action, build))
    }

    /// Records an action in the audit log.
    pub fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
        self.write(|tx| tx.audit(actor, action, detail))
    }

    /// The newest `limit` audit entries.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRow>> {
        self.conn().query_map(
            "SELECT at_ms, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
            params![limit],
            |r| {
                Ok(AuditRow {
                    at_ms: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            },
        )
    }

    /// How each version from `low` on was made, from its commit's audit
    /// entry (written in the same transaction): `push`, `patch`,
    /// `rollback`, `plan` or `adopt`.
    /// Entries older than `since_ms` are not read.
    pub fn version_actions(&self, low: Version, since_ms: i64) -> Result<HashMap<Version, String>> {
        let rows = self.conn().query_map(
            "SELECT action, detail FROM audit
             WHERE at_ms >= ?1 AND action IN ('push', 'patch', 'rollback', 'plan', 'adopt')
               AND detail LIKE 'version %'
             ORDER BY id",
            params![since_ms],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?;
        let mut out = HashMap::new();
        for (action, detail) in rows {
            let number = detail
                .strip_prefix("version ")
                .and_then(|d| d.split([':', ' ']).next())
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(v) = number.map(Version::new).filter(|v| *v >= low) {
                out.entry(v).or_insert(action);
            }
        }
        Ok(out)
    }

    /// Registers an edge; false when it was already registered.
    pub fn add_edge(&self, url: &str) -> Result<bool> {
        let conn = self.conn();
        let tx = RawTx::begin(&conn, TxKind::Write)?;
        let added = tx.execute(
            "INSERT INTO edges (url, added_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![url, now_ms()],
        )? == 1;
        tx.execute(
            "INSERT INTO edge_state (edge_id) SELECT id FROM edges WHERE url = ?1
             ON CONFLICT DO NOTHING",
            params![url],
        )?;
        let row = tx.query_opt(
            "SELECT e.id, s.acked_version, s.acked_digest
             FROM edges e JOIN edge_state s ON s.edge_id = e.id WHERE e.url = ?1",
            params![url],
            holder,
        )?;
        tx.commit()?;
        if let Some((edge, held_now)) = row {
            self.holdings().set(edge, held_now);
        }
        Ok(added)
    }

    /// Forgets an edge; false when it was not registered.
    pub fn remove_edge(&self, url: &str) -> Result<bool> {
        let conn = self.conn();
        let removed = conn.query_opt(
            "DELETE FROM edges WHERE url = ?1 RETURNING id",
            params![url],
            |r| r.get::<EdgeId>(0),
        )?;
        if let Some(edge) = removed {
            // Its state row went with it (ON DELETE CASCADE).
            self.holdings().remove(edge);
        }
        Ok(removed.is_some())
    }

    /// Every edge with its state, in registration order.
    pub fn edges(&self) -> Result<Vec<EdgeRow>> {
        let conn = self.conn();
        let rows = conn.query_map(
            "SELECT e.id, e.url, s.sent_version, s.acked_version, s.acked_digest,
                    s.reported_version, s.nack_version, s.nack_error, s.last_error,
                    s.failing_since_ms, s.last_contact_ms, s.latency_ms
             FROM edges e JOIN edge_state s ON s.edge_id = e.id ORDER BY e.id",
            params![],
            |r| {
                let nack_version: Option<i64> = r.get(6)?;
                let nack_error: Option<String> = r.get(7)?;
                Ok(EdgeRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    sent_version: version_at(r, 2)?,
                    acked: held(version_at(r, 3)?, digest_at(r, 4)?),
                    reported_version: version_at(r, 5)?,
                    nack: nack_version
                        .zip(nack_error)
                        .map(|(v, e)| (Version::new(v.max(0) as u64), e)),
                    silent: r
                        .get::<Option<String>>(8)?
                        .zip(r.get::<Option<i64>>(9)?)
                        .map(|(error, since_ms)| Silence { since_ms, error }),
                    last_contact_ms: r.get(10)?,
                    latency_ms: r.get(11)?,
                })
            },
        )?;
        // Other processes write these rows too (the leader before this
        // one, edges added through another replica): the counts are taken
        // from the rows whenever they are read anyway.
        *self.holdings() = Holdings::of(rows.iter().map(|e| (e.id, e.acked)));
        #[cfg(test)]
        self.edge_rows_read
            .fetch_add(rows.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(rows)
    }

    /// Edge rows [`Store::edges`] has read so far.
    #[cfg(test)]
    pub(crate) fn edge_rows_read(&self) -> usize {
        self.edge_rows_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that `version` is being sent to each of `edges`: one
    /// transaction for a whole round, not one per edge.
    pub fn record_sent(&self, edges: &[EdgeId], version: Version) -> Result<()> {
        if edges.is_empty() {
            return Ok(());
        }
        self.fenced(|tx| {
            for edge in edges {
                tx.execute(
                    "UPDATE edge_state SET sent_version = ?2 WHERE edge_id = ?1",
                    params![*edge, sql(version)],
                )?;
            }
            Ok(())
        })
    }

    /// An edge acknowledged `applied`.
    pub fn record_ack(&self, edge: EdgeId, applied: Applied, latency_ms: f64) -> Result<()> {
        self.fenced_then(
            |tx| {
                tx.execute(
                    &format!(
                        "UPDATE edge_state SET acked_version = ?2, acked_digest = ?3,
                        reported_version = {}, nack_version = NULL,
                        nack_error = NULL, last_error = NULL, failing_since_ms = NULL,
                        last_contact_ms = ?4, latency_ms = ?5
                     WHERE edge_id = ?1",
                        higher_reported("?2")
                    ),
                    params![
                        edge,
                        sql(Version::new(applied.version)),
                        applied.digest.to_string(),
                        now_ms(),
                        latency_ms
                    ],
                )
            },
            |changed| self.held_now(edge, *changed, Some(applied)),
        )?;
        Ok(())
    }

    /// An edge refused `version`, holding `holds`: that is what it holds
    /// now, whatever it acknowledged before.
    pub fn record_nack(
        &self,
        edge: EdgeId,
        version: Version,
        holds: Option<Applied>,
        error: &str,
    ) -> Result<()> {
        let held = held_columns(holds);
        self.fenced_then(
            |tx| {
                tx.execute(
                    &format!(
                        "UPDATE edge_state SET nack_version = ?2, nack_error = ?3,
                        acked_version = ?4, acked_digest = ?5,
                        reported_version = {}, last_error = NULL,
                        failing_since_ms = NULL, last_contact_ms = ?6
                     WHERE edge_id = ?1",
                        higher_reported("?4")
                    ),
                    params![edge, sql(version), error, held.0, held.1, now_ms()],
                )
            },
            |changed| self.held_now(edge, *changed, holds),
        )?;
        Ok(())
    }

    /// An edge reported holding `held`, not what it acknowledged.
    pub fn record_held(&self, edge: EdgeId, held: Option<Applied>) -> Result<()> {
        let (version, digest) = held_columns(held);
        self.fenced_then(
            |tx| {
                tx.execute(
                    &format!(
                        "UPDATE edge_state SET acked_version = ?2, acked_digest = ?3,
                        reported_version = {}, last_contact_ms = ?4
                     WHERE edge_id = ?1",
                        higher_reported("?2")
                    ),
                    params![edge, version, digest, now_ms()],
                )
            },
            |changed| self.held_now(edge, *changed, held),
        )?;
        Ok(())
    }

    /// A push got no answer.
    pub fn record_failure(&self, edge: EdgeId, error: &str) -> Result<()> {
        self.fenced(|tx| {
            tx.execute(
                "UPDATE edge_state SET last_error = ?2,
                failing_since_ms = COALESCE(failing_since_ms, ?3)
             WHERE edge_id = ?1",
                params![edge, error, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Records, once, how long `version` took from commit to its last ACK.
    /// True when this call recorded it.
    pub fn record_convergence(&self, version: Version, edges: usize, ms: f64) -> Result<bool> {
        Ok(self.fenced(|tx| {
            tx.execute(
                "INSERT INTO convergence (version, edges, ms) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
                params![sql(version), edges as i64, ms],
            )
        })? == 1)
    }

    /// Commit-to-last-ACK times of the versions from `low` on, ms.
    pub fn convergence_from(&self, low: Version) -> Result<HashMap<Version, f64>> {
        let rows = self.conn().query_map(
            "SELECT version, ms FROM convergence WHERE version >= ?1",
            params![sql(low)],
            |r| Ok((version_at(r, 0)?, r.get(1)?)),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Commit-to-last-ACK time of `version`, ms.
    pub fn convergence(&self, version: Version) -> Result<Option<f64>> {
        self.conn().query_opt(
            "SELECT ms FROM convergence WHERE version = ?1",
            params![sql(version)],
            |r| r.get(0),
        )
    }

    /// The highest version any edge ever reported holding, among those a
    /// history can follow (at most [`MAX_VERSION`]).
    pub fn highest_reported(&self) -> Result<Version> {
        highest_reported_in(&*self.conn())
    }

    /// Number of versions issued.
    pub fn version_count(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM versions", params![], |r| {
                r.get::<i64>(0)
            })
            .map(|n| n.max(0) as u64)
    }
}

/// `reported_version` raised to `param` if that is higher (SQLite's
/// two-argument `MAX` and PostgreSQL's `GREATEST`, in words both know).
fn higher_reported(param: &str) -> String {
    format!("CASE WHEN reported_version > {param} THEN reported_version ELSE {param} END")
}

/// The newest version.
fn current_in(db: &impl Sql) -> Result<Option<VersionRow>> {
    db.query_opt(
        &format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY version DESC LIMIT 1"),
        params![],
        version_row,
    )
}

/// The highest version any edge reported holding, among those a history
/// can follow (an edge reporting more than [`MAX_VERSION`] is lying or
/// broken, and must not push the numbering past what edges accept).
fn highest_reported_in(db: &impl Sql) -> Result<Version> {
    db.query_row(
        "SELECT COALESCE(MAX(reported_version), 0) FROM edge_state WHERE reported_version <= ?1",
        params![sql(Version::new(MAX_VERSION))],
        |r| version_at(r, 0),
    )
}

/// A write transaction (see [`Store::write`]).
#[derive(Debug)]
pub struct Tx<'c>(RawTx<'c>);

impl Tx<'_> {
    /// The newest version.
    pub fn current(&self) -> Result<Option<VersionRow>> {
        current_in(&self.0)
    }

    /// Commits a new version if `expected` is still current (`None`:
    /// whatever is current, for writers that read it in this transaction).
    /// `build` gets the new version number and the parent row and returns
    /// the signed body.
    ///
    /// The number is one above both the newest stored version and the
    /// highest any edge reported, so a break-glass push made around the
    /// service is overtaken by the next commit instead of blocking it.
    pub fn commit_version<E>(
        &self,
        expected: Option<Version>,
        action: &str,
        build: impl FnOnce(Version, Option<&VersionRow>) -> Result<NewVersion, E>,
    ) -> Result<VersionRow, CommitError<E>> {
        let parent = self.current()?;
        let current = parent.as_ref().map_or(Version::NONE, |p| p.version);
        if let Some(expected) = expected
            && current != expected
        {
            return Err(CommitError::Conflict { expected, current });
        }
        let reported = self.highest_reported()?;
        let next = Version::new(current.max(reported).get() + 1);
        let new = build(next, parent.as_ref()).map_err(CommitError::Refused)?;
        self.0.execute(
            &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                sql(next),
                parent.as_ref().map(|p| p.digest.to_string()),
                new.digest.to_string(),
                &new.body,
                &new.signature,
                &new.actor,
                &new.reason,
                &new.issued_at,
                new.issued_ms
            ],
        )?;
        self.audit(
            &new.actor,
            action,
            &format!("version {next}: {}", new.reason),
        )?;
        Ok(VersionRow {
            version: next,
            parent: parent.map(|p| p.digest),
            digest: new.digest,
            body: Bytes::from(new.body),
            signature: new.signature,
            actor: new.actor,
            reason: new.reason,
            issued_at: new.issued_at,
            issued_ms: new.issued_ms,
        })
    }

    /// The highest version any edge reported holding, among those a history
    /// can follow (an edge reporting more than [`MAX_VERSION`] is lying or
    /// broken, and must not push the numbering past what edges accept).
    pub fn highest_reported(&self) -> Result<Version> {
        highest_reported_in(&self.0)
    }

    /// Adopts a version made around the service (a break-glass push) into
    /// the history: `row` must be numbered above the newest stored version
    /// and name it as its parent, so the chain the edges saw has no fork.
    /// With `across_gap`, a row numbered more than one above may name
    /// another parent: one of the versions between, which the store lost;
    /// their numbers are recorded as lost (`lost_versions`) in the same
    /// transaction. The caller has verified its signature and parsed its
    /// body.
    pub fn adopt_version(
        &self,
        row: &VersionRow,
        actor: &str,
        across_gap: bool,
    ) -> Result<(), CommitError<AdoptRefusal>> {
        let head = self.current()?;
        let head_version = head.as_ref().map_or(Version::NONE, |h| h.version);
        if row.version <= head_version {
            return Err(CommitError::Refused(AdoptRefusal(format!(
                "version {} is not above the committed version {head_version}",
                row.version
            ))));
        }
        // A break-glass version is one above what the edges held; anything
        // further is a number the history was never near.
        let ceiling = head_version.max(self.highest_reported()?).get() + 1;
        if row.version.get() > ceiling.min(MAX_VERSION) {
            return Err(CommitError::Refused(AdoptRefusal(format!(
                "version {} is more than one above both the committed version {head_version} and every version an edge reported",
                row.version
            ))));
        }
        let head_digest = head.as_ref().map(|h| h.digest);
        let gap = row.version.get() > head_version.get() + 1;
        let linked = row.parent == head_digest;
        if !(linked || across_gap && gap) {
            let named = row.parent.map_or("none".to_owned(), |d| d.to_string());
            let head = head_digest.map_or("none".to_owned(), |d| d.to_string());
            return Err(CommitError::Refused(AdoptRefusal(format!(
                "its parent is {named}, but the committed version {head_version} is {head}: it was made from another history"
            ))));
        }
        if !linked {
            // Across a gap the parent cannot be checked; what can be: a
            // committed version made after this one was issued is not its
            // ancestor (a commit that reused a lost number, say a rollback
            // made before the edges were heard from), so adopting it
            // would silently undo that commit.
            if let Some(h) = head.as_ref().filter(|h| h.issued_ms > row.issued_ms) {
                return Err(CommitError::Refused(AdoptRefusal(format!(
                    "the committed version {} was issued at {}, after it ({}): it cannot descend from it, so it belongs to another history",
                    h.version, h.issued_at, row.issued_at
                ))));
            }
            let lost = row.version.get() - head_version.get() - 1;
            if lost > MAX_LOST_VERSIONS {
                return Err(CommitError::Refused(AdoptRefusal(format!(
                    "it would leave versions {}..={} lost, over the limit of {MAX_LOST_VERSIONS} adopted without a person",
                    head_version.get() + 1,
                    row.version.get() - 1
                ))));
            }
        }
        self.0.execute(
            &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                sql(row.version),
                row.parent.map(|p| p.to_string()),
                row.digest.to_string(),
                row.body.as_ref(),
                &row.signature,
                &row.actor,
                &row.reason,
                &row.issued_at,
                row.issued_ms
            ],
        )?;
        let lost = if linked {
            String::new()
        } else {
            self.0.execute(
                "INSERT INTO lost_versions (first, last, followed_by, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![
                    sql(Version::new(head_version.get() + 1)),
                    sql(Version::new(row.version.get() - 1)),
                    sql(row.version),
                    now_ms()
                ],
            )?;
            format!(
                " (versions {}..={} are not stored: its parent is one of them)",
                head_version.get() + 1,
                row.version.get() - 1
            )
        };
        self.audit(
            actor,
            "adopt",
            &format!(
                "version {} by {}: {}{lost}",
                row.version, row.actor, row.reason
            ),
        )?;
        Ok(())
    }

    /// Records an action in the audit log.
    pub fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO audit (at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), actor, action, detail],
        )?;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_schema_is_the_sqlite_one_in_postgres_types() {
        for ddl in [for_postgres(SCHEMA), for_postgres(hooks::HOOK_SCHEMA)] {
            for sqlite_only in ["INTEGER", "AUTOINCREMENT", "BLOB", " REAL"] {
                assert!(!ddl.contains(sqlite_only), "{sqlite_only} in {ddl}");
            }
            assert_eq!(
                ddl.matches("CREATE TABLE").count(),
                ddl.matches("CREATE TABLE IF NOT EXISTS").count()
            );
        }
        assert!(for_postgres(SCHEMA).contains("body       BYTEA NOT NULL"));
        assert!(for_postgres(SCHEMA).contains("latency_ms       DOUBLE PRECISION"));
    }

    #[test]
    fn a_mistyped_database_url_is_refused_not_made_a_file() {
        let dir = std::env::temp_dir().join(format!("rollout-lookalike-{}", std::process::id()));
        for db in [
            "POSTGRES://u:secret@db/r".to_owned(),
            format!("{}/postgress://u:secret@db/r", dir.display()),
            "host=db password=secret".to_owned(),
        ] {
            let e = Store::open(Path::new(&db)).expect_err(&db).to_string();
            assert!(e.contains("neither a postgres://"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert!(!dir.exists(), "nothing was created");
    }

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        let shown = |url: &str| Location::of(Path::new(url)).to_string();
        assert_eq!(
            shown("postgres://u:secret@db:5432/r"),
            "postgres://***@db:5432/r"
        );
        assert_eq!(shown("postgres://u:pa/ss@db/r"), "postgres://***@db/r");
        assert_eq!(
            shown("postgres://u:p?w@d@db/r?sslmode=disable"),
            "postgres://***@db/r"
        );
        assert_eq!(
            shown("postgresql://db/r?password=secret"),
            "postgresql://db/r"
        );
        assert_eq!(
            shown("/var/lib/rollout/control.sqlite"),
            "/var/lib/rollout/control.sqlite"
        );
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .expect("open")
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("user_version")
    }

    /// What a store written before schemas were numbered looks like: no
    /// user_version, none of the tables and indexes added since plans.
    fn unnumbered(path: &Path) {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(
            "DROP TABLE hook_results; DROP TABLE hook_runs; DROP INDEX audit_by_time;
             PRAGMA user_version = 0;",
        )
        .expect("downgrade");
    }

    #[test]
    fn a_store_of_another_schema_is_refused_and_migrated_only_when_asked() {
        let dir = std::env::temp_dir().join(format!("rollout-schema-{}", std::process::id()));
        let path = dir.join("control.sqlite");
        {
            let store = Store::open(&path).expect("opens");
            store
                .commit(Version::NONE, "push", |n, _| version(n))
                .expect("v1");
        }
        assert_eq!(
            user_version(&path),
            SCHEMA_VERSION,
            "a new store is numbered"
        );

        unnumbered(&path);
        let refused = Store::open(&path).expect_err("an older schema is refused");
        let text = format!("{refused:#}");
        assert!(
            text.contains("store schema 0") && text.contains("rollout migrate --db"),
            "{text}"
        );
        assert_eq!(user_version(&path), 0, "refusing changed nothing");

        assert_eq!(
            migrate(&path).expect("migrates"),
            Migrated {
                from: 0,
                to: SCHEMA_VERSION
            }
        );
        let store = Store::open(&path).expect("opens once migrated");
        assert_eq!(
            store.current().expect("current").map(|v| v.version),
            Some(Version::new(1)),
            "the history is kept"
        );
        assert_eq!(
            store.last_hook_run().expect("the hook tables are back"),
            0,
            "and empty"
        );
        drop(store);
        assert_eq!(
            migrate(&path).expect("again"),
            Migrated {
                from: SCHEMA_VERSION,
                to: SCHEMA_VERSION
            }
        );

        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("from the future");
        for e in [
            Store::open(&path)
                .map(|_| ())
                .expect_err("newer is refused"),
            migrate(&path)
                .map(|_| ())
                .expect_err("and never migrated down"),
        ] {
            assert!(format!("{e:#}").contains("newer"), "{e:#}");
        }
        assert_eq!(user_version(&path), SCHEMA_VERSION + 1);

        // Never taken for a store, never changed: an empty file, and another
        // program's SQLite file (an edge's store beside the control's).
        let empty = dir.join("empty.sqlite");
        std::fs::write(&empty, b"").expect("empty file");
        let text = format!("{:#}", migrate(&empty).expect_err("an empty file"));
        assert!(text.contains("not a rollout control store"), "{text}");
        assert_eq!(std::fs::metadata(&empty).expect("still there").len(), 0);
        let edge = dir.join("edge.sqlite");
        Connection::open(&edge)
            .expect("open")
            .execute_batch("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB);")
            .expect("an edge's table");
        for e in [
            Store::open(&edge).map(|_| ()).expect_err("open refuses it"),
            migrate(&edge).map(|_| ()).expect_err("migrate refuses it"),
        ] {
            assert!(
                format!("{e:#}").contains("not a rollout control store"),
                "{e:#}"
            );
        }
        let conn = Connection::open(&edge).expect("open");
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_eq!(
            (tables, mode.as_str()),
            (1, "delete"),
            "the file is untouched"
        );
        drop(conn);

        let missing = dir.join("typo.sqlite");
        assert!(format!("{:#}", migrate(&missing).expect_err("no file")).contains("no store at"));
        assert!(!missing.exists(), "migrate never creates a store");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn processes_opening_a_new_store_at_once_all_open_it() {
        let dir = std::env::temp_dir().join(format!("rollout-race-{}", std::process::id()));
        for round in 0..40 {
            let path = dir.join(format!("{round}.sqlite"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Store::open(&path).map(drop).map_err(|e| format!("{e:#}"))
                    })
                })
                .collect();
            for t in opened {
                let opened = t.join().expect("thread");
                assert!(opened.is_ok(), "round {round}: {opened:?}");
            }
            assert_eq!(user_version(&path), SCHEMA_VERSION);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn version(n: Version) -> Result<NewVersion, std::convert::Infallible> {
        let body = format!("body {n}").into_bytes();
        Ok(NewVersion {
            digest: Digest::of(&body),
            body,
            signature: "sig".into(),
            actor: "t".into(),
            reason: "r".into(),
            issued_at: "now".into(),
            issued_ms: n.get() as i64 * 1000,
        })
    }

    /// A version numbered `n`, made at `issued_ms`, naming `parent`.
    fn held_row(n: u64, parent: Option<Digest>, issued_ms: i64) -> VersionRow {
        let body = format!("held {n} at {issued_ms}").into_bytes();
        VersionRow {
            version: Version::new(n),
            parent,
            digest: Digest::of(&body),
            body: body.into(),
            signature: "sig".into(),
            actor: "t".into(),
            reason: "r".into(),
            issued_at: format!("{issued_ms} ms"),
            issued_ms,
        }
    }

    /// Version `row` as an edge's report, then adopted across gaps.
    fn adopt_held(store: &Store, row: &VersionRow) -> Result<(), CommitError<AdoptRefusal>> {
        let edge = store.add_edge("http://edge.test").map(|_| ());
        edge.expect("edge");
        let id = store.edges().expect("edges")[0].id;
        store.record_held(id, Some(row.applied())).expect("report");
        store.write(|tx| tx.adopt_version(row, "edge http://edge.test", true))
    }

    #[test]
    fn adopting_across_lost_versions_records_them_once_and_refuses_another_history() {
        let dir = std::env::temp_dir().join(format!("rollout-lost-{}", std::process::id()));
        let path = dir.join("control.sqlite");
        let store = Store::open(&path).expect("opens");
        let one = store
            .commit(Version::NONE, "push", |n, _| version(n))
            .expect("v1");
        // Edges hold version 4, whose parent (3) no edge holds.
        let four = held_row(4, Some(Digest::of(b"lost 3")), 5_000);
        adopt_held(&store, &four).expect("adopted across 2..=3");
        let lost = store
            .conn()
            .query_map(
                "SELECT first, last, followed_by FROM lost_versions",
                params![],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
            )
            .expect("lost");
        assert_eq!(lost, [(2, 3, 4)]);
        assert_eq!(
            store.current().expect("head").map(|h| h.digest),
            Some(four.digest)
        );
        // Recorded once: neither changed nor removed.
        for sql in [
            "UPDATE lost_versions SET last = 2",
            "DELETE FROM lost_versions",
        ] {
            let e = store.conn().execute(sql, params![]).expect_err(sql);
            assert!(e.to_string().contains("recorded once"), "{e}");
        }

        // A version made before the committed one cannot descend from it.
        let older = held_row(7, Some(Digest::of(b"lost 6")), 4_000);
        let refused = adopt_held(&store, &older).expect_err("another history");
        assert!(
            matches!(&refused, CommitError::Refused(AdoptRefusal(why)) if why.contains("cannot descend")),
            "{refused:?}"
        );
        // Nor one that would leave more numbers lost than the limit.
        let far = held_row(4 + MAX_LOST_VERSIONS + 2, None, 9_000);
        let refused = adopt_held(&store, &far).expect_err("too far");
        assert!(
            matches!(&refused, CommitError::Refused(AdoptRefusal(why)) if why.contains("over the limit")),
            "{refused:?}"
        );
        // Without gaps allowed (rollout adopt), the parent must be the head.
        let five = held_row(6, Some(Digest::of(b"lost 5")), 9_000);
        let refused = store
            .write(|tx| tx.adopt_version(&five, "ops", false))
            .expect_err("a gap");
        assert!(matches!(refused, CommitError::Refused(_)), "{refused:?}");
        assert_eq!(
            store.current().expect("head").map(|h| h.version),
            Some(Version::new(4))
        );
        drop(one);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_schema_2_store_is_migrated_to_record_lost_versions() {
        let dir = std::env::temp_dir().join(format!("rollout-schema2-{}", std::process::id()));
        let path = dir.join("control.sqlite");
        drop(Store::open(&path).expect("opens"));
        Connection::open(&path)
            .expect("open")
            .execute_batch("DROP TABLE lost_versions; PRAGMA user_version = 2;")
            .expect("as schema 2 left it");
        let refused = format!("{:#}", Store::open(&path).expect_err("refused"));
        assert!(refused.contains("store schema 2"), "{refused}");
        assert_eq!(
            migrate(&path).expect("migrates"),
            Migrated {
                from: 2,
                to: SCHEMA_VERSION
            }
        );
        let store = Store::open(&path).expect("opens once migrated");
        store
            .conn()
            .execute(
                "INSERT INTO lost_versions (first, last, followed_by, at_ms) VALUES (2, 2, 3, 0)",
                params![],
            )
            .expect("the table is back");
        let e = store
            .conn()
            .execute("DELETE FROM lost_versions", params![])
            .expect_err("its triggers came with it");
        assert!(e.to_string().contains("recorded once"), "{e}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_grow_only_from_the_expected_one_and_cannot_be_changed() {
        let dir = std::env::temp_dir().join(format!("rollout-store-{}", std::process::id()));
        let store = Store::open(&dir.join("a/b/control.sqlite")).expect("opens");
        let one = store
            .commit(Version::NONE, "push", |n, _| version(n))
            .expect("v1");
        assert_eq!((one.version, one.parent), (Version::new(1), None));
        assert!(matches!(
            store.commit(Version::NONE, "push", |n, _| version(n)),
            Err(CommitError::Conflict { expected, current })
                if expected == Version::NONE && current == Version::new(1)
        ));
        let two = store
            .commit(Version::new(1), "push", |n, _| version(n))
            .expect("v2");
        assert_eq!(
            (two.version, two.parent),
            (Version::new(2), Some(one.digest))
        );
        assert_eq!(
            store.at(1500).expect("at").map(|v| v.version),
            Some(Version::new(1))
        );
        assert_eq!(store.at(999).expect("at").map(|v| v.version), None);
        let page = store.history(Some(Version::new(2)), 10).expect("history");
        assert_eq!(
            page.iter().map(|v| v.version).collect::<Vec<_>>(),
            [Version::new(1)]
        );
        let conn = store.conn();
        assert!(conn.execute("DELETE FROM versions", params![]).is_err());
        assert!(
            conn.execute("UPDATE versions SET reason = 'x'", params![])
                .is_err()
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The counts of what edges hold follow every write that changes an
    /// edge's row (ACK, refusal, a verify's finding, adding and removing
    /// edges), read back as the rows do, and are rebuilt from the rows when
    /// the store is opened again.
    #[test]
    fn what_edges_hold_is_counted_as_their_rows_change() {
        let dir = std::env::temp_dir().join(format!("rollout-holdings-{}", std::process::id()));
        let path = dir.join("control.sqlite");
        let store = Store::open(&path).expect("opens");
        let (d1, d2) = (Digest::of(b"one"), Digest::of(b"two"));
        let (v1, v2) = (
            Applied {
                version: 1,
                digest: d1,
            },
            Applied {
                version: 2,
                digest: d2,
            },
        );
        let rows = |store: &Store| {
            let edges = store.edges().expect("edges");
            Holdings::of(edges.iter().map(|e| (e.id, e.acked)))
        };
        let count = |store: &Store, a| {
            let h = store.holding(a);
            (h.holding, h.edges)
        };
        assert!(store.holding(v1).all(), "no edges: nothing to wait for");
        for url in ["http://a", "http://b", "http://c"] {
            assert!(store.add_edge(url).expect("add"));
        }
        assert!(!store.add_edge("http://a").expect("add again"));
        let ids: Vec<EdgeId> = store.edges().expect("edges").iter().map(|e| e.id).collect();
        assert_eq!(count(&store, v1), (0, 3));
        store.record_sent(&ids, Version::new(1)).expect("sent");
        store.record_ack(ids[0], v1, 1.0).expect("ack");
        store.record_ack(ids[1], v1, 1.0).expect("ack");
        assert_eq!(count(&store, v1), (2, 3));
        store.record_failure(ids[2], "timed out").expect("failure");
        assert_eq!(count(&store, v1), (2, 3), "silence changes nothing held");
        store
            .record_nack(ids[2], Version::new(1), Some(v2), "holds a newer one")
            .expect("nack");
        assert_eq!((count(&store, v1), count(&store, v2)), ((2, 3), (1, 3)));
        store.record_ack(ids[2], v1, 1.0).expect("ack");
        assert!(store.holding(v1).all());
        store.record_held(ids[1], None).expect("held");
        assert_eq!(count(&store, v1), (2, 3), "it lost it");
        // Read back as the rows read: version 0 is nothing; a version past
        // what a row stores is what the row says.
        store
            .record_ack(
                ids[1],
                Applied {
                    version: 0,
                    digest: d2,
                },
                1.0,
            )
            .expect("ack");
        let huge = Applied {
            version: u64::MAX,
            digest: d2,
        };
        store.record_held(ids[0], Some(huge)).expect("held");
        assert_eq!(
            count(
                &store,
                Applied {
                    version: i64::MAX as u64,
                    digest: d2
                }
            ),
            (1, 3)
        );
        let read = rows(&store);
        assert_eq!(*store.holdings(), read);
        assert!(store.remove_edge("http://b").expect("remove"));
        assert!(!store.remove_edge("http://b").expect("remove again"));
        store
            .record_ack(ids[1], v1, 1.0)
            .expect("a removed edge's late ACK");
        assert_eq!(count(&store, v1), (1, 2), "it left");
        let read = rows(&store);
        assert_eq!(*store.holdings(), read);
        let counted = std::mem::take(&mut *store.holdings());
        drop(store);
        let again = Store::open(&path).expect("opens again");
        assert_eq!(*again.holdings(), counted, "rebuilt from the rows");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
