use serde_json::json;

use super::judge::{Counts, Measurement, ProbeSample, Verdict, judge};
use super::machine::{Action, Change, Command, EventKind, HookGate, Input, Phase, PlanState};
use super::*;

fn plan(v: serde_json::Value) -> Plan {
    Plan::from_json(v.to_string().as_bytes()).expect("valid plan")
}

fn canary() -> Plan {
    plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"pause": "1m"}, {"set_weight": 100}],
        "checks": {"errors": {"probe": {"path": "/healthz"}}},
        "background": ["errors"],
    }))
}

#[test]
fn bad_plans_are_refused_naming_the_field() {
    let probe = json!({"probe": {"path": "/healthz"}});
    let cases = [
        (
            json!({"schema": 2, "steps": [{"set_weight": 1}]}),
            "schema: unsupported schema 2",
        ),
        (
            json!({"schema": 1, "steps": []}),
            "steps: must not be empty",
        ),
        (
            json!({"schema": 1, "steps": [{"pause": "1m"}]}),
            "steps: a plan needs a set_weight step",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 101}]}),
            "steps[0].set_weight: must be 0..=100",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}, {"pause": "soon"}]}),
            "steps[1].pause: \"soon\" is not a duration",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}, {"analysis": {"checks": ["nope"], "duration": "1m"}}]}),
            "steps[1].analysis.checks[0]: no check \"nope\"",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": probe}, "background": ["e", "e"]}),
            "background[1]: \"e\" is listed twice",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": probe}}),
            "checks.e: not used",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": {"probe": {"path": "healthz"}}}, "background": ["e"]}),
            "checks.e.probe.path: must start with /",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": {"probe": {"path": "/"}, "interval": "2h"}}, "background": ["e"]}),
            "checks.e.interval: must be between 1s and 1h",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": {"probe": {"path": "/"}, "prometheus": {"url": "http://p:9090", "query": "up", "condition": "< 1"}}}, "background": ["e"]}),
            "checks.e: give exactly one of template, probe and prometheus",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": {"prometheus": {"url": "http://p:9090", "query": "up", "condition": "about 1"}}}, "background": ["e"]}),
            "checks.e.prometheus.condition: must be an operator",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": {"prometheus": {"url": "http://p:9090", "query": "up", "max_increase": 0.01}}}, "background": ["e"]}),
            "checks.e.prometheus.query: must contain $arm",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "checks": {"e": {"template": "errors"}}, "background": ["e"]}),
            "checks.e.template: no stored template \"errors\"",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": "ten"}]}),
            "steps[0].set_weight: invalid type",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}], "extra": 1}),
            "extra: unknown field",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 1}, {"analysis": {"checks": ["e"], "duration": "5s"}}], "checks": {"e": probe}}),
            "steps[1].analysis.duration: must be at least the interval",
        ),
        (
            json!({"schema": 1, "flag": "beta", "steps": [{"set_weight": 1}], "checks": {"e": probe}, "background": ["e"]}),
            "checks.e.probe: a probe forces an arm, not a flag",
        ),
    ];
    for (doc, want) in cases {
        let got = Plan::from_json(doc.to_string().as_bytes()).map(drop);
        let err = got.expect_err(want).to_string();
        assert!(
            err.starts_with(want),
            "{doc}\n  got:  {err}\n  want: {want}"
        );
    }
}

