use super::*;
use crate::edge::stored::frame_for;
use crate::edge::{Active, Held};
use crate::envelope::{Applied, Digest};

fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect()
}

fn raw<'a>(method: &'a str, target: &'a str, headers: &'a RawHeaders) -> RawRequest<'a> {
    RawRequest {
        method,
        target,
        authority: None,
        headers,
        client_ip: Some("192.0.2.1"),
        https: false,
    }
}

fn status(result: Result<Target<'_>, Answer>) -> u16 {
    match result {
        Ok(Target::Admin) => 1,
        Ok(Target::Proxy(_)) => 0,
        Err(a) => a.status,
    }
}

#[test]
fn dot_segments_are_refused_in_every_spelling() {
    for path in [
        "/web/../api/x",
        "/./x",
        "/x/.",
        "/x/..",
        "/%2e%2e/etc/passwd",
        "/a/%2E%2e/b",
        "/a/.%2E/b",
        "/%2e",
        "/a/../.well-known/rollout/config",
    ] {
        let h = headers(&[("host", b"edge.example")]);
        assert_eq!(status(receive(&raw("GET", path, &h))), 400, "{path}");
    }
    for path in [
        "/a..b/.c",
        "/x?p=../y",
        "/.../x",
        "/%2e%2e%2e",
        "/web/%7Euser//double",
    ] {
        let h = headers(&[("host", b"edge.example")]);
        assert_eq!(status(receive(&raw("GET", path, &h))), 0, "{path}");
    }
}

#[test]
fn host_must_be_one_plain_authority() {
    for (what, h) in [
        (
            "two",
            headers(&[("host", b"a.example"), ("Host", b"a.example")]),
        ),
        ("space", headers(&[("host", b"a.example b")])),
        ("userinfo", headers(&[("host", b"user@evil.example")])),
        ("empty", headers(&[("host", b"")])),
        ("missing", headers(&[])),
        ("bad port", headers(&[("host", b"a.example:99999")])),
        ("empty port", headers(&[("host", b"a.example:")])),
        ("slash", headers(&[("host", b"a.example/x")])),
        ("not utf-8", headers(&[("host", b"\xff")])),
    ] {
        assert_eq!(status(receive(&raw("GET", "/", &h))), 400, "{what}");
    }
    for ok in [
        "a.example",
        "a.example:8080",
        "127.0.0.1:1",
        "[2001:db8::1]:443",
        "[::1]",
        "x_y-z~",
    ] {
        let h = headers(&[("host", ok.as_bytes())]);
        assert_eq!(status(receive(&raw("GET", "/", &h))), 0, "{ok}");
    }
    // wasi:http reports the authority instead of passing Host through.
    let none = headers(&[]);
    let spin = RawRequest {
        authority: Some("edge.example:3000"),
        ..raw("GET", "/", &none)
    };
    assert_eq!(status(receive(&spin)), 0);
    let spin = RawRequest {
        authority: Some("user@edge.example"),
        ..raw("GET", "/", &none)
    };
    assert_eq!(status(receive(&spin)), 400);
}

