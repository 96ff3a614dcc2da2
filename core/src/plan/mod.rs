//! Progressive delivery plans: the validated form of a [`PlanDoc`], the
//! [`judge`] that turns measurements into verdicts, and the [`machine`]
//! that walks a plan's steps. Pure, like the rest of core: the control
//! service measures, keeps time, stores and pushes; these decide.

mod error;
pub mod judge;
pub mod machine;
#[cfg(test)]
mod tests;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

pub use error::{PlanError, PlanProblem};
pub use wire::{AnalysisDoc, CheckDoc, PlanDoc, ProbeDoc, PrometheusDoc, StepDoc};

use crate::weight::Weight;

/// The one plan schema number this build reads.
pub const PLAN_SCHEMA: u32 = 1;
/// Largest plan document accepted, in bytes.
pub const MAX_PLAN_BYTES: usize = 64 * 1024;
/// Most steps in a plan.
pub const MAX_STEPS: usize = 64;
/// Most checks in a plan.
pub const MAX_CHECKS: usize = 16;
/// Most hooks a plan can require.
pub const MAX_REQUIRED_HOOKS: usize = 16;
/// Longest duration anywhere in a plan.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Defaults of a check's judging fields (also `rollout canary`'s).
pub mod defaults {
    use std::time::Duration;

    /// How often a check is judged.
    pub const INTERVAL: Duration = Duration::from_secs(10);
    /// Samples each arm needs in an interval.
    pub const MIN_SAMPLES: u32 = 200;
    /// `fail` results that fail the check.
    pub const FAILURE_LIMIT: u32 = 2;
    /// `inconclusive` results in a row that fail the check (0: no limit).
    pub const INCONCLUSIVE_LIMIT: u32 = 0;
    /// `error` results in a row that fail the check.
    pub const CONSECUTIVE_ERROR_LIMIT: u32 = 3;
    /// A probe request's time limit.
    pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    /// Largest ratio of new's p95 latency to old's.
    pub const MAX_LATENCY_RATIO: f64 = 3.0;
    /// Latency differences that never fail.
    pub const LATENCY_SLACK: Duration = Duration::from_millis(50);
    /// How long one step may take.
    pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(30 * 60);
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub(crate) flag: Option<String>,
    pub(crate) steps: Vec<Step>,
    pub(crate) checks: BTreeMap<String, Check>,
    pub(crate) background: Vec<String>,
    pub(crate) progress_deadline: Duration,
    pub(crate) bake: Duration,
    pub(crate) dry_run: bool,
    pub(crate) require_hooks: Vec<String>,
}

/// A validated step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this share of keys to new (or turn the flag on for them).
    SetWeight(Weight),
    /// Wait this long, or (`None`) until resumed.
    Pause(Option<Duration>),
    /// Run these checks for this long; go on only if each passes.
    Analysis {
        /// Check names.
        checks: Vec<String>,
        /// How long.
        duration: Duration,
    },
}

/// A validated check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What it measures.
    pub kind: CheckKind,
    /// How often it is judged.
    pub interval: Duration,
    /// Samples each arm needs in an interval (probe).
    pub min_samples: u32,
    /// `fail` results that fail the check.
    pub failure_limit: u32,
    /// `inconclusive` results in a row that fail it (0: no limit).
    pub inconclusive_limit: u32,
    /// `error` results in a row that fail it.
    pub consecutive_error_limit: u32,
}

/// What a check measures.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Requests through the edges, the arm forced.
    Probe(Probe),
    /// A Prometheus instant query.
    Prometheus(Prometheus),
}

/// A probe, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Path and query, starting with `/`.
    pub path: String,
    /// Host header, if set.
    pub host: Option<String>,
    /// `GET` or `HEAD`.
    pub method: &'static str,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Tolerated excess of new's error proportion over old's (0..1).
    pub max_error_increase: f64,
    /// An error proportion new must stay under (0..1).
    pub max_error_rate: Option<f64>,
    /// Largest p95 ratio new / old.
    pub max_latency_ratio: f64,
    /// Latency differences that never fail.
    pub latency_slack: Duration,
}

