//! `schema/config.schema.json` is generated from the config types; this test
//! fails when it is stale. `ROLLOUT_BLESS=1` rewrites it.

use std::path::Path;

use rollout_core::ConfigDoc;

#[test]
fn the_committed_json_schema_matches_the_types() {
    let schema = schemars::schema_for!(ConfigDoc);
    let mut want = serde_json::to_string_pretty(&schema).expect("schema serialises");
    want.push('\n');
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/config.schema.json");
    if std::env::var_os("ROLLOUT_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write schema");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "schema/config.schema.json is stale: run ROLLOUT_BLESS=1 cargo test -p rollout-core --test schema"
    );
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
