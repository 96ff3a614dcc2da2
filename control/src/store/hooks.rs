//! Hook runs in the store. A run is queued in the transaction of what
//! caused it (a version, a plan's start or end), so it is never lost and
//! never queued for something that did not happen; its results are
//! appended as they come. Both tables only grow: triggers refuse UPDATE
//! and DELETE, so what a hook said about a version stays next to it.

use std::collections::HashMap;

use super::db::{Result, Row, Sql as _, params};
use super::{Store, Tx, now_ms, sql};
use rollout_api::{HookStatus, Version};

pub(super) const HOOK_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hook_runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    hook      TEXT NOT NULL,
    event     TEXT NOT NULL,
    version   INTEGER NOT NULL,
    plan      INTEGER,
    route     TEXT NOT NULL,
    actor     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    queued_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_runs_by_version ON hook_runs (version);
CREATE INDEX IF NOT EXISTS hook_runs_by_plan ON hook_runs (plan, id);
CREATE TABLE IF NOT EXISTS hook_results (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run     INTEGER NOT NULL REFERENCES hook_runs (id),
    attempt INTEGER NOT NULL,
    status  TEXT NOT NULL,
    output  TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_results_by_run ON hook_results (run, id);
";

/// Hook runs and results are append-only (see [`super::refusing_changes`]).
pub(super) const RUNS_FIXED: (&str, &str) = ("hook_runs", "hook runs are append-only");
pub(super) const RESULTS_FIXED: (&str, &str) = ("hook_results", "hook results are append-only");

/// What a new run is about.
#[derive(Debug, Clone)]
pub struct NewHookRun<'a> {
    /// The event (`version`, `plan.start`, ...).
    pub event: &'a str,
    /// The version committed, or current when a plan event happened.
    pub version: Version,
    /// The plan it belongs to, if any.
    pub plan: Option<i64>,
    /// The plan's route, or the routes a version changed (comma-separated).
    pub route: &'a str,
    /// Who caused it.
    pub actor: &'a str,
    /// Why.
    pub reason: &'a str,
}

/// A run and where it stands.
#[derive(Debug, Clone)]
pub struct HookRunRow {
    /// Its id.
    pub id: i64,
    /// The hook's name.
    pub hook: String,
    /// The event.
    pub event: String,
    /// The version it belongs to.
    pub version: Version,
    /// The plan it belongs to.
    pub plan: Option<i64>,
    /// The route(s).
    pub route: String,
    /// Who caused it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When it was queued, ms.
    pub queued_ms: i64,
    /// Its last result (`Queued` before the first).
    pub status: HookStatus,
    /// What the last result said.
    pub output: String,
    /// When the last result was recorded.
    pub result_ms: Option<i64>,
    /// How many times it was started.
    pub attempts: u32,
}

const RUN_COLUMNS: &str =
    "r.id, r.hook, r.event, r.version, r.plan, r.route, r.actor, r.reason, r.queued_ms,
    x.status, x.output, x.at_ms, x.attempt";

/// Runs joined with their last result (`x`, absent before the first).
const RUNS_WITH_LAST: &str = "hook_runs r LEFT JOIN hook_results x ON x.id =
    (SELECT MAX(id) FROM hook_results WHERE run = r.id)";

fn status_of(text: Option<&str>) -> HookStatus {
    match text {
        None => HookStatus::Queued,
        Some("running") => HookStatus::Running,
        Some("ok") => HookStatus::Ok,
        Some("timeout") => HookStatus::Timeout,
        Some(_) => HookStatus::Failed,
    }
}

fn run_row(r: &Row) -> Result<HookRunRow> {
    let status: Option<String> = r.get(9)?;
    let version: i64 = r.get(3)?;
    let attempt: Option<i64> = r.get(12)?;
    Ok(HookRunRow {
        id: r.get(0)?,
        hook: r.get(1)?,
        event: r.get(2)?,
        version: Version::new(version.max(0) as u64),
        plan: r.get(4)?,
        route: r.get(5)?,
        actor: r.get(6)?,
        reason: r.get(7)?,
        queued_ms: r.get(8)?,
        status: status_of(status.as_deref()),
        output: r.get::<Option<String>>(10)?.unwrap_or_default(),
        result_ms: r.get(11)?,
        attempts: attempt.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
    })
}

impl Tx<'_> {
    /// Queues a run of each of `hooks` for `run`.
    pub fn queue_hook_runs(&self, hooks: &[&str], run: &NewHookRun<'_>) -> Result<()> {
        let now = now_ms();
        for hook in hooks {
            self.0.execute(
                "INSERT INTO hook_runs (hook, event, version, plan, route, actor, reason, queued_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    *hook,
                    run.event,
                    sql(run.version),
                    run.plan,
                    run.route,
                    run.actor,
                    run.reason,
                    now
                ],
            )?;
        }
        Ok(())
    }

    /// The runs of `hooks` queued for plan `plan` since it last started
    /// (its latest `plan.start` runs and everything after them); `None`
    /// when no `plan.start` run of theirs was ever queued.
    pub fn plan_hook_runs(&self, plan: i64, hooks: &[String]) -> Result<Option<Vec<HookRunRow>>> {
        let base: Option<i64> = self
            .0
            .query_opt(
                // One start's runs are queued together, at one instant: the
                // batch of the latest (highest id), whatever the clock did.
                "SELECT MIN(id) FROM hook_runs WHERE plan = ?1 AND event = 'plan.start' AND queued_ms =
                 (SELECT queued_ms FROM hook_runs WHERE id =
                    (SELECT MAX(id) FROM hook_runs WHERE plan = ?1 AND event = 'plan.start'))",
                params![plan],
                |r| r.get(0),
            )?
            .flatten();
        let Some(base) = base else {
            return Ok(None);
        };
        let rows = self.0.query_map(
            &format!(
                "SELECT {RUN_COLUMNS} FROM {RUNS_WITH_LAST} WHERE r.plan = ?1 AND r.id >= ?2 ORDER BY r.id"
            ),
            params![plan, base],
            run_row,
        )?;
        Ok(Some(
            rows.into_iter()
                .filter(|r| hooks.contains(&r.hook))
                .collect(),
        ))
    }
}

