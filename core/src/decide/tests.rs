use super::*;
use crate::Weight;

const CONFIG: &str = r#"{"schema":1,"debug_headers":true,"routes":[
  {"id":"api","match":{"host":"api.example.com","path_prefix":"/v2","methods":["GET","POST"]},
   "old":"https://api-old.internal","new":"https://api-new.internal","new_weight":100,
   "key":["header:x-user-id","query:uid","client-ip"],
   "overrides":[{"from":"header:x-force","token_sha256":["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}],
   "flags":[{"name":"on-for-all","percent":100},{"name":"listed","percent":0,"allow":["vip"]},{"name":"off","percent":0}],
   "failover":{"statuses":[503]}},
  {"id":"static","match":{"host":"*.cdn.example.com"},"old":"https://s-old.internal","new":"https://s-new.internal","new_weight":0},
  {"id":"web","old":"https://old.internal","new":"https://new.internal","new_weight":50,
   "key":["cookie:sid","cookie:rollout_id"],"assign_cookie":true,"overrides":[{"from":"cookie:force"}]}]}"#;

fn config() -> Config {
    Config::from_json(CONFIG.as_bytes()).expect("valid")
}

fn req<'a>(
    method: &'a str,
    host: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
) -> Request<'a> {
    Request {
        method,
        host,
        path,
        query: "",
        headers,
        client_ip: None,
        mint: None,
    }
}

#[test]
fn the_first_matching_route_wins_and_the_default_takes_the_rest() {
    let c = config();
    let cases = [
        ("GET", "api.example.com", "/v2/users", "api"),
        ("GET", "API.Example.com:443", "/v2", "api"),
        ("GET", "api.example.com.", "/v2", "api"),
        ("DELETE", "api.example.com", "/v2/users", "web"),
        ("GET", "api.example.com", "/v2x", "web"),
        ("GET", "api.example.com", "/v1", "web"),
        ("GET", "img.cdn.example.com", "/a.png", "static"),
        ("GET", "cdn.example.com", "/a.png", "web"),
        ("GET", "evil-cdn.example.com", "/a.png", "web"),
        ("GET", "other.example", "/", "web"),
        ("GET", "", "", "web"),
    ];
    for (method, host, path, want) in cases {
        assert_eq!(
            decide(&c, &req(method, host, path, &[])).route.id(),
            want,
            "{method} {host}{path}"
        );
    }
}

#[test]
fn key_sources_are_tried_in_order_and_empty_values_are_absent() {
    let c = config();
    let mut r = req("GET", "api.example.com", "/v2", &[]);
    r.query = "a=1&uid=from-query";
    r.client_ip = Some("192.0.2.1");
    let d = decide(&c, &r);
    assert_eq!(d.key.map(|k| k.to_string()).as_deref(), Some("query:uid"));
    assert_eq!(d.bucket, Some(bucket_of("api", "from-query")));

    let headers = [("X-User-Id", "  ")];
    let r2 = Request {
        headers: &headers,
        ..r
    };
    assert_eq!(
        decide(&c, &r2).key.map(|k| k.to_string()).as_deref(),
        Some("query:uid")
    );

    let headers = [("X-User-Id", "u1")];
    let r3 = Request {
        headers: &headers,
        ..r
    };
    assert_eq!(decide(&c, &r3).bucket, Some(bucket_of("api", "u1")));

    let r4 = Request { query: "", ..r };
    assert_eq!(decide(&c, &r4).bucket, Some(bucket_of("api", "192.0.2.1")));
}

#[test]
fn cookies_are_found_in_any_cookie_header() {
    let c = config();
    let headers = [
        ("cookie", "a=1; b=2"),
        ("Cookie", "x=y;rollout_id=\"abc\" ;z=1"),
    ];
    let d = decide(&c, &req("GET", "www.example.com", "/", &headers));
    assert_eq!(
        d.key.map(|k| k.to_string()).as_deref(),
        Some("cookie:rollout_id")
    );
    assert_eq!(d.bucket, Some(bucket_of("web", "abc")));
    assert_eq!(d.set_cookie, None, "a present key mints nothing");
}

