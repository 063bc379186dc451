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

/// An optional time formatted, or `none` (for views: `-`, `never`).
pub fn format_ts_or(ts: Option<Timestamp>, none: &str) -> String {
    ts.map_or_else(|| none.to_string(), format_ts)
}

/// The current time at the precision records keep (microseconds), so a time written and read
/// back equals the one in memory.
pub fn now() -> Timestamp {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// The current time, formatted.
pub fn now_string() -> String {
    format_ts(now())
}

/// Parses an RFC 3339 timestamp (any offset) into UTC.
pub fn parse_ts(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// The one serde format of a time in a record, for `#[serde(with = "crate::base::clock::ts")]`
/// (`ts::option` for an optional one): written as [`format_ts`] (RFC 3339, UTC, microseconds,
/// `Z`), read as whatever [`parse_ts`] accepts (any offset, any number of fraction digits), so
/// records written by older versions, by hand or by `jq` keep loading. A string that is not a
/// time is a decoding error quoting it; the reader names the file and the field
/// (`Store::decode`, `dispatch_record::read_spec`; JSONL readers skip and count the line).
pub mod ts {
    use super::{Timestamp, format_ts, parse_ts};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ts(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let raw = std::borrow::Cow::<str>::deserialize(d)?;
        parse_ts(&raw).ok_or_else(|| serde::de::Error::custom(not_a_time(&raw)))
    }

    /// What a malformed time is said to be.
    pub fn not_a_time(raw: &str) -> String {
        let shown: String = raw.chars().take(80).collect();
        format!("{shown:?} is not an RFC 3339 time (expected e.g. 2026-01-01T00:00:00.000000Z)")
    }

    /// An optional time: `null` or absent is `None` (use with `#[serde(default)]`).
    pub mod option {
        use super::super::{Timestamp, format_ts, parse_ts};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format_ts(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            match Option::<std::borrow::Cow<str>>::deserialize(d)? {
                None => Ok(None),
                Some(raw) => parse_ts(&raw).map(Some).ok_or_else(|| serde::de::Error::custom(super::not_a_time(&raw))),
            }
        }
    }
}

/// A source of "now". Production code uses [`SystemClock`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        now()
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

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        #[serde(with = "ts")]
        at: Timestamp,
        #[serde(default, with = "ts::option")]
        maybe: Option<Timestamp>,
    }

    #[test]
    fn every_accepted_time_form_reads_and_is_written_in_the_one_format() {
        // (as found on disk, the instant as written back)
        let forms = [
            ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z"),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000000Z"),
            ("2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.500000Z"),
            ("2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00.123000Z"),
            ("2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00:00.123456Z"),
            ("2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00.000000Z"),
            ("2025-12-31T19:00:00.250-05:00", "2026-01-01T00:00:00.250000Z"),
            ("2026-01-01t00:00:00z", "2026-01-01T00:00:00.000000Z"),
        ];
        for (on_disk, written) in forms {
            let rec: Rec = serde_json::from_value(serde_json::json!({"at": on_disk, "maybe": on_disk}))
                .unwrap_or_else(|e| panic!("{on_disk} must load: {e}"));
            assert_eq!(Some(rec.at), parse_ts(on_disk), "{on_disk}");
            let out = serde_json::to_value(&rec).unwrap();
            assert_eq!(out["at"], written, "{on_disk}");
            assert_eq!(out["maybe"], written, "{on_disk}");
            // What is written reads back as the same instant, and writes the same bytes.
            let again: Rec = serde_json::from_value(out.clone()).unwrap();
            assert_eq!(serde_json::to_value(&again).unwrap(), out);
        }
        let none: Rec =
            serde_json::from_value(serde_json::json!({"at": "2026-01-01T00:00:00Z", "maybe": null})).unwrap();
        assert_eq!(none.maybe, None);
        assert_eq!(serde_json::to_value(&none).unwrap()["maybe"], serde_json::Value::Null);
        let absent: Rec = serde_json::from_value(serde_json::json!({"at": "2026-01-01T00:00:00Z"})).unwrap();
        assert_eq!(absent.maybe, None);
    }

    #[test]
    fn a_malformed_time_is_an_error_quoting_it() {
        for bad in ["yesterday", "", "2026-01-01", "2026-01-01 00:00:00", "1767225600", "2026-13-01T00:00:00Z"] {
            let e = serde_json::from_value::<Rec>(serde_json::json!({"at": bad})).unwrap_err().to_string();
            assert!(e.contains("is not an RFC 3339 time"), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
            let e = serde_json::from_value::<Rec>(serde_json::json!({"at": "2026-01-01T00:00:00Z", "maybe": bad}))
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not an RFC 3339 time"), "{bad:?}: {e}");
        }
        assert!(serde_json::from_value::<Rec>(serde_json::json!({"at": 5})).is_err());
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
