//! The laws of bucketing and decisions, checked over generated inputs.

use proptest::prelude::*;
use rollout_core::config::{FlagDoc, MatchDoc, OverrideDoc, RouteDoc};
use rollout_core::edge::{Active, StoredActive};
use rollout_core::{
    Applied, Arm, BUCKETS, Config, ConfigDoc, Digest, Envelope, Request, Weight, bucket_of, decide,
};

fn route_doc(id: String, ppm: u32, keys: Vec<&'static str>) -> RouteDoc {
    RouteDoc {
        id,
        matches: None,
        old: "https://old.example.com".into(),
        new: "https://new.example.com".into(),
        new_weight: f64::from(ppm) / 10_000.0,
        salt: None,
        key: keys.into_iter().map(String::from).collect(),
        assign_cookie: false,
        overrides: vec![],
        flags: vec![],
        failover: None,
    }
}

fn one_route(ppm: u32, salt: &str) -> Config {
    let mut r = route_doc("r".into(), ppm, vec!["header:x-key"]);
    r.salt = Some(salt.to_owned());
    Config::try_from(ConfigDoc {
        schema: 1,
        debug_headers: false,
        routes: vec![r],
    })
    .expect("valid")
}

fn arm_of(config: &Config, key: &str) -> Arm {
    let headers = [("x-key", key)];
    let req = Request {
        method: "GET",
        host: "h",
        path: "/",
        query: "",
        headers: &headers,
        client_ip: None,
        mint: None,
    };
    decide(config, &req).arm
}

/// Valid config documents of every shape the schema allows.
fn config_doc() -> impl Strategy<Value = ConfigDoc> {
    let source = prop::sample::select(vec![
        "header:x-user-id",
        "header:X-Session",
        "cookie:sid",
        "query:uid",
        "client-ip",
    ]);
    let flag = (
        "[a-z][a-z0-9-]{0,10}",
        0u32..=BUCKETS,
        prop::option::of("[a-zA-Z0-9 ]{1,8}"),
        prop::collection::vec("[a-z0-9]{1,6}", 0..4),
    )
        .prop_map(|(name, ppm, salt, allow)| FlagDoc {
            name,
            percent: f64::from(ppm) / 10_000.0,
            salt,
            allow,
        });
    let route = (
        0u32..=BUCKETS,
        prop::collection::hash_set(source, 0..4),
        prop::option::of("[^\u{0}]{1,12}"),
        prop::collection::vec(flag, 0..3),
        prop::option::of(("[a-z]{1,8}", "/[a-z/]{0,8}", any::<bool>())),
        any::<bool>(),
    )
        .prop_map(|(ppm, keys, salt, mut flags, matches, force)| {
            let mut r = route_doc(String::new(), ppm, keys.into_iter().collect());
            r.salt = salt;
            flags.sort_by(|a, b| a.name.cmp(&b.name));
            flags.dedup_by(|a, b| a.name == b.name);
            r.flags = flags;
            r.assign_cookie = r.key.iter().any(|k| k.starts_with("cookie:"));
            r.matches = matches.map(|(host, path, get_only)| MatchDoc {
                host: Some(format!("{host}.example.com")),
                path_prefix: Some(path),
                methods: if get_only { vec!["GET".into()] } else { vec![] },
            });
            if force {
                r.overrides = vec![OverrideDoc {
                    from: "header:x-force".into(),
                    token_sha256: vec![],
                }];
            }
            r
        });
    (prop::collection::vec(route, 1..6), any::<bool>()).prop_map(|(mut routes, debug_headers)| {
        for (i, r) in routes.iter_mut().enumerate() {
            r.id = format!("route-{i}");
            // Only the last route may lack a match; give the others one.
            r.matches.get_or_insert_with(|| MatchDoc {
                host: None,
                path_prefix: None,
                methods: vec!["POST".into()],
            });
        }
        if let Some(last) = routes.last_mut() {
            last.matches = None;
        }
        ConfigDoc {
            schema: 1,
            debug_headers,
            routes,
        }
    })
}