#[test]
fn the_weight_decides_when_nothing_overrides() {
    let c = config();
    let route = c.route("web").expect("web");
    for i in 0..200 {
        let value = format!("sid=user-{i}");
        let headers = [("cookie", value.as_str())];
        let d = decide(&c, &req("GET", "h", "/", &headers));
        let bucket = bucket_of("web", &format!("user-{i}"));
        assert_eq!(d.bucket, Some(bucket));
        assert_eq!(d.arm == Arm::New, route.weight().admits(bucket));
        assert_eq!(
            d.origin,
            if d.arm == Arm::New {
                &route.new
            } else {
                &route.old
            }
        );
        assert_eq!(d.reason, Reason::Weight);
    }
}

#[test]
fn without_a_key_a_cookie_is_minted_when_the_route_assigns_one() {
    let c = config();
    let mut r = req("GET", "www.example.com", "/", &[]);
    r.mint = Some([0xab; 16]);
    let d = decide(&c, &r);
    let id = "ab".repeat(16);
    assert_eq!(d.key, Some(KeyOrigin::Minted));
    assert_eq!(d.bucket, Some(bucket_of("web", &id)));
    let cookie = d.set_cookie.expect("minted");
    assert_eq!(
        cookie.name, "sid",
        "the first cookie source names the cookie"
    );
    assert_eq!(
        cookie.header_value(),
        format!("sid={id}; Max-Age=34560000; Path=/; HttpOnly; Secure; SameSite=Lax")
    );

    // The next request carries the cookie and lands in the same bucket.
    let header = format!("sid={id}");
    let headers = [("cookie", header.as_str())];
    let again = decide(&c, &req("GET", "www.example.com", "/", &headers));
    assert_eq!((again.bucket, again.arm), (d.bucket, d.arm));
}

#[test]
fn without_a_key_or_randomness_the_request_goes_to_old() {
    let c = config();
    let d = decide(&c, &req("GET", "www.example.com", "/", &[]));
    assert_eq!(
        (d.arm, d.reason, d.bucket, d.set_cookie),
        (Arm::Old, Reason::NoKey, None, None)
    );
    let api = decide(&c, &req("GET", "api.example.com", "/v2", &[]));
    assert_eq!(
        (api.arm, api.reason),
        (Arm::Old, Reason::NoKey),
        "even at 100 %"
    );
}

#[test]
fn an_override_without_tokens_picks_the_arm() {
    let c = config();
    for (cookie, arm) in [("force=new", Arm::New), ("force=OLD", Arm::Old)] {
        let headers = [("cookie", cookie)];
        let d = decide(&c, &req("GET", "h", "/", &headers));
        assert_eq!((d.arm, d.reason), (arm, Reason::Override), "{cookie}");
    }
    let headers = [("cookie", "force=sideways; sid=k")];
    assert_eq!(
        decide(&c, &req("GET", "h", "/", &headers)).reason,
        Reason::Weight
    );
}

#[test]
fn an_override_with_tokens_needs_a_listed_token() {
    let c = config();
    // sha256("test") is the listed digest.
    let cases = [
        ("old:test", Some(Arm::Old)),
        ("old", None),
        ("old:wrong", None),
        ("old:", None),
        ("old:test ", Some(Arm::Old)),
    ];
    for (value, want) in cases {
        let headers = [("x-user-id", "u"), ("x-force", value)];
        let d = decide(&c, &req("GET", "api.example.com", "/v2", &headers));
        match want {
            Some(arm) => assert_eq!((d.arm, d.reason), (arm, Reason::Override), "{value:?}"),
            None => assert_eq!((d.arm, d.reason), (Arm::New, Reason::Weight), "{value:?}"),
        }
    }
}

#[test]
fn flags_are_on_by_percentage_or_allow_list() {
    let c = config();
    let headers = [("x-user-id", "vip")];
    let d = decide(&c, &req("GET", "api.example.com", "/v2", &headers));
    assert_eq!(d.flags, ["on-for-all", "listed"]);
    assert_eq!(d.flags_header(), "on-for-all,listed");
    let headers = [("x-user-id", "someone")];
    assert_eq!(
        decide(&c, &req("GET", "api.example.com", "/v2", &headers)).flags,
        ["on-for-all"]
    );
    assert_eq!(
        decide(&c, &req("GET", "api.example.com", "/v2", &[])).flags,
        ["on-for-all"],
        "without a key only 100 % flags are on"
    );
}

