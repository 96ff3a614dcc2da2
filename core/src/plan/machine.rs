//! The plan executor's rules as a state machine: a [`PlanState`] and an
//! [`Input`] (time passing, a measurement, a command, a change someone
//! made) in, [`Action`]s out (set a weight, roll back, tell someone).
//!
//! The state is plain data the control service stores after every input,
//! in the same transaction as any version an action commits, so a crash
//! never runs a step twice. Times are milliseconds since the Unix epoch,
//! given by the caller: a timed pause ends at a wall-clock instant, and
//! time the service was down counts against it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::judge::{Counts, Judgement, Measurement, Verdict, judge};
use super::{Plan, Step};
use crate::config::{ConfigDoc, RouteDoc};
use crate::weight::Weight;

/// Where a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// At a `set_weight` step, or waiting for every edge to hold it.
    Progressing,
    /// At a pause step, or held (`held` says why).
    Paused,
    /// At an analysis step.
    Analysing,
    /// After the last step, background checks still running.
    Baking,
    /// Done: every step ran and every check held.
    Promoted,
    /// Rolled back (or stopped by a person's change); `reason` says why.
    Aborted,
    /// Could not go on (a step over its deadline, a check that could not
    /// measure); rolled back.
    Failed,
}

impl Phase {
    /// Whether nothing more happens.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::Aborted | Phase::Failed)
    }

    /// The name the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Analysing => "analysing",
            Phase::Baking => "baking",
            Phase::Promoted => "promoted",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }
}

/// What is known of one running check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckState {
    /// When it started (this step or the plan).
    pub started_ms: i64,
    /// When it is next measured.
    pub due_ms: i64,
    /// `fail` results so far.
    pub fails: u32,
    /// `inconclusive` results in a row.
    pub inconclusive_run: u32,
    /// `error` results in a row.
    pub error_run: u32,
    /// Old's totals since it started (probe).
    pub total_old: Counts,
    /// New's totals since it started (probe).
    pub total_new: Counts,
    /// The last judgement.
    pub last: Option<Judgement>,
}

impl CheckState {
    /// A check started at `now`: first measured an interval later, when
    /// there is something to judge.
    fn new(now: i64, interval: std::time::Duration) -> CheckState {
        CheckState {
            started_ms: now,
            due_ms: now + ms(interval),
            fails: 0,
            inconclusive_run: 0,
            error_run: 0,
            total_old: Counts::default(),
            total_new: Counts::default(),
            last: None,
        }
    }
}

/// A plan's state: what the control service stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanState {
    /// Where it is.
    pub phase: Phase,
    /// The current step (the number of steps once they are all done).
    pub step: usize,
    /// When the current step began.
    pub step_started_ms: i64,
    /// When the current step must have finished (not while paused).
    pub deadline_ms: Option<i64>,
    /// When a timed pause, an analysis or the bake ends.
    pub until_ms: Option<i64>,
    /// Whether the current `set_weight` step has asked for its weight.
    pub issued: bool,
    /// The version the current step waits to see on every edge.
    pub waiting_for: Option<u64>,
    /// The last weight the plan set.
    pub weight: Option<Weight>,
    /// Why it is held (paused by a person, a command, an inconclusive
    /// analysis or an unsafe rollback), if it is.
    pub held: Option<String>,
    /// Why it ended, for aborted and failed plans.
    pub reason: Option<String>,
    /// Running checks, by name.
    pub checks: BTreeMap<String, CheckState>,
    /// What the next raise of the weight waits for: a run of a hook the
    /// plan requires that has not finished yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
}

/// A person's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Hold where it is.
    Pause,
    /// Go on (and end an open-ended pause step).
    Resume,
    /// Send everyone to new now, then bake.
    Promote,
    /// Roll back now, whatever the checks say.
    Abort,
}

/// A change to the plan's route that the plan did not make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only the plan's weight (or flag percentage) changed, to this percentage.
    Weight(f64),
    /// Anything else about the route changed (a rollback, a push).
    Route,
}

