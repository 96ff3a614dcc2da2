//! `rollout audit`: who did what (from the service), and with `--verify`
//! the stored history checked end to end, offline, from the store file.
//!
//! The check reads the SQLite file read-only (the service may be running:
//! one SELECT is one snapshot) and walks every version from the first:
//!
//! - the body's SHA-256 is the stored digest;
//! - the body is an envelope an edge would accept (core's parser, limits
//!   included) whose version is the row's, and whose `actor`, `reason` and
//!   `issued_at` are what the row shows;
//! - its `parent` is the digest of the previous version's body (none for the
//!   first), and the stored parent column says the same;
//! - its number is one above the previous one (the first is 1);
//! - its signature verifies under the keys an edge would check it with: the
//!   keys the previous version declares, else the given ones.
//!
//! It does not trust the service: nothing is asked of the API, so a damaged
//! or edited file is caught whether or not the service would notice.

use std::path::{Path, PathBuf};

use rollout_control::client::{Fail, exit};
use rollout_control::store::Location;
use rollout_control::store::db::{Conn, PgConn, Sql as _};
use rollout_core::{Digest, Envelope, PublicKey, SecretKey};
use rusqlite::types::ValueRef;
use serde::Serialize;

use super::{Ctx, Output, print_json};

/// Largest key file read.
const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Check the stored history instead of listing the audit log: every
    /// version's digest, parent link, number and signature, from the first,
    /// read from the store file (--db), not through the API.
    #[arg(long)]
    verify: bool,
    /// With --verify: the control service's store: its SQLite file (opened
    /// read-only), or its PostgreSQL database (`postgres://...`).
    #[arg(
        long,
        env = "ROLLOUT_DB",
        hide_env_values = true,
        default_value = "rollout-control.sqlite"
    )]
    db: PathBuf,
    /// With --verify: the public key(s) versions must be signed with, as
    /// edges take them (`ed25519:...`; several comma-separated or repeated).
    #[arg(long = "public-key", value_name = "KEY")]
    public_keys: Vec<String>,
    /// With --verify: the service's key file; the public halves of its keys
    /// are used (instead of, or beside, --public-key).
    #[arg(long, env = "ROLLOUT_KEY_FILE")]
    key: Option<PathBuf>,
    /// With --verify: accept gaps in the numbering (a break-glass push
    /// numbered above the store makes one); they are still listed.
    #[arg(long)]
    allow_gaps: bool,
}

pub(crate) async fn run(ctx: &Ctx, args: AuditArgs) -> Result<(), Fail> {
    if !args.verify {
        return super::history::audit(ctx, super::history::AuditArgs {}).await;
    }
    let keys = trusted_keys(&args.public_keys, args.key.as_deref())?;
    let report = verify_file(&args.db, keys, args.allow_gaps)?;
    let failed = !report.ok;
    match ctx.out {
        Output::Json => print_json(&report)?,
        Output::Text => report.print(),
    }
    if failed {
        let fail = Fail::new(
            exit::BROKEN,
            format!(
                "{}: the history does not verify ({} problem{})",
                Location::of(&args.db),
                report.breaks.len(),
                if report.breaks.len() == 1 { "" } else { "s" }
            ),
        );
        return Err(if ctx.out == Output::Json {
            fail.reported()
        } else {
            fail
        });
    }
    Ok(())
}

/// The keys given on the command line.
fn trusted_keys(texts: &[String], key_file: Option<&Path>) -> Result<Vec<PublicKey>, Fail> {
    let mut keys = Vec::new();
    for text in texts
        .iter()
        .flat_map(|t| t.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|t| !t.is_empty())
    {
        let key = text
            .parse::<PublicKey>()
            .map_err(|e| Fail::new(exit::INVALID, format!("--public-key {text:?}: {e}")))?;
        keys.push(key);
    }
    if let Some(path) = key_file {
        keys.extend(key_file_keys(path)?);
    }
    if keys.is_empty() {
        return Err(Fail::new(
            exit::INVALID,
            "--verify checks signatures: give --public-key KEY (as the edges hold it) or --key FILE",
        ));
    }
    Ok(keys)
}