#[test]
fn targets_other_than_a_path_or_absolute_url_are_refused() {
    let h = headers(&[("host", b"edge.example")]);
    assert_eq!(
        status(receive(&raw("CONNECT", "edge.example:443", &h))),
        405
    );
    assert_eq!(status(receive(&raw("OPTIONS", "*", &h))), 400);
    assert_eq!(status(receive(&raw("GET", "web", &h))), 400);
    assert_eq!(
        status(receive(&raw("GET", "http://user@evil.example/web", &h))),
        400
    );
    assert_eq!(
        status(receive(&raw("GET", "http://edge.example?x", &h))),
        400
    );
    match receive(&raw("GET", "HTTP://other.example:81/web?q=1", &h)) {
        Ok(Target::Proxy(inbound)) => {
            assert_eq!(
                inbound.host(),
                "other.example:81",
                "the target's authority replaces Host"
            );
            assert_eq!(inbound.path_with_query(), "/web?q=1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status(receive(&raw("GET", "/.well-known/rollout/config?x", &h))),
        1
    );
    assert_eq!(
        status(receive(&raw("PUT", "/.well-known/rollout/config", &h))),
        1
    );
    assert_eq!(
        status(receive(&raw("GET", "/.well-known/rollout/configs", &h))),
        0
    );
}

fn held_value(config: &str) -> Vec<u8> {
    let active = Active {
        applied: Applied {
            version: 4,
            digest: Digest::of(b"x"),
        },
        config: Config::from_json(config.as_bytes()).expect("config"),
    };
    frame_for(&active, "sig", b"{}")
}

const CONFIG: &str = r#"{"schema":1,"debug_headers":true,"routes":[
    {"id":"flaky","match":{"path_prefix":"/flaky"},"old":"http://old.test","new":"http://new.test",
     "new_weight":100,"key":["header:x-user-id"],"failover":{"statuses":[503]}},
    {"id":"web","old":"http://old.test","new":"http://new.test","new_weight":50,"key":["header:x-user-id"]}]}"#;

fn forward(method: &str, target: &str, h: &[(&str, &[u8])]) -> Forward {
    let mut all = headers(&[("host", b"edge.example")]);
    all.extend(headers(h));
    let value = held_value(CONFIG);
    let held = Held::read(Some(&value));
    let Ok(Target::Proxy(inbound)) = receive(&raw(method, target, &all)) else {
        panic!("proxied");
    };
    inbound.forward(&held, || None, None).expect("forward")
}

fn value<'a>(list: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    list.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

#[test]
fn a_key_header_is_read_once_as_utf8_or_not_at_all() {
    let reason = |h: &[(&str, &[u8])]| {
        let f = forward("GET", "/", h);
        let debug: Vec<_> = f
            .outcome
            .debug
            .iter()
            .map(|(n, v)| (*n, v.clone()))
            .collect();
        debug
            .iter()
            .find(|(n, _)| *n == "x-rollout-reason")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        reason(&[("x-user-id", "é1".as_bytes())]).as_deref(),
        Some("weight")
    );
    let f = forward("GET", "/", &[("x-user-id", "é1".as_bytes())]);
    let bucket = crate::bucket_of("web", "é1").get().to_string();
    assert!(
        f.outcome
            .debug
            .iter()
            .any(|(n, v)| *n == "x-rollout-bucket" && *v == bucket),
        "the UTF-8 key é1 buckets as the string é1"
    );
    for h in [
        &[("x-user-id", &b"\xff1"[..])][..],
        &[("x-user-id", b"a"), ("X-User-Id", b"a")],
        &[("x-user-id", b"a"), ("x-user-id", b"\xff")],
        &[("x-user-id", b"a, b")],
        &[("x-user-id", "\u{FFFD}1".as_bytes())],
    ] {
        assert_eq!(reason(h).as_deref(), Some("no-key"), "{h:?}");
    }
}

#[test]
fn the_origin_request_is_built_from_checked_facts_only() {
    let f = forward(
        "GET",
        "/web/%7Euser//x?q=a%20b",
        &[
            ("accept", b"*/*"),
            ("spin-client-addr", b"1.2.3.4:5"),
            ("cf-ray", b"1"),
            ("te", b"trailers"),
        ],
    );
    assert_eq!(f.path_with_query, "/web/%7Euser//x?q=a%20b");
    assert_eq!(f.origin.authority(), "old.test");
    let names: Vec<&str> = f.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "accept",
            "x-rollout-arm",
            "x-rollout-version",
            "x-rollout-flags",
            "x-forwarded-for",
            "forwarded",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(value(&f.headers, "x-rollout-version"), Some(&b"4"[..]));
    assert_eq!(
        value(&f.headers, "forwarded"),
        Some(&b"for=192.0.2.1;host=edge.example;proto=http"[..])
    );
}