impl Change {
    /// What a version changed on `route` (its config `after`, the one
    /// before it `before`) for a plan that ramps the weight, or `flag`:
    /// nothing, only the plan's percentage, or something else (the route
    /// or the flag gone included).
    pub fn between(
        before: Option<&ConfigDoc>,
        after: &ConfigDoc,
        route: &str,
        flag: Option<&str>,
    ) -> Option<Change> {
        let find = |c: &ConfigDoc| c.routes.iter().find(|r| r.id == route).cloned();
        let (Some(b), Some(a)) = (before.and_then(find), find(after)) else {
            return before.and_then(find).is_some().then_some(Change::Route);
        };
        if a == b {
            return None;
        }
        let Some(to) = percent_of(&a, flag) else {
            return Some(Change::Route);
        };
        let mut only_that = b;
        match flag {
            Some(f) => only_that
                .flags
                .iter_mut()
                .filter(|x| x.name == f)
                .for_each(|x| x.percent = to),
            None => only_that.new_weight = to,
        }
        Some(if only_that == a {
            Change::Weight(to)
        } else {
            Change::Route
        })
    }

    /// The percentage a plan ramps on `route` in `config`: the route's new
    /// weight, or `flag`'s percentage.
    pub fn target(config: &ConfigDoc, route: &str, flag: Option<&str>) -> Option<f64> {
        let r = config.routes.iter().find(|r| r.id == route)?;
        percent_of(r, flag)
    }
}

fn percent_of(route: &RouteDoc, flag: Option<&str>) -> Option<f64> {
    match flag {
        Some(f) => route.flags.iter().find(|x| x.name == f).map(|x| x.percent),
        None => Some(route.new_weight),
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// Time passed.
    Tick,
    /// The plan's weight was committed as this version (`None`: the
    /// config already had it, nothing to push).
    Committed(Option<u64>),
    /// Every edge holds this version (the plan's, or a later one).
    Converged(u64),
    /// A check was measured.
    Measured {
        /// Which.
        check: String,
        /// What it saw.
        measurement: Measurement,
    },
    /// A person's command.
    Command {
        /// Who.
        by: String,
        /// What.
        command: Command,
    },
    /// Someone else changed the route.
    Changed {
        /// Who.
        by: String,
        /// In which version.
        version: u64,
        /// What.
        change: Change,
    },
    /// A firing alert names the route.
    Alert(String),
    /// Where the runs of the hooks the plan requires stand.
    Hooks(HookGate),
}

/// Where the runs of a plan's required hooks stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookGate {
    /// Every one succeeded (or the plan requires none).
    Open,
    /// This one has not finished.
    Waiting(String),
    /// This one failed or timed out: the plan aborts.
    Failed(String),
}

/// What kind of thing an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A step began.
    Step,
    /// The plan is held.
    Pause,
    /// It goes on.
    Resume,
    /// A check was judged.
    Analysis,
    /// It rolled back, or stopped.
    Abort,
    /// It could not go on.
    Fail,
    /// Every step ran and every check held.
    Promote,
    /// An automatic rollback was held back: old is failing worse than new.
    RollbackUnsafe,
}

impl EventKind {
    /// The name events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Step => "step",
            EventKind::Pause => "pause",
            EventKind::Resume => "resume",
            EventKind::Analysis => "analysis",
            EventKind::Abort => "abort",
            EventKind::Fail => "fail",
            EventKind::Promote => "promote",
            EventKind::RollbackUnsafe => "rollback_unsafe",
        }
    }
}

/// What the control service is to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Commit a version with the plan's weight at this, for this reason;
    /// then feed back [`Input::Committed`].
    SetWeight {
        /// The weight.
        weight: Weight,
        /// The version's reason.
        reason: String,
    },
    /// Commit a version with the plan's weight at 0, at once.
    Rollback {
        /// The version's reason (the measurement that caused it).
        reason: String,
    },
    /// Tell whoever listens.
    Event {
        /// What kind.
        kind: EventKind,
        /// In words.
        message: String,
    },
}

