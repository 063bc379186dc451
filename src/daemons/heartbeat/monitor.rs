//! One pass of the heartbeat daemon over the running dispatches: observe each heartbeat file
//! and process group, update `heartbeat` in the spec, record threshold transitions, run the
//! false-positive guard and the mass-zombification guard, start zombie cleanups within the rate
//! limit, and say when the next pass is due. Time comes from an injectable [`Clock`].

use super::beat;
use super::health::{self, HealthInputs, HealthStatus};
use super::liveness::{self, Liveness};
use super::policy::HeartbeatPolicy;
use super::process;
use super::record::{HealthRecord, HeartbeatRecord, store_record};
use super::zombie;
use crate::base::clock::{Clock, Timestamp, format_ts};
use crate::base::error::Result;
use crate::domain::task::dispatch_record;
use crate::domain::task::dispatches::list_bucket;
use crate::domain::task::{DispatchRecord, DispatchState, DispatchStatus};
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::home::SpecBucket;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// A CPU reading of a dispatch's process group.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    ticks: u64,
    at: Instant,
    percent: Option<f64>,
}

/// A dispatch that looked dead, waiting for its re-check.
#[derive(Debug, Clone)]
struct Suspect {
    recheck_at: Timestamp,
    reason: String,
}

/// What one pass found and did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// When the next pass is due (a threshold crossing, a re-check, a sample, a rate-limit window).
    pub next_pass: Option<Timestamp>,
    pub running: usize,
    /// Dispatches cleaned up as zombies in this pass.
    pub cleaned: Vec<String>,
    /// Dispatches waiting for their re-check.
    pub suspects: Vec<String>,
    pub mass_alert: bool,
}

/// The heartbeat daemon's memory between passes.
pub struct Monitor {
    clock: Arc<dyn Clock>,
    cpu: HashMap<String, CpuSample>,
    suspects: BTreeMap<String, Suspect>,
    cleanups: VecDeque<Timestamp>,
    mass_alert: bool,
    deferred_noted: HashSet<String>,
    last_written: HashMap<String, Instant>,
    hung_daemons: HashSet<String>,
    /// When the daemons' marks are looked at next (the earliest a running one can turn hung).
    next_marks: Option<Timestamp>,
    ticks_per_second: f64,
    /// The longest gap between two looks at the daemons' marks.
    pub marks_every: std::time::Duration,
    /// Interrupted cleanups were finished (done at the first pass, again after a failure).
    resumed: bool,
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn secs(s: f64) -> chrono::Duration {
    chrono::Duration::microseconds((s.max(0.0) * 1e6) as i64)
}

impl Monitor {
    pub fn new(clock: Arc<dyn Clock>) -> Monitor {
        Monitor {
            clock,
            cpu: HashMap::new(),
            suspects: BTreeMap::new(),
            cleanups: VecDeque::new(),
            mass_alert: false,
            deferred_noted: HashSet::new(),
            last_written: HashMap::new(),
            hung_daemons: HashSet::new(),
            next_marks: None,
            marks_every: std::time::Duration::from_secs(30),
            ticks_per_second: crate::base::procfs::clock_ticks(),
            resumed: false,
        }
    }

    /// The policy, or the defaults when the file is unreadable (it is quarantined and reported).
    pub fn policy(store: &Store) -> HeartbeatPolicy {
        store.load::<HeartbeatPolicy>().unwrap_or_else(|e| {
            tracing::error!("heartbeat policy unreadable, using defaults: {e}");
            HeartbeatPolicy::default()
        })
    }

