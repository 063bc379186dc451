//! Which events become notifications, and when (pure: the time is an argument, so tests drive
//! it with any clock). Per rule: the match (event types, least severity, worker types,
//! schedules), the throttle (after a notification, matches are counted as `suppressed` until
//! `throttle_seconds` have passed; the count rides on the next notification) and the digest (the
//! first match opens a window of `digest_seconds`; every match in it goes out as one
//! notification when it closes). Quiet hours hold a notification below their least severity
//! until they end.
//!
//! cortex-notify never matches its own events (`notification_*`): a sink that is down would
//! otherwise page about itself through itself, forever.

use super::config::{NotifyConfig, QuietHours, Rule, secs};
use crate::base::clock::Timestamp;
use crate::store::events::{Event, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Events kept in one notification (the rest are counted in `event_count`).
pub const MAX_EVENTS: usize = 20;

/// What a rule remembers between events (persisted in `coordination/notify/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// No notification before this time (matches meanwhile are counted).
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub throttled_until: Option<Timestamp>,
    /// Matches not sent because of the throttle since the last notification.
    #[serde(default)]
    pub suppressed: u64,
    /// The open digest, if any.
    #[serde(default)]
    pub digest: Option<Digest>,
}

/// Matches gathered into one notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    #[serde(with = "crate::base::clock::ts")]
    pub closes_at: Timestamp,
    pub count: u64,
    /// The first [`MAX_EVENTS`] events.
    pub events: Vec<Event>,
}

/// A notification to make: one per rule firing; it goes to each of the rule's sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub rule: String,
    pub sinks: Vec<String>,
    pub created_at: Timestamp,
    /// The highest severity among its events.
    pub severity: Severity,
    pub event_count: u64,
    pub suppressed: u64,
    pub events: Vec<Event>,
    /// Not sent before this time (quiet hours).
    pub send_after: Timestamp,
}

impl Notification {
    /// The id of the notification to `sink`: the same for the same rule, first event and sink,
    /// so a notification made again after a crash is recognised, and a receiver can drop a
    /// second delivery of it.
    pub fn key(&self, sink: &str) -> String {
        let first = self.events.first().map_or("", |e| e.id.as_str());
        key_of(&self.rule, first, sink)
    }
}

/// The idempotency key of (rule, first event id, sink): `ntf-` and 24 hex digits of a SHA-256.
pub fn key_of(rule: &str, first_event: &str, sink: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let d = Sha256::digest(format!("{rule}\n{first_event}\n{sink}").as_bytes());
    format!("ntf-{}", &crate::store::hex(&d)[..24])
}

/// True when `rule` matches `event`.
pub fn matches(rule: &Rule, event: &Event) -> bool {
    if event.event_type.as_str().starts_with("notification_") {
        return false;
    }
    if event.severity < rule.min_severity {
        return false;
    }
    if !rule.events.is_empty() && !rule.events.iter().any(|t| event.event_type == t.as_str()) {
        return false;
    }
    let field = |k: &str| event.data.get(k).and_then(|v| v.as_str());
    if !rule.worker_types.is_empty() && !field("worker_type").is_some_and(|w| rule.worker_types.iter().any(|x| x == w))
    {
        return false;
    }
    if !rule.schedules.is_empty()
        && ![field("schedule_id"), field("name")].into_iter().flatten().any(|s| rule.schedules.iter().any(|x| x == s))
    {
        return false;
    }
    true
}

/// The rules' state and the decisions over it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    #[serde(default)]
    pub rules: BTreeMap<String, RuleState>,
}

impl Rules {
    /// Feeds one event at `now`; returns the notifications it makes now (digests close later,
    /// in [`Rules::due`]).
    pub fn observe(&mut self, config: &NotifyConfig, event: &Event, now: Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in &config.rules {
            if !matches(rule, event) {
                continue;
            }
            let st = self.rules.entry(rule.name.clone()).or_default();
            if let Some(d) = st.digest.as_mut() {
                d.count += 1;
                if d.events.len() < MAX_EVENTS {
                    d.events.push(event.clone());
                }
                continue;
            }
            if st.throttled_until.is_some_and(|t| now < t) {
                st.suppressed += 1;
                continue;
            }
            if rule.digest_seconds > 0.0 {
                st.digest =
                    Some(Digest { closes_at: now + dur(rule.digest_seconds), count: 1, events: vec![event.clone()] });
                continue;
            }
            out.push(fire(config, rule, st, 1, vec![event.clone()], now));
        }
        out
    }