#[test]
fn failover_retries_on_old_only_when_the_body_can_be_sent_again() {
    let f = forward("GET", "/flaky/x", &[("x-user-id", b"u")]);
    assert_eq!(f.outcome.arm, Arm::New);
    assert_eq!(f.replay_limit(), Some(REPLAY_LIMIT));
    let After::Retry(retry) = f.after(Ok(503), true) else {
        panic!("503 from new is retried on old");
    };
    assert_eq!(
        (retry.outcome.arm, retry.origin.authority().as_str()),
        (Arm::Old, "old.test")
    );
    assert_eq!(value(&retry.headers, "x-rollout-arm"), Some(&b"old"[..]));
    assert!(
        matches!(retry.after(Ok(503), true), After::Relay),
        "old's answer is relayed"
    );
    assert!(
        matches!(f.after(Ok(503), false), After::Relay),
        "a streamed body is not replayed"
    );
    assert!(matches!(f.after(Ok(500), true), After::Relay));
    let refused = OriginError::Connect("refused".into());
    assert!(matches!(f.after(Err(&refused), true), After::Retry(_)));
    let broken = OriginError::Other("reset".into());
    match f.after(Err(&broken), true) {
        After::Answer(a) => {
            assert_eq!(a.status, 502);
            assert_eq!(a.body, b"rollout edge: origin new (config) failed: reset\n");
            assert_eq!(value(&a.headers, "x-rollout-arm"), Some(&b"new"[..]));
        }
        other => panic!("{other:?}"),
    }
    // POST is not idempotent: never failed over.
    assert_eq!(
        forward("POST", "/flaky/x", &[("x-user-id", b"u")]).replay_limit(),
        None
    );
}

#[test]
fn without_a_config_everything_goes_to_the_bootstrap_origin_or_a_502() {
    let h = headers(&[("host", b"edge.example")]);
    let Ok(Target::Proxy(inbound)) = receive(&raw("GET", "/x", &h)) else {
        panic!("proxied");
    };
    for held in [Held::Nothing, Held::Unreadable] {
        let f = inbound
            .forward(&held, || Some("http://boot.test:81".to_owned()), None)
            .expect("bootstrap");
        assert_eq!(
            (f.origin.authority().as_str(), f.outcome.version),
            ("boot.test:81", 0)
        );
        let answer = inbound
            .forward(&held, || Some("not a url".to_owned()), None)
            .expect_err("no origin");
        assert_eq!(answer.status, 502);
        assert_eq!(value(&answer.headers, "x-rollout-version"), Some(&b"0"[..]));
    }
}

#[test]
fn allow_lists_match_scheme_host_and_port() {
    let list = AllowList::parse("http://a.test:1, https://b.test\nhttp://[::1]:2").expect("list");
    for (origin, ok) in [
        ("http://a.test:1", true),
        ("http://a.test:2", false),
        ("https://a.test:1", false),
        ("https://b.test", true),
        ("http://[::1]:2", true),
    ] {
        assert_eq!(
            list.permits(&Origin::parse(origin).expect("origin")),
            ok,
            "{origin}"
        );
    }
    assert!(AllowList::parse("ftp://x").is_err());
    assert_eq!(AllowList::parse("").expect("empty"), AllowList::default());
}

#[test]
fn only_an_address_is_taken_as_the_client_ip() {
    let h = headers(&[("host", b"edge.example")]);
    for (given, kept) in [
        (Some("192.0.2.7"), Some("192.0.2.7")),
        (Some("2001:db8::1"), Some("2001:db8::1")),
        (Some("1.2.3.4;host=evil"), None),
        (Some("x\", for=evil"), None),
        (None, None),
    ] {
        let r = RawRequest {
            client_ip: given,
            ..raw("GET", "/", &h)
        };
        let Ok(Target::Proxy(inbound)) = receive(&r) else {
            panic!("proxied");
        };
        let f = inbound
            .forward(&Held::Nothing, || Some("http://boot.test".to_owned()), None)
            .expect("bootstrap");
        assert_eq!(
            value(&f.headers, "x-forwarded-for").map(|v| std::str::from_utf8(v).expect("utf-8")),
            kept,
            "{given:?}"
        );
    }
}

