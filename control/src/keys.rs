//! The control service's signing keys, and how they rotate without
//! redeploying edges.
//!
//! The key file holds one or more `ed25519-secret:` lines (blank lines and
//! `#` comments allowed). Every version declares the public half of every
//! key in the file as the set edges trust from then on
//! ([`EnvelopeDoc::keys`](rollout_core::EnvelopeDoc)), and is signed by the
//! first key in the file that the edges already trust: the set the previous
//! version declared (or, before any version declared one, the keys that
//! verify it). So rotation is two commits:
//!
//! 1. `rotate`: a new key goes first in the file; the next version, signed
//!    by the old key, declares both. From the version after, the new key
//!    signs.
//! 2. `retire`: the old key leaves the file; the next version, signed by the
//!    new key, declares only it, and edges refuse the old key from then on.
//!
//! Each push also carries a push stamp by the key that signed the version
//! (see [`rollout_core::SignatureHeader`]), made when it is sent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rollout_core::{
    Digest, EnvelopeDoc, EnvelopeMeta, KeyId, MAX_TRUSTED_KEYS, PublicKey, SecretKey,
    SignatureHeader,
};

pub use rollout_core::MAX_VERSION;

/// Largest key file read: a handful of short lines.
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

/// The keys in a key file, in order: the first trusted one signs.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<SecretKey>,
}

/// Why a key file or a key change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A line that is not a secret key.
    #[error("line {line}: {why}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No key at all.
    #[error("holds no key")]
    Empty,
    /// More keys than an envelope may declare.
    #[error("holds {0} keys, over the limit of {MAX_TRUSTED_KEYS}")]
    TooMany(usize),
    /// The same key twice.
    #[error("key {0} is listed twice")]
    Duplicate(KeyId),
    /// Retiring a key the file does not hold.
    #[error("no key {0} to retire (keys: {1})")]
    Unknown(KeyId, String),
    /// Retiring the last key.
    #[error("key {0} is the only key: rotate to a new one first")]
    Last(KeyId),
    /// No key in the file is one the edges trust.
    #[error(
        "no key in the key file is trusted by the edges (they trust {trusted}; the file holds {held}): restore a trusted key to the file"
    )]
    NoTrustedSigner {
        /// Ids the edges trust.
        trusted: String,
        /// Ids in the file.
        held: String,
    },
    /// Reading or writing the file.
    #[error("{0}")]
    Io(String),
}

fn ids(keys: impl IntoIterator<Item = PublicKey>) -> String {
    keys.into_iter()
        .map(|k| k.id().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Keyring {
    /// A ring of `keys`, first preferred.
    pub fn new(keys: Vec<SecretKey>) -> Result<Keyring, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        if keys.len() > MAX_TRUSTED_KEYS {
            return Err(KeyError::TooMany(keys.len()));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.public_key() == k.public_key()) {
                return Err(KeyError::Duplicate(k.public_key().id()));
            }
        }
        Ok(Keyring { keys })
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.parse::<SecretKey>().map_err(|e| KeyError::Line {
                line: i + 1,
                why: e.to_string(),
            })?;
            keys.push(key);
        }
        Keyring::new(keys)
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# rollout signing keys: the first one the edges trust signs; every one is declared trusted.\n",
        );
        for key in &self.keys {
            out.push_str(&format!("# {}\n{}\n", key.public_key().id(), key.to_text()));
        }
        out
    }

    /// The preferred key (first in the file).
    pub fn first(&self) -> &SecretKey {
        // `new` refuses an empty ring.
        &self.keys[0]
    }

    /// The public keys, in file order.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(SecretKey::public_key).collect()
    }

    /// The key with this id.
    pub fn find(&self, id: KeyId) -> Option<&SecretKey> {
        self.keys.iter().find(|k| k.public_key().id() == id)
    }

    /// The first key in the file that edges trusting `trusted` accept.
    pub fn signer_for(&self, trusted: &[PublicKey]) -> Result<&SecretKey, KeyError> {
        self.keys
            .iter()
            .find(|k| trusted.contains(&k.public_key()))
            .ok_or_else(|| KeyError::NoTrustedSigner {
                trusted: ids(trusted.iter().copied()),
                held: ids(self.public_keys()),
            })
    }

    /// The keys edges trust once `parent` (the latest version, if any) is
    /// applied: the set it declares, else the keys of this ring that verify
    /// its signature (versions from before keys were declared), else (no
    /// version yet) the first key, which edges are deployed with.
    pub fn trusted_after(&self, parent: Option<(&[u8], &str)>) -> Vec<PublicKey> {
        let Some((body, signature)) = parent else {
            return vec![self.first().public_key()];
        };
        if let Some(keys) = EnvelopeMeta::read(body).and_then(|m| m.keys) {
            return keys;
        }
        self.public_keys()
            .into_iter()
            .filter(|k| k.verify(body, signature).is_ok())
            .collect()
    }

    /// Declares this ring's keys in `doc`.
    pub fn declare<C>(&self, doc: &mut EnvelopeDoc<C>) {
        declare(doc, &self.public_keys());
    }

    /// The header to push `signature` (of `body`) with now: stamped by the
    /// key that made it, when this ring still holds that key (a signature
    /// from before keys were named is matched by verifying it); else as
    /// stored (an edge that holds a config takes it; one that holds nothing
    /// refuses it).
    pub fn stamp(&self, signature: &str, body: &[u8], at: u64) -> String {
        let Ok(header) = SignatureHeader::parse(signature) else {
            return signature.to_owned();
        };
        let key = match header.key {
            Some(id) => self.find(id),
            None => self
                .keys
                .iter()
                .find(|k| header.verify(body, &[k.public_key()]).is_ok()),
        };
        key.and_then(|key| key.stamp(signature, &Digest::of(body), at).ok())
            .unwrap_or_else(|| signature.to_owned())
    }

    /// This ring with a new first key.
    pub fn rotated(&self, new: SecretKey) -> Result<Keyring, KeyError> {
        let mut keys = vec![new];
        keys.extend(self.keys.iter().cloned());
        Keyring::new(keys)
    }

    /// This ring without the key `id`.
    pub fn retired(&self, id: KeyId) -> Result<Keyring, KeyError> {
        if self.find(id).is_none() {
            return Err(KeyError::Unknown(id, ids(self.public_keys())));
        }
        if self.keys.len() == 1 {
            return Err(KeyError::Last(id));
        }
        Keyring::new(
            self.keys
                .iter()
                .filter(|k| k.public_key().id() != id)
                .cloned()
                .collect(),
        )
    }
}