#[test]
fn a_plan_takes_its_defaults_and_templates() {
    let p = canary();
    let c = p.check("errors").expect("check");
    assert_eq!(c.interval, defaults::INTERVAL);
    assert_eq!(c.min_samples, defaults::MIN_SAMPLES);
    assert_eq!(c.failure_limit, defaults::FAILURE_LIMIT);
    assert_eq!(p.progress_deadline(), defaults::PROGRESS_DEADLINE);

    let doc = PlanDoc::from_json(
        json!({"schema": 1, "steps": [{"set_weight": 5}],
               "checks": {"e": {"template": "http", "failure_limit": 4}},
               "background": ["e"]})
        .to_string()
        .as_bytes(),
    )
    .expect("doc");
    assert_eq!(doc.templates().collect::<Vec<_>>(), ["http"]);
    let stored = CheckDoc {
        probe: Some(ProbeDoc::new("/up")),
        failure_limit: Some(9),
        interval: Some("20s".into()),
        ..CheckDoc::default()
    };
    let resolved = doc
        .resolve(|n| (n == "http").then(|| stored.clone()))
        .expect("resolves");
    let p = Plan::try_from(&resolved).expect("valid");
    let c = p.check("e").expect("check");
    assert_eq!(
        (c.failure_limit, c.interval.as_secs()),
        (4, 20),
        "the plan's fields win"
    );
}

fn outputs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetWeight { weight, .. } => Some(format!("set {}", weight.percent())),
            Action::Rollback { .. } => Some("rollback".to_owned()),
            Action::Event { .. } => None,
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<EventKind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

fn healthy(n: u64) -> Measurement {
    let c = Counts {
        samples: 220 * n,
        errors: 2 * n,
    };
    let i = Counts {
        samples: 220,
        errors: 2,
    };
    Measurement::Probe(ProbeSample {
        total_old: c,
        total_new: c,
        interval_old: i,
        interval_new: i,
        p95_old_ms: Some(5.0),
        p95_new_ms: Some(6.0),
    })
}

fn failing(n: u64, old_rate: u64, new_rate: u64) -> Measurement {
    let at = |rate: u64| Counts {
        samples: 200 * n,
        errors: 2 * rate * n,
    };
    Measurement::Probe(ProbeSample {
        total_old: at(old_rate),
        total_new: at(new_rate),
        interval_old: at(old_rate),
        interval_new: at(new_rate),
        p95_old_ms: None,
        p95_new_ms: None,
    })
}

fn measured(check: &str, m: Measurement) -> Input {
    Input::Measured {
        check: check.to_owned(),
        measurement: m,
    }
}

const MIN: i64 = 60_000;

#[test]
fn a_healthy_plan_walks_its_steps_and_is_promoted() {
    let p = canary();
    let mut s = PlanState::start(&p, 0);
    assert_eq!(outputs(&s.advance(&p, 0, Input::Tick)), ["set 10"]);
    assert_eq!(
        outputs(&s.advance(&p, 1, Input::Tick)),
        Vec::<String>::new(),
        "asked once"
    );
    s.advance(&p, 2, Input::Committed(Some(7)));
    assert_eq!(s.phase, Phase::Progressing, "until every edge holds it");
    s.advance(&p, 3, Input::Converged(6));
    assert_eq!(s.phase, Phase::Progressing);
    s.advance(&p, 4, Input::Converged(7));
    assert_eq!((s.phase, s.step), (Phase::Paused, 1));
    assert_eq!(s.next_wake(), Some(10_000), "first measured an interval in");
    s.advance(&p, 10_000, measured("errors", healthy(1)));
    assert_eq!(s.checks["errors"].due_ms, 20_000);
    assert!(
        outputs(&s.advance(&p, MIN, Input::Tick)).is_empty(),
        "a minute from the step's start"
    );
    assert_eq!(outputs(&s.advance(&p, MIN + 5, Input::Tick)), ["set 100"]);
    s.advance(&p, MIN + 6, Input::Committed(Some(8)));
    let last = s.advance(&p, MIN + 7, Input::Converged(8));
    assert_eq!(s.phase, Phase::Promoted);
    assert!(events(&last).contains(&EventKind::Promote));
    assert!(
        s.advance(&p, MIN + 8, Input::Alert("x".into())).is_empty(),
        "done is done"
    );
}

