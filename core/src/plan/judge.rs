//! The judge: a check's measurement in, `pass`, `fail`, `inconclusive` or
//! `error` out, with the numbers that decided it.
//!
//! Error proportions are compared with a mixture sequential probability
//! ratio test (mSPRT, Johari et al., "Always Valid Inference"), the kind of
//! sequential test LaunchDarkly's guarded rollouts use: it may look at the
//! running totals after every interval, for as long as a plan runs, and
//! still calls new worse than old by chance with probability at most
//! [`ALPHA`]. Its statistic, with `θ` the excess of new's error proportion
//! over old's beyond the tolerated margin and `V` its variance under
//! "no difference" (pooled, with one success and one failure added so that
//! no sample size divides by zero):
//!
//! ```text
//! Λ = sqrt(V / (V + τ²)) · exp(τ² θ² / (2 V (V + τ²)))     new is worse when θ > 0 and Λ ≥ 1/α
//! ```
//!
//! `τ` ([`TAU`]) is the scale of differences the test is tuned to find
//! fastest; `docs/plans.md` gives the false-rollback rate and detection
//! delays this gives, from `rollout-bench judge`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, CheckKind, Probe, PromRule};

/// Chance that a sequential test calls new worse than old when it is not.
pub const ALPHA: f64 = 0.01;
/// Scale of the mixture over differences in error proportion.
pub const TAU: f64 = 0.1;

/// What one arm's requests came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests.
    pub samples: u64,
    /// Of which errors (5xx, transport errors, timeouts).
    pub errors: u64,
}

impl Counts {
    /// The error proportion (0 with no samples).
    pub fn proportion(self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.errors as f64 / self.samples as f64
        }
    }

    /// Both added.
    pub fn plus(self, other: Counts) -> Counts {
        Counts {
            samples: self.samples + other.samples,
            errors: self.errors + other.errors,
        }
    }
}

/// What a probe check saw: totals since the check started (what the
/// sequential test reads) and this interval's (whether it had enough).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// Old, since the check started.
    pub total_old: Counts,
    /// New, since the check started.
    pub total_new: Counts,
    /// Old, this interval.
    pub interval_old: Counts,
    /// New, this interval.
    pub interval_new: Counts,
    /// Old's p95 latency this interval, ms.
    pub p95_old_ms: Option<f64>,
    /// New's p95 latency this interval, ms.
    pub p95_new_ms: Option<f64>,
}

impl ProbeSample {
    /// An interval's counts and the totals they bring `running` (old, new)
    /// to, without latencies: how a probe that only counts reports.
    pub fn accumulate(running: &mut (Counts, Counts), old: Counts, new: Counts) -> ProbeSample {
        running.0 = running.0.plus(old);
        running.1 = running.1.plus(new);
        ProbeSample {
            total_old: running.0,
            total_new: running.1,
            interval_old: old,
            interval_new: new,
            p95_old_ms: None,
            p95_new_ms: None,
        }
    }
}

/// One measurement of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measurement {
    /// A probe's counts.
    Probe(ProbeSample),
    /// A query's one value.
    Value(f64),
    /// A query's value for each arm.
    PerArm {
        /// Old's value.
        old: f64,
        /// New's value.
        new: f64,
    },
    /// Nothing could be measured.
    Error(String),
}

/// A check's result for one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Healthy, with enough evidence.
    Pass,
    /// New is worse.
    Fail,
    /// Not enough evidence yet.
    Inconclusive,
    /// Nothing could be measured.
    Error,
}

impl Verdict {
    /// The name the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Error => "error",
        }
    }
}

/// A verdict and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// The measurement in words (`new 20.3 % errors (812/4000) vs old 1.0 % (40/4000)`).
    pub detail: String,
    /// Evidence that old is worse than new (rollback readiness): `Some`
    /// when the check compares the arms.
    pub old_worse: Option<bool>,
}

/// The mSPRT statistic for "`b`'s error proportion exceeds `a`'s by more
/// than `margin`", and the estimated excess `θ`.
pub fn msprt(a: Counts, b: Counts, margin: f64) -> (f64, f64) {
    if a.samples == 0 || b.samples == 0 {
        return (0.0, 1.0);
    }
    let theta = b.proportion() - a.proportion() - margin;
    let pooled = (a.errors + b.errors + 1) as f64 / (a.samples + b.samples + 2) as f64;
    let v = pooled * (1.0 - pooled) * (1.0 / a.samples as f64 + 1.0 / b.samples as f64);
    (theta, lambda(theta, v))
}

/// The mSPRT statistic for "`c`'s error proportion exceeds `rate`".
pub fn msprt_above(c: Counts, rate: f64) -> (f64, f64) {
    if c.samples == 0 {
        return (0.0, 1.0);
    }
    let theta = c.proportion() - rate;
    let p = (c.errors + 1) as f64 / (c.samples + 2) as f64;
    let v = p * (1.0 - p) / c.samples as f64;
    (theta, lambda(theta, v))
}

