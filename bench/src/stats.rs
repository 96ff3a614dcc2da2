//! Percentiles and the units figures are printed in.

/// Nearest-rank percentile of `samples` (`p` in 0..=1); sorts them.
/// `None` when there are none.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (p * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// Median and p99 of `samples`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The 50th percentile.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
    /// How many samples.
    pub n: usize,
}

impl Spread {
    /// `None` when there are no samples.
    pub fn of(samples: &mut [f64]) -> Option<Spread> {
        Some(Spread {
            p50: percentile(samples, 0.5)?,
            p99: percentile(samples, 0.99)?,
            max: percentile(samples, 1.0)?,
            n: samples.len(),
        })
    }
}

/// Seconds as a short human figure: ns, µs, ms or s with three significant digits.
pub fn secs(s: f64) -> String {
    if s < 0.0 {
        return format!("-{}", secs(-s));
    }
    if !s.is_finite() {
        return format!("{s}");
    }
    let (v, unit) = if s < 1e-6 {
        (s * 1e9, "ns")
    } else if s < 1e-3 {
        (s * 1e6, "µs")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// `p50 X · p99 Y` for a spread of seconds.
pub fn spread(s: &Spread) -> String {
    format!("p50 {} · p99 {}", secs(s.p50), secs(s.p99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        assert_eq!(percentile(&mut v, 0.5), Some(50.0));
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        assert_eq!(percentile(&mut v, 1.0), Some(100.0));
        assert_eq!(percentile(&mut v, 0.0), Some(1.0));
        assert_eq!(percentile(&mut [7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn units_follow_the_magnitude() {
        assert_eq!(secs(55.5e-9), "55.5 ns");
        assert_eq!(secs(0.000_016_5), "16.5 µs");
        assert_eq!(secs(0.2), "200 ms");
        assert_eq!(secs(1.234), "1.23 s");
        assert_eq!(secs(-0.000_408), "-408 µs");
    }
}