/// Declares `keys` in `doc`: the set edges trust from that version on.
pub fn declare<C>(doc: &mut EnvelopeDoc<C>, keys: &[PublicKey]) {
    doc.keys = Some(keys.iter().map(ToString::to_string).collect());
}

/// The ring a running service signs with, and the file it lives in.
#[derive(Debug)]
pub struct Keys {
    path: Option<PathBuf>,
    ring: RwLock<Keyring>,
}

impl Keys {
    /// Keys kept only in memory (tests).
    pub fn in_memory(ring: Keyring) -> Arc<Keys> {
        Arc::new(Keys {
            path: None,
            ring: RwLock::new(ring),
        })
    }

    /// Keys read from `path`, written back there when they change.
    pub fn from_file(path: &Path) -> Result<Arc<Keys>, KeyError> {
        let bytes = crate::input::read_bounded(path, MAX_KEY_FILE_BYTES)
            .map_err(|e| KeyError::Io(e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| KeyError::Io(format!("{}: not UTF-8 text", path.display())))?;
        let ring = Keyring::parse(&text)?;
        Ok(Arc::new(Keys {
            path: Some(path.to_owned()),
            ring: RwLock::new(ring),
        }))
    }

    /// The ring now.
    pub fn current(&self) -> Keyring {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the ring: the file first (a new file renamed over the old,
    /// private to its owner), then memory. On error nothing changed.
    pub fn replace(&self, ring: Keyring) -> Result<(), KeyError> {
        if let Some(path) = &self.path {
            write_private(path, &ring.to_text())?;
        }
        match self.ring.write() {
            Ok(mut held) => *held = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }
}

/// Writes `text` to a temporary file beside `path`, mode 0600, synced, then
/// renames it over `path`: a crash leaves the old file or the new, whole.
fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| KeyError::Io(format!("writing {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    // A file (or a link) left at the temporary name is removed, and the new
    // one is created fresh (O_EXCL: never through a link) with mode 0600.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    #[test]
    fn a_key_file_round_trips_and_bad_files_are_named() {
        let ring = Keyring::new(vec![key(1), key(2)]).expect("ring");
        let again = Keyring::parse(&ring.to_text()).expect("parses");
        assert_eq!(again.public_keys(), ring.public_keys());
        // A file `rollout keygen` wrote: one bare line.
        assert_eq!(
            Keyring::parse(&format!("{}\n", key(1).to_text()))
                .expect("one key")
                .public_keys(),
            vec![key(1).public_key()]
        );
        assert!(matches!(
            Keyring::parse("# nothing\n"),
            Err(KeyError::Empty)
        ));
        let err = Keyring::parse(&format!("{}\nnot a key\n", key(1).to_text())).expect_err("bad");
        assert!(err.to_string().starts_with("line 2: "), "{err}");
        let twice = format!("{}\n{}\n", key(1).to_text(), key(1).to_text());
        assert!(matches!(
            Keyring::parse(&twice),
            Err(KeyError::Duplicate(_))
        ));
    }

    #[test]
    fn the_signer_is_the_first_key_the_edges_trust() {
        let old = Keyring::new(vec![key(1)]).expect("ring");
        let rotated = old.rotated(key(2)).expect("rotates");
        // Edges trust only the old key: it signs the version introducing the new.
        let trusted = [key(1).public_key()];
        assert_eq!(
            rotated.signer_for(&trusted).map(SecretKey::public_key).ok(),
            Some(key(1).public_key())
        );
        // Once both are trusted, the new one signs.
        let both = rotated.public_keys();
        assert_eq!(
            rotated.signer_for(&both).map(SecretKey::public_key).ok(),
            Some(key(2).public_key())
        );
        let retired = rotated.retired(key(1).public_key().id()).expect("retires");
        assert_eq!(retired.public_keys(), vec![key(2).public_key()]);
        assert!(matches!(
            retired.retired(key(2).public_key().id()),
            Err(KeyError::Last(_))
        ));
        assert!(matches!(
            retired.retired(key(7).public_key().id()),
            Err(KeyError::Unknown(..))
        ));
        // A file holding no trusted key cannot sign for these edges.
        assert!(matches!(
            Keyring::new(vec![key(3)])
                .expect("ring")
                .signer_for(&trusted),
            Err(KeyError::NoTrustedSigner { .. })
        ));
    }
}