fn lambda(theta: f64, v: f64) -> f64 {
    let t2 = TAU * TAU;
    (v / (v + t2)).sqrt() * (t2 * theta * theta / (2.0 * v * (v + t2))).exp()
}

/// Whether the test concludes "worse" at [`ALPHA`].
fn concluded((theta, lambda): (f64, f64)) -> bool {
    theta > 0.0 && lambda >= 1.0 / ALPHA
}

/// Judges one measurement of `check`.
pub fn judge(check: &Check, m: &Measurement) -> Judgement {
    match (&check.kind, m) {
        (_, Measurement::Error(e)) => Judgement {
            verdict: Verdict::Error,
            detail: e.clone(),
            old_worse: None,
        },
        (CheckKind::Probe(p), Measurement::Probe(s)) => probe(check, p, s),
        (CheckKind::Prometheus(q), Measurement::Value(v)) => match q.rule {
            PromRule::Condition(op, bound) if v.is_finite() => Judgement {
                verdict: if op.holds(*v, bound) {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                detail: format!("value {v} (must be {op} {bound})"),
                old_worse: None,
            },
            _ => error(format!("the query returned {v}")),
        },
        (CheckKind::Prometheus(q), Measurement::PerArm { old, new }) => match q.rule {
            PromRule::MaxIncrease(max) if old.is_finite() && new.is_finite() => Judgement {
                verdict: if new - old > max {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
                detail: format!("new {new} vs old {old} (new may exceed old by {max})"),
                // A difference of two values is no evidence that old is
                // failing: only a probe's test may hold back a rollback.
                old_worse: None,
            },
            _ => error(format!("the query returned old {old}, new {new}")),
        },
        _ => error("a measurement of the wrong kind for this check".to_owned()),
    }
}

fn error(detail: String) -> Judgement {
    Judgement {
        verdict: Verdict::Error,
        detail,
        old_worse: None,
    }
}

fn percent(c: Counts) -> String {
    format!(
        "{:.1} % ({}/{})",
        c.proportion() * 100.0,
        c.errors,
        c.samples
    )
}

fn probe(check: &Check, p: &Probe, s: &ProbeSample) -> Judgement {
    let (old, new) = (s.total_old, s.total_new);
    let mut detail = format!("errors new {} vs old {}", percent(new), percent(old));
    if let (Some(n), Some(o)) = (s.p95_new_ms, s.p95_old_ms) {
        detail.push_str(&format!("; p95 new {n:.0} ms vs old {o:.0} ms"));
    }
    let old_worse = concluded(msprt(new, old, p.max_error_increase));
    let min = u64::from(check.min_samples);
    if s.interval_old.samples < min || s.interval_new.samples < min {
        return Judgement {
            verdict: Verdict::Inconclusive,
            detail: format!(
                "{detail}; {} old and {} new samples this interval, {min} needed",
                s.interval_old.samples, s.interval_new.samples
            ),
            old_worse: Some(old_worse),
        };
    }
    // Both arms failing most requests: the probe path or the edges are
    // down, which says nothing about new against old.
    if s.interval_old.proportion() >= 0.5 && s.interval_new.proportion() >= 0.5 {
        return Judgement {
            verdict: Verdict::Error,
            detail: format!("{detail}: both arms fail most requests this interval"),
            old_worse: None,
        };
    }
    let mut failed = Vec::new();
    if concluded(msprt(old, new, p.max_error_increase)) {
        failed.push("new has more errors than old".to_owned());
    }
    if let Some(rate) = p.max_error_rate
        && concluded(msprt_above(new, rate))
    {
        failed.push(format!("new is above {:.1} % errors", rate * 100.0));
    }
    if let (Some(n), Some(o)) = (s.p95_new_ms, s.p95_old_ms) {
        let slack = p.latency_slack.as_secs_f64() * 1000.0;
        if n > o * p.max_latency_ratio && n - o > slack {
            failed.push(format!("new's p95 is over {} × old's", p.max_latency_ratio));
        }
    }
    let verdict = if failed.is_empty() {
        Verdict::Pass
    } else {
        detail = format!("{}: {detail}", failed.join(", "));
        Verdict::Fail
    };
    Judgement {
        verdict,
        detail,
        old_worse: Some(old_worse),
    }
}

/// The 95th percentile of `latencies` (nearest rank), or `None` when empty.
pub fn p95(latencies: &mut [Duration]) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let rank = (latencies.len() * 95).div_ceil(100).max(1) - 1;
    Some(latencies[rank].as_secs_f64() * 1000.0)
}