/// The public halves of the secret keys in a key file: one or more
/// `ed25519-secret:` lines, blank lines and `#` comments allowed.
fn key_file_keys(path: &Path) -> Result<Vec<PublicKey>, Fail> {
    let invalid =
        |e: &dyn std::fmt::Display| Fail::new(exit::INVALID, format!("{}: {e}", path.display()));
    let bytes =
        rollout_control::input::read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|e| invalid(&e))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid(&"not UTF-8 text"))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line
            .parse::<SecretKey>()
            .map_err(|e| invalid(&format!("line {}: {e}", i + 1)))?;
        keys.push(key.public_key());
    }
    Ok(keys)
}

/// One stored version, as read (nothing parsed yet).
#[derive(Debug, Clone, Default)]
struct Row {
    version: i64,
    parent: Option<String>,
    digest: String,
    body: Vec<u8>,
    signature: String,
    actor: String,
    reason: String,
    issued_at: String,
}

/// A break in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Break {
    /// The version (row number) where it is.
    pub version: i64,
    /// What kind: `digest`, `envelope`, `version`, `parent`, `number`,
    /// `signature`, `metadata` or `row`.
    pub kind: &'static str,
    /// What is wrong, in words.
    pub problem: String,
}

/// What `--verify` found.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// True when nothing is broken.
    pub ok: bool,
    /// Versions stored.
    pub versions: u64,
    /// The first version number.
    pub first: Option<i64>,
    /// The last version number.
    pub last: Option<i64>,
    /// Digest of the last version's body.
    pub head: Option<String>,
    /// Everything wrong, in version order.
    pub breaks: Vec<Break>,
    /// Numbers missing between stored versions, accepted with --allow-gaps.
    pub gaps: Vec<Gap>,
    /// Numbers the store recorded as lost: the database lost them and no
    /// edge held them when a later version was adopted back from the edges.
    pub lost: Vec<Gap>,
}

/// Missing version numbers `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Gap {
    /// The first missing number.
    pub from: i64,
    /// The last missing number.
    pub to: i64,
}

impl Report {
    fn print(&self) {
        for b in &self.breaks {
            println!("version {}: {} ({})", b.version, b.problem, b.kind);
        }
        for g in &self.gaps {
            println!(
                "note: versions {}..={} were never stored (accepted: --allow-gaps)",
                g.from, g.to
            );
        }
        for g in &self.lost {
            println!(
                "note: versions {}..={} are recorded lost: the database lost them and no edge held them when version {} was adopted back from the edges",
                g.from,
                g.to,
                g.to + 1
            );
        }
        match (self.ok, self.first, self.last) {
            (true, None, _) | (true, _, None) => println!("no versions stored: nothing to verify"),
            (true, Some(first), Some(last)) => println!(
                "{} versions ({first}..={last}) verify: digests, parent links, numbering and signatures; head {}",
                self.versions,
                self.head.as_deref().unwrap_or("-")
            ),
            (false, _, _) => println!(
                "the history does not verify: {} problem{} in {} versions",
                self.breaks.len(),
                if self.breaks.len() == 1 { "" } else { "s" },
                self.versions
            ),
        }
    }
}

/// The walk over the history, one version at a time, oldest first.
#[derive(Debug)]
struct Walk {
    /// The keys versions are checked with when the previous one declares none.
    given: Vec<PublicKey>,
    allow_gaps: bool,
    /// Numbers recorded lost (`lost_versions`), each with the version
    /// whose adoption recorded it: only before that version is it a loss.
    lost: std::collections::BTreeMap<i64, i64>,
    /// The previous version: its number, its body's digest and the keys it
    /// declares for its successors.
    previous: Option<(i64, Digest, Option<Vec<PublicKey>>)>,
    report: Report,
}

