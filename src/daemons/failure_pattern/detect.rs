//! Pattern detection, pure: the detector's persistent state (recent occurrences per signature,
//! cumulative totals, which failures were already counted), the thresholds (a pattern needs
//! `threshold` occurrences within the window; confidence 0.33 / 0.67 / 1.0 at 1× / 2× / 3× the
//! threshold), severity from category and frequency, and the reconciliation of the pattern
//! records with the state. Time comes from an injectable [`Clock`].

use super::classify::{Category, Failure, Signature};
use crate::base::clock::{Clock, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// How bad a pattern is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternSeverity {
    Low,
    Medium,
    High,
    Critical,
}

impl PatternSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternSeverity::Low => "low",
            PatternSeverity::Medium => "medium",
            PatternSeverity::High => "high",
            PatternSeverity::Critical => "critical",
        }
    }

    fn raise(self) -> Self {
        match self {
            PatternSeverity::Low => PatternSeverity::Medium,
            PatternSeverity::Medium => PatternSeverity::High,
            _ => PatternSeverity::Critical,
        }
    }

    /// The event severity a `failure_pattern_detected` event of this pattern carries.
    pub fn event_severity(self) -> crate::store::events::Severity {
        match self {
            PatternSeverity::Low | PatternSeverity::Medium => crate::store::events::Severity::Warning,
            PatternSeverity::High => crate::store::events::Severity::Error,
            PatternSeverity::Critical => crate::store::events::Severity::Critical,
        }
    }
}

/// Confidence that a signature is a real pattern: 0 below the threshold, then 0.33, 0.67 and 1.0
/// at 1×, 2× and 3× the threshold.
pub(crate) fn confidence(count: u64, threshold: u32) -> f64 {
    let t = u64::from(threshold.max(1));
    if count >= 3 * t {
        1.0
    } else if count >= 2 * t {
        0.67
    } else if count >= t {
        0.33
    } else {
        0.0
    }
}

/// Severity from the category (timeouts and crashes start at medium; resource exhaustion, lost
/// or zombie workers and escalations at high), raised one level at 3× the threshold.
pub(crate) fn severity(category: Category, count: u64, threshold: u32) -> PatternSeverity {
    let base = match category {
        Category::Timeout | Category::Crash => PatternSeverity::Medium,
        Category::Resource | Category::Liveness | Category::Escalation => PatternSeverity::High,
    };
    if count >= 3 * u64::from(threshold.max(1)) { base.raise() } else { base }
}

/// Counts within the frequency block of a pattern record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frequency {
    pub total_occurrences: u64,
    /// Occurrences within the window at the last update.
    #[serde(default)]
    pub window_occurrences: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::base::clock::ts::option")]
    pub first_seen: Option<Timestamp>,
    #[serde(with = "crate::base::clock::ts")]
    pub last_seen: Timestamp,
}

/// One line of `coordination/patterns/failure-patterns.jsonl`: the current record of a pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternRecord {
    pub pattern_id: String,
    pub category: Category,
    #[serde(rename = "type")]
    pub kind: super::classify::FailureKind,
    /// The signature as text (`category|type|worker_type[|exit=N][|signal=N][|message]`).
    pub signature: String,
    pub worker_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub frequency: Frequency,
    pub confidence: f64,
    pub severity: PatternSeverity,
    /// False while the window holds fewer than `threshold` occurrences (confidence is then 0).
    #[serde(default = "yes")]
    pub active: bool,
    /// The latest dispatches of the pattern (at most 10), newest last.
    #[serde(default)]
    pub recent_dispatches: Vec<String>,
    #[serde(with = "crate::base::clock::ts")]
    pub created_at: Timestamp,
    #[serde(with = "crate::base::clock::ts")]
    pub updated_at: Timestamp,
}

fn yes() -> bool {
    true
}

/// One counted failure, kept while it is within the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Occurrence {
    pub pattern_id: String,
    #[serde(with = "crate::base::clock::ts")]
    pub at: Timestamp,
    /// The failure's key (`dispatch:<id>`, `event:<id>`).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_id: Option<String>,
}

