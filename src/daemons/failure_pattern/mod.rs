//! The failure-pattern daemon: classifies failures (from finished dispatch specs and failure
//! events), groups them by signature, and keeps `coordination/patterns/failure-patterns.jsonl`
//! current (one record per pattern), emitting `failure_pattern_detected` once per new pattern or
//! severity change. Optional storm guard: pauses the scheduler when failures exceed
//! `[failure_pattern] storm_failures` within `storm_minutes`.
//!
//! - [`classify`]: one failure → kind, category, signature, pattern id.
//! - [`detect`]: thresholds, confidence, severity, the persistent detector state (pure).
//! - [`records`]: the pattern store (atomic rewrite under lock `failure-patterns`).
//! - [`sources`]: reading the spec buckets and the event log from a persisted offset.

pub(crate) mod classify;
pub(crate) mod detect;
pub(crate) mod records;
pub(crate) mod sources;

use crate::base::clock::{Clock, SystemClock};
use crate::base::error::Result;
use crate::domain::scheduler_state::{self, Actor};
use crate::domain::task::dispatches;
use crate::store::config::FailurePatternConfig;
use crate::store::events::{EventKind, Severity};
use crate::store::home::SpecBucket;
use crate::store::{Store, atomic};
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use detect::{DetectorState, PatternChange, Thresholds};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassReport {
    /// Failures counted for the first time.
    pub new_failures: usize,
    /// Pattern records created or changed.
    pub changed_patterns: usize,
    /// `failure_pattern_detected` events emitted.
    pub notified: usize,
    /// True when this pass paused the scheduler for a failure storm.
    pub storm_paused: bool,
}

/// The detector with its state, store and clock. [`run_loop`] drives it; tests can drive it
/// with a [`crate::base::clock::ManualClock`].
pub struct FailurePatterns {
    store: Store,
    config: FailurePatternConfig,
    thresholds: Thresholds,
    clock: Arc<dyn Clock>,
    state: DetectorState,
    /// Specs that were read and are not failures (cancelled), not re-read every pass.
    not_failures: HashSet<String>,
    /// (dev, inode) of the event log being watched.
    pub watched_events: Option<(u64, u64)>,
    /// The next pass lists `failed/` and `zombie/` (set at start, on a change in them and on
    /// the slow timer): a pass woken by the event log alone reads only the new events.
    pub scan_specs: bool,
}

impl FailurePatterns {
    /// Loads the detector's state (a bad state file is quarantined and the detector starts over).
    pub fn open(store: Store, config: FailurePatternConfig, clock: Arc<dyn Clock>) -> Self {
        let path = store.home().failure_pattern_state();
        let mut state = match store.read_value_at(&path, None) {
            Ok(Some(v)) => serde_json::from_value::<DetectorState>(v).unwrap_or_else(|e| {
                tracing::warn!("{} is not a detector state ({e}); starting over", path.display());
                DetectorState::default()
            }),
            Ok(None) => DetectorState::default(),
            Err(e) => {
                tracing::warn!("cannot read the detector state: {e}; starting over");
                DetectorState::default()
            }
        };
        state.rebuild_index();
        let thresholds = Thresholds::from_config(&config);
        FailurePatterns {
            store,
            config,
            thresholds,
            clock,
            state,
            not_failures: HashSet::new(),
            watched_events: None,
            scan_specs: true,
        }
    }

    pub fn state(&self) -> &DetectorState {
        &self.state
    }

