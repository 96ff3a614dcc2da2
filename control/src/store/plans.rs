//! Plans in the store: their documents and states, what happened to them
//! (events, with a webhook outbox), their checks' results, and the check
//! templates plans refer to by name.
//!
//! A plan's state is written in the same transaction as any version it
//! commits, with a revision number that must not have moved since it was
//! read: two writers never both advance one plan.

use super::db::{Error, Result, Row, Sql, params};
use super::{Store, Tx, now_ms, sql};
use rollout_api::Version;
use rollout_core::plan::judge::{Judgement, Measurement};
use rollout_core::plan::machine::{EventKind, PlanState};
use rollout_core::plan::{CheckDoc, PlanDoc};

/// A plan's row id.
pub type PlanId = i64;

/// A plan as stored.
#[derive(Debug, Clone)]
pub struct PlanRow {
    /// Its id.
    pub id: PlanId,
    /// The route it ramps.
    pub route: String,
    /// The document, templates resolved.
    pub doc: PlanDoc,
    /// Where it is.
    pub state: PlanState,
    /// Bumped by every write of `state`.
    pub rev: i64,
    /// Who started it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When, ms.
    pub created_ms: i64,
    /// Last change, ms.
    pub updated_ms: i64,
}

/// Something that happened to a plan.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Its id (also the webhook id).
    pub id: i64,
    /// The plan.
    pub plan: PlanId,
    /// The plan's route.
    pub route: String,
    /// When, ms.
    pub at_ms: i64,
    /// What kind.
    pub kind: String,
    /// In words.
    pub message: String,
    /// The version it committed, if it did.
    pub version: Option<Version>,
}

/// One judged measurement of a check.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// The check's name.
    pub name: String,
    /// When, ms.
    pub at_ms: i64,
    /// The verdict.
    pub verdict: String,
    /// The verdict in words.
    pub detail: String,
    /// The measurement, as JSON.
    pub measurement: String,
}

/// An event to deliver to one webhook.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its id.
    pub id: i64,
    /// The event.
    pub event: EventRow,
    /// Where to.
    pub url: String,
    /// Deliveries tried so far.
    pub attempts: u32,
}

fn json_at<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| Error::column(i, e))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Encode(e.to_string()))
}

const PLAN_COLUMNS: &str = "id, route, doc, state, rev, actor, reason, created_ms, updated_ms";

fn plan_row(r: &Row) -> Result<PlanRow> {
    Ok(PlanRow {
        id: r.get(0)?,
        route: r.get(1)?,
        doc: json_at(r, 2)?,
        state: json_at(r, 3)?,
        rev: r.get(4)?,
        actor: r.get(5)?,
        reason: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
    })
}

/// Read from `plan_events e JOIN plans p ON p.id = e.plan`.
const EVENT_COLUMNS: &str = "e.id, e.plan, p.route, e.at_ms, e.kind, e.message, e.version";

/// An event from [`EVENT_COLUMNS`] starting at column `at`.
fn event_at(r: &Row, at: usize) -> Result<EventRow> {
    let version: Option<i64> = r.get(at + 6)?;
    Ok(EventRow {
        id: r.get(at)?,
        plan: r.get(at + 1)?,
        route: r.get(at + 2)?,
        at_ms: r.get(at + 3)?,
        kind: r.get(at + 4)?,
        message: r.get(at + 5)?,
        version: version.map(|v| Version::new(v.max(0) as u64)),
    })
}

fn plan_in(db: &impl Sql, id: PlanId) -> Result<Option<PlanRow>> {
    db.query_opt(
        &format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = ?1"),
        params![id],
        plan_row,
    )
}

/// Plans that are not promoted, aborted or failed, on `route` (all routes: `None`).
fn running_in(db: &impl Sql, route: Option<&str>) -> Result<Vec<PlanRow>> {
    db.query_map(
        &format!(
            "SELECT {PLAN_COLUMNS} FROM plans
             WHERE phase NOT IN ('promoted', 'aborted', 'failed') AND route = COALESCE(?1, route)
             ORDER BY id"
        ),
        params![route],
        plan_row,
    )
}

fn template_in(db: &impl Sql, name: &str) -> Result<Option<CheckDoc>> {
    db.query_opt(
        "SELECT doc FROM templates WHERE name = ?1",
        params![name],
        |r| json_at(r, 0),
    )
}

