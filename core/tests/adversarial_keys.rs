//! Trusted key sets and push stamps, from the outside: what a network
//! attacker, the holder of a retired or leaked key, and an operator's
//! mistakes can and cannot do to an edge.
//!
//! `held_up`: properties that held from the start.
//! `findings`: properties an adversarial pass found broken, each fixed
//! since; these are their regression tests.

use rollout_core::edge::admin::{AdminStep, PushStep, begin};
use rollout_core::edge::{Answer, Trust, receive_push};
use rollout_core::{ConfigDoc, Digest, EnvelopeDoc, MAX_STAMP_SKEW_SECS, SecretKey};

/// The edge's clock in these tests (Unix seconds).
const NOW: u64 = 1_796_030_000;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

/// The control service's first key, every edge's bootstrap key.
fn a() -> SecretKey {
    key(1)
}

/// The key control rotated to.
fn b() -> SecretKey {
    key(2)
}

/// A key only an attacker holds.
fn x() -> SecretKey {
    key(66)
}

fn config() -> ConfigDoc {
    serde_json::from_value(serde_json::json!({
        "schema": 1,
        "routes": [{"id": "web", "old": "http://o.example", "new": "http://n.example", "new_weight": 1}]
    }))
    .expect("config doc")
}

/// An envelope body of `version` declaring `keys` (text forms) as given.
fn body_declaring(version: u64, keys: Option<Vec<String>>) -> Vec<u8> {
    EnvelopeDoc {
        version,
        parent: None,
        issued_at: "2026-11-30T08:00:00Z".into(),
        actor: "test".into(),
        reason: "adversarial".into(),
        config: config(),
        keys,
    }
    .to_body()
}

/// An envelope body of `version` declaring `keys`.
fn body(version: u64, keys: Option<&[&SecretKey]>) -> Vec<u8> {
    body_declaring(
        version,
        keys.map(|k| k.iter().map(|k| k.public_key().to_string()).collect()),
    )
}

/// `signer`'s header for `body`, stamped at `at`.
fn stamped(signer: &SecretKey, body: &[u8], at: u64) -> String {
    signer
        .stamp(&signer.sign(body), &Digest::of(body), at)
        .expect("a key stamps its own signature")
}

/// The base64 signature in a header (what follows `ed25519=`, up to `;`).
fn raw_signature(header: &str) -> &str {
    header
        .split(';')
        .next()
        .and_then(|s| s.trim().strip_prefix("ed25519="))
        .expect("an ed25519= part")
}

/// The `; at=...; stamp=...` tail of a stamped header.
fn stamp_tail(header: &str) -> String {
    let at = header.find("; at=").expect("a stamped header");
    header[at..].to_owned()
}

fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_slice(&answer.body).expect("json answer")
}