#[test]
fn a_failing_check_rolls_back_at_its_failure_limit_and_never_raises_again() {
    let p = canary();
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 1, Input::Committed(Some(2)));
    s.advance(&p, 2, Input::Converged(2));
    let first = s.advance(&p, 10_000, measured("errors", failing(1, 1, 20)));
    assert!(outputs(&first).is_empty(), "one fail of two");
    assert_eq!(
        s.checks["errors"].last.as_ref().map(|j| j.verdict),
        Some(Verdict::Fail)
    );
    let second = s.advance(&p, 20_000, measured("errors", failing(2, 1, 20)));
    assert_eq!(outputs(&second), ["rollback"]);
    assert_eq!(s.phase, Phase::Aborted);
    let reason = s.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("check errors failed") && reason.contains("20.0 %"),
        "{reason}"
    );
    for input in [
        Input::Tick,
        Input::Command {
            by: "x".into(),
            command: Command::Promote,
        },
    ] {
        assert!(outputs(&s.advance(&p, 3 * MIN, input)).is_empty());
    }
}

#[test]
fn an_automatic_rollback_onto_a_worse_old_arm_is_held_for_a_person() {
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"pause": null}],
        "checks": {"errors": {"probe": {"path": "/", "max_error_rate": 5}}},
        "background": ["errors"],
    }));
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 1, Input::Committed(None));
    // New fails 20 %, over its 5 % limit; old fails 40 %.
    s.advance(&p, 10_000, measured("errors", failing(1, 40, 20)));
    let out = s.advance(&p, 20_000, measured("errors", failing(2, 40, 20)));
    assert!(outputs(&out).is_empty(), "no rollback");
    assert!(events(&out).contains(&EventKind::RollbackUnsafe));
    assert_eq!(s.phase, Phase::Paused);
    let held = s.held.clone().unwrap_or_default();
    assert!(
        held.starts_with("rollback unsafe: old is failing"),
        "{held}"
    );
    // A person still can.
    let out = s.advance(
        &p,
        30_000,
        Input::Command {
            by: "ops".into(),
            command: Command::Abort,
        },
    );
    assert_eq!(outputs(&out), ["rollback"]);
}

#[test]
fn a_persons_weight_change_pauses_and_their_rollback_aborts() {
    let p = canary();
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 1, Input::Committed(Some(2)));
    s.advance(&p, 2, Input::Converged(2));
    let change = Input::Changed {
        by: "ci".into(),
        version: 3,
        change: Change::Weight(40.0),
    };
    s.advance(&p, 3, change);
    assert_eq!(s.phase, Phase::Paused);
    assert_eq!(
        s.held.as_deref(),
        Some("ci set the weight to 40 % (version 3)")
    );
    assert!(
        outputs(&s.advance(&p, 5 * MIN, Input::Tick)).is_empty(),
        "held: the pause does not end"
    );
    let resumed = s.advance(
        &p,
        5 * MIN,
        Input::Command {
            by: "ops".into(),
            command: Command::Resume,
        },
    );
    assert_eq!(
        outputs(&resumed),
        ["set 100"],
        "the minute's pause is long over"
    );

    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    let out = s.advance(
        &p,
        1,
        Input::Changed {
            by: "ops".into(),
            version: 9,
            change: Change::Route,
        },
    );
    assert_eq!(s.phase, Phase::Aborted);
    assert!(outputs(&out).is_empty(), "the person's version stands");
}

#[test]
fn a_stored_state_resumes_where_it_was_without_asking_twice() {
    let p = canary();
    let mut s = PlanState::start(&p, 0);
    assert_eq!(outputs(&s.advance(&p, 0, Input::Tick)), ["set 10"]);
    s.advance(&p, 1, Input::Committed(Some(4)));
    // The service dies; the state was stored with the version.
    let stored = serde_json::to_string(&s).expect("json");
    let mut back: PlanState = serde_json::from_str(&stored).expect("back");
    assert_eq!(back, s);
    assert!(
        outputs(&back.advance(&p, 2, Input::Tick)).is_empty(),
        "step 1 is not run again"
    );
    back.advance(&p, 3, Input::Converged(4));
    assert_eq!(back.step, 1);
}

