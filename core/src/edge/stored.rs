//! What an edge keeps in its store: one value under one key ([`KV_ACTIVE`]),
//! holding the compact form a request reads, the signature and the signed
//! envelope it came from. One value means one write: no reader ever sees the
//! compact form of one version beside the envelope of another, and a
//! compare-and-swap on that one key orders concurrent pushes.
//!
//! The frame around the three parts is fixed forever; the compact form inside
//! it carries its own number ([`COMPACT_FORM`]). An edge that finds a frame
//! with an older compact form re-derives it from the envelope in the same
//! frame (already verified when it was stored) and writes the frame back.

use super::{Active, StoredActive};
use crate::envelope::{Applied, Envelope, EnvelopeMeta, PublicKey};

/// Store key of what the edge applied: one frame, written in one operation.
pub const KV_ACTIVE: &str = "rollout.active";

/// The compact form this build writes. Bump it whenever
/// [`Active::to_compact`] would encode a fixed config differently (the golden
/// test in this module fails until you do).
pub const COMPACT_FORM: u16 = 2;

const FRAME_MAGIC: &[u8] = b"rollout-edge\n";
const FRAME_VERSION: u8 = 1;

/// The parts of a stored frame, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The number of the compact form in `compact`.
    pub form: u16,
    /// The compact form ([`Active::to_compact`] of some build).
    pub compact: &'a [u8],
    /// The `rollout-signature` header value the envelope came with.
    pub signature: &'a str,
    /// The signed envelope body.
    pub envelope: &'a [u8],
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

fn take_u32_len<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
    take(bytes, usize::try_from(len).ok()?)
}

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    // Parts are bounded far below 4 GiB (an envelope by MAX_ENVELOPE_BYTES).
    out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(part);
}

impl<'a> Frame<'a> {
    /// Reads a frame; `None` for anything that is not one, whole.
    pub fn parse(bytes: &'a [u8]) -> Option<Frame<'a>> {
        let mut rest = bytes.strip_prefix(FRAME_MAGIC)?;
        if take(&mut rest, 1)? != [FRAME_VERSION] {
            return None;
        }
        let form = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let compact = take_u32_len(&mut rest)?;
        let signature = std::str::from_utf8(take_u32_len(&mut rest)?).ok()?;
        let envelope = take_u32_len(&mut rest)?;
        rest.is_empty().then_some(Frame {
            form,
            compact,
            signature,
            envelope,
        })
    }

    /// The bytes of this frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            FRAME_MAGIC.len()
                + 15
                + self.compact.len()
                + self.signature.len()
                + self.envelope.len(),
        );
        out.extend_from_slice(FRAME_MAGIC);
        out.push(FRAME_VERSION);
        out.extend_from_slice(&self.form.to_le_bytes());
        put_part(&mut out, self.compact);
        put_part(&mut out, self.signature.as_bytes());
        put_part(&mut out, self.envelope);
        out
    }
}

/// The stored value for an envelope that was verified and is being applied.
pub fn frame_for(active: &Active, signature: &str, envelope: &[u8]) -> Vec<u8> {
    Frame {
        form: COMPACT_FORM,
        compact: &active.to_compact(),
        signature,
        envelope,
    }
    .to_bytes()
}

/// What a stored value holds, as a request or the admin endpoint reads it.
#[derive(Debug)]
pub enum Held<'a> {
    /// Nothing stored.
    Nothing,
    /// A config in this build's compact form, ready for
    /// [`StoredActive::config_for`].
    Ready(StoredActive<'a>),
    /// A frame with an older compact form: `value` is the frame this build
    /// writes for the same envelope. Use it for this request, and write it
    /// back (compare-and-swap against the bytes read) so the next request
    /// need not re-derive.
    Rederived {
        /// The frame in this build's form.
        value: Vec<u8>,
    },
    /// Bytes that are no frame this build can read, nor an envelope it can
    /// re-derive from. Requests take the bootstrap origin; a push replaces it.
    Unreadable,
}