impl PlanState {
    /// A plan about to run its first step at `now`. A plan that requires
    /// hooks starts nothing, not even its checks' probes (which reach
    /// new), until their `plan.start` runs succeeded.
    pub fn start(plan: &Plan, now: i64) -> PlanState {
        let gated = !plan.require_hooks.is_empty();
        let mut state = PlanState {
            phase: Phase::Progressing,
            step: 0,
            step_started_ms: now,
            deadline_ms: Some(now + ms(plan.progress_deadline)),
            until_ms: None,
            issued: false,
            waiting_for: None,
            weight: None,
            held: None,
            reason: None,
            checks: BTreeMap::new(),
            gate: gated.then(|| "the plan.start runs of the hooks it requires".to_owned()),
        };
        if !gated {
            state.start_checks(plan, now);
        }
        state
    }

    fn start_checks(&mut self, plan: &Plan, now: i64) {
        for n in &plan.background {
            if let Some(c) = plan.check(n) {
                self.checks
                    .insert(n.clone(), CheckState::new(now, c.interval));
            }
        }
    }

    /// Whether the plan has not begun: nothing issued, no step done.
    fn unbegun(&self) -> bool {
        self.step == 0 && !self.issued && self.weight.is_none()
    }

    /// The checks to measure at `now`: running and due.
    pub fn due(&self, now: i64) -> impl Iterator<Item = &str> {
        self.checks
            .iter()
            .filter(move |(_, c)| c.due_ms <= now)
            .map(|(n, _)| n.as_str())
    }

    /// The earliest instant something is due by time alone.
    pub fn next_wake(&self) -> Option<i64> {
        if self.phase.is_terminal() {
            return None;
        }
        let checks = self.checks.values().map(|c| c.due_ms);
        // Held, only a measurement can change anything: timers wait.
        let timers = [self.until_ms, self.deadline_ms]
            .into_iter()
            .flatten()
            .filter(|_| self.held.is_none());
        checks.chain(timers).min()
    }

    /// Feeds `input` at `now`; returns what to do.
    pub fn advance(&mut self, plan: &Plan, now: i64, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase.is_terminal() {
            return out;
        }
        match input {
            Input::Tick => {}
            Input::Committed(version) => match version {
                Some(v) if !plan.dry_run => self.waiting_for = Some(v),
                // Nothing to wait for: the step is done.
                _ => self.next_step(plan, now, &mut out),
            },
            Input::Converged(v) => {
                if self.waiting_for.is_some_and(|w| v >= w) {
                    self.waiting_for = None;
                    self.next_step(plan, now, &mut out);
                }
            }
            Input::Measured { check, measurement } => {
                self.measured(plan, now, &check, &measurement, &mut out);
            }
            Input::Command { by, command } => self.command(plan, now, &by, command, &mut out),
            Input::Changed {
                by,
                version,
                change,
            } => match change {
                Change::Weight(p) => self.hold(
                    format!("{by} set the weight to {p} % (version {version})"),
                    &mut out,
                ),
                Change::Route => self.end(
                    Phase::Aborted,
                    format!("version {version} by {by} changed the route"),
                    None,
                    &mut out,
                ),
            },
            Input::Alert(alert) => {
                self.abort(plan, format!("alert {alert} is firing"), true, &mut out);
            }
            Input::Hooks(HookGate::Open) => {
                // The first opening begins the plan, checks and all.
                if self.gate.take().is_some() && self.unbegun() {
                    self.start_checks(plan, now);
                }
            }
            Input::Hooks(HookGate::Waiting(what)) => self.gate = Some(what),
            Input::Hooks(HookGate::Failed(why)) => {
                self.gate = None;
                self.abort(plan, format!("required hook failed: {why}"), true, &mut out);
            }
        }
        self.drive(plan, now, &mut out);
        out
    }

