//! Plans end to end: `rollout canary` and `rollout plan` -> `rollout serve`
//! (a child process, real SQLite) -> edges (the built component in
//! rollout-host) -> origins that fail a chosen share of requests.
//!
//! The two canary runs are `#[ignore]`d: `scripts/soak.sh` runs them (twice
//! in CI, 20 and 50 times on demand) and prints their figures.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Two edges in front of two flaky origins, a control service, route web at 0 %.
struct Rollout {
    scratch: Scratch,
    old: FlakyOrigin,
    new: FlakyOrigin,
    edges: Vec<rollout_host::RunningEdge>,
    gates: Vec<Gate>,
    control: Control,
    /// More fields of route web.
    route: Value,
}

/// How a [`Rollout`] starts.
struct Setup<'a> {
    edges: usize,
    /// Given to every edge.
    metrics: Option<std::sync::Arc<rollout_host::Metrics>>,
    /// `rollout serve` arguments.
    serve: &'a [&'a str],
    /// Route web's first weight.
    weight: f64,
    /// More fields of route web.
    route: Value,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            edges: 2,
            metrics: None,
            serve: &[],
            weight: 0.0,
            route: json!({}),
        }
    }
}

async fn rollout(name: &str, old_fails: u64, new_fails: u64, serve: &[&str]) -> Rollout {
    let setup = Setup {
        serve,
        ..Setup::default()
    };
    rollout_with(name, old_fails, new_fails, setup).await
}

async fn rollout_with(name: &str, old_fails: u64, new_fails: u64, setup: Setup<'_>) -> Rollout {
    let scratch = Scratch::new(name);
    let old = FlakyOrigin::start("old", old_fails).await;
    let new = FlakyOrigin::start("new", new_fails).await;
    let mut edges = Vec::new();
    let mut gates = Vec::new();
    for i in 0..setup.edges {
        let (old, new, metrics) = (old.url(), new.url(), setup.metrics.clone());
        let e = edge_between(&scratch.0, &format!("edge-{i}"), &old, &new, None, metrics).await;
        gates.push(Gate::start(e.addr).await);
        edges.push(e);
    }
    let control = Control::start_with(&scratch.0, setup.serve).await;
    for g in &gates {
        control.cli(ADMIN, &["edges", "add", &g.url()]).await.ok();
    }
    let r = Rollout {
        scratch,
        old,
        new,
        edges,
        gates,
        control,
        route: setup.route,
    };
    r.control
        .push_wait(&r.config("v1.json", setup.weight))
        .await;
    r
}

impl Rollout {
    fn config(&self, name: &str, weight: f64) -> String {
        let path = self.scratch.path(name);
        let doc = config(&self.old.url(), &self.new.url(), weight, self.route.clone());
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
        path.to_string_lossy().into_owned()
    }

    fn file(&self, name: &str, doc: &Value) -> String {
        let path = self.scratch.path(name);
        std::fs::write(&path, doc.to_string()).expect("write");
        path.to_string_lossy().into_owned()
    }

    /// Route web's weight in the committed version.
    async fn weight(&self) -> f64 {
        let v = self.control.get("/v1/current").await;
        v["config"]["routes"][0]["new_weight"]
            .as_f64()
            .expect("weight")
    }

    async fn plan(&self, id: i64) -> Value {
        self.control.get(&format!("/v1/plans/{id}")).await
    }

    /// Polls plan `id` until `check` holds (or panics after `limit`).
    async fn plan_until(&self, id: i64, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        self.control.plan_until(id, limit, check).await
    }

    /// The versions `plan:<id>` committed, oldest first, as (version, weight, reason).
    async fn plan_versions(&self, id: i64) -> Vec<(u64, f64, String)> {
        self.control.plan_versions(id).await
    }

