//! Schedule expressions and their slots: 5-field cron (and `@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`, `@annually`) evaluated by croner in the schedule's time zone, and fixed
//! intervals (`every 15m`) counted in real seconds from an anchor. All times in and out are UTC;
//! slots are whole seconds.
//!
//! Daylight saving time is croner's: a fixed-time job whose wall time falls into a spring-forward
//! gap runs at the first instant after the gap; in a fall-back repeat it runs once (the first
//! occurrence); interval/wildcard patterns (`*/5 * * * *`) run in both copies of the repeated
//! hour. `every` intervals are absolute durations and ignore the zone.

use crate::base::clock::Timestamp;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The aliases croner accepts besides 5 fields.
const ALIASES: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];

/// Forward steps a cron scan takes before it estimates instead of counting (≈ 14 days of a
/// per-minute schedule).
const SCAN_LIMIT: u64 = 20_000;

/// A parsed schedule expression bound to its zone (cron) or anchor (interval).
#[derive(Debug, Clone)]
pub enum Expr {
    Cron { cron: Box<Cron>, tz: Tz },
    Every { seconds: i64, anchor: i64 },
}

/// Parses a cron expression (5 fields or an alias). The error names the problem.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let e = expr.trim();
    if e.is_empty() {
        return Err("the cron expression is empty".into());
    }
    if e.starts_with('@') {
        if !ALIASES.contains(&e.to_ascii_lowercase().as_str()) {
            return Err(format!("unknown cron alias {e:?}: use @hourly, @daily, @weekly, @monthly or @yearly"));
        }
    } else {
        let fields = e.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "{e:?} has {fields} field(s); a cron expression has 5: minute hour day-of-month month day-of-week \
                 (e.g. \"*/5 * * * *\", \"0 3 * * 1-5\")"
            ));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(e)
        .map_err(|err| format!("{e:?} is not a valid cron expression: {err}"))
}

/// Longest interval accepted: 100 years (slot arithmetic stays far from overflow).
pub const MAX_EVERY_SECONDS: u64 = 100 * 366 * 86_400;

/// Parses an interval (`30s`, `15m`, `2h`, `1d`): whole seconds, at least one, at most 100 years.
pub fn parse_every(every: &str) -> Result<i64, String> {
    let d = crate::base::clock::parse_duration(every)?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!("{every:?} must be a whole number of seconds, at least 1s (e.g. 30s, 15m, 2h)"));
    }
    if d.as_secs() > MAX_EVERY_SECONDS {
        return Err(format!("{every:?} is too long: at most 100 years"));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("{every:?} is too long"))
}

/// Parses an IANA time zone name.
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as UTC, Europe/Berlin, America/New_York)")
    })
}

impl Expr {
    /// Builds the expression of a schedule: exactly one of `cron` and `every`; `tz` is the
    /// schedule's zone (already resolved against `[scheduler] timezone`); `anchor` the start of
    /// an interval (its `created_at`).
    pub fn new(cron: Option<&str>, every: Option<&str>, tz: Tz, anchor: Timestamp) -> Result<Expr, String> {
        match (cron, every) {
            (Some(c), None) => Ok(Expr::Cron { cron: Box::new(parse_cron(c)?), tz }),
            (None, Some(e)) => Ok(Expr::Every { seconds: parse_every(e)?, anchor: anchor.timestamp() }),
            (Some(_), Some(_)) => Err("give either a cron expression or an interval (every), not both".into()),
            (None, None) => Err("give a cron expression or an interval (every)".into()),
        }
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let secs = t.timestamp();
        match self {
            Expr::Every { seconds, anchor } => {
                let k = ((secs - anchor).div_euclid(*seconds) + 1).max(1);
                from_secs(anchor + k * seconds)
            }
            Expr::Cron { cron, tz } => {
                let start = tz.from_utc_datetime(&from_secs(secs)?.naive_utc());
                cron.find_next_occurrence(&start, false).ok().map(|d| d.with_timezone(&Utc))
            }
        }
    }

