//! Shared decision cases: `tests/vectors/decisions.json` holds a config, a
//! list of request facts and the decision every edge build must reach for
//! each. This test holds native core to it; the JS build's tests
//! (`router/js/test/`) read the same file, so the builds cannot drift apart.
//!
//! `ROLLOUT_BLESS=1 cargo test -p rollout-core --test decisions` rewrites the
//! expectations from the current core. Review the diff before committing it: a
//! changed expectation means users would move between arms.

use std::path::PathBuf;

use rollout_core::{Config, Decision, Facts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
struct CaseFile {
    description: String,
    config: Value,
    cases: Vec<Case>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Case {
    name: String,
    /// Kept as written, so blessing rewrites only the expectations.
    request: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect: Option<Expect>,
}

/// The decision fields every build must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Expect {
    route: String,
    arm: String,
    origin: String,
    bucket: Option<u32>,
    reason: String,
    key: Option<String>,
    flags: Vec<String>,
    set_cookie: Option<String>,
}

impl Expect {
    fn of(d: &Decision<'_>) -> Expect {
        Expect {
            route: d.route.id().to_owned(),
            arm: d.arm.as_str().to_owned(),
            origin: d.origin.to_string(),
            bucket: d.bucket.map(|b| b.get()),
            reason: d.reason.as_str().to_owned(),
            key: d.key.map(|k| k.to_string()),
            flags: d.flags.iter().map(|f| (*f).to_owned()).collect(),
            set_cookie: d.set_cookie.as_ref().map(|c| c.header_value()),
        }
    }
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/decisions.json")
}

fn load() -> CaseFile {
    let text = std::fs::read_to_string(path()).expect("tests/vectors/decisions.json is committed");
    serde_json::from_str(&text).expect("decision file parses")
}

fn config(file: &CaseFile) -> Config {
    let json = serde_json::to_vec(&file.config).expect("config serialises");
    Config::from_json(&json).expect("the shared config is valid")
}

fn decide_case(config: &Config, case: &Case) -> Expect {
    let facts: Facts = serde_json::from_value(case.request.clone())
        .unwrap_or_else(|e| panic!("{}: request: {e}", case.name));
    let decision = facts
        .decide(config)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    Expect::of(&decision)
}

#[test]
fn every_shared_case_gets_its_expected_decision() {
    let mut file = load();
    let config = config(&file);
    if std::env::var_os("ROLLOUT_BLESS").is_some() {
        for case in &mut file.cases {
            case.expect = Some(decide_case(&config, case));
        }
        let mut text = serde_json::to_string_pretty(&file).expect("serialises");
        text.push('\n');
        std::fs::write(path(), text).expect("write decisions.json");
        return;
    }
    let mut wrong = Vec::new();
    for case in &file.cases {
        let Some(want) = &case.expect else {
            wrong.push(format!(
                "{}: no expectation (ROLLOUT_BLESS=1 writes it)",
                case.name
            ));
            continue;
        };
        let got = decide_case(&config, case);
        if &got != want {
            wrong.push(format!("{}:\n  want {want:?}\n  got  {got:?}", case.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        file.cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_shared_cases_cover_what_edges_must_agree_on() {
    let file = load();
    let expects: Vec<&Expect> = file
        .cases
        .iter()
        .filter_map(|c| c.expect.as_ref())
        .collect();
    assert_eq!(
        expects.len(),
        file.cases.len(),
        "every case has an expectation"
    );
    let has = |f: &dyn Fn(&Expect) -> bool| expects.iter().any(|e| f(e));
    assert!(has(&|e| e.set_cookie.is_some()), "a minted cookie");
    assert!(has(&|e| e.reason == "override"), "an override");
    assert!(has(&|e| e.reason == "no-key"), "a request without a key");
    assert!(
        has(&|e| e.arm == "new") && has(&|e| e.arm == "old"),
        "both arms"
    );
    assert!(
        has(&|e| e.flags.iter().any(|f| f == "vip-only")),
        "an allow-listed flag"
    );
    let routes: std::collections::HashSet<&str> =
        expects.iter().map(|e| e.route.as_str()).collect();
    assert!(routes.len() >= 4, "only routes {routes:?}");
    let overrides_with_tokens = file.cases.iter().any(|c| {
        c.request["headers"].as_array().is_some_and(|h| {
            h.iter()
                .any(|p| p[1].as_str().is_some_and(|v| v.contains(':')))
        })
    });
    assert!(overrides_with_tokens, "an override carrying a token");
}