impl Walk {
    fn new(given: Vec<PublicKey>, allow_gaps: bool) -> Walk {
        Walk {
            given,
            allow_gaps,
            lost: std::collections::BTreeMap::new(),
            previous: None,
            report: Report {
                ok: true,
                versions: 0,
                first: None,
                last: None,
                head: None,
                breaks: Vec::new(),
                gaps: Vec::new(),
                lost: Vec::new(),
            },
        }
    }

    /// Takes the recorded losses: (first, last, followed by). A range
    /// that does not end right before the version that follows it, or
    /// longer than one adoption may record, counts for nothing.
    fn lose(&mut self, ranges: Vec<(i64, i64, i64)>) {
        for (first, last, followed_by) in ranges {
            let sane = first >= 1
                && last.checked_add(1) == Some(followed_by)
                && last.checked_sub(first).is_some_and(|d| {
                    (0..rollout_control::store::MAX_LOST_VERSIONS as i64).contains(&d)
                });
            if sane {
                for n in first..=last {
                    self.lost.insert(n, followed_by);
                }
            }
        }
    }

    fn broken(&mut self, version: i64, kind: &'static str, problem: String) {
        self.report.breaks.push(Break {
            version,
            kind,
            problem,
        });
    }

    /// Checks one version against the one before it.
    fn step(&mut self, row: &Row) {
        let n = row.version;
        self.report.versions += 1;
        self.report.first.get_or_insert(n);
        self.report.last = Some(n);
        let computed = Digest::of(&row.body);
        self.report.head = Some(computed.to_string());

        // The number: one above the previous, the first is 1.
        let expected = self.previous.as_ref().map_or(1, |(p, _, _)| p + 1);
        // Numbers recorded lost (the database lost them and no edge held
        // them when the version after them was adopted back from the
        // edges): a known loss, and the parent (one of them) cannot be
        // checked.
        let across_lost = n > expected
            && (expected..n).all(|m| self.lost.get(&m).is_some_and(|followed| *followed == n));
        if across_lost {
            self.report.lost.push(Gap {
                from: expected,
                to: n - 1,
            });
        } else if n != expected {
            let gap = Gap {
                from: expected,
                to: n - 1,
            };
            if n > expected && self.allow_gaps {
                self.report.gaps.push(gap);
            } else if n > expected {
                let problem = match self.previous {
                    Some((p, _, _)) => format!(
                        "follows version {p}: version{} {} missing",
                        if gap.from == gap.to { "" } else { "s" },
                        show_range(gap)
                    ),
                    None => format!(
                        "is the first stored version: version{} {} missing",
                        if gap.from == gap.to { "" } else { "s" },
                        show_range(gap)
                    ),
                };
                self.broken(n, "number", problem);
            } else {
                self.broken(
                    n,
                    "number",
                    format!("version number {n} out of order (expected {expected})"),
                );
            }
        }

        // The digest column against the body.
        match row.digest.parse::<Digest>() {
            Ok(stored) if stored == computed => {}
            Ok(stored) => self.broken(
                n,
                "digest",
                format!("the body's SHA-256 is {computed}, the stored digest is {stored}: the body was changed"),
            ),
            Err(_) => self.broken(
                n,
                "digest",
                format!("the stored digest {:?} is not a digest", shorten(&row.digest)),
            ),
        }

        // The link to the previous body, as the body says it and as the
        // parent column says it.
        let previous_digest = self.previous.as_ref().map(|(_, d, _)| *d);
        let column_parent = match row.parent.as_deref().map(str::parse::<Digest>) {
            None => Ok(None),
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(_)) => Err(()),
        };
        match column_parent {
            Ok(parent) if parent == previous_digest || across_lost => {}
            Ok(parent) => {
                let problem = parent_problem(
                    "stored parent",
                    parent,
                    previous_digest,
                    self.previous.as_ref().map(|p| p.0),
                );
                self.broken(n, "parent", problem);
            }
            Err(()) => self.broken(
                n,
                "parent",
                format!(
                    "the stored parent {:?} is not a digest",
                    row.parent.as_deref().map(shorten)
                ),
            ),
        }

