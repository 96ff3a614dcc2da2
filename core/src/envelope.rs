//! Signed config envelopes and the version rule.
//!
//! The pushed body is a JSON envelope `{version, parent, issued_at, actor,
//! reason, config}`. The exact body bytes are signed with Ed25519 and the
//! signature travels in the `rollout-signature: ed25519=<base64>` header.
//! `parent` is the digest of the previous envelope body, so the history is a
//! hash chain. A rollback is a new, higher version holding an older config.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::config::{Config, ConfigDoc, ConfigError, MAX_CONFIG_BYTES, Problem};

/// Largest envelope body an edge reads, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;
/// Name of the header that carries the signature.
pub const SIGNATURE_HEADER: &str = "rollout-signature";
/// Most keys one envelope may declare trusted.
pub const MAX_TRUSTED_KEYS: usize = 8;
/// How far a push stamp's time may be from the edge's clock, either way, in seconds.
pub const MAX_STAMP_SKEW_SECS: u64 = 300;
/// Highest version an envelope may carry: 2^53 - 1, the largest integer
/// every JSON reader (JavaScript included) holds exactly, and far below
/// what any store can number. A version above it could never be followed.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// An edge clock before this (2020-01-01, Unix seconds) is not set: push
/// stamps are not checked against it, and every stamped or first push is
/// refused, never taken on a clock that cannot tell fresh from replayed.
pub const CLOCK_FLOOR_SECS: u64 = 1_577_836_800;

/// SHA-256 of an envelope body; shown and sent as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Digest, EnvelopeError> {
        let mut out = [0u8; 32];
        let lower = s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(EnvelopeError::BadDigest);
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an envelope or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is over [`MAX_ENVELOPE_BYTES`].
    #[error("envelope is {0} bytes, over the limit of {MAX_ENVELOPE_BYTES} bytes")]
    TooLarge(usize),
    /// The signature header is missing or not `ed25519=<base64 of 64 bytes>`.
    #[error("signature header must be ed25519=<base64 of 64 bytes>")]
    BadSignatureHeader,
    /// The signature does not verify under the edge's public key.
    #[error("signature does not verify")]
    BadSignature,
    /// The envelope is not the expected JSON shape.
    #[error("envelope: {0}")]
    Syntax(String),
    /// Version 0 is reserved for "nothing applied".
    #[error("version must be 1 or more")]
    ZeroVersion,
    /// A version no history could follow.
    #[error("version {0} is over the limit of {MAX_VERSION}")]
    VersionTooLarge(u64),
    /// The edge's clock is not set, so push stamps cannot be checked.
    #[error(
        "this edge's clock reads {0}, before 2020: push stamps cannot be checked, so stamped and first pushes are refused until it is set"
    )]
    ClockNotSet(u64),
    /// A digest that is not 64 lowercase hex digits.
    #[error("digest must be 64 lowercase hex digits")]
    BadDigest,
    /// A key that is not in the documented text form.
    #[error("{0}")]
    BadKey(&'static str),
    /// The signature names a key the edge does not trust (unknown, or retired).
    #[error(
        "signature key {key} is not trusted by this edge (it trusts {})",
        list_ids(trusted)
    )]
    UntrustedKey {
        /// The key the signature names.
        key: KeyId,
        /// The keys the edge trusts.
        trusted: Vec<KeyId>,
    },
    /// An unnamed signature that no trusted key verifies.
    #[error("signature does not verify under any key this edge trusts ({})", list_ids(.0))]
    NoTrustedKey(Vec<KeyId>),
    /// A push stamp too far from the edge's clock: replayed, or long delayed.
    #[error(
        "push stamp at={at} is {} s from this edge's clock ({now}), over the limit of {MAX_STAMP_SKEW_SECS} s: a replayed or delayed push",
        at.abs_diff(*now)
    )]
    StaleStamp {
        /// The stamp's time (Unix seconds).
        at: u64,
        /// The edge's time (Unix seconds).
        now: u64,
    },
    /// A first push (the edge holds nothing) without a push stamp.
    #[error(
        "this edge holds no config, so a push must carry a fresh push stamp (at=..., stamp=...) from the control service; an unstamped envelope could be a replay"
    )]
    StampRequired,
    /// A `rollout-read` header that is not `ed25519=<base64>; key=<key
    /// id>; at=<unix seconds>`.
    #[error("rollout-read must be ed25519=<base64 of 64 bytes>; key=<key id>; at=<unix seconds>")]
    BadReadHeader,
    /// A read stamp too far from the edge's clock: replayed, or long delayed.
    #[error(
        "read stamp at={at} is {} s from this edge's clock ({now}), over the limit of {MAX_STAMP_SKEW_SECS} s: a replayed or delayed read",
        at.abs_diff(*now)
    )]
    StaleRead {
        /// The stamp's time (Unix seconds).
        at: u64,
        /// The edge's time (Unix seconds).
        now: u64,
    },
    /// The `keys` an envelope declares are unusable.
    #[error("keys: {0}")]
    BadKeySet(String),
    /// The config inside the envelope is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn list_ids(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        return "no key".to_owned();
    }
    ids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The metadata of an envelope, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeDoc<C> {
    /// Grows with every issued config, rollbacks included.
    pub version: u64,
    /// Digest of the previous envelope body; `null` for the first.
    pub parent: Option<Digest>,
    /// When the control service issued it (RFC 3339, UTC).
    pub issued_at: String,
    /// Who asked for it (token name, CI job).
    pub actor: String,
    /// Why (free text, e.g. "rollback to 3: error rate").
    pub reason: String,
    /// The config document.
    pub config: C,
    /// The public keys (text form) edges trust from this version on, for
    /// this version's successors; absent: the keys each edge was deployed
    /// with. The control service declares its key set in every version, so
    /// a signed version is how keys rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// An envelope whose config has been validated and compiled.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Version.
    pub version: u64,
    /// Digest of the previous envelope body.
    pub parent: Option<Digest>,
    /// Issue time as written.
    pub issued_at: String,
    /// Who issued it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Digest of the body bytes this was parsed from.
    pub digest: Digest,
    /// The compiled config.
    pub config: Config,
    /// The keys it declares trusted from now on (absent: the edge's own).
    pub keys: Option<Vec<PublicKey>>,
}

