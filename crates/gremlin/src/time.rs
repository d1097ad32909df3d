//! Time parameters of `Context`/`At` (Skydive's time context): RFC 1123 dates, Go durations,
//! seconds or milliseconds since the epoch, `NOW` and `FOREVER`.

use skydive_graph::Time;

use crate::error::{Error, Result};
use crate::parser::Param;

/// A time context: the graph at a point (`start == last`) or over a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSlice {
    pub start: Time,
    pub last: Time,
}

impl TimeSlice {
    pub fn is_point(&self) -> bool {
        self.start == self.last
    }
}

/// A Go duration (`"-1s"`, `"1h30m"`, `"1.5h"`, `"300ms"`; surrounding blanks ignored) in
/// milliseconds, truncated towards zero.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    skydive_graph::parse_go_duration(s.trim())
        .ok()
        .map(|ns| ns / 1_000_000)
}

/// Parses an RFC 1123 date (`Mon, 02 Jan 2006 15:04:05 MST`), or RFC 3339, into milliseconds.
/// A zone abbreviation with no known offset counts as UTC, as Go's parser does.
pub fn parse_date(s: &str) -> Option<Time> {
    let s = s.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc2822(s) {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    let (head, zone) = s.rsplit_once(' ')?;
    if !zone.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    chrono::DateTime::parse_from_str(&format!("{head} +0000"), "%a, %d %b %Y %H:%M:%S %z")
        .ok()
        .map(|d| d.timestamp_millis())
}

const TIME_FORMAT_ERROR: &str = "Time must be in RFC1123 or in Go Duration format";

/// The time point of `Context(t, …)`.
pub fn time_point(p: &Param, now: Time) -> Result<Time> {
    match p {
        Param::Now => Ok(now),
        Param::Str(s) => parse_date(s)
            .or_else(|| parse_go_duration(s).map(|d| now.saturating_add(d)))
            .ok_or_else(|| Error::msg(TIME_FORMAT_ERROR)),
        Param::Int(i) => Ok(if *i > 2147483647 {
            *i
        } else {
            i.saturating_mul(1000)
        }),
        Param::Float(f) => {
            let i = *f as i64;
            Ok(if i > 2147483647 {
                i
            } else {
                (f * 1000.0) as i64
            })
        }
        _ => Err(Error::msg(
            "Key 'Context' must be either an integer or a string",
        )),
    }
}

/// The slice length of `Context(t, d)`, in milliseconds; `None` for `FOREVER`.
pub fn slice_duration(p: &Param) -> Result<Option<i64>> {
    match p {
        Param::Forever => Ok(None),
        Param::Str(s) => parse_go_duration(s)
            .map(|d| Some(d.saturating_abs()))
            .ok_or_else(|| {
                Error::msg(format!(
                    "Invalid duration '{s}': use a Go duration such as \"1m\""
                ))
            }),
        Param::Int(i) => Ok(Some(i.saturating_abs().saturating_mul(1000))),
        Param::Float(f) => Ok(Some((f.abs() * 1000.0) as i64)),
        _ => Err(Error::msg(
            "Key 'Context' must be either an integer or a string",
        )),
    }
}

/// The time context of a `Context(…)` step.
pub fn context_slice(params: &[Param], now: Time) -> Result<TimeSlice> {
    let last = time_point(&params[0], now)?;
    let start = match params.get(1) {
        None => last,
        Some(d) => match slice_duration(d)? {
            None => 0,
            Some(d) => last.saturating_sub(d),
        },
    };
    Ok(TimeSlice { start, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("-1s"), Some(-1000));
        assert_eq!(parse_go_duration("+1s"), Some(1000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000));
        assert_eq!(parse_go_duration("300ms"), Some(300));
        assert_eq!(parse_go_duration("-0s"), Some(0));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("1x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn rfc1123_dates_with_any_zone() {
        let utc = parse_date("Mon, 19 Jul 2021 10:00:00 GMT").unwrap();
        assert_eq!(utc, 1626688800000);
        assert_eq!(parse_date("Mon, 19 Jul 2021 10:00:00 UTC"), Some(utc));
        assert_eq!(parse_date("Mon, 19 Jul 2021 10:00:00 CEST"), Some(utc));
        assert_eq!(
            parse_date("Mon, 19 Jul 2021 10:00:00 MST"),
            Some(utc + 7 * 3600 * 1000)
        );
        assert_eq!(parse_date("2021-07-19T10:00:00Z"), Some(utc));
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn integer_time_points_are_seconds_or_milliseconds() {
        assert_eq!(
            time_point(&Param::Int(1626688800), 0).unwrap(),
            1626688800000
        );
        assert_eq!(
            time_point(&Param::Int(1626688800000), 0).unwrap(),
            1626688800000
        );
        assert_eq!(time_point(&Param::Now, 5).unwrap(), 5);
        assert_eq!(time_point(&Param::Str("-1s".into()), 5000).unwrap(), 4000);
        assert_eq!(
            time_point(&Param::Str("soon".into()), 0)
                .unwrap_err()
                .to_string(),
            TIME_FORMAT_ERROR
        );
    }

    #[test]
    fn slices() {
        let s = context_slice(&[Param::Now, Param::Str("1m".into())], 100_000).unwrap();
        assert_eq!(
            s,
            TimeSlice {
                start: 40_000,
                last: 100_000
            }
        );
        let s = context_slice(&[Param::Now, Param::Forever], 100_000).unwrap();
        assert_eq!(s.start, 0);
        let s = context_slice(&[Param::Now, Param::Int(10)], 100_000).unwrap();
        assert_eq!(s.start, 90_000);
    }
}