/// What the detector knows about a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureInfo {
    pub signature: Signature,
    /// Every occurrence ever counted.
    pub total: u64,
    #[serde(with = "crate::base::clock::ts")]
    pub first_seen: Timestamp,
    #[serde(with = "crate::base::clock::ts")]
    pub last_seen: Timestamp,
}

pub(crate) use crate::store::events::follow::EventCursor;

/// `coordination/patterns/failure-pattern-state.json`, written by the failure-pattern daemon
/// only, so a restart neither double-counts nor forgets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    #[serde(default)]
    pub events: EventCursor,
    /// Occurrences within the window, oldest first.
    #[serde(default)]
    pub occurrences: Vec<Occurrence>,
    /// Signatures seen, by pattern id.
    #[serde(default)]
    pub signatures: BTreeMap<String, SignatureInfo>,
    /// True while a failure storm has paused the scheduler (cleared when the rate drops).
    #[serde(default)]
    pub storm_active: bool,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
    /// Keys of `occurrences`, for fast look-ups (rebuilt after loading).
    #[serde(skip)]
    keys: HashSet<String>,
}

/// What a reconciliation decided about one pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternChange {
    pub record: PatternRecord,
    /// None for a new pattern; the old severity when it changed.
    pub previous_severity: Option<PatternSeverity>,
    pub is_new: bool,
}

impl PatternChange {
    /// A `failure_pattern_detected` event is due: new pattern or severity change.
    pub fn notify(&self) -> bool {
        self.is_new || self.previous_severity.is_some()
    }
}

/// The detector's settings.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub threshold: u32,
    pub window: chrono::Duration,
}

impl Thresholds {
    pub fn from_config(c: &crate::store::config::FailurePatternConfig) -> Self {
        let secs = (c.window_hours.max(0.0) * 3600.0) as i64;
        Thresholds { threshold: c.threshold.max(1), window: chrono::Duration::seconds(secs.max(1)) }
    }
}

impl DetectorState {
    /// Rebuilds the key index; call after deserialising.
    pub fn rebuild_index(&mut self) {
        self.keys = self.occurrences.iter().map(|o| o.key.clone()).collect();
    }