impl<'a> Held<'a> {
    /// Reads the value stored under [`KV_ACTIVE`].
    ///
    /// A bare compact form (what edges before the frame stored under the
    /// same key, alone) reads as [`Held::Ready`] while its form is this
    /// build's: the next push replaces it with a frame.
    pub fn read(value: Option<&'a [u8]>) -> Held<'a> {
        let Some(bytes) = value else {
            return Held::Nothing;
        };
        let Some(frame) = Frame::parse(bytes) else {
            return StoredActive::parse(bytes).map_or(Held::Unreadable, Held::Ready);
        };
        if frame.form == COMPACT_FORM {
            return StoredActive::parse(frame.compact).map_or(Held::Unreadable, Held::Ready);
        }
        // The envelope was verified before it was first stored; the store is
        // the edge's own, so it is parsed again, not verified again.
        match Envelope::parse(frame.envelope) {
            Ok(envelope) => Held::Rederived {
                value: frame_for(
                    &Active {
                        applied: envelope.applied(),
                        config: envelope.config,
                    },
                    frame.signature,
                    frame.envelope,
                ),
            },
            Err(_) => Held::Unreadable,
        }
    }

    /// What is applied, when anything readable is.
    pub fn applied(&self) -> Option<Applied> {
        match self {
            Held::Ready(stored) => Some(stored.applied()),
            Held::Rederived { value } => Frame::parse(value)
                .and_then(|f| StoredActive::parse(f.compact))
                .map(|s| s.applied()),
            Held::Nothing | Held::Unreadable => None,
        }
    }
}

/// What the envelope in a stored frame says besides its config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// The keys it declares trusted (absent: the edge's bootstrap keys).
    pub keys: Option<Vec<PublicKey>>,
    /// When the control service issued it (RFC 3339).
    pub issued_at: Option<String>,
}

/// Reads [`Declared`] from a stored value without compiling its config.
/// Anything unreadable (no frame, a bare compact form, damage) declares
/// nothing: the edge falls back on its bootstrap keys.
pub fn declared(value: Option<&[u8]>) -> Declared {
    value
        .and_then(Frame::parse)
        .and_then(|frame| EnvelopeMeta::read(frame.envelope))
        .map_or_else(Declared::default, |meta| Declared {
            keys: meta.keys,
            issued_at: Some(meta.issued_at),
        })
}