#[test]
fn a_decision_counts_the_hashes_it_took() {
    let c = config();
    let count = |headers: &[(&str, &str)]| {
        decide(&c, &req("GET", "api.example.com", "/v2", headers)).hashes
    };
    // The arm's bucket and all three flags'.
    assert_eq!(count(&[("x-user-id", "someone")]), 4);
    // `listed` admits vip by its allow-list, without a bucket.
    assert_eq!(count(&[("x-user-id", "vip")]), 3);
    // No key: no bucket at all.
    assert_eq!(count(&[]), 0);
}

#[test]
fn a_flag_uses_its_own_salt() {
    let json = r#"{"schema":1,"routes":[{"id":"r","old":"http://o.x","new":"http://n.x","new_weight":0,
        "key":["header:k"],"flags":[{"name":"f","percent":50},{"name":"g","percent":50,"salt":"s"}]}]}"#;
    let c = Config::from_json(json.as_bytes()).expect("valid");
    let half = Weight::from_percent(50.0).expect("50");
    for i in 0..100 {
        let key = format!("k{i}");
        let headers = [("k", key.as_str())];
        let d = decide(&c, &req("GET", "h", "/", &headers));
        assert_eq!(d.flags.contains(&"f"), half.admits(bucket_of("f", &key)));
        assert_eq!(d.flags.contains(&"g"), half.admits(bucket_of("s", &key)));
    }
}

#[test]
fn failover_applies_only_to_idempotent_requests_on_new() {
    let c = config();
    let headers = [("x-user-id", "u")];
    let get = decide(&c, &req("GET", "api.example.com", "/v2", &headers));
    assert_eq!(get.arm, Arm::New);
    assert!(
        get.failover("GET")
            .is_some_and(|f| f.retries_status(503) && f.connect_error)
    );
    assert!(get.failover("GET").is_some_and(|f| !f.retries_status(500)));
    assert!(get.failover("POST").is_none());
    let old = decide(&c, &req("GET", "www.example.com", "/", &[]));
    assert!(old.failover("GET").is_none());
}

#[test]
fn debug_headers_name_the_route_reason_bucket_and_key_source() {
    let c = config();
    let headers = [("x-user-id", "u1")];
    let d = decide(&c, &req("GET", "api.example.com", "/v2", &headers));
    let bucket = bucket_of("api", "u1").to_string();
    assert_eq!(
        d.debug_headers(),
        [
            ("x-rollout-route", "api".to_owned()),
            ("x-rollout-reason", "weight".to_owned()),
            ("x-rollout-bucket", bucket),
            ("x-rollout-key", "header:x-user-id".to_owned()),
        ]
    );
    let keyless = decide(&c, &req("GET", "www.example.com", "/", &[]));
    assert_eq!(
        keyless.debug_headers(),
        [
            ("x-rollout-route", "web".to_owned()),
            ("x-rollout-reason", "no-key".to_owned()),
        ],
        "no bucket or key header without a key"
    );
}

#[test]
fn decide_key_agrees_with_decide_for_the_same_key_on_the_same_route() {
    let c = config();
    let web = c.route("web").expect("web route");
    for i in 0..500 {
        let key = format!("user-{i}");
        let cookie = format!("sid={key}");
        let headers = [("cookie", cookie.as_str())];
        let full = decide(&c, &req("GET", "shop.example.com", "/", &headers));
        let alone = decide_key(web, &key);
        assert_eq!(full.route.id(), "web");
        assert_eq!(
            (alone.arm, alone.bucket, alone.reason, &alone.flags),
            (full.arm, full.bucket, full.reason, &full.flags),
            "key {key}"
        );
    }
    let api = c.route("api").expect("api route");
    let vip = decide_key(api, "vip");
    assert_eq!(vip.flags, ["on-for-all", "listed"]);
    assert_eq!(
        (decide_key(api, "  ").arm, decide_key(api, "").reason),
        (Arm::Old, Reason::NoKey)
    );
}
