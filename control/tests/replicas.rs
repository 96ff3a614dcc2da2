//! Replicas of the control service on one PostgreSQL store (a real server,
//! started by this test binary on loopback): concurrent writes through two
//! replicas never lose an update or number two versions alike; the leader's
//! work moves to another replica when the leader is killed (SIGKILL) or
//! frozen (SIGSTOP) in the middle of a fan-out; and a frozen leader that
//! wakes up pushes nothing and writes nothing.
//!
//! `ROLLOUT_FAILOVER_ROUNDS` sets how many times each failover is done
//! (3 here; scripts/failover.sh runs 20). Takeover times are printed, not
//! asserted: BENCHMARKS.md quotes them.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// Lease time to live the replicas run with (every service the test
/// support starts has `--lease-ttl 1s`).
const TTL: &str = "1s";

/// How many failovers of each kind a test does.
fn rounds() -> usize {
    std::env::var("ROLLOUT_FAILOVER_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

/// Replica `name` of a service whose store is `store`, with its files in
/// a directory of its own under `scratch`.
async fn replica(scratch: &Scratch, store: &Path, name: &str) -> Control {
    let dir = scratch.path(name);
    std::fs::create_dir_all(&dir).expect("replica dir");
    std::fs::write(dir.join("store-url"), store.to_string_lossy().as_bytes()).expect("store-url");
    Control::start_with(&dir, &["--replica-id", name]).await
}

/// Two replicas on a new PostgreSQL database.
async fn pair(scratch: &Scratch) -> (Control, Control) {
    let store = std::path::PathBuf::from(new_pg_store());
    let a = replica(scratch, &store, "a").await;
    let b = replica(scratch, &store, "b").await;
    (a, b)
}

/// The replica the lease names, as `asked` reads it (`None`: none holds it).
async fn leader_seen_by(asked: &Control) -> Option<String> {
    let status = asked.status().await;
    status["leadership"]["leader"].as_str().map(str::to_owned)
}

/// Waits until `asked` sees a leader; its name.
async fn a_leader(asked: &Control) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(name) = leader_seen_by(asked).await {
            return name;
        }
        assert!(Instant::now() < deadline, "no replica leads after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sample of a counter or gauge from `/metrics`.
async fn metric(control: &Control, series: &str) -> f64 {
    let text = client()
        .get(format!("{}/metrics", control.url))
        .bearer_auth(READ)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The version numbers in the history (newest first), through `control`.
async fn numbers(control: &Control) -> Vec<u64> {
    let history = control.get("/v1/versions?limit=1000").await;
    history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("number"))
        .collect()
}

/// Asserts the history is 1..=n, each version chained to the one before.
async fn one_chain(control: &Control) -> u64 {
    let numbers = numbers(control).await;
    let top = numbers.first().copied().unwrap_or(0);
    let expected: Vec<u64> = (1..=top).rev().collect();
    assert_eq!(numbers, expected, "one version per number, none missing");
    let mut parent: Option<String> = None;
    for n in 1..=top {
        let v = control.get(&format!("/v1/versions/{n}")).await;
        assert_eq!(
            v["parent"].as_str(),
            parent.as_deref(),
            "version {n}'s parent"
        );
        parent = v["digest"].as_str().map(str::to_owned);
    }
    top
}

/// Waits until every edge holds version `v`.
async fn all_hold(edges: &[&rollout_host::RunningEdge], v: u64, limit: Duration) -> bool {
    eventually(limit, || async {
        for e in edges {
            if held(e.addr).await.0 != v {
                return false;
            }
        }
        true
    })
    .await
}

/// p50 and p99 of `ms` (nearest rank).
fn percentiles(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    (rank(0.50), rank(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_take_64_concurrent_writes_without_a_lost_update_or_a_doubled_number() {
    let rig = Rig::start("replicas-race").await;
    let (a, b) = pair(&rig.scratch).await;
    a.cli(DEPLOY, &["push", &rig.config("v1.json", 0.0)])
        .await
        .ok();
    let winners = concurrent_set_weights(&[a.url.clone(), b.url.clone()], 64).await;
    // Both replicas read the same history: 1..=n, one chain.
    let top = one_chain(&a).await;
    assert_eq!(top, 1 + winners.len() as u64);
    assert_eq!(numbers(&b).await, numbers(&a).await);
    for (n, percent) in &winners {
        let v = b.get(&format!("/v1/versions/{n}")).await;
        assert_eq!(
            v["config"]["routes"][0]["new_weight"].as_f64(),
            percent.parse().ok(),
            "version {n} holds its writer's weight"
        );
    }
    // Exactly one of them leads, and both say which.
    let leader = a_leader(&a).await;
    assert_eq!(leader_seen_by(&b).await.as_deref(), Some(leader.as_str()));
    let a_leads = metric(&a, "rollout_leader{replica=\"a\"}").await;
    let b_leads = metric(&b, "rollout_leader{replica=\"b\"}").await;
    assert_eq!(a_leads + b_leads, 1.0, "one replica leads");
}

/// Edges behind gates, registered through `control`, holding version 1.
async fn fleet(
    rig: &Rig,
    control: &Control,
    n: usize,
) -> (Vec<rollout_host::RunningEdge>, Vec<Gate>) {
    let mut edges = Vec::new();
    let mut gates = Vec::new();
    for i in 0..n {
        let edge = rig.edge(&format!("e{i}")).await;
        let gate = Gate::start(edge.addr).await;
        control
            .cli(ADMIN, &["edges", "add", &gate.url()])
            .await
            .ok();
        edges.push(edge);
        gates.push(gate);
    }
    control.push_wait(&rig.config("v1.json", 1.0)).await;
    (edges, gates)
}

/// Every new connection to an edge is held 900 ms from now (open ones are
/// cut), so the next fan-out sits in the relays when the leader goes.
fn hold_pushes(gates: &[Gate]) {
    for g in gates {
        g.set(900);
    }
}

/// Drops, undelivered, every push the relays hold (the signalled leader's
/// fan-out), then lets connections through again. Whether every edge of
/// `fleet` was still below `version` when the relays reopened: then only
/// another replica can bring them to it.
async fn cut_held(gates: &[Gate], fleet: &[&rollout_host::RunningEdge], version: u64) -> bool {
    for g in gates {
        g.set(DOWN);
    }
    // Past every held connection's 900 ms: each finds the relay down.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut lagging = true;
    for e in fleet {
        lagging &= held(e.addr).await.0 < version;
    }
    for g in gates {
        g.set(PASS);
    }
    lagging
}

/// How the leader goes in a failover round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Kill,
    Stop,
}

/// One failover in the middle of a fan-out: a version committed through
/// `survivor` at `weight`, `leader` signalled while its pushes of it sit
/// in the relays, those pushes dropped. Asserts that every edge still
/// lagged, that another replica leads, and that every edge then holds the
/// version. (the new leader, the version, the takeover time in ms).
async fn fail_over_mid_fan_out(
    leader: &mut Control,
    survivor: &Control,
    name: &str,
    signal: Signal,
    weight: &str,
    gates: &[Gate],
    fleet: &[&rollout_host::RunningEdge],
) -> (String, u64, f64) {
    hold_pushes(gates);
    let version = set_weight(survivor, weight).await;
    // The leader takes it up within a reconcile round (200 ms); its
    // pushes then sit in the relays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let token = |status: serde_json::Value| status["leadership"]["token"].as_i64().expect("token");
    let before = token(survivor.status().await);
    match signal {
        Signal::Kill => leader.kill().await,
        Signal::Stop => leader.signal("STOP"),
    }
    let signalled = Instant::now();
    let ((next, took), lagging) = tokio::join!(
        async {
            let next = a_leader_other_than(survivor, name).await;
            (next, signalled.elapsed().as_secs_f64() * 1000.0)
        },
        cut_held(gates, fleet, version)
    );
    assert!(
        token(survivor.status().await) > before,
        "the new leader holds a higher lease token"
    );
    assert!(
        lagging,
        "an edge got version {version} from the signalled leader"
    );
    assert!(
        all_hold(fleet, version, Duration::from_secs(20)).await,
        "every edge holds version {version} after the takeover: {}",
        survivor.status().await
    );
    (next, version, took)
}

/// `set-weight web WEIGHT` through `control`, which must commit: the version.
async fn set_weight(control: &Control, weight: &str) -> u64 {
    let args = ["set-weight", "web", weight, "--output", "json"];
    let run = control.cli(DEPLOY, &args).await.ok();
    run.json()["version"].as_u64().expect("version")
}

/// Which of `a`, `b` is named `name`.
fn by_name<'a>(
    a: &'a mut Control,
    b: &'a mut Control,
    name: &str,
) -> (&'a mut Control, &'a mut Control) {
    if name == "a" { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_s_fan_out_is_finished_by_another_replica() {
    let rig = Rig::start("replicas-kill").await;
    let (mut a, mut b) = pair(&rig.scratch).await;
    let (edges, gates) = fleet(&rig, &a, 3).await;
    let fleet: Vec<&rollout_host::RunningEdge> = edges.iter().collect();
    let mut takeovers = Vec::new();
    for round in 0..rounds() {
        let name = a_leader(&a).await;
        let (leader, survivor) = by_name(&mut a, &mut b, &name);
        let weight = format!("{}", 10 + round);
        let (_, _, took) = fail_over_mid_fan_out(
            leader,
            survivor,
            &name,
            Signal::Kill,
            &weight,
            &gates,
            &fleet,
        )
        .await;
        takeovers.push(took);
        // The killed replica comes back as a follower.
        leader.restart().await;
    }
    let top = one_chain(&a).await;
    assert_eq!(numbers(&b).await, numbers(&a).await);
    assert!(all_hold(&fleet, top, Duration::from_secs(20)).await);
    let (p50, p99) = percentiles(&mut takeovers);
    println!(
        "takeover after SIGKILL of the leader ({} rounds, lease {TTL}): p50 {p50:.0} ms, p99 {p99:.0} ms",
        takeovers.len()
    );
}

/// Waits until `asked` sees a leader other than `old`; its name.
async fn a_leader_other_than(asked: &Control, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(name) = leader_seen_by(asked).await.filter(|n| n != old) {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "no other replica leads after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_pushes_nothing_when_it_wakes() {
    let rig = Rig::start("replicas-stop").await;
    let (mut a, mut b) = pair(&rig.scratch).await;
    let (edges, gates) = fleet(&rig, &a, 3).await;
    let fleet: Vec<&rollout_host::RunningEdge> = edges.iter().collect();
    let mut takeovers = Vec::new();
    for round in 0..rounds() {
        let name = a_leader(&a).await;
        let (leader, survivor) = by_name(&mut a, &mut b, &name);
        let weight = format!("{}", 20 + round);
        let (next, _, took) = fail_over_mid_fan_out(
            leader,
            survivor,
            &name,
            Signal::Stop,
            &weight,
            &gates,
            &fleet,
        )
        .await;
        takeovers.push(took);
        // The new leader moves on while the old one sleeps.
        let newer = set_weight(survivor, &format!("{}.5", 20 + round)).await;
        assert!(all_hold(&fleet, newer, Duration::from_secs(20)).await);

        // It wakes, and knows at once that it no longer leads.
        leader.signal("CONT");
        let woke = leader.status().await;
        assert_eq!(
            woke["leadership"]["leading"], false,
            "round {round}: the woken replica acts as the leader: {woke}"
        );
        assert_eq!(leader_seen_by(leader).await.as_deref(), Some(next.as_str()));
        // Pushes it sent before it froze may still be counted as their
        // answers come in; past the push timeout the count stands still.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let settled = metric(leader, "rollout_pushes_total").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            metric(leader, "rollout_pushes_total").await,
            settled,
            "round {round}: the woken replica kept pushing"
        );

        // Frozen with nothing in flight (every edge holds what it pushed),
        // a leader that wakes after a takeover and a new commit must not
        // send one push: its count does not move at all.
        let quiet = survivor;
        // Every ACK of `newer` counted: its convergence is recorded after.
        let counted = eventually(Duration::from_secs(10), || async {
            let s = quiet.status().await;
            s["version"] == newer && !s["converged_ms"].is_null()
        })
        .await;
        assert!(counted, "round {round}: version {newer} converged");
        let before = metric(quiet, "rollout_pushes_total").await;
        quiet.signal("STOP");
        a_leader_other_than(leader, &next).await;
        let latest = set_weight(leader, &format!("{}.25", 20 + round)).await;
        assert!(all_hold(&fleet, latest, Duration::from_secs(20)).await);
        quiet.signal("CONT");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            metric(quiet, "rollout_pushes_total").await,
            before,
            "round {round}: a leader that woke after a takeover sent pushes"
        );
        assert_eq!(quiet.status().await["leadership"]["leading"], false);
    }
    one_chain(&a).await;
    let (p50, p99) = percentiles(&mut takeovers);
    println!(
        "takeover after SIGSTOP of the leader ({} rounds, lease {TTL}): p50 {p50:.0} ms, p99 {p99:.0} ms",
        takeovers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_leader_dies_or_freezes_in_a_pause_resumes_on_another_replica() {
    let rig = Rig::start("replicas-plan").await;
    let (mut a, mut b) = pair(&rig.scratch).await;
    let (edges, _gates) = fleet(&rig, &a, 2).await;
    let fleet: Vec<&rollout_host::RunningEdge> = edges.iter().collect();
    let plan = serde_json::json!({
        "schema": 1,
        "steps": [{"set_weight": 10}, {"pause": "2s"}, {"set_weight": 30}, {"pause": "1s"}, {"set_weight": 100}],
    });
    let file = rig.scratch.path("plan.json");
    std::fs::write(&file, plan.to_string()).expect("plan file");
    let file = file.to_string_lossy().into_owned();
    for round in 0..2 * rounds() {
        let stop = round % 2 == 1;
        let name = a_leader(&a).await;
        let (leader, survivor) = by_name(&mut a, &mut b, &name);
        // Started through the replica that will survive.
        let started = survivor
            .cli(DEPLOY, &["plan", "start", "web", &file, "--output", "json"])
            .await
            .ok();
        let id = started.json()["id"].as_i64().expect("plan id");
        survivor
            .plan_until(id, Duration::from_secs(20), |p| p["weight"] == 10.0)
            .await;
        // Inside the 2 s pause, the leader goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stop {
            leader.signal("STOP");
        } else {
            leader.kill().await;
        }
        let done = survivor
            .plan_until(id, Duration::from_secs(30), |p| p["phase"] == "promoted")
            .await;
        assert_eq!(done["weight"], 100.0, "round {round}");
        assert_eq!(
            survivor
                .plan_versions(id)
                .await
                .iter()
                .map(|v| v.1)
                .collect::<Vec<f64>>(),
            [10.0, 30.0, 100.0],
            "round {round}: each step once, as one version"
        );
        let top = one_chain(survivor).await;
        assert!(
            all_hold(&fleet, top, Duration::from_secs(20)).await,
            "round {round}: every edge holds version {top}"
        );
        if stop {
            leader.signal("CONT");
        } else {
            leader.restart().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_cleanly_gives_its_lease_up_at_once() {
    let rig = Rig::start("replicas-term").await;
    let (mut a, mut b) = pair(&rig.scratch).await;
    let name = a_leader(&a).await;
    let (leader, survivor) = by_name(&mut a, &mut b, &name);
    leader.terminate().await;
    // Had it kept the lease, the row would name it for most of a second more.
    let now = survivor.status().await;
    assert_ne!(
        now["leadership"]["leader"].as_str(),
        Some(name.as_str()),
        "a replica that stopped cleanly still holds the lease: {now}"
    );
    a_leader_other_than(survivor, &name).await;
}

/// A replica reaches PostgreSQL over TLS when the URL asks for it, and
/// verifies the server: with the CA in `sslrootcert` it connects (and the
/// server sees a TLS session), without it (only the public roots) it
/// refuses to talk, and `sslmode=disable` still connects in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reaches_postgres_over_tls_and_verifies_the_server() {
    let pg = pg::Pg::start_tls("tls");
    let rig = Rig::start("replicas-tls").await;
    let base = format!(
        "postgres://{}@localhost:{}/{}",
        pg::SUPERUSER,
        pg.port(),
        pg::DATABASE
    );
    let verified = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        pg.ca().display()
    );
    let control = replica(&rig.scratch, Path::new(&verified), "tls").await;
    control
        .cli(DEPLOY, &["push", &rig.config("v1.json", 10.0)])
        .await
        .ok();
    let sessions = pg.count(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'rollout' AND s.ssl",
    );
    assert!(sessions >= 1, "the service's session is TLS");
    let clear = pg.count(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'rollout' AND NOT s.ssl",
    );
    assert_eq!(clear, 0, "and none is in the clear");

    // The public roots do not vouch for this server: nothing is read.
    let unverified = control
        .cli(
            READ,
            &["migrate", "--db", &format!("{base}?sslmode=require")],
        )
        .await;
    assert_ne!(unverified.code, 0, "{}", unverified.stdout);
    assert!(
        unverified.stderr.contains("TLS") && unverified.stderr.contains("UnknownIssuer"),
        "{}",
        unverified.stderr
    );
    // Asked to, it connects in the clear: the history verifies.
    let key = secret().public_key().to_string();
    let clear = control
        .cli(
            READ,
            &[
                "audit",
                "--verify",
                "--db",
                &format!("{base}?sslmode=disable"),
                "--public-key",
                &key,
            ],
        )
        .await
        .ok();
    assert!(
        clear.stdout.contains("1 versions (1..=1) verify"),
        "{}",
        clear.stdout
    );
}