/// The compact form inside a frame this build wrote (or a bare one).
pub fn compact_of(value: &[u8]) -> Option<&[u8]> {
    match Frame::parse(value) {
        Some(frame) if frame.form == COMPACT_FORM => Some(frame.compact),
        Some(_) => None,
        None => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{Trust, receive_push};
    use crate::{ConfigDoc, EnvelopeDoc, SecretKey};

    /// A fixed envelope whose config uses every part of the compact form.
    fn fixed() -> (Vec<u8>, String) {
        let config: ConfigDoc = serde_json::from_value(serde_json::json!({
            "schema": 1,
            "debug_headers": true,
            "routes": [
                {"id": "api", "match": {"host": "*.example.com", "path_prefix": "/api", "methods": ["GET", "POST"]},
                 "old": "https://api-old.internal", "new": "https://api-new.internal:8443", "new_weight": 12.5,
                 "salt": "s1", "key": ["header:x-user-id", "cookie:sid", "query:uid", "client-ip"],
                 "failover": {"statuses": [502, 503]},
                 "flags": [{"name": "beta", "percent": 25, "allow": ["alice"]}],
                 "overrides": [{"from": "header:x-force", "token_sha256": ["0000000000000000000000000000000000000000000000000000000000000000"]}]},
                {"id": "web", "old": "http://old.internal", "new": "http://new.internal", "new_weight": 50,
                 "key": ["header:x-user-id", "cookie:rid"], "assign_cookie": true}
            ]
        }))
        .expect("doc");
        let body = EnvelopeDoc {
            version: 7,
            parent: None,
            issued_at: "2026-11-30T00:00:00Z".into(),
            actor: "golden".into(),
            reason: "golden".into(),
            config,
            keys: None,
        }
        .to_body();
        let signature = SecretKey::from_seed([9; 32]).sign(&body);
        (body, signature)
    }

    fn applied_frame() -> Vec<u8> {
        let (body, signature) = fixed();
        let key = SecretKey::from_seed([9; 32]).public_key();
        let outcome = receive_push(None, &body, Some(&signature), &Trust::key(key));
        let Some(active) = outcome.apply else {
            panic!("the fixed envelope applies: {:?}", outcome.reply.error);
        };
        frame_for(&active, &signature, &body)
    }

    /// The golden test: if this fails, the compact form of a fixed config
    /// changed. Bump [`COMPACT_FORM`] (edges holding the old form then
    /// re-derive it from their envelope) and replace the file's contents.
    #[test]
    fn the_compact_form_of_a_fixed_config_is_frozen_for_its_form_number() {
        let golden = include_str!("../../tests/fixtures/compact-form.hex");
        let (form, hex) = golden
            .trim()
            .split_once(' ')
            .expect("`<form> <hex>` in compact-form.hex");
        // A fixed digest, so that only the compact form is under test.
        let (body, _) = fixed();
        let envelope = Envelope::parse(&body).expect("fixed envelope");
        let active = Active {
            applied: Applied {
                version: 7,
                digest: crate::Digest::of(b"golden"),
            },
            config: envelope.config,
        };
        let compact = active.to_compact();
        assert_eq!(
            form.parse::<u16>().ok(),
            Some(COMPACT_FORM),
            "compact-form.hex holds the encoding of another form"
        );
        assert_eq!(
            hex::encode(&compact),
            hex,
            "the compact form changed without a new COMPACT_FORM"
        );
    }

    #[test]
    fn a_frame_round_trips_and_damage_is_unreadable_not_a_panic() {
        let value = applied_frame();
        let frame = Frame::parse(&value).expect("frame");
        assert_eq!(frame.to_bytes(), value);
        assert_eq!(frame.form, COMPACT_FORM);
        let held = Held::read(Some(&value));
        assert_eq!(held.applied().map(|a| a.version), Some(7));
        for cut in 0..value.len() {
            assert!(Frame::parse(&value[..cut]).is_none(), "cut at {cut}");
            assert!(matches!(
                Held::read(Some(&value[..cut])),
                Held::Unreadable | Held::Ready(_)
            ));
        }
        let mut longer = value.clone();
        longer.push(0);
        assert!(Frame::parse(&longer).is_none());
        assert!(matches!(Held::read(None), Held::Nothing));
        assert!(matches!(Held::read(Some(b"junk")), Held::Unreadable));
    }

    #[test]
    fn an_older_compact_form_is_rederived_from_the_envelope() {
        let value = applied_frame();
        let frame = Frame::parse(&value).expect("frame");
        let old = Frame {
            form: COMPACT_FORM - 1,
            compact: b"whatever an older build wrote",
            ..frame
        }
        .to_bytes();
        match Held::read(Some(&old)) {
            Held::Rederived { value: again } => assert_eq!(again, value),
            other => panic!("expected a re-derived frame, got {other:?}"),
        }
        assert_eq!(Held::read(Some(&old)).applied().map(|a| a.version), Some(7));
        let broken = Frame {
            form: COMPACT_FORM - 1,
            envelope: b"{}",
            ..frame
        }
        .to_bytes();
        assert!(matches!(Held::read(Some(&broken)), Held::Unreadable));
    }

    #[test]
    fn a_bare_compact_form_from_before_the_frame_still_reads() {
        let value = applied_frame();
        let compact = Frame::parse(&value).expect("frame").compact.to_vec();
        assert_eq!(
            Held::read(Some(&compact)).applied().map(|a| a.version),
            Some(7)
        );
        assert_eq!(compact_of(&compact), Some(compact.as_slice()));
        assert_eq!(compact_of(&value), Some(compact.as_slice()));
    }
}
