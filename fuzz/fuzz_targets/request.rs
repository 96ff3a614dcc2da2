//! The request and admin machines on raw request facts (the input format is
//! `rollout_fuzz::RequestInput`): `request::receive`, then
//! `Inbound::forward` against nothing stored, the fixed frame and (when the
//! input asks) an older-form frame, `Forward::after` with the origin's result
//! from the input, `response_headers`, `refuses_body`; and the admin machine
//! (`admin::begin`, `Push::finish`, `Swap::conflict`) on the same request with
//! the tail's body.
//!
//! Asserts, besides never panicking: what goes to an origin or back to a
//! client holds none of the client's or origin's hop-by-hop, `x-rollout-*`,
//! `x-forwarded-*`, `proxy-*` or platform headers, only the edge's own;
//! every status the edge answers with is one HTTP can carry; no header the
//! edge writes holds CR, LF or NUL unless the input's did; a push is only
//! swapped in when signed with the edge's key, and the value it writes reads
//! back as what it applied.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use rollout_core::edge::admin::{self, AdminStep, MAX_CONFLICTS, PushStep};
use rollout_core::edge::request::{
    After, Forward, OriginError, RawRequest, Target, is_platform_header, receive,
};
use rollout_core::edge::{Answer, Held};
use rollout_core::{Arm, Digest, Envelope, SIGNATURE_HEADER, SignatureHeader};
use rollout_fuzz::{NOW, OriginResult, RequestInput, frame, key, older_frame, stamped};

