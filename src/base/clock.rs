//! Time: the RFC 3339 UTC format every file uses, and an injectable clock so time-based logic
//! (backoff, heartbeat thresholds, schedules) is tested without real waits.

use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::Arc;
use std::sync::Mutex;

pub type Timestamp = DateTime<Utc>;

/// Formats a timestamp the way every coordination file stores it: RFC 3339, UTC, microseconds.
pub fn format_ts(ts: Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The current time, formatted.
pub fn now_string() -> String {
    format_ts(Utc::now())
}

/// Parses an RFC 3339 timestamp (any offset) into UTC.
pub fn parse_ts(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// A source of "now". Production code uses [`SystemClock`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parses an operator duration: `30s`, `15m`, `2h`, `1d`, `500ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 15m, 2h, 1d"))?;
    let secs = match unit {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hr" | "hrs" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}: too long"))
}

/// Formats a duration the way the runbooks print it: `15h32m`, `3m45s`, `12s`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86400, (secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_duration_is_refused_not_a_panic() {
        // Found by the schedule_expr fuzz target: 29 digits overflowed Duration::from_secs_f64.
        assert!(parse_duration("30830888888888880088888888800").unwrap_err().contains("too long"));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_duration("1.5s").unwrap(), std::time::Duration::from_millis(1500));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("7").unwrap().as_secs(), 7);
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(12), "12s");
        assert_eq!(human_duration(225), "3m45s");
        assert_eq!(human_duration(15 * 3600 + 32 * 60), "15h32m");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Utc::now();
        let s = format_ts(t);
        assert!(s.ends_with('Z'));
        let back = parse_ts(&s).unwrap();
        assert_eq!(back.timestamp_micros(), t.timestamp_micros());
    }
}
