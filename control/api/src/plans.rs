//! Plans, their checks and events, check templates and alerts, as the API
//! carries them.

use std::collections::BTreeMap;

use rollout_core::plan::judge::{Counts, Verdict};
use rollout_core::plan::machine::{EventKind, Phase};
use rollout_core::plan::{CheckDoc, PlanDoc};
use serde::{Deserialize, Serialize};

use crate::{Reason, Version};

/// `POST /v1/plans`: start a plan on a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartPlan {
    /// The route it ramps.
    pub route: String,
    /// The plan.
    pub plan: PlanDoc,
    /// Why.
    pub reason: Option<Reason>,
}

/// A running check as a plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    /// Its name.
    pub name: String,
    /// `probe` or `prometheus`.
    pub kind: String,
    /// Its last verdict.
    pub verdict: Option<Verdict>,
    /// What the last measurement said.
    pub detail: Option<String>,
    /// `fail` results so far, and how many fail it.
    pub fails: u32,
    /// The failure limit.
    pub failure_limit: u32,
    /// Seconds to its next measurement.
    pub next_in_s: f64,
    /// Old's totals since it started (probe).
    pub old: Counts,
    /// New's totals since it started (probe).
    pub new: Counts,
}

/// A plan as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    /// Its id; versions it commits have the actor `plan:<id>`.
    pub id: i64,
    /// The route.
    pub route: String,
    /// The flag it ramps, if it ramps one.
    pub flag: Option<String>,
    /// Where it is.
    pub phase: Phase,
    /// The current step, from 1 (steps + 1 once all ran).
    pub step: usize,
    /// How many steps.
    pub steps: usize,
    /// The current step in words.
    pub step_text: String,
    /// The weight (percent) the plan last set.
    pub weight: Option<f64>,
    /// Why it is held, if it is.
    pub held: Option<String>,
    /// The run of a required hook its next raise waits for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_hook: Option<String>,
    /// Why it ended, if it was aborted or failed.
    pub reason: Option<String>,
    /// Seconds until the current pause, analysis or bake ends.
    pub time_left_s: Option<f64>,
    /// Whether it only measures.
    pub dry_run: bool,
    /// Who started it.
    pub actor: String,
    /// When, RFC 3339.
    pub started_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
    /// Its running checks.
    pub checks: Vec<CheckView>,
    /// The plan document (templates resolved).
    pub doc: PlanDoc,
}

/// `GET /v1/plans`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanList {
    /// The plans.
    pub plans: Vec<PlanView>,
}

/// `GET /v1/plans` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanQuery {
    /// How many (default 20, at most 200).
    pub limit: Option<u32>,
    /// Only plans on this route.
    pub route: Option<String>,
}

/// Something that happened to a plan; also the `data` of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEvent {
    /// Its id (the webhook's `webhook-id` is `evt_<id>`).
    pub id: i64,
    /// The plan.
    pub plan: i64,
    /// The plan's route.
    pub route: String,
    /// What kind.
    pub kind: EventKind,
    /// In words.
    pub message: String,
    /// The version it committed, if it did.
    pub version: Option<Version>,
    /// When, RFC 3339.
    pub at: String,
}

/// `GET /v1/plans/{id}/events`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEvents {
    /// The events.
    pub events: Vec<PlanEvent>,
}

/// `GET /v1/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateList {
    /// The stored check templates, by name.
    pub templates: BTreeMap<String, CheckDoc>,
}

/// `POST /v1/alerts`: an Alertmanager webhook (version 4). Fields this
/// service does not read are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertWebhook {
    /// The alerts in the notification.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// One alert of an Alertmanager notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels; `rollout_route` names the route whose plan it aborts.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The reply to `POST /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReply {
    /// Plans the alerts aborted.
    pub aborted: Vec<i64>,
}
