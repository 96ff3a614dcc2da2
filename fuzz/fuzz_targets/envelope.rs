//! Signed pushes: the input signed with the edge's key as a push body, the
//! input split into (body, signature header) pairs, and `Envelope::parse`.
//!
//! Asserts, besides never panicking: a body signed with the edge's key is
//! acknowledged (200) exactly when `Envelope::parse` accepts it (413 when it
//! is over the limit), with the body's digest; the frame an applied push is
//! stored as reads back as what was applied; the same push again is
//! acknowledged without a write; a body under another signature is never
//! applied.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use rollout_core::edge::{Held, PushStatus, Trust, receive_push, stored};
use rollout_core::{Applied, Digest, Envelope, MAX_ENVELOPE_BYTES, SignatureHeader};
use rollout_fuzz::{NOW, key, split_nul, stamped};

fuzz_target!(|data: &[u8]| {
    let public = Trust::key(key().public_key());
    let clocked = Trust {
        keys: public.keys.clone(),
        now: Some(NOW),
    };
    // Whether `header` is a signature of `body` by the edge's key.
    let signs = |body: &[u8], header: &str| {
        SignatureHeader::parse(header).is_ok_and(|h| h.verify(body, &public.keys).is_ok())
    };
    let parsed = Envelope::parse(data);
    if let Ok(envelope) = &parsed {
        assert_eq!(envelope.digest, Digest::of(data));
        assert!(envelope.version > 0);
    }

    // The input as a body the edge's own key signed.
    let signature = key().sign(data);
    let held = Applied {
        version: 1,
        digest: Digest::of(b"held"),
    };
    for current in [None, Some(held)] {
        let outcome = receive_push(current, data, Some(&signature), &public);
        let _ = outcome.body();
        if data.len() > MAX_ENVELOPE_BYTES {
            assert_eq!(outcome.http_status, 413);
            continue;
        }
        match &parsed {
            Ok(envelope) if current.is_none_or(|c| envelope.version > c.version) => {
                assert_eq!(outcome.http_status, 200, "{:?}", outcome.reply);
                assert_eq!(outcome.reply.status, PushStatus::Ack);
                let active = outcome.apply.expect("an applied push has a value");
                assert_eq!(active.applied, envelope.applied());
                let value = stored::frame_for(&active, &signature, data);
                let read = Held::read(Some(&value));
                assert!(matches!(read, Held::Ready(_)));
                assert_eq!(read.applied(), Some(active.applied));
                let again = receive_push(read.applied(), data, Some(&signature), &public);
                assert_eq!((again.http_status, again.apply.is_none()), (200, true));
            }
            Ok(_) => assert_eq!(outcome.http_status, 409),
            Err(_) => {
                assert_eq!(outcome.http_status, 400, "{:?}", outcome.reply);
                assert!(outcome.apply.is_none());
            }
        }
    }

    // The raw bytes as (body, signature header): split at the first NUL, and
    // the last 64 bytes as a well-formed signature over the rest.
    let (body, header) = split_nul(data);
    let header = String::from_utf8_lossy(header);
    let outcome = receive_push(None, body, Some(&header), &public);
    if !signs(body, &header) {
        assert!(
            outcome.apply.is_none(),
            "a body under another signature was applied"
        );
        assert_ne!(outcome.http_status, 200);
    }
    let _ = receive_push(None, body, None, &public);
    // With a clock, a first push needs a stamp made at most
    // MAX_STAMP_SKEW_SECS from it: the unstamped signature never applies,
    // the stamped one does when the body is a valid envelope.
    let unstamped = receive_push(None, body, Some(&key().sign(body)), &clocked);
    assert!(
        unstamped.apply.is_none(),
        "an unstamped first push was applied"
    );
    if body.len() <= MAX_ENVELOPE_BYTES {
        let fresh = receive_push(None, body, Some(&stamped(body)), &clocked);
        assert_eq!(
            fresh.apply.is_some(),
            Envelope::parse(body).is_ok(),
            "{:?}",
            fresh.reply
        );
    }
    if data.len() >= 64 {
        let (body, sig) = data.split_at(data.len() - 64);
        let header = format!("ed25519={}", STANDARD.encode(sig));
        let outcome = receive_push(None, body, Some(&header), &public);
        if !signs(body, &header) {
            assert!(outcome.apply.is_none(), "a forged signature was applied");
            assert!(matches!(outcome.http_status, 401 | 413));
        }
    }
});
