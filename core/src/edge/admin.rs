//! The admin machine: `GET` and `PUT` on [`ADMIN_PATH`](super::ADMIN_PATH),
//! with every check, limit and store operation decided here.
//!
//! 1. [`begin`]: the method, the declared length and the edge's key are
//!    checked before any body is read; a `GET` is answered at once.
//! 2. The build reads at most [`Push::limit`] bytes of body, then calls
//!    [`Push::finish`].
//! 3. A push to apply comes back as a [`Swap`]: store [`Swap::value`] under
//!    [`KV_ACTIVE`](super::KV_ACTIVE) *only if* the key still holds the bytes
//!    read in step 1 (compare-and-swap). Then [`Swap::done`]; if the key
//!    changed under it, [`Swap::conflict`] with what it holds now, which
//!    decides again (apply over it, already applied, or refuse).

use super::stored::{Frame, Held, declared, frame_for};
use super::{Answer, AppliedReply, PushReply, PushStatus, RawHeaders, Trust, receive_push};
use crate::envelope::{
    Admission, Applied, MAX_ENVELOPE_BYTES, READ_HEADER, ReadStamp, SIGNATURE_HEADER, admit,
    parse_key_list,
};

/// Most compare-and-swap conflicts one push rides out before it answers 503.
pub const MAX_CONFLICTS: u32 = 64;

/// What the admin endpoint does first.
#[derive(Debug)]
pub enum AdminStep {
    /// Answer with this (a `GET`, a wrong method, or a refusal).
    Answer(Answer),
    /// A push: read its body, then [`Push::finish`].
    ReadBody(Box<Push>),
}

/// A push whose checks before the body passed.
#[derive(Debug)]
pub struct Push {
    current: Option<Applied>,
    signature: Option<String>,
    trust: Trust,
}

/// What to do with a verified push.
#[derive(Debug)]
pub enum PushStep {
    /// Answer with this; nothing to write.
    Answer(Answer),
    /// Write [`Swap::value`] with compare-and-swap, then answer.
    Swap(Swap),
}

/// A store write the push needs, and the answers that follow it.
#[derive(Debug)]
pub struct Swap {
    /// The value to store under [`KV_ACTIVE`](super::KV_ACTIVE).
    pub value: Vec<u8>,
    incoming: Applied,
    conflicts: u32,
}

fn header<'h>(headers: &'h RawHeaders, name: &str) -> Result<Option<&'h str>, ()> {
    let mut values = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    first
        .map(|(_, v)| std::str::from_utf8(v).map_err(|_| ()))
        .transpose()
}

fn nack(status: u16, current: Option<Applied>, error: &str) -> Answer {
    Answer::json(status, PushReply::nack(current, error).to_json())
}

/// Seconds from an RFC 3339 time to `now` (Unix seconds); `None` when the
/// time does not parse or lies ahead.
fn age(issued_at: &str, now: u64) -> Option<u64> {
    let issued = humantime::parse_rfc3339_weak(issued_at).ok()?;
    let issued = issued.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    now.checked_sub(issued)
}

