//! Hooks end to end: `rollout serve --hooks` (a child process) running real
//! commands and webhooks after commits and plan events, the results in
//! history, and plans that wait for the hooks they require.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Writes `doc` as the hooks file in `rig`'s scratch directory; its path.
fn hooks_file(rig: &Rig, doc: &Value) -> String {
    let path = rig.scratch.path("hooks.json");
    std::fs::write(&path, doc.to_string()).expect("hooks file");
    path.to_string_lossy().into_owned()
}

/// The hook runs of version `n`.
async fn runs_of(control: &Control, n: u64) -> Vec<Value> {
    let v = control.get(&format!("/v1/versions/{n}")).await;
    v["hooks"].as_array().cloned().unwrap_or_default()
}

/// The run of hook `hook` among `runs`.
fn run<'a>(runs: &'a [Value], hook: &str) -> &'a Value {
    runs.iter()
        .find(|r| r["hook"] == hook)
        .unwrap_or_else(|| panic!("no run of {hook} in {runs:?}"))
}

/// Polls version `n` until every hook run of it has finished.
async fn finished_runs(control: &Control, n: u64, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let runs = runs_of(control, n).await;
        let done = |r: &Value| matches!(r["status"].as_str(), Some("ok" | "failed" | "timeout"));
        if !runs.is_empty() && runs.iter().all(done) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "version {n} after {limit:?}: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_failures_and_timeouts_show_in_history_and_never_delay_a_rollback() {
    let rig = Rig::start("hooks-history").await;
    let edge = rig.edge("edge").await;
    let secret_file = rig.scratch.path("webhook.secret");
    std::fs::write(&secret_file, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    let file = hooks_file(
        &rig,
        &json!({"hooks": [
            {"name": "point", "on": ["version"],
             "command": ["sh", "-c", "echo restore_point=v$ROLLOUT_VERSION-$ROLLOUT_ROUTE by $ROLLOUT_ACTOR"]},
            {"name": "broken", "on": ["version"], "command": ["sh", "-c", "echo boom >&2; exit 3"]},
            {"name": "slow", "on": ["version"], "command": ["sleep", "60"], "timeout": "10s"},
            {"name": "nowhere", "on": ["version"], "url": "http://127.0.0.1:1/hook", "timeout": "5s"},
        ]}),
    );
    let secret = secret_file.to_string_lossy().into_owned();
    let control = Control::start_with(
        &rig.scratch.0,
        &["--hooks", &file, "--webhook-secret-file", &secret],
    )
    .await;
    control
        .cli(ADMIN, &["edges", "add", &url(&edge)])
        .await
        .ok();
    control.push_wait(&rig.config("v1.json", 10.0)).await;
    control.push_wait(&rig.config("v2.json", 50.0)).await;

    // The rollback converges while the slow hook of its version still runs:
    // hooks run after the commit, beside the fan-out, never before it.
    let rollback = control
        .cli(
            DEPLOY,
            &[
                "rollback",
                "--to",
                "1",
                "--reason",
                "bad canary",
                "--wait",
                "--timeout",
                "20s",
            ],
        )
        .await
        .ok();
    assert_eq!(held(edge.addr).await.0, 3, "the edge holds the rollback");
    let slow = run(&runs_of(&control, 3).await, "slow").clone();
    assert!(
        matches!(slow["status"].as_str(), Some("queued" | "running")),
        "the rollback did not wait for its slow hook: {slow}"
    );
    // It shows the restore point of the config it brings back.
    assert!(
        rollback
            .stdout
            .contains("restoring the config of version 1")
            && rollback
                .stdout
                .contains("hook point (version, run 1): ok: restore_point=v1-web by ci"),
        "{}",
        rollback.stdout
    );

    // Then every result lands next to its version: failures and timeouts
    // as they were, not hidden.
    let runs = finished_runs(&control, 3, Duration::from_secs(30)).await;
    assert_eq!(run(&runs, "point")["status"], "ok");
    assert_eq!(run(&runs, "point")["output"], "restore_point=v3-web by ci");
    assert_eq!(run(&runs, "broken")["status"], "failed");
    assert_eq!(run(&runs, "broken")["output"], "exit status: 3: boom");
    assert_eq!(run(&runs, "slow")["status"], "timeout");
    assert_eq!(
        run(&runs, "slow")["output"],
        "no result within 10s (stopped)"
    );
    assert_eq!(run(&runs, "nowhere")["status"], "failed");
    let said = run(&runs, "nowhere")["output"].as_str().unwrap_or_default();
    assert!(said.starts_with("POST http://127.0.0.1:1/hook:"), "{said}");
    assert!(run(&runs, "slow")["finished_at"].is_string());

    let history = control.cli(READ, &["history"]).await.ok().stdout;
    for line in [
        "hook broken (version, run 10): failed: exit status: 3: boom",
        "hook slow (version, run 11): timeout: no result within 10s (stopped)",
        "hook point (version, run 9): ok: restore_point=v3-web by ci",
    ] {
        assert!(history.contains(line), "{line:?} not in:\n{history}");
    }
    let explained = control
        .cli(
            READ,
            &[
                "explain", "--key", "alice", "--at", "1s ago", "--output", "json",
            ],
        )
        .await
        .ok()
        .json();
    let hooks = explained["hooks"]
        .as_array()
        .expect("explain shows the hooks");
    assert!(
        hooks
            .iter()
            .any(|h| h["output"] == "restore_point=v3-web by ci"),
        "{explained}"
    );
    // rollback --at T names the restore point of the config live at T.
    let v2_at = control.get("/v1/versions/2").await["issued_at"]
        .as_str()
        .expect("issued_at")
        .to_owned();
    let back = control
        .cli(
            DEPLOY,
            &["rollback", "--at", &v2_at, "--reason", "as of v2"],
        )
        .await
        .ok()
        .stdout;
    assert!(
        back.contains("restoring the config of version 2")
            && back.contains("hook point (version, run 5): ok: restore_point=v2-web by ci")
            && back.contains("hook broken (version, run 6): failed: exit status: 3: boom"),
        "{back}"
    );
    // Its runs end before the service does (no hook outlives the test).
    finished_runs(&control, 4, Duration::from_secs(30)).await;
}

/// `rollout plan start web FILE`, which must succeed; the plan's id.
async fn start_plan(control: &Control, file: &std::path::Path) -> i64 {
    let file = file.to_string_lossy();
    let args = ["plan", "start", "web", &file, "--output", "json"];
    let started = control.cli(DEPLOY, &args).await.ok().json();
    started["id"].as_i64().expect("plan id")
}

/// A plan with steps 20 % then 40 %, requiring `require`.
fn gated_plan(require: &[&str]) -> Value {
    json!({
        "schema": 1,
        "steps": [{"set_weight": 20}, {"set_weight": 40}],
        "require_hooks": require,
    })
}

async fn weight(control: &Control) -> f64 {
    control.get("/v1/current").await["config"]["routes"][0]["new_weight"]
        .as_f64()
        .expect("weight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_raises_only_after_its_required_hooks_and_a_failing_one_aborts_it() {
    let rig = Rig::start("hooks-plans").await;
    let edge = rig.edge("edge").await;
    // The gate's plan.start runs wait for `open`, its version runs for `open2`.
    let (open, open2) = (rig.scratch.path("open"), rig.scratch.path("open2"));
    let wait_for_open = format!(
        "f={}; [ \"$ROLLOUT_EVENT\" = version ] && f={}; while [ ! -e $f ]; do sleep 0.05; done; echo restore_point=rp-$ROLLOUT_RUN",
        open.display(),
        open2.display()
    );
    let file = hooks_file(
        &rig,
        &json!({"hooks": [
            {"name": "gate", "on": ["plan.start", "version"], "command": ["sh", "-c", wait_for_open], "timeout": "60s"},
            {"name": "refuses", "on": ["plan.start"], "command": ["sh", "-c", "echo no room >&2; exit 1"]},
            {"name": "ends", "on": ["plan.promote", "plan.abort"],
             "command": ["sh", "-c", "echo $ROLLOUT_EVENT of plan $ROLLOUT_PLAN on $ROLLOUT_ROUTE: $ROLLOUT_REASON"]},
            {"name": "notify-only", "on": ["plan.abort"], "command": ["true"]},
        ]}),
    );
    let control = Control::start_with(&rig.scratch.0, &["--hooks", &file]).await;
    control
        .cli(ADMIN, &["edges", "add", &url(&edge)])
        .await
        .ok();
    control.push_wait(&rig.config("v1.json", 10.0)).await;

    // A plan may only require a configured hook that runs on plan.start.
    let plan_file = rig.scratch.path("plan.json");
    for (require, want) in [
        (
            "nope",
            "plan.require_hooks[0]: no hook \"nope\" is configured",
        ),
        (
            "notify-only",
            "plan.require_hooks[0]: hook \"notify-only\" does not run on plan.start",
        ),
    ] {
        std::fs::write(&plan_file, gated_plan(&[require]).to_string()).expect("plan");
        let refused = control
            .cli(
                DEPLOY,
                &["plan", "start", "web", &plan_file.to_string_lossy()],
            )
            .await;
        assert_ne!(refused.code, 0);
        assert!(refused.stderr.contains(want), "{}", refused.stderr);
    }
    assert_eq!(control.version_count().await, 1, "nothing was written");

    // The gate holds the first raise until its plan.start run succeeded.
    std::fs::write(&plan_file, gated_plan(&["gate"]).to_string()).expect("plan");
    let id = start_plan(&control, &plan_file).await;
    let waiting = control
        .plan_until(id, Duration::from_secs(10), |p| {
            p["waiting_for_hook"]
                .as_str()
                .is_some_and(|w| w.starts_with("gate (run"))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        weight(&control).await,
        10.0,
        "no raise while the hook runs: {waiting}"
    );
    let shown = control
        .cli(READ, &["plan", "status", "web"])
        .await
        .ok()
        .stdout;
    assert!(
        shown.contains("next raise waits for hook gate (run"),
        "{shown}"
    );

    std::fs::write(&open, "").expect("open the gate");
    // The first raise, then the next waits for the run of its version.
    control
        .plan_until(id, Duration::from_secs(20), |p| {
            p["waiting_for_hook"]
                .as_str()
                .is_some_and(|w| w.contains("version at version"))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        weight(&control).await,
        20.0,
        "no second raise while its version's run runs"
    );
    std::fs::write(&open2, "").expect("open the version runs");
    let done = control
        .plan_until(id, Duration::from_secs(30), |p| p["phase"] == "promoted")
        .await;
    assert_eq!(weight(&control).await, 40.0, "{done}");
    // Each raise came after the runs before it: start, then 20 %'s version.
    let history = control.get("/v1/versions?limit=100").await;
    let plan_versions: Vec<u64> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["actor"] == format!("plan:{id}"))
        .map(|v| v["version"].as_u64().expect("n"))
        .collect();
    assert_eq!(plan_versions.len(), 2, "{history}");
    for v in &plan_versions {
        let runs = finished_runs(&control, *v, Duration::from_secs(10)).await;
        assert_eq!(run(&runs, "gate")["status"], "ok", "{runs:?}");
    }
    let last = *plan_versions.iter().max().expect("a version");
    let ends = finished_runs(&control, last, Duration::from_secs(10)).await;
    let promoted = run(&ends, "ends");
    assert_eq!(promoted["event"], "plan.promote");
    assert_eq!(
        promoted["output"],
        format!("plan.promote of plan {id} on web: promoted")
    );

    // A required hook that fails aborts the plan before any raise.
    control
        .cli(DEPLOY, &["set-weight", "web", "10", "--reason", "reset"])
        .await
        .ok();
    std::fs::write(&plan_file, gated_plan(&["refuses"]).to_string()).expect("plan");
    let id = start_plan(&control, &plan_file).await;
    let aborted = control
        .plan_until(id, Duration::from_secs(20), |p| p["phase"] == "aborted")
        .await;
    let reason = aborted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("required hook failed: refuses (run")
            && reason.contains("failed: exit status: 1: no room"),
        "{aborted}"
    );
    assert_eq!(weight(&control).await, 0.0, "rolled back, never raised");
    let history = control.get("/v1/versions?limit=100").await;
    let by_plan: Vec<&str> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["actor"] == format!("plan:{id}"))
        .filter_map(|v| v["reason"].as_str())
        .collect();
    assert!(
        by_plan.len() == 1 && by_plan[0].contains(" rollback: "),
        "its only version is its rollback: {by_plan:?}"
    );
    let current = control.get("/v1/current").await["version"]
        .as_u64()
        .expect("n");
    let runs = finished_runs(&control, current, Duration::from_secs(10)).await;
    assert_eq!(run(&runs, "notify-only")["event"], "plan.abort");
    assert_eq!(run(&runs, "ends")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_hooks_file_stops_the_service_from_starting_naming_the_field() {
    let scratch = Scratch::new("hooks-bad-file");
    let file = scratch.path("hooks.json");
    std::fs::write(
        &file,
        json!({"hooks": [{"name": "x", "on": ["deploy"], "command": ["true"]}]}).to_string(),
    )
    .expect("hooks file");
    std::fs::write(scratch.path("control.key"), secret().to_text()).expect("key");
    let out = tokio::process::Command::new(rollout_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--hooks"])
        .arg(&file)
        .arg("--key")
        .arg(scratch.path("control.key"))
        .arg("--db")
        .arg(scratch.path("control.sqlite"))
        .env("ROLLOUT_TOKENS", format!("admin ops {ADMIN}"))
        .output()
        .await
        .expect("rollout runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("hooks.json: hooks[0].on[0]: unknown event \"deploy\""),
        "{stderr}"
    );
    assert!(
        !scratch.path("control.sqlite").exists(),
        "nothing was created"
    );
}
