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
    /// A digest that is not 64 lowercase hex digits.
    #[error("digest must be 64 lowercase hex digits")]
    BadDigest,
    /// A key that is not in the documented text form.
    #[error("{0}")]
    BadKey(&'static str),
    /// The config inside the envelope is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
        Ok(Envelope {
            version: doc.version,
            parent: doc.parent,
            issued_at: doc.issued_at,
            actor: doc.actor,
            reason: doc.reason,
            digest: Digest::of(body),
            config,
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
    /// Verifies a `rollout-signature` header value over `body`.
    pub fn verify(&self, body: &[u8], signature_header: &str) -> Result<(), EnvelopeError> {
        let b64 = signature_header
            .trim()
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(EnvelopeError::BadSignatureHeader)?;
        let bytes: [u8; 64] = BASE64
            .decode(b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(EnvelopeError::BadSignatureHeader)?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        // Strict verification refuses malleable and small-order signatures.
        self.0
            .verify_strict(body, &signature)
            .map_err(|_| EnvelopeError::BadSignature)
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

    /// The `rollout-signature` header value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let signature = self.0.sign(body);
        format!("{SIGNATURE_PREFIX}{}", BASE64.encode(signature.to_bytes()))
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
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| EnvelopeError::BadKey("public key is not a valid Ed25519 point"))
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