impl EnvelopeDoc<ConfigDoc> {
    /// The body bytes to sign and push.
    pub fn to_body(&self) -> Vec<u8> {
        // Plain data with string keys always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Envelope {
    /// Parses and validates an envelope body, without checking a signature.
    /// Config errors are reported under `config.` (`config.routes[0].new: ...`).
    pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        if body.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(body.len()));
        }
        let doc: EnvelopeDoc<&RawValue> =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::Syntax(e.to_string()))?;
        if doc.version == 0 {
            return Err(EnvelopeError::ZeroVersion);
        }
        if doc.version > MAX_VERSION {
            return Err(EnvelopeError::VersionTooLarge(doc.version));
        }
        let raw = doc.config.get().as_bytes();
        if raw.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(
                "config",
                Problem::TooLarge {
                    size: raw.len(),
                    limit: MAX_CONFIG_BYTES,
                },
            )
            .into());
        }
        let config = Config::from_json(raw).map_err(|e| e.nested("config"))?;
        let keys = doc.keys.as_deref().map(parse_key_set).transpose()?;
        Ok(Envelope {
            version: doc.version,
            parent: doc.parent,
            issued_at: doc.issued_at,
            actor: doc.actor,
            reason: doc.reason,
            digest: Digest::of(body),
            config,
            keys,
        })
    }

    /// Checks the signature over the exact body bytes, then parses.
    /// The size limit is checked first, so an oversized body costs nothing.
    pub fn open(
        body: &[u8],
        signature_header: &str,
        key: &PublicKey,
    ) -> Result<Envelope, EnvelopeError> {
        if body.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(body.len()));
        }
        key.verify(body, signature_header)?;
        Envelope::parse(body)
    }

    /// What is applied once this envelope is.
    pub fn applied(&self) -> Applied {
        Applied {
            version: self.version,
            digest: self.digest,
        }
    }
}