#[test]
fn a_dry_run_measures_and_says_but_never_changes_a_weight() {
    let mut doc = json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"pause": "1m"}, {"set_weight": 100}],
        "checks": {"errors": {"probe": {"path": "/healthz"}}},
        "background": ["errors"],
        "dry_run": true,
    });
    let p = plan(doc.clone());
    let mut s = PlanState::start(&p, 0);
    let mut all = s.advance(&p, 0, Input::Tick);
    all.extend(s.advance(&p, 10_000, measured("errors", failing(1, 1, 20))));
    all.extend(s.advance(&p, 20_000, measured("errors", failing(2, 1, 20))));
    all.extend(s.advance(&p, 2 * MIN, Input::Tick));
    assert!(outputs(&all).is_empty(), "{all:?}");
    assert_eq!(s.phase, Phase::Promoted);
    let said: Vec<&str> = all
        .iter()
        .filter_map(|a| match a {
            Action::Event { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        said.iter()
            .any(|m| m.starts_with("dry run, would roll back")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|m| m.contains("would step 3/3: set weight to 100 %")),
        "{said:?}"
    );
    doc["dry_run"] = json!(false);
    assert!(!plan(doc).dry_run());
}

#[test]
fn a_step_over_its_progress_deadline_fails_the_plan_and_rolls_back() {
    let p = plan(json!({"schema": 1, "steps": [{"set_weight": 10}], "progress_deadline": "5m"}));
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 1, Input::Committed(Some(3)));
    assert!(outputs(&s.advance(&p, 5 * MIN, Input::Tick)).is_empty());
    assert_eq!(
        outputs(&s.advance(&p, 5 * MIN + 1, Input::Tick)),
        ["rollback"]
    );
    assert_eq!(s.phase, Phase::Failed);
}

#[test]
fn an_analysis_goes_on_only_when_its_checks_pass() {
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"analysis": {"checks": ["errors"], "duration": "30s"}}, {"set_weight": 50}],
        "checks": {"errors": {"probe": {"path": "/"}}},
    }));
    let run = |m: Option<Measurement>| {
        let mut s = PlanState::start(&p, 0);
        s.advance(&p, 0, Input::Tick);
        s.advance(&p, 1, Input::Committed(None));
        assert_eq!(s.phase, Phase::Analysing);
        assert_eq!(s.due(1).count(), 0, "nothing to judge yet");
        assert_eq!(s.due(10_001).collect::<Vec<_>>(), ["errors"]);
        if let Some(m) = m {
            s.advance(&p, 20_000, measured("errors", m));
        }
        let out = s.advance(&p, 31_000, Input::Tick);
        (s, out)
    };
    let (s, out) = run(Some(healthy(1)));
    assert_eq!(outputs(&out), ["set 50"]);
    assert!(s.checks.is_empty(), "the analysis check stopped");
    let (s, out) = run(None);
    assert!(outputs(&out).is_empty());
    assert_eq!(
        s.held.as_deref(),
        Some("analysis inconclusive: check errors is not measured")
    );
    let (s, out) = run(Some(failing(1, 1, 20)));
    assert_eq!(outputs(&out), ["rollback"]);
    assert_eq!(s.phase, Phase::Aborted);
}

#[test]
fn the_judge_passes_equal_arms_fails_a_bad_one_and_waits_for_samples() {
    let p = canary();
    let c = p.check("errors").expect("check");
    assert_eq!(judge(c, &healthy(3)).verdict, Verdict::Pass);
    assert_eq!(judge(c, &failing(1, 1, 20)).verdict, Verdict::Fail);
    let few = Measurement::Probe(ProbeSample {
        interval_old: Counts {
            samples: 10,
            errors: 0,
        },
        interval_new: Counts {
            samples: 10,
            errors: 5,
        },
        ..ProbeSample::default()
    });
    assert_eq!(judge(c, &few).verdict, Verdict::Inconclusive);
    let slow = Measurement::Probe(ProbeSample {
        p95_old_ms: Some(20.0),
        p95_new_ms: Some(200.0),
        ..match healthy(1) {
            Measurement::Probe(s) => s,
            _ => unreachable!(),
        }
    });
    let j = judge(c, &slow);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.detail);
    let q = plan(json!({
        "schema": 1, "steps": [{"set_weight": 1}],
        "checks": {"q": {"prometheus": {"url": "http://p:9090", "query": "x", "condition": "< 0.01"}}},
        "background": ["q"],
    }));
    let q = q.check("q").expect("check");
    assert_eq!(judge(q, &Measurement::Value(0.001)).verdict, Verdict::Pass);
    assert_eq!(judge(q, &Measurement::Value(0.2)).verdict, Verdict::Fail);
    assert_eq!(
        judge(q, &Measurement::Value(f64::NAN)).verdict,
        Verdict::Error
    );
}