    /// The first slot at or after `t`.
    pub fn at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Slots are whole seconds: the first slot at or after t is the first after ceil(t) - 1s.
        let ceil = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
        self.next_after(from_secs(ceil - 1)?)
    }

    /// The slots in `[first, now]`: how many there are, and the last `keep` of them (ascending).
    /// `first` should be a slot (the cursor); a cron scan past [`SCAN_LIMIT`] slots estimates the
    /// count (`exact` false) and still returns the slots nearest `now`.
    pub fn due_between(&self, first: Timestamp, now: Timestamp, keep: usize) -> Due {
        let keep = keep.max(1);
        let Some(start) = self.at_or_after(first) else { return Due::default() };
        if start > now {
            return Due::default();
        }
        match self {
            Expr::Every { seconds, anchor } => {
                let k0 = (start.timestamp() - anchor) / seconds;
                let k1 = (now.timestamp() - anchor).div_euclid(*seconds);
                let total = (k1 - k0 + 1).max(0) as u64;
                let from = (k1 - keep as i64 + 1).max(k0);
                let recent = (from..=k1).filter_map(|k| from_secs(anchor + k * seconds)).collect();
                Due { total, exact: true, recent }
            }
            Expr::Cron { .. } => {
                let mut recent = std::collections::VecDeque::with_capacity(keep);
                let mut total = 0u64;
                let mut slot = Some(start);
                while let Some(s) = slot.filter(|s| *s <= now) {
                    total += 1;
                    if recent.len() == keep {
                        recent.pop_front();
                    }
                    recent.push_back(s);
                    if total >= SCAN_LIMIT {
                        // Far behind: estimate the rest from the density so far and rescan only
                        // the stretch just before now for the slots nearest it.
                        let per_slot = ((s - start).num_seconds() as f64 / (total - 1) as f64).max(1.0);
                        let rest = ((now - s).num_seconds() as f64 / per_slot) as u64;
                        let window = (per_slot * keep as f64 * 4.0) as i64;
                        let tail_from = (now - chrono::Duration::seconds(window)).max(s);
                        let tail = self.scan(tail_from, now, keep);
                        let recent = if tail.is_empty() { recent.into_iter().collect() } else { tail };
                        return Due { total: total + rest, exact: false, recent };
                    }
                    slot = self.next_after(s);
                }
                Due { total, exact: true, recent: recent.into_iter().collect() }
            }
        }
    }

    /// The last `keep` slots in `(from, now]`, by a forward walk.
    fn scan(&self, from: Timestamp, now: Timestamp, keep: usize) -> Vec<Timestamp> {
        let mut out = std::collections::VecDeque::with_capacity(keep);
        let mut slot = self.next_after(from);
        while let Some(s) = slot.filter(|s| *s <= now) {
            if out.len() == keep {
                out.pop_front();
            }
            out.push_back(s);
            slot = self.next_after(s);
        }
        out.into_iter().collect()
    }

    /// A plain-English description (croner's for cron).
    pub fn describe(&self) -> String {
        match self {
            Expr::Cron { cron, .. } => cron.describe(),
            Expr::Every { seconds, .. } => format!("Every {}.", crate::base::clock::human_duration(*seconds)),
        }
    }
}

/// The due slots of a schedule (see [`Expr::due_between`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Due {
    pub total: u64,
    /// False when `total` is an estimate (more than 20 000 cron slots behind).
    pub exact: bool,
    /// The most recent due slots, oldest first.
    pub recent: Vec<Timestamp>,
}

fn from_secs(secs: i64) -> Option<Timestamp> {
    DateTime::from_timestamp(secs, 0)
}