    fn command(&mut self, plan: &Plan, now: i64, by: &str, c: Command, out: &mut Vec<Action>) {
        match c {
            Command::Pause => self.hold(format!("paused by {by}"), out),
            Command::Resume => {
                let open_pause = matches!(self.current(plan), Some(Step::Pause(None)));
                // An analysis that ended without a pass held the plan: a
                // person's resume accepts it.
                let analysed = matches!(self.current(plan), Some(Step::Analysis { .. }))
                    && self.until_ms.is_some_and(|u| now >= u);
                if self.held.take().is_some() || open_pause {
                    event(out, EventKind::Resume, format!("resumed by {by}"));
                }
                if open_pause || analysed {
                    self.next_step(plan, now, out);
                } else if self.deadline_ms.is_some() {
                    // Time held does not count against the step.
                    self.deadline_ms = Some(now + ms(plan.progress_deadline));
                }
            }
            Command::Promote => {
                self.held = None;
                // The bake, if any, starts again once new's weight is everywhere.
                self.phase = Phase::Progressing;
                self.step = plan.steps.len();
                self.step_started_ms = now;
                self.until_ms = None;
                self.deadline_ms = Some(now + ms(plan.progress_deadline));
                self.checks.retain(|n, _| plan.background.contains(n));
                self.issued = false;
                self.waiting_for = None;
                event(out, EventKind::Step, format!("promoted by {by}"));
                self.set_weight(plan, Weight::FULL, format!("promoted by {by}"), out);
            }
            Command::Abort => self.abort(plan, format!("aborted by {by}"), true, out),
        }
    }

    fn measured(
        &mut self,
        plan: &Plan,
        now: i64,
        name: &str,
        m: &Measurement,
        out: &mut Vec<Action>,
    ) {
        let (Some(check), Some(state)) = (plan.checks.get(name), self.checks.get_mut(name)) else {
            return;
        };
        if let Measurement::Probe(p) = m {
            state.total_old = p.total_old;
            state.total_new = p.total_new;
        }
        let j = judge(check, m);
        state.due_ms = now + ms(check.interval);
        match j.verdict {
            Verdict::Pass => (state.inconclusive_run, state.error_run) = (0, 0),
            Verdict::Fail => {
                state.fails += 1;
                (state.inconclusive_run, state.error_run) = (0, 0);
            }
            Verdict::Inconclusive => state.inconclusive_run += 1,
            Verdict::Error => state.error_run += 1,
        }
        let failed = if state.fails >= check.failure_limit {
            Some((Phase::Aborted, format!("{} fail results", state.fails)))
        } else if check.inconclusive_limit > 0 && state.inconclusive_run >= check.inconclusive_limit
        {
            Some((
                Phase::Aborted,
                format!("{} inconclusive results in a row", state.inconclusive_run),
            ))
        } else if state.error_run >= check.consecutive_error_limit {
            Some((
                Phase::Failed,
                format!("{} errors in a row", state.error_run),
            ))
        } else {
            None
        };
        let detail = j.detail.clone();
        state.last = Some(j);
        if let Some((phase, count)) = failed {
            let reason = format!("check {name} failed ({count}): {detail}");
            if plan.dry_run {
                event(
                    out,
                    EventKind::Abort,
                    format!("dry run, would roll back: {reason}"),
                );
                if let Some(s) = self.checks.get_mut(name) {
                    *s = CheckState::new(now, check.interval);
                }
                return;
            }
            if let Some(unsafe_because) = self.old_failing() {
                self.hold(
                    format!("rollback unsafe: old is failing ({unsafe_because}); {reason}"),
                    out,
                );
                event(out, EventKind::RollbackUnsafe, reason);
                return;
            }
            if phase == Phase::Failed {
                self.rollback(plan, Phase::Failed, reason, out);
            } else {
                self.abort(plan, reason, false, out);
            }
        }
    }

    /// Evidence from any check that old is failing worse than new.
    fn old_failing(&self) -> Option<String> {
        self.checks.iter().find_map(|(n, c)| {
            let j = c.last.as_ref()?;
            (j.old_worse == Some(true)).then(|| format!("check {n}: {}", j.detail))
        })
    }

