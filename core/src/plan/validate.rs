//! The rules a plan document must keep, each error naming its field.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::wire::{CheckDoc, PlanDoc, ProbeDoc, PrometheusDoc, StepDoc};
use super::{
    Check, CheckKind, Cmp, MAX_CHECKS, MAX_DURATION, MAX_REQUIRED_HOOKS, MAX_STEPS, PLAN_SCHEMA,
    Plan, PlanError, PlanProblem, Probe, PromRule, Prometheus, Step, defaults,
};
use crate::weight::Weight;

type Result<T> = std::result::Result<T, PlanError>;

fn at(path: impl Into<String>, problem: PlanProblem) -> PlanError {
    PlanError::new(path, problem)
}

pub(super) fn plan(doc: &PlanDoc) -> Result<Plan> {
    if doc.schema != PLAN_SCHEMA {
        return Err(at("schema", PlanProblem::UnsupportedSchema(doc.schema)));
    }
    if let Some(flag) = &doc.flag {
        name("flag", flag)?;
    }
    let checks = checks(doc)?;
    if doc.flag.is_some()
        && let Some((n, _)) = checks
            .iter()
            .find(|(_, c)| matches!(c.kind, CheckKind::Probe(_)))
    {
        return Err(at(
            format!("checks.{n}.probe"),
            PlanProblem::Invalid("a probe forces an arm, not a flag: a flag plan cannot use one"),
        ));
    }
    let steps = steps(doc, &checks)?;
    let mut background = Vec::new();
    for (i, n) in doc.background.iter().enumerate() {
        let path = format!("background[{i}]");
        if !checks.contains_key(n) {
            return Err(at(path, PlanProblem::UnknownCheck(n.clone())));
        }
        if background.contains(n) {
            return Err(at(path, PlanProblem::Duplicate(n.clone())));
        }
        background.push(n.clone());
    }
    let used: BTreeSet<&String> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Analysis { checks, .. } => Some(checks),
            _ => None,
        })
        .flatten()
        .chain(&background)
        .collect();
    if let Some(unused) = checks.keys().find(|n| !used.contains(n)) {
        return Err(at(
            format!("checks.{unused}"),
            PlanProblem::Invalid("not used by background or by any analysis step"),
        ));
    }
    let progress_deadline = match &doc.progress_deadline {
        Some(d) => duration("progress_deadline", d, Duration::from_secs(1), MAX_DURATION)?,
        None => defaults::PROGRESS_DEADLINE,
    };
    let bake = match &doc.bake {
        Some(d) => duration("bake", d, Duration::ZERO, MAX_DURATION)?,
        None => Duration::ZERO,
    };
    if doc.require_hooks.len() > MAX_REQUIRED_HOOKS {
        return Err(at(
            "require_hooks",
            PlanProblem::TooMany {
                what: "hooks",
                count: doc.require_hooks.len(),
                limit: MAX_REQUIRED_HOOKS,
            },
        ));
    }
    for (i, n) in doc.require_hooks.iter().enumerate() {
        let path = format!("require_hooks[{i}]");
        name(&path, n)?;
        if doc.require_hooks[..i].contains(n) {
            return Err(at(path, PlanProblem::Duplicate(n.clone())));
        }
    }
    Ok(Plan {
        flag: doc.flag.clone(),
        steps,
        checks,
        background,
        progress_deadline,
        bake,
        dry_run: doc.dry_run,
        require_hooks: doc.require_hooks.clone(),
    })
}