/// What an envelope body says besides its config, read without parsing or
/// compiling the config: for an edge's `GET` and for choosing the keys a
/// version's successor must be signed with.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeMeta {
    /// When the control service issued it (RFC 3339).
    pub issued_at: String,
    /// The keys it declares trusted from then on; `None` when it declares
    /// none, or a set that does not parse (an applied envelope's set was
    /// checked when it was applied).
    pub keys: Option<Vec<PublicKey>>,
}

impl EnvelopeMeta {
    /// Reads `body`; `None` when it is not an envelope's JSON.
    pub fn read(body: &[u8]) -> Option<EnvelopeMeta> {
        #[derive(Deserialize)]
        struct Meta {
            issued_at: String,
            #[serde(default)]
            keys: Option<Vec<String>>,
        }
        let meta: Meta = serde_json::from_slice(body).ok()?;
        Some(EnvelopeMeta {
            issued_at: meta.issued_at,
            keys: meta.keys.and_then(|k| parse_key_set(&k).ok()),
        })
    }
}

/// A declared key set: 1 to [`MAX_TRUSTED_KEYS`] distinct public keys.
pub fn parse_key_set<S: AsRef<str>>(keys: &[S]) -> Result<Vec<PublicKey>, EnvelopeError> {
    if keys.is_empty() {
        return Err(EnvelopeError::BadKeySet(
            "must list at least one key (an edge that trusts none could never be pushed to again)"
                .to_owned(),
        ));
    }
    if keys.len() > MAX_TRUSTED_KEYS {
        return Err(EnvelopeError::BadKeySet(format!(
            "{} keys, over the limit of {MAX_TRUSTED_KEYS}",
            keys.len()
        )));
    }
    let mut out: Vec<PublicKey> = Vec::with_capacity(keys.len());
    for (i, text) in keys.iter().enumerate() {
        let key: PublicKey = text
            .as_ref()
            .parse()
            .map_err(|e| EnvelopeError::BadKeySet(format!("[{i}]: {e}")))?;
        if out.contains(&key) {
            return Err(EnvelopeError::BadKeySet(format!(
                "[{i}]: key {} is listed twice",
                key.id()
            )));
        }
        out.push(key);
    }
    Ok(out)
}

/// An edge's bootstrap setting: one or more public keys, separated by
/// commas or whitespace (a key given twice counts once).
pub fn parse_key_list(setting: &str) -> Result<Vec<PublicKey>, EnvelopeError> {
    let mut keys: Vec<&str> = Vec::new();
    for key in setting
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|k| !k.is_empty())
    {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        // The error a single missing key gives.
        return "".parse::<PublicKey>().map(|k| vec![k]);
    }
    parse_key_set(&keys)
}

/// The version and digest an edge holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Version.
    pub version: u64,
    /// Digest of the envelope body.
    pub digest: Digest,
}

/// What the version rule says about an incoming envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A higher version: apply it.
    Apply,
    /// The same version and digest: already applied, acknowledge.
    AlreadyApplied,
    /// Lower, or the same version with another body: refuse, naming the current.
    Reject {
        /// What the edge holds.
        current: Applied,
    },
}

/// The version rule, shared by edges and the control service: higher applies,
/// the same version with the same digest is idempotent, anything else is
/// refused. Versions never go down, so a rollback is always a new version.
pub fn admit(current: Option<Applied>, incoming: Applied) -> Admission {
    match current {
        None => Admission::Apply,
        Some(c) if incoming.version > c.version => Admission::Apply,
        Some(c) if incoming == c => Admission::AlreadyApplied,
        Some(current) => Admission::Reject { current },
    }
}

/// A key's short name, sent with every signature: the first 8 bytes of
/// SHA-256 of the 32 public key bytes, as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<KeyId, EnvelopeError> {
        let mut out = [0u8; 8];
        let lower = s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(EnvelopeError::BadKey(
                "key id must be 16 lowercase hex digits",
            ));
        }
        Ok(KeyId(out))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A parsed `rollout-signature` header:
/// `ed25519=<base64>[; key=<key id>][; at=<unix seconds>; stamp=<base64>]`.
///
/// The first signature is over the envelope body (it is stored and audited
/// with the version). The optional push stamp is a second signature, by the
/// same key, over the body's digest and the time the control service sent
/// this push: it tells a fresh push from a replayed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    signature: ed25519_dalek::Signature,
    /// The key that signed, when named.
    pub key: Option<KeyId>,
    /// The push stamp, when present.
    pub stamp: Option<Stamp>,
}

/// A push stamp: when the push was sent, signed with the body's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Unix seconds.
    pub at: u64,
    signature: ed25519_dalek::Signature,
}

fn decode_signature(b64: &str) -> Result<ed25519_dalek::Signature, EnvelopeError> {
    let bytes: [u8; 64] = BASE64
        .decode(b64)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(EnvelopeError::BadSignatureHeader)?;
    Ok(ed25519_dalek::Signature::from_bytes(&bytes))
}

fn stamp_message(digest: &Digest, at: u64) -> Vec<u8> {
    format!("rollout-push-stamp\n{digest}\n{at}").into_bytes()
}

/// The parts of a signed header value: `ed25519=<base64 of 64 bytes>`,
/// then `; name=value` parts, each of `names` at most once and no other:
/// the signature and each named value (trimmed), in the order of `names`.
/// `None` for any other shape.
fn signed_parts<'v, const N: usize>(
    value: &'v str,
    names: [&str; N],
) -> Option<(ed25519_dalek::Signature, [Option<&'v str>; N])> {
    let mut parts = value.split(';').map(str::trim);
    let signature = decode_signature(parts.next()?.strip_prefix(SIGNATURE_PREFIX)?).ok()?;
    let mut values = [None; N];
    for part in parts {
        let (name, v) = part.split_once('=')?;
        let slot = &mut values[names.iter().position(|n| *n == name.trim())?];
        if slot.replace(v.trim()).is_some() {
            return None;
        }
    }
    Some((signature, values))
}

impl SignatureHeader {
    /// Parses a header value; any other shape is [`EnvelopeError::BadSignatureHeader`].
    pub fn parse(value: &str) -> Result<SignatureHeader, EnvelopeError> {
        let bad = || EnvelopeError::BadSignatureHeader;
        let (signature, [key, at, stamp]) =
            signed_parts(value, ["key", "at", "stamp"]).ok_or_else(bad)?;
        let key = key
            .map(|k| k.parse::<KeyId>().map_err(|_| bad()))
            .transpose()?;
        let at = at
            .map(|a| a.parse::<u64>().map_err(|_| bad()))
            .transpose()?;
        let stamp = stamp.map(decode_signature).transpose()?;
        let stamp = match (at, stamp) {
            (Some(at), Some(signature)) => Some(Stamp { at, signature }),
            (None, None) => None,
            _ => return Err(bad()),
        };
        Ok(SignatureHeader {
            signature,
            key,
            stamp,
        })
    }

    /// The trusted key that signed `body`. A named key must be in `trusted`
    /// ([`EnvelopeError::UntrustedKey`] names it otherwise); an unnamed
    /// signature is tried against each.
    pub fn verify<'k>(
        &self,
        body: &[u8],
        trusted: &'k [PublicKey],
    ) -> Result<&'k PublicKey, EnvelopeError> {
        let ids = || trusted.iter().map(PublicKey::id).collect::<Vec<_>>();
        match self.key {
            Some(id) => {
                let key = trusted.iter().find(|k| k.id() == id).ok_or_else(|| {
                    EnvelopeError::UntrustedKey {
                        key: id,
                        trusted: ids(),
                    }
                })?;
                key.verify_signature(body, &self.signature)?;
                Ok(key)
            }
            None => match trusted {
                [only] => only.verify_signature(body, &self.signature).map(|()| only),
                _ => trusted
                    .iter()
                    .find(|k| k.verify_signature(body, &self.signature).is_ok())
                    .ok_or_else(|| EnvelopeError::NoTrustedKey(ids())),
            },
        }
    }

    /// Checks the push stamp, if any, against the body's `digest`, the key
    /// that signed the body and the edge's clock `now` (Unix seconds).
    /// `Ok(true)`: stamped and fresh; `Ok(false)`: no stamp.
    pub fn check_stamp(
        &self,
        key: &PublicKey,
        digest: &Digest,
        now: u64,
    ) -> Result<bool, EnvelopeError> {
        let Some(stamp) = &self.stamp else {
            return Ok(false);
        };
        if now < CLOCK_FLOOR_SECS {
            return Err(EnvelopeError::ClockNotSet(now));
        }
        key.verify_signature(&stamp_message(digest, stamp.at), &stamp.signature)?;
        if stamp.at.abs_diff(now) > MAX_STAMP_SKEW_SECS {
            return Err(EnvelopeError::StaleStamp { at: stamp.at, now });
        }
        Ok(true)
    }
}