    fn current<'p>(&self, plan: &'p Plan) -> Option<&'p Step> {
        plan.steps.get(self.step)
    }

    /// Makes what progress time and state allow.
    fn drive(&mut self, plan: &Plan, now: i64, out: &mut Vec<Action>) {
        while !self.phase.is_terminal() {
            if self.held.is_some() {
                self.phase = Phase::Paused;
                return;
            }
            if let Some(d) = self.deadline_ms
                && now > d
            {
                let what = match self.current(plan) {
                    Some(_) => format!("step {} did not finish", self.step + 1),
                    None => "the checks did not pass after the last step".to_owned(),
                };
                let limit = humantime::format_duration(plan.progress_deadline);
                let waiting = self
                    .gate
                    .take()
                    .map_or_else(String::new, |g| format!(" (waiting for hook {g})"));
                self.rollback(
                    plan,
                    Phase::Failed,
                    format!("{what} within the progress deadline of {limit}{waiting}"),
                    out,
                );
                return;
            }
            if self.gate.is_some() && self.unbegun() {
                self.phase = Phase::Progressing;
                return;
            }
            let Some(step) = self.current(plan) else {
                self.after_last_step(plan, now, out);
                return;
            };
            match step {
                Step::SetWeight(w) => {
                    self.phase = Phase::Progressing;
                    // A raise waits for the hooks the plan requires.
                    let raise = self.weight.is_none_or(|now| *w > now);
                    if !self.issued && raise && self.gate.is_some() {
                        return;
                    }
                    if !self.issued {
                        let total = plan.steps.len();
                        let reason = format!(
                            "step {}/{total}: set weight to {} %",
                            self.step + 1,
                            w.percent()
                        );
                        self.set_weight(plan, *w, reason, out);
                    }
                    if !plan.dry_run {
                        return;
                    }
                }
                Step::Pause(d) => {
                    self.phase = Phase::Paused;
                    self.deadline_ms = None;
                    match d {
                        None => return,
                        Some(d) => {
                            let until = *self.until_ms.get_or_insert(self.step_started_ms + ms(*d));
                            if now < until {
                                return;
                            }
                        }
                    }
                }
                Step::Analysis { checks, duration } => {
                    self.phase = Phase::Analysing;
                    // Its duration bounds it; the progress deadline does not.
                    self.deadline_ms = None;
                    if self.until_ms.is_none() {
                        self.until_ms = Some(self.step_started_ms + ms(*duration));
                        for n in checks {
                            // A background check already running keeps its count.
                            if let (false, Some(c)) = (self.checks.contains_key(n), plan.check(n)) {
                                self.checks
                                    .insert(n.clone(), CheckState::new(now, c.interval));
                            }
                        }
                    }
                    if self.until_ms.is_some_and(|u| now < u) {
                        return;
                    }
                    let verdicts: Vec<(String, Option<Verdict>)> = checks
                        .iter()
                        .map(|n| {
                            (
                                n.clone(),
                                self.checks
                                    .get(n)
                                    .and_then(|c| c.last.as_ref())
                                    .map(|j| j.verdict),
                            )
                        })
                        .collect();
                    if let Some((n, _)) = verdicts.iter().find(|(_, v)| *v == Some(Verdict::Fail)) {
                        let detail = self
                            .checks
                            .get(n)
                            .and_then(|c| c.last.as_ref())
                            .map(|j| j.detail.clone())
                            .unwrap_or_default();
                        self.abort(
                            plan,
                            format!("analysis failed: check {n}: {detail}"),
                            false,
                            out,
                        );
                        if !plan.dry_run {
                            return;
                        }
                    } else if let Some((n, v)) =
                        verdicts.iter().find(|(_, v)| *v != Some(Verdict::Pass))
                    {
                        let what = v.map_or("not measured", Verdict::as_str);
                        let why = format!("analysis inconclusive: check {n} is {what}");
                        if !plan.dry_run {
                            self.hold(why, out);
                            return;
                        }
                        event(out, EventKind::Pause, format!("dry run, would hold: {why}"));
                    }
                    for n in checks {
                        if !plan.background.contains(n) {
                            self.checks.remove(n);
                        }
                    }
                    event(
                        out,
                        EventKind::Analysis,
                        format!("analysis passed: {}", checks.join(", ")),
                    );
                }
            }
            self.next_step(plan, now, out);
        }
    }

    fn after_last_step(&mut self, plan: &Plan, now: i64, out: &mut Vec<Action>) {
        if self.issued || self.waiting_for.is_some() {
            // A promotion's weight is not on every edge yet.
            return;
        }
        if self.phase != Phase::Baking {
            self.phase = Phase::Baking;
            self.deadline_ms = None;
            self.until_ms = Some(now + ms(plan.bake));
        }
        if self.until_ms.is_some_and(|u| now < u) {
            return;
        }
        // A plan is not promoted on a check that is failing, or that has not
        // judged anything yet: it waits for a pass, within the deadline.
        let unproven = plan.background.iter().find(|n| {
            let last = self.checks.get(*n).and_then(|c| c.last.as_ref());
            last.map(|j| j.verdict) != Some(Verdict::Pass)
        });
        if let Some(n) = unproven.filter(|_| !plan.dry_run) {
            if self.deadline_ms.is_none() {
                self.deadline_ms = Some(now + ms(plan.progress_deadline));
                event(
                    out,
                    EventKind::Pause,
                    format!("the last step is done; promotion waits for check {n} to pass"),
                );
            }
            return;
        }
        self.end(Phase::Promoted, String::new(), None, out);
    }

    fn next_step(&mut self, plan: &Plan, now: i64, out: &mut Vec<Action>) {
        if self.step < plan.steps.len() {
            self.step += 1;
        }
        self.step_started_ms = now;
        self.until_ms = None;
        self.issued = false;
        self.deadline_ms = Some(now + ms(plan.progress_deadline));
        if let Some(step) = self.current(plan) {
            let total = plan.steps.len();
            event(
                out,
                EventKind::Step,
                format!("step {}/{total}: {}", self.step + 1, describe(step)),
            );
        }
    }

    /// Asks for weight `w` (the step then waits for it on every edge); a
    /// dry run only says so.
    fn set_weight(&mut self, plan: &Plan, w: Weight, reason: String, out: &mut Vec<Action>) {
        if plan.dry_run {
            event(out, EventKind::Step, format!("dry run, would {reason}"));
            return;
        }
        self.weight = Some(w);
        self.issued = true;
        out.push(Action::SetWeight { weight: w, reason });
    }

    fn hold(&mut self, reason: String, out: &mut Vec<Action>) {
        if self.phase.is_terminal() {
            return;
        }
        self.phase = Phase::Paused;
        event(out, EventKind::Pause, reason.clone());
        self.held = Some(reason);
    }

    /// Rolls back: at once when `forced` (a person, an alert), else unless
    /// old is failing worse than new.
    fn abort(&mut self, plan: &Plan, reason: String, forced: bool, out: &mut Vec<Action>) {
        if plan.dry_run && !forced {
            event(
                out,
                EventKind::Abort,
                format!("dry run, would roll back: {reason}"),
            );
            return;
        }
        self.rollback(plan, Phase::Aborted, reason, out);
    }

    fn rollback(&mut self, plan: &Plan, phase: Phase, reason: String, out: &mut Vec<Action>) {
        let rollback = (!plan.dry_run).then(|| Action::Rollback {
            reason: reason.clone(),
        });
        if rollback.is_some() {
            self.weight = Some(Weight::ZERO);
        }
        self.end(phase, reason, rollback, out);
    }

    fn end(&mut self, phase: Phase, reason: String, action: Option<Action>, out: &mut Vec<Action>) {
        self.phase = phase;
        self.held = None;
        self.until_ms = None;
        self.deadline_ms = None;
        self.waiting_for = None;
        out.extend(action);
        let kind = match phase {
            Phase::Promoted => EventKind::Promote,
            Phase::Failed => EventKind::Fail,
            _ => EventKind::Abort,
        };
        if phase == Phase::Promoted {
            event(
                out,
                kind,
                "promoted: every step ran and every check held".to_owned(),
            );
        } else {
            event(out, kind, reason.clone());
            self.reason = Some(reason);
        }
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::SetWeight(w) => format!("set weight to {} %", w.percent()),
        Step::Pause(None) => "pause until resumed".to_owned(),
        Step::Pause(Some(d)) => format!("pause {}", humantime::format_duration(*d)),
        Step::Analysis { checks, duration } => format!(
            "analysis of {} for {}",
            checks.join(", "),
            humantime::format_duration(*duration)
        ),
    }
}

fn event(out: &mut Vec<Action>, kind: EventKind, message: String) {
    out.push(Action::Event { kind, message });
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
