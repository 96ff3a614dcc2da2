//! The plan executor: runs every plan's steps and checks, commits what core's
//! plan machine decides as ordinary signed versions (actor `plan:<id>`),
//! and hears of the versions people make.
//!
//! Every input to a plan is applied in one store transaction that reads the
//! plan, advances it, commits any version its actions ask for and writes
//! the plan back: killed at any point, the service finds each plan either
//! before the step or after it, never with a step run twice. Measuring (the
//! probes' counts, Prometheus queries) happens outside that transaction;
//! one lock keeps the executor, commands and alerts from advancing a plan
//! at the same time.

mod probe;
mod prometheus;
mod view;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_api::HookStatus;
use rollout_api::{StartPlan, Version};
use rollout_core::config::{OverrideDoc, Patch, RouteDoc};
use rollout_core::plan::judge::Measurement;
use rollout_core::plan::machine::{
    Action, Change, Command, EventKind, HookGate, Input, Phase, PlanState,
};
use rollout_core::plan::{CheckKind, MAX_PLAN_BYTES, Plan, PlanDoc, PlanError};
use rollout_core::{ConfigDoc, SecretKey, Weight};
use sha2::Digest as _;

pub use view::{event_view, plan_view};

use crate::commit::{Author, Refusal, commit_in, envelope_of};
use crate::events::Events;
use crate::hooks::{HookEvent, Listeners};
use crate::keys::Keys;
use crate::push::Fanout;
use crate::store::{CommitError, NewHookRun, PlanId, PlanRow, Store, Tx, VersionRow, now_ms};

/// A probe sampler's key: the plan, the check, and when this run of the
/// check started (a retried plan gets fresh samplers).
type SamplerKey = (PlanId, String, i64);

fn sampler_key(row: &PlanRow, name: &str) -> SamplerKey {
    let started = row.state.checks.get(name).map_or(0, |c| c.started_ms);
    (row.id, name.to_owned(), started)
}

/// The header probes force their arm with, when the route has no header
/// override the control service can use.
pub const PROBE_HEADER: &str = "x-rollout-probe";

/// Why a plan operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanFailure {
    /// No such plan.
    #[error("{0}")]
    NotFound(String),
    /// Another plan runs on the route, or this one cannot do that now.
    #[error("{0}")]
    Conflict(String),
    /// A plan or request that breaks a rule.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Where.
        field: Option<String>,
    },
    /// A version the plan needed was refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] crate::store::Error),
}