    /// Reads new failures from the spec buckets and the event log, updates the state, the
    /// pattern store and the events, and applies the storm guard.
    pub fn pass(&mut self) -> Result<PassReport> {
        let now = self.clock.now();
        let home = self.store.home().clone();
        let before = serde_json::to_value(&self.state).unwrap_or_default();
        let mut report = PassReport::default();
        let cutoff = std::time::SystemTime::from(now - self.thresholds.window);
        let buckets: &[SpecBucket] =
            if std::mem::take(&mut self.scan_specs) { &[SpecBucket::Failed, SpecBucket::Zombie] } else { &[] };
        for &bucket in buckets {
            let dir = home.worker_specs(bucket);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else { continue };
                if name.starts_with('.') || self.state.seen(&format!("dispatch:{id}")) || self.not_failures.contains(id)
                {
                    continue;
                }
                if entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < cutoff) {
                    continue;
                }
                match dispatches::read_spec(&self.store, &entry.path()) {
                    Ok(Some(rec)) => match classify::from_spec(&home, &rec) {
                        Some(f) => {
                            if self.state.record(&f, &self.thresholds, now) {
                                report.new_failures += 1;
                            }
                        }
                        None => {
                            self.not_failures.insert(id.to_string());
                        }
                    },
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skipping spec: {e}"),
                }
            }
        }
        for ev in sources::read_new_events(&home, &mut self.state.events)? {
            if !classify::is_failure_event(&ev.event_type) {
                continue;
            }
            let spec = ev
                .data
                .get("dispatch_id")
                .and_then(|d| d.as_str())
                .and_then(|d| dispatches::find(&self.store, d).ok().flatten())
                .filter(|(b, _)| matches!(b, SpecBucket::Failed | SpecBucket::Zombie))
                .map(|(_, r)| r);
            if let Some(f) = classify::from_event(&home, &ev, spec.as_ref())
                && self.state.record(&f, &self.thresholds, now)
            {
                report.new_failures += 1;
            }
        }

        let known: BTreeSet<String> = records::load(&self.store)?.records.into_keys().collect();
        self.state.prune(&self.thresholds, now, &known);
        self.storm_guard(now, &mut report)?;
        // The state first: a crash after it leaves records that the next pass brings up to date
        // (they are a function of the state); the reverse would count failures twice.
        if serde_json::to_value(&self.state).unwrap_or_default() != before {
            self.save_state()?;
        }
        let guard = records::lock(&self.store)?;
        let mut file = records::load(&self.store)?;
        let changes = self.state.reconcile(&file.records, &self.thresholds, self.clock.as_ref());
        let changed: Vec<_> = changes.iter().map(|c| c.record.clone()).collect();
        records::upsert(&self.store, &guard, &mut file, &changed)?;
        drop(guard);
        report.changed_patterns = changes.len();
        for c in changes.iter().filter(|c| c.notify()) {
            self.notify(c);
            report.notified += 1;
        }
        Ok(report)
    }

    fn save_state(&mut self) -> Result<()> {
        self.state.updated_at = Some(self.clock.now());
        let path = self.store.home().failure_pattern_state();
        if let Some(dir) = path.parent() {
            atomic::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(&self.state)?;
        atomic::write_atomic(&path, &bytes)
    }

    fn notify(&self, c: &PatternChange) {
        let r = &c.record;
        let what = match (r.exit_code, r.signal) {
            (Some(code), _) => format!("{} (exit {code})", r.kind.as_str()),
            (_, Some(sig)) => format!("{} (signal {sig})", r.kind.as_str()),
            _ => r.kind.as_str().to_string(),
        };
        let message = match c.previous_severity {
            Some(prev) if !c.is_new => format!(
                "Failure pattern {} of {} {what}: severity {} → {} ({} in {}h, confidence {})",
                r.pattern_id,
                r.worker_type,
                prev.as_str(),
                r.severity.as_str(),
                r.frequency.window_occurrences,
                self.config.window_hours,
                r.confidence
            ),
            _ => format!(
                "New failure pattern {} of {} {what}: {} in {}h, severity {} (confidence {})",
                r.pattern_id,
                r.worker_type,
                r.frequency.window_occurrences,
                self.config.window_hours,
                r.severity.as_str(),
                r.confidence
            ),
        };
        let _ = self.store.emit(
            EventKind::FailurePatternDetected,
            r.severity.event_severity(),
            message,
            serde_json::json!({
                "pattern_id": r.pattern_id,
                "category": r.category,
                "type": r.kind,
                "worker_type": r.worker_type,
                "signature": r.signature,
                "exit_code": r.exit_code,
                "signal": r.signal,
                "severity": r.severity,
                "previous_severity": c.previous_severity,
                "confidence": r.confidence,
                "occurrences": r.frequency.window_occurrences,
                "total_occurrences": r.frequency.total_occurrences,
                "new": c.is_new,
            }),
        );
    }

    /// Pauses the scheduler once per storm (failures > `storm_failures` within `storm_minutes`);
    /// the storm ends when the rate drops to the limit again. It never resumes by itself.
    fn storm_guard(&mut self, now: crate::base::clock::Timestamp, report: &mut PassReport) -> Result<()> {
        if !self.config.storm_guard {
            return Ok(());
        }
        let minutes = self.config.storm_minutes.max(0.0);
        let since = now - chrono::Duration::milliseconds((minutes * 60_000.0) as i64);
        let n = self.state.count_since(since);
        let limit = u64::from(self.config.storm_failures);
        if n > limit && !self.state.storm_active {
            let reason = format!("failure storm: {n} failures in the last {minutes} minutes (limit {limit})");
            let actor = Actor {
                who: crate::base::daemon_name::Daemon::FailurePattern.as_str().into(),
                from: "storm-guard".into(),
            };
            let t = scheduler_state::pause(&self.store, &actor, Some(&reason))?;
            self.state.storm_active = true;
            report.storm_paused = t.changed;
            let _ = self.store.emit(
                EventKind::FailureStormDetected,
                Severity::Critical,
                format!(
                    "{reason}; {}. Investigate, then `cortex resume`",
                    if t.changed { "scheduler paused" } else { "scheduler was already paused" }
                ),
                serde_json::json!({"failures": n, "minutes": minutes, "limit": limit, "paused": t.changed}),
            );
        } else if n <= limit && self.state.storm_active {
            self.state.storm_active = false;
            let _ = self.store.emit(
                EventKind::FailureStormSubsided,
                Severity::Info,
                format!("failure rate back to {n} in the last {minutes} minutes (limit {limit}); the scheduler stays as it is"),
                serde_json::json!({"failures": n, "minutes": minutes, "limit": limit}),
            );
        }
        Ok(())
    }
}