    /// The digests whose window has closed at `now`, as notifications.
    pub fn due(&mut self, config: &NotifyConfig, now: Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in &config.rules {
            let Some(st) = self.rules.get_mut(&rule.name) else { continue };
            if let Some(d) = st.digest.take_if(|d| d.closes_at <= now) {
                out.push(fire(config, rule, st, d.count, d.events, now));
            }
        }
        out
    }

    /// When the next digest closes.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.rules.values().filter_map(|s| s.digest.as_ref().map(|d| d.closes_at)).min()
    }

    /// Forgets the state of rules that are no longer configured.
    pub fn retain_configured(&mut self, config: &NotifyConfig) {
        self.rules.retain(|name, _| config.rules.iter().any(|r| &r.name == name));
    }
}

fn dur(s: f64) -> chrono::Duration {
    chrono::Duration::from_std(secs(s)).unwrap_or(chrono::Duration::zero())
}

fn fire(
    config: &NotifyConfig,
    rule: &Rule,
    st: &mut RuleState,
    count: u64,
    events: Vec<Event>,
    now: Timestamp,
) -> Notification {
    let severity = events.iter().map(|e| e.severity).max().unwrap_or(Severity::Info);
    let suppressed = std::mem::take(&mut st.suppressed);
    st.throttled_until = (rule.throttle_seconds > 0.0).then(|| now + dur(rule.throttle_seconds));
    let send_after = match (&config.quiet_hours, rule.quiet_hours) {
        (Some(q), true) if severity < q.min_severity => quiet_until(q, now).unwrap_or(now),
        _ => now,
    };
    Notification {
        rule: rule.name.clone(),
        sinks: rule.sinks.clone(),
        created_at: now,
        severity,
        event_count: count,
        suppressed,
        events,
        send_after,
    }
}

