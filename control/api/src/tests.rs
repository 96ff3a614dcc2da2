use rollout_core::{Applied, Digest};
use serde_json::json;

use super::*;

fn config() -> serde_json::Value {
    json!({"schema": 1, "routes": [{"id": "web", "old": "http://o.example",
           "new": "http://n.example", "new_weight": 5}]})
}

#[test]
fn a_create_request_has_exactly_one_change_and_round_trips() {
    let body = json!({"expected_version": 3, "reason": "ramp", "patch":
        {"op": "set_weight", "route": "web", "percent": 25.5}});
    let req: CreateVersion = from_json(body.to_string().as_bytes()).expect("parses");
    assert_eq!(req.expected_version, Version::new(3));
    assert_eq!(req.reason.as_ref().map(Reason::as_str), Some("ramp"));
    assert!(matches!(req.change, Change::Patch(_)));
    let again = serde_json::to_vec(&req).expect("serialises");
    assert_eq!(from_json::<CreateVersion>(&again), Ok(req));

    let whole = json!({"expected_version": 0, "config": config()});
    let req: CreateVersion = from_json(whole.to_string().as_bytes()).expect("parses");
    assert!(matches!(req.change, Change::Config(_)));
    let again = serde_json::to_vec(&req).expect("serialises");
    assert_eq!(from_json::<CreateVersion>(&again), Ok(req));

    for bad in [
        json!({"expected_version": 0}),
        json!({"expected_version": 0, "config": config(), "patch":
            {"op": "toggle_flag", "route": "web", "flag": "x"}}),
    ] {
        let err = from_json::<CreateVersion>(bad.to_string().as_bytes()).expect_err("refused");
        assert!(
            err.message.contains("exactly one of config and patch"),
            "{err}"
        );
    }
}

#[test]
fn request_errors_name_the_field() {
    let cases = [
        (
            json!({"expected_version": 0, "config": {"schema": 1, "routes": [
                {"id": "web", "old": "http://o.example", "new": "http://n.example",
                 "new_weight": "ten"}]}}),
            "config.routes[0].new_weight",
        ),
        (
            json!({"expected_version": 0, "reason": "x".repeat(1 << 20), "config": config()}),
            "reason",
        ),
        (
            json!({"expected_version": -1, "config": config()}),
            "expected_version",
        ),
        (
            json!({"expected_version": 0, "config": config(), "extra": 1}),
            "extra",
        ),
        (
            json!({"expected_version": 1, "to": 1, "at": "now"}),
            "request",
        ),
    ];
    for (body, path) in cases {
        let text = body.to_string();
        let err = if body.get("to").is_some() {
            from_json::<RollbackRequest>(text.as_bytes()).map(drop)
        } else {
            from_json::<CreateVersion>(text.as_bytes()).map(drop)
        }
        .expect_err("refused");
        assert_eq!(err.path, path, "{err}");
    }
    let err = from_json::<CreateVersion>(b"{\"expected_version\": 0").expect_err("truncated");
    assert_eq!(err.path, "request");
}

#[test]
fn reasons_and_actors_are_bounded_where_they_enter() {
    let long = "é".repeat(MAX_REASON_BYTES / 2 + 1);
    assert_eq!(
        Reason::try_from(long).map_err(|e| e.to_string()),
        Err("1026 bytes is over the limit of 1024 bytes".to_owned())
    );
    assert!(Reason::try_from("x".repeat(MAX_REASON_BYTES)).is_ok());
    assert!(Reason::try_from("line one\n\tline two".to_owned()).is_ok());
    // Given, a reason says something: leave it out for the default.
    for blank in ["", "  ", "\n\t"] {
        assert_eq!(Reason::try_from(blank.to_owned()), Err(InvalidText::Empty));
    }
    assert_eq!(
        Reason::try_from("\u{1b}[2Jcleared".to_owned()),
        Err(InvalidText::Control(0x1b))
    );
    assert!("ci-deploy".parse::<Actor>().is_ok());
    assert!("plan:web-canary".parse::<Actor>().is_ok());
    assert_eq!("two words".parse::<Actor>(), Err(InvalidText::Whitespace));
    assert_eq!("".parse::<Actor>(), Err(InvalidText::Empty));
    assert!(matches!(
        "a".repeat(MAX_ACTOR_BYTES + 1).parse::<Actor>(),
        Err(InvalidText::TooLong { .. })
    ));
}

#[test]
fn long_text_is_shown_shortened_with_what_was_cut() {
    assert_eq!(shorten("short", 10), "short");
    assert!(matches!(
        shorten("short", 10),
        std::borrow::Cow::Borrowed(_)
    ));
    let big = "r".repeat(1 << 20);
    assert_eq!(
        shorten(&big, 5),
        format!("rrrrr… ({} bytes)", 1 << 20).as_str()
    );
    assert_eq!(shorten("a\nb\u{1b}", 10), "a\\nb\\u{1b}");
    assert_eq!(clip("héllo", 2), "h");
    assert_eq!(clip("héllo", 3), "hé");
    assert_eq!(clip("hi", 10), "hi");
}

#[test]
fn an_edge_holds_a_version_only_with_its_digest() {
    let v2 = Applied {
        version: 2,
        digest: Digest::of(b"two"),
    };
    let other = Applied {
        version: 2,
        digest: Digest::of(b"break-glass two"),
    };
    assert!(holds(Some(v2), v2));
    assert!(!holds(Some(other), v2), "same number, another body");
    assert!(!holds(None, v2));
    assert!(!holds(
        Some(Applied {
            version: 1,
            digest: Digest::of(b"two")
        }),
        v2
    ));
}

#[test]
fn edge_states_keep_their_wire_names() {
    for (state, name) in [
        (EdgeState::Ack, "ACK"),
        (EdgeState::Nack, "NACK"),
        (EdgeState::Stale, "STALE"),
        (EdgeState::Unreachable, "UNREACHABLE"),
    ] {
        assert_eq!(serde_json::to_value(state).expect("json"), json!(name));
        assert_eq!(format!("{state:<12}|"), format!("{name:<12}|"));
    }
}