/// The failure-pattern daemon's loop: a pass on start, on every change in `worker-specs/failed/`,
/// `worker-specs/zombie/` or the event log, and every `[failure_pattern] interval_seconds`.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let mut fp = FailurePatterns::open(ctx.store.clone(), ctx.config.failure_pattern.clone(), Arc::new(SystemClock));
    let home = ctx.home.clone();
    ctx.pace_watches(crate::daemons::daemon::OFF_PATH_PACE);
    ctx.watch(&[home.worker_specs(SpecBucket::Failed), home.worker_specs(SpecBucket::Zombie)])?;
    let events = home.events_file();
    if !events.exists() {
        crate::store::jsonl::append_raw(&events, b"")?;
    }
    let events_watch = ctx.watch(std::slice::from_ref(&events))?;
    fp.watched_events = sources::file_id(&events);
    ctx.mark_ready()?;
    let every = Duration::from_secs(ctx.config.failure_pattern.interval_seconds.max(1));
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            next = Instant::now() + every;
        }
        match fp.pass() {
            Ok(r) if r.new_failures > 0 || r.changed_patterns > 0 => tracing::info!(
                new_failures = r.new_failures,
                changed_patterns = r.changed_patterns,
                notified = r.notified,
                "failure-pattern pass"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("failure-pattern pass failed: {e}"),
        }
        // A rotated event log is a new file: watch it instead.
        let current = sources::file_id(&events);
        if current.is_some() && current != fp.watched_events {
            match ctx.rewatch(events_watch, std::slice::from_ref(&events)) {
                // Lines may have reached the new file before its watch: read it again now.
                Ok(()) => {
                    fp.watched_events = current;
                    continue;
                }
                Err(e) => tracing::warn!("cannot watch the new event log: {e}"),
            }
        }
        let wake = ctx.wait(Some(next));
        let pending = ctx.drain_pending();
        if matches!(wake, Wake::Shutdown(_)) || pending.iter().any(|w| matches!(w, Wake::Shutdown(_))) {
            return Ok(());
        }
        let spec_dirs = [home.worker_specs(SpecBucket::Failed), home.worker_specs(SpecBucket::Zombie)];
        fp.scan_specs |= Instant::now() >= next
            || std::iter::once(&wake)
                .chain(&pending)
                .any(|w| matches!(w, Wake::Changed(p) if spec_dirs.iter().any(|d| p.starts_with(d))));
    }
}