        // The body: an envelope an edge would accept, saying what the row says.
        let envelope = match Envelope::parse(&row.body) {
            Ok(e) => Some(e),
            Err(e) => {
                self.broken(
                    n,
                    "envelope",
                    format!("the body is not an envelope an edge accepts: {e}"),
                );
                None
            }
        };
        if let Some(e) = &envelope {
            if i64::try_from(e.version).ok() != Some(n) {
                self.broken(
                    n,
                    "version",
                    format!(
                        "the body says version {}, the row is version {n}",
                        e.version
                    ),
                );
            }
            if e.parent != previous_digest && !across_lost {
                let problem = parent_problem(
                    "body's parent",
                    e.parent,
                    previous_digest,
                    self.previous.as_ref().map(|p| p.0),
                );
                self.broken(n, "parent", problem);
            }
            for (field, body, column) in [
                ("actor", &e.actor, &row.actor),
                ("reason", &e.reason, &row.reason),
                ("issued_at", &e.issued_at, &row.issued_at),
            ] {
                if body != column {
                    self.broken(
                        n,
                        "metadata",
                        format!(
                            "the stored {field} {:?} is not the signed body's {:?}",
                            shorten(column),
                            shorten(body)
                        ),
                    );
                }
            }
        }

        // The signature, under the keys an edge holding the previous
        // version checks it with.
        let trusted = self
            .previous
            .as_ref()
            .and_then(|(_, _, declared)| declared.clone())
            .unwrap_or_else(|| self.given.clone());
        if !trusted
            .iter()
            .any(|k| k.verify(&row.body, &row.signature).is_ok())
        {
            let names = trusted.iter().map(ToString::to_string).collect::<Vec<_>>();
            self.broken(
                n,
                "signature",
                format!(
                    "the signature {:?} does not verify under {}",
                    shorten(&row.signature),
                    names.join(", ")
                ),
            );
        }

        let declared = envelope.and_then(declared_keys);
        self.previous = Some((n, computed, declared));
    }

    fn finish(mut self) -> Report {
        self.report.ok = self.report.breaks.is_empty();
        self.report
    }
}

/// The keys an envelope declares trusted for its successors.
fn declared_keys(envelope: Envelope) -> Option<Vec<PublicKey>> {
    envelope.keys
}

fn parent_problem(
    what: &str,
    parent: Option<Digest>,
    expected: Option<Digest>,
    previous: Option<i64>,
) -> String {
    let shown = parent.map_or_else(|| "none".to_owned(), |d| d.to_string());
    match (expected, previous) {
        (Some(d), Some(p)) => {
            format!("the {what} is {shown}, not the digest of version {p}'s body ({d})")
        }
        _ => format!("the {what} is {shown}, but the first version has none"),
    }
}

fn show_range(g: Gap) -> String {
    if g.from == g.to {
        g.from.to_string()
    } else {
        format!("{}..={}", g.from, g.to)
    }
}

fn shorten(s: &str) -> String {
    rollout_api::shorten(s, 80).into_owned()
}

/// Reads a column as text or bytes, whichever SQLite holds.
fn bytes_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
        ValueRef::Integer(n) => Some(n.to_string().into_bytes()),
        ValueRef::Real(x) => Some(x.to_string().into_bytes()),
    })
}

