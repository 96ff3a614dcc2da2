//! End to end: the `rollout` CLI -> `rollout serve` (a child process with a
//! real SQLite file) -> two edges (the built component in rollout-host) ->
//! loopback origins.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use support::*;

/// Two origins, two edges, a control service, both edges registered.
struct Setup {
    rig: Rig,
    edges: Vec<rollout_host::RunningEdge>,
    control: Control,
}

async fn setup(name: &str) -> Setup {
    let rig = Rig::start(name).await;
    let mut edges = Vec::new();
    for i in 0..2 {
        edges.push(rig.edge(&format!("edge-{i}")).await);
    }
    let control = rig
        .control(&edges.iter().map(url).collect::<Vec<_>>())
        .await;
    Setup {
        rig,
        edges,
        control,
    }
}

impl Setup {
    async fn push(&self, weight: f64) -> serde_json::Value {
        let file = self.rig.config(&format!("w{weight}.json"), weight);
        self.control.push_wait(&file).await
    }

    /// A write command with the deploy token, waiting for every edge.
    async fn write_wait(&self, args: &[&str]) {
        let mut args = args.to_vec();
        args.extend(["--wait", "--timeout", "20s"]);
        self.control.cli(DEPLOY, &args).await.ok();
    }

    /// Which arm each of `keys` gets through every edge (panics if edges disagree).
    async fn arms(&self, keys: &[String]) -> Vec<String> {
        let mut out = self.arms_per_edge(keys).await;
        assert!(
            out.windows(2).all(|w| w[0] == w[1]),
            "both edges route every key alike"
        );
        out.swap_remove(0)
    }

