//! A plan as it is written (JSON). [`Plan`](super::Plan) is what it becomes
//! once every rule has been checked; `docs/plans.md` explains each field
//! and `schema/plan.schema.json` is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A progressive delivery plan for one route's weight, or one flag's
/// percentage: steps run in order, checks watch health while they do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rollout plan")]
pub struct PlanDoc {
    /// Document schema number; this build reads schema 1.
    pub schema: u32,
    /// Ramp this flag of the route instead of the route's weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// The steps, in order. The plan is promoted after the last one.
    pub steps: Vec<StepDoc>,
    /// Checks by name: defined here, or `{"template": NAME}` for one stored
    /// in the control service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, CheckDoc>,
    /// Checks that run from the first step to the last (and through the bake).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<String>,
    /// How long one step may take before the plan fails (`30m`; a pause
    /// does not count). Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// After the last step, keep the background checks running this long
    /// (`10m`) before the plan counts as promoted; a failure then still
    /// rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// Measure and record, say what would have been done, never change a
    /// weight.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Hooks of the control service (`rollout serve --hooks`) that must
    /// succeed before the plan raises its weight: every run of these
    /// queued since the plan started (its `plan.start` run, and the
    /// `version` runs of the versions it committed) must have succeeded;
    /// one that fails or times out aborts the plan. Each must run on
    /// `plan.start`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_hooks: Vec<String>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepDoc {
    /// `{"set_weight": 5}`: send this percentage of keys to new (up to 4
    /// decimals); the step ends when every edge holds the new version.
    SetWeight(f64),
    /// `{"pause": "2m"}`: wait; `{"pause": null}`: wait until `plan resume`
    /// or `plan promote`.
    Pause(Option<String>),
    /// `{"analysis": {"checks": [...], "duration": "5m"}}`: run these checks
    /// for this long; go on only if every one passes.
    Analysis(AnalysisDoc),
}

/// An analysis step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisDoc {
    /// Names of checks in `checks`.
    pub checks: Vec<String>,
    /// How long they run (`5m`).
    pub duration: String,
}

/// A check: what it measures, and how its measurements are judged. Give
/// exactly one of `template`, `probe` and `prometheus`; the judging fields
/// have the defaults `docs/plans.md` lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckDoc {
    /// A check stored in the control service under this name
    /// (`rollout template put`); the other fields here override its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Requests sent by the control service through every edge, the arm
    /// forced, comparing new against old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeDoc>,
    /// A Prometheus instant query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusDoc>,
    /// How often a measurement is judged (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Samples each arm needs before the check can pass or fail (probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// `fail` results that fail the check (and abort the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// `inconclusive` results in a row that fail the check; 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// `error` results in a row that fail the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<u32>,
}

/// Requests through the edges with the arm forced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeDoc {
    /// Path and query to request, e.g. `/healthz`.
    pub path: String,
    /// Host header to send (it selects the route); default: the edge's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `GET` (default) or `HEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Time limit of one request (`2s`); a request over it is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How many percentage points new's error proportion may exceed old's
    /// before the sequential test calls it worse. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_increase: Option<f64>,
    /// An error proportion (percent) that new must not exceed whatever old
    /// does. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Largest ratio of new's p95 latency to old's. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ratio: Option<f64>,
    /// Latency differences below this never fail (`50ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_slack: Option<String>,
}

/// A Prometheus instant query. With `condition` it is judged on its own;
/// with `max_increase` the query, holding `$arm`, is run for old and for
/// new and new may exceed old by at most that much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusDoc {
    /// The Prometheus server, e.g. `http://prometheus:9090`.
    pub url: String,
    /// PromQL returning one sample. `$route` is replaced by the route id,
    /// `$arm` by `old` or `new`.
    pub query: String,
    /// `< 0.01`, `<= 0.5`, `> 100`, `>= 1`: the value must satisfy it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// New's value may exceed old's by at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
}

impl ProbeDoc {
    /// A probe of `path` with every other field at its default.
    pub fn new(path: impl Into<String>) -> ProbeDoc {
        ProbeDoc {
            path: path.into(),
            host: None,
            method: None,
            timeout: None,
            max_error_increase: None,
            max_error_rate: None,
            max_latency_ratio: None,
            latency_slack: None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