fn text_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(bytes_at(row, i)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        version: r.get(0)?,
        parent: text_at(r, 1)?,
        digest: text_at(r, 2)?.unwrap_or_default(),
        body: bytes_at(r, 3)?.unwrap_or_default(),
        signature: text_at(r, 4)?.unwrap_or_default(),
        actor: text_at(r, 5)?.unwrap_or_default(),
        reason: text_at(r, 6)?.unwrap_or_default(),
        issued_at: text_at(r, 7)?.unwrap_or_default(),
    })
}

/// Walks the history stored in `db`: a SQLite file or a PostgreSQL URL.
fn verify_file(db: &Path, keys: Vec<PublicKey>, allow_gaps: bool) -> Result<Report, Fail> {
    match Location::of(db) {
        Location::Postgres(url) => verify_database(url, keys, allow_gaps),
        Location::File(db) => verify_sqlite(db, keys, allow_gaps),
    }
}

/// Walks the history in a PostgreSQL store: the versions in one statement
/// (one snapshot), then the numbers recorded lost.
fn verify_database(url: &str, keys: Vec<PublicKey>, allow_gaps: bool) -> Result<Report, Fail> {
    let shown = Location::Postgres(url).to_string();
    let failed = |e: &dyn std::fmt::Display| Fail::new(exit::FAILED, format!("{shown}: {e}"));
    let conn = Conn::Pg(Box::new(PgConn::connect(url).map_err(|e| failed(&e))?));
    let rows = conn
        .query_map(
            "SELECT version, parent, digest, body, signature, actor, reason, issued_at
             FROM versions ORDER BY version",
            &[],
            |r| {
                Ok(Row {
                    version: r.get(0)?,
                    parent: r.get(1)?,
                    digest: r.get(2)?,
                    body: r.get(3)?,
                    signature: r.get(4)?,
                    actor: r.get(5)?,
                    reason: r.get(6)?,
                    issued_at: r.get(7)?,
                })
            },
        )
        .map_err(|e| failed(&format!("not a control store ({e})")))?;
    let mut walk = Walk::new(keys, allow_gaps);
    // Read after the versions: a version adopted across lost numbers is
    // written with them, so every one the walk sees has its numbers here.
    // A store from before schema 3 has no such table, and nothing lost.
    let has_lost = conn
        .query_row(
            "SELECT to_regclass('lost_versions') IS NOT NULL",
            &[],
            |r| Ok(r.get::<i64>(0)? == 1),
        )
        .map_err(|e| failed(&e))?;
    if has_lost {
        let ranges = conn
            .query_map(
                "SELECT first, last, followed_by FROM lost_versions",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| failed(&e))?;
        walk.lose(ranges);
    }
    for row in &rows {
        walk.step(row);
    }
    Ok(walk.finish())
}