fn steps(doc: &PlanDoc, checks: &BTreeMap<String, Check>) -> Result<Vec<Step>> {
    if doc.steps.is_empty() {
        return Err(at("steps", PlanProblem::Empty));
    }
    if doc.steps.len() > MAX_STEPS {
        return Err(at(
            "steps",
            PlanProblem::TooMany {
                what: "steps",
                count: doc.steps.len(),
                limit: MAX_STEPS,
            },
        ));
    }
    let mut out = Vec::with_capacity(doc.steps.len());
    for (i, step) in doc.steps.iter().enumerate() {
        out.push(match step {
            StepDoc::SetWeight(p) => Step::SetWeight(
                Weight::from_percent(*p)
                    .map_err(|e| at(format!("steps[{i}].set_weight"), e.into()))?,
            ),
            StepDoc::Pause(None) => Step::Pause(None),
            StepDoc::Pause(Some(d)) => Step::Pause(Some(duration(
                format!("steps[{i}].pause"),
                d,
                Duration::from_secs(1),
                MAX_DURATION,
            )?)),
            StepDoc::Analysis(a) => {
                let path = format!("steps[{i}].analysis");
                if a.checks.is_empty() {
                    return Err(at(format!("{path}.checks"), PlanProblem::Empty));
                }
                let mut names: Vec<String> = Vec::new();
                let mut longest = Duration::ZERO;
                for (j, n) in a.checks.iter().enumerate() {
                    let check = checks.get(n).ok_or_else(|| {
                        at(
                            format!("{path}.checks[{j}]"),
                            PlanProblem::UnknownCheck(n.clone()),
                        )
                    })?;
                    if names.contains(n) {
                        return Err(at(
                            format!("{path}.checks[{j}]"),
                            PlanProblem::Duplicate(n.clone()),
                        ));
                    }
                    longest = longest.max(check.interval);
                    names.push(n.clone());
                }
                let d = duration(
                    format!("{path}.duration"),
                    &a.duration,
                    Duration::from_secs(1),
                    MAX_DURATION,
                )?;
                if d < longest {
                    return Err(at(
                        format!("{path}.duration"),
                        PlanProblem::Invalid("must be at least the interval of each of its checks"),
                    ));
                }
                Step::Analysis {
                    checks: names,
                    duration: d,
                }
            }
        });
    }
    if !out.iter().any(|s| matches!(s, Step::SetWeight(_))) {
        return Err(at("steps", PlanProblem::NoWeightStep));
    }
    Ok(out)
}

fn checks(doc: &PlanDoc) -> Result<BTreeMap<String, Check>> {
    if doc.checks.len() > MAX_CHECKS {
        return Err(at(
            "checks",
            PlanProblem::TooMany {
                what: "checks",
                count: doc.checks.len(),
                limit: MAX_CHECKS,
            },
        ));
    }
    doc.checks
        .iter()
        .map(|(n, c)| {
            let path = format!("checks.{n}");
            name(&path, n)?;
            Ok((n.clone(), check(&path, c)?))
        })
        .collect()
}

fn check(path: &str, c: &CheckDoc) -> Result<Check> {
    if let Some(t) = &c.template {
        return Err(at(
            format!("{path}.template"),
            PlanProblem::NoTemplate(t.clone()),
        ));
    }
    let kind = match (&c.probe, &c.prometheus) {
        (Some(p), None) => CheckKind::Probe(probe(&format!("{path}.probe"), p)?),
        (None, Some(p)) => CheckKind::Prometheus(prometheus(&format!("{path}.prometheus"), p)?),
        _ => {
            return Err(at(
                path,
                PlanProblem::ExactlyOne("template, probe and prometheus"),
            ));
        }
    };
    let interval = match &c.interval {
        Some(d) => duration(
            format!("{path}.interval"),
            d,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        None => defaults::INTERVAL,
    };
    let count = |field: &str, v: Option<u32>, default: u32, min: u32, max: u32| {
        let v = v.unwrap_or(default);
        if v < min || v > max {
            return Err(at(
                format!("{path}.{field}"),
                PlanProblem::Range {
                    min: f64::from(min),
                    max: f64::from(max),
                },
            ));
        }
        Ok(v)
    };
    Ok(Check {
        kind,
        interval,
        min_samples: count(
            "min_samples",
            c.min_samples,
            defaults::MIN_SAMPLES,
            1,
            100_000,
        )?,
        failure_limit: count(
            "failure_limit",
            c.failure_limit,
            defaults::FAILURE_LIMIT,
            1,
            1000,
        )?,
        inconclusive_limit: count(
            "inconclusive_limit",
            c.inconclusive_limit,
            defaults::INCONCLUSIVE_LIMIT,
            0,
            1000,
        )?,
        consecutive_error_limit: count(
            "consecutive_error_limit",
            c.consecutive_error_limit,
            defaults::CONSECUTIVE_ERROR_LIMIT,
            1,
            1000,
        )?,
    })
}

fn probe(path: &str, p: &ProbeDoc) -> Result<Probe> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if !p.path.starts_with('/') || p.path.len() > 1024 || !printable(&p.path) {
        return Err(at(
            format!("{path}.path"),
            PlanProblem::Invalid(
                "must start with / and be at most 1024 printable ASCII characters",
            ),
        ));
    }
    if let Some(h) = &p.host {
        let authority = |b: u8| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b);
        if h.is_empty() || h.len() > 255 || !h.bytes().all(authority) {
            return Err(at(
                format!("{path}.host"),
                PlanProblem::Invalid("must be a host name or address, with an optional port"),
            ));
        }
    }
    let method = match p.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => "GET",
        Some("HEAD") => "HEAD",
        Some(_) => {
            return Err(at(
                format!("{path}.method"),
                PlanProblem::Invalid("must be GET or HEAD"),
            ));
        }
    };
    let timeout = match &p.timeout {
        Some(d) => duration(
            format!("{path}.timeout"),
            d,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?,
        None => defaults::PROBE_TIMEOUT,
    };
    let latency_slack = match &p.latency_slack {
        Some(d) => duration(
            format!("{path}.latency_slack"),
            d,
            Duration::ZERO,
            Duration::from_secs(60),
        )?,
        None => defaults::LATENCY_SLACK,
    };
    let percent =
        |field: &str, v: f64| number(&format!("{path}.{field}"), v, 0.0, 100.0).map(|v| v / 100.0);
    Ok(Probe {
        path: p.path.clone(),
        host: p.host.clone(),
        method,
        timeout,
        max_error_increase: percent("max_error_increase", p.max_error_increase.unwrap_or(0.0))?,
        max_error_rate: p
            .max_error_rate
            .map(|v| percent("max_error_rate", v))
            .transpose()?,
        max_latency_ratio: number(
            &format!("{path}.max_latency_ratio"),
            p.max_latency_ratio.unwrap_or(defaults::MAX_LATENCY_RATIO),
            1.0,
            1000.0,
        )?,
        latency_slack,
    })
}