/// The admin endpoint's first step for a request with `method` and
/// `headers`. `stored` is the value under [`KV_ACTIVE`](super::KV_ACTIVE) (or
/// why the store could not be read); `public_key` is the edge's bootstrap
/// key setting, one or more keys (or why it has none), used until a held
/// envelope declares keys; `now` is the edge's clock in Unix seconds.
pub fn begin(
    method: &str,
    headers: &RawHeaders,
    stored: Result<Option<&[u8]>, &str>,
    public_key: Result<&str, &str>,
    now: u64,
) -> AdminStep {
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => {
            return AdminStep::Answer(nack(
                503,
                None,
                &format!("key-value store unavailable: {e}"),
            ));
        }
    };
    let current = Held::read(stored).applied();
    let declared = declared(stored);
    let keys = match declared.keys {
        Some(keys) => Ok(keys),
        None => match public_key {
            Ok(setting) => parse_key_list(setting).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_owned()),
        },
    };
    match method {
        "GET" | "HEAD" => {
            // A comma means two values joined (JavaScript's fetch joins a
            // repeated header): refused alike on every platform.
            match header(headers, READ_HEADER).and_then(|v| match v {
                Some(v) if v.contains(',') => Err(()),
                v => Ok(v),
            }) {
                Ok(Some(stamp)) => return AdminStep::Answer(read_back(stamp, stored, keys, now)),
                Ok(None) => {}
                Err(()) => {
                    return AdminStep::Answer(nack(
                        400,
                        current,
                        "rollout-read must be one header, of text without commas",
                    ));
                }
            }
            let mut reply = AppliedReply::of(current);
            if current.is_some() {
                reply.age_s = declared.issued_at.as_deref().and_then(|t| age(t, now));
                reply.issued_at = declared.issued_at;
            }
            reply.keys = keys
                .map(|k| Trust { keys: k, now: None }.ids())
                .unwrap_or_default();
            AdminStep::Answer(Answer::json(200, reply.to_json()))
        }
        "PUT" => {
            let declared = match header(headers, "content-length") {
                Ok(declared) => declared.map(|l| l.trim().parse::<u64>()),
                Err(()) => {
                    return AdminStep::Answer(nack(400, current, "more than one content-length"));
                }
            };
            match declared {
                Some(Ok(len)) if len > MAX_ENVELOPE_BYTES as u64 => {
                    return AdminStep::Answer(Push::oversized(current));
                }
                Some(Err(_)) => {
                    return AdminStep::Answer(nack(400, current, "content-length is not a number"));
                }
                _ => {}
            }
            let keys = match keys {
                Ok(keys) => keys,
                Err(e) => {
                    return AdminStep::Answer(nack(
                        503,
                        current,
                        &format!("public key setting: {e}"),
                    ));
                }
            };
            let signature = match header(headers, SIGNATURE_HEADER) {
                Ok(signature) => signature.map(str::to_owned),
                Err(()) => {
                    return AdminStep::Answer(nack(
                        401,
                        current,
                        "more than one rollout-signature header",
                    ));
                }
            };
            AdminStep::ReadBody(Box::new(Push {
                current,
                signature,
                trust: Trust {
                    keys,
                    now: Some(now),
                },
            }))
        }
        _ => {
            let mut answer = Answer::text(405, "method not allowed (GET, PUT)");
            answer
                .headers
                .push(("allow".to_owned(), b"GET, PUT".to_vec()));
            AdminStep::Answer(answer)
        }
    }
}

/// The answer to a GET that carries a [`READ_HEADER`]: the envelope the
/// edge holds, byte for byte as it was pushed, with the `rollout-signature`
/// it came with; only for a stamp signed by a key the edge trusts.
/// 404 when the edge holds no envelope.
fn read_back(
    stamp: &str,
    stored: Option<&[u8]>,
    keys: Result<Vec<crate::PublicKey>, String>,
    now: u64,
) -> Answer {
    let current = Held::read(stored).applied();
    let keys = match keys {
        Ok(keys) => keys,
        Err(e) => return nack(503, current, &format!("public key setting: {e}")),
    };
    if let Err(e) = ReadStamp::parse(stamp).and_then(|s| s.check(&keys, now)) {
        return nack(401, current, &e.to_string());
    }
    match stored.and_then(Frame::parse) {
        Some(frame) => Answer {
            status: 200,
            headers: vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                ("cache-control".to_owned(), b"no-store".to_vec()),
                (
                    SIGNATURE_HEADER.to_owned(),
                    frame.signature.as_bytes().to_vec(),
                ),
            ],
            body: frame.envelope.to_vec(),
        },
        // Nothing stored, or a bare compact form from before frames kept
        // the envelope.
        None => nack(404, current, "this edge holds no envelope"),
    }
}

impl Push {
    /// Most body bytes to read; one more means [`Push::too_large`].
    pub fn limit(&self) -> usize {
        MAX_ENVELOPE_BYTES
    }

    fn oversized(current: Option<Applied>) -> Answer {
        nack(
            413,
            current,
            &format!("body is over the limit of {MAX_ENVELOPE_BYTES} bytes"),
        )
    }

    /// The answer when the body went over [`Push::limit`].
    pub fn too_large(&self) -> Answer {
        Push::oversized(self.current)
    }

    /// The answer when the body could not be read to its end.
    pub fn unreadable(&self) -> Answer {
        nack(400, self.current, "request body could not be read")
    }