    /// One pass. `hung_after_seconds` > 0 also checks the other daemons' heartbeat marks.
    pub fn pass(&mut self, store: &Store, hung_after_seconds: f64) -> Result<PassReport> {
        let policy = Self::policy(store);
        let now = self.clock.now();
        let mut report = PassReport::default();
        self.resume_interrupted(store, &policy)?;

        let running: Vec<DispatchRecord> = list_bucket(store, SpecBucket::Active)?
            .into_iter()
            // A Slurm job has no process here to watch: Slurm and cortex-slurm follow it.
            .filter(|d| d.status() == DispatchStatus::Running && !d.is_slurm())
            .collect();
        report.running = running.len();
        let ids: HashSet<&str> = running.iter().map(|d| d.dispatch_id.as_str()).collect();
        self.cpu.retain(|k, _| ids.contains(k.as_str()));
        self.suspects.retain(|k, _| ids.contains(k.as_str()));
        self.last_written.retain(|k, _| ids.contains(k.as_str()));
        self.deferred_noted.retain(|k| ids.contains(k.as_str()));

        let mut confirmed: Vec<(DispatchRecord, String, Option<u64>)> = Vec::new();
        for spec in &running {
            let (record, verdict, next) = self.observe(store, spec, &policy, now)?;
            report.next_pass = earliest(report.next_pass, next);
            let id = spec.dispatch_id.clone();
            match verdict {
                Some(reason) => match self.suspects.get(&id) {
                    None => {
                        let recheck_at = now + secs(policy.recheck_delay_seconds);
                        tracing::info!(dispatch = %id, "presumed dead ({reason}); re-checking at {}", format_ts(recheck_at));
                        self.suspects.insert(id.clone(), Suspect { recheck_at, reason });
                        report.next_pass = earliest(report.next_pass, Some(recheck_at));
                    }
                    Some(s) if now >= s.recheck_at => confirmed.push((spec.clone(), reason, record.health.tokens_used)),
                    Some(s) => report.next_pass = earliest(report.next_pass, Some(s.recheck_at)),
                },
                None => {
                    if let Some(s) = self.suspects.remove(&id) {
                        tracing::info!(dispatch = %id, "alive again during the re-check ({}): not a zombie", s.reason);
                    }
                }
            }
        }
        if !running.is_empty() {
            report.next_pass = earliest(report.next_pass, Some(now + secs(policy.heartbeat_interval_seconds.max(1.0))));
        }

        // Mass zombification: many dispatches dead at once is more likely our problem (a
        // suspended host, a clock jump, a broken heartbeat path) than theirs. Kill nothing.
        let threshold = policy.mass_zombie_threshold.max(1) as usize;
        if self.suspects.len() >= threshold {
            if !self.mass_alert {
                let ids: Vec<&String> = self.suspects.keys().collect();
                store.emit(
                    EventKind::MassZombificationDetected,
                    Severity::Critical,
                    format!(
                        "{} dispatches look dead at once (threshold {threshold}): nothing was killed; check the host and the heartbeat files, then restart the heartbeat daemon or the dispatches by hand",
                        ids.len()
                    ),
                    json!({"dispatch_ids": ids, "count": ids.len(), "threshold": threshold}),
                )?;
            }
            self.mass_alert = true;
            report.mass_alert = true;
        } else {
            self.mass_alert = false;
            let window = chrono::Duration::seconds(60);
            for (spec, reason, tokens) in confirmed {
                while self.cleanups.front().is_some_and(|t| *t + window <= now) {
                    self.cleanups.pop_front();
                }
                if self.cleanups.len() >= policy.max_cleanups_per_minute as usize {
                    if self.deferred_noted.insert(spec.dispatch_id.clone()) {
                        store.emit(
                            EventKind::ZombieCleanupDeferred,
                            Severity::Warning,
                            format!(
                                "zombie cleanup of {} deferred: {} cleanups in the last minute (max_cleanups_per_minute)",
                                spec.dispatch_id,
                                self.cleanups.len()
                            ),
                            json!({"dispatch_id": spec.dispatch_id, "max_cleanups_per_minute": policy.max_cleanups_per_minute}),
                        )?;
                    }
                    report.next_pass = earliest(report.next_pass, self.cleanups.front().map(|t| *t + window));
                    continue;
                }
                self.cleanups.push_back(now);
                self.suspects.remove(&spec.dispatch_id);
                match zombie::clean_up(store, &spec, &reason, tokens, &policy, self.clock.now()) {
                    Ok(Some(_)) => report.cleaned.push(spec.dispatch_id.clone()),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(dispatch = %spec.dispatch_id, "zombie cleanup failed: {e}");
                        self.resumed = false;
                    }
                }
            }
        }
        report.suspects = self.suspects.keys().cloned().collect();
        // The daemons' marks: when one can have turned hung, while one is reported hung (to see
        // it recover), and at least every `marks_every` (a daemon started since) — not on every
        // pass a dispatch's change causes.
        if hung_after_seconds > 0.0 {
            let due = self.next_marks.is_none_or(|t| now >= t) || !self.hung_daemons.is_empty();
            if due {
                let next = super::daemons::check_marks(store, hung_after_seconds, now, &mut self.hung_daemons)?;
                let latest = now + secs(self.marks_every.as_secs_f64());
                self.next_marks = Some(next.map_or(latest, |n| n.min(latest)));
            }
            report.next_pass = earliest(report.next_pass, self.next_marks);
        }
        Ok(report)
    }

