//! The edge, written once and free of I/O: every build (the Spin component,
//! the JavaScript edges) is only transport around these machines.
//!
//! - [`request`]: raw request facts in (method, target, header bytes), the
//!   checks every build applies, the outbound request, and what to do with
//!   the origin's answer: relay it, retry on old, or answer with this.
//! - [`admin`]: `GET`/`PUT` on [`ADMIN_PATH`]: the checks before reading the
//!   body, the body limit, the push rule ([`receive_push`]) and the exact
//!   store operation (a compare-and-swap of one value).
//! - [`stored`]: that one value: compact form, signature and envelope.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Match, Route};
use crate::decide::{Request, matches};
use crate::envelope::{
    Admission, Applied, Digest, Envelope, EnvelopeError, KeyId, MAX_ENVELOPE_BYTES, PublicKey,
    SignatureHeader, admit,
};
use crate::http::HeaderList;

/// Path of the admin endpoint. Only this path, never a header, reaches it.
pub const ADMIN_PATH: &str = "/.well-known/rollout/config";

pub mod admin;
pub mod request;
pub mod stored;

pub use request::RawHeaders;
pub use stored::{COMPACT_FORM, Declared, Held, KV_ACTIVE};

/// A response the edge gives itself: status, headers and a complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers, in order.
    pub headers: HeaderList<Vec<u8>>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A short plain-text answer: `rollout edge: <message>` and a newline.
    pub fn text(status: u16, message: &str) -> Answer {
        Answer {
            status,
            headers: vec![(
                "content-type".to_owned(),
                b"text/plain; charset=utf-8".to_vec(),
            )],
            body: format!("rollout edge: {message}\n").into_bytes(),
        }
    }

    /// A JSON answer that is never cached.
    pub fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                ("cache-control".to_owned(), b"no-store".to_vec()),
            ],
            body,
        }
    }

    /// The same answer with `extra` headers before its own.
    pub fn with_headers(mut self, mut extra: HeaderList<Vec<u8>>) -> Answer {
        extra.append(&mut self.headers);
        self.headers = extra;
        self
    }
}

/// The applied config as an edge keeps it: what is applied, and the compiled
/// config ready for [`decide`](crate::decide).
#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    /// Version and digest of the envelope it came from.
    pub applied: Applied,
    /// The compiled config.
    pub config: Config,
}

const ACTIVE_MAGIC: &[u8] = b"rollout-active-2\n";

/// The head of the stored form: what is applied, and each route's match
/// conditions with the length of its encoded body. The route bodies follow
/// it, in order, so a request decodes only the route it takes.
#[derive(Serialize, Deserialize)]
struct StoredHead {
    applied: Applied,
    debug_headers: bool,
    routes: Vec<(Option<Match>, u32)>,
}

impl Active {
    /// The bytes stored under [`KV_ACTIVE`].
    pub fn to_compact(&self) -> Vec<u8> {
        let bodies: Vec<Vec<u8>> = self
            .config
            .routes()
            // Serialising plain data into a Vec cannot fail.
            .map(|r| postcard::to_allocvec(r).unwrap_or_default())
            .collect();
        let head = StoredHead {
            applied: self.applied,
            debug_headers: self.config.debug_headers,
            routes: self
                .config
                .routes()
                .zip(&bodies)
                .map(|(r, b)| {
                    (
                        r.matches.clone(),
                        u32::try_from(b.len()).unwrap_or(u32::MAX),
                    )
                })
                .collect(),
        };
        let mut out = ACTIVE_MAGIC.to_vec();
        out.extend(postcard::to_allocvec(&head).unwrap_or_default());
        for body in bodies {
            out.extend(body);
        }
        out
    }

    /// Decodes all of [`Active::to_compact`] output without validating again.
    /// Damaged or foreign bytes are `None`, never a panic.
    pub fn from_compact(bytes: &[u8]) -> Option<Active> {
        let stored = StoredActive::parse(bytes)?;
        let mut routes = (0..stored.spans.len())
            .map(|i| stored.route(i))
            .collect::<Option<Vec<Route>>>()?;
        let default = routes.pop()?;
        Some(Active {
            applied: stored.head.applied,
            config: Config {
                routes,
                default,
                debug_headers: stored.head.debug_headers,
            },
        })
    }
}

/// The stored active config, read without decoding its routes: a request
/// decodes only the one route it takes ([`StoredActive::config_for`]).
#[derive(Debug)]
pub struct StoredActive<'a> {
    head: StoredHead,
    /// Byte range of each route body within `bodies`.
    spans: Vec<std::ops::Range<usize>>,
    bodies: &'a [u8],
}