    /// The push rule for the whole `body`.
    pub fn finish(self, body: &[u8]) -> PushStep {
        let outcome = receive_push(self.current, body, self.signature.as_deref(), &self.trust);
        match outcome.apply {
            Some(active) => PushStep::Swap(Swap {
                value: frame_for(&active, self.signature.as_deref().unwrap_or_default(), body),
                incoming: active.applied,
                conflicts: 0,
            }),
            None => PushStep::Answer(Answer::json(outcome.http_status, outcome.body())),
        }
    }
}

impl Swap {
    /// The answer once the value is stored.
    pub fn done(self) -> Answer {
        let reply = PushReply {
            status: PushStatus::Ack,
            version: self.incoming.version,
            digest: Some(self.incoming.digest),
            error: None,
        };
        Answer::json(200, reply.to_json())
    }

    /// The answer when the store refused the write; `current` is what the
    /// edge still holds.
    pub fn failed(self, current: Option<&[u8]>, why: &str) -> Answer {
        nack(
            503,
            Held::read(current).applied(),
            &format!("key-value store write failed: {why}"),
        )
    }

    /// The key no longer held what was read: it holds `now`. Decides again
    /// against it: swap over it, acknowledge (the same envelope landed), or
    /// refuse (a higher version landed).
    pub fn conflict(self, now: Option<&[u8]>) -> PushStep {
        let current = Held::read(now).applied();
        if self.conflicts >= MAX_CONFLICTS {
            return PushStep::Answer(nack(
                503,
                current,
                "the key-value store kept changing under this push",
            ));
        }
        match admit(current, self.incoming) {
            Admission::Apply => PushStep::Swap(Swap {
                conflicts: self.conflicts + 1,
                ..self
            }),
            Admission::AlreadyApplied => PushStep::Answer(self.done()),
            Admission::Reject { current } => PushStep::Answer(nack(
                409,
                Some(current),
                &format!(
                    "version {} does not follow the applied version {} (digest {})",
                    self.incoming.version, current.version, current.digest
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::Held;
    use crate::{ConfigDoc, Digest, EnvelopeDoc, SecretKey};

    fn signed(version: u64) -> (Vec<u8>, String) {
        let config: ConfigDoc = serde_json::from_value(serde_json::json!({
            "schema": 1,
            "routes": [{"id": "web", "old": "http://o.example", "new": "http://n.example", "new_weight": version as f64}]
        }))
        .expect("doc");
        let body = EnvelopeDoc {
            version,
            parent: None,
            issued_at: "2026-11-30T08:00:00Z".into(),
            actor: "test".into(),
            reason: "test".into(),
            config,
            keys: None,
        }
        .to_body();
        let secret = SecretKey::from_seed([1; 32]);
        let sig = secret
            .stamp(&secret.sign(&body), &Digest::of(&body), NOW)
            .expect("stamps");
        (body, sig)
    }

    /// The edge's clock in these tests.
    const NOW: u64 = 1_796_030_000;

    fn key() -> String {
        SecretKey::from_seed([1; 32]).public_key().to_string()
    }

    fn put(sig: &str) -> Vec<(String, Vec<u8>)> {
        vec![(SIGNATURE_HEADER.to_owned(), sig.as_bytes().to_vec())]
    }

    fn json(answer: &Answer) -> serde_json::Value {
        serde_json::from_slice(&answer.body).expect("json")
    }

    /// One push against a store holding `stored`, with a store that may
    /// change to `race` between the read and the write.
    fn push(stored: Option<&[u8]>, version: u64, race: Option<&[u8]>) -> (Answer, Option<Vec<u8>>) {
        let (body, sig) = signed(version);
        let AdminStep::ReadBody(push) = begin("PUT", &put(&sig), Ok(stored), Ok(&key()), NOW)
        else {
            panic!("a valid PUT reads its body");
        };
        let mut held = race.or(stored).map(<[u8]>::to_vec);
        let mut expected = stored.map(<[u8]>::to_vec);
        let mut step = push.finish(&body);
        loop {
            match step {
                PushStep::Answer(answer) => return (answer, held),
                PushStep::Swap(swap) => {
                    if held == expected {
                        held = Some(swap.value.clone());
                        return (swap.done(), held);
                    }
                    expected = held.clone();
                    step = swap.conflict(held.as_deref());
                }
            }
        }
    }

    fn version_of(value: Option<&[u8]>) -> Option<u64> {
        Held::read(value).applied().map(|a| a.version)
    }

    #[test]
    fn a_push_swaps_in_one_value_and_a_lost_race_decides_again() {
        let (answer, v1) = push(None, 1, None);
        assert_eq!((answer.status, version_of(v1.as_deref())), (200, Some(1)));

        let (_, v5) = push(None, 5, None);
        // Version 3 read an empty store, but 5 landed first: 3 is refused
        // against 5 and the store keeps 5.
        let (answer, held) = push(None, 3, v5.as_deref());
        assert_eq!(answer.status, 409);
        assert_eq!(json(&answer)["version"], 5);
        assert_eq!(version_of(held.as_deref()), Some(5));

        // Version 7 read 1, 5 landed meanwhile: 7 applies over 5.
        let (answer, held) = push(v1.as_deref(), 7, v5.as_deref());
        assert_eq!(answer.status, 200);
        assert_eq!(version_of(held.as_deref()), Some(7));

        // The same envelope landed meanwhile: acknowledged, nothing rewritten.
        let (answer, held) = push(None, 5, v5.as_deref());
        assert_eq!(
            (answer.status, json(&answer)["status"].as_str()),
            (200, Some("ack"))
        );
        assert_eq!(held, v5);
    }

    #[test]
    fn checks_before_the_body_come_first() {
        let (_, sig) = signed(1);
        let answer = |step| match step {
            AdminStep::Answer(a) => a,
            AdminStep::ReadBody(_) => panic!("expected an answer"),
        };
        let mut headers = put(&sig);
        headers.push(("content-length".into(), b"99999999".to_vec()));
        assert_eq!(
            answer(begin("PUT", &headers, Ok(None), Ok(&key()), NOW)).status,
            413
        );
        assert_eq!(
            answer(begin("PUT", &put(&sig), Ok(None), Err("missing"), NOW)).status,
            503
        );
        assert_eq!(
            answer(begin("PUT", &put(&sig), Ok(None), Ok("ed25519:nope"), NOW)).status,
            503
        );
        assert_eq!(
            answer(begin("PUT", &put(&sig), Err("down"), Ok(&key()), NOW)).status,
            503
        );
        let mut twice = put(&sig);
        twice.extend(put(&sig));
        assert_eq!(
            answer(begin("PUT", &twice, Ok(None), Ok(&key()), NOW)).status,
            401
        );
        let post = answer(begin("POST", &[], Ok(None), Ok(&key()), NOW));
        assert_eq!(post.status, 405);
        assert!(
            post.headers
                .iter()
                .any(|(n, v)| n == "allow" && v == b"GET, PUT")
        );
        let get = answer(begin("GET", &[], Ok(None), Err("missing"), NOW));
        assert_eq!((get.status, json(&get)["version"].as_u64()), (200, Some(0)));
    }

    #[test]
    fn a_get_signed_by_a_trusted_key_reads_back_the_envelope_as_pushed() {
        let a = SecretKey::from_seed([1; 32]);
        let (body, sig) = signed(3);
        let (answer, held) = push(None, 3, None);
        assert_eq!(answer.status, 200);
        let read = |stored: Option<&[u8]>, stamp: &str, keys: Result<&str, &str>| {
            let headers = vec![(READ_HEADER.to_owned(), stamp.as_bytes().to_vec())];
            match begin("GET", &headers, Ok(stored), keys, NOW) {
                AdminStep::Answer(answer) => answer,
                AdminStep::ReadBody(_) => panic!("a GET is answered"),
            }
        };
        let got = read(held.as_deref(), &a.read_stamp(NOW - 10), Ok(&key()));
        assert_eq!(got.status, 200);
        assert_eq!(got.body, body, "the envelope, byte for byte");
        assert!(
            got.headers
                .iter()
                .any(|(n, v)| n == SIGNATURE_HEADER && v == sig.as_bytes()),
            "with the signature it was pushed with"
        );
        // Its signature still verifies the body.
        assert!(a.public_key().verify(&got.body, &sig).is_ok());

        // Refused: another key, a stale or future stamp, a stamp for
        // another moment, a malformed or repeated header.
        let b = SecretKey::from_seed([2; 32]);
        let forged = a
            .read_stamp(NOW)
            .replace(&format!("at={NOW}"), &format!("at={}", NOW + 1));
        let rollout_read = "rollout-read must be";
        for (what, stamp, status, error) in [
            ("an untrusted key", b.read_stamp(NOW), 401, "is not trusted"),
            // An untrusted key is refused as such, fresh or not.
            (
                "an old stamp by an untrusted key",
                b.read_stamp(NOW - 3600),
                401,
                "is not trusted",
            ),
            (
                "a stale stamp",
                a.read_stamp(NOW - 301),
                401,
                "replayed or delayed read",
            ),
            (
                "a future stamp",
                a.read_stamp(NOW + 301),
                401,
                "replayed or delayed read",
            ),
            (
                "a stamp moved to another time",
                forged,
                401,
                "does not verify",
            ),
            (
                "no signature",
                format!("key={}; at={NOW}", a.public_key().id()),
                401,
                rollout_read,
            ),
            (
                "no key",
                a.read_stamp(NOW)
                    .split("; key=")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                401,
                rollout_read,
            ),
        ] {
            let got = read(held.as_deref(), &stamp, Ok(&key()));
            assert_eq!(got.status, status, "{what}");
            assert!(
                json(&got)["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(error)),
                "{what}: {}",
                json(&got)
            );
            assert_eq!(json(&got)["version"], 3, "{what}: says what it holds");
            assert_ne!(got.body, body, "{what}");
        }
        let twice = vec![
            (READ_HEADER.to_owned(), a.read_stamp(NOW).into_bytes()),
            (READ_HEADER.to_owned(), a.read_stamp(NOW).into_bytes()),
        ];
        let AdminStep::Answer(got) = begin("GET", &twice, Ok(held.as_deref()), Ok(&key()), NOW)
        else {
            panic!("a GET is answered");
        };
        assert_eq!(got.status, 400);
        // Joined into one value, as fetch() joins them: the same.
        let joined = format!("{}, {}", a.read_stamp(NOW), a.read_stamp(NOW));
        assert_eq!(read(held.as_deref(), &joined, Ok(&key())).status, 400);
        // Nothing held: 404. No key setting: 503, as for a push.
        assert_eq!(read(None, &a.read_stamp(NOW), Ok(&key())).status, 404);
        assert_eq!(read(None, &a.read_stamp(NOW), Err("missing")).status, 503);
        // A plain GET still says only what is held.
        let AdminStep::Answer(plain) = begin("GET", &[], Ok(held.as_deref()), Ok(&key()), NOW)
        else {
            panic!("a GET is answered");
        };
        assert_eq!(json(&plain)["version"], 3);
        assert!(json(&plain).get("config").is_none());
    }

    /// A stamped push of `version` signed by `signer`, declaring `keys`.
    fn rotation_push(
        held: Option<&[u8]>,
        version: u64,
        signer: &SecretKey,
        keys: Option<&[&SecretKey]>,
        at: Option<u64>,
    ) -> (Answer, Option<Vec<u8>>) {
        let config: ConfigDoc = serde_json::from_value(serde_json::json!({
            "schema": 1,
            "routes": [{"id": "web", "old": "http://o.example", "new": "http://n.example", "new_weight": 1}]
        }))
        .expect("doc");
        let body = EnvelopeDoc {
            version,
            parent: None,
            issued_at: "2026-11-30T08:00:00Z".into(),
            actor: "test".into(),
            reason: "rotation".into(),
            config,
            keys: keys.map(|k| k.iter().map(|k| k.public_key().to_string()).collect()),
        }
        .to_body();
        let mut sig = signer.sign(&body);
        if let Some(at) = at {
            sig = signer.stamp(&sig, &Digest::of(&body), at).expect("stamps");
        }
        // The bootstrap setting names key A only.
        let bootstrap = SecretKey::from_seed([1; 32]).public_key().to_string();
        match begin("PUT", &put(&sig), Ok(held), Ok(&bootstrap), NOW) {
            AdminStep::Answer(answer) => (answer, held.map(<[u8]>::to_vec)),
            AdminStep::ReadBody(push) => match push.finish(&body) {
                PushStep::Answer(answer) => (answer, held.map(<[u8]>::to_vec)),
                PushStep::Swap(swap) => {
                    let value = swap.value.clone();
                    (swap.done(), Some(value))
                }
            },
        }
    }

    #[test]
    fn keys_rotate_by_signed_versions_and_a_retired_key_is_refused_by_name() {
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        // B is unknown to an edge deployed with A.
        let (answer, _) = rotation_push(None, 1, &b, None, Some(NOW));
        assert_eq!(answer.status, 401);
        let error = json(&answer)["error"].as_str().map(str::to_owned);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains(&b.public_key().id().to_string())),
            "{error:?}"
        );
        // A introduces B.
        let (answer, held) = rotation_push(None, 1, &a, Some(&[&a, &b]), Some(NOW));
        assert_eq!(answer.status, 200);
        // B signs now.
        let (answer, held) = rotation_push(held.as_deref(), 2, &b, Some(&[&a, &b]), Some(NOW));
        assert_eq!(answer.status, 200);
        // B retires A.
        let (answer, held) = rotation_push(held.as_deref(), 3, &b, Some(&[&b]), Some(NOW));
        assert_eq!(answer.status, 200);
        let AdminStep::Answer(get) = begin("GET", &[], Ok(held.as_deref()), Ok("ignored"), NOW)
        else {
            panic!("a GET is answered");
        };
        assert_eq!(
            json(&get)["keys"],
            serde_json::json!([b.public_key().id().to_string()])
        );
        // A push signed with A is refused with 401 naming A, though A is the
        // edge's bootstrap key, and the edge keeps version 3.
        let (answer, after) = rotation_push(held.as_deref(), 4, &a, Some(&[&a]), Some(NOW));
        assert_eq!(
            (answer.status, json(&answer)["version"].as_u64()),
            (401, Some(3))
        );
        let error = json(&answer)["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(
            error.contains(&format!(
                "signature key {} is not trusted",
                a.public_key().id()
            )),
            "{error}"
        );
        assert_eq!(after, held);
    }

    #[test]
    fn an_edge_that_holds_nothing_takes_only_a_fresh_stamped_push() {
        let a = SecretKey::from_seed([1; 32]);
        // An old envelope replayed to an edge that lost its store: refused.
        let (answer, held) = rotation_push(None, 5, &a, None, None);
        assert_eq!((answer.status, held), (401, None));
        assert!(
            json(&answer)["error"]
                .as_str()
                .is_some_and(|e| e.contains("holds no config"))
        );
        // The same envelope stamped long ago (a captured push): refused.
        let (answer, _) = rotation_push(None, 5, &a, None, Some(NOW - 3600));
        assert_eq!(answer.status, 401);
        assert!(
            json(&answer)["error"]
                .as_str()
                .is_some_and(|e| e.contains("3600 s from this edge's clock"))
        );
        // Fresh: applied. Then an unstamped higher version is fine: the
        // version rule protects an edge that holds something.
        let (answer, held) = rotation_push(None, 5, &a, None, Some(NOW - 10));
        assert_eq!(answer.status, 200);
        let (answer, held) = rotation_push(held.as_deref(), 6, &a, None, None);
        assert_eq!(answer.status, 200);
        // A stale stamp is refused whatever the edge holds.
        let (answer, _) = rotation_push(held.as_deref(), 7, &a, None, Some(NOW + 3600));
        assert_eq!(answer.status, 401);
        // GET reports the config's age by the edge's clock.
        let AdminStep::Answer(get) = begin("GET", &[], Ok(held.as_deref()), Ok("ignored"), NOW)
        else {
            panic!("a GET is answered");
        };
        let issued = humantime::parse_rfc3339("2026-11-30T08:00:00Z").expect("time");
        let issued = issued
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let get = json(&get);
        assert_eq!(get["version"], 6);
        assert_eq!(get["issued_at"], "2026-11-30T08:00:00Z");
        assert_eq!(get["age_s"].as_u64(), NOW.checked_sub(issued));
    }
}