    /// Which arm each of `keys` gets, edge by edge.
    async fn arms_per_edge(&self, keys: &[String]) -> Vec<Vec<String>> {
        let client = client();
        let mut out = Vec::new();
        for e in &self.edges {
            let arms: Vec<String> = futures_util::stream::iter(keys)
                .map(|k| {
                    let client = client.clone();
                    async move {
                        let (arm, origin) = arm_for(&client, e.addr, k).await;
                        assert_eq!(arm, origin, "the arm header names the origin that answered");
                        arm
                    }
                })
                .buffered(8)
                .collect()
                .await;
            out.push(arms);
        }
        out
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_percent_push_is_acked_by_both_edges_and_splits_traffic_through_them() {
    let s = setup("split").await;
    let reply = s.push(10.0).await;
    assert_eq!(reply["version"]["version"], 1);
    let status = s.control.status().await;
    assert_eq!(states(&status), ["ACK", "ACK"]);
    assert!(
        status["converged_ms"].as_f64().is_some(),
        "convergence time recorded: {status}"
    );

    let arms = s.arms(&keys(1000)).await;
    let on_new = arms.iter().filter(|a| *a == "new").count();
    println!("10 %: {on_new} of 1000 keys on new through both edges");
    assert!(
        (70..=130).contains(&on_new),
        "{on_new} of 1000 on new at 10 %"
    );

    // explain gives the arm the edges gave.
    for (i, arm) in arms.iter().enumerate().take(50) {
        let key = format!("user-{i}");
        let run = s
            .control
            .cli(READ, &["explain", "--key", &key, "--output", "json"])
            .await
            .ok();
        assert_eq!(run.json()["arm"].as_str(), Some(arm.as_str()), "{key}");
    }
    let audit = s.control.cli(READ, &["audit"]).await.ok();
    assert!(
        audit.stdout.contains("ops          edge add"),
        "{}",
        audit.stdout
    );
    assert!(
        audit.stdout.contains("ci           push"),
        "{}",
        audit.stdout
    );
    let history = s.control.cli(READ, &["history"]).await.ok();
    assert!(
        history.stdout.contains(" ms "),
        "convergence shown: {}",
        history.stdout
    );

    let metrics = client()
        .get(format!("{}/metrics", s.control.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("rollout_push_acks_total 2\n"), "{metrics}");
    assert!(
        metrics.contains("rollout_convergence_seconds_count 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_version_or_a_time_restores_its_config_on_every_edge() {
    let s = setup("rollback").await;
    let ks = keys(40);
    s.push(0.0).await;
    assert!(s.arms(&ks).await.iter().all(|a| a == "old"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.write_wait(&["set-weight", "web", "100"]).await;
    assert!(s.arms(&ks).await.iter().all(|a| a == "new"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = rollout_control::time::format_ms(rollout_control::store::now_ms());
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.write_wait(&["set-weight", "web", "50"]).await;

    // Back to version 1: both edges serve old within a second of the command returning.
    let run = s
        .control
        .cli(DEPLOY, &["rollback", "--to", "1", "--output", "json"])
        .await
        .ok();
    let returned = Instant::now();
    assert_eq!(
        run.json()["version"],
        4,
        "a rollback is a new, higher version"
    );
    let all_old = eventually(Duration::from_secs(1), || async {
        s.arms_per_edge(&ks)
            .await
            .iter()
            .all(|arms| arms.iter().all(|a| a == "old"))
    })
    .await;
    println!(
        "rollback --to 1: every key on old {:?} after the command returned",
        returned.elapsed()
    );
    assert!(
        all_old,
        "not every key on old within 1 s of rollback --to 1"
    );
    for e in &s.edges {
        assert_eq!(held(e.addr).await.0, 4);
    }

    // The config live at T (between versions 2 and 3) was version 2's: everyone on new.
    s.write_wait(&["rollback", "--at", &t]).await;
    let v5 = s.control.get("/v1/versions/5").await;
    assert_eq!(
        v5["config"],
        s.control.get("/v1/versions/2").await["config"]
    );
    assert!(
        v5["reason"]
            .as_str()
            .is_some_and(|r| r.contains("version 2")),
        "{v5}"
    );
    assert!(s.arms(&ks).await.iter().all(|a| a == "new"));
    let diff = s.control.cli(READ, &["diff", "2", "5"]).await.ok();
    assert!(diff.stdout.contains("same config"), "{}", diff.stdout);
    let diff = s.control.cli(READ, &["diff", "1", "2"]).await.ok();
    assert!(
        diff.stdout.contains("routes[0].new_weight: 0.0 -> 100.0"),
        "{}",
        diff.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_set_weights_never_lose_an_update_and_losers_get_409() {
    let s = setup("race").await;
    s.push(0.0).await;
    let winners = concurrent_set_weights(std::slice::from_ref(&s.control.url), 64).await;
    let history = s.control.get("/v1/versions?limit=1000").await;
    let versions: Vec<u64> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("number"))
        .collect();
    let expected: Vec<u64> = (1..=1 + winners.len() as u64).rev().collect();
    assert_eq!(versions, expected, "versions are contiguous");
    let mut parent = None;
    for n in 1..=1 + winners.len() as u64 {
        let v = s.control.get(&format!("/v1/versions/{n}")).await;
        assert_eq!(
            v["parent"].as_str(),
            parent.as_deref(),
            "version {n} chains to its parent"
        );
        parent = v["digest"].as_str().map(str::to_owned);
        if let Some(p) = winners.get(&n) {
            let weight = v["config"]["routes"][0]["new_weight"].as_f64();
            assert_eq!(
                weight,
                p.parse().ok(),
                "version {n} holds its writer's weight"
            );
        }
    }
    // History pages: newest first, `next_before` leads to the rest.
    let top = 1 + winners.len() as u64;
    let page = s
        .control
        .cli(READ, &["history", "--limit", "1", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(page["versions"][0]["version"], top);
    assert_eq!(page["next_before"], top);
    let before = top.to_string();
    let rest = s
        .control
        .cli(
            READ,
            &[
                "history", "--before", &before, "--limit", "1000", "--output", "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        rest["versions"].as_array().map(Vec::len),
        Some(top as usize - 1)
    );
    assert!(rest["next_before"].is_null());

    // Every edge ends on the last one.
    let run = s
        .control
        .cli(READ, &["status", "--wait", "--timeout", "20s"])
        .await
        .ok();
    assert!(run.stdout.contains("ACK"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_service_killed_mid_fan_out_brings_every_edge_to_the_committed_version_on_restart()
 {
    let rig = Rig::start("sigkill").await;
    let fast = rig.edge("fast").await;
    let slow = rig.edge("slow").await;
    let gate = Gate::start(slow.addr).await;
    let mut control = rig.control(&[url(&fast), gate.url()]).await;

    // Watch both edges the whole time: what they hold must always be committed.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let watcher = {
        let seen = seen.clone();
        let addrs = [fast.addr, slow.addr];
        tokio::spawn(async move {
            loop {
                for a in addrs {
                    let h = held(a).await;
                    seen.lock().expect("lock").insert(h);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    control.push_wait(&rig.config("v1.json", 10.0)).await;

    // The slow edge now takes 5 s to be reached; push, and crash the service mid fan-out.
    gate.set(5000);
    // Let the gate cut the connection the service keeps open to it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = rig.config("v2.json", 60.0);
    control.cli(DEPLOY, &["push", &v2]).await.ok();
    assert!(
        eventually(Duration::from_secs(5), || async {
            held(fast.addr).await.0 == 2
        })
        .await,
        "the fast edge got version 2"
    );
    control.kill().await;
    gate.set(DOWN);
    assert_eq!(
        held(slow.addr).await.0,
        1,
        "the crash cut the fan-out short"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held(slow.addr).await.0, 1);

    gate.set(PASS);
    control.restart().await;
    let status = control.converged().await;
    assert_eq!(status["version"], 2);
    assert_eq!(states(&status), ["ACK", "ACK"]);
    for a in [fast.addr, slow.addr] {
        assert_eq!(held(a).await.0, 2);
    }
    watcher.abort();

    let mut digests = std::collections::HashMap::new();
    for n in [1u64, 2] {
        let v = control.get(&format!("/v1/versions/{n}")).await;
        digests.insert(n, v["digest"].as_str().map(str::to_owned));
    }
    for (version, digest) in seen.lock().expect("lock").iter() {
        if *version == 0 {
            continue;
        }
        assert_eq!(
            digests.get(version),
            Some(digest),
            "an edge held version {version} ({digest:?}), which is not committed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_down_during_a_push_is_stale_then_reconciled_without_a_new_push() {
    let rig = Rig::start("stale").await;
    let up = rig.edge("up").await;
    let flaky = rig.edge("flaky").await;
    let gate = Gate::start(flaky.addr).await;
    let control = rig.control(&[url(&up), gate.url()]).await;
    control.push_wait(&rig.config("v1.json", 10.0)).await;

    gate.set(DOWN);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = rig.config("v2.json", 30.0);
    control.cli(DEPLOY, &["push", &v2]).await.ok();
    let stale = eventually(Duration::from_secs(10), || async {
        let s = control.status().await;
        states(&s) == ["ACK", "STALE"] && s["edges"][1]["error"].is_string()
    })
    .await;
    let status = control.status().await;
    assert!(stale, "the unreachable edge shows STALE: {status}");
    assert_eq!(status["edges"][1]["lag"], 1);
    let waited = control
        .cli(READ, &["status", "--wait", "--timeout", "1s"])
        .await;
    assert_eq!(
        waited.code, 5,
        "status --wait times out while an edge lags: {}",
        waited.stderr
    );

    gate.set(PASS);
    let status = control.converged().await;
    assert_eq!(
        (status["version"].as_u64(), states(&status)),
        (Some(2), vec!["ACK".to_owned(), "ACK".to_owned()])
    );
    assert_eq!(held(flaky.addr).await.0, 2);
    assert_eq!(
        control.version_count().await,
        2,
        "no new version was needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_comes_back_empty_is_given_the_committed_version_again() {
    let rig = Rig::start("drift").await;
    let (_first, gate, control) = rig.gated("first").await;

    // The edge is replaced by one with an empty store, at the same address.
    let replacement = rig.edge("replacement").await;
    assert_eq!(held(replacement.addr).await.0, 0);
    gate.retarget(replacement.addr);
    let restored = eventually(Duration::from_secs(10), || async {
        held(replacement.addr).await.0 == 1
    })
    .await;
    assert!(restored, "the service noticed and pushed version 1 again");
    assert_eq!(control.version_count().await, 1);
    assert_eq!(states(&control.status().await), ["ACK"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_shows_its_error_and_tokens_are_checked() {
    let rig = Rig::start("nack").await;
    let good = rig.edge("good").await;
    let other_key = rollout_core::SecretKey::from_seed([7; 32])
        .public_key()
        .to_string();
    let wrong_key = edge(
        &rig.scratch.0,
        "wrong-key",
        &rig.old,
        &rig.new,
        Some(other_key),
    )
    .await;
    let control = rig.control(&[url(&good), url(&wrong_key)]).await;
    let file = rig.config("v1.json", 10.0);

    let denied = control.cli("not-a-token", &["push", &file]).await;
    assert_eq!(denied.code, 4, "{}", denied.stderr);
    assert!(denied.stderr.contains("401"), "{}", denied.stderr);
    let forbidden = control.cli(READ, &["push", &file]).await;
    assert_eq!(forbidden.code, 4, "{}", forbidden.stderr);
    assert!(forbidden.stderr.contains("403"), "{}", forbidden.stderr);
    let forbidden = control
        .cli(DEPLOY, &["edges", "add", "http://127.0.0.1:1"])
        .await;
    assert!(
        forbidden.stderr.contains("403"),
        "deploy may not add edges: {}",
        forbidden.stderr
    );
    assert_eq!(control.version_count().await, 0, "nothing was written");

    let invalid = rig.config("bad.json", 10.0);
    let text = std::fs::read_to_string(&invalid)
        .expect("file")
        .replace("\"new_weight\": 10.0", "\"new_weight\": 101.0");
    std::fs::write(&invalid, text).expect("write");
    let refused = control.cli(DEPLOY, &["validate", &invalid]).await;
    assert_eq!(refused.code, 2);
    assert!(
        refused
            .stderr
            .contains("routes[0].new_weight: must be 0..=100"),
        "{}",
        refused.stderr
    );
    let refused = cli(&control.url, DEPLOY, &["set-weight", "web", "5"]).await;
    assert_eq!(
        refused.code, 2,
        "no version to patch yet: {}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("no current config"),
        "{}",
        refused.stderr
    );

    let run = control
        .cli(DEPLOY, &["push", &file, "--wait", "--timeout", "20s"])
        .await;
    assert_eq!(run.code, 6, "a NACK fails the wait: {}", run.stderr);
    let status = control.status().await;
    assert_eq!(states(&status), ["ACK", "NACK"]);
    // The edge names the key the push was signed with, and the one it trusts.
    let untrusted = format!(
        "signature key {} is not trusted by this edge (it trusts {})",
        secret().public_key().id(),
        rollout_core::SecretKey::from_seed([7; 32])
            .public_key()
            .id()
    );
    assert_eq!(status["edges"][1]["error"], untrusted.as_str());
    let text = control.cli(READ, &["status"]).await.ok();
    assert!(
        text.stdout.contains("NACK") && text.stdout.contains("is not trusted by this edge"),
        "{}",
        text.stdout
    );

    // Without the refusing edge, every edge holds the committed version.
    control
        .cli(ADMIN, &["edges", "remove", &url(&wrong_key)])
        .await
        .ok();
    let listed = control.cli(READ, &["edges", "list"]).await.ok();
    assert_eq!(listed.stdout.trim(), url(&good));
    control
        .cli(READ, &["status", "--wait", "--timeout", "10s"])
        .await
        .ok();

    // A config the service refuses names the field, over the API too.
    let bad = client()
        .post(format!("{}/v1/versions", control.url))
        .bearer_auth(DEPLOY)
        .json(&serde_json::json!({"expected_version": 1, "patch": {"op": "set_weight", "route": "web", "percent": 150}}))
        .send()
        .await
        .expect("api");
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(body["field"], "routes[0].new_weight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_push_reaches_edges_without_the_service_and_the_next_push_takes_over() {
    let mut s = setup("break-glass").await;
    s.push(0.0).await;
    s.control.kill().await;

    let file = s.rig.config("all-new.json", 100.0);
    let key = s.rig.scratch.path("control.key");
    let record = s.rig.scratch.path("break-glass.json");
    let mut args = vec![
        "push",
        &file,
        "--direct",
        "--key",
        key.to_str().expect("utf-8"),
        "--record",
        record.to_str().expect("utf-8"),
    ];
    let urls: Vec<String> = s.edges.iter().map(url).collect();
    for u in &urls {
        args.extend(["--edge", u.as_str()]);
    }
    let run = cli("http://127.0.0.1:9", READ, &args).await.ok();
    assert!(
        run.stdout.contains("break-glass version 2"),
        "{}",
        run.stdout
    );
    assert!(s.arms(&keys(20)).await.iter().all(|a| a == "new"));

    // Back up (now with a hook on every version), the service finds the
    // edges ahead of it (they refuse its version 1), reads the break-glass
    // envelope back from them and adopts it: the committed version, which
    // every edge already holds, and the history the edges saw has no fork.
    let hooks = s.rig.scratch.path("hooks.json");
    let hook = r#"{"hooks": [{"name": "point", "on": ["version"], "command": ["sh", "-c", "echo v$ROLLOUT_VERSION by $ROLLOUT_ACTOR"]}]}"#;
    std::fs::write(&hooks, hook).expect("hooks file");
    std::fs::write(
        s.rig.scratch.path("serve-args"),
        format!("--hooks\n{}\n", hooks.display()),
    )
    .expect("serve args");
    s.control.restart().await;
    let taken = eventually(Duration::from_secs(30), || async {
        s.control.get("/v1/versions/2").await["version"] == 2
    })
    .await;
    assert!(
        taken,
        "the service adopts what the edges hold: {}",
        s.control.status().await
    );
    let adopted = s.control.get("/v1/versions/2").await;
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("record")).expect("json");
    assert_eq!(
        adopted["digest"],
        rollout_core::Digest::of(recorded["body"].as_str().expect("body").as_bytes()).to_string(),
        "the envelope the operator pushed, byte for byte: {adopted}"
    );
    assert!(
        adopted["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("break-glass")),
        "{adopted}"
    );
    assert_eq!(states(&s.control.converged().await), ["ACK", "ACK"]);
    // A version like any other: its hooks ran.
    let hooked = eventually(Duration::from_secs(10), || async {
        let v = s.control.get("/v1/versions/2").await;
        v["hooks"][0]["status"] == "ok"
    })
    .await;
    let v2 = s.control.get("/v1/versions/2").await;
    assert!(hooked, "the adopted version's hook ran: {v2}");
    assert!(
        v2["hooks"][0]["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("v2 by break-glass")),
        "{v2}"
    );
    // `rollout adopt` of the record, as its message says, finds it in:
    // the same version, nothing new.
    let again = s
        .control
        .cli(
            DEPLOY,
            &["adopt", record.to_str().expect("utf-8"), "--output", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        (&again["version"], &again["digest"]),
        (&adopted["version"], &adopted["digest"]),
        "{again}"
    );
    assert_eq!(s.control.version_count().await, 2, "nothing new was stored");

    // The next write follows it.
    let run = s.control.set_weight_wait("0").await;
    assert_eq!(run.json()["version"]["version"], 3);
    assert!(s.arms(&keys(20)).await.iter().all(|a| a == "old"));
    let v3 = s.control.get("/v1/versions/3").await;
    assert_eq!(v3["parent"], adopted["digest"], "{v3}");
}

/// The newest version's JSON, through the API.
async fn version_json(s: &Setup, n: u64) -> serde_json::Value {
    s.control.get(&format!("/v1/versions/{n}")).await
}

/// Stops the service and points it at `store` (a copy made earlier): the
/// database came back without what was committed since.
async fn fail_over_to(s: &mut Setup, store: &std::path::Path) {
    s.control.terminate().await;
    std::fs::write(
        s.rig.scratch.path("store-url"),
        store.to_string_lossy().as_bytes(),
    )
    .expect("store-url file");
    s.control.restart().await;
}

/// Waits until the history holds `version` (a version's JSON) again,
/// adopted back from the edges.
async fn until_adopted(s: &Setup, version: &serde_json::Value) {
    let n = version["version"].as_u64().expect("a version");
    let adopted = eventually(Duration::from_secs(20), || async {
        version_json(s, n).await["digest"] == version["digest"]
    })
    .await;
    assert!(
        adopted,
        "version {n} is adopted back: {}",
        s.control.status().await
    );
}

/// The newest audit entry with `action` (null when none), and the whole log.
async fn audit_entry(control: &Control, action: &str) -> (serde_json::Value, serde_json::Value) {
    let audit = control.get("/v1/audit").await;
    let entry = audit["audit"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["action"] == action))
        .cloned()
        .unwrap_or_default();
    (entry, audit)
}

/// `rollout audit --verify` of the service's store, with `extra`.
async fn audit_verify(s: &Setup, extra: &[&str]) -> Run {
    let db = s.control.db().to_string_lossy().into_owned();
    let key = secret().public_key().to_string();
    let mut args = vec!["audit", "--verify", "--db", &db, "--public-key", &key];
    args.extend(extra);
    s.control.cli(READ, &args).await
}

/// A database that comes back without versions the edges already hold (an
/// asynchronous standby took over, or a backup was restored): the service
/// reads each back from the edges, signature and all, and the history goes
/// on from what the edges run. Once with the last version lost, once with
/// two lost of which the edges hold only the newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_the_database_lost_are_adopted_back_from_the_edges() {
    let mut s = setup("lost-versions").await;
    s.push(10.0).await;
    s.push(20.0).await;
    s.control.terminate().await;
    let at_v2 = store_snapshot(s.control.db(), &s.rig.scratch.0, "at_v2");
    s.control.restart().await;
    s.push(30.0).await;
    let v3 = version_json(&s, 3).await;
    assert_eq!(v3["version"], 3, "{v3}");

    // The database comes back at version 2; every edge holds version 3.
    fail_over_to(&mut s, &at_v2).await;
    until_adopted(&s, &v3).await;
    let back = version_json(&s, 3).await;
    for field in ["digest", "parent", "actor", "reason", "issued_at", "config"] {
        assert_eq!(back[field], v3[field], "{field}: {back} / {v3}");
    }
    let (entry, audit) = audit_entry(&s.control, "adopt").await;
    assert!(
        entry["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("edge http://"))
            && entry["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("version 3 ")),
        "the adoption is in the audit log, by the edge it came from: {audit}"
    );
    assert_eq!(states(&s.control.converged().await), ["ACK", "ACK"]);
    // The stored signature is the body's, as for any version, and verifies.
    let run = audit_verify(&s, &["--output", "json"]).await;
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert_eq!(run.json()["last"], 3);
    // The next commit follows it: no fork.
    s.write_wait(&["set-weight", "web", "40"]).await;
    let v4 = version_json(&s, 4).await;
    assert_eq!(v4["parent"], v3["digest"], "{v4}");

    // Two versions lost; the edges hold only the newer.
    s.control.terminate().await;
    let at_v4 = store_snapshot(s.control.db(), &s.rig.scratch.0, "at_v4");
    s.control.restart().await;
    s.push(50.0).await;
    s.push(60.0).await;
    let v6 = version_json(&s, 6).await;
    fail_over_to(&mut s, &at_v4).await;
    until_adopted(&s, &v6).await;
    assert!(
        version_json(&s, 5).await["error"].is_string(),
        "version 5 is lost: no edge holds it"
    );
    // audit --verify names the loss as one, and passes.
    let run = audit_verify(&s, &[]).await;
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("versions 5..=5 are recorded lost"),
        "{}",
        run.stdout
    );
    assert_eq!(states(&s.control.converged().await), ["ACK", "ACK"]);
    s.write_wait(&["set-weight", "web", "70"]).await;
    assert_eq!(version_json(&s, 7).await["parent"], v6["digest"]);
    assert!(s.arms(&keys(20)).await.iter().any(|a| a == "new"));
}

/// A database that comes back behind the edges, and a commit made before
/// the service has heard from them: it reuses a lost number, and what the
/// edges hold above it is not its descendant. Adopting that would silently
/// undo the commit (a rollback, say), so it is refused, in the audit log,
/// and the next commit takes the edges over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_reused_a_lost_number_is_not_undone_by_adoption() {
    let rig = Rig::start("reused-number").await;
    let (edge, gate, mut control) = rig.gated("edge").await;
    control.push_wait(&rig.config("v2.json", 20.0)).await;
    control.terminate().await;
    let at_v2 = store_snapshot(control.db(), &rig.scratch.0, "at_v2");
    control.restart().await;
    for (n, weight) in [(3, 30.0), (4, 40.0), (5, 50.0)] {
        let pushed = control
            .push_wait(&rig.config(&format!("v{n}.json"), weight))
            .await;
        assert_eq!(pushed["version"]["version"], n, "{pushed}");
    }
    let lost_v3 = control.get("/v1/versions/3").await;

    // The database comes back at version 2 while the edge cannot be
    // reached, and a commit is made: it is numbered 3 again.
    control.terminate().await;
    std::fs::write(
        rig.scratch.path("store-url"),
        at_v2.to_string_lossy().as_bytes(),
    )
    .expect("store-url file");
    gate.set(DOWN);
    control.restart().await;
    let run = control
        .cli(DEPLOY, &["set-weight", "web", "0", "--output", "json"])
        .await
        .ok();
    assert_eq!(run.json()["version"], 3, "{}", run.stdout);
    let reused = control.get("/v1/versions/3").await;
    assert_ne!(reused["digest"], lost_v3["digest"]);

    // The edge is back, holding version 5 (parent: the lost 4). It refuses
    // the new 3, and 5 is not adopted over it.
    gate.set(PASS);
    let refused = eventually(Duration::from_secs(30), || async {
        control.get("/v1/audit").await["audit"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["action"] == "adopt-refused"))
    })
    .await;
    let (entry, audit) = audit_entry(&control, "adopt-refused").await;
    assert!(refused, "the refusal is in the audit log: {audit}");
    assert!(
        entry["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("version 5 ") && d.contains("cannot descend")),
        "{entry}"
    );
    assert!(
        control.get("/v1/versions/5").await["error"].is_string(),
        "version 5 stays out of the history"
    );
    assert_eq!(held(edge.addr).await.0, 5, "the edge keeps what it holds");

    // The next commit is numbered above what the edge holds, follows the
    // reused 3, and the edge takes it.
    let run = control.set_weight_wait("100").await;
    assert_eq!(run.json()["version"]["version"], 6, "{}", run.stdout);
    let v6 = control.get("/v1/versions/6").await;
    assert_eq!(v6["parent"], reused["digest"], "{v6}");
    assert_eq!(held(edge.addr).await.0, 6);
}

/// `rollout up EXTRA` with every port 0, its state in `scratch`, and what it
/// printed up to "Ctrl-C stops everything". Its stdout is read on to the end
/// in the background, so it can still print while it stops.
async fn rollout_up(scratch: &Scratch, extra: &[&str]) -> (tokio::process::Child, String) {
    let host = rollout_bin().with_file_name("rollout-host");
    assert!(
        host.is_file(),
        "{} is missing: `cargo build -p rollout-host` (scripts/test.sh does)",
        host.display()
    );
    let mut child = tokio::process::Command::new(rollout_bin())
        .arg("up")
        .arg("--dir")
        .arg(scratch.path("state"))
        .args([
            "--control-port",
            "0",
            "--edge-ports",
            "0,0",
            "--origin-ports",
            "0,0",
        ])
        .args(extra)
        .env("ROLLOUT_COMPONENT", rollout_tests::component_path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rollout up starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut text = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
            if line.contains("Ctrl-C stops everything") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "rollout up did not get ready:\n{text}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, text)
}

/// Sends `child` SIGINT, as Ctrl-C does, and asserts it exits 0 within 15 s.
async fn ctrl_c(mut child: tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    let signal = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(signal.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("rollout up stops within 15 s of Ctrl-C")
        .expect("wait");
    assert!(status.success(), "rollout up exited {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_up_serves_through_an_edge_and_stops_cleanly_on_ctrl_c() {
    let scratch = Scratch::new("up");
    let (child, text) = rollout_up(&scratch, &[]).await;
    let edges: Vec<String> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("edge "))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    assert_eq!(edges.len(), 2, "{text}");
    let resp = client()
        .get(format!("{}/", edges[0]))
        .header("x-user-id", "alice")
        .send()
        .await
        .expect("request through the edge");
    assert_eq!(resp.status(), 200);
    let arm = rollout_tests::header(&resp, "x-rollout-arm");
    let body = resp.text().await.expect("body");
    assert!(
        body.contains(&format!("hello from the {arm} origin")),
        "{arm}: {body}"
    );

    ctrl_c(child).await;
    for e in &edges {
        let gone = client()
            .get(format!("{e}/"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(gone.is_err(), "{e} still answers after rollout up stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_up_with_two_replicas_on_postgres_survives_stopping_the_leader() {
    let scratch = Scratch::new("up-replicas");
    let db = new_pg_store();
    let (child, text) = rollout_up(&scratch, &["--replicas", "2", "--db", &db]).await;
    // `  control replica  URL   NAME (pid N)`, one line each.
    let replicas: Vec<(String, String, String)> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("control replica"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let pid = words[5].trim_end_matches(')').to_owned();
            (words[2].to_owned(), words[3].to_owned(), pid)
        })
        .collect();
    assert_eq!(replicas.len(), 2, "{text}");
    assert!(
        !text.contains("postgres://postgres@"),
        "the store URL is shown without its user: {text}"
    );
    let token =
        std::fs::read_to_string(scratch.path("state").join("deploy.token")).expect("deploy token");
    let token = token.trim();
    let status = |url: String| async move {
        cli(&url, token, &["status", "--output", "json"])
            .await
            .ok()
            .json()
    };
    let leader = status(replicas[0].0.clone()).await["leadership"]["leader"]
        .as_str()
        .expect("a leader")
        .to_owned();
    let (stopped, other) = if replicas[0].1 == leader {
        (&replicas[0], &replicas[1])
    } else {
        (&replicas[1], &replicas[0])
    };
    let signal = |name: &str, pid: &str| {
        let ok = std::process::Command::new("kill")
            .args(["-s", name, pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    signal("STOP", &stopped.2);
    // A change through the other replica reaches every edge once it leads.
    let run = cli(
        &other.0,
        token,
        &[
            "set-weight",
            "web",
            "30",
            "--wait",
            "--timeout",
            "30s",
            "--output",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(run.json()["status"]["version"], 2, "{}", run.stdout);
    let now = status(other.0.clone()).await;
    assert_eq!(now["leadership"]["leader"], other.1.as_str(), "{now}");
    signal("CONT", &stopped.2);
    ctrl_c(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_up_bad_canary_scenario_is_rolled_back_by_its_plan() {
    let scratch = Scratch::new("up-bad-canary");
    let (child, text) = rollout_up(&scratch, &["--scenario", "bad-canary"]).await;
    // `export ROLLOUT_URL=... ROLLOUT_TOKEN=...`, as a newcomer would paste it.
    let export = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name}= in:\n{text}"))
            .to_owned()
    };
    let (url, token) = (export("ROLLOUT_URL"), export("ROLLOUT_TOKEN"));

    let deadline = Instant::now() + Duration::from_secs(60);
    let plan = loop {
        let run = cli(&url, &token, &["plan", "status", "web", "--output", "json"])
            .await
            .ok();
        let plan = run.json()["plans"][0].clone();
        if plan["phase"] == "aborted" || Instant::now() >= deadline {
            break plan;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(plan["phase"], "aborted", "after 60 s: {plan}");
    let reason = plan["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("check errors failed"), "{reason}");
    assert_eq!(plan["weight"].as_f64(), Some(0.0), "rolled back: {plan}");

    ctrl_c(child).await;
}

/// Commit-to-last-ACK time, median of 20 pushes, for 2 and for 20 edges
/// (or the counts in `ROLLOUT_MEASURE_EDGES`).
/// A measurement, not a check: `cargo test --release -p rollout-control
/// --test control -- --ignored --nocapture convergence`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it on purpose"]
async fn convergence_time_for_2_and_20_edges() {
    // ROLLOUT_MEASURE_EDGES=2,20,100 measures other counts.
    let counts: Vec<usize> = std::env::var("ROLLOUT_MEASURE_EDGES")
        .unwrap_or_else(|_| "2,20".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    for n in counts {
        let rig = Rig::start("measure").await;
        let mut edges = Vec::new();
        for i in 0..n {
            edges.push(rig.edge(&format!("edge-{i}")).await);
        }
        let control = rig
            .control(&edges.iter().map(url).collect::<Vec<_>>())
            .await;
        let file = rig.config("v1.json", 1.0);
        control
            .cli(DEPLOY, &["push", &file, "--wait", "--timeout", "60s"])
            .await
            .ok();
        let mut times = Vec::new();
        for i in 0..20u64 {
            let version = set_weight(&control, i + 1, (2 + i) as f64).await;
            let mut ms = None;
            for _ in 0..1000 {
                let v = control.get(&format!("/v1/versions/{version}")).await;
                if let Some(m) = v["converged_ms"].as_f64() {
                    ms = Some(m);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            times.push(ms.expect("every edge ACKed within 5 s"));
        }
        times.sort_by(f64::total_cmp);
        let median = (times[9] + times[10]) / 2.0;
        println!(
            "{n} edges: commit to last ACK, 20 pushes: median {median:.1} ms, min {:.1} ms, max {:.1} ms",
            times[0], times[19]
        );
    }
}

#[tokio::test]
async fn keygen_writes_a_private_key_and_prints_the_edge_public_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let scratch = Scratch::new("keygen");
    let path = scratch.path("k");
    let path = path.to_str().expect("utf-8");
    let run = cli("http://127.0.0.1:9", READ, &["keygen", "--out", path])
        .await
        .ok();
    let public: rollout_core::PublicKey = run.stdout.trim().parse().expect("public key form");
    let secret: rollout_core::SecretKey = std::fs::read_to_string(path)
        .expect("key file")
        .parse()
        .expect("secret key form");
    assert_eq!(secret.public_key(), public);
    let mode = std::fs::metadata(path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = cli("http://127.0.0.1:9", READ, &["keygen", "--out", path]).await;
    assert_eq!(
        again.code, 1,
        "an existing key is not replaced without --force"
    );
}

/// Asserts that `edge` holds `version` within 200 ms of now (polled every 2 ms).
async fn assert_arrives_at_once(edge: std::net::SocketAddr, version: u64) {
    let started = Instant::now();
    while held(edge).await.0 != version {
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "no version {version} in {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(200),
        "the edge got version {version} {took:?} after it was committed"
    );
}

/// Sets route web's weight through the API as the deploy token; the new version.
async fn set_weight(control: &Control, expected: u64, percent: f64) -> u64 {
    let reply: serde_json::Value = client()
        .post(format!("{}/v1/versions", control.url))
        .bearer_auth(DEPLOY)
        .json(&serde_json::json!({"expected_version": expected,
            "patch": {"op": "set_weight", "route": "web", "percent": percent}}))
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    reply["version"].as_u64().expect("committed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_refused_a_version_gets_the_next_one_at_once_not_after_its_backoff() {
    let rig = Rig::start("nack-then-new").await;
    let ahead = rig.edge("ahead").await;
    // The edge holds version 5 from elsewhere (a break-glass push, say).
    let doc = config(&rig.old.url(), &rig.new.url(), 0.0, serde_json::json!({}));
    let (body, signature) = rollout_tests::envelope(5, doc);
    let (status, _) = rollout_tests::push(&client(), ahead.addr, body, &signature).await;
    assert_eq!(status, 200);
    let control = rig.control(&[url(&ahead)]).await;
    let v1 = rig.config("v1.json", 10.0);
    let run = control
        .cli(DEPLOY, &["push", &v1, "--wait", "--timeout", "20s"])
        .await;
    assert_eq!(run.code, 6, "the edge refuses version 1: {}", run.stderr);

    // The next version is numbered above what the edge holds, and it goes
    // out at once: the refusal's retry timer (5 s) is for version 1 only.
    let next = set_weight(&control, 1, 20.0).await;
    assert_eq!(next, 6);
    assert_arrives_at_once(ahead.addr, next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_back_from_an_outage_gets_a_new_version_at_once_not_after_its_backoff() {
    let rig = Rig::start("outage-then-new").await;
    let (flaky, gate, control) = rig.gated("flaky").await;

    // Down long enough for the retries of version 2 to back off to seconds.
    gate.set(DOWN);
    // The gate cuts open connections within 10 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    set_weight(&control, 1, 20.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(held(flaky.addr).await.0, 1);

    // Back, and a rollback is committed: it must not wait for version 2's
    // next retry.
    gate.set(PASS);
    let run = control
        .cli(DEPLOY, &["rollback", "--to", "1", "--output", "json"])
        .await
        .ok();
    let v3 = run.json()["version"].as_u64().expect("version");
    assert_arrives_at_once(flaky.addr, v3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stdin_and_reasons_are_bounded_where_they_enter() {
    let rig = Rig::start("bounds").await;
    let nowhere = "http://127.0.0.1:9";

    // An endless device, or as much on stdin, stops at core's config limit, at once.
    let started = Instant::now();
    let zero = cli(nowhere, READ, &["validate", "/dev/zero"]).await;
    let piped = cli_stdin(nowhere, READ, &["validate", "-"], &vec![b' '; 300 * 1024]).await;
    for run in [zero, piped] {
        assert_eq!(run.code, 2, "{}", run.stderr);
        let limit = "larger than the limit of 262144 bytes";
        assert!(run.stderr.contains(limit), "{}", run.stderr);
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // A FIFO nobody writes to does not hang it.
    let fifo = rig.scratch.path("config.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let started = Instant::now();
    let run = cli(nowhere, READ, &["validate", fifo.to_str().expect("utf-8")]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Stdin within the limit is read.
    let file = rig.config("v1.json", 10.0);
    let text = std::fs::read(&file).expect("config");
    let run = cli_stdin(nowhere, READ, &["validate", "-"], &text)
        .await
        .ok();
    assert!(run.stdout.contains("valid (1 routes)"), "{}", run.stdout);

    // Reasons: refused over 1024 bytes by the CLI and by the API.
    let control = rig.control(&[]).await;
    control.cli(DEPLOY, &["push", &file]).await.ok();
    let long = "r".repeat(2000);
    let run = control
        .cli(DEPLOY, &["set-weight", "web", "5", "--reason", &long])
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let limit = "over the limit of 1024 bytes";
    assert!(run.stderr.contains(limit), "{}", run.stderr);
    let api = |reason: String| {
        client()
            .post(format!("{}/v1/versions", control.url))
            .bearer_auth(DEPLOY)
            .json(&serde_json::json!({"expected_version": 1, "reason": reason,
                "patch": {"op": "set_weight", "route": "web", "percent": 5}}))
            .send()
    };
    let refused = api("r".repeat(100 * 1024)).await.expect("api");
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["field"], "reason", "{body}");
    let refused = api("r".repeat(1024 * 1024)).await.expect("api");
    assert_eq!(refused.status(), 413, "over the request size limit");
    assert_eq!(control.version_count().await, 1, "nothing was committed");

    // A reason at the limit is kept whole and shown shortened, on one line.
    let at_limit = format!("line one\n{}", "x".repeat(1024 - 9));
    assert_eq!(at_limit.len(), 1024);
    let run = control
        .cli(DEPLOY, &["set-weight", "web", "5", "--reason", &at_limit])
        .await
        .ok();
    assert!(
        run.stdout.lines().count() == 1 && run.stdout.len() < 300,
        "{}",
        run.stdout
    );
    let shown = control.cli(READ, &["history"]).await.ok();
    let line = shown.stdout.lines().nth(1).expect("newest version");
    assert!(line.contains("line one\\nxxx"), "{line}");
    assert!(
        line.contains("… (1024 bytes)") && line.len() < 300,
        "{line}"
    );
    let json = control
        .cli(READ, &["history", "--output", "json"])
        .await
        .ok();
    assert_eq!(json.json()["versions"][0]["reason"], at_limit.as_str());
}

/// The body and stored `rollout-signature` of `version`, read from the
/// control service's store as an attacker with a copy of it would.
fn stored_version(control: &Control, version: u64) -> (Vec<u8>, String) {
    let store = rollout_control::store::Store::open(control.db()).expect("control store");
    let row = store
        .version(rollout_api::Version::new(version))
        .expect("read the store")
        .expect("stored version");
    (row.body.to_vec(), row.signature)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_retire_by_signed_versions_without_redeploying_edges() {
    let s = setup("rotation").await;
    let a = secret();
    let a_id = a.public_key().id().to_string();
    // Version 1, signed with A: edges were deployed trusting A alone.
    s.push(0.0).await;
    let (_, v1_signature) = stored_version(&s.control, 1);
    assert!(
        v1_signature.contains(&format!("key={a_id}")),
        "{v1_signature}"
    );

    // Rotate: version 2, signed by A, declares A and B; B signs from then on.
    let rotated = s
        .control
        .cli(
            ADMIN,
            &[
                "keygen", "--rotate", "--reason", "yearly", "--output", "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(rotated["version"], 2, "{rotated}");
    let b_id = rotated["keys"][0]["id"]
        .as_str()
        .expect("new key id")
        .to_owned();
    assert_ne!(b_id, a_id);
    assert_eq!(rotated["keys"][0]["signs"], true, "{rotated}");
    assert_eq!(rotated["keys"][1]["id"], a_id.as_str());
    let (_, v2_signature) = stored_version(&s.control, 2);
    assert!(
        v2_signature.contains(&format!("key={a_id}")),
        "A introduces B: {v2_signature}"
    );
    s.control.converged().await;

    // Version 3, signed with B, lands on every edge.
    s.push(100.0).await;
    let (_, v3_signature) = stored_version(&s.control, 3);
    assert!(
        v3_signature.contains(&format!("key={b_id}")),
        "{v3_signature}"
    );
    assert!(s.arms(&keys(20)).await.iter().all(|a| a == "new"));

    // Retire A: version 4, signed by B, declares B alone.
    let retired = s
        .control
        .cli(ADMIN, &["keygen", "--retire", &a_id, "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(retired["version"], 4, "{retired}");
    assert_eq!(retired["keys"].as_array().map(Vec::len), Some(1));
    s.control.converged().await;
    for e in &s.edges {
        let held: serde_json::Value = client()
            .get(format!(
                "http://{}{}",
                e.addr,
                rollout_core::edge::ADMIN_PATH
            ))
            .send()
            .await
            .expect("edge answers")
            .json()
            .await
            .expect("json");
        assert_eq!(held["keys"], serde_json::json!([b_id]), "{held}");
    }

    // A push signed with A, freshly stamped, is refused with 401 naming A,
    // though A is still every edge's bootstrap key.
    let config = config(
        &s.rig.old.url(),
        &s.rig.new.url(),
        0.0,
        serde_json::json!({}),
    );
    let (body, _) = rollout_tests::envelope(50, config);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let signature = a
        .stamp(&a.sign(&body), &rollout_core::Digest::of(&body), now)
        .expect("stamps");
    let (status, reply) = put_envelope(s.edges[0].addr, body, &signature).await;
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("signature key {a_id} is not trusted"))),
        "{reply}"
    );
    assert_eq!(reply["version"], 4, "the edge keeps what it held");

    // Break glass with only A in the key file: refused before anything is sent.
    let old_key = s.rig.scratch.path("old.key");
    std::fs::write(&old_key, format!("{}\n", a.to_text())).expect("key file");
    let file = s.rig.config("bg.json", 0.0);
    let mut args = vec![
        "push",
        file.as_str(),
        "--direct",
        "--key",
        old_key.to_str().expect("utf-8"),
    ];
    let urls: Vec<String> = s.edges.iter().map(url).collect();
    for u in &urls {
        args.extend(["--edge", u.as_str()]);
    }
    let run = cli("http://127.0.0.1:9", READ, &args).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("no key in the key file is trusted"),
        "{}",
        run.stderr
    );
    assert!(s.arms(&keys(20)).await.iter().all(|a| a == "new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_envelope_replayed_to_an_edge_that_lost_its_store_is_refused() {
    let rig = Rig::start("replay").await;
    let (_first, gate, control) = rig.gated("first").await;
    // What an attacker could have captured: version 1 as stored and pushed.
    let (body, signature) = stored_version(&control, 1);

    // An edge with an empty store, not yet reached by the service.
    let fresh = rig.edge("fresh").await;
    let (status, reply) = put_envelope(fresh.addr, body.clone(), &signature).await;
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("holds no config")),
        "{reply}"
    );
    // A stamp from an hour ago (a captured push) is refused too.
    let a = secret();
    let digest = rollout_core::Digest::of(&body);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let old = a.stamp(&signature, &digest, now - 3600).expect("stamps");
    let (status, reply) = put_envelope(fresh.addr, body, &old).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(held(fresh.addr).await.0, 0, "nothing applied");

    // The service's own push, stamped when sent, is taken.
    gate.retarget(fresh.addr);
    let restored = eventually(Duration::from_secs(10), || async {
        held(fresh.addr).await.0 == 1
    })
    .await;
    assert!(restored, "the control service's stamped push applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_down_through_a_whole_rotation_is_brought_through_it() {
    let rig = Rig::start("late-rotation").await;
    let (late, gate, control) = rig.gated("late").await;
    gate.set(DOWN);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Rotate to B, sign with B, retire A, all while the edge is away.
    control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
    control
        .cli(DEPLOY, &["push", &rig.config("v3.json", 100.0)])
        .await
        .ok();
    let a_id = secret().public_key().id().to_string();
    control
        .cli(ADMIN, &["keygen", "--retire", &a_id])
        .await
        .ok();
    assert_eq!(held(late.addr).await.0, 1, "the edge still trusts A alone");

    // Back, it refuses version 4 (signed by B, a key it does not know) and
    // is taken through version 2 (signed by A, trusting B) to 4.
    gate.set(PASS);
    let status = control.converged().await;
    assert_eq!(
        (status["version"].as_u64(), states(&status)),
        (Some(4), vec!["ACK".to_owned()])
    );
    assert_eq!(held(late.addr).await.0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_an_older_rollout_is_refused_until_rollout_migrate() {
    let rig = Rig::start("migrate").await;
    let mut control = rig.control(&[]).await;
    control.push_wait(&rig.config("v1.json", 10.0)).await;
    control.kill().await;
    let db = control.db().to_owned();
    let db_arg = db.display().to_string();

    // As a rollout from before numbered schemas left it.
    store_exec(
        &db,
        "DROP TABLE hook_results; DROP TABLE hook_runs; DROP INDEX audit_by_time;
         PRAGMA user_version = 0;",
        "DROP TABLE hook_results; DROP TABLE hook_runs; DROP INDEX audit_by_time;
         UPDATE rollout_schema SET schema = 0;",
    );

    let key = rig.scratch.path("control.key").display().to_string();
    let tokens = rig.scratch.path("tokens").display().to_string();
    let serve = || async {
        tokio::time::timeout(
            Duration::from_secs(30),
            cli(
                "http://unused",
                ADMIN,
                &[
                    "serve",
                    "--db",
                    &db_arg,
                    "--key",
                    &key,
                    "--tokens",
                    &tokens,
                    "--listen",
                    "127.0.0.1:0",
                ],
            ),
        )
        .await
        .expect("serve exits at once")
    };
    let refused = serve().await;
    // The store as messages show it: a database URL without its user and password.
    let shown = rollout_control::store::Location::of(&db).to_string();
    assert_ne!(refused.code, 0, "serve must not start on an older store");
    assert!(
        refused.stderr.contains("store schema 0")
            && refused
                .stderr
                .contains(&format!("rollout migrate --db {shown}")),
        "{}",
        refused.stderr
    );

    let migrated = cli(
        "http://unused",
        ADMIN,
        &["migrate", "--db", &db_arg, "--output", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(migrated["from"], 0);
    assert_eq!(migrated["to"], rollout_control::store::SCHEMA_VERSION);
    let again = cli("http://unused", ADMIN, &["migrate", "--db", &db_arg])
        .await
        .ok();
    assert!(
        again.stdout.contains(&format!(
            "already at store schema {}",
            rollout_control::store::SCHEMA_VERSION
        )),
        "{}",
        again.stdout
    );

    control.restart().await;
    let history = control
        .cli(READ, &["history", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        history.to_string().matches("\"version\":1").count(),
        1,
        "the history survived the migration: {history}"
    );
    control.kill().await;

    // As a newer rollout would leave it.
    store_exec(
        &db,
        "PRAGMA user_version = 99;",
        "UPDATE rollout_schema SET schema = 99;",
    );
    let newer = serve().await;
    assert_ne!(newer.code, 0);
    assert!(newer.stderr.contains("newer rollout"), "{}", newer.stderr);
    let down = cli("http://unused", ADMIN, &["migrate", "--db", &db_arg]).await;
    assert_ne!(down.code, 0, "never migrated down");
    assert!(
        down.stderr.contains("never migrated down"),
        "{}",
        down.stderr
    );
}