impl std::fmt::Debug for StoredHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHead")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl<'a> StoredActive<'a> {
    /// Reads the head of [`Active::to_compact`] output. `None` for damaged or
    /// foreign bytes, or a shape `to_compact` never writes.
    pub fn parse(bytes: &'a [u8]) -> Option<StoredActive<'a>> {
        let (head, bodies) =
            postcard::take_from_bytes::<StoredHead>(bytes.strip_prefix(ACTIVE_MAGIC)?).ok()?;
        let mut spans = Vec::with_capacity(head.routes.len());
        let mut at = 0usize;
        for (_, len) in &head.routes {
            let end = at.checked_add(usize::try_from(*len).ok()?)?;
            spans.push(at..end);
            at = end;
        }
        // Every byte accounted for, and a default route last: what to_compact writes.
        let shaped = at == bodies.len() && head.routes.last().is_some_and(|(m, _)| m.is_none());
        shaped.then_some(StoredActive {
            head,
            spans,
            bodies,
        })
    }

    /// Version and digest of the applied envelope.
    pub fn applied(&self) -> Applied {
        self.head.applied
    }

    fn route(&self, i: usize) -> Option<Route> {
        let body = self.bodies.get(self.spans.get(i)?.clone())?;
        postcard::from_bytes(body).ok()
    }

    /// The config cut down to the route `req` takes, decoded alone:
    /// [`decide`](crate::decide) on it gives the same decision as on the whole
    /// config. `None` if that route's bytes do not decode.
    pub fn config_for(&self, req: &Request<'_>) -> Option<Config> {
        let last = self.head.routes.len().checked_sub(1)?;
        let index = self
            .head
            .routes
            .iter()
            .position(|(m, _)| m.as_ref().is_none_or(|m| matches(m, req)))
            .unwrap_or(last);
        let mut route = self.route(index)?;
        // As the only route it must take every request: it already matched.
        route.matches = None;
        Some(Config {
            routes: Vec::new(),
            default: route,
            debug_headers: self.head.debug_headers,
        })
    }
}

/// The JSON an edge answers a push (and a GET) with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReply {
    /// `ack` or `nack`.
    pub status: PushStatus,
    /// The version the edge holds after this request (0: none).
    pub version: u64,
    /// Digest of the envelope the edge holds.
    pub digest: Option<Digest>,
    /// Why a push was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether a push was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStatus {
    /// Applied, or already applied.
    Ack,
    /// Refused; the store is unchanged.
    Nack,
}

/// The reply to a GET on the admin path: what is applied, how old it is,
/// and which keys a push must be signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedReply {
    /// Version (0: nothing applied).
    pub version: u64,
    /// Digest (null: nothing applied).
    pub digest: Option<Digest>,
    /// When the control service issued the applied envelope (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// Seconds from `issued_at` to the edge's clock: how long since control
    /// issued what this edge routes by. An edge keeps serving its last config
    /// when control is gone, and says here how old it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_s: Option<u64>,
    /// Ids of the keys a push must be signed with.
    #[serde(default)]
    pub keys: Vec<KeyId>,
}

