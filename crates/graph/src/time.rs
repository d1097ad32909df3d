//! Time: the clock the analyzer's timed logic reads (injectable, so that expiry is tested
//! without sleeping), and Go durations (`5s`, `1m30s`, `-1.5h`, `300ms`), as Skydive reads
//! them in `X-Resource-TTL` headers, alert `duration:` triggers and `Context`/`At` times.
//!
//! The duration parser is written by hand: the format is Go's `time.ParseDuration`, which no
//! maintained crate parses with the same units, sign and overflow rules, and it is short.

use crate::element::{Time, now_ms};

/// Where the time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> Time;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Time {
        now_ms()
    }
}

/// Why a Go duration was refused; the message is Go's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    /// Where only a length of time makes sense (a time to live, a period).
    #[error("time: negative duration {0:?}")]
    Negative(String),
}

/// A Go duration that cannot be negative (a time to live, a period), blanks around it
/// ignored.
pub fn parse_go_period(s: &str) -> Result<std::time::Duration, DurationError> {
    let ns = parse_go_duration(s.trim())?;
    u64::try_from(ns)
        .map(std::time::Duration::from_nanos)
        .map_err(|_| DurationError::Negative(s.to_string()))
}

/// Parses a Go duration into nanoseconds, as Go's `time.ParseDuration` does: an optional
/// sign, then one or more decimal numbers, each with a unit (`ns`, `us`, `µs`, `ms`, `s`,
/// `m`, `h`); `0` alone needs no unit. Durations beyond Go's range (±292 years) are refused.
pub fn parse_go_duration(s: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::Invalid(s.to_string());
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The integer part, then the fraction: at least one digit in all.
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                f.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(s.to_string())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_string(),
                    input: s.to_string(),
                });
            }
        };
        // Integer arithmetic, as Go: the fraction's digits beyond the unit's precision are
        // dropped. Digits past 38 cannot matter and would overflow.
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(invalid)?;
        let mut unit_part = scale;
        for d in frac.bytes().take(38) {
            unit_part /= 10;
            value += u128::from(d - b'0') * unit_part;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 + u128::from(neg) {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if neg {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("5s"), Ok(5_000 * MS));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000 * MS));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000 * MS));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000 * MS));
        assert_eq!(parse_go_duration("300ms"), Ok(300 * MS));
        assert_eq!(parse_go_duration("2us"), Ok(2_000));
        assert_eq!(parse_go_duration("2µs"), Ok(2_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500 * MS));
        assert_eq!(parse_go_duration("1.s"), Ok(1_000 * MS));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-0s"), Ok(0));
        assert_eq!(parse_go_duration("+1s"), Ok(1_000 * MS));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000 * MS));
        assert_eq!(parse_go_duration("1.0000000001s"), Ok(1_000_000_000));
        assert_eq!(parse_go_duration("2562047h47m16.854775807s"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-2562047h47m16.854775808s"), Ok(i64::MIN));
    }

    #[test]
    fn malformed_durations_are_refused_with_gos_messages() {
        for bad in ["", "-", "s", ".s", "2562047h47m16.854775808s"] {
            assert_eq!(
                parse_go_duration(bad),
                Err(DurationError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_go_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_go_duration("1x").unwrap_err().to_string(),
            "time: unknown unit \"x\" in duration \"1x\""
        );
        assert_eq!(
            parse_go_duration("1..5s"),
            Err(DurationError::MissingUnit("1..5s".into()))
        );
        assert!(parse_go_duration("ms5").is_err());
        assert!(parse_go_duration(" 5s").is_err(), "Go does not trim");
    }

    #[test]
    fn periods_are_positive_durations() {
        use std::time::Duration;
        assert_eq!(parse_go_period(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_period("+2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_go_period("-1s").unwrap_err().to_string(),
            "time: negative duration \"-1s\""
        );
        assert!(parse_go_period("5").is_err());
    }
}