proptest! {
    #[test]
    fn buckets_are_in_range_and_deterministic(salt in "[^\u{0}]{0,40}", key in any::<String>()) {
        let b = bucket_of(&salt, &key);
        prop_assert!(b.get() < BUCKETS);
        prop_assert_eq!(b, bucket_of(&salt, &key));
    }

    #[test]
    fn raising_weight_never_moves_a_key_back_to_old(
        key in any::<String>(),
        salt in "[a-z]{1,10}",
        (w1, w2) in (0u32..=BUCKETS, 0u32..=BUCKETS).prop_map(|(a, b)| (a.min(b), a.max(b))),
    ) {
        prop_assume!(!key.trim().is_empty());
        let low = one_route(w1, &salt);
        let high = one_route(w2, &salt);
        if arm_of(&low, &key) == Arm::New {
            prop_assert_eq!(arm_of(&high, &key), Arm::New);
        }
    }

    #[test]
    fn a_config_survives_the_json_round_trip(doc in config_doc()) {
        let config = Config::try_from(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let json = serde_json::to_vec(&config.to_doc()).expect("serialises");
        prop_assert_eq!(&Config::from_json(&json).expect("re-parses"), &config);
        let active = Active { applied: Applied { version: 1, digest: Digest::of(&json) }, config };
        prop_assert_eq!(Active::from_compact(&active.to_compact()), Some(active));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Config::from_json(&bytes);
        let _ = Envelope::parse(&bytes);
        let _ = Active::from_compact(&bytes);
        if let Some(stored) = StoredActive::parse(&bytes) {
            let req = Request { method: "GET", host: "h", path: "/", query: "", headers: &[], client_ip: None, mint: None };
            let _ = stored.config_for(&req);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_the_validator(value in arbitrary_json()) {
        let bytes = serde_json::to_vec(&value).expect("serialises");
        let _ = Config::from_json(&bytes);
    }

    #[test]
    fn mutated_documents_are_accepted_or_refused_never_panic(
        doc in config_doc(),
        path in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        replacement in arbitrary_json(),
    ) {
        let mut value = serde_json::to_value(&doc).expect("to value");
        replace_somewhere(&mut value, &path, replacement);
        let bytes = serde_json::to_vec(&value).expect("serialises");
        let _ = Config::from_json(&bytes);
    }

    #[test]
    fn decide_never_panics_on_odd_requests(
        doc in config_doc(),
        method in ".{0,8}", host in ".{0,40}", path in ".{0,40}", query in ".{0,40}",
        headers in prop::collection::vec((".{0,12}", ".{0,40}"), 0..6),
        client_ip in prop::option::of(".{0,20}"),
        mint in prop::option::of(any::<[u8; 16]>()),
    ) {
        let config = Config::try_from(&doc).expect("valid");
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let req = Request { method: &method, host: &host, path: &path, query: &query,
            headers: &headers, client_ip: client_ip.as_deref(), mint };
        let d = decide(&config, &req);
        prop_assert_eq!(&decide(&config, &req), &d, "deterministic");
        prop_assert!(d.bucket.is_none_or(|b| b.get() < BUCKETS));
    }
}

proptest! {
    #[test]
    fn deciding_on_the_one_stored_route_equals_deciding_on_the_whole_config(
        doc in config_doc(),
        host in prop::sample::select(vec!["a.example.com", "b.example.com", "zz.example.com", "x"]),
        path in prop::sample::select(vec!["/", "/a", "/a/b", "/b", "/zz/q"]),
        method in prop::sample::select(vec!["GET", "POST"]),
        user in prop::option::of("[a-z0-9]{1,8}"),
    ) {
        let config = Config::try_from(&doc).expect("valid");
        let active = Active { applied: Applied { version: 3, digest: Digest::of(b"x") }, config };
        let bytes = active.to_compact();
        let stored = StoredActive::parse(&bytes).expect("parses");
        let headers: Vec<(&str, &str)> = user.iter().map(|u| ("x-user-id", u.as_str())).collect();
        let req = Request { method, host, path, query: "", headers: &headers, client_ip: None, mint: Some([1; 16]) };
        let one = stored.config_for(&req).expect("route decodes");
        let (full, cut) = (decide(&active.config, &req), decide(&one, &req));
        prop_assert_eq!(full.route.id(), cut.route.id());
        prop_assert_eq!((full.arm, full.origin, full.bucket, full.reason), (cut.arm, cut.origin, cut.bucket, cut.reason));
        prop_assert_eq!(full.key.map(|k| k.to_string()), cut.key.map(|k| k.to_string()));
        prop_assert_eq!(&full.flags, &cut.flags);
        prop_assert_eq!(&full.set_cookie, &cut.set_cookie);
        prop_assert_eq!(stored.applied(), active.applied);
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "schema",
            "routes",
            "id",
            "http://x.y",
            "header:a",
            "new_weight"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "schema",
                    "routes",
                    "id",
                    "old",
                    "new",
                    "new_weight",
                    "key",
                    "flags",
                    "x"
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces a node reached by following `path` (each index picks a child).
fn replace_somewhere(
    value: &mut serde_json::Value,
    path: &[prop::sample::Index],
    new: serde_json::Value,
) {
    let child = match (path.first(), &mut *value) {
        (Some(step), serde_json::Value::Array(items)) if !items.is_empty() => {
            let i = step.index(items.len());
            items.get_mut(i)
        }
        (Some(step), serde_json::Value::Object(map)) if !map.is_empty() => {
            let i = step.index(map.len());
            map.values_mut().nth(i)
        }
        _ => None,
    };
    match child {
        Some(child) => replace_somewhere(child, &path[1..], new),
        None => *value = new,
    }
}

/// Over a million keys, each weight sends within 0.1 percentage points of
/// its share to `new`. Keys are UUID-shaped, drawn from a fixed seed so the
/// check is repeatable.
#[test]
fn a_million_keys_split_within_a_tenth_of_a_point() {
    let mut state = 0x5eed_u64;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    const N: u32 = 1_000_000;
    let buckets: Vec<u32> = (0..N)
        .map(|_| {
            let (a, b) = (next(), next());
            bucket_of(
                "web",
                &format!(
                    "{:08x}-{:04x}-{:04x}-{:016x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xffff,
                    b
                ),
            )
            .get()
        })
        .collect();
    for percent in [0.01, 1.0, 10.0, 50.0] {
        let w = Weight::from_percent(percent).expect("valid");
        let on_new = buckets.iter().filter(|&&b| b < w.ppm()).count();
        let share = on_new as f64 * 100.0 / f64::from(N);
        assert!(
            (share - percent).abs() <= 0.1,
            "weight {percent} %: {share:.4} % on new"
        );
    }
}

proptest! {
    /// The client IP and the origin authority are written out by hand on
    /// every proxied request; they must read exactly as the formatting they
    /// replaced.
    #[test]
    fn the_hand_written_ip_and_authority_match_std_formatting(
        ip in any::<[u8; 4]>(),
        ip6 in any::<[u16; 8]>(),
        port in 1..=u16::MAX,
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{1,8}){0,2}",
    ) {
        let v4 = std::net::SocketAddr::from((ip, port));
        prop_assert_eq!(rollout_core::edge::request::client_ip_of(&v4.to_string()), v4.ip().to_string());
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::from(ip6), port));
        prop_assert_eq!(rollout_core::edge::request::client_ip_of(&v6.to_string()), v6.ip().to_string());
        let with_port = rollout_core::config::Origin::parse(&format!("http://{host}:{port}")).expect("valid");
        prop_assert_eq!(with_port.authority(), format!("{host}:{port}"));
        let without = rollout_core::config::Origin::parse(&format!("https://{host}")).expect("valid");
        prop_assert_eq!(without.authority(), host);
    }
}
