//! What the dashboard is served and reads: the page with its security
//! headers, who a token is, the weight timeline and a plan's measurements.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

async fn get_as(control: &Control, token: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", control.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("api reachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_its_roles_its_timeline_and_a_plans_measurements() {
    let rig = Rig::start("dashboard-api").await;
    let edge = rig.edge("edge").await;
    let control = rig.control(&[url(&edge)]).await;

    // The page and its assets, with no token, under a strict policy.
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = client()
            .get(format!("{}{path}", control.url))
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), 200, "{path}");
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            h("content-type").starts_with(kind),
            "{path}: {}",
            h("content-type")
        );
        let csp = h("content-security-policy");
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
    }

    // Who a token is; a wrong one is refused.
    for (token, role) in [(READ, "read"), (DEPLOY, "deploy"), (ADMIN, "admin")] {
        let me: Value = get_as(&control, token, "/v1/whoami")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(me["role"], role, "{me}");
    }
    assert_eq!(
        get_as(&control, "nope-nope-nope", "/v1/whoami")
            .await
            .status(),
        401
    );

    // The timeline: each version's weights, oldest first, rollbacks marked.
    control.push_wait(&rig.config("v1.json", 10.0)).await;
    control
        .cli(DEPLOY, &["set-weight", "web", "50", "--wait"])
        .await
        .ok();
    control
        .cli(DEPLOY, &["rollback", "--to", "1", "--wait"])
        .await
        .ok();
    let t: Value = get_as(&control, READ, "/v1/timeline")
        .await
        .json()
        .await
        .expect("json");
    let points: Vec<(u64, f64, Value, bool)> = t["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().expect("n"),
                v["routes"][0]["new_weight"].as_f64().expect("weight"),
                v["action"].clone(),
                v["rollback"].as_bool().expect("rollback"),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            (1, 10.0, json!("push"), false),
            (2, 50.0, json!("patch"), false),
            (3, 10.0, json!("rollback"), true)
        ]
    );
    let limited: Value = get_as(&control, READ, "/v1/timeline?limit=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(limited["versions"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        limited["versions"][0]["version"], 3,
        "the newest, when limited"
    );

    // A plan's measurements, oldest first, as error rates per arm.
    let plan = json!({
        "schema": 1,
        "dry_run": true,
        "steps": [{"set_weight": 20}, {"pause": "10m"}],
        "checks": {"errors": {"probe": {"path": "/"}, "interval": "1s", "min_samples": 5}},
        "background": ["errors"],
    });
    let file = rig.scratch.path("plan.json");
    std::fs::write(&file, plan.to_string()).expect("plan");
    let started = control
        .cli(
            DEPLOY,
            &[
                "plan",
                "start",
                "web",
                &file.to_string_lossy(),
                "--output",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    let id = started["id"].as_i64().expect("id");
    let measured = eventually(Duration::from_secs(20), || async {
        let c: Value = get_as(&control, READ, &format!("/v1/plans/{id}/checks"))
            .await
            .json()
            .await
            .unwrap_or_default();
        c["checks"].as_array().is_some_and(|c| {
            c.iter()
                .any(|m| m["old_error_rate"] == 0.0 && m["new_error_rate"] == 0.0)
        })
    })
    .await;
    let checks: Value = get_as(&control, READ, &format!("/v1/plans/{id}/checks"))
        .await
        .json()
        .await
        .expect("json");
    assert!(
        measured,
        "probe measurements with both arms' error rates: {checks}"
    );
    assert_eq!(checks["checks"][0]["name"], "errors");
    // Starting and commanding a plan are in the audit log, with who did it.
    control.cli(DEPLOY, &["plan", "pause", "web"]).await.ok();
    let audit = control.get("/v1/audit").await;
    let entries: Vec<(String, String)> = audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for action in ["plan.start", "plan.pause"] {
        assert!(
            entries.contains(&("ci".to_owned(), action.to_owned())),
            "{action}: {audit}"
        );
    }
    assert_eq!(
        get_as(&control, READ, "/v1/plans/999/checks")
            .await
            .status(),
        404
    );
}