impl Tx<'_> {
    /// Stores a new plan; its id.
    pub fn insert_plan(
        &self,
        route: &str,
        doc: &PlanDoc,
        state: &PlanState,
        actor: &str,
        reason: &str,
    ) -> Result<PlanId> {
        let now = now_ms();
        self.0.query_row(
            "INSERT INTO plans (route, doc, state, phase, actor, reason, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
            params![
                route,
                json(doc)?,
                json(state)?,
                state.phase.as_str(),
                actor,
                reason,
                now
            ],
            |r| r.get(0),
        )
    }

    /// Plan `id`.
    pub fn plan(&self, id: PlanId) -> Result<Option<PlanRow>> {
        plan_in(&self.0, id)
    }

    /// The running plans on `route` (every route: `None`).
    pub fn running_plans(&self, route: Option<&str>) -> Result<Vec<PlanRow>> {
        running_in(&self.0, route)
    }

    /// Writes `state` for plan `id` if its revision is still `rev`; false
    /// when another writer came first (nothing is written then).
    pub fn save_plan(&self, id: PlanId, rev: i64, state: &PlanState) -> Result<bool> {
        Ok(self.0.execute(
            "UPDATE plans SET state = ?3, phase = ?4, rev = rev + 1, updated_ms = ?5
             WHERE id = ?1 AND rev = ?2",
            params![id, rev, json(state)?, state.phase.as_str(), now_ms()],
        )? == 1)
    }

    /// Records an event of plan `plan` and queues it for every webhook.
    pub fn log_event(
        &self,
        plan: PlanId,
        kind: EventKind,
        message: &str,
        version: Option<Version>,
        webhooks: &[String],
    ) -> Result<i64> {
        let now = now_ms();
        let event: i64 = self.0.query_row(
            "INSERT INTO plan_events (plan, at_ms, kind, message, version)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            params![plan, now, kind.as_str(), message, version.map(sql)],
            |r| r.get(0),
        )?;
        for url in webhooks {
            self.0.execute(
                "INSERT INTO outbox (event, url, next_ms) VALUES (?1, ?2, ?3)",
                params![event, url, now],
            )?;
        }
        Ok(event)
    }

    /// Records a judged measurement.
    pub fn record_check(
        &self,
        plan: PlanId,
        name: &str,
        judgement: &Judgement,
        measurement: &Measurement,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO check_results (plan, name, at_ms, verdict, detail, measurement)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                plan,
                name,
                now_ms(),
                judgement.verdict.as_str(),
                &judgement.detail,
                json(measurement)?
            ],
        )?;
        Ok(())
    }

    /// The stored check template `name`.
    pub fn template(&self, name: &str) -> Result<Option<CheckDoc>> {
        template_in(&self.0, name)
    }

    /// Stores (or replaces) template `name`.
    pub fn put_template(&self, name: &str, doc: &CheckDoc, actor: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO templates (name, doc, actor, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET doc = ?2, actor = ?3, updated_ms = ?4",
            params![name, json(doc)?, actor, now_ms()],
        )?;
        Ok(())
    }

    /// Removes template `name`; false when there was none.
    pub fn delete_template(&self, name: &str) -> Result<bool> {
        Ok(self
            .0
            .execute("DELETE FROM templates WHERE name = ?1", params![name])?
            == 1)
    }
}

impl Store {
    /// Plan `id`.
    pub fn plan(&self, id: PlanId) -> Result<Option<PlanRow>> {
        plan_in(&*self.conn(), id)
    }

    /// Every running plan.
    pub fn running_plans(&self) -> Result<Vec<PlanRow>> {
        running_in(&*self.conn(), None)
    }

    /// Up to `limit` plans, newest first, on `route` (all routes: `None`).
    pub fn plans(&self, route: Option<&str>, limit: u32) -> Result<Vec<PlanRow>> {
        self.conn().query_map(
            &format!(
                "SELECT {PLAN_COLUMNS} FROM plans WHERE route = COALESCE(?1, route)
                 ORDER BY id DESC LIMIT ?2"
            ),
            params![route, limit],
            plan_row,
        )
    }

    /// The newest `limit` events of plan `plan`, oldest first.
    pub fn plan_events(&self, plan: PlanId, limit: u32) -> Result<Vec<EventRow>> {
        self.conn().query_map(
            &format!(
                "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM plan_events e
                 JOIN plans p ON p.id = e.plan WHERE e.plan = ?1
                 ORDER BY e.id DESC LIMIT ?2) AS newest ORDER BY 1"
            ),
            params![plan, limit],
            |r| event_at(r, 0),
        )
    }

    /// The newest `limit` check results of plan `plan`, oldest first.
    pub fn check_results(&self, plan: PlanId, limit: u32) -> Result<Vec<CheckRow>> {
        self.conn().query_map(
            "SELECT * FROM (SELECT id, name, at_ms, verdict, detail, measurement FROM check_results
             WHERE plan = ?1 ORDER BY id DESC LIMIT ?2) AS newest ORDER BY id",
            params![plan, limit],
            |r| {
                Ok(CheckRow {
                    name: r.get(1)?,
                    at_ms: r.get(2)?,
                    verdict: r.get(3)?,
                    detail: r.get(4)?,
                    measurement: r.get(5)?,
                })
            },
        )
    }

    /// How many plans are in each phase.
    pub fn plans_by_phase(&self) -> Result<Vec<(String, u64)>> {
        self.conn().query_map(
            "SELECT phase, COUNT(*) FROM plans GROUP BY phase ORDER BY phase",
            params![],
            |r| Ok((r.get(0)?, r.get::<i64>(1)?.max(0) as u64)),
        )
    }

    /// Every stored template, by name.
    pub fn templates(&self) -> Result<Vec<(String, CheckDoc)>> {
        self.conn().query_map(
            "SELECT name, doc FROM templates ORDER BY name",
            params![],
            |r| Ok((r.get(0)?, json_at(r, 1)?)),
        )
    }

    /// Up to `limit` webhook deliveries due at `now`.
    pub fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<OutboxRow>> {
        self.conn().query_map(
            &format!(
                "SELECT o.id, o.url, o.attempts, {EVENT_COLUMNS} FROM outbox o
                 JOIN plan_events e ON e.id = o.event JOIN plans p ON p.id = e.plan
                 WHERE o.done_ms IS NULL AND o.next_ms <= ?1 ORDER BY o.id LIMIT ?2"
            ),
            params![now, limit],
            |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    attempts: r.get(2)?,
                    event: event_at(r, 3)?,
                })
            },
        )
    }

    /// A delivery that succeeded (`next_ms` `None`), or failed and is
    /// tried again at `next_ms`, or (`gave_up`) never again.
    pub fn delivered(
        &self,
        id: i64,
        error: Option<&str>,
        next_ms: i64,
        gave_up: bool,
    ) -> Result<()> {
        let done = (error.is_none() || gave_up).then(now_ms);
        self.fenced(|tx| {
            tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, done_ms = ?2, next_ms = ?3, last_error = ?4
             WHERE id = ?1",
            params![id, done, next_ms, error],
        )
        })?;
        Ok(())
    }
}