fn prometheus(path: &str, p: &PrometheusDoc) -> Result<Prometheus> {
    let url_ok = (p.url.starts_with("http://") || p.url.starts_with("https://"))
        && p.url.len() <= 2048
        && p.url.bytes().all(|b| b.is_ascii_graphic())
        && !p
            .url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .is_none_or(|authority| authority.is_empty() || authority.contains('@'));
    if !url_ok {
        return Err(at(
            format!("{path}.url"),
            PlanProblem::Invalid("must be an http(s)://host[:port][/path] URL without credentials"),
        ));
    }
    if p.query.trim().is_empty() || p.query.len() > 4096 {
        return Err(at(
            format!("{path}.query"),
            PlanProblem::Invalid("must be 1-4096 characters of PromQL"),
        ));
    }
    let rule = match (&p.condition, p.max_increase) {
        (Some(c), None) => {
            let (op, bound) = condition(c).ok_or_else(|| {
                at(
                    format!("{path}.condition"),
                    PlanProblem::Invalid(
                        "must be an operator (< <= > >=) and a number, e.g. < 0.01",
                    ),
                )
            })?;
            PromRule::Condition(op, bound)
        }
        (None, Some(m)) => {
            if !p.query.contains("$arm") {
                return Err(at(
                    format!("{path}.query"),
                    PlanProblem::Invalid("must contain $arm to be run for old and for new"),
                ));
            }
            PromRule::MaxIncrease(number(&format!("{path}.max_increase"), m, 0.0, f64::MAX)?)
        }
        _ => {
            return Err(at(
                path,
                PlanProblem::ExactlyOne("condition and max_increase"),
            ));
        }
    };
    Ok(Prometheus {
        url: p.url.trim_end_matches('/').to_owned(),
        query: p.query.clone(),
        rule,
    })
}

/// `< 0.01` and the like.
fn condition(text: &str) -> Option<(Cmp, f64)> {
    let t = text.trim();
    let (op, rest) = [
        ("<=", Cmp::Le),
        (">=", Cmp::Ge),
        ("<", Cmp::Lt),
        (">", Cmp::Gt),
    ]
    .into_iter()
    .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (op, rest)))?;
    let bound: f64 = rest.trim().parse().ok()?;
    bound.is_finite().then_some((op, bound))
}

fn number(path: &str, v: f64, min: f64, max: f64) -> Result<f64> {
    if !v.is_finite() || v < min || v > max {
        return Err(at(path, PlanProblem::Range { min, max }));
    }
    Ok(v)
}

fn name(path: &str, n: &str) -> Result<()> {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    if n.is_empty() || n.len() > 64 || !n.bytes().all(ok) {
        return Err(at(path, PlanProblem::BadName));
    }
    Ok(())
}

/// A duration such as `30s`, `5m` or `1h30m`, within `min..=max`.
pub(crate) fn duration(
    path: impl Into<String>,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration> {
    let path = path.into();
    let d = humantime::parse_duration(text.trim())
        .map_err(|_| at(path.clone(), PlanProblem::BadDuration(text.to_owned())))?;
    if d < min || d > max {
        return Err(at(
            path,
            PlanProblem::DurationRange {
                min: label(min),
                max: label(max),
            },
        ));
    }
    Ok(d)
}

/// The few bounds plans use, as people write them.
fn label(d: Duration) -> &'static str {
    match d.as_millis() {
        0 => "0s",
        100 => "100ms",
        1000 => "1s",
        60_000 => "60s",
        3_600_000 => "1h",
        _ => "7d",
    }
}
