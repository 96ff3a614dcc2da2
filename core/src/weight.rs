//! Percentages as they travel (up to 4 decimals) and as they are compared
//! (parts per million).

use crate::bucket::{BUCKETS, Bucket};

/// A share of keys in parts per million, `0 ..= 1_000_000`.
///
/// Written as a percentage with at most 4 decimals (`0.0001` is 1 ppm), so
/// every percentage a config can hold maps to exactly one ppm value.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Weight(u32);

impl TryFrom<u32> for Weight {
    type Error = InvalidWeight;
    fn try_from(ppm: u32) -> Result<Weight, InvalidWeight> {
        Weight::from_ppm(ppm)
    }
}

impl From<Weight> for u32 {
    fn from(w: Weight) -> u32 {
        w.0
    }
}

/// Why a percentage was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWeight {
    /// Below 0 or above 100.
    #[error("must be 0..=100")]
    OutOfRange,
    /// More precision than one part per million.
    #[error("at most 4 decimal places (0.0001 % is the smallest step)")]
    TooPrecise,
    /// NaN or infinite.
    #[error("must be a finite number")]
    NotFinite,
}

impl Weight {
    /// Nobody.
    pub const ZERO: Weight = Weight(0);
    /// Everybody.
    pub const FULL: Weight = Weight(BUCKETS);

    /// A weight from parts per million.
    pub fn from_ppm(ppm: u32) -> Result<Weight, InvalidWeight> {
        if ppm > BUCKETS {
            return Err(InvalidWeight::OutOfRange);
        }
        Ok(Weight(ppm))
    }

    /// A weight from a percentage such as `12.5`.
    pub fn from_percent(percent: f64) -> Result<Weight, InvalidWeight> {
        if !percent.is_finite() {
            return Err(InvalidWeight::NotFinite);
        }
        if !(0.0..=100.0).contains(&percent) {
            return Err(InvalidWeight::OutOfRange);
        }
        // A decimal with 4 places is not exact in binary; it lands within
        // about 1e-9 ppm of an integer after scaling, far inside the tolerance.
        let scaled = percent * 10_000.0;
        let ppm = scaled.round();
        if (scaled - ppm).abs() > 1e-6 {
            return Err(InvalidWeight::TooPrecise);
        }
        // 0 <= ppm <= 1_000_000 by the range check above.
        Ok(Weight(ppm as u32))
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The percentage, exact to the 4 decimals it was written with.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Whether a key in `bucket` falls inside this weight. Raising the weight
    /// only ever adds buckets, which is what keeps a canary ramp sticky.
    pub fn admits(self, bucket: Bucket) -> bool {
        bucket.get() < self.0
    }
}

impl std::fmt::Display for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_map_to_exact_ppm() {
        let cases: &[(f64, Result<u32, InvalidWeight>)] = &[
            (0.0, Ok(0)),
            (0.0001, Ok(1)),
            (10.0, Ok(100_000)),
            (12.3456, Ok(123_456)),
            (99.9999, Ok(999_999)),
            (100.0, Ok(1_000_000)),
            (33.33333, Err(InvalidWeight::TooPrecise)),
            (0.00001, Err(InvalidWeight::TooPrecise)),
            (-0.5, Err(InvalidWeight::OutOfRange)),
            (100.0001, Err(InvalidWeight::OutOfRange)),
            (f64::NAN, Err(InvalidWeight::NotFinite)),
            (f64::INFINITY, Err(InvalidWeight::NotFinite)),
        ];
        for &(percent, want) in cases {
            assert_eq!(
                Weight::from_percent(percent).map(Weight::ppm),
                want,
                "{percent}"
            );
        }
    }

    #[test]
    fn every_ppm_survives_the_percent_round_trip() {
        for ppm in (0..=BUCKETS).step_by(7).chain([1, 999_999, BUCKETS]) {
            let w = Weight::from_ppm(ppm).expect("in range");
            assert_eq!(Weight::from_percent(w.percent()), Ok(w), "{ppm}");
        }
    }

    #[test]
    fn zero_admits_nobody_and_full_admits_everybody() {
        let lowest = crate::bucket_of("s", "x");
        assert!(!Weight::ZERO.admits(lowest));
        assert!(Weight::FULL.admits(lowest));
    }
}
