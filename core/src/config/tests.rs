use super::*;
use crate::edge::Active;
use crate::{Applied, Digest};

fn active(config: Config) -> Active {
    Active {
        applied: Applied {
            version: 1,
            digest: Digest::of(b"x"),
        },
        config,
    }
}

fn doc(json: &str) -> Result<Config, ConfigError> {
    Config::from_json(json.as_bytes())
}

const ONE_ROUTE: &str = r#"{"schema":1,"routes":[{"id":"web","old":"https://old.example.com",
    "new":"https://New.Example.com:8443/","new_weight":25.5,"key":["header:X-User-Id"]}]}"#;

#[test]
fn a_document_is_normalised_once_at_compile_time() {
    let config = doc(ONE_ROUTE).expect("valid");
    let route = config.route("web").expect("route");
    assert_eq!(
        route.new_origin().to_string(),
        "https://new.example.com:8443"
    );
    assert_eq!(route.new_origin().authority(), "new.example.com:8443");
    assert_eq!(route.weight().ppm(), 255_000);
    assert_eq!(route.salt(), "web", "salt defaults to the route id");
    assert_eq!(
        route.key_sources(),
        &[KeySource::Header("x-user-id".into())]
    );
}

#[test]
fn the_normalised_document_compiles_to_the_same_config() {
    let config = doc(ONE_ROUTE).expect("valid");
    let json = serde_json::to_vec(&config.to_doc()).expect("serialises");
    assert_eq!(Config::from_json(&json).expect("still valid"), config);
}

#[test]
fn a_body_over_256_kib_is_refused_before_parsing() {
    let big = vec![b' '; MAX_CONFIG_BYTES + 1];
    let err = Config::from_json(&big).expect_err("too large");
    assert_eq!(
        err.to_string(),
        "config: 262145 bytes is over the limit of 262144 bytes"
    );
}

#[test]
fn the_compact_form_decodes_to_the_same_config() {
    let active = active(doc(ONE_ROUTE).expect("valid"));
    assert_eq!(Active::from_compact(&active.to_compact()), Some(active));
}

#[test]
fn damaged_compact_bytes_are_an_error_not_a_panic() {
    let compact = active(doc(ONE_ROUTE).expect("valid")).to_compact();
    for cut in 0..compact.len() {
        assert!(
            Active::from_compact(&compact[..cut]).is_none(),
            "truncated at {cut}"
        );
    }
    assert_eq!(Active::from_compact(b"{\"schema\":1}"), None);
    let mut flipped = compact.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    // Whatever it decodes to, it must not panic; most flips are caught.
    let _ = Active::from_compact(&flipped);
}

#[test]
fn a_weight_out_of_range_cannot_be_smuggled_through_the_compact_form() {
    let mut compact = active(doc(ONE_ROUTE).expect("valid")).to_compact();
    // The weight is stored as a varint of its ppm; rewrite 255000 as 2000000.
    let at = find(
        &compact,
        &postcard::to_allocvec(&255_000u32).expect("encodes"),
    )
    .expect("weight bytes");
    let replacement = postcard::to_allocvec(&2_000_000u32).expect("encodes");
    compact.splice(at..at + 3, replacement);
    assert_eq!(Active::from_compact(&compact), None);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn route_and_flag_limits_are_inclusive() {
    let route = |i: usize, flags: usize| {
        let flags: Vec<String> = (0..flags)
            .map(|j| format!(r#"{{"name":"f{i}-{j}","percent":1}}"#))
            .collect();
        format!(
            r#"{{"id":"r{i}","match":{{"path_prefix":"/p{i}"}},"old":"http://o.example","new":"http://n.example","new_weight":1,"flags":[{}]}}"#,
            flags.join(",")
        )
    };
    let default = r#"{"id":"d","old":"http://o.example","new":"http://n.example","new_weight":1}"#;
    let routes: Vec<String> = (0..255)
        .map(|i| route(i, 1))
        .chain([default.to_owned()])
        .collect();
    let json = format!(r#"{{"schema":1,"routes":[{}]}}"#, routes.join(","));
    let config = doc(&json).expect("256 routes and 255 flags are within the limits");
    assert_eq!(config.routes().count(), 256);
}