impl Probe {
    /// Requests per second per arm that give each arm `min_samples` in an
    /// `interval`, with a tenth to spare.
    pub fn rate_per_arm(&self, check: &Check) -> f64 {
        f64::from(check.min_samples) * 1.1 / check.interval.as_secs_f64()
    }
}

/// A Prometheus check, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Prometheus {
    /// Server base URL.
    pub url: String,
    /// The query, with `$route` (and `$arm`) still in it.
    pub query: String,
    /// How its value is judged.
    pub rule: PromRule,
}

/// How a Prometheus value is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromRule {
    /// The value must satisfy `op bound`.
    Condition(Cmp, f64),
    /// Run per arm; new may exceed old by at most this.
    MaxIncrease(f64),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// Whether `value op bound` holds.
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Cmp::Lt => value < bound,
            Cmp::Le => value <= bound,
            Cmp::Gt => value > bound,
            Cmp::Ge => value >= bound,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

impl std::fmt::Display for Cmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Plan {
    /// Parses and validates a plan whose checks need no templates.
    pub fn from_json(bytes: &[u8]) -> Result<Plan, PlanError> {
        Plan::try_from(&PlanDoc::from_json(bytes)?)
    }

    /// The flag it ramps, if it ramps a flag.
    pub fn flag(&self) -> Option<&str> {
        self.flag.as_deref()
    }
    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
    /// A check by name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.get(name)
    }
    /// Every check, by name.
    pub fn checks(&self) -> impl Iterator<Item = (&str, &Check)> {
        self.checks.iter().map(|(n, c)| (n.as_str(), c))
    }
    /// The checks that run throughout.
    pub fn background(&self) -> &[String] {
        &self.background
    }
    /// How long one step may take.
    pub fn progress_deadline(&self) -> Duration {
        self.progress_deadline
    }
    /// The bake after the last step.
    pub fn bake(&self) -> Duration {
        self.bake
    }
    /// The control service's hooks that must succeed before each raise.
    pub fn require_hooks(&self) -> &[String] {
        &self.require_hooks
    }
    /// Whether it only measures.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }
}

impl PlanDoc {
    /// Parses a plan document, naming the path of a type error.
    pub fn from_json(bytes: &[u8]) -> Result<PlanDoc, PlanError> {
        if bytes.len() > MAX_PLAN_BYTES {
            return Err(PlanError::new(
                "plan",
                PlanProblem::TooLarge {
                    size: bytes.len(),
                    limit: MAX_PLAN_BYTES,
                },
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let doc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." || path == "?" {
                "plan".to_owned()
            } else {
                path
            };
            PlanError::new(path, PlanProblem::Syntax(e.into_inner().to_string()))
        })?;
        de.end()
            .map_err(|e| PlanError::new("plan", PlanProblem::Syntax(e.to_string())))?;
        Ok(doc)
    }

    /// The names of the stored templates its checks use.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.checks.values().filter_map(|c| c.template.as_deref())
    }

    /// This document with every `template` reference replaced by the
    /// stored check, the fields given here taking precedence.
    pub fn resolve(
        &self,
        template: impl Fn(&str) -> Option<CheckDoc>,
    ) -> Result<PlanDoc, PlanError> {
        let mut out = self.clone();
        for (name, check) in &mut out.checks {
            let Some(t) = check.template.take() else {
                continue;
            };
            let path = format!("checks.{name}.template");
            let mut base = template(&t)
                .ok_or_else(|| PlanError::new(path.clone(), PlanProblem::NoTemplate(t.clone())))?;
            if base.template.is_some() {
                return Err(PlanError::new(path, PlanProblem::NestedTemplate(t)));
            }
            macro_rules! take {
                ($($field:ident),*) => {$(
                    if check.$field.is_some() {
                        base.$field = check.$field.take();
                    }
                )*};
            }
            take!(
                probe,
                prometheus,
                interval,
                min_samples,
                failure_limit,
                inconclusive_limit,
                consecutive_error_limit
            );
            *check = base;
        }
        Ok(out)
    }
}

impl TryFrom<&PlanDoc> for Plan {
    type Error = PlanError;

    fn try_from(doc: &PlanDoc) -> Result<Plan, PlanError> {
        validate::plan(doc)
    }
}

mod validate;