impl std::fmt::Display for SignatureHeader {
    /// The header as the control service stores it: the body's signature
    /// and the key it names, without any push stamp.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{SIGNATURE_PREFIX}{}",
            BASE64.encode(self.signature.to_bytes())
        )?;
        match self.key {
            Some(key) => write!(f, "; key={key}"),
            None => Ok(()),
        }
    }
}

/// The request header that asks an edge for the envelope it holds
/// ([`ReadStamp`]). Only a control service (a holder of a key the edge
/// trusts) can make one: a config can name internal origins and override
/// token digests, which the public admin path must not hand to anyone.
pub const READ_HEADER: &str = "rollout-read";

fn read_message(at: u64) -> Vec<u8> {
    format!("rollout-envelope-read\n{at}").into_bytes()
}

/// A parsed `rollout-read` header: `ed25519=<base64>; key=<key id>;
/// at=<unix seconds>`, a signature over `rollout-envelope-read\n<at>` by a
/// key the edge trusts, within [`MAX_STAMP_SKEW_SECS`] of its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStamp {
    signature: ed25519_dalek::Signature,
    /// The key that signed.
    pub key: KeyId,
    /// Unix seconds.
    pub at: u64,
}

impl ReadStamp {
    /// Parses a header value; any other shape is [`EnvelopeError::BadReadHeader`].
    pub fn parse(value: &str) -> Result<ReadStamp, EnvelopeError> {
        let bad = || EnvelopeError::BadReadHeader;
        let (signature, [key, at]) = signed_parts(value, ["key", "at"]).ok_or_else(bad)?;
        Ok(ReadStamp {
            signature,
            key: key.ok_or_else(bad)?.parse().map_err(|_| bad())?,
            at: at.ok_or_else(bad)?.parse().map_err(|_| bad())?,
        })
    }

    /// Checks the stamp against the keys the edge trusts and its clock
    /// `now` (Unix seconds).
    pub fn check(&self, trusted: &[PublicKey], now: u64) -> Result<(), EnvelopeError> {
        let key = trusted.iter().find(|k| k.id() == self.key).ok_or_else(|| {
            EnvelopeError::UntrustedKey {
                key: self.key,
                trusted: trusted.iter().map(PublicKey::id).collect(),
            }
        })?;
        if now < CLOCK_FLOOR_SECS {
            return Err(EnvelopeError::ClockNotSet(now));
        }
        key.verify_signature(&read_message(self.at), &self.signature)?;
        if self.at.abs_diff(now) > MAX_STAMP_SKEW_SECS {
            return Err(EnvelopeError::StaleRead { at: self.at, now });
        }
        Ok(())
    }
}

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "ed25519-secret:";
const SIGNATURE_PREFIX: &str = "ed25519=";

/// An Ed25519 public key: what an edge holds.
///
/// Text form: `ed25519:` followed by the standard base64 of the 32 key bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

/// An Ed25519 signing key: what only the control service (and break-glass
/// operators) hold.
///
/// Text form: `ed25519-secret:` followed by the standard base64 of the 32-byte seed.
#[derive(Clone)]
pub struct SecretKey(ed25519_dalek::SigningKey);