impl AppliedReply {
    /// The reply for what an edge holds.
    pub fn of(current: Option<Applied>) -> AppliedReply {
        AppliedReply {
            version: current.map_or(0, |c| c.version),
            digest: current.map(|c| c.digest),
            issued_at: None,
            age_s: None,
            keys: Vec::new(),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Numbers and hex strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl PushReply {
    /// A refusal that leaves `current` in place.
    pub fn nack(current: Option<Applied>, error: impl Into<String>) -> PushReply {
        PushReply {
            status: PushStatus::Nack,
            version: current.map_or(0, |c| c.version),
            digest: current.map(|c| c.digest),
            error: Some(error.into()),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Numbers and strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What to do with a push.
#[derive(Debug)]
pub struct PushOutcome {
    /// HTTP status: 200 ack, 409 version conflict, 400 invalid, 401 bad
    /// signature, 413 too large.
    pub http_status: u16,
    /// The JSON reply.
    pub reply: PushReply,
    /// What to store, when the push is to be applied: see [`stored::frame_for`].
    pub apply: Option<Active>,
}

impl PushOutcome {
    /// The JSON reply body.
    pub fn body(&self) -> Vec<u8> {
        self.reply.to_json()
    }
}

/// What an edge trusts a push by: its keys, and its clock for push stamps.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The keys a push may be signed with: those the held envelope declares,
    /// else the edge's bootstrap keys.
    pub keys: Vec<PublicKey>,
    /// The edge's clock (Unix seconds). With a clock, every push stamp must
    /// be fresh and a first push (nothing held) must carry one, so an old
    /// envelope replayed to an edge that lost its store is refused. Without
    /// one (tests, the library API) stamps are not checked.
    pub now: Option<u64>,
}

impl Trust {
    /// One key, no clock.
    pub fn key(key: PublicKey) -> Trust {
        Trust {
            keys: vec![key],
            now: None,
        }
    }

    /// The ids of the trusted keys.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(PublicKey::id).collect()
    }
}

/// The admin endpoint's rule: size, signature (by a trusted key, with a
/// fresh push stamp when required), parse and validate, then the version
/// rule. `current` is what the edge holds now.
pub fn receive_push(
    current: Option<Applied>,
    body: &[u8],
    signature: Option<&str>,
    trust: &Trust,
) -> PushOutcome {
    let nack = |http_status, error: String| PushOutcome {
        http_status,
        reply: PushReply::nack(current, error),
        apply: None,
    };
    if body.len() > MAX_ENVELOPE_BYTES {
        return nack(413, EnvelopeError::TooLarge(body.len()).to_string());
    }
    let Some(signature) = signature else {
        return nack(401, "missing rollout-signature header".to_owned());
    };
    let verified = SignatureHeader::parse(signature).and_then(|header| {
        let key = header.verify(body, &trust.keys)?;
        if let Some(now) = trust.now {
            let stamped = header.check_stamp(key, &Digest::of(body), now)?;
            if !stamped && current.is_none() {
                return Err(if now < crate::envelope::CLOCK_FLOOR_SECS {
                    EnvelopeError::ClockNotSet(now)
                } else {
                    EnvelopeError::StampRequired
                });
            }
        }
        Ok(())
    });
    if let Err(e) = verified {
        return nack(401, e.to_string());
    }
    let envelope = match Envelope::parse(body) {
        Ok(e) => e,
        Err(e @ EnvelopeError::TooLarge(_)) => return nack(413, e.to_string()),
        Err(e) => return nack(400, e.to_string()),
    };
    let incoming = envelope.applied();
    let ack = |apply| PushOutcome {
        http_status: 200,
        reply: PushReply {
            status: PushStatus::Ack,
            version: incoming.version,
            digest: Some(incoming.digest),
            error: None,
        },
        apply,
    };
    match admit(current, incoming) {
        Admission::Apply => ack(Some(Active {
            applied: incoming,
            config: envelope.config,
        })),
        Admission::AlreadyApplied => ack(None),
        Admission::Reject { current } => nack(
            409,
            format!(
                "version {} does not follow the applied version {} (digest {})",
                incoming.version, current.version, current.digest
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigDoc, EnvelopeDoc, SecretKey};

    fn signed(version: u64, weight: f64) -> (Vec<u8>, String) {
        let config: ConfigDoc = serde_json::from_value(serde_json::json!({
            "schema": 1,
            "routes": [{"id": "web", "old": "http://o.example", "new": "http://n.example", "new_weight": weight}]
        }))
        .expect("doc");
        let body = EnvelopeDoc {
            version,
            parent: None,
            issued_at: "2026-11-27T08:00:00Z".into(),
            actor: "test".into(),
            reason: "test".into(),
            config,
            keys: None,
        }
        .to_body();
        let sig = SecretKey::from_seed([1; 32]).sign(&body);
        (body, sig)
    }

    fn key() -> Trust {
        Trust::key(SecretKey::from_seed([1; 32]).public_key())
    }

    #[test]
    fn pushes_get_the_documented_statuses() {
        let (b1, s1) = signed(1, 10.0);
        let first = receive_push(None, &b1, Some(&s1), &key());
        assert_eq!(
            (first.http_status, first.reply.status),
            (200, PushStatus::Ack)
        );
        let held = first.apply.as_ref().map(|a| a.applied);
        assert_eq!(held.map(|a| a.version), Some(1));

        let again = receive_push(held, &b1, Some(&s1), &key());
        assert_eq!(
            (again.http_status, again.apply.is_none()),
            (200, true),
            "idempotent, nothing to write"
        );

        let (b0, s0) = signed(1, 20.0);
        let conflict = receive_push(held, &b0, Some(&s0), &key());
        assert_eq!((conflict.http_status, conflict.reply.version), (409, 1));
        assert!(
            conflict
                .reply
                .error
                .as_deref()
                .is_some_and(|e| e.contains("applied version 1"))
        );

        let wrong_key = SecretKey::from_seed([2; 32]).sign(&b1);
        assert_eq!(
            receive_push(held, &b1, Some(&wrong_key), &key()).http_status,
            401
        );
        assert_eq!(receive_push(held, &b1, None, &key()).http_status, 401);

        let (bad, sbad) = signed(2, 150.0);
        let invalid = receive_push(held, &bad, Some(&sbad), &key());
        assert_eq!(invalid.http_status, 400);
        assert_eq!(
            invalid.reply.error.as_deref(),
            Some("config.routes[0].new_weight: must be 0..=100")
        );

        let huge = vec![b'x'; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            receive_push(held, &huge, Some(&s1), &key()).http_status,
            413
        );
    }

    #[test]
    fn the_reply_is_the_documented_json() {
        let (b1, s1) = signed(1, 10.0);
        let out = receive_push(None, &b1, Some(&s1), &key());
        let json: serde_json::Value = serde_json::from_slice(&out.body()).expect("json");
        assert_eq!(json["status"], "ack");
        assert_eq!(json["version"], 1);
        assert_eq!(json["digest"], Digest::of(&b1).to_string());
        assert!(json.get("error").is_none());
    }

    #[test]
    fn the_active_form_round_trips_and_refuses_foreign_bytes() {
        let (b1, s1) = signed(1, 10.0);
        let active = receive_push(None, &b1, Some(&s1), &key())
            .apply
            .expect("applies");
        assert_eq!(
            Active::from_compact(&active.to_compact()),
            Some(active.clone())
        );
        assert_eq!(Active::from_compact(b"garbage"), None);
        assert_eq!(
            Active::from_compact(&b1),
            None,
            "an envelope is not the compact form"
        );
    }
}
