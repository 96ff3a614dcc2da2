//! What an edge reads from its store: any bytes as the stored value
//! (`Held::read`, `.applied()`), as a frame, as a compact form, and requests
//! forwarded against them (a request decodes the route it takes from the
//! stored bytes, without validating them again).
//!
//! Asserts, besides never panicking: a frame that parses writes back to the
//! same bytes; a compact form that decodes round-trips
//! (`from_compact(to_compact(a)) == a`); a re-derived value is a frame in
//! this build's form that reads back as the same applied version.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rollout_core::edge::request::{RawRequest, Target, receive};
use rollout_core::edge::stored::{COMPACT_FORM, Frame, compact_of};
use rollout_core::edge::{Active, Held, StoredActive};
use rollout_core::{Request, decide};

fn headers() -> Vec<(String, Vec<u8>)> {
    vec![
        ("host".into(), b"shop.example.com".to_vec()),
        ("x-user-id".into(), b"alice".to_vec()),
        (
            "cookie".into(),
            b"sid=s1; rid=r1; rollout_force=new".to_vec(),
        ),
        ("x-rollout-force".into(), b"new:test".to_vec()),
    ]
}

fn forward_all(held: &Held<'_>) {
    let headers = headers();
    for (method, target) in [
        ("GET", "/api/items?uid=7"),
        ("POST", "/"),
        ("PUT", "/down/x"),
    ] {
        let raw = RawRequest {
            method,
            target,
            authority: None,
            headers: &headers,
            client_ip: Some("192.0.2.1"),
            https: true,
        };
        let Ok(Target::Proxy(inbound)) = receive(&raw) else {
            panic!("the fixed requests are proxied");
        };
        for bootstrap in [Some("http://old.internal"), None] {
            if let Ok(forward) =
                inbound.forward(held, || bootstrap.map(str::to_owned), Some([3; 16]))
            {
                let _ = forward.after(Ok(503), true);
                let _ = forward.response_headers(&headers);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let held = Held::read(Some(data));
    let applied = held.applied();
    match &held {
        Held::Rederived { value } => {
            let frame = Frame::parse(value).expect("a re-derived value is a frame");
            assert_eq!(frame.form, COMPACT_FORM);
            let again = Held::read(Some(value));
            assert!(matches!(again, Held::Ready(_)));
            assert_eq!(again.applied(), applied);
        }
        Held::Ready(stored) => assert_eq!(Some(stored.applied()), applied),
        Held::Nothing => unreachable!("bytes were stored"),
        Held::Unreadable => assert_eq!(applied, None),
    }
    forward_all(&held);

    if let Some(frame) = Frame::parse(data) {
        assert_eq!(frame.to_bytes(), data, "a frame does not write back");
    }
    let _ = compact_of(data);

    if let Some(stored) = StoredActive::parse(data) {
        let _ = stored.applied();
        let req = Request {
            method: "GET",
            host: "shop.example.com",
            path: "/api/x",
            query: "uid=1",
            headers: &[("x-user-id", "u1"), ("cookie", "rid=r")],
            client_ip: Some("192.0.2.1"),
            mint: Some([1; 16]),
        };
        if let Some(config) = stored.config_for(&req) {
            let decision = decide(&config, &req);
            let _ = (decision.debug_headers(), decision.flags_header());
        }
    }
    if let Some(active) = Active::from_compact(data) {
        let compact = active.to_compact();
        assert_eq!(
            Active::from_compact(&compact).as_ref(),
            Some(&active),
            "a decoded compact form does not round-trip"
        );
    }
});