#[test]
fn methods_and_target_characters_every_build_reads_alike() {
    let h = headers(&[("host", b"edge.example")]);
    for method in ["get", "FOO", "Get"] {
        assert_eq!(status(receive(&raw(method, "/", &h))), 501, "{method}");
    }
    for target in [
        "/web\\..\\api",
        "/a\"b",
        "/a b",
        "/x#frag",
        "/q?name=O'Brien",
        "/{x}",
        "/a^b",
        "/a`b",
        "/a|b",
        "/a<b>",
        "/\u{e9}",
        "/a\u{7f}",
    ] {
        assert_eq!(status(receive(&raw("GET", target, &h))), 400, "{target:?}");
    }
    for target in ["/a;p=1/b", "/%7Euser/%5C", "/x?a=1&b=(2)*!$+,:@", "/%zz"] {
        assert_eq!(status(receive(&raw("GET", target, &h))), 0, "{target:?}");
    }
}

#[test]
fn a_transfer_coding_other_than_chunked_alone_is_501() {
    let with = |values: &[&[u8]]| {
        let mut h = headers(&[("host", b"edge.example")]);
        h.extend(
            values
                .iter()
                .map(|v| ("Transfer-Encoding".to_owned(), v.to_vec())),
        );
        status(receive(&raw("POST", "/", &h)))
    };
    for values in [
        &[b"gzip, chunked" as &[u8]][..],
        &[b"chunked, chunked"],
        &[b"identity, chunked"],
        &[b"gzip"],
        &[b"chunked;x=1"],
        &[b""],
        &[b" , "],
        &[b"gzip", b"chunked"],
        &[b"chunked", b"chunked"],
        &[b"chunked", b"gzip"],
    ] {
        assert_eq!(with(values), 501, "{values:?}");
    }
    for values in [
        &[][..],
        &[b"chunked" as &[u8]],
        &[b"Chunked"],
        &[b" chunked "],
        &[b"chunked,"],
    ] {
        assert_eq!(with(values), 0, "{values:?}");
    }
    // Framing is checked first: the request is never read any further.
    let h = headers(&[
        ("host", b"edge.example"),
        ("transfer-encoding", b"gzip, chunked"),
    ]);
    assert_eq!(status(receive(&raw("CONNECT", "/", &h))), 501);
}

#[test]
fn headers_named_in_connection_are_gone_before_the_decision() {
    let f = forward(
        "GET",
        "/flaky/x",
        &[
            ("x-user-id", b"u"),
            ("connection", b"close, x-user-id, x-forwarded-for"),
            ("x-forwarded-for", b"9.9.9.9"),
        ],
    );
    assert_eq!(f.outcome.arm, Arm::Old, "no key once x-user-id is gone");
    assert_eq!(
        value(&f.headers, "x-forwarded-for"),
        Some(&b"192.0.2.1"[..])
    );
    assert_eq!(value(&f.headers, "x-user-id"), None);
    // Naming only headers that are not there takes nothing away.
    let f = forward(
        "GET",
        "/flaky/x",
        &[("connection", b"keep-alive"), ("x-user-id", b"u")],
    );
    assert_eq!(f.outcome.arm, Arm::New, "keyed, new_weight 100");
    assert_eq!(value(&f.headers, "x-user-id"), Some(&b"u"[..]));
}

#[test]
fn only_final_statuses_are_relayed_and_get_and_head_carry_no_body() {
    let f = forward("GET", "/x", &[]);
    for status in [101, 199, 600, 999] {
        match f.after(Ok(status), true) {
            After::Answer(a) => assert_eq!(a.status, 502, "{status}"),
            other => panic!("{status}: {other:?}"),
        }
    }
    assert!(matches!(f.after(Ok(599), true), After::Relay));
    assert_eq!(f.refuses_body().map(|a| a.status), Some(400));
    assert_eq!(
        forward("HEAD", "/x", &[]).refuses_body().map(|a| a.status),
        Some(400)
    );
    assert!(forward("PUT", "/x", &[]).refuses_body().is_none());
    assert!(forward("DELETE", "/x", &[]).refuses_body().is_none());
}