    /// Finishes cleanups a crash interrupted (at the first pass, and after a failed one): a
    /// zombie spec left in `active/` between its write and its move, and specs in `zombie/`
    /// whose cleanup never completed.
    fn resume_interrupted(&mut self, store: &Store, policy: &HeartbeatPolicy) -> Result<()> {
        if self.resumed {
            return Ok(());
        }
        for spec in list_bucket(store, SpecBucket::Active)? {
            if spec.status() == DispatchStatus::Zombie {
                let _guard = store.lock_named(crate::store::LockName::WorkerSpecs)?;
                if dispatch_record::spec_path(store.home(), SpecBucket::Active, &spec.dispatch_id).exists() {
                    dispatch_record::move_durable(
                        store.home(),
                        &spec.dispatch_id,
                        SpecBucket::Active,
                        SpecBucket::Zombie,
                    )?;
                }
            }
        }
        for spec in list_bucket(store, SpecBucket::Zombie)? {
            let path = dispatch_record::spec_path(store.home(), SpecBucket::Zombie, &spec.dispatch_id);
            let hb = match HeartbeatRecord::of(&spec, &path) {
                Ok(hb) => hb,
                Err(e) => {
                    tracing::warn!("skipping dispatch spec: {e}");
                    continue;
                }
            };
            if hb.zombie_cleanup.as_ref().is_some_and(|c| c.completed_at.is_none()) {
                tracing::info!(dispatch = %spec.dispatch_id, "finishing an interrupted zombie cleanup");
                zombie::finish(store, &spec, policy, self.clock.now())?;
            }
        }
        self.resumed = true;
        Ok(())
    }