/// xorshift64*: a seeded generator for the simulations below.
fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed.max(1);
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs the default check over `intervals` intervals of 220 probes per arm
/// at these error proportions; the interval of the rollback, if any.
fn simulate(next: &mut impl FnMut() -> f64, old: f64, new: f64, intervals: u64) -> Option<u64> {
    let p = canary();
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 0, Input::Committed(None));
    let mut running = (Counts::default(), Counts::default());
    for i in 1..=intervals {
        let mut draw = |rate: f64| Counts {
            samples: 220,
            errors: (0..220).filter(|_| next() < rate).count() as u64,
        };
        let (io, inn) = (draw(old), draw(new));
        let m = Measurement::Probe(ProbeSample::accumulate(&mut running, io, inn));
        let out = s.advance(&p, i as i64 * 10_000, measured("errors", m));
        if outputs(&out).contains(&"rollback".to_owned()) {
            return Some(i);
        }
        if let Some(c) = s.checks.get_mut("errors") {
            c.due_ms = 0;
        }
        if s.phase.is_terminal() {
            return None;
        }
    }
    None
}

#[test]
fn equal_arms_are_almost_never_rolled_back_and_a_20_point_excess_always_is() {
    let mut next = rng(7);
    let false_rollbacks = (0..300)
        .filter(|_| simulate(&mut next, 0.01, 0.01, 30).is_some())
        .count();
    assert!(false_rollbacks <= 3, "{false_rollbacks} of 300");
    for _ in 0..100 {
        assert_eq!(
            simulate(&mut next, 0.01, 0.21, 10),
            Some(2),
            "two failed intervals of the default limit"
        );
    }
}

/// Feeds a weight step its commit and convergence.
fn land(p: &Plan, s: &mut PlanState, now: i64, version: u64) -> Vec<Action> {
    let mut out = s.advance(p, now, Input::Committed(Some(version)));
    out.extend(s.advance(p, now, Input::Converged(version)));
    out
}

#[test]
fn a_plan_is_not_promoted_while_a_background_check_is_failing_or_unjudged() {
    // Pauses shorter than interval × failure limit: the steps end before
    // the check can fail twice.
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"pause": "3s"}, {"set_weight": 100}],
        "checks": {"errors": {"probe": {"path": "/"}}},
        "background": ["errors"],
    }));
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    land(&p, &mut s, 1, 2);
    assert_eq!(outputs(&s.advance(&p, 4_000, Input::Tick)), ["set 100"]);
    land(&p, &mut s, 4_001, 3);
    assert_eq!(s.phase, Phase::Baking, "no pass yet: not promoted");
    s.advance(&p, 10_000, measured("errors", failing(1, 1, 20)));
    assert_eq!(s.phase, Phase::Baking, "failing once: not promoted");
    let out = s.advance(&p, 20_000, measured("errors", failing(2, 1, 20)));
    assert_eq!(outputs(&out), ["rollback"]);
    assert_eq!(s.phase, Phase::Aborted);

    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    land(&p, &mut s, 1, 2);
    s.advance(&p, 4_000, Input::Tick);
    land(&p, &mut s, 4_001, 3);
    s.advance(&p, 10_000, measured("errors", healthy(1)));
    assert_eq!(s.phase, Phase::Promoted, "promoted on its first pass");
}

