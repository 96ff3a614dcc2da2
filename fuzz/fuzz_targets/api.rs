//! The control service's request bodies, as `rollout serve` reads them
//! (`rollout_api::from_json`, and plain `serde_json` as clients do): every
//! type a client sends, then what the service does next with it before it
//! touches its store: a config validated, a patch applied to a fixed config
//! and the result validated, a plan's templates resolved and the plan
//! validated, a check template validated as the service does.
//!
//! Asserts, besides never panicking: a body `from_json` accepts,
//! serialised again, is accepted again and reads as the same value.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use rollout_api::{
    AlertWebhook, AtQuery, Change, CreateVersion, EdgeRequest, HistoryQuery, PlanQuery,
    RollbackRequest, StartPlan, from_json,
};
use rollout_core::plan::{CheckDoc, Plan, PlanDoc, StepDoc};
use rollout_core::{Config, ConfigDoc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixed_doc() -> ConfigDoc {
    serde_json::from_str(rollout_fuzz::CONFIG).expect("the fixed config parses")
}

/// Parses `data` as `T` both ways; when `from_json` accepts it, it must
/// round-trip through its own serialisation.
fn parse<T>(data: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let plain = serde_json::from_slice::<T>(data);
    let checked = from_json::<T>(data);
    if let Err(e) = &checked {
        let _ = e.to_string();
    }
    let value = checked.ok()?;
    assert!(plain.is_ok(), "from_json accepts what serde_json refuses");
    let bytes = serde_json::to_vec(&value).expect("a request serialises");
    let again = from_json::<T>(&bytes).expect("a serialised request parses again");
    if again != value {
        // serde_json may read a float back one ULP off; nothing else may move.
        let (a, b) = (serde_json::to_value(&again), serde_json::to_value(&value));
        let (a, b) = (a.expect("serialises"), b.expect("serialises"));
        assert!(
            same(&a, &b),
            "a request does not round-trip: {value:?} / {again:?}"
        );
    }
    Some(value)
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn plan(doc: &PlanDoc) {
    // Stored templates: names of even length exist, "nested" refers to
    // another template, the rest do not exist.
    let template = |name: &str| match name {
        "nested" => Some(CheckDoc {
            template: Some("other".into()),
            ..stored_check()
        }),
        _ => name.len().is_multiple_of(2).then(stored_check),
    };
    if let Ok(resolved) = doc.resolve(template) {
        let _ = Plan::try_from(&resolved);
    }
    let _ = doc.templates().count();
}

fn stored_check() -> CheckDoc {
    serde_json::from_str(
        r#"{"prometheus": {"url": "http://prometheus:9090", "query": "up", "condition": "< 0.01"},
            "failure_limit": 2}"#,
    )
    .expect("the stored check parses")
}

fuzz_target!(|data: &[u8]| {
    if let Some(create) = parse::<CreateVersion>(data) {
        let _ = create.reason.as_ref().map(ToString::to_string);
        match create.change {
            Change::Config(doc) => {
                let _ = Config::try_from(&doc);
            }
            Change::Patch(patch) => {
                let _ = patch.to_string();
                let mut doc = fixed_doc();
                let before = doc.clone();
                match patch.apply(&mut doc) {
                    Ok(()) => {
                        let _ = Config::try_from(&doc);
                    }
                    Err(e) => {
                        let _ = e.to_string();
                        assert_eq!(doc, before, "a refused patch changed the document");
                    }
                }
            }
        }
    }
    if let Some(rollback) = parse::<RollbackRequest>(data) {
        let _ = rollback.reason.map(String::from);
    }
    if let Some(start) = parse::<StartPlan>(data) {
        plan(&start.plan);
    }
    if let Some(check) = parse::<CheckDoc>(data) {
        // What `check_template` in the control service builds around it.
        let doc = PlanDoc {
            schema: rollout_core::plan::PLAN_SCHEMA,
            flag: None,
            steps: vec![StepDoc::SetWeight(0.0)],
            checks: [("t".to_owned(), check)].into(),
            background: vec!["t".to_owned()],
            progress_deadline: None,
            bake: None,
            dry_run: false,
            require_hooks: Vec::new(),
        };
        let _ = Plan::try_from(&doc);
    }
    let _ = parse::<AlertWebhook>(data);
    let _ = parse::<EdgeRequest>(data);
    let _ = parse::<HistoryQuery>(data);
    let _ = parse::<PlanQuery>(data);
    let _ = parse::<AtQuery>(data);
    if let Ok(doc) = PlanDoc::from_json(data) {
        plan(&doc);
    }
});