    /// Observes one running dispatch: updates its `heartbeat` record (written when it changed),
    /// records threshold transitions. Returns the record, why it looks dead (if it does), and
    /// its next threshold crossing.
    fn observe(
        &mut self,
        store: &Store,
        spec: &DispatchRecord,
        policy: &HeartbeatPolicy,
        now: Timestamp,
    ) -> Result<(HeartbeatRecord, Option<String>, Option<Timestamp>)> {
        let DispatchState::Running { ref started_at, pid, pgid, proc_start_ticks } = spec.state else {
            return Ok((HeartbeatRecord::default(), None, None));
        };
        let home = store.home();
        let id = &spec.dispatch_id;
        // A record that does not decode is left as it is (never overwritten) and the dispatch
        // skipped, as `list_bucket` skips a spec that does not decode.
        let prev = match HeartbeatRecord::of(spec, &dispatch_record::spec_path(home, SpecBucket::Active, id)) {
            Ok(prev) => prev,
            Err(e) => {
                tracing::warn!("skipping dispatch spec: {e}");
                return Ok((HeartbeatRecord::default(), None, None));
            }
        };
        let seen = beat::observe(&home.heartbeat_file(id));
        let alive = crate::base::procfs::is_alive(pid, proc_start_ticks);
        let started = *started_at;
        // A process that never heartbeats ages from its start only when the policy requires
        // heartbeats; otherwise being alive is its heartbeat.
        let aging = seen.last.is_some() || policy.require_heartbeat;
        let reference = seen.last.map_or(started, |l| l.max(started));
        let age = if aging { liveness::age_seconds(reference, now) } else { 0.0 };
        let level = if aging { liveness::classify(age, policy) } else { Liveness::Ok };
        let last_heartbeat = seen.last;
        let sequence = seen.sequence.unwrap_or(if last_heartbeat.is_some() && last_heartbeat != prev.last_heartbeat {
            prev.sequence + 1
        } else {
            prev.sequence
        });

        let members = if alive { process::sampled_members(pid, pgid, proc_start_ticks) } else { Vec::new() };
        let usage = process::usage_of(&members);
        let cpu_percent = self.cpu_percent(id, usage.cpu_ticks, alive);
        let memory_mb = alive.then(|| (usage.rss_bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0);
        // Token counts only grow: the largest report wins.
        let tokens_used =
            [beat::usage_tokens(&home.usage_file(id)), seen.tokens_used, spec.tokens_used].into_iter().flatten().max();
        let tokens_remaining = tokens_used.map(|u| spec.budget_reserved.saturating_sub(u));
        let missed_count = if aging { liveness::missed_count(age, policy) } else { 0 };
        let score = health::score(
            &HealthInputs {
                cpu_percent,
                memory_mb,
                tokens_remaining_fraction: tokens_remaining
                    .filter(|_| spec.budget_reserved > 0)
                    .map(|r| r as f64 / spec.budget_reserved as f64),
                missed_count,
            },
            policy.health_score_decay_rate,
        );
        let record = HeartbeatRecord {
            last_heartbeat,
            sequence,
            missed_count,
            liveness: level,
            health: HealthRecord {
                status: HealthStatus::of(score),
                health_score: score,
                cpu_usage_percent: cpu_percent,
                memory_usage_mb: memory_mb,
                tokens_used,
                tokens_remaining,
            },
            message: seen.message.clone().or(prev.message.clone()),
            checked_at: Some(now),
            zombie_cleanup: None,
        };

        let data = || {
            json!({
                "dispatch_id": id, "task_id": spec.task_id, "worker_type": spec.worker_type, "pid": pid,
                "last_heartbeat": record.last_heartbeat.map(format_ts), "age_seconds": (age * 10.0).round() / 10.0,
                "missed_count": missed_count, "sequence": sequence,
            })
        };
        if let Some((event_type, severity)) = liveness::transition_event(prev.liveness, level) {
            let msg = match level {
                Liveness::Ok => format!("dispatch {id} heartbeats again"),
                _ => format!("dispatch {id} ({}): no heartbeat for {:.0}s", spec.worker_type, age),
            };
            store.emit(event_type, severity, msg, data())?;
        }
        let min = policy.min_health_score.round() as u32;
        if score < min && prev.health.health_score >= min {
            store.emit(
                EventKind::WorkerHealthLow,
                Severity::Warning,
                format!("dispatch {id} health score {score} is below {min}"),
                json!({"dispatch_id": id, "task_id": spec.task_id, "health": record.health}),
            )?;
        }

        // Write at once when the level or the health status changed (or the first heartbeat
        // came); anything else (sequence, missed count, figures) at most once per heartbeat
        // interval, so a task beating every second does not cost a spec rewrite per beat.
        let liveness_changed = prev.liveness != record.liveness
            || prev.health.status != record.health.status
            || (prev.last_heartbeat.is_none() && record.last_heartbeat.is_some());
        let due = self
            .last_written
            .get(id)
            .is_none_or(|t| t.elapsed().as_secs_f64() >= policy.heartbeat_interval_seconds.max(1.0));
        if (liveness_changed || (due && !prev.same_as(&record))) && store_record(store, id, pid, &record)? {
            self.last_written.insert(id.clone(), Instant::now());
        }

        let verdict = if !alive {
            Some("process_gone".to_string())
        } else if level == Liveness::PresumedDead {
            Some("no_heartbeat".to_string())
        } else {
            None
        };
        let next = if aging && alive { liveness::next_crossing(reference, now, policy) } else { None };
        Ok((record, verdict, next))
    }

    /// CPU use of the group since the previous sample, percent of one core.
    fn cpu_percent(&mut self, id: &str, ticks: u64, alive: bool) -> Option<f64> {
        if !alive {
            self.cpu.remove(id);
            return None;
        }
        let now = Instant::now();
        let Some(prev) = self.cpu.get(id).copied() else {
            self.cpu.insert(id.to_string(), CpuSample { ticks, at: now, percent: None });
            return None;
        };
        let wall = now.duration_since(prev.at).as_secs_f64();
        if wall < 1.0 {
            return prev.percent;
        }
        let used = ticks.saturating_sub(prev.ticks) as f64 / self.ticks_per_second;
        let percent = Some((used / wall * 1000.0).round() / 10.0);
        self.cpu.insert(id.to_string(), CpuSample { ticks, at: now, percent });
        percent
    }
}