#[test]
fn promote_restarts_the_bake_and_an_analysis_outlasts_the_progress_deadline() {
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"analysis": {"checks": ["errors"], "duration": "45m"}}, {"set_weight": 100}],
        "checks": {"errors": {"probe": {"path": "/"}}},
        "background": ["errors"],
        "progress_deadline": "30m",
        "bake": "5m",
    }));
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    land(&p, &mut s, 1, 2);
    for i in 1..=280 {
        let out = s.advance(&p, i * 10_000, measured("errors", healthy(i as u64)));
        assert!(
            !outputs(&out).contains(&"rollback".to_owned()),
            "healthy at {i}: {out:?}"
        );
    }
    assert_eq!(
        s.phase,
        Phase::Progressing,
        "the 45 minute analysis passed: {:?}",
        s.held
    );
    land(&p, &mut s, 2_810_000, 3);
    assert_eq!(s.phase, Phase::Baking);
    let promote = Input::Command {
        by: "ops".into(),
        command: Command::Promote,
    };
    s.advance(&p, 2_820_000, promote);
    assert_eq!(s.phase, Phase::Progressing);
    s.advance(&p, 2_820_001, Input::Committed(None));
    assert_eq!(s.phase, Phase::Baking, "the bake starts again");
    s.advance(&p, 2_830_000, measured("errors", healthy(282)));
    s.advance(&p, 2_820_001 + 5 * MIN, Input::Tick);
    assert_eq!(s.phase, Phase::Promoted);
}

#[test]
fn a_person_resuming_an_inconclusive_analysis_moves_the_plan_on() {
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"analysis": {"checks": ["errors"], "duration": "30s"}}, {"set_weight": 50}],
        "checks": {"errors": {"probe": {"path": "/"}}},
    }));
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 1, Input::Committed(None));
    s.advance(&p, 31_000, Input::Tick);
    assert!(s.held.is_some());
    assert_eq!(
        s.next_wake(),
        Some(10_001),
        "held: only the check's measurement is awaited"
    );
    let out = s.advance(
        &p,
        40_000,
        Input::Command {
            by: "ops".into(),
            command: Command::Resume,
        },
    );
    assert_eq!(outputs(&out), ["set 50"]);
}

#[test]
fn an_analysis_step_keeps_a_background_checks_fails() {
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"pause": "15s"}, {"analysis": {"checks": ["errors"], "duration": "1m"}}],
        "checks": {"errors": {"probe": {"path": "/"}}},
        "background": ["errors"],
    }));
    let mut s = PlanState::start(&p, 0);
    s.advance(&p, 0, Input::Tick);
    s.advance(&p, 1, Input::Committed(None));
    s.advance(&p, 10_000, measured("errors", failing(1, 1, 20)));
    s.advance(&p, 16_000, Input::Tick);
    assert_eq!(s.phase, Phase::Analysing);
    assert_eq!(s.checks["errors"].fails, 1);
    let out = s.advance(&p, 20_000, measured("errors", failing(2, 1, 20)));
    assert_eq!(
        outputs(&out),
        ["rollback"],
        "the second fail, not a fresh count"
    );
}