/// Names only the edge may set on the way to an origin.
const EDGE_OUT: &[&str] = &[
    "x-rollout-arm",
    "x-rollout-version",
    "x-rollout-flags",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

fn clean(bytes: &[u8]) -> bool {
    !bytes.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Hop-by-hop names that never travel on.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// The headers an origin gets: the client's that may travel, and the
/// edge's own set once each.
fn check_outbound(forward: &Forward, input: &RequestInput, input_clean: bool) {
    let has_ip = input
        .client_ip
        .as_deref()
        .is_some_and(|ip| ip.parse::<IpAddr>().is_ok());
    for name in EDGE_OUT {
        let count = forward
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count();
        let expected = usize::from(*name != "x-forwarded-for" || has_ip);
        assert_eq!(count, expected, "{name} sent {count} times");
    }
    for (name, value) in &forward.headers {
        let n = lower(name);
        if EDGE_OUT.contains(&n.as_str()) {
            if input_clean {
                assert!(clean(value), "{name} holds CR, LF or NUL");
            }
            continue;
        }
        assert!(
            !(n.starts_with("x-rollout-")
                || n.starts_with("x-forwarded-")
                || n.starts_with("proxy-")
                || is_platform_header(name)
                || HOP.contains(&n.as_str())),
            "{name} went to the origin"
        );
        assert!(
            input.headers.iter().any(|(n, v)| n == name && v == value),
            "{name} was not the client's"
        );
    }
}

/// An answer the edge gives itself: a status HTTP can carry, and headers
/// built from the config and fixed text only.
fn check_answer(answer: &Answer) {
    assert!(
        (200..=599).contains(&answer.status),
        "status {}",
        answer.status
    );
    for (name, value) in &answer.headers {
        assert!(
            clean(name.as_bytes()) && clean(value),
            "{name} holds CR, LF or NUL"
        );
    }
}

/// The client's response headers: the origin's minus hop-by-hop and
/// `x-rollout-*`, then the edge's own.
fn check_inbound(forward: &Forward, input: &RequestInput) {
    let headers = forward.response_headers(&input.response_headers);
    let own = forward.outcome.response_headers();
    let edge = |h: &[(String, Vec<u8>)]| {
        h.iter()
            .filter(|(n, _)| lower(n).starts_with("x-rollout-"))
            .count()
    };
    assert_eq!(
        edge(&headers),
        edge(&own),
        "the origin's x-rollout-* reached the client"
    );
    assert!(headers.ends_with(&own), "the edge's headers come last");
    for (name, _) in &headers {
        let n = lower(name);
        assert!(
            !HOP.contains(&n.as_str()) && !n.starts_with("proxy-"),
            "{name} reached the client"
        );
    }
}

fn check_forward(forward: &Forward, input: &RequestInput, input_clean: bool) {
    check_outbound(forward, input, input_clean);
    check_inbound(forward, input);
    if let Some(answer) = forward.refuses_body() {
        check_answer(&answer);
    }
    check_answer(&forward.unreadable_body());
    let why = String::from_utf8_lossy(&input.body);
    check_answer(&forward.failed(&why));
    let result = match input.result() {
        OriginResult::Status(s) => Ok(s),
        OriginResult::Connect => Err(OriginError::Connect(why.to_string())),
        OriginResult::Other => Err(OriginError::Other(why.to_string())),
    };
    if let Ok(status) = result {
        let _ = forward.relays_body(status);
    }
    match forward.after(result.as_ref().copied(), input.replayable()) {
        After::Relay => assert!(matches!(result, Ok(s) if (200..=599).contains(&s))),
        After::Retry(again) => {
            assert_eq!(again.outcome.arm, Arm::Old);
            assert!(forward.replay_limit().is_some() && input.replayable());
            check_outbound(&again, input, input_clean);
            check_inbound(&again, input);
            // A retry is the last: it never retries again.
            assert!(again.replay_limit().is_none());
            let last = again.after(result.as_ref().copied(), true);
            assert!(!matches!(last, After::Retry(_)));
        }
        After::Answer(answer) => check_answer(&answer),
    }
}

fn admin(input: &RequestInput) {
    let mut headers = input.headers.clone();
    if input.sign_body() {
        headers.push((SIGNATURE_HEADER.into(), stamped(&input.body).into_bytes()));
    }
    let stored = input.admin_holds_frame().then(frame);
    let public = key().public_key().to_string();
    let setting = if input.bad_key_setting() {
        "ed25519:AAAA"
    } else {
        public.as_str()
    };
    let step = admin::begin(&input.method, &headers, Ok(stored), Ok(setting), NOW);
    let push = match step {
        AdminStep::Answer(answer) => return check_answer(&answer),
        AdminStep::ReadBody(push) => push,
    };
    assert_eq!(input.method, "PUT");
    assert!(!input.bad_key_setting());
    if input.body.len() > push.limit() {
        return check_answer(&push.too_large());
    }
    check_answer(&push.unreadable());
    let mut swap = match push.finish(&input.body) {
        PushStep::Answer(answer) => return check_answer(&answer),
        PushStep::Swap(swap) => swap,
    };
    // Only a push the edge's key signed gets this far.
    let sent = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(SIGNATURE_HEADER))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    let header = sent
        .and_then(|s| SignatureHeader::parse(s).ok())
        .expect("a swapped push carried a signature header");
    let public = key().public_key();
    assert!(
        header.verify(&input.body, &[public]).is_ok(),
        "a push without the edge's signature was swapped in"
    );
    // A first push (nothing held) is only taken with a fresh stamp.
    if stored.is_none() {
        assert_eq!(
            header.check_stamp(&public, &Digest::of(&input.body), NOW),
            Ok(true),
            "an unstamped first push was swapped in"
        );
    }
    let envelope = Envelope::parse(&input.body).expect("a swapped push is a valid envelope");
    let written = Held::read(Some(&swap.value)).applied();
    assert_eq!(written, Some(envelope.applied()));
    let own = swap.value.clone();
    let now: Option<&[u8]> = match input.conflict_with() {
        0 => None,
        1 => Some(frame()),
        2 => Some(&own),
        _ => Some(&input.body),
    };
    for round in 0..=MAX_CONFLICTS + 1 {
        match swap.conflict(now) {
            PushStep::Answer(answer) => {
                check_answer(&answer);
                break;
            }
            PushStep::Swap(next) => {
                assert!(round < MAX_CONFLICTS, "more conflicts than MAX_CONFLICTS");
                swap = next;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = RequestInput::decode(data);
    let input_clean = input
        .headers
        .iter()
        .chain(&input.response_headers)
        .all(|(n, v)| clean(n.as_bytes()) && clean(v));
    let raw = RawRequest {
        method: &input.method,
        target: &input.target,
        authority: input.authority.as_deref(),
        headers: &input.headers,
        client_ip: input.client_ip.as_deref(),
        https: input.https(),
    };
    admin(&input);
    let inbound = match receive(&raw) {
        Ok(Target::Proxy(inbound)) => inbound,
        Ok(Target::Admin) => return,
        Err(answer) => return check_answer(&answer),
    };
    assert!(rollout_core::edge::request::valid_authority(inbound.host()));
    let mut helds = vec![Held::Nothing, Held::read(Some(frame()))];
    if input.rederive() {
        helds.push(Held::read(Some(older_frame())));
    }
    for held in &helds {
        for bootstrap in [Some("http://bootstrap.internal:8080"), None] {
            match inbound.forward(held, || bootstrap.map(str::to_owned), input.mint()) {
                Ok(forward) => check_forward(&forward, &input, input_clean),
                Err(answer) => check_answer(&answer),
            }
        }
    }
});