/// Formats a UTC time in a zone for operators: `2026-03-29 03:00:00 CEST`.
pub fn format_in_zone(t: Timestamp, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_with_a_huge_number_is_refused_not_a_panic() {
        // Found by the schedule_expr fuzz target (a 29-digit interval panicked), and the slot
        // arithmetic of a near-i64::MAX interval overflowed.
        assert!(parse_every("30830888888888880088888888800").is_err());
        assert!(parse_every("9223372036854775807").unwrap_err().contains("too long"));
        let anchor = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let e = Expr::new(None, Some("36600d"), chrono_tz::UTC, anchor).unwrap();
        assert!(e.next_after(anchor).is_some());
        assert_eq!(e.due_between(anchor, anchor + chrono::Duration::days(1), 3).total, 0);
        assert_eq!(e.due_between(anchor, anchor + chrono::Duration::days(36_600 * 3), 3).total, 3);
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn cron(e: &str, tz: &str) -> Expr {
        Expr::new(Some(e), None, parse_tz(tz).unwrap(), utc(2026, 1, 1, 0, 0, 0)).unwrap()
    }

    fn next_n(e: &Expr, from: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = e.next_after(t).unwrap();
            out.push(t);
        }
        out
    }

    /// The next `want.len()` times of `expr` in zone `tz` after `from` are `want`.
    fn assert_next(expr: &str, tz: &str, from: Timestamp, want: &[Timestamp]) {
        assert_eq!(next_n(&cron(expr, tz), from, want.len()), want, "{expr} in {tz} after {from}");
    }

    #[test]
    fn every_five_minutes() {
        let e = cron("*/5 * * * *", "UTC");
        let got = next_n(&e, utc(2026, 3, 2, 10, 7, 30), 3);
        assert_eq!(got, vec![utc(2026, 3, 2, 10, 10, 0), utc(2026, 3, 2, 10, 15, 0), utc(2026, 3, 2, 10, 20, 0)]);
        // A slot time itself: strictly after.
        assert_eq!(e.next_after(utc(2026, 3, 2, 10, 10, 0)), Some(utc(2026, 3, 2, 10, 15, 0)));
        assert_eq!(e.at_or_after(utc(2026, 3, 2, 10, 10, 0)), Some(utc(2026, 3, 2, 10, 10, 0)));
    }

    #[test]
    fn weekdays_at_three() {
        // Friday 2026-03-06 04:00 -> Monday 03:00, then Tuesday.
        assert_next(
            "0 3 * * 1-5",
            "UTC",
            utc(2026, 3, 6, 4, 0, 0),
            &[utc(2026, 3, 9, 3, 0, 0), utc(2026, 3, 10, 3, 0, 0)],
        );
    }

    #[test]
    fn daily_alias_in_a_zone() {
        let e = cron("@daily", "America/New_York");
        // Midnight New York (EST, UTC-5) on 2026-01-16 is 05:00 UTC.
        assert_eq!(e.next_after(utc(2026, 1, 15, 12, 0, 0)), Some(utc(2026, 1, 16, 5, 0, 0)));
        let u = cron("@daily", "UTC");
        assert_eq!(u.next_after(utc(2026, 1, 15, 12, 0, 0)), Some(utc(2026, 1, 16, 0, 0, 0)));
    }

    #[test]
    fn berlin_spring_forward_gap() {
        // 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not exist that day:
        // the fixed-time job runs at the first instant after the gap (03:00 CEST = 01:00 UTC).
        let berlin = "Europe/Berlin";
        assert_next(
            "30 2 * * *",
            berlin,
            utc(2026, 3, 28, 12, 0, 0),
            &[utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 0)],
        );
        // A 03:00 job that day is 01:00 UTC, the day before 02:00 UTC.
        assert_next(
            "0 3 * * *",
            berlin,
            utc(2026, 3, 27, 12, 0, 0),
            &[utc(2026, 3, 28, 2, 0, 0), utc(2026, 3, 29, 1, 0, 0)],
        );
    }

    #[test]
    fn berlin_fall_back_repeat() {
        // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:00-02:59 happens twice
        // (00:00-00:59 UTC and 01:00-01:59 UTC). A fixed-time 02:30 job runs once, the first time.
        let e = cron("30 2 * * *", "Europe/Berlin");
        let got = next_n(&e, utc(2026, 10, 24, 12, 0, 0), 2);
        assert_eq!(got, vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]);
        // An interval pattern runs in both copies of the hour: 12 + 12 runs from 00:00 to 01:55 UTC.
        let five = cron("*/5 2 * * *", "Europe/Berlin");
        let due = five.due_between(utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 3, 0, 0), 100);
        assert_eq!(due.total, 24, "{:?}", due.recent);
        assert_eq!(due.recent.first(), Some(&utc(2026, 10, 25, 0, 0, 0)));
        assert_eq!(due.recent.last(), Some(&utc(2026, 10, 25, 1, 55, 0)));
    }

    #[test]
    fn intervals_count_from_the_anchor() {
        let anchor = utc(2026, 1, 1, 10, 0, 7);
        let e = Expr::new(None, Some("15m"), Tz::UTC, anchor).unwrap();
        assert_eq!(e.next_after(anchor), Some(utc(2026, 1, 1, 10, 15, 7)));
        assert_eq!(e.next_after(utc(2026, 1, 1, 9, 0, 0)), Some(utc(2026, 1, 1, 10, 15, 7)));
        assert_eq!(e.next_after(utc(2026, 1, 1, 10, 15, 7)), Some(utc(2026, 1, 1, 10, 30, 7)));
        assert_eq!(e.at_or_after(utc(2026, 1, 1, 10, 15, 7)), Some(utc(2026, 1, 1, 10, 15, 7)));
        let due = e.due_between(utc(2026, 1, 1, 10, 15, 7), utc(2026, 1, 1, 11, 20, 0), 2);
        assert_eq!(due.total, 5);
        assert_eq!(due.recent, vec![utc(2026, 1, 1, 11, 0, 7), utc(2026, 1, 1, 11, 15, 7)]);
    }

    #[test]
    fn far_behind_cron_estimates_and_keeps_recent_slots() {
        let e = cron("* * * * *", "UTC");
        let first = utc(2025, 1, 1, 0, 0, 0);
        let now = utc(2026, 1, 1, 0, 0, 30);
        let due = e.due_between(first, now, 3);
        assert!(!due.exact);
        let expected = 365 * 24 * 60 + 1;
        assert!((due.total as i64 - expected).abs() < 100, "{}", due.total);
        assert_eq!(
            due.recent,
            vec![utc(2025, 12, 31, 23, 58, 0), utc(2025, 12, 31, 23, 59, 0), utc(2026, 1, 1, 0, 0, 0)]
        );
    }

    #[test]
    fn bad_expressions_are_named() {
        assert!(parse_cron("* * * *").unwrap_err().contains("4 field(s)"));
        assert!(parse_cron("0 0 * * * *").unwrap_err().contains("6 field(s)"));
        assert!(parse_cron("61 * * * *").unwrap_err().contains("not a valid cron expression"));
        assert!(parse_cron("@fortnightly").unwrap_err().contains("unknown cron alias"));
        assert!(parse_cron("@hourly").is_ok());
        assert!(parse_cron("@yearly").is_ok());
        assert!(parse_every("0s").is_err());
        assert!(parse_every("500ms").is_err());
        assert!(parse_every("soon").is_err());
        assert_eq!(parse_every("2h"), Ok(7200));
        assert!(parse_tz("Mars/Olympus").unwrap_err().contains("unknown time zone"));
        assert!(parse_tz("Europe/Berlin").is_ok());
    }
}