#[test]
fn a_version_changes_a_plans_weight_its_route_or_nothing() {
    let doc = |weight: f64, beta: f64, old: &str| -> crate::ConfigDoc {
        serde_json::from_value(json!({"schema": 1, "routes": [{"id": "web", "old": old,
            "new": "http://n.example", "new_weight": weight,
            "flags": [{"name": "beta", "percent": beta}]}]}))
        .expect("doc")
    };
    let before = doc(10.0, 0.0, "http://o.example");
    let cases = [
        (doc(10.0, 0.0, "http://o.example"), None, None),
        (
            doc(30.0, 0.0, "http://o.example"),
            None,
            Some(Change::Weight(30.0)),
        ),
        (
            doc(30.0, 5.0, "http://o.example"),
            None,
            Some(Change::Route),
        ),
        (
            doc(10.0, 5.0, "http://o.example"),
            Some("beta"),
            Some(Change::Weight(5.0)),
        ),
        (
            doc(10.0, 0.0, "http://x.example"),
            None,
            Some(Change::Route),
        ),
        (doc(10.0, 0.0, "http://o.example"), Some("gone"), None),
    ];
    for (after, flag, want) in cases {
        assert_eq!(
            Change::between(Some(&before), &after, "web", flag),
            want,
            "{flag:?}"
        );
    }
    let mut no_flag = doc(10.0, 0.0, "http://o.example");
    no_flag.routes[0].flags.clear();
    assert_eq!(
        Change::between(Some(&before), &no_flag, "web", Some("beta")),
        Some(Change::Route)
    );
    assert_eq!(Change::target(&before, "web", Some("beta")), Some(0.0));
    assert_eq!(Change::target(&before, "api", None), None);
}

#[test]
fn a_raise_waits_for_required_hooks_and_a_failed_one_aborts_the_plan() {
    let p = plan(json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"set_weight": 5}, {"set_weight": 50}],
        "checks": {"errors": {"probe": {"path": "/healthz"}}},
        "background": ["errors"],
        "require_hooks": ["restore-point"],
    }));
    assert_eq!(p.require_hooks(), ["restore-point"]);
    let mut s = PlanState::start(&p, 0);
    // Nothing begins before the hooks' plan.start runs: not even the probes,
    // whose requests reach new.
    assert!(s.gate.is_some() && s.checks.is_empty());
    assert!(outputs(&s.advance(&p, 0, Input::Tick)).is_empty());
    assert_eq!(s.due(MIN).count(), 0);
    let waiting = || Input::Hooks(HookGate::Waiting("restore-point run 1".into()));
    assert!(outputs(&s.advance(&p, 0, waiting())).is_empty(), "gated");
    assert_eq!(s.gate.as_deref(), Some("restore-point run 1"));
    assert!(outputs(&s.advance(&p, 1, Input::Tick)).is_empty(), "still");
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(
        outputs(&s.advance(&p, 2, Input::Hooks(HookGate::Open))),
        ["set 10"]
    );
    assert!(
        s.checks.contains_key("errors"),
        "the checks start with the plan"
    );
    s.advance(&p, 3, Input::Committed(Some(7)));
    s.advance(&p, 3, waiting());
    // Lowering the weight never waits.
    assert_eq!(outputs(&s.advance(&p, 4, Input::Converged(7))), ["set 5"]);
    assert!(outputs(&land(&p, &mut s, 5, 8)).is_empty(), "a raise waits");
    let open = s.clone().advance(&p, 6, Input::Hooks(HookGate::Open));
    assert_eq!(
        outputs(&open),
        ["set 50"],
        "and goes once the run succeeded"
    );
    assert_eq!((s.step, s.phase), (2, Phase::Progressing));
    let out = s.advance(
        &p,
        7,
        Input::Hooks(HookGate::Failed(
            "restore-point run 2: exit status 1".into(),
        )),
    );
    assert_eq!(outputs(&out), ["rollback"]);
    assert_eq!(s.phase, Phase::Aborted);
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("required hook failed: restore-point run 2"))
    );
    assert!(
        outputs(&s.advance(&p, 8, Input::Hooks(HookGate::Open))).is_empty(),
        "done is done"
    );
    // Names follow the rules of names, once each.
    for (doc, want) in [
        (json!(["Bad Name"]), "require_hooks[0]: must be 1-64"),
        (json!(["a", "a"]), "require_hooks[1]: \"a\" is listed twice"),
    ] {
        let e = Plan::from_json(
            json!({"schema": 1, "steps": [{"set_weight": 1}], "require_hooks": doc})
                .to_string()
                .as_bytes(),
        )
        .expect_err("refused");
        assert!(e.to_string().starts_with(want), "{e}");
    }
}
