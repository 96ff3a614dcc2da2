//! Plans and their events as the API shows them.

use rollout_api::{CheckView, PlanEvent, PlanView};
use rollout_core::plan::machine::EventKind;
use rollout_core::plan::{CheckKind, Plan, Step};

use crate::store::{EventRow, PlanRow, now_ms};
use crate::time::format_ms;

/// `row` for the API.
pub fn plan_view(row: &PlanRow) -> PlanView {
    let plan = Plan::try_from(&row.doc).ok();
    let s = &row.state;
    let now = now_ms();
    let steps = row.doc.steps.len();
    let step_text = match plan.as_ref().and_then(|p| p.steps().get(s.step)) {
        Some(Step::SetWeight(w)) => format!("set weight to {} %", w.percent()),
        Some(Step::Pause(None)) => "pause until resumed".to_owned(),
        Some(Step::Pause(Some(d))) => format!("pause {}", humantime::format_duration(*d)),
        Some(Step::Analysis { checks, duration }) => format!(
            "analysis of {} for {}",
            checks.join(", "),
            humantime::format_duration(*duration)
        ),
        None if s.phase.is_terminal() => s.phase.as_str().to_owned(),
        None => "bake".to_owned(),
    };
    let checks = s
        .checks
        .iter()
        .map(|(name, c)| {
            let check = plan.as_ref().and_then(|p| p.check(name));
            CheckView {
                name: name.clone(),
                kind: match check.map(|c| &c.kind) {
                    Some(CheckKind::Prometheus(_)) => "prometheus",
                    _ => "probe",
                }
                .to_owned(),
                verdict: c.last.as_ref().map(|j| j.verdict),
                detail: c.last.as_ref().map(|j| j.detail.clone()),
                fails: c.fails,
                failure_limit: check.map_or(0, |c| c.failure_limit),
                next_in_s: ((c.due_ms - now).max(0) as f64) / 1000.0,
                old: c.total_old,
                new: c.total_new,
            }
        })
        .collect();
    PlanView {
        id: row.id,
        route: row.route.clone(),
        flag: row.doc.flag.clone(),
        phase: s.phase,
        step: s.step + 1,
        steps,
        step_text,
        weight: s.weight.map(|w| w.percent()),
        held: s.held.clone(),
        waiting_for_hook: s.gate.clone().filter(|_| !s.phase.is_terminal()),
        reason: s.reason.clone(),
        time_left_s: s
            .until_ms
            .filter(|_| !s.phase.is_terminal())
            .map(|u| ((u - now).max(0) as f64) / 1000.0),
        dry_run: row.doc.dry_run,
        actor: row.actor.clone(),
        started_at: format_ms(row.created_ms),
        updated_at: format_ms(row.updated_ms),
        checks,
        doc: row.doc.clone(),
    }
}

/// `row` for the API and webhooks.
pub fn event_view(row: &EventRow) -> PlanEvent {
    PlanEvent {
        id: row.id,
        plan: row.plan,
        route: row.route.clone(),
        kind: serde_json::from_value(serde_json::Value::String(row.kind.clone()))
            .unwrap_or(EventKind::Step),
        message: row.message.clone(),
        version: row.version,
        at: format_ms(row.at_ms),
    }
}
