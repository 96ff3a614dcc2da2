//! Version numbers.

use serde::{Deserialize, Serialize};

/// A config version number: grows with every issued version, rollbacks
/// included. `0` ([`Version::NONE`]) means "none": nothing issued, or
/// nothing applied on an edge.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// No version.
    pub const NONE: Version = Version(0);

    /// Version `n`.
    pub const fn new(n: u64) -> Version {
        Version(n)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether this is [`Version::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// How many versions `self` is behind `newer` (0 when it is not behind).
    pub const fn behind(self, newer: Version) -> u64 {
        newer.0.saturating_sub(self.0)
    }
}

impl From<u64> for Version {
    fn from(n: u64) -> Version {
        Version(n)
    }
}

impl From<Version> for u64 {
    fn from(v: Version) -> u64 {
        v.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Version {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Version, Self::Err> {
        s.parse().map(Version)
    }
}