impl PublicKey {
    /// Verifies a `rollout-signature` header value over `body` with this key
    /// alone.
    pub fn verify(&self, body: &[u8], signature_header: &str) -> Result<(), EnvelopeError> {
        SignatureHeader::parse(signature_header)?
            .verify(body, std::slice::from_ref(self))
            .map(|_| ())
    }

    fn verify_signature(
        &self,
        message: &[u8],
        signature: &ed25519_dalek::Signature,
    ) -> Result<(), EnvelopeError> {
        // Strict verification refuses malleable and small-order signatures.
        self.0
            .verify_strict(message, signature)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// This key's short name.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl SecretKey {
    /// A key from 32 random bytes (the caller supplies the randomness).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The `rollout-signature` header value for `body`, naming this key.
    pub fn sign(&self, body: &[u8]) -> String {
        let signature = self.0.sign(body);
        format!(
            "{SIGNATURE_PREFIX}{}; key={}",
            BASE64.encode(signature.to_bytes()),
            self.public_key().id()
        )
    }

    /// The header to push `signature` (this key's signature of the body
    /// whose digest is `digest`) with at Unix time `at`: the same signature,
    /// this key's id and a fresh push stamp. Refuses a signature that names
    /// another key.
    pub fn stamp(
        &self,
        signature: &str,
        digest: &Digest,
        at: u64,
    ) -> Result<String, EnvelopeError> {
        let header = SignatureHeader::parse(signature)?;
        let id = self.public_key().id();
        if let Some(named) = header.key.filter(|named| *named != id) {
            return Err(EnvelopeError::UntrustedKey {
                key: named,
                trusted: vec![id],
            });
        }
        let stamp = self.0.sign(&stamp_message(digest, at));
        Ok(format!(
            "{SIGNATURE_PREFIX}{}; key={id}; at={at}; stamp={}",
            BASE64.encode(header.signature.to_bytes()),
            BASE64.encode(stamp.to_bytes())
        ))
    }

    /// A `rollout-read` header value made at Unix time `at`: it asks an
    /// edge that trusts this key for the envelope it holds.
    pub fn read_stamp(&self, at: u64) -> String {
        let signature = self.0.sign(&read_message(at));
        format!(
            "{SIGNATURE_PREFIX}{}; key={}; at={at}",
            BASE64.encode(signature.to_bytes()),
            self.public_key().id()
        )
    }

    /// A 32-byte secret derived from this key for one `purpose` (the
    /// control service's probe token, say): SHA-256 of the purpose, a 0
    /// byte and the seed. Whoever holds the key derives the same; the key
    /// cannot be recovered from it.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        h.update([0u8]);
        h.update(self.0.to_bytes());
        h.finalize().into()
    }

    /// The text form. Not `Display`, so a secret is never printed by accident.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(self.0.to_bytes()))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", BASE64.encode(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public: {})", self.public_key())
    }
}

fn decode_key(s: &str, prefix: &str, what: &'static str) -> Result<[u8; 32], EnvelopeError> {
    let b64 = s
        .trim()
        .strip_prefix(prefix)
        .ok_or(EnvelopeError::BadKey(what))?;
    BASE64
        .decode(b64)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(EnvelopeError::BadKey(what))
}

impl std::str::FromStr for PublicKey {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<PublicKey, EnvelopeError> {
        const WHAT: &str = "public key must be ed25519:<base64 of 32 bytes>";
        let bytes = decode_key(s, PUBLIC_PREFIX, WHAT)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| EnvelopeError::BadKey("public key is not a valid Ed25519 point"))?;
        // No signature verifies strictly under a small-order point: trusting
        // one would lock every signer out.
        if key.is_weak() {
            return Err(EnvelopeError::BadKey(
                "public key is a small-order point, under which no signature verifies",
            ));
        }
        Ok(PublicKey(key))
    }
}

impl std::str::FromStr for SecretKey {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<SecretKey, EnvelopeError> {
        const WHAT: &str = "secret key must be ed25519-secret:<base64 of 32 bytes>";
        decode_key(s, SECRET_PREFIX, WHAT).map(SecretKey::from_seed)
    }
}

#[cfg(test)]
mod tests;