/// Walks the history in a SQLite store file, opened read-only.
fn verify_sqlite(db: &Path, keys: Vec<PublicKey>, allow_gaps: bool) -> Result<Report, Fail> {
    use rusqlite::OpenFlags;
    let failed =
        |e: &dyn std::fmt::Display| Fail::new(exit::FAILED, format!("{}: {e}", db.display()));
    if !db.is_file() {
        return Err(Fail::new(
            exit::INVALID,
            format!("{}: no such store file", db.display()),
        ));
    }
    let conn = rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed(&e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| failed(&e))?;
    // One statement is one read transaction: a consistent snapshot even
    // while the service commits.
    let mut stmt = conn
        .prepare(
            "SELECT version, parent, digest, body, signature, actor, reason, issued_at
             FROM versions ORDER BY version",
        )
        .map_err(|e| failed(&format!("not a control store ({e})")))?;
    let mut rows = stmt.query([]).map_err(|e| failed(&e))?;
    let mut walk = Walk::new(keys, allow_gaps);
    let mut stored = Vec::new();
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => return Err(failed(&e)),
        };
        match read_row(row) {
            Ok(row) => stored.push(row),
            Err(e) => {
                let version = row.get::<_, i64>(0).unwrap_or(-1);
                walk.broken(version, "row", format!("the row does not read: {e}"));
            }
        }
    }
    drop(rows);
    drop(stmt);
    // Read after the versions (see verify_database). A store from before
    // schema 3 has no such table, and nothing lost.
    let has_lost: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'lost_versions'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| failed(&e))?;
    if has_lost {
        let mut stmt = conn
            .prepare("SELECT first, last, followed_by FROM lost_versions")
            .map_err(|e| failed(&e))?;
        let ranges: Vec<(i64, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(Iterator::collect)
            .map_err(|e| failed(&e))?;
        walk.lose(ranges);
    }
    for row in &stored {
        walk.step(row);
    }
    Ok(walk.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_core::{ConfigDoc, EnvelopeDoc, SecretKey};

    fn secret() -> SecretKey {
        SecretKey::from_seed([5; 32])
    }

    fn config(weight: f64) -> ConfigDoc {
        serde_json::from_value(serde_json::json!({
            "schema": 1,
            "routes": [{"id": "web", "old": "http://127.0.0.1:1", "new": "http://127.0.0.1:2",
                        "new_weight": weight, "key": ["header:x-user-id"]}]
        }))
        .expect("config")
    }

    /// A good history of `n` versions, as the service stores it.
    fn history(n: i64) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for v in 1..=n {
            let parent = rows.last().map(|r| Digest::of(&r.body));
            let body = EnvelopeDoc {
                version: v as u64,
                parent,
                issued_at: format!("2026-11-27T08:00:{v:02}Z"),
                actor: "ci".into(),
                reason: format!("step {v}"),
                config: config(v as f64),
                keys: None,
            }
            .to_body();
            rows.push(Row {
                version: v,
                parent: parent.map(|d| d.to_string()),
                digest: Digest::of(&body).to_string(),
                signature: secret().sign(&body),
                body,
                actor: "ci".into(),
                reason: format!("step {v}"),
                issued_at: format!("2026-11-27T08:00:{v:02}Z"),
            });
        }
        rows
    }

    fn walk(rows: &[Row], allow_gaps: bool) -> Report {
        let mut w = Walk::new(vec![secret().public_key()], allow_gaps);
        for r in rows {
            w.step(r);
        }
        w.finish()
    }

    fn kinds(report: &Report) -> Vec<(i64, &'static str)> {
        report.breaks.iter().map(|b| (b.version, b.kind)).collect()
    }

    #[test]
    fn an_intact_history_verifies() {
        let report = walk(&history(5), false);
        assert!(report.ok, "{:?}", report.breaks);
        assert_eq!(
            (report.versions, report.first, report.last),
            (5, Some(1), Some(5))
        );
        let empty = walk(&[], false);
        assert!(empty.ok && empty.versions == 0);
    }

    #[test]
    fn a_changed_body_breaks_its_digest_and_the_next_link() {
        let mut rows = history(4);
        let body = String::from_utf8(rows[2].body.clone()).expect("utf-8");
        rows[2].body = body.replace("step 3", "step 9").into_bytes();
        let report = walk(&rows, false);
        assert!(!report.ok);
        let k = kinds(&report);
        assert!(k.contains(&(3, "digest")), "{k:?}");
        assert!(k.contains(&(3, "signature")), "{k:?}");
        assert!(k.contains(&(4, "parent")), "{k:?}");
        assert!(k.iter().all(|(v, _)| *v >= 3), "{k:?}");
    }

    #[test]
    fn a_changed_body_with_its_digest_updated_still_breaks_the_chain() {
        let mut rows = history(3);
        let body = String::from_utf8(rows[1].body.clone()).expect("utf-8");
        rows[1].body = body.replace("step 2", "step 7").into_bytes();
        rows[1].digest = Digest::of(&rows[1].body).to_string();
        let k = kinds(&walk(&rows, false));
        assert_eq!(
            k,
            [
                (2, "metadata"),
                (2, "signature"),
                (3, "parent"),
                (3, "parent")
            ]
        );
    }

    #[test]
    fn a_broken_parent_is_named() {
        let mut rows = history(3);
        rows[2].parent = Some(Digest::of(b"elsewhere").to_string());
        let report = walk(&rows, false);
        assert_eq!(kinds(&report), [(3, "parent")]);
        assert!(
            report.breaks[0]
                .problem
                .contains("not the digest of version 2's body"),
            "{}",
            report.breaks[0].problem
        );
    }

    #[test]
    fn gaps_break_the_numbering_unless_allowed() {
        let mut rows = history(4);
        // Version 3 renumbered 5 (its body then disagrees too).
        rows.remove(3);
        rows[2].version = 5;
        let k = kinds(&walk(&rows, false));
        assert!(
            k.contains(&(5, "number")) && k.contains(&(5, "version")),
            "{k:?}"
        );
        // A first version above 1.
        let rows = history(3)[1..].to_vec();
        let report = walk(&rows, false);
        assert!(kinds(&report).contains(&(2, "number")));
        assert!(
            report.breaks[0].problem.contains("version 1 missing"),
            "{:?}",
            report.breaks
        );
        // Allowed, a gap is listed but not a break (the parent links still
        // must hold, and here do not: version 2's parent is version 1).
        let allowed = walk(&rows, true);
        assert_eq!(allowed.gaps, [Gap { from: 1, to: 1 }]);
        assert_eq!(kinds(&allowed), [(2, "parent"), (2, "parent")]);
    }

    #[test]
    fn numbers_recorded_lost_are_a_known_loss_and_only_those() {
        // Versions 2 and 3 lost by the database; 4 adopted back from the
        // edges (its parent, version 3, is not stored).
        let mut rows = history(5);
        rows.drain(1..3);
        let walk_lost = |rows: &[Row], lost: Vec<(i64, i64, i64)>| {
            let mut w = Walk::new(vec![secret().public_key()], false);
            w.lose(lost);
            for r in rows {
                w.step(r);
            }
            w.finish()
        };
        let report = walk_lost(&rows, vec![(2, 3, 4)]);
        assert!(report.ok, "{:?}", report.breaks);
        assert_eq!(report.lost, [Gap { from: 2, to: 3 }]);
        assert!(report.gaps.is_empty());
        // Only part of the gap recorded, a range recorded for another
        // version, or one that does not end before the version it names:
        // the numbering and the link break.
        for lost in [
            vec![(3, 3, 4)],
            vec![(2, 3, 9)],
            vec![(2, 2, 4), (3, 3, 4)],
            // Tampered rows: a range from far below, or backwards.
            vec![(i64::MIN, 3, 4)],
            vec![(3, 2, 3)],
        ] {
            let k = kinds(&walk_lost(&rows, lost.clone()));
            assert!(
                k.contains(&(4, "number")) && k.contains(&(4, "parent")),
                "{lost:?}: {k:?}"
            );
        }
        // The link after the adopted version is checked as ever.
        let mut rows = rows.clone();
        rows[2].parent = rows[0].parent.clone();
        assert_eq!(kinds(&walk_lost(&rows, vec![(2, 3, 4)])), [(5, "parent")]);
    }

    #[test]
    fn a_signature_by_another_key_or_a_moved_signature_fails() {
        let mut rows = history(3);
        rows[1].signature = SecretKey::from_seed([6; 32]).sign(&rows[1].body);
        rows[2].signature = rows[0].signature.clone();
        assert_eq!(
            kinds(&walk(&rows, false)),
            [(2, "signature"), (3, "signature")]
        );
    }

    #[test]
    fn a_wrong_stored_column_is_caught() {
        let mut rows = history(2);
        rows[1].reason = "innocent".into();
        rows[0].digest = "xyz".into();
        assert_eq!(kinds(&walk(&rows, false)), [(1, "digest"), (2, "metadata")]);
    }
}