impl PlanFailure {
    fn invalid(field: &str, message: impl Into<String>) -> PlanFailure {
        PlanFailure::Invalid {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

impl From<PlanError> for PlanFailure {
    fn from(e: PlanError) -> PlanFailure {
        let field = format!("plan.{}", e.path).replace("plan.plan", "plan");
        PlanFailure::Invalid {
            message: format!("{field}: {}", e.problem),
            field: Some(field),
        }
    }
}

impl From<CommitError<Refusal>> for PlanFailure {
    fn from(e: CommitError<Refusal>) -> PlanFailure {
        match e {
            CommitError::Refused(r) => r.into(),
            CommitError::Store(e) => e.into(),
            // Plans commit against whatever is current.
            CommitError::Conflict { expected, current } => PlanFailure::Conflict(format!(
                "expected version {expected}, but the current version is {current}"
            )),
        }
    }
}

/// The control service's probe token and the digest a route lists for it.
#[derive(Debug, Clone)]
pub struct ProbeToken {
    /// Sent as `ARM:TOKEN`.
    pub token: String,
    /// `sha256(token)`, lowercase hex.
    pub digest: String,
}

impl ProbeToken {
    /// The token derived from the signing key: the same on every replica
    /// that holds the key, and it changes when the key does.
    pub fn from_key(key: &SecretKey) -> ProbeToken {
        let token = hex::encode(key.derive("rollout probe token"));
        let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        ProbeToken { token, digest }
    }
}

/// The executor and the operations on plans.
#[derive(Debug)]
pub struct Plans {
    store: Arc<Store>,
    keys: Arc<Keys>,
    fanout: Arc<Fanout>,
    events: Arc<Events>,
    listeners: Listeners,
    probe_token: ProbeToken,
    http: reqwest::Client,
    samplers: Mutex<HashMap<SamplerKey, probe::Sampler>>,
    /// Told of anything that may move a plan (also by the hook runner).
    wake: Arc<tokio::sync::Notify>,
    /// One plan transition at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Plans {
    /// The executor over `store`.
    pub fn new(
        store: Arc<Store>,
        keys: Arc<Keys>,
        fanout: Arc<Fanout>,
        events: Arc<Events>,
        listeners: Listeners,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Plans, reqwest::Error> {
        Ok(Plans {
            probe_token: ProbeToken::from_key(keys.current().first()),
            listeners,
            store,
            keys,
            fanout,
            events,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            samplers: Mutex::default(),
            wake,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Who hears of what plans and versions do.
    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// The probe token.
    pub fn probe_token(&self) -> &ProbeToken {
        &self.probe_token
    }

    /// Runs plans until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = match self.round().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("plan round failed: {e}");
                    None
                }
            };
            let wait = next.map_or(1000, |at| (at - now_ms()).clamp(20, 1000));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    /// One round over every running plan: measure what is due, then feed
    /// the plan what happened. The earliest instant a plan wants a round.
    async fn round(&self) -> Result<Option<i64>, PlanFailure> {
        let plans = self.store.running_plans()?;
        self.keep_samplers(&plans);
        self.hold_for_break_glass(&plans).await?;
        let converged = self.converged()?;
        // Every due measurement at once: a slow Prometheus does not delay
        // another plan's rollback.
        let now = now_ms();
        let measured = futures_util::future::join_all(plans.iter().map(|row| async move {
            let Ok(plan) = Plan::try_from(&row.doc) else {
                return Vec::new();
            };
            let due: Vec<String> = row.state.due(now).map(str::to_owned).collect();
            let checks = due.into_iter().map(|name| {
                let plan = &plan;
                async move {
                    let measurement = self.measure(row, plan, &name).await;
                    Input::Measured {
                        check: name,
                        measurement,
                    }
                }
            });
            futures_util::future::join_all(checks).await
        }))
        .await;
        let mut next: Option<i64> = None;
        for (row, mut inputs) in plans.into_iter().zip(measured) {
            // Measurements first: a check that fails in the round a step
            // lands rolls back before the next weight is asked for.
            if let (Some(w), Some(v)) = (row.state.waiting_for, converged)
                && v.get() >= w
            {
                inputs.push(Input::Converged(v.get()));
            }
            inputs.push(Input::Tick);
            let after = {
                let _one = self.lock.lock().await;
                self.step(row.id, inputs)?
            };
            let wake = after.state.next_wake();
            next = match (next, wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next)
    }

    /// Holds every running plan while an edge holds a version this service
    /// did not issue (a break-glass push): the plan's next step would
    /// overtake what the operator pushed by hand.
    async fn hold_for_break_glass(&self, plans: &[PlanRow]) -> Result<(), PlanFailure> {
        let current = self.store.current()?.map_or(Version::NONE, |c| c.version);
        let reported = self.store.highest_reported()?;
        if reported <= current {
            return Ok(());
        }
        for row in plans.iter().filter(|p| p.state.held.is_none()) {
            let by = format!(
                "control: an edge holds version {reported}, which this service did not issue (break glass?)"
            );
            let _one = self.lock.lock().await;
            self.step(
                row.id,
                vec![Input::Command {
                    by,
                    command: Command::Pause,
                }],
            )?;
        }
        Ok(())
    }

    /// The committed version, if every edge holds it.
    fn converged(&self) -> crate::store::Result<Option<Version>> {
        let Some(current) = self.store.current()? else {
            return Ok(None);
        };
        // Counted by the store as edge rows change: no read of every row.
        let all = self.store.holding(current.applied()).all();
        Ok(all.then_some(current.version))
    }

    async fn measure(&self, row: &PlanRow, plan: &Plan, name: &str) -> Measurement {
        let Some(check) = plan.check(name) else {
            return Measurement::Error(format!("no check {name}"));
        };
        match &check.kind {
            CheckKind::Probe(_) => {
                let samplers = self.samplers.lock().unwrap_or_else(|p| p.into_inner());
                match samplers.get(&sampler_key(row, name)) {
                    Some(s) => match s.snapshot() {
                        Ok(sample) => Measurement::Probe(sample),
                        Err(e) => Measurement::Error(e),
                    },
                    None => Measurement::Error("the probe is not running".to_owned()),
                }
            }
            CheckKind::Prometheus(q) => prometheus::measure(&self.http, q, &row.route).await,
        }
    }

    /// Starts a sampler for every running probe check, stops the rest.
    fn keep_samplers(&self, plans: &[PlanRow]) {
        let mut samplers = self.samplers.lock().unwrap_or_else(|p| p.into_inner());
        let mut wanted = Vec::new();
        for row in plans {
            let Ok(plan) = Plan::try_from(&row.doc) else {
                continue;
            };
            for (name, state) in &row.state.checks {
                if let Some(CheckKind::Probe(p)) = plan.check(name).map(|c| &c.kind) {
                    let key = sampler_key(row, name);
                    wanted.push(key.clone());
                    if samplers.contains_key(&key) {
                        continue;
                    }
                    let rate = plan.check(name).map_or(1.0, |c| p.rate_per_arm(c));
                    let target = self.probe_target(&row.route);
                    let sampler = probe::Sampler::start(probe::Setup {
                        probe: p.clone(),
                        rate_per_arm: rate,
                        totals: (state.total_old, state.total_new),
                        store: self.store.clone(),
                        http: self.http.clone(),
                        target,
                    });
                    samplers.insert(key, sampler);
                }
            }
        }
        samplers.retain(|k, _| wanted.contains(k));
    }

    /// How probes force an arm on `route`, as the committed config says:
    /// the override, and the oldest of the newest versions that all have it
    /// (an edge on any of those that answers from the other arm failed over).
    fn probe_target(&self, route: &str) -> probe::Target {
        let digest = &self.probe_token.digest;
        let header_in = |row: &VersionRow| {
            let config = envelope_of(row).ok()?.config;
            let r = config.routes.iter().find(|r| r.id == route)?;
            probe_header(r, digest)
        };
        let history = self.store.history(None, 100).unwrap_or_default();
        let header = history.first().and_then(header_in);
        let since = history
            .iter()
            .take_while(|row| header.is_some() && header_in(row) == header)
            .last()
            .map_or(Version::NONE, |row| row.version);
        probe::Target {
            header: header
                .map(|(h, needs_token)| (h, needs_token.then(|| self.probe_token.token.clone()))),
            since,
        }
    }

    /// In plan `id`'s transaction: checks that each probe of `plan` would
    /// reach `route`, and gives the route an override the probe token opens
    /// when it has none, as a version of the plan's own (its number).
    fn ready_probes(
        &self,
        tx: &Tx<'_>,
        id: PlanId,
        route: &str,
        plan: &Plan,
    ) -> Result<Option<Version>, PlanFailure> {
        let probes: Vec<(&str, &rollout_core::plan::Probe)> = plan
            .checks()
            .filter_map(|(n, c)| match &c.kind {
                CheckKind::Probe(p) => Some((n, p)),
                CheckKind::Prometheus(_) => None,
            })
            .collect();
        if probes.is_empty() {
            return Ok(None);
        }
        let Some(current) = tx.current()? else {
            return Ok(None);
        };
        let config = envelope_of(&current)?.config;
        let compiled = rollout_core::Config::try_from(&config).map_err(Refusal::from)?;
        for (name, p) in &probes {
            let (path, query) = p.path.split_once('?').unwrap_or((&p.path, ""));
            let request = rollout_core::Request {
                method: p.method,
                host: p.host.as_deref().unwrap_or(""),
                path,
                query,
                headers: &[],
                client_ip: None,
                mint: None,
            };
            let reached = rollout_core::decide(&compiled, &request)
                .route
                .id()
                .to_owned();
            if reached != route {
                return Err(PlanFailure::invalid(
                    &format!("plan.checks.{name}.probe"),
                    format!(
                        "plan.checks.{name}.probe: its requests would take route {reached:?}, not {route:?}: \
                         give the host and path that select {route:?}"
                    ),
                ));
            }
        }
        let Some(r) = config.routes.iter().find(|r| r.id == route) else {
            return Ok(None);
        };
        if probe_header(r, &self.probe_token.digest).is_some() {
            return Ok(None);
        }
        let digest = self.probe_token.digest.clone();
        let author = Author {
            actor: &format!("plan:{id}"),
            action: "plan",
            reason: format!("plan {id}: add the probe override its checks use"),
        };
        let v = commit_in(
            tx,
            &self.keys.current(),
            None,
            &author,
            &self.listeners,
            |_| {
                let mut doc = config.clone();
                if let Some(r) = doc.routes.iter_mut().find(|r| r.id == route) {
                    add_probe_override(r, &digest);
                }
                Ok(doc)
            },
        )?;
        Ok(Some(v.version))
    }

    /// Starts a plan on a route. Adds the probe override to the route
    /// first, as a version of the plan's own, when a probe check needs it.
    pub async fn start(&self, who: &str, req: StartPlan) -> Result<PlanRow, PlanFailure> {
        let _one = self.lock.lock().await;
        let reason = req
            .reason
            .as_ref()
            .map_or_else(|| "plan started".to_owned(), ToString::to_string);
        let size = serde_json::to_vec(&req.plan).map_or(usize::MAX, |b| b.len());
        if size > MAX_PLAN_BYTES {
            return Err(PlanFailure::invalid(
                "plan",
                format!("plan: {size} bytes is over the limit of {MAX_PLAN_BYTES} bytes"),
            ));
        }
        let mut committed = None;
        let row = self.store.write(|tx| {
            let resolved = req.plan.resolve(|name| tx.template(name).ok().flatten())?;
            let plan = Plan::try_from(&resolved)?;
            self.check_hooks(&plan)?;
            let current = tx.current()?.ok_or_else(|| {
                PlanFailure::invalid(
                    "route",
                    "no version has been issued yet: push a config first",
                )
            })?;
            let config = envelope_of(&current)?.config;
            let route = config
                .routes
                .iter()
                .find(|r| r.id == req.route)
                .ok_or_else(|| {
                    PlanFailure::invalid(
                        "route",
                        format!("no route {:?} in version {}", req.route, current.version),
                    )
                })?;
            if let Some(flag) = plan.flag()
                && !route.flags.iter().any(|f| f.name == flag)
            {
                return Err(PlanFailure::invalid(
                    "plan.flag",
                    format!("no flag {flag:?} on route {:?}", req.route),
                ));
            }
            if let Some(running) = tx.running_plans(Some(&req.route))?.first() {
                return Err(PlanFailure::Conflict(format!(
                    "plan {} is running on route {:?}: promote or abort it first",
                    running.id, req.route
                )));
            }
            let state = PlanState::start(&plan, now_ms());
            let id = tx.insert_plan(&req.route, &resolved, &state, who, &reason)?;
            tx.audit(
                who,
                "plan.start",
                &format!("plan {id} on route {}: {reason}", req.route),
            )?;
            committed = self.ready_probes(tx, id, &req.route, &plan)?;
            let said = format!(
                "plan {id} started on route {} by {who}: {reason}",
                req.route
            );
            self.begun(tx, id, &said, committed)
        })?;
        self.settle(committed);
        Ok(row)
    }

    /// In the transaction that (re)starts plan `id`: says so; the plan.
    fn begun(
        &self,
        tx: &Tx<'_>,
        id: PlanId,
        said: &str,
        version: Option<Version>,
    ) -> Result<PlanRow, PlanFailure> {
        tx.log_event(id, EventKind::Step, said, version, &self.listeners.webhooks)?;
        let row = tx
            .plan(id)?
            .ok_or_else(|| PlanFailure::NotFound(format!("no plan {id}")))?;
        queue_plan_hooks(
            tx,
            &self.listeners,
            &row,
            HookEvent::PlanStart,
            &row.actor,
            said,
        )?;
        Ok(row)
    }

    /// Whether this service has the hooks `plan` requires.
    fn check_hooks(&self, plan: &Plan) -> Result<(), PlanFailure> {
        self.listeners
            .hooks
            .check_required(plan.require_hooks())
            .map_err(|(field, message)| PlanFailure::Invalid {
                message,
                field: Some(field),
            })
    }

    /// Where the runs of the hooks plan `id` requires stand.
    fn hook_gate(
        &self,
        tx: &Tx<'_>,
        id: PlanId,
        required: &[String],
    ) -> crate::store::Result<HookGate> {
        if let Some(n) = required
            .iter()
            .find(|n| self.listeners.hooks.get(n).is_none())
        {
            return Ok(HookGate::Failed(format!(
                "{n}: this service has no such hook (rollout serve --hooks)"
            )));
        }
        let Some(runs) = tx.plan_hook_runs(id, required)? else {
            return Ok(HookGate::Failed(
                "no plan.start run of the required hooks was queued".to_owned(),
            ));
        };
        let about = |r: &crate::store::HookRunRow| {
            format!(
                "{} (run {}, {} at version {}): {}",
                r.hook,
                r.id,
                r.event,
                r.version,
                r.status.as_str()
            )
        };
        let failed = runs
            .iter()
            .find(|r| matches!(r.status, HookStatus::Failed | HookStatus::Timeout));
        if let Some(r) = failed {
            return Ok(HookGate::Failed(format!("{}: {}", about(r), r.output)));
        }
        Ok(match runs.iter().find(|r| !r.status.is_final()) {
            Some(r) => HookGate::Waiting(about(r)),
            None => HookGate::Open,
        })
    }

    /// After a plan's transaction: push what it committed, deliver what it
    /// said, and let the executor look at it now.
    fn settle(&self, committed: Option<Version>) {
        if let Some(v) = committed {
            self.fanout.committed(v);
        }
        self.events.wake();
        self.wake.notify_one();
    }

    /// A person's command to plan `id`.
    pub async fn command(
        &self,
        id: PlanId,
        who: &str,
        command: Command,
    ) -> Result<PlanRow, PlanFailure> {
        let _one = self.lock.lock().await;
        let row = self
            .store
            .plan(id)?
            .ok_or_else(|| PlanFailure::NotFound(format!("no plan {id}")))?;
        if row.state.phase.is_terminal() {
            return Err(PlanFailure::Conflict(format!(
                "plan {id} is {}: nothing to {}",
                row.state.phase.as_str(),
                command_name(&command)
            )));
        }
        let action = format!("plan.{}", command_name(&command));
        let row = self.apply_audited(
            id,
            vec![Input::Command {
                by: who.to_owned(),
                command,
            }],
            Some((who, &action)),
            false,
        )?;
        self.wake.notify_one();
        Ok(row)
    }

    /// Runs an aborted or failed plan again from its first step.
    pub async fn retry(&self, id: PlanId, who: &str) -> Result<PlanRow, PlanFailure> {
        let _one = self.lock.lock().await;
        let mut committed = None;
        let row = self.store.write(|tx| {
            let row = tx
                .plan(id)?
                .ok_or_else(|| PlanFailure::NotFound(format!("no plan {id}")))?;
            if !matches!(row.state.phase, Phase::Aborted | Phase::Failed) {
                return Err(PlanFailure::Conflict(format!(
                    "plan {id} is {}: only an aborted or failed plan can be retried",
                    row.state.phase.as_str()
                )));
            }
            if let Some(running) = tx.running_plans(Some(&row.route))?.first() {
                return Err(PlanFailure::Conflict(format!(
                    "plan {} is running on route {:?}",
                    running.id, row.route
                )));
            }
            let plan = Plan::try_from(&row.doc)?;
            self.check_hooks(&plan)?;
            tx.audit(
                who,
                "plan.retry",
                &format!("plan {id} on route {}", row.route),
            )?;
            tx.save_plan(id, row.rev, &PlanState::start(&plan, now_ms()))?;
            committed = self.ready_probes(tx, id, &row.route, &plan)?;
            self.begun(tx, id, &format!("retried by {who}"), committed)
        })?;
        self.settle(committed);
        Ok(row)
    }

    /// A firing alert names `route`: its running plan, if any, rolls back.
    pub async fn alert(&self, route: &str, alert: &str) -> Result<Option<PlanId>, PlanFailure> {
        let _one = self.lock.lock().await;
        let Some(running) = self
            .store
            .running_plans()?
            .into_iter()
            .find(|p| p.route == route)
        else {
            return Ok(None);
        };
        self.apply(running.id, vec![Input::Alert(alert.to_owned())])?;
        Ok(Some(running.id))
    }

    /// Feeds `inputs` to plan `id` in one transaction, committing the
    /// versions its actions ask for; the plan as written.
    fn apply(&self, id: PlanId, inputs: Vec<Input>) -> Result<PlanRow, PlanFailure> {
        self.apply_audited(id, inputs, None, false)
    }

    /// [`Plans::apply`] from the leader's own rounds: refused (and nothing
    /// written) unless this replica still holds the leader lease, so a
    /// leader that was frozen mid-round cannot commit a step after a
    /// takeover.
    fn step(&self, id: PlanId, inputs: Vec<Input>) -> Result<PlanRow, PlanFailure> {
        self.apply_audited(id, inputs, None, true)
    }

    /// Drops every probe sampler (and stops its probing): when this
    /// replica starts or stops leading. The next round starts fresh ones.
    pub fn forget_samplers(&self) {
        self.samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// [`Plans::apply`], with a person's action recorded in the audit log
    /// in the same transaction: (actor, action).
    fn apply_audited(
        &self,
        id: PlanId,
        inputs: Vec<Input>,
        audit: Option<(&str, &str)>,
        fenced: bool,
    ) -> Result<PlanRow, PlanFailure> {
        let now = now_ms();
        let mut committed = Vec::new();
        let write = |tx: &Tx<'_>| {
            let mut row = tx
                .plan(id)?
                .ok_or_else(|| PlanFailure::NotFound(format!("no plan {id}")))?;
            if let Some((actor, action)) = audit {
                tx.audit(actor, action, &format!("plan {id} on route {}", row.route))?;
            }
            let plan = match Plan::try_from(&row.doc) {
                Ok(plan) => plan,
                Err(e) => {
                    // A plan this build no longer accepts cannot be run, but
                    // it must not hold its route either: it ends, rolled back.
                    let why = format!("the stored plan no longer validates ({e}): rolled back");
                    let flag = row.doc.flag.clone();
                    let v = self.set_weight(tx, &mut row, flag.as_deref(), Weight::ZERO, &why)?;
                    committed.extend(v);
                    row.state.phase = Phase::Failed;
                    row.state.reason = Some(why.clone());
                    tx.log_event(id, EventKind::Fail, &why, v, &self.listeners.webhooks)?;
                    tx.save_plan(id, row.rev, &row.state)?;
                    queue_end_hooks(tx, &self.listeners, &row)?;
                    return tx
                        .plan(id)?
                        .ok_or_else(|| PlanFailure::NotFound(format!("no plan {id}")));
                }
            };
            let mut queue: VecDeque<Input> = inputs.into();
            let was_running = !row.state.phase.is_terminal();
            if was_running && !plan.require_hooks().is_empty() {
                queue.push_front(Input::Hooks(self.hook_gate(
                    tx,
                    id,
                    plan.require_hooks(),
                )?));
            }
            while let Some(input) = queue.pop_front() {
                let measured = match &input {
                    Input::Measured { check, measurement } => {
                        Some((check.clone(), measurement.clone()))
                    }
                    _ => None,
                };
                let actions = row.state.advance(&plan, now, input);
                if let Some((name, m)) = measured
                    && let Some(j) = row.state.checks.get(&name).and_then(|c| c.last.as_ref())
                {
                    tx.record_check(id, &name, j, &m)?;
                }
                let mut version = None;
                for action in actions {
                    match action {
                        Action::SetWeight { weight, reason } => {
                            let v = self.set_weight(tx, &mut row, plan.flag(), weight, &reason)?;
                            version = v.or(version);
                            committed.extend(v);
                            if row.state.phase != Phase::Failed {
                                queue.push_front(Input::Committed(v.map(Version::get)));
                            }
                        }
                        Action::Rollback { reason } => {
                            let v = self.set_weight(
                                tx,
                                &mut row,
                                plan.flag(),
                                Weight::ZERO,
                                &format!("rollback: {reason}"),
                            )?;
                            version = v.or(version);
                            committed.extend(v);
                        }
                        Action::Event { kind, message } => {
                            tx.log_event(id, kind, &message, version, &self.listeners.webhooks)?;
                        }
                    }
                }
            }
            tx.save_plan(id, row.rev, &row.state)?;
            if was_running {
                queue_end_hooks(tx, &self.listeners, &row)?;
            }
            tx.plan(id)?
                .ok_or_else(|| PlanFailure::NotFound(format!("no plan {id}")))
        };
        let row = if fenced {
            self.store.write_fenced(write)
        } else {
            self.store.write(write)
        }?;
        for v in committed {
            self.fanout.committed(v);
        }
        self.events.wake();
        Ok(row)
    }

    /// Commits the plan's weight (or flag percentage) at `weight`, unless
    /// the config has it already. A version the rules refuse fails the plan.
    fn set_weight(
        &self,
        tx: &Tx<'_>,
        row: &mut PlanRow,
        flag: Option<&str>,
        weight: Weight,
        reason: &str,
    ) -> Result<Option<Version>, PlanFailure> {
        let current = tx.current()?;
        let config = current
            .as_ref()
            .map(envelope_of)
            .transpose()?
            .map(|e| e.config);
        let percent = weight.percent();
        let have = config
            .as_ref()
            .and_then(|c| Change::target(c, &row.route, flag));
        if have == Some(percent) {
            return Ok(None);
        }
        let patch = match flag {
            Some(flag) => Patch::SetFlag {
                route: row.route.clone(),
                flag: flag.to_owned(),
                percent,
            },
            None => Patch::SetWeight {
                route: row.route.clone(),
                percent,
            },
        };
        let author = Author {
            actor: &format!("plan:{}", row.id),
            action: "plan",
            reason: format!("plan {} {reason}", row.id),
        };
        let made = commit_in(
            tx,
            &self.keys.current(),
            None,
            &author,
            &self.listeners,
            |parent| {
                let parent = parent.ok_or(Refusal::NothingToPatch)?;
                let mut doc = envelope_of(parent)?.config;
                patch.apply(&mut doc)?;
                Ok(doc)
            },
        );
        match made {
            Ok(v) => Ok(Some(v.version)),
            Err(CommitError::Refused(r)) => {
                let why = format!("could not commit its weight: {r}");
                tracing::warn!("plan {}: {why}", row.id);
                row.state.phase = Phase::Failed;
                row.state.reason = Some(why.clone());
                tx.log_event(
                    row.id,
                    EventKind::Fail,
                    &why,
                    None,
                    &self.listeners.webhooks,
                )?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// In a version's transaction: every running plan whose route it changed,
/// and that did not make it, is told. A patch of only the plan's weight
/// holds the plan; a push or rollback that changes its route, or any other
/// change to it, aborts it.
pub fn route_changed(
    tx: &Tx<'_>,
    before: Option<&ConfigDoc>,
    after: &ConfigDoc,
    version: &VersionRow,
    author: &Author<'_>,
    listeners: &Listeners,
) -> crate::store::Result<()> {
    let actor = author.actor;
    for mut row in tx.running_plans(None)? {
        if actor == format!("plan:{}", row.id) {
            continue;
        }
        let Some(change) = Change::between(before, after, &row.route, row.doc.flag.as_deref())
        else {
            continue;
        };
        let change = if author.action == "patch" {
            change
        } else {
            Change::Route
        };
        let Ok(plan) = Plan::try_from(&row.doc) else {
            continue;
        };
        let input = Input::Changed {
            by: actor.to_owned(),
            version: version.version.get(),
            change,
        };
        for action in row.state.advance(&plan, now_ms(), input) {
            if let Action::Event { kind, message } = action {
                tx.log_event(
                    row.id,
                    kind,
                    &message,
                    Some(version.version),
                    &listeners.webhooks,
                )?;
            }
        }
        tx.save_plan(row.id, row.rev, &row.state)?;
        queue_end_hooks(tx, listeners, &row)?;
    }
    Ok(())
}

/// The plan whose actor `actor` is (`plan:<id>`), if it is one.
pub fn plan_of(actor: &str) -> Option<PlanId> {
    actor.strip_prefix("plan:")?.parse().ok()
}

/// In the transaction that ended plan `row` (as it is written): the hooks
/// on its end; nothing when it has not ended.
fn queue_end_hooks(tx: &Tx<'_>, listeners: &Listeners, row: &PlanRow) -> crate::store::Result<()> {
    let event = match row.state.phase {
        Phase::Promoted => HookEvent::PlanPromote,
        Phase::Aborted => HookEvent::PlanAbort,
        Phase::Failed => HookEvent::PlanFail,
        _ => return Ok(()),
    };
    let reason = row.state.reason.as_deref().unwrap_or("promoted");
    queue_plan_hooks(
        tx,
        listeners,
        row,
        event,
        &format!("plan:{}", row.id),
        reason,
    )
}

/// In plan `row`'s transaction: queues the hooks on `event` for it, with
/// the version current then.
fn queue_plan_hooks(
    tx: &Tx<'_>,
    listeners: &Listeners,
    row: &PlanRow,
    event: HookEvent,
    actor: &str,
    reason: &str,
) -> crate::store::Result<()> {
    let version = tx.current()?.map_or(Version::NONE, |c| c.version);
    let run = NewHookRun {
        event: event.as_str(),
        version,
        plan: Some(row.id),
        route: &row.route,
        actor,
        reason,
    };
    listeners.queue(tx, event, &run)
}

/// The header override probes can use on `route`, and whether it wants
/// the token: one that takes any value, or lists the token's digest.
fn probe_header(route: &RouteDoc, digest: &str) -> Option<(String, bool)> {
    route.overrides.iter().find_map(|o| {
        let header = o.from.strip_prefix("header:")?;
        if o.token_sha256.is_empty() {
            Some((header.to_ascii_lowercase(), false))
        } else if o.token_sha256.iter().any(|d| d == digest) {
            Some((header.to_ascii_lowercase(), true))
        } else {
            None
        }
    })
}

/// Lists the probe token's digest on the route's first header override
/// that takes tokens, or adds one on [`PROBE_HEADER`].
fn add_probe_override(route: &mut RouteDoc, digest: &str) {
    let existing = route
        .overrides
        .iter_mut()
        .find(|o| o.from.starts_with("header:") && !o.token_sha256.is_empty());
    match existing {
        Some(o) => o.token_sha256.push(digest.to_owned()),
        None => route.overrides.push(OverrideDoc {
            from: format!("header:{PROBE_HEADER}"),
            token_sha256: vec![digest.to_owned()],
        }),
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Promote => "promote",
        Command::Abort => "abort",
    }
}

/// Whether `doc` is a plan core accepts once its templates are resolved
/// from the store.
pub fn check_template(name: &str, doc: &rollout_core::plan::CheckDoc) -> Result<(), PlanFailure> {
    if doc.template.is_some() {
        return Err(PlanFailure::invalid(
            "template",
            "a template cannot refer to another template",
        ));
    }
    let plan = PlanDoc {
        schema: rollout_core::plan::PLAN_SCHEMA,
        flag: None,
        steps: vec![rollout_core::plan::StepDoc::SetWeight(0.0)],
        checks: [(name.to_owned(), doc.clone())].into(),
        background: vec![name.to_owned()],
        progress_deadline: None,
        bake: None,
        dry_run: false,
        require_hooks: Vec::new(),
    };
    Plan::try_from(&plan).map(drop).map_err(|e| {
        let field = e.path.replacen(&format!("checks.{name}"), "template", 1);
        PlanFailure::Invalid {
            message: format!("{field}: {}", e.problem),
            field: Some(field),
        }
    })
}
