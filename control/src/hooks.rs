//! Hooks: commands (argv, no shell) or HTTP webhooks the control service
//! runs after a version commits and when a plan starts, is promoted, is
//! aborted or fails; a database restore point per version, for one.
//!
//! A run is queued in the transaction of what caused it and run after the
//! commit by [`Hooks::run`], so a hook never delays a commit or a
//! rollback's fan-out. Its result (the command's standard output, or why
//! it failed or timed out) is appended to the store next to the version.
//! A run the service was stopped in is started again when it comes back
//! (at most [`MAX_ATTEMPTS`] times). A plan may require hooks
//! (`require_hooks`): it raises its weight only once their runs succeeded.
//!
//! The hooks file (`rollout serve --hooks FILE`) is JSON:
//!
//! ```json
//! {"hooks": [
//!   {"name": "pg-restore-point", "on": ["plan.start", "version"],
//!    "command": ["hooks/pg-restore-point.sh"], "timeout": "30s",
//!    "env": {"PGDATABASE": "shop"}},
//!   {"name": "chat", "on": ["plan.abort", "plan.fail"],
//!    "url": "https://hooks.example.com/rollout", "timeout": "5s"}
//! ]}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_api::HookStatus;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

use crate::events::{Secret, signed_post};
use crate::store::{HookRunRow, NewHookRun, Store, Tx};
use crate::time::format_ms;

/// A hook's time limit when its entry gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest time limit a hook may have.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most hooks in a file.
pub const MAX_HOOKS: usize = 32;
/// Bytes of a hook's output kept.
pub const MAX_OUTPUT_BYTES: usize = 4096;
/// Starts of one run before it counts as failed (each start after the
/// first means the service stopped while it ran).
pub const MAX_ATTEMPTS: u32 = 3;
/// Runs at once; more wait their turn, oldest first.
pub const MAX_RUNNING: usize = 16;
/// Largest hooks file read.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// What a hook runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// A version was committed (by anyone: a person, CI, a plan, a rollback).
    Version,
    /// A plan started, or was retried.
    PlanStart,
    /// A plan was promoted.
    PlanPromote,
    /// A plan was aborted (a check, an alert, a person, a hook).
    PlanAbort,
    /// A plan failed (a deadline, errors, a refused version).
    PlanFail,
}

impl HookEvent {
    /// Every event.
    pub const ALL: [HookEvent; 5] = [
        HookEvent::Version,
        HookEvent::PlanStart,
        HookEvent::PlanPromote,
        HookEvent::PlanAbort,
        HookEvent::PlanFail,
    ];

    /// Its name in hooks files, environments and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Version => "version",
            HookEvent::PlanStart => "plan.start",
            HookEvent::PlanPromote => "plan.promote",
            HookEvent::PlanAbort => "plan.abort",
            HookEvent::PlanFail => "plan.fail",
        }
    }

    fn parse(text: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// What a hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// Runs this program with these arguments.
    Command(Vec<String>),
    /// POSTs the run as JSON here.
    Http(String),
}

/// One hook, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Its name.
    pub name: String,
    /// What it runs on.
    pub on: Vec<HookEvent>,
    /// What it does.
    pub action: HookAction,
    /// Its time limit.
    pub timeout: Duration,
    /// More environment for a command.
    pub env: BTreeMap<String, String>,
}

