//! Stable buckets: the one function every edge build must agree on forever.
//!
//! `digest = SHA-256(salt || 0x00 || key)`, `h = first 8 bytes big-endian`,
//! `bucket = (h * 1_000_000) >> 64`. The multiply-shift maps the 64-bit hash
//! onto `0..1_000_000` without the bias a modulo would add. The frozen vectors
//! in `core/tests/vectors/buckets.json` pin this output; changing it would move
//! users between arms on every edge at once.

use sha2::{Digest as _, Sha256};

/// Number of buckets: one per part per million.
pub const BUCKETS: u32 = 1_000_000;

/// A position in `0 ..= 999_999`. A key is on an arm or flag iff its bucket is
/// below that arm's or flag's weight in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket(u32);

impl Bucket {
    /// The bucket number, `0 ..= 999_999`.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The bucket of `key` under `salt`.
///
/// A salt never contains NUL (validation refuses one), so the `0x00`
/// separator makes `(salt, key)` pairs unambiguous.
pub fn bucket_of(salt: &str, key: &str) -> Bucket {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0u8]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let h = u64::from_be_bytes(first);
    // (h * 10^6) >> 64 < 10^6 because h < 2^64, so the cast cannot truncate.
    Bucket(((u128::from(h) * u128::from(BUCKETS)) >> 64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed independently with Python's hashlib:
    /// `(int.from_bytes(sha256(salt + b"\0" + key).digest()[:8], "big") * 10**6) >> 64`.
    #[test]
    fn matches_an_independent_implementation() {
        let cases = [
            ("web", "user-1", 692_408),
            ("web", "", 883_151),
            ("checkout", "alice", 957_224),
            ("é", "日本", 886_087),
        ];
        for (salt, key, want) in cases {
            assert_eq!(
                bucket_of(salt, key).get(),
                want,
                "salt {salt:?} key {key:?}"
            );
        }
    }

    #[test]
    fn salt_and_key_do_not_run_together() {
        assert_ne!(bucket_of("ab", "c"), bucket_of("a", "bc"));
    }
}
