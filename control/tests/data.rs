//! The PostgreSQL recipe of docs/data.md, for real: a temporary cluster
//! (Debian's postgresql, a free loopback port, WAL archiving, a base
//! backup), restore points made by examples/hooks/pg-restore-point.sh, and
//! point-in-time recovery into a copy.
//!
//! First the recipe on its own (the script run as `rollout serve` runs a
//! hook), then end to end: the script as a required `plan.start` hook of a
//! canary whose new origin writes bad rows until the plan aborts.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::pg::{self, Pg};
use support::*;

/// How long the end-to-end test's hook waits before making its restore point.
const HOOK_DELAY_S: u64 = 1;

/// The hook script the docs recommend.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/hooks/pg-restore-point.sh")
}

/// Runs the script as `rollout serve` runs a hook command: the service's
/// environment plus the hook's `env` (here, `pg_env`) plus ROLLOUT_*.
fn run_hook(
    pg_env: &[(&'static str, String)],
    event: &str,
    version: &str,
    plan: &str,
    run: &str,
) -> Output {
    Command::new(script())
        .envs(pg_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("ROLLOUT_HOOK", "pg-restore-point")
        .env("ROLLOUT_RUN", run)
        .env("ROLLOUT_EVENT", event)
        .env("ROLLOUT_VERSION", version)
        .env("ROLLOUT_ROUTE", "web")
        .env("ROLLOUT_PLAN", plan)
        .env("ROLLOUT_ACTOR", "ci")
        .env("ROLLOUT_REASON", "release 2026.11.30")
        .output()
        .expect("the hook script runs")
}

/// The script's one line, `restore_point=NAME lsn=LSN`: (NAME, LSN).
fn restore_point(stdout: &str) -> (String, String) {
    let line = stdout.strip_suffix('\n').unwrap_or(stdout);
    assert!(!line.contains('\n'), "one line: {stdout:?}");
    let (name, lsn) = line
        .strip_prefix("restore_point=")
        .and_then(|rest| rest.split_once(" lsn="))
        .unwrap_or_else(|| panic!("restore_point=NAME lsn=LSN: {stdout:?}"));
    assert!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "name {name:?}"
    );
    let (hi, lo) = lsn.split_once('/').unwrap_or_default();
    assert!(
        !hi.is_empty()
            && [hi, lo]
                .iter()
                .all(|h| h.bytes().all(|b| b.is_ascii_hexdigit())),
        "lsn {lsn:?}"
    );
    (name.to_owned(), lsn.to_owned())
}

/// The table both tests write: each row says whether it is good, who wrote
/// it, and where the WAL was when it was written.
const ORDERS: &str = "CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('good', 'bad')),
    via text NOT NULL,
    lsn pg_lsn NOT NULL DEFAULT pg_current_wal_insert_lsn(),
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)";

fn insert(kind: &str, via: &str, n: usize) -> String {
    format!("INSERT INTO orders (kind, via) SELECT '{kind}', '{via}' FROM generate_series(1, {n})")
}

#[test]
fn a_copy_recovered_to_the_hooks_restore_point_holds_the_good_rows_and_none_of_the_bad() {
    let started = Instant::now();
    let live = Pg::start("recipe");
    let up = started.elapsed();
    live.psql(ORDERS);
    live.psql(&insert("good", "seed", 50));

    let t = Instant::now();
    let backup = live.base_backup("base");
    let backed_up = t.elapsed();

    // The restore point, as `rollout serve` would make it when plan 3 starts on version 7.
    let out = run_hook(&live.env(), "plan.start", "7", "3", "41");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the hook fails: {stderr}");
    let (point, lsn) = restore_point(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(point, "rollout-plan-start-v7-plan3-run41");

    // The canary: new writes bad rows, old goes on writing good ones.
    live.psql(&insert("bad", "new", 30));
    live.psql(&insert("good", "old", 10));

    // A version event names no plan; huge ids still fit PostgreSQL's 63 bytes
    // and keep the run id whole.
    let out = run_hook(&live.env(), "version", "8", "", "42");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, _) = restore_point(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(name, "rollout-version-v8-run42");
    let big = "18446744073709551615";
    let out = run_hook(&live.env(), "plan.promote", big, big, big);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, _) = restore_point(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(name.len(), 63, "{name}");
    assert!(name.starts_with("rollout-plan-promote-v18446"), "{name}");
    assert!(name.ends_with(&format!("-run{big}")), "{name}");

    let t = Instant::now();
    let segment = live.switch_wal();
    let archived = t.elapsed();
    let t = Instant::now();
    let copy = live.recover_copy(&backup, &point);
    let recovered = t.elapsed();

    let count =
        |pg: &Pg, filter: &str| pg.count(&format!("SELECT count(*) FROM orders WHERE {filter}"));
    assert_eq!(
        count(&copy, "kind = 'good' AND via = 'seed'"),
        50,
        "every good row from before the point"
    );
    assert_eq!(count(&copy, "kind = 'bad'"), 0, "none of the bad");
    assert_eq!(
        count(&copy, "via = 'old'"),
        0,
        "PITR rewinds good writes after the point too"
    );
    assert_eq!(
        count(&copy, &format!("lsn >= '{lsn}'")),
        0,
        "nothing written after the point"
    );
    // The live cluster is left as it was: both kinds of rows.
    assert_eq!(count(&live, "kind = 'good'"), 60);
    assert_eq!(count(&live, "kind = 'bad'"), 30);
    // The copy is a cluster of its own: it takes writes, the live one does not see them.
    copy.psql(&insert("good", "repair", 1));
    assert_eq!(count(&live, "via = 'repair'"), 0);
    println!(
        "recipe: cluster up {:.1} s, base backup {:.1} s, {segment} archived {:.2} s, \
         copy recovered to {point} ({lsn}) {:.1} s, total {:.1} s",
        up.as_secs_f64(),
        backed_up.as_secs_f64(),
        archived.as_secs_f64(),
        recovered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_hook_script_fails_loudly_and_prints_nothing_when_it_makes_no_restore_point() {
    let psql = pg::bin_dir().join("psql");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let env = [
        ("PGHOST", "127.0.0.1".to_owned()),
        ("PGPORT", port.to_string()),
        ("PGUSER", pg::SUPERUSER.to_owned()),
        ("PGDATABASE", pg::DATABASE.to_owned()),
        ("PGCONNECT_TIMEOUT", "5".to_owned()),
        ("PSQL", psql.display().to_string()),
    ];
    // Nothing listens on the port.
    let out = run_hook(&env, "plan.start", "7", "3", "41");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no output");
    assert!(
        stderr.contains(
            "pg-restore-point: psql failed: no restore point rollout-plan-start-v7-plan3-run41"
        ),
        "{stderr}"
    );
    // Not run by the service: no run id to name the point after.
    let out = run_hook(&env, "plan.start", "7", "3", "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ROLLOUT_RUN must be a decimal number"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// An origin that records each request as a row of `kind` and answers `status`.
async fn db_origin(
    via: &'static str,
    kind: &'static str,
    status: u16,
    db: pg::Conn,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let url = format!("http://{}", listener.local_addr().expect("origin addr"));
    let sql = insert(kind, via, 1);
    let app = axum::Router::new().fallback(move || {
        let (db, sql) = (db.clone(), sql.clone());
        async move {
            let code = match db.query(&sql).await {
                Ok(_) => axum::http::StatusCode::from_u16(status).expect("status"),
                Err(e) => {
                    eprintln!("origin {via}: {e}");
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            };
            (code, [("x-origin", via)], via)
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

fn ms_of(rfc3339: &Value) -> i64 {
    let text = rfc3339
        .as_str()
        .unwrap_or_else(|| panic!("a time: {rfc3339}"));
    rollout_control::time::parse_time(text).expect("RFC 3339")
}

/// Every hook run in a history page, with its version.
fn hook_runs(history: &Value) -> Vec<(u64, Value)> {
    history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .flat_map(|v| {
            let n = v["version"].as_u64().expect("version");
            v["hooks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |h| (n, h.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canarys_bad_rows_are_gone_in_a_copy_recovered_to_the_plan_start_restore_point() {
    let started = Instant::now();
    let live = tokio::task::block_in_place(|| {
        let live = Pg::start("canary");
        live.psql(ORDERS);
        live.psql(&insert("good", "seed", 50));
        live
    });
    let backup = tokio::task::block_in_place(|| live.base_backup("base"));

    let scratch = Scratch::new("data-canary");
    let (old, old_task) = db_origin("old", "good", 200, live.conn()).await;
    let (new, new_task) = db_origin("new", "bad", 500, live.conn()).await;
    let mut edges = Vec::new();
    for i in 0..2 {
        edges.push(edge_between(&scratch.0, &format!("edge-{i}"), &old, &new, None, None).await);
    }
    let env: serde_json::Map<String, Value> = live
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    // The script, a second late: a restore point on a real database server
    // takes its time, and the plan must send new nothing until it exists,
    // however long that is (no race for the hook to win).
    let late = format!("sleep {HOOK_DELAY_S} && exec \"$0\"");
    let hooks = json!({"hooks": [{
        "name": "pg-restore-point",
        "on": ["plan.start", "version"],
        "command": ["/bin/sh", "-c", late, script()],
        "timeout": "30s",
        "env": env,
    }]});
    let hooks_file = scratch.path("hooks.json");
    std::fs::write(&hooks_file, hooks.to_string()).expect("hooks file");
    let hooks_file = hooks_file.to_string_lossy().into_owned();
    let control = Control::start_with(&scratch.0, &["--hooks", &hooks_file]).await;
    for e in &edges {
        control.cli(ADMIN, &["edges", "add", &url(e)]).await.ok();
    }
    let v1 = scratch.path("v1.json");
    let doc = config(&old, &new, 0.0, json!({}));
    std::fs::write(&v1, serde_json::to_vec(&doc).expect("json")).expect("config file");
    control.push_wait(&v1.to_string_lossy()).await;

    // Users through both edges, the whole time.
    let addrs: Vec<_> = edges.iter().map(|e| e.addr).collect();
    let traffic = tokio::spawn(async move {
        let http = client();
        for i in 0u64.. {
            let edge = addrs[(i % 2) as usize];
            let _ = http
                .get(format!("http://{edge}/orders"))
                .header("x-user-id", format!("user-{i}"))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let seeded = eventually(Duration::from_secs(10), || async {
        live.conn()
            .query("SELECT count(*) FROM orders WHERE via = 'old'")
            .await
            .is_ok_and(|n| n.parse::<i64>().unwrap_or(0) >= 10)
    })
    .await;
    assert!(seeded, "users reach old through the edges");
    // Every row committed now predates the plan, and so its restore point.
    let before = live
        .conn()
        .query("SELECT max(id) FROM orders")
        .await
        .expect("max id");
    let before: i64 = before.parse().expect("id");
    let bad_before = live
        .conn()
        .query("SELECT count(*) FROM orders WHERE kind = 'bad'")
        .await;
    assert_eq!(bad_before.as_deref(), Ok("0"), "nobody reaches new at 0 %");

    let plan = json!({
        "schema": 1,
        "require_hooks": ["pg-restore-point"],
        "steps": [{"set_weight": 50}, {"pause": "5m"}],
        "checks": {"errors": {"probe": {"path": "/"}, "interval": "2s", "min_samples": 20}},
        "background": ["errors"],
    });
    let plan_file = scratch.path("plan.json");
    std::fs::write(&plan_file, plan.to_string()).expect("plan file");
    let plan_file = plan_file.to_string_lossy().into_owned();
    let plan_started = Instant::now();
    let run = control
        .cli(
            DEPLOY,
            &["plan", "start", "web", &plan_file, "--output", "json"],
        )
        .await
        .ok();
    let id = run.json()["id"].as_i64().expect("plan id");
    let deadline = Instant::now() + Duration::from_secs(90);
    let aborted = loop {
        let p = control.get(&format!("/v1/plans/{id}")).await;
        if p["phase"] == "aborted" {
            break p;
        }
        assert!(
            !p["phase"]
                .as_str()
                .is_some_and(|s| ["promoted", "failed"].contains(&s)),
            "the plan ends aborted: {p}"
        );
        assert!(
            Instant::now() < deadline,
            "plan {id} not aborted after 90 s: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let to_abort = plan_started.elapsed();
    traffic.abort();
    let reason = aborted["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("check errors failed"), "{reason}");

    // The plan's versions: the 50 % step, then the rollback.
    let history = control.get("/v1/versions?limit=100").await;
    let ours: Vec<&Value> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["actor"] == format!("plan:{id}"))
        .collect();
    let mut step = None;
    for v in &ours {
        let n = v["version"].as_u64().expect("version");
        let full = control.get(&format!("/v1/versions/{n}")).await;
        if full["config"]["routes"][0]["new_weight"] == 50.0 {
            step = Some(full);
        }
    }
    let step = step.unwrap_or_else(|| panic!("the plan set 50 %: {history}"));
    let rollback = ours
        .iter()
        .find(|v| v["reason"].as_str().is_some_and(|r| r.contains("rollback")))
        .unwrap_or_else(|| panic!("the plan rolled back: {history}"))["version"]
        .as_u64()
        .expect("version");

    // The plan.start run: done before the first weight was issued.
    let runs = hook_runs(&history);
    let (at_version, start_run) = runs
        .iter()
        .find(|(_, h)| h["event"] == "plan.start" && h["plan"] == id)
        .unwrap_or_else(|| panic!("a plan.start run for plan {id}: {history}"))
        .clone();
    assert_eq!(start_run["hook"], "pg-restore-point");
    assert_eq!(start_run["status"], "ok", "{start_run}");
    let (point, lsn) = restore_point(start_run["output"].as_str().expect("output"));
    assert!(
        point.starts_with(&format!("rollout-plan-start-v{at_version}-plan{id}-run")),
        "named after version {at_version} and plan {id}: {point}"
    );
    assert!(
        ms_of(&start_run["finished_at"]) <= ms_of(&step["issued_at"]),
        "the restore point exists before new gets any traffic: run {start_run}, step {}",
        step["issued_at"]
    );

    // The rollback is a version like any other: it gets its own point.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rollback_run = loop {
        let v = control.get(&format!("/v1/versions/{rollback}")).await;
        let run = v["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["event"] == "version")
            .cloned();
        if let Some(run) = run
            .filter(|r| !["queued", "running"].contains(&r["status"].as_str().unwrap_or_default()))
        {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "no finished version run for rollback version {rollback}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rollback_run["status"], "ok", "{rollback_run}");
    let (rollback_point, _) = restore_point(rollback_run["output"].as_str().expect("output"));
    assert!(
        rollback_point.starts_with(&format!("rollout-version-v{rollback}-")),
        "{rollback_point}"
    );
    let listed = control.cli(READ, &["history", "--limit", "100"]).await.ok();
    assert!(
        listed.stdout.contains(&point),
        "rollout history shows the point:\n{}{}",
        listed.stdout,
        listed.stderr
    );

    // The canary really wrote bad rows; old went on writing good ones.
    let count =
        |pg: &Pg, filter: &str| pg.count(&format!("SELECT count(*) FROM orders WHERE {filter}"));
    let after_point = format!("lsn > '{lsn}'");
    let (live_bad, live_good_after, live_before) = tokio::task::block_in_place(|| {
        (
            count(&live, "kind = 'bad'"),
            count(&live, &format!("kind = 'good' AND {after_point}")),
            count(&live, &format!("id <= {before}")),
        )
    });
    let (live_total, first_bad_ms) = tokio::task::block_in_place(|| {
        (
            count(&live, "true"),
            live.count(
                "SELECT (extract(epoch FROM min(at)) * 1000)::bigint FROM orders WHERE kind = 'bad'",
            ),
        )
    });
    let hook_done_ms = ms_of(&start_run["finished_at"]);
    assert!(live_bad > 0, "new wrote bad rows during the canary");
    assert!(live_good_after > 0, "old wrote good rows during the canary");

    // Recover a copy to the plan's restore point.
    let t = Instant::now();
    let copy = tokio::task::block_in_place(|| {
        live.switch_wal();
        live.recover_copy(&backup, &point)
    });
    let recovered = t.elapsed();
    let (copy_before, copy_bad, copy_after, copy_total) = tokio::task::block_in_place(|| {
        (
            count(&copy, &format!("id <= {before}")),
            count(&copy, "kind = 'bad'"),
            count(&copy, &after_point),
            count(&copy, "true"),
        )
    });
    assert_eq!(copy_before, live_before, "every row from before the plan");
    assert_eq!(
        copy_bad,
        0,
        "none of the bad rows: new's first write was {} ms after the plan.start run finished \
         (a bad row before the restore point means new got requests before it existed)",
        first_bad_ms - hook_done_ms
    );
    assert_eq!(
        copy_after, 0,
        "nothing written after the point: good rows old wrote during the canary are gone too"
    );
    println!(
        "data canary: plan {id} aborted {:.1} s after it started; the restore point's run \
         finished {} ms before the 50 % step was issued and {} ms before new's first write; \
         live {live_total} rows ({live_bad} bad, {live_good_after} good after the point), \
         copy at {point} ({lsn}) {copy_total} rows, recovered in {:.1} s; total {:.1} s",
        to_abort.as_secs_f64(),
        ms_of(&step["issued_at"]) - hook_done_ms,
        first_bad_ms - hook_done_ms,
        recovered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    old_task.abort();
    new_task.abort();
    drop(control);
    tokio::task::block_in_place(|| {
        drop(copy);
        drop(live);
    });
}