/// The configured hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSet {
    hooks: Vec<Hook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    hooks: Vec<HookDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookDoc {
    name: String,
    on: Vec<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl HookSet {
    /// Reads and checks the hooks file at `path`. A command's program
    /// given as a relative path (`hooks/x.sh`) is found relative to the
    /// file's folder; a bare name (`psql`) on PATH.
    pub fn from_file(path: &Path) -> Result<HookSet, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(format!(
                "{shown}: {size} bytes is over the limit of {MAX_FILE_BYTES}"
            ));
        }
        let text = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        HookSet::from_json(&text, base).map_err(|e| format!("{shown}: {e}"))
    }

    /// Parses and checks a hooks file's text, with relative programs
    /// found from `base`.
    pub fn from_json(text: &[u8], base: &Path) -> Result<HookSet, String> {
        let doc: FileDoc = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if doc.hooks.len() > MAX_HOOKS {
            return Err(format!(
                "hooks: {} hooks is over the limit of {MAX_HOOKS}",
                doc.hooks.len()
            ));
        }
        let mut hooks: Vec<Hook> = Vec::new();
        for (i, h) in doc.hooks.into_iter().enumerate() {
            let at = format!("hooks[{i}]");
            let hook = check(&at, h, base)?;
            if hooks.iter().any(|o| o.name == hook.name) {
                return Err(format!("{at}.name: {:?} is used twice", hook.name));
            }
            hooks.push(hook);
        }
        Ok(HookSet { hooks })
    }

    /// The hooks.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// The hook called `name`.
    pub fn get(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// Names of the hooks that run on `event`.
    pub fn on(&self, event: HookEvent) -> Vec<&str> {
        self.hooks
            .iter()
            .filter(|h| h.on.contains(&event))
            .map(|h| h.name.as_str())
            .collect()
    }

    /// Whether a hook POSTs somewhere (its calls are then signed).
    pub fn has_urls(&self) -> bool {
        self.hooks
            .iter()
            .any(|h| matches!(h.action, HookAction::Http(_)))
    }

    /// Why a plan cannot require `names`, if it cannot: each must be a
    /// hook here that runs on `plan.start`. The field and the message.
    pub fn check_required(&self, names: &[String]) -> Result<(), (String, String)> {
        for (i, n) in names.iter().enumerate() {
            let field = format!("plan.require_hooks[{i}]");
            match self.get(n) {
                None => {
                    let known: Vec<&str> = self.hooks.iter().map(|h| h.name.as_str()).collect();
                    return Err((
                        field.clone(),
                        format!(
                            "{field}: no hook {n:?} is configured (rollout serve --hooks; configured: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                Some(h) if !h.on.contains(&HookEvent::PlanStart) => {
                    return Err((
                        field.clone(),
                        format!(
                            "{field}: hook {n:?} does not run on plan.start, so nothing could open the plan's first step"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn check(at: &str, h: HookDoc, base: &Path) -> Result<Hook, String> {
    let name_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    if h.name.is_empty() || h.name.len() > 64 || !h.name.bytes().all(name_ok) {
        return Err(format!("{at}.name: must be 1-64 of a-z 0-9 - _ ."));
    }
    if h.on.is_empty() {
        return Err(format!("{at}.on: must not be empty"));
    }
    let mut on = Vec::new();
    for (i, e) in h.on.iter().enumerate() {
        let event = HookEvent::parse(e).ok_or_else(|| {
            let all: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
            format!(
                "{at}.on[{i}]: unknown event {e:?} (one of {})",
                all.join(", ")
            )
        })?;
        if on.contains(&event) {
            return Err(format!("{at}.on[{i}]: {e:?} is listed twice"));
        }
        on.push(event);
    }
    let action = match (h.command, h.url) {
        (Some(argv), None) => {
            let Some(program) = argv.first() else {
                return Err(format!("{at}.command: must not be empty"));
            };
            if program.is_empty() || argv.iter().any(|a| a.contains('\0')) {
                return Err(format!(
                    "{at}.command: the program must be named, and no argument may hold a NUL"
                ));
            }
            let mut argv = argv.clone();
            if program.contains('/') {
                let path = base.join(program);
                if !path.is_file() {
                    return Err(format!("{at}.command[0]: {} is not a file", path.display()));
                }
                argv[0] = absolute(&path).to_string_lossy().into_owned();
            }
            HookAction::Command(argv)
        }
        (None, Some(url)) => {
            let ok =
                reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(format!("{at}.url: {url:?} is not an http(s) URL"));
            }
            if !h.env.is_empty() {
                return Err(format!("{at}.env: only a command takes an environment"));
            }
            HookAction::Http(url)
        }
        _ => return Err(format!("{at}: give exactly one of command and url")),
    };
    let timeout = match &h.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let d = humantime::parse_duration(t)
                .map_err(|_| format!("{at}.timeout: {t:?} is not a duration (e.g. 30s, 5m)"))?;
            if d < Duration::from_secs(1) || d > MAX_TIMEOUT {
                return Err(format!("{at}.timeout: must be between 1s and 1h"));
            }
            d
        }
    };
    for (k, v) in &h.env {
        let bad_key = k.is_empty() || k.contains('=') || k.contains('\0');
        if bad_key || v.contains('\0') {
            return Err(format!(
                "{at}.env.{k}: a name is not empty and holds no = or NUL; a value holds no NUL"
            ));
        }
        if k.starts_with("ROLLOUT_") {
            return Err(format!(
                "{at}.env.{k}: names starting ROLLOUT_ are set by the service"
            ));
        }
    }
    Ok(Hook {
        name: h.name,
        on,
        action,
        timeout,
        env: h.env,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Who hears of what a transaction did: webhooks (plan events) and hooks.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// Where plan events are POSTed.
    pub webhooks: Vec<String>,
    /// The hooks.
    pub hooks: Arc<HookSet>,
    /// Wakes the hook runner.
    pub wake_hooks: Arc<Notify>,
}

impl Listeners {
    /// In `tx`: queues a run of every hook on `event`.
    pub fn queue(
        &self,
        tx: &Tx<'_>,
        event: HookEvent,
        run: &NewHookRun<'_>,
    ) -> crate::store::Result<()> {
        let names = self.hooks.on(event);
        if names.is_empty() {
            return Ok(());
        }
        tx.queue_hook_runs(&names, run)?;
        // The runner reads the store under the lock this transaction
        // holds: it sees the runs once they are committed, or never.
        self.wake_hooks.notify_one();
        Ok(())
    }
}

/// The runner.
#[derive(Debug)]
pub struct Hooks {
    store: Arc<Store>,
    set: Arc<HookSet>,
    secret: Option<Secret>,
    http: reqwest::Client,
    wake: Arc<Notify>,
    /// Told when a run finishes (the plans that wait for one).
    finished: Arc<Notify>,
    running: Mutex<HashSet<i64>>,
    /// Runs start only while this says the replica leads.
    gate: std::sync::OnceLock<Arc<crate::lease::LeaseClock>>,
}

/// How a run ended.
struct Outcome {
    status: HookStatus,
    output: String,
}

impl Hooks {
    /// The runner of `listeners`' hooks; `finished` is told when a run ends.
    pub fn new(
        store: Arc<Store>,
        listeners: &Listeners,
        secret: Option<Secret>,
        finished: Arc<Notify>,
    ) -> Result<Hooks, reqwest::Error> {
        Ok(Hooks {
            store,
            set: listeners.hooks.clone(),
            secret,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            wake: listeners.wake_hooks.clone(),
            finished,
            running: Mutex::default(),
            gate: std::sync::OnceLock::new(),
        })
    }

    /// Starts runs only while `clock` says this replica leads.
    pub fn gated_by(&self, clock: Arc<crate::lease::LeaseClock>) {
        let _ = self.gate.set(clock);
    }

    /// Runs what is queued until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        // Runs below `from` have all finished.
        let mut from = 0;
        // The runs this task started: dropping it (this replica stopped
        // leading) stops them, and kills the commands they run.
        let mut started = tokio::task::JoinSet::new();
        // Whatever an earlier run of this task left marked as running was
        // stopped with it.
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        loop {
            for run in self.due(&mut from) {
                started.spawn(self.clone().run_one(run));
            }
            while started.try_join_next().is_some() {}
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The unfinished runs to start now, marked as running; moves `from`
    /// past the runs that have all finished.
    fn due(&self, from: &mut i64) -> Vec<HookRunRow> {
        // Held across the read: a run that finishes records its result
        // before it leaves the set, so the read sees it finished or the set
        // still holds it. Never started twice.
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the runs: every run up to `last` is in the read below.
        let last = self.store.last_hook_run();
        let runs = match (last, self.store.unfinished_hook_runs(*from, 256)) {
            (Ok(last), Ok(runs)) => {
                *from = runs.first().map_or(last + 1, |r| r.id);
                runs
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("reading queued hook runs: {e}");
                return Vec::new();
            }
        };
        let mut start = Vec::new();
        for run in runs {
            if running.len() >= MAX_RUNNING {
                break;
            }
            if running.insert(run.id) {
                start.push(run);
            }
        }
        start
    }

    async fn run_one(self: Arc<Self>, run: HookRunRow) {
        let attempt = run.attempts + 1;
        let outcome = if attempt > MAX_ATTEMPTS {
            Outcome {
                status: HookStatus::Failed,
                output: format!(
                    "started {} times without finishing (the service stopped while it ran)",
                    run.attempts
                ),
            }
        } else {
            // A replica that has just stopped leading leaves the run, and
            // its attempts, to the next leader.
            if self.gate.get().is_some_and(|g| !g.valid()) {
                self.forget(run.id);
                return;
            }
            match self.record(&run, attempt, HookStatus::Running, "") {
                // Recorded as running by a replica that has just stopped
                // leading: the next leader runs it.
                Ok(()) if self.gate.get().is_some_and(|g| !g.valid()) => {
                    self.forget(run.id);
                    return;
                }
                Ok(()) => self.execute(&run).await,
                Err(()) => {
                    self.forget(run.id);
                    return;
                }
            }
        };
        if outcome.status != HookStatus::Ok {
            tracing::warn!(
                "hook {} (run {}, {} at version {}): {}: {}",
                run.hook,
                run.id,
                run.event,
                run.version,
                outcome.status.as_str(),
                outcome.output
            );
        }
        let _ = self.record(
            &run,
            attempt.min(MAX_ATTEMPTS),
            outcome.status,
            &outcome.output,
        );
        self.forget(run.id);
        self.finished.notify_one();
        // A turn is free: the next queued run may start.
        self.wake.notify_one();
    }

    fn record(
        &self,
        run: &HookRunRow,
        attempt: u32,
        status: HookStatus,
        output: &str,
    ) -> Result<(), ()> {
        self.store
            .record_hook_result(run.id, attempt, status.as_str(), output)
            .map_err(|e| tracing::warn!("recording hook run {}: {e}", run.id))
    }

    fn forget(&self, id: i64) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    async fn execute(&self, run: &HookRunRow) -> Outcome {
        let Some(hook) = self.set.get(&run.hook) else {
            return Outcome {
                status: HookStatus::Failed,
                output: format!("hook {:?} is no longer configured", run.hook),
            };
        };
        let payload = payload(run);
        let limit = hook.timeout;
        match &hook.action {
            HookAction::Command(argv) => command(hook, argv, run, &payload).await,
            HookAction::Http(url) => {
                match tokio::time::timeout(limit, self.post(url, run, &payload)).await {
                    Ok(outcome) => outcome,
                    Err(_) => timed_out(limit, ""),
                }
            }
        }
    }

    async fn post(&self, url: &str, run: &HookRunRow, payload: &str) -> Outcome {
        let id = format!("hook_{}", run.id);
        let req = signed_post(
            &self.http,
            url,
            &id,
            payload.to_owned(),
            self.secret.as_ref(),
        );
        let failed = |output: String| Outcome {
            status: HookStatus::Failed,
            output,
        };
        match req.send().await {
            Ok(mut r) => {
                let status = r.status();
                let mut body = Vec::new();
                loop {
                    match r.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = (4 * MAX_OUTPUT_BYTES).saturating_sub(body.len());
                            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if room < chunk.len() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return failed(format!("reading the answer of {url}: {e}")),
                    }
                }
                let text = clip_output(&body);
                if status.is_success() {
                    Outcome {
                        status: HookStatus::Ok,
                        output: text,
                    }
                } else {
                    failed(format!("HTTP {}: {text}", status.as_u16()))
                }
            }
            Err(e) => failed(format!("POST {url}: {e}")),
        }
    }
}

/// The run as JSON: a command's standard input, a webhook's body.
fn payload(run: &HookRunRow) -> String {
    serde_json::json!({
        "hook": run.hook,
        "run": run.id,
        "event": run.event,
        "version": run.version,
        "route": run.route,
        "plan": run.plan,
        "actor": run.actor,
        "reason": run.reason,
        "queued_at": format_ms(run.queued_ms),
    })
    .to_string()
}

/// Runs a command hook: its environment is the service's, the hook's
/// `env`, and `ROLLOUT_*` naming the run; the run as JSON on its standard
/// input. Its whole process group is killed when the time limit stops it.
async fn command(hook: &Hook, argv: &[String], run: &HookRunRow, payload: &str) -> Outcome {
    let failed = |output: String| Outcome {
        status: HookStatus::Failed,
        output,
    };
    let Some((program, args)) = argv.split_first() else {
        return failed("no program".to_owned());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(&hook.env)
        .env("ROLLOUT_HOOK", &run.hook)
        .env("ROLLOUT_RUN", run.id.to_string())
        .env("ROLLOUT_EVENT", &run.event)
        .env("ROLLOUT_VERSION", run.version.to_string())
        .env("ROLLOUT_ROUTE", &run.route)
        .env(
            "ROLLOUT_PLAN",
            run.plan.map(|p| p.to_string()).unwrap_or_default(),
        )
        .env("ROLLOUT_ACTOR", &run.actor)
        .env("ROLLOUT_REASON", &run.reason)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("could not start {program}: {e}")),
    };
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    // Kills the group when this future ends (the hook's time limit, or the
    // service stopping), and any process the hook left behind.
    let _reaper = GroupKiller(group);
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its input may close it: not an error.
        let _ = stdin.write_all(payload.as_bytes()).await;
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return failed("no output pipes".to_owned());
    };
    let out = Captured::start(stdout);
    let err = Captured::start(stderr);
    let status = match tokio::time::timeout(hook.timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let said = err.take_now();
            return timed_out(hook.timeout, &said);
        }
    };
    // A process it left running may hold its output open: a moment to
    // drain, then what was read is what it said.
    let (out, err) = (out.finish().await, err.finish().await);
    match status {
        Ok(s) if s.success() => Outcome {
            status: HookStatus::Ok,
            output: clip_output(&out),
        },
        Ok(s) => {
            let err = clip_output(&err);
            let why = if err.is_empty() {
                clip_output(&out)
            } else {
                err
            };
            failed(format!("{s}: {why}").trim_end_matches(": ").to_owned())
        }
        Err(e) => failed(format!("waiting for {program}: {e}")),
    }
}

/// A run stopped at its time limit, with the end of what it said.
fn timed_out(limit: Duration, said: &str) -> Outcome {
    let mut output = format!(
        "no result within {} (stopped)",
        humantime::format_duration(limit)
    );
    let said = said.trim();
    if !said.is_empty() {
        output.push_str(": ");
        output.push_str(said);
    }
    Outcome {
        status: HookStatus::Timeout,
        output: clip_output(output.as_bytes()),
    }
}

/// One output pipe read in its own task, the first bytes kept.
struct Captured {
    kept: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Captured {
    fn start(mut r: impl AsyncRead + Unpin + Send + 'static) -> Captured {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let into = kept.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = r.read(&mut buf).await {
                let mut kept = into.lock().unwrap_or_else(|p| p.into_inner());
                let room = (4 * MAX_OUTPUT_BYTES).saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        Captured { kept, task }
    }

    /// What was read so far, as text.
    fn take_now(&self) -> String {
        self.task.abort();
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        clip_output(&kept)
    }

    /// Everything, or what came within a second.
    async fn finish(mut self) -> Vec<u8> {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct GroupKiller(Option<rustix::process::Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // The group may be gone already: nothing to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Output as stored: text, trimmed, at most [`MAX_OUTPUT_BYTES`].
fn clip_output(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= MAX_OUTPUT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_OUTPUT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<HookSet, String> {
        HookSet::from_json(v.to_string().as_bytes(), Path::new("/"))
    }

    #[test]
    fn bad_hooks_files_are_refused_naming_the_field() {
        let cases = [
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["deploy"], "command": ["true"]}]}),
                "hooks[0].on[0]: unknown event \"deploy\"",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"]}]}),
                "hooks[0]: give exactly one of command and url",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "command": []}]}),
                "hooks[0].command: must not be empty",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "command": ["true"], "timeout": "2h"}]}),
                "hooks[0].timeout: must be between 1s and 1h",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "command": ["./nope.sh"]}]}),
                "hooks[0].command[0]: /./nope.sh is not a file",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "url": "ftp://x"}]}),
                "hooks[0].url: \"ftp://x\" is not an http(s) URL",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "command": ["true"], "env": {"ROLLOUT_RUN": "1"}}]}),
                "hooks[0].env.ROLLOUT_RUN: names starting ROLLOUT_",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "command": ["true"]}, {"name": "a", "on": ["version"], "command": ["true"]}]}),
                "hooks[1].name: \"a\" is used twice",
            ),
            (
                serde_json::json!({"hooks": [{"name": "A b", "on": ["version"], "command": ["true"]}]}),
                "hooks[0].name: must be 1-64",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version", "version"], "command": ["true"]}]}),
                "hooks[0].on[1]: \"version\" is listed twice",
            ),
            (
                serde_json::json!({"hooks": [{"name": "a", "on": ["version"], "command": ["true"], "shell": true}]}),
                "unknown field `shell`",
            ),
        ];
        for (doc, want) in cases {
            let e = parse(doc.clone()).expect_err(&doc.to_string());
            assert!(e.contains(want), "{doc}: {e}");
        }
        let set = parse(serde_json::json!({"hooks": [
            {"name": "point", "on": ["plan.start", "version"], "command": ["true"]},
            {"name": "chat", "on": ["plan.abort"], "url": "https://example.com/x", "timeout": "5s"},
        ]}))
        .expect("valid");
        assert_eq!(set.on(HookEvent::Version), ["point"]);
        assert_eq!(set.on(HookEvent::PlanAbort), ["chat"]);
        assert_eq!(
            set.get("chat").map(|h| h.timeout),
            Some(Duration::from_secs(5))
        );
        assert!(set.check_required(&["point".to_owned()]).is_ok());
        let (field, e) = set
            .check_required(&["chat".to_owned()])
            .expect_err("not on start");
        assert_eq!(field, "plan.require_hooks[0]");
        assert!(e.contains("does not run on plan.start"), "{e}");
        let (_, e) = set
            .check_required(&["gone".to_owned()])
            .expect_err("unknown");
        assert!(e.contains("no hook \"gone\" is configured"), "{e}");
    }

    #[tokio::test]
    async fn a_command_gets_its_run_and_a_timeout_kills_what_it_started() {
        let dir = std::env::temp_dir().join(format!("rollout-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let hook = |argv: &[&str], timeout: u64| Hook {
            name: "h".to_owned(),
            on: vec![HookEvent::Version],
            action: HookAction::Command(argv.iter().map(|s| (*s).to_owned()).collect()),
            timeout: Duration::from_secs(timeout),
            env: [("EXTRA".to_owned(), "x".to_owned())].into(),
        };
        let run = HookRunRow {
            id: 9,
            hook: "h".to_owned(),
            event: "version".to_owned(),
            version: rollout_api::Version::new(4),
            plan: Some(2),
            route: "web".to_owned(),
            actor: "ci".to_owned(),
            reason: "ship it".to_owned(),
            queued_ms: 0,
            status: HookStatus::Queued,
            output: String::new(),
            result_ms: None,
            attempts: 0,
        };
        let argv = [
            "sh",
            "-c",
            "read -r body; echo \"$ROLLOUT_RUN $ROLLOUT_EVENT $ROLLOUT_VERSION $ROLLOUT_PLAN $ROLLOUT_ROUTE $EXTRA $ROLLOUT_REASON\"; echo \"$body\" | grep -q '\"run\":9'",
        ];
        let ok = command(
            &hook(&argv, 5),
            &argv.map(String::from),
            &run,
            &payload(&run),
        )
        .await;
        assert_eq!(
            (ok.status, ok.output.as_str()),
            (HookStatus::Ok, "9 version 4 2 web x ship it")
        );
        let argv = ["sh", "-c", "echo out; echo boom >&2; exit 3"];
        let bad = command(&hook(&argv, 5), &argv.map(String::from), &run, "").await;
        assert_eq!(bad.status, HookStatus::Failed);
        assert_eq!(bad.output, "exit status: 3: boom");
        let missing = ["/nonexistent/hook"];
        let gone = command(&hook(&missing, 5), &missing.map(String::from), &run, "").await;
        assert!(
            gone.output.starts_with("could not start /nonexistent/hook"),
            "{}",
            gone.output
        );
        // A process left running that holds the output open does not turn
        // a finished run into a timeout, nor lose what it printed.
        let argv = ["sh", "-c", "sleep 30 & echo restore_point=x"];
        let started = std::time::Instant::now();
        let left = command(&hook(&argv, 10), &argv.map(String::from), &run, "").await;
        assert_eq!(
            (left.status, left.output.as_str()),
            (HookStatus::Ok, "restore_point=x")
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // A run stopped at its limit keeps what it said on stderr.
        let argv = ["sh", "-c", "echo still waiting for the lock >&2; sleep 30"];
        let late = command(&hook(&argv, 1), &argv.map(String::from), &run, "").await;
        assert_eq!(late.status, HookStatus::Timeout);
        assert_eq!(
            late.output,
            "no result within 1s (stopped): still waiting for the lock"
        );
        // A grandchild (the shell's sleep) dies with the run at the limit.
        let marker = dir.join("survived");
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let argv = ["sh", "-c", script.as_str()];
        let limit = Duration::from_millis(300);
        let (slow, argv) = (hook(&argv, 1), argv.map(String::from));
        let work = command(&slow, &argv, &run, "");
        assert!(
            tokio::time::timeout(limit, work).await.is_err(),
            "still running"
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the process group was killed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod runner_tests {
    use super::*;
    use crate::store::NewHookRun;

    /// Runs queued while the runner polls are each run once: none skipped,
    /// none started again after it finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_run_queued_under_load_is_run_exactly_once() {
        let dir = std::env::temp_dir().join(format!("rollout-hooks-runner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir.join("s.sqlite")).expect("open"));
        let set = HookSet::from_json(
            br#"{"hooks": [{"name": "quick", "on": ["version"], "command": ["true"]}]}"#,
            Path::new("/"),
        )
        .expect("hooks");
        let listeners = Listeners {
            hooks: Arc::new(set),
            ..Listeners::default()
        };
        let hooks =
            Arc::new(Hooks::new(store.clone(), &listeners, None, Arc::default()).expect("runner"));
        let runner = tokio::spawn(hooks.clone().run());
        const RUNS: u64 = 300;
        let writer = {
            let (store, listeners) = (store.clone(), listeners.clone());
            std::thread::spawn(move || {
                for v in 1..=RUNS {
                    let run = NewHookRun {
                        event: "version",
                        version: rollout_api::Version::new(v),
                        plan: None,
                        route: "web",
                        actor: "ci",
                        reason: "load",
                    };
                    store
                        .write(|tx| listeners.queue(tx, HookEvent::Version, &run))
                        .expect("queue");
                    if v % 7 == 0 {
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
            })
        };
        writer.join().expect("writer");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let all = loop {
            let all = store
                .hook_runs_between(
                    rollout_api::Version::new(1),
                    rollout_api::Version::new(RUNS),
                )
                .expect("runs");
            let done = all
                .values()
                .flatten()
                .filter(|r| r.status.is_final())
                .count();
            if done == RUNS as usize {
                break all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{done} of {RUNS} finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        runner.abort();
        for runs in all.values() {
            for r in runs {
                assert_eq!(
                    (r.status, r.attempts),
                    (HookStatus::Ok, 1),
                    "run {} ran once",
                    r.id
                );
            }
        }
        assert_eq!(
            store.hook_result_rows().expect("rows"),
            2 * RUNS,
            "one start, one end each"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
