//! `schema/config.schema.json` and `schema/plan.schema.json` are generated
//! from the config and plan types; these tests fail when one is stale.
//! `ROLLOUT_BLESS=1` rewrites them.

use std::path::Path;

use rollout_core::ConfigDoc;
use rollout_core::plan::PlanDoc;

/// Compares (or with `ROLLOUT_BLESS`, writes) `schema/<name>`.
fn committed(name: &str, schema: &schemars::Schema) {
    let mut want = serde_json::to_string_pretty(schema).expect("schema serialises");
    want.push('\n');
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schema")
        .join(name);
    if std::env::var_os("ROLLOUT_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write schema");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "schema/{name} is stale: run ROLLOUT_BLESS=1 cargo test -p rollout-core --test schema"
    );
}

#[test]
fn the_committed_json_schemas_match_the_types() {
    committed("config.schema.json", &schemars::schema_for!(ConfigDoc));
    committed("plan.schema.json", &schemars::schema_for!(PlanDoc));
}

#[test]
fn the_schema_refuses_unknown_fields_like_the_parser() {
    // The schema forbids unknown fields just as the parser does.
    let schema = serde_json::to_value(schemars::schema_for!(ConfigDoc)).expect("to value");
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    let route = &schema["$defs"]["RouteDoc"];
    assert_eq!(
        route["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    assert_eq!(
        route["properties"]["new_weight"]["maximum"],
        serde_json::json!(100)
    );
}

#[test]
fn the_plan_schema_refuses_unknown_fields_and_knows_the_steps() {
    let schema = serde_json::to_value(schemars::schema_for!(PlanDoc)).expect("to value");
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    let steps = schema["$defs"]["StepDoc"].to_string();
    for step in ["set_weight", "pause", "analysis"] {
        assert!(steps.contains(step), "{steps}");
    }
}