    /// True when the failure with this key was already counted (within the window).
    pub fn seen(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Counts a failure unless it was counted already or is older than the window. Returns
    /// true when counted.
    pub fn record(&mut self, f: &Failure, t: &Thresholds, now: Timestamp) -> bool {
        if f.at < now - t.window || self.seen(&f.key) {
            return false;
        }
        let sig = f.signature();
        let id = sig.pattern_id();
        let at = f.at;
        let info = self.signatures.entry(id.clone()).or_insert_with(|| SignatureInfo {
            signature: sig,
            total: 0,
            first_seen: at,
            last_seen: at,
        });
        info.total += 1;
        if at > info.last_seen {
            info.last_seen = at;
        }
        if at < info.first_seen {
            info.first_seen = at;
        }
        self.keys.insert(f.key.clone());
        let pos = self.occurrences.partition_point(|o| o.at <= at);
        self.occurrences
            .insert(pos, Occurrence { pattern_id: id, at, key: f.key.clone(), dispatch_id: f.dispatch_id.clone() });
        true
    }

    /// Drops occurrences older than the window, and signatures with no occurrence left that
    /// never became a pattern (`known` are the ids with a record).
    pub fn prune(&mut self, t: &Thresholds, now: Timestamp, known: &BTreeSet<String>) {
        let cutoff = now - t.window;
        self.occurrences.retain(|o| o.at >= cutoff);
        self.rebuild_index();
        let live: BTreeSet<&String> = self.occurrences.iter().map(|o| &o.pattern_id).collect();
        self.signatures.retain(|id, _| live.contains(id) || known.contains(id));
    }

    /// Occurrences of any pattern at or after `since`.
    pub fn count_since(&self, since: Timestamp) -> u64 {
        self.occurrences.iter().filter(|o| o.at >= since).count() as u64
    }

    /// Brings the pattern records in line with the state: creates a record for a signature that
    /// reached the threshold, updates counts, confidence and severity of existing ones. Returns
    /// the changed records (to be written) and whether each needs an event.
    pub fn reconcile(
        &mut self,
        records: &BTreeMap<String, PatternRecord>,
        t: &Thresholds,
        clock: &dyn Clock,
    ) -> Vec<PatternChange> {
        let now = clock.now();
        let mut changes = Vec::new();
        for (id, info) in self.signatures.iter_mut() {
            let count = self.occurrences.iter().filter(|o| &o.pattern_id == id).count() as u64;
            let recent: Vec<String> = {
                let ids: Vec<String> = self
                    .occurrences
                    .iter()
                    .filter(|o| &o.pattern_id == id)
                    .filter_map(|o| o.dispatch_id.clone())
                    .collect();
                ids[ids.len().saturating_sub(10)..].to_vec()
            };
            let old = records.get(id);
            if let Some(old) = old
                && old.frequency.total_occurrences > info.total
            {
                // The state was lost or reset: the record's total is the better count.
                info.total = old.frequency.total_occurrences;
            }
            let active = count >= u64::from(t.threshold);
            let Some(old) = old else {
                if !active {
                    continue;
                }
                let sev = severity(info.signature.category, count, t.threshold);
                changes.push(PatternChange {
                    record: PatternRecord {
                        pattern_id: id.clone(),
                        category: info.signature.category,
                        kind: info.signature.kind,
                        signature: info.signature.text(),
                        worker_type: info.signature.worker_type.clone(),
                        exit_code: info.signature.exit_code,
                        signal: info.signature.signal,
                        message: info.signature.message.clone(),
                        frequency: Frequency {
                            total_occurrences: info.total,
                            window_occurrences: count,
                            first_seen: Some(info.first_seen),
                            last_seen: info.last_seen,
                        },
                        confidence: confidence(count, t.threshold),
                        severity: sev,
                        active: true,
                        recent_dispatches: recent,
                        created_at: now,
                        updated_at: now,
                    },
                    previous_severity: None,
                    is_new: true,
                });
                continue;
            };
            let mut rec = old.clone();
            rec.frequency.total_occurrences = info.total;
            rec.frequency.window_occurrences = count;
            if info.last_seen > rec.frequency.last_seen {
                rec.frequency.last_seen = info.last_seen;
            }
            if !recent.is_empty() {
                rec.recent_dispatches = recent;
            }
            rec.active = active;
            rec.confidence = confidence(count, t.threshold);
            let mut previous = None;
            if active {
                let sev = severity(info.signature.category, count, t.threshold);
                if sev != rec.severity {
                    previous = Some(rec.severity);
                    rec.severity = sev;
                }
            }
            rec.updated_at = old.updated_at;
            if rec != *old {
                rec.updated_at = now;
                changes.push(PatternChange { record: rec, previous_severity: previous, is_new: false });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify::FailureKind;
    use super::*;
    use crate::base::clock::ManualClock;

    fn failure(key: &str, at: Timestamp, kind: FailureKind) -> Failure {
        Failure {
            key: key.into(),
            at,
            kind,
            worker_type: "scan-worker".into(),
            exit_code: (kind == FailureKind::NonZeroExit).then_some(2),
            signal: None,
            message: (kind == FailureKind::NonZeroExit).then(|| "error: <path> missing".into()),
            dispatch_id: Some(key.trim_start_matches("dispatch:").into()),
        }
    }

    fn start() -> Timestamp {
        crate::base::clock::parse_ts("2026-05-01T12:00:00Z").unwrap()
    }

    #[test]
    fn confidence_steps_at_multiples_of_the_threshold() {
        let got: Vec<f64> = (0..=10).map(|n| confidence(n, 3)).collect();
        assert_eq!(got, vec![0.0, 0.0, 0.0, 0.33, 0.33, 0.33, 0.67, 0.67, 0.67, 1.0, 1.0]);
        assert_eq!(confidence(4, 2), 0.67);
    }

    #[test]
    fn severity_from_category_and_frequency() {
        assert_eq!(severity(Category::Crash, 3, 3), PatternSeverity::Medium);
        assert_eq!(severity(Category::Crash, 9, 3), PatternSeverity::High);
        assert_eq!(severity(Category::Resource, 3, 3), PatternSeverity::High);
        assert_eq!(severity(Category::Resource, 9, 3), PatternSeverity::Critical);
    }

    #[test]
    fn pattern_needs_threshold_within_window_then_grows() {
        let clock = ManualClock::new(start());
        let t = Thresholds { threshold: 3, window: chrono::Duration::hours(24) };
        let mut st = DetectorState::default();
        let mut records = BTreeMap::new();
        let apply = |st: &mut DetectorState, records: &mut BTreeMap<String, PatternRecord>| {
            let ch = st.reconcile(records, &t, &clock);
            for c in &ch {
                records.insert(c.record.pattern_id.clone(), c.record.clone());
            }
            ch
        };
        for i in 0..2 {
            assert!(st.record(&failure(&format!("dispatch:d{i}"), start(), FailureKind::NonZeroExit), &t, start()));
        }
        assert!(apply(&mut st, &mut records).is_empty(), "2 < threshold");
        // The same failure seen again (from the event log) is not counted twice.
        assert!(!st.record(&failure("dispatch:d1", start(), FailureKind::NonZeroExit), &t, start()));
        st.record(&failure("dispatch:d2", start(), FailureKind::NonZeroExit), &t, start());
        let ch = apply(&mut st, &mut records);
        assert_eq!(ch.len(), 1);
        assert!(ch[0].is_new && ch[0].notify());
        assert_eq!(ch[0].record.confidence, 0.33);
        assert_eq!(ch[0].record.severity, PatternSeverity::Medium);
        assert_eq!(ch[0].record.frequency.total_occurrences, 3);
        for i in 3..6 {
            st.record(&failure(&format!("dispatch:d{i}"), start(), FailureKind::NonZeroExit), &t, start());
        }
        let ch = apply(&mut st, &mut records);
        assert_eq!(ch[0].record.confidence, 0.67);
        assert!(!ch[0].notify(), "same severity: no new event");
        for i in 6..9 {
            st.record(&failure(&format!("dispatch:d{i}"), start(), FailureKind::NonZeroExit), &t, start());
        }
        let ch = apply(&mut st, &mut records);
        assert_eq!(ch[0].record.confidence, 1.0);
        assert_eq!(ch[0].previous_severity, Some(PatternSeverity::Medium));
        assert_eq!(ch[0].record.severity, PatternSeverity::High);
        assert!(ch[0].notify());
        assert!(apply(&mut st, &mut records).is_empty(), "nothing changed");
    }

    #[test]
    fn occurrences_outside_the_window_do_not_count() {
        let clock = ManualClock::new(start());
        let t = Thresholds { threshold: 3, window: chrono::Duration::hours(24) };
        let mut st = DetectorState::default();
        // Two failures 25 h ago are ignored outright.
        let old = start() - chrono::Duration::hours(25);
        assert!(!st.record(&failure("dispatch:a", old, FailureKind::Timeout), &t, start()));
        // Three spread over 30 h: by the time of the third, the first has left the window.
        st.record(&failure("dispatch:b", start(), FailureKind::Timeout), &t, start());
        clock.advance(chrono::Duration::hours(20));
        st.record(&failure("dispatch:c", clock.now(), FailureKind::Timeout), &t, clock.now());
        clock.advance(chrono::Duration::hours(10));
        st.record(&failure("dispatch:d", clock.now(), FailureKind::Timeout), &t, clock.now());
        st.prune(&t, clock.now(), &BTreeSet::new());
        assert_eq!(st.occurrences.len(), 2);
        assert!(st.reconcile(&BTreeMap::new(), &t, &clock).is_empty());
        // A third within the window makes it a pattern.
        st.record(&failure("dispatch:e", clock.now(), FailureKind::Timeout), &t, clock.now());
        let ch = st.reconcile(&BTreeMap::new(), &t, &clock);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].record.frequency.total_occurrences, 4);
        assert_eq!(ch[0].record.frequency.window_occurrences, 3);
    }
}
