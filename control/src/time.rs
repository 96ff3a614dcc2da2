//! Times as the API and the CLI write them: RFC 3339 in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `ms` since the Unix epoch as RFC 3339 with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the Unix epoch of a time written as RFC 3339
/// (`2026-11-27T09:00:00Z`, fractions and offsets `Z` only) or as a
/// duration before now (`10m ago`, `90s ago`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let t = if let Some(ago) = text.strip_suffix("ago") {
        let d = humantime::parse_duration(ago.trim()).map_err(|e| format!("time {text:?}: {e}"))?;
        SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("time {text:?} is before the epoch"))?
    } else {
        humantime::parse_rfc3339_weak(text).map_err(|e| {
            format!("time {text:?}: {e} (expected RFC 3339 such as 2026-11-27T09:00:00Z, or e.g. \"10m ago\")")
        })?
    };
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("time {text:?} is before the epoch"))?;
    Ok(d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_relative_times_are_before_now() {
        let ms = 1_795_000_000_123;
        assert_eq!(parse_time(&format_ms(ms)), Ok(ms));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        let ago = parse_time("10m ago").expect("relative");
        let now = crate::store::now_ms();
        assert!((now - ago - 600_000).abs() < 5_000);
        assert!(parse_time("yesterday-ish").is_err());
    }
}