    /// `rollout canary web` with these steps, probing `/health`, waiting.
    async fn canary(&self, steps: &str, pause: &str, timeout: &str) -> Run {
        let args = [
            "canary",
            "web",
            "--steps",
            steps,
            "--pause",
            pause,
            "--probe",
            "/health",
            "--wait",
            "--timeout",
            timeout,
            "--output",
            "json",
        ];
        self.control.cli(DEPLOY, &args).await
    }

    async fn start(&self, plan: &Value, args: &[&str]) -> Run {
        let file = self.file("plan.json", plan);
        let mut all = vec!["plan", "start", "web", file.as_str(), "--output", "json"];
        all.extend(args);
        self.control.cli(DEPLOY, &all).await
    }
}

fn ms_of(rfc3339: &Value) -> i64 {
    rollout_control::time::parse_time(rfc3339.as_str().expect("time")).expect("RFC 3339")
}

/// A plan with a fast probe check (2 s intervals of 40 samples an arm).
fn quick_plan(steps: Value, probe: Value) -> Value {
    json!({
        "schema": 1,
        "steps": steps,
        "checks": {"errors": {"probe": probe, "interval": "2s", "min_samples": 40}},
        "background": ["errors"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a canary run: scripts/soak.sh runs it"]
async fn canary_a_new_arm_failing_20_percent_is_rolled_back_on_every_edge_within_the_bound() {
    let r = rollout("bad-canary", 1, 20, &[]).await;
    let run = r.canary("10,100", "5m", "2m").await;
    assert_eq!(run.code, 8, "the wait ends in a rollback: {}", run.stderr);
    let plan = run.json();
    assert_eq!(plan["phase"], "aborted", "{plan}");
    let reason = plan["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("check errors failed"), "{reason}");

    let id = plan["id"].as_i64().expect("id");
    let versions = r.plan_versions(id).await;
    let weights: Vec<f64> = versions.iter().map(|v| v.1).collect();
    assert_eq!(weights.last(), Some(&0.0), "{versions:?}");
    assert!(!weights.contains(&100.0), "never raised: {versions:?}");
    let step = versions
        .iter()
        .find(|v| v.1 == 10.0)
        .expect("the 10 % step");
    let rollback = versions.last().expect("the rollback");
    assert!(
        rollback.2.contains("rollback: check errors failed"),
        "{rollback:?}"
    );
    let ten = r.control.get(&format!("/v1/versions/{}", step.0)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let zero = loop {
        let v = r.control.get(&format!("/v1/versions/{}", rollback.0)).await;
        if v["converged_ms"].is_number() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "every edge ACKs the rollback: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pushed_ms = zero["converged_ms"].as_f64().unwrap_or_default();
    let total_s =
        ((ms_of(&zero["issued_at"]) - ms_of(&ten["issued_at"])) as f64 + pushed_ms) / 1000.0;
    for e in &r.edges {
        assert!(
            held(e.addr).await.0 >= rollback.0,
            "every edge holds the rollback"
        );
    }
    // interval 10 s × failure_limit 2 + 2 s, from the defaults.
    println!("bad canary: every edge at 0 % {total_s:.1} s after the 10 % step (bound 22 s)");
    assert!(
        total_s <= 22.0,
        "rolled back {total_s:.1} s after the 10 % step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a canary run: scripts/soak.sh runs it"]
async fn canary_equal_error_rates_on_both_arms_are_promoted() {
    let r = rollout("good-canary", 1, 1, &[]).await;
    let started = Instant::now();
    let run = r.canary("50,100", "25s", "3m").await;
    assert_eq!(run.code, 0, "promoted: {} {}", run.stdout, run.stderr);
    let plan = run.json();
    assert_eq!(plan["phase"], "promoted", "{plan}");
    assert_eq!(r.weight().await, 100.0);
    let status = r.control.converged().await;
    assert_eq!(states(&status), ["ACK", "ACK"]);
    println!(
        "good canary: promoted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollback_onto_an_old_arm_failing_worse_is_held_for_a_person() {
    let r = rollout("old-worse", 40, 20, &[]).await;
    let plan = quick_plan(
        json!([{"set_weight": 10}, {"pause": null}]),
        json!({"path": "/", "max_error_rate": 5}),
    );
    let run = r.start(&plan, &[]).await.ok();
    let id = run.json()["id"].as_i64().expect("id");
    let held = r
        .plan_until(id, Duration::from_secs(30), |p| {
            p["held"]
                .as_str()
                .is_some_and(|h| h.starts_with("rollback unsafe"))
        })
        .await;
    assert_eq!(held["phase"], "paused", "{held}");
    assert_eq!(r.weight().await, 10.0, "no automatic rollback");
    let events = r.control.get(&format!("/v1/plans/{id}/events")).await;
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "rollback_unsafe"),
        "{events}"
    );
    // A person decides.
    r.control.cli(DEPLOY, &["plan", "abort", "web"]).await.ok();
    assert_eq!(r.plan(id).await["phase"], "aborted");
    assert_eq!(r.weight().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_weight_change_pauses_a_plan_and_their_rollback_aborts_it() {
    let r = rollout("person", 0, 0, &[]).await;
    let plan =
        json!({"schema": 1, "steps": [{"set_weight": 10}, {"pause": "10m"}, {"set_weight": 100}]});
    let id = r.start(&plan, &[]).await.ok().json()["id"]
        .as_i64()
        .expect("id");
    r.plan_until(id, Duration::from_secs(10), |p| p["step"] == 2)
        .await;
    assert_eq!(r.weight().await, 10.0);

    r.control
        .cli(DEPLOY, &["set-weight", "web", "30"])
        .await
        .ok();
    let held = r.plan(id).await;
    assert_eq!(held["phase"], "paused");
    let why = held["held"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("ci set the weight to 30 % (version"),
        "{why}"
    );
    let resumed = r
        .control
        .cli(DEPLOY, &["plan", "resume", "web", "--output", "json"])
        .await
        .ok();
    assert!(resumed.json()["held"].is_null());

    let run = r
        .control
        .cli(DEPLOY, &["rollback", "--to", "1", "--output", "json"])
        .await
        .ok();
    let rolled = run.json()["version"].as_u64().expect("version");
    let aborted = r.plan(id).await;
    assert_eq!(aborted["phase"], "aborted");
    assert_eq!(
        aborted["reason"].as_str(),
        Some(format!("version {rolled} by ci changed the route").as_str())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let current = r.control.get("/v1/current").await;
    assert_eq!(
        current["version"], rolled,
        "the plan made no version after the person's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_killed_in_a_fan_out_a_pause_and_an_analysis_resumes_without_running_a_step_twice() {
    let mut r = rollout("sigkill-plan", 1, 1, &[]).await;
    let plan = json!({
        "schema": 1,
        "steps": [
            {"set_weight": 10}, {"pause": "3s"},
            {"set_weight": 20}, {"analysis": {"checks": ["errors"], "duration": "8s"}},
            {"set_weight": 100},
        ],
        "checks": {"errors": {"probe": {"path": "/"}, "interval": "2s", "min_samples": 20}},
    });
    // One edge is slow to reach: the first weight's fan-out takes 3 s.
    r.gates[1].set(3000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = r.start(&plan, &[]).await.ok().json()["id"]
        .as_i64()
        .expect("id");
    r.plan_until(id, Duration::from_secs(5), |p| p["weight"] == 10.0)
        .await;
    r.control.kill().await;
    r.gates[1].set(PASS);
    r.control.restart().await;

    // In the pause.
    r.plan_until(id, Duration::from_secs(20), |p| p["step"] == 2)
        .await;
    r.control.kill().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    r.control.restart().await;

    // In the analysis.
    r.plan_until(id, Duration::from_secs(20), |p| p["phase"] == "analysing")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.control.kill().await;
    r.control.restart().await;

    let done = r
        .plan_until(id, Duration::from_secs(60), |p| p["phase"] == "promoted")
        .await;
    assert_eq!(done["weight"], 100.0);
    let weights: Vec<f64> = r.plan_versions(id).await.iter().map(|v| v.1).collect();
    let ramp: Vec<f64> = weights.into_iter().filter(|w| *w != 0.0).collect();
    assert_eq!(
        ramp,
        [10.0, 20.0, 100.0],
        "each weight once, as one version"
    );
    for e in &r.edges {
        let current = r.control.get("/v1/current").await["version"]
            .as_u64()
            .expect("v");
        let ok = eventually(Duration::from_secs(5), || async {
            held(e.addr).await.0 == current
        })
        .await;
        assert!(ok, "every edge holds the last version");
    }
}

/// A webhook receiver that checks each event's Standard Webhooks signature.
async fn receiver(secret: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let secret: rollout_control::events::Secret = secret.parse().expect("secret");
    let keep = got.clone();
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (keep, secret) = (keep.clone(), secret.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
                if h("webhook-signature") != secret.sign(&h("webhook-id"), ts, &body) {
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                keep.lock().expect("lock").push(event);
                axum::http::StatusCode::NO_CONTENT
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_rolls_a_plan_back_at_once_and_webhooks_hear_of_it() {
    let secret = "whsec_c2VjcmV0LWZvci10ZXN0cy0wMTIzNDU2Nzg5";
    let (hook, got) = receiver(secret).await;
    let scratch_secret = std::env::temp_dir().join(format!("rollout-whsec-{}", std::process::id()));
    std::fs::write(&scratch_secret, secret).expect("secret file");
    let secret_path = scratch_secret.to_string_lossy().into_owned();
    let r = rollout(
        "alert",
        0,
        0,
        &["--webhook", &hook, "--webhook-secret-file", &secret_path],
    )
    .await;
    let plan =
        json!({"schema": 1, "steps": [{"set_weight": 25}, {"pause": "10m"}, {"set_weight": 100}]});
    let id = r.start(&plan, &[]).await.ok().json()["id"]
        .as_i64()
        .expect("id");
    r.plan_until(id, Duration::from_secs(10), |p| p["step"] == 2)
        .await;

    let alert = |route: &str| {
        json!({"version": "4", "status": "firing", "receiver": "rollout", "groupLabels": {},
               "alerts": [{"status": "firing", "labels": {"alertname": "HighErrorRate", "rollout_route": route},
                           "annotations": {}, "startsAt": "2026-11-29T10:00:00Z"}]})
    };
    let post = |token: &'static str, body: Value| {
        let url = format!("{}/v1/alerts", r.control.url);
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("api")
        }
    };
    assert_eq!(
        post(READ, alert("web")).await.status(),
        403,
        "a read token may not abort"
    );
    let other: Value = post(DEPLOY, alert("api")).await.json().await.expect("json");
    assert_eq!(other["aborted"], json!([]), "another route's alert");
    assert_eq!(r.plan(id).await["phase"], "paused");
    let reply: Value = post(DEPLOY, alert("web")).await.json().await.expect("json");
    assert_eq!(reply["aborted"], json!([id]));
    let aborted = r.plan(id).await;
    assert_eq!(aborted["phase"], "aborted");
    assert_eq!(aborted["reason"], "alert HighErrorRate is firing");
    assert_eq!(r.weight().await, 0.0);
    let status = r.control.converged().await;
    assert_eq!(states(&status), ["ACK", "ACK"]);

    let heard = eventually(Duration::from_secs(10), || async {
        got.lock()
            .expect("lock")
            .iter()
            .any(|e| e["type"] == "plan.abort")
    })
    .await;
    let events = got.lock().expect("lock").clone();
    assert!(heard, "signed abort event delivered: {events:?}");
    let abort = events
        .iter()
        .find(|e| e["type"] == "plan.abort")
        .expect("abort");
    assert_eq!(abort["data"]["plan"], id);
    assert_eq!(abort["data"]["route"], "web");
    assert!(
        abort["data"]["version"].as_u64().is_some(),
        "names the rollback version: {abort}"
    );
    let _ = std::fs::remove_file(&scratch_secret);

    // Retry runs it again from its first step.
    let retried = r
        .control
        .cli(DEPLOY, &["plan", "retry", "web", "--output", "json"])
        .await
        .ok();
    assert_eq!(retried.json()["id"], id);
    r.plan_until(id, Duration::from_secs(10), |p| {
        p["step"] == 2 && p["phase"] == "paused"
    })
    .await;
    assert_eq!(r.weight().await, 25.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_plan_ramps_the_flag_and_leaves_the_weight_alone() {
    let setup = Setup {
        edges: 1,
        weight: 30.0,
        route: json!({"flags": [{"name": "beta", "percent": 0}]}),
        ..Setup::default()
    };
    let r = rollout_with("flag-plan", 0, 0, setup).await;
    let plan =
        json!({"schema": 1, "flag": "beta", "steps": [{"set_weight": 20}, {"set_weight": 100}]});
    let run = r.start(&plan, &["--wait", "--timeout", "30s"]).await;
    let control = &r.control;
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let route = &control.get("/v1/current").await["config"]["routes"][0];
    assert_eq!(
        (
            route["new_weight"].as_f64(),
            route["flags"][0]["percent"].as_f64()
        ),
        (Some(30.0), Some(100.0))
    );
    assert_eq!(
        control.version_count().await,
        3,
        "the config, then 20 % and 100 % of the flag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_never_changes_a_weight_and_says_what_it_would_have_done() {
    let r = rollout("dry-run", 1, 30, &[]).await;
    let mut plan = quick_plan(
        json!([{"set_weight": 10}, {"pause": "8s"}, {"set_weight": 100}]),
        json!({"path": "/"}),
    );
    plan["dry_run"] = json!(true);
    let run = r.start(&plan, &["--wait", "--timeout", "1m"]).await;
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert_eq!(run.json()["phase"], "promoted");
    assert_eq!(r.weight().await, 0.0);
    let id = run.json()["id"].as_i64().expect("id");
    let weights: Vec<f64> = r.plan_versions(id).await.iter().map(|v| v.1).collect();
    assert!(
        weights.iter().all(|w| *w == 0.0),
        "only the probe override: {weights:?}"
    );
    let events = r
        .control
        .get(&format!("/v1/plans/{id}/events"))
        .await
        .to_string();
    assert!(
        events.contains("dry run, would roll back: check errors failed"),
        "{events}"
    );
    assert!(
        events.contains("dry run, would step 3/3: set weight to 100 %"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_are_refused_naming_the_field_and_nothing_is_stored() {
    let r = rollout("bad-plans", 0, 0, &[]).await;
    let cases = [
        (
            json!({"schema": 1, "steps": [{"set_weight": 150}]}),
            "plan.steps[0].set_weight: must be 0..=100",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 10}], "checks": {"e": {"template": "nope"}}, "background": ["e"]}),
            "plan.checks.e.template: no stored template \"nope\"",
        ),
        (
            json!({"schema": 1, "steps": [{"set_weight": 10}], "bogus": 1}),
            "bogus: unknown field",
        ),
        (
            json!({"schema": 1, "flag": "beta", "steps": [{"set_weight": 10}]}),
            "no flag \"beta\" on route \"web\"",
        ),
    ];
    for (plan, want) in cases {
        let run = r.start(&plan, &[]).await;
        assert_eq!(run.code, 2, "{plan}: {}", run.stderr);
        assert!(
            run.stderr.contains(want),
            "{plan}\n  got: {}\n  want: {want}",
            run.stderr
        );
    }
    let file = r.file(
        "p.json",
        &json!({"schema": 1, "steps": [{"set_weight": 10}]}),
    );
    let run = r
        .control
        .cli(DEPLOY, &["plan", "start", "api", &file])
        .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no route \"api\""), "{}", run.stderr);
    let plans = r.control.get("/v1/plans").await;
    assert_eq!(plans["plans"], json!([]), "nothing stored");
    assert_eq!(r.control.version_count().await, 1, "no version either");

    // A template is checked when stored, and then usable by name.
    let template = r.file("t.json", &json!({"probe": {"path": "/"}, "interval": "2h"}));
    let run = r
        .control
        .cli(DEPLOY, &["template", "put", "http", &template])
        .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("template.interval: must be between 1s and 1h"),
        "{}",
        run.stderr
    );
    let template = r.file(
        "t.json",
        &json!({"probe": {"path": "/"}, "interval": "2s", "min_samples": 20}),
    );
    r.control
        .cli(DEPLOY, &["template", "put", "http", &template])
        .await
        .ok();
    let plan = json!({"schema": 1, "steps": [{"set_weight": 10}],
                      "checks": {"e": {"template": "http", "failure_limit": 5}}, "background": ["e"]});
    let started = r.start(&plan, &[]).await.ok().json();
    assert_eq!(
        started["doc"]["checks"]["e"]["interval"], "2s",
        "resolved: {started}"
    );
    assert_eq!(started["doc"]["checks"]["e"]["failure_limit"], 5);
    let again = r.start(&plan, &[]).await;
    assert_eq!(
        again.code, 3,
        "one running plan per route: {}",
        again.stderr
    );
}

/// `prometheus` on PATH: `.ci/run` installs Debian's package.
fn prometheus_bin() -> std::path::PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    found.expect("prometheus is not installed: apt-get install prometheus (.ci/run does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_check_against_a_real_server_rolls_a_plan_back() {
    let metrics = std::sync::Arc::new(rollout_host::Metrics::default());
    let setup = Setup {
        edges: 1,
        metrics: Some(metrics.clone()),
        weight: 50.0,
        ..Setup::default()
    };
    let r = rollout_with("prometheus", 0, 50, setup).await;
    let scratch = &r.scratch;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let scrape = listener.local_addr().expect("addr");
    tokio::spawn(rollout_host::serve_metrics(metrics, listener));

    // A real Prometheus scraping the edge every second.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let prom_config = scratch.path("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: edge\n    static_configs:\n      - targets: ['{scrape}']\n"
        ),
    )
    .expect("config");
    let mut prom = tokio::process::Command::new(prometheus_bin())
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let prom_url = format!("http://127.0.0.1:{port}");

    let control = &r.control;

    // Traffic through the edge, half of it to a new arm failing half the time.
    let addr = r.edges[0].addr;
    let traffic = tokio::spawn(async move {
        let http = client();
        for i in 0u64.. {
            let _ = http
                .get(format!("http://{addr}/"))
                .header("x-user-id", format!("user-{i}"))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let query = r#"sum(rate(rollout_edge_requests_total{arm="new",class="5xx"}[5s])) / sum(rate(rollout_edge_requests_total{arm="new"}[5s]))"#;
    let measured = eventually(Duration::from_secs(60), || async {
        let reply = client()
            .get(format!("{prom_url}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await;
        let Ok(reply) = reply else { return false };
        let v: Value = reply.json().await.unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    assert!(
        measured,
        "prometheus scrapes the edge and answers the query"
    );

    let plan = json!({
        "schema": 1,
        "steps": [{"set_weight": 50}, {"pause": "10m"}],
        "checks": {"prom": {"prometheus": {"url": prom_url, "query": query, "condition": "< 0.05"},
                            "interval": "2s"}},
        "background": ["prom"],
    });
    let run = r.start(&plan, &["--wait", "--timeout", "1m"]).await;
    traffic.abort();
    let _ = prom.kill().await;
    assert_eq!(run.code, 8, "{} {}", run.stdout, run.stderr);
    let done = run.json();
    assert_eq!(done["phase"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("check prom failed (2 fail results): value 0."),
        "{reason}"
    );
    assert!(reason.ends_with("(must be < 0.05)"), "{reason}");
    let current = control.get("/v1/current").await;
    assert_eq!(current["config"]["routes"][0]["new_weight"], 0.0);
}