/// When the quiet hours that contain `now` end (None when `now` is outside them). A window
/// whose end is before its start spans midnight (22:00–07:00).
pub fn quiet_until(q: &QuietHours, now: Timestamp) -> Option<Timestamp> {
    use chrono::{NaiveTime, TimeZone};
    let tz: chrono_tz::Tz = q.timezone.as_deref().unwrap_or("UTC").parse().ok()?;
    let parse = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").ok();
    let (start, end) = (parse(&q.start)?, parse(&q.end)?);
    if start == end {
        return None;
    }
    let local = now.with_timezone(&tz);
    let t = local.time();
    let inside = if start < end { t >= start && t < end } else { t >= start || t < end };
    if !inside {
        return None;
    }
    let mut day = local.date_naive();
    if t >= end {
        day = day.succ_opt()?;
    }
    let end_local = tz.from_local_datetime(&day.and_time(end)).earliest()?;
    Some(end_local.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::EventKind;

    fn config(json: serde_json::Value) -> NotifyConfig {
        serde_json::from_value(json).unwrap()
    }

    fn ev(kind: EventKind, sev: Severity, worker_type: &str) -> Event {
        Event::new(kind, sev, "test", "m").with_data(serde_json::json!({"worker_type": worker_type}))
    }

    fn at(s: &str) -> Timestamp {
        crate::base::clock::parse_ts(s).unwrap()
    }

    #[test]
    fn match_by_type_severity_worker_type_and_never_our_own_events() {
        let c = config(serde_json::json!({"sinks": {}, "rules": [
            {"name": "r", "events": ["failure_notification"], "min_severity": "error", "worker_types": ["w"], "sinks": ["s"]}
        ]}));
        let r = &c.rules[0];
        assert!(matches(r, &ev(EventKind::FailureNotification, Severity::Error, "w")));
        assert!(!matches(r, &ev(EventKind::FailureNotification, Severity::Warning, "w")));
        assert!(!matches(r, &ev(EventKind::FailureNotification, Severity::Error, "other")));
        assert!(!matches(r, &ev(EventKind::DaemonFailed, Severity::Error, "w")));
        let any = config(
            serde_json::json!({"sinks": {}, "rules": [{"name": "all", "min_severity": "debug", "sinks": ["s"]}]}),
        );
        assert!(!matches(&any.rules[0], &ev(EventKind::NotificationFailed, Severity::Critical, "w")));
    }

    #[test]
    fn throttle_counts_what_it_holds_back_and_digest_sends_one_for_a_burst() {
        let c = config(serde_json::json!({"sinks": {}, "rules": [
            {"name": "t", "events": ["daemon_failed"], "sinks": ["s"], "throttle_seconds": 60},
            {"name": "d", "events": ["zombie_detected"], "sinks": ["s"], "digest_seconds": 30}
        ]}));
        let mut rules = Rules::default();
        let t0 = at("2026-01-01T00:00:00Z");
        let fail = || ev(EventKind::DaemonFailed, Severity::Error, "x");
        assert_eq!(rules.observe(&c, &fail(), t0).len(), 1);
        assert!(rules.observe(&c, &fail(), t0 + chrono::Duration::seconds(10)).is_empty());
        assert!(rules.observe(&c, &fail(), t0 + chrono::Duration::seconds(59)).is_empty());
        let n = rules.observe(&c, &fail(), t0 + chrono::Duration::seconds(61));
        assert_eq!((n.len(), n[0].suppressed), (1, 2));
        // A burst of 25 zombies: one notification when the window closes, 20 events kept.
        for i in 0..25 {
            let z = ev(EventKind::ZombieDetected, Severity::Warning, "x");
            assert!(rules.observe(&c, &z, t0 + chrono::Duration::seconds(i)).is_empty());
        }
        assert_eq!(rules.next_due(), Some(t0 + chrono::Duration::seconds(30)));
        assert!(rules.due(&c, t0 + chrono::Duration::seconds(29)).is_empty());
        let d = rules.due(&c, t0 + chrono::Duration::seconds(30));
        assert_eq!((d.len(), d[0].event_count, d[0].events.len()), (1, 25, MAX_EVENTS));
        assert_eq!(rules.next_due(), None);
        // Keys are stable per rule, first event and sink.
        assert_eq!(d[0].key("s"), d[0].clone().key("s"));
        assert_ne!(d[0].key("s"), d[0].key("t"));
    }

    #[test]
    fn quiet_hours_hold_until_they_end_across_midnight_and_zones() {
        let q: QuietHours =
            serde_json::from_value(serde_json::json!({"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}))
                .unwrap();
        // 23:30 Berlin (winter, UTC+1) = 22:30Z: held until 07:00 Berlin = 06:00Z next day.
        assert_eq!(quiet_until(&q, at("2026-01-01T22:30:00Z")), Some(at("2026-01-02T06:00:00Z")));
        // 03:00 Berlin = 02:00Z: held until 06:00Z the same day.
        assert_eq!(quiet_until(&q, at("2026-01-02T02:00:00Z")), Some(at("2026-01-02T06:00:00Z")));
        assert_eq!(quiet_until(&q, at("2026-01-02T12:00:00Z")), None);
        let c = config(serde_json::json!({"quiet_hours": {"start": "22:00", "end": "07:00"}, "sinks": {},
            "rules": [{"name": "r", "sinks": ["s"]}]}));
        let mut rules = Rules::default();
        let night = at("2026-01-01T23:00:00Z");
        let warn = rules.observe(&c, &ev(EventKind::DaemonFailed, Severity::Error, "x"), night);
        assert_eq!(warn[0].send_after, at("2026-01-02T07:00:00Z"));
        let crit = rules.observe(&c, &ev(EventKind::DaemonFailed, Severity::Critical, "x"), night);
        assert_eq!(crit[0].send_after, night, "critical is sent in quiet hours");
    }
}