fn error(answer: &Answer) -> String {
    json(answer)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// One PUT through the admin machine, as every build runs it: the edge
/// holds `held`, was deployed with `bootstrap` and its clock reads `now`.
/// The answer and what the edge holds afterwards.
fn put_at(
    held: Option<&[u8]>,
    bootstrap: &str,
    body: &[u8],
    signature: &str,
    now: u64,
) -> (Answer, Option<Vec<u8>>) {
    let headers = vec![(
        rollout_core::SIGNATURE_HEADER.to_owned(),
        signature.as_bytes().to_vec(),
    )];
    let unchanged = held.map(<[u8]>::to_vec);
    match begin("PUT", &headers, Ok(held), Ok(bootstrap), now) {
        AdminStep::Answer(answer) => (answer, unchanged),
        AdminStep::ReadBody(push) => match push.finish(body) {
            PushStep::Answer(answer) => (answer, unchanged),
            PushStep::Swap(swap) => {
                let value = swap.value.clone();
                (swap.done(), Some(value))
            }
        },
    }
}

fn put(
    held: Option<&[u8]>,
    bootstrap: &str,
    body: &[u8],
    signature: &str,
) -> (Answer, Option<Vec<u8>>) {
    put_at(held, bootstrap, body, signature, NOW)
}

/// What the edge reports on GET.
fn get(held: Option<&[u8]>, bootstrap: &str) -> serde_json::Value {
    match begin("GET", &[], Ok(held), Ok(bootstrap), NOW) {
        AdminStep::Answer(answer) => json(&answer),
        AdminStep::ReadBody(_) => panic!("a GET is answered at once"),
    }
}

/// An edge deployed with A, taken through a whole rotation by the control
/// service: v1 (A, declares A), v2 (A, declares B and A), v3 (B, declares
/// B and A), v4 (B, declares B: A retired). What it holds afterwards.
fn rotated_edge() -> Vec<u8> {
    let bootstrap = a().public_key().to_string();
    let steps: [(u64, SecretKey, Vec<SecretKey>); 4] = [
        (1, a(), vec![a()]),
        (2, a(), vec![b(), a()]),
        (3, b(), vec![b(), a()]),
        (4, b(), vec![b()]),
    ];
    let mut held: Option<Vec<u8>> = None;
    for (version, signer, keys) in steps {
        let keys: Vec<&SecretKey> = keys.iter().collect();
        let body = body(version, Some(&keys));
        let (answer, after) = put(
            held.as_deref(),
            &bootstrap,
            &body,
            &stamped(&signer, &body, NOW),
        );
        assert_eq!(answer.status, 200, "v{version}: {}", error(&answer));
        held = after;
    }
    let report = get(held.as_deref(), &bootstrap);
    assert_eq!(report["version"], 4);
    assert_eq!(
        report["keys"],
        serde_json::json!([b().public_key().id().to_string()])
    );
    held.expect("the edge holds version 4")
}

mod held_up {
    use super::*;

    /// Every way of dressing up a signature by the retired key A, or by a
    /// key the edge never trusted, is refused with 401 and nothing changes.
    #[test]
    fn header_tricks_never_get_a_retired_or_unknown_key_past_the_edge() {
        let held = rotated_edge();
        let bootstrap = a().public_key().to_string();
        let body = body(5, Some(&[&a()]));
        let a_sig = raw_signature(&a().sign(&body)).to_owned();
        let x_sig = raw_signature(&x().sign(&body)).to_owned();
        let a_id = a().public_key().id().to_string();
        let b_id = b().public_key().id().to_string();
        let x_id = x().public_key().id().to_string();
        let a_tail = stamp_tail(&stamped(&a(), &body, NOW));
        let x_tail = stamp_tail(&stamped(&x(), &body, NOW));
        let cases = [
            // As control would send it: named, stamped.
            format!("ed25519={a_sig}; key={a_id}{a_tail}"),
            // Unnamed: tried against every trusted key, none verifies.
            format!("ed25519={a_sig}"),
            format!("ed25519={a_sig}{a_tail}"),
            // Naming the trusted key B over A's signature.
            format!("ed25519={a_sig}; key={b_id}"),
            format!("ed25519={a_sig}; key={b_id}{a_tail}"),
            // Duplicate key= parameters, either order.
            format!("ed25519={a_sig}; key={b_id}; key={a_id}"),
            format!("ed25519={a_sig}; key={a_id}; key={b_id}"),
            // Parameters before ed25519=.
            format!("key={b_id}; ed25519={a_sig}"),
            format!("key={b_id}; ed25519={a_sig}; key={a_id}"),
            // Case and whitespace games.
            format!("ED25519={a_sig}; key={b_id}"),
            format!("ed25519={a_sig}; KEY={b_id}"),
            format!("ed25519={a_sig}; Key={b_id}"),
            format!("ed25519={a_sig}; key={}", b_id.to_uppercase()),
            format!("  ed25519={a_sig}  ;   key = {b_id}  "),
            format!("ed25519 = {a_sig}; key={b_id}"),
            format!("ed25519={a_sig};key={b_id};"),
            format!("ed25519={a_sig}; ; key={b_id}"),
            format!("ed25519={a_sig}, key={b_id}"),
            format!("ed25519={a_sig}; key={b_id}; ed25519={a_sig}"),
            format!("ed25519={a_sig}; key={b_id}; extra=1"),
            // A key the edge never trusted, named and unnamed.
            format!("ed25519={x_sig}; key={x_id}{x_tail}"),
            format!("ed25519={x_sig}{x_tail}"),
            format!("ed25519={x_sig}; key={b_id}{x_tail}"),
            // A's signature with a stamp B could not have made.
            format!("ed25519={a_sig}; key={b_id}{a_tail}"),
        ];
        for signature in &cases {
            let (answer, after) = put(Some(&held), &bootstrap, &body, signature);
            assert_eq!(answer.status, 401, "{signature}: {}", error(&answer));
            assert_eq!(json(&answer)["version"], 4, "{signature}");
            assert_eq!(after.as_deref(), Some(held.as_slice()), "{signature}");
        }
        // The same body, signed by B, is what the edge takes.
        let (answer, _) = put(Some(&held), &bootstrap, &body, &b().sign(&body));
        assert_eq!(answer.status, 200, "{}", error(&answer));
    }

    /// A stamp belongs to one body, one key and one moment.
    #[test]
    fn a_stamp_cannot_be_moved_to_another_body_or_key_or_stretched_in_time() {
        let bootstrap = format!("{}, {}", a().public_key(), b().public_key());
        let one = body(7, None);
        let two = body(8, None);
        // A fresh stamp for body one, grafted onto body two's signature.
        let grafted = format!(
            "{}{}",
            a().sign(&two),
            stamp_tail(&stamped(&a(), &one, NOW))
        );
        let (answer, held) = put(None, &bootstrap, &two, &grafted);
        assert_eq!((answer.status, held), (401, None), "{}", error(&answer));
        // B's stamp on A's signature (both keys trusted).
        let crossed = format!(
            "{}{}",
            a().sign(&one),
            stamp_tail(&stamped(&b(), &one, NOW))
        );
        let (answer, held) = put(None, &bootstrap, &one, &crossed);
        assert_eq!((answer.status, held), (401, None), "{}", error(&answer));
        // Time at the edges of u64, and the window's edges.
        for at in [
            0,
            1,
            NOW - MAX_STAMP_SKEW_SECS - 1,
            NOW + MAX_STAMP_SKEW_SECS + 1,
            u64::MAX,
        ] {
            let (answer, held) = put(None, &bootstrap, &one, &stamped(&a(), &one, at));
            assert_eq!((answer.status, held), (401, None), "at={at}");
        }
        for at in [NOW - MAX_STAMP_SKEW_SECS, NOW + MAX_STAMP_SKEW_SECS] {
            let (answer, _) = put(None, &bootstrap, &one, &stamped(&a(), &one, at));
            assert_eq!(answer.status, 200, "at={at}: {}", error(&answer));
        }
        // A clock at either end of u64 never panics, and refuses.
        for now in [0, u64::MAX] {
            let (answer, held) = put_at(None, &bootstrap, &one, &stamped(&a(), &one, NOW), now);
            assert_eq!((answer.status, held), (401, None), "now={now}");
        }
        // Malformed stamps: half a stamp, two stamps, a number beyond u64.
        let sig = a().sign(&one);
        let tail = stamp_tail(&stamped(&a(), &one, NOW));
        let stamp_only = tail
            .split("; ")
            .find(|p| p.starts_with("stamp="))
            .expect("stamp part")
            .to_owned();
        let malformed = [
            format!("{sig}; at={NOW}"),
            format!("{sig}; {stamp_only}"),
            format!("{sig}{tail}{tail}"),
            format!("{sig}; at={NOW}; at={NOW}; {stamp_only}"),
            format!("{sig}; at=18446744073709551616; {stamp_only}"),
            format!("{sig}; at=-1; {stamp_only}"),
            format!("{sig}; at={NOW}.0; {stamp_only}"),
        ];
        for signature in &malformed {
            let (answer, held) = put(None, &bootstrap, &one, signature);
            assert_eq!((answer.status, held), (401, None), "{signature}");
        }
    }

    /// A stamp from another edge's push works on this edge too, within the
    /// window: stamps bind body, key and time, not the edge. Documented
    /// here as the residual replay window.
    #[test]
    fn a_fresh_stamp_is_not_bound_to_one_edge_only_to_its_window() {
        let bootstrap = a().public_key().to_string();
        let one = body(3, Some(&[&a()]));
        let captured = stamped(&a(), &one, NOW - 200);
        let (first, _) = put(None, &bootstrap, &one, &captured);
        let (other, _) = put(None, &bootstrap, &one, &captured);
        assert_eq!((first.status, other.status), (200, 200));
        let (late, _) = put_at(None, &bootstrap, &one, &captured, NOW + 101);
        assert_eq!(late.status, 401);
    }

    /// A declared key set that would lock every key out, widen past the
    /// limit or hide a duplicate is refused, and nothing changes.
    #[test]
    fn key_sets_that_lock_out_or_overflow_are_refused() {
        let held = rotated_edge();
        let bootstrap = a().public_key().to_string();
        let nine: Vec<String> = (10..19).map(|s| key(s).public_key().to_string()).collect();
        let b_text = b().public_key().to_string();
        let sets: Vec<Vec<String>> = vec![
            vec![],
            vec![b_text.clone(), b_text.clone()],
            nine.clone(),
            vec![b_text.clone(), "ed25519:not-a-key".to_owned()],
            vec![b_text.clone(), String::new()],
            vec![b_text.replace("ed25519:", "ED25519:")],
        ];
        for set in sets {
            let body = body_declaring(5, Some(set.clone()));
            let (answer, after) = put(Some(&held), &bootstrap, &body, &b().sign(&body));
            assert!(
                matches!(answer.status, 400 | 401),
                "{set:?}: {}",
                error(&answer)
            );
            assert_eq!(after.as_deref(), Some(held.as_slice()), "{set:?}");
        }
        // Eight distinct keys are the limit, and are taken.
        let eight: Vec<String> = std::iter::once(b_text)
            .chain(nine.into_iter().take(7))
            .collect();
        let body = body_declaring(5, Some(eight));
        let (answer, after) = put(Some(&held), &bootstrap, &body, &b().sign(&body));
        assert_eq!(answer.status, 200, "{}", error(&answer));
        assert_eq!(
            get(after.as_deref(), &bootstrap)["keys"]
                .as_array()
                .map(Vec::len),
            Some(8)
        );
    }

    /// An edge whose stored value it cannot read is treated as holding
    /// nothing: only a fresh stamped push lands on it.
    #[test]
    fn an_unreadable_stored_value_takes_only_a_fresh_stamped_push() {
        let bootstrap = a().public_key().to_string();
        let mut truncated = rotated_edge();
        truncated.truncate(truncated.len() - 1);
        let damaged: [&[u8]; 4] = [
            b"garbage",
            b"rollout-edge\n\x01",
            &truncated,
            b"rollout-edge\n\x07\x02\x00",
        ];
        let one = body(9, Some(&[&a()]));
        for held in damaged {
            assert_eq!(get(Some(held), &bootstrap)["version"], 0);
            let (answer, after) = put(Some(held), &bootstrap, &one, &a().sign(&one));
            assert_eq!(answer.status, 401, "{}", error(&answer));
            assert!(
                error(&answer).contains("holds no config"),
                "{}",
                error(&answer)
            );
            assert_eq!(after.as_deref(), Some(held));
            let old = stamped(&a(), &one, NOW - 3600);
            let (answer, _) = put(Some(held), &bootstrap, &one, &old);
            assert_eq!(answer.status, 401);
            let (answer, _) = put(Some(held), &bootstrap, &one, &stamped(&a(), &one, NOW));
            assert_eq!(answer.status, 200, "{}", error(&answer));
        }
    }

    /// A version that retires its own signer is taken (A hands over to B),
    /// and from then on A is refused.
    #[test]
    fn a_version_that_drops_its_own_signer_hands_over_and_the_signer_is_refused_after() {
        let bootstrap = a().public_key().to_string();
        let one = body(1, Some(&[&b()]));
        let (answer, held) = put(None, &bootstrap, &one, &stamped(&a(), &one, NOW));
        assert_eq!(answer.status, 200);
        let two = body(2, Some(&[&a()]));
        let (answer, _) = put(held.as_deref(), &bootstrap, &two, &a().sign(&two));
        assert_eq!(answer.status, 401);
        let (answer, _) = put(held.as_deref(), &bootstrap, &two, &b().sign(&two));
        assert_eq!(answer.status, 200);
    }

    /// Outside input never panics the push rule, with or without a clock.
    #[test]
    fn odd_headers_and_bodies_never_panic() {
        let trust = Trust {
            keys: vec![a().public_key()],
            now: Some(0),
        };
        let one = body(u64::MAX, None);
        let headers = [
            String::new(),
            ";".to_owned(),
            "ed25519=".to_owned(),
            "ed25519=;key=;at=;stamp=".to_owned(),
            format!("{}; at={}; stamp=", a().sign(&one), u64::MAX),
            "ed25519=\u{feff}".to_owned(),
            "ed25519=AAAA; key=\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}".to_owned(),
        ];
        for h in &headers {
            let out = receive_push(None, &one, Some(h), &trust);
            assert!(out.apply.is_none(), "{h}");
        }
        let empty = Trust {
            keys: vec![],
            now: Some(NOW),
        };
        let out = receive_push(None, &one, Some(&a().sign(&one)), &empty);
        assert_eq!(out.http_status, 401);
    }
}

mod findings {
    use super::*;
    /// Regression (a version nothing can follow): an edge takes any version up
    /// to u64::MAX. The control service stores versions as SQLite integers
    /// (clamped to i64::MAX), so a version above i64::MAX, from a key
    /// holder or a break-glass push numbered from a lying edge, is one the
    /// service can never number past: the edge refuses every later push
    /// with 409 until its store is wiped.
    #[test]
    fn a_version_beyond_what_control_can_number_is_refused() {
        let bootstrap = a().public_key().to_string();
        let one = body(1, Some(&[&a()]));
        let (_, held) = put(None, &bootstrap, &one, &stamped(&a(), &one, NOW));
        for version in [u64::MAX, 1 << 63] {
            let big = body(version, Some(&[&a()]));
            let (answer, _) = put(held.as_deref(), &bootstrap, &big, &a().sign(&big));
            assert_ne!(
                answer.status, 200,
                "version {version} applied: no later version can follow it"
            );
        }
    }

    /// Regression (low: lock-out by a signer's mistake): a declared key of
    /// small order (here the 32 zero bytes, a point of order 4) is taken,
    /// though strict verification refuses every signature under it. A set
    /// made only of such keys locks every key out of the edge.
    #[test]
    fn a_declared_key_no_signature_can_verify_under_is_refused() {
        let held = rotated_edge();
        let bootstrap = a().public_key().to_string();
        let weak = format!("ed25519:{}=", "A".repeat(43));
        let body = body_declaring(5, Some(vec![weak.clone()]));
        let (answer, after) = put(Some(&held), &bootstrap, &body, &b().sign(&body));
        assert_ne!(
            answer.status,
            200,
            "{weak} declared: the edge now trusts {}",
            get(after.as_deref(), &bootstrap)["keys"]
        );
    }

    /// Regression (cosmetic; the comments in router/spin and router/js say a
    /// clock that reads 0 makes "every stamp stale"): stamps at 0..=300 are
    /// fresh to such an edge. Only a key holder can make one, so this is
    /// no bypass, but the stated property does not hold.
    #[test]
    fn a_clock_that_reads_zero_refuses_every_stamp() {
        let bootstrap = a().public_key().to_string();
        let one = body(1, Some(&[&a()]));
        let (answer, held) = put_at(None, &bootstrap, &one, &stamped(&a(), &one, 0), 0);
        assert_eq!(
            (answer.status, held.is_some()),
            (401, false),
            "a stamp at=0 was fresh to an edge whose clock reads 0"
        );
    }
}