impl Store {
    /// Runs from id `from` on that have not finished (queued, or started
    /// by a service that stopped before it recorded the end), oldest first.
    pub fn unfinished_hook_runs(&self, from: i64, limit: u32) -> Result<Vec<HookRunRow>> {
        self.conn().query_map(
            &format!(
                "SELECT {RUN_COLUMNS} FROM {RUNS_WITH_LAST}
                 WHERE r.id >= ?1 AND (x.status IS NULL OR x.status = 'running')
                 ORDER BY r.id LIMIT ?2"
            ),
            params![from, limit],
            run_row,
        )
    }

    /// The highest run id, 0 before the first.
    pub fn last_hook_run(&self) -> Result<i64> {
        self.conn().query_row(
            "SELECT COALESCE(MAX(id), 0) FROM hook_runs",
            params![],
            |r| r.get(0),
        )
    }

    /// Appends a result of run `run`.
    pub fn record_hook_result(
        &self,
        run: i64,
        attempt: u32,
        status: &str,
        output: &str,
    ) -> Result<()> {
        self.fenced(|tx| tx.execute(
            "INSERT INTO hook_results (run, attempt, status, output, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run, attempt, status, output, now_ms()],
        ))?;
        Ok(())
    }

    /// How many results are stored (for tests).
    #[cfg(test)]
    pub(crate) fn hook_result_rows(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM hook_results", params![], |r| {
                r.get::<i64>(0)
            })
            .map(|n| n.max(0) as u64)
    }

    /// The runs that belong to versions `low..=high`, by version, oldest first.
    pub fn hook_runs_between(
        &self,
        low: Version,
        high: Version,
    ) -> Result<HashMap<Version, Vec<HookRunRow>>> {
        let rows = self.conn().query_map(
            &format!(
                "SELECT {RUN_COLUMNS} FROM {RUNS_WITH_LAST}
                 WHERE r.version BETWEEN ?1 AND ?2 ORDER BY r.id"
            ),
            params![sql(low), sql(high)],
            run_row,
        )?;
        let mut out: HashMap<Version, Vec<HookRunRow>> = HashMap::new();
        for row in rows {
            out.entry(row.version).or_default().push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_results_only_grow_and_a_run_shows_its_last_result() {
        let dir = std::env::temp_dir().join(format!("rollout-hooks-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("s.sqlite")).expect("open");
        let run = |event, version, plan| NewHookRun {
            event,
            version: Version::new(version),
            plan,
            route: "web",
            actor: "ci",
            reason: "why",
        };
        store
            .write(|tx| {
                tx.queue_hook_runs(&["a", "b"], &run("version", 1, None))?;
                tx.queue_hook_runs(&["a"], &run("plan.start", 1, Some(7)))?;
                tx.queue_hook_runs(&["a", "b"], &run("version", 2, Some(7)))
            })
            .expect("queue");
        assert_eq!(store.last_hook_run().expect("last"), 5);
        store.record_hook_result(1, 1, "running", "").expect("r");
        store
            .record_hook_result(1, 1, "ok", "restore_point=x")
            .expect("r");
        store.record_hook_result(2, 1, "running", "").expect("r");
        store
            .record_hook_result(3, 1, "timeout", "no answer")
            .expect("r");
        let open: Vec<i64> = store
            .unfinished_hook_runs(0, 10)
            .expect("unfinished")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            open,
            [2, 4, 5],
            "queued and interrupted runs are unfinished"
        );
        let by = store
            .hook_runs_between(Version::new(1), Version::new(1))
            .expect("between");
        let v1: Vec<(&str, HookStatus, &str)> = by[&Version::new(1)]
            .iter()
            .map(|r| (r.hook.as_str(), r.status, r.output.as_str()))
            .collect();
        assert_eq!(
            v1,
            [
                ("a", HookStatus::Ok, "restore_point=x"),
                ("b", HookStatus::Running, ""),
                ("a", HookStatus::Timeout, "no answer")
            ]
        );
        let plan = store
            .write(|tx| tx.plan_hook_runs(7, &["a".to_owned()]))
            .expect("plan runs")
            .expect("started");
        let ids: Vec<i64> = plan.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [3, 4],
            "runs of the required hook since the plan started"
        );
        assert!(
            store
                .write(|tx| tx.plan_hook_runs(8, &["a".to_owned()]))
                .expect("plan runs")
                .is_none()
        );
        let conn = store.conn();
        for sql in [
            "UPDATE hook_results SET status = 'ok' WHERE run = 3",
            "DELETE FROM hook_results WHERE run = 3",
            "UPDATE hook_runs SET hook = 'c' WHERE id = 1",
            "DELETE FROM hook_runs WHERE id = 5",
        ] {
            let e = conn.execute(sql, params![]).expect_err(sql);
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
