//! One metrics snapshot, computed from the coordination files, the PID files and `/proc`. The
//! computation is here (not in the daemon) so the API's `/metrics` can call it too.

use super::sample::{self, ProcSample};
use crate::base::clock::{Clock, Timestamp};
use crate::base::error::Result;
use crate::domain::scheduler_state::SchedulerState;
use crate::domain::task::{DispatchState, DispatchStatus, SignalledEnd, TaskStatus, TokenBudget, dispatches};
use crate::store::Store;
use crate::store::home::{Home, SpecBucket};
use crate::store::pidfile::{self, PidStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One line of `coordination/metrics/metrics-snapshots.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(with = "crate::base::clock::ts")]
    pub timestamp: Timestamp,
    pub workers: Workers,
    pub tokens: Tokens,
    pub tasks: Tasks,
    pub scheduler: SchedulerInfo,
    pub daemons: BTreeMap<String, DaemonStats>,
}

/// Dispatches (one per attempt) by where they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workers {
    /// Starting or running.
    pub active: u64,
    pub completed: u64,
    /// Failed, timed out or lost (cancelled ones are not failures).
    pub failed: u64,
    /// Dispatches the heartbeat daemon ended as zombies.
    pub zombies_killed: u64,
    /// completed / (completed + failed), in percent; null before anything finished.
    pub success_rate: Option<f64>,
    /// Mean run time of finished dispatches, minutes; null when none has a duration.
    pub avg_duration_minutes: Option<f64>,
    /// Run-time percentiles (nearest rank), minutes.
    pub duration_percentiles: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    pub total: u64,
    pub used: u64,
    pub available: u64,
    /// used / total, in percent.
    pub usage_percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tasks {
    pub queued: u64,
    pub in_progress: u64,
    pub pending_retry: u64,
    /// In the queue and in `task-archive.jsonl`.
    pub completed: u64,
    pub failed: u64,
    /// Every task known, whatever its status (cancelled included).
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerInfo {
    /// `running`, `paused`, or `unknown` when the file cannot be read.
    pub state: String,
}

/// A running daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStats {
    pub pid: u32,
    pub rss_mb: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub uptime_s: Option<i64>,
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Worker figures from the dispatch counts and the run times (seconds) of finished dispatches.
pub(crate) fn worker_stats(
    active: u64,
    completed: u64,
    failed: u64,
    zombies: u64,
    mut durations_s: Vec<f64>,
) -> Workers {
    durations_s.retain(|d| d.is_finite() && *d >= 0.0);
    durations_s.sort_by(f64::total_cmp);
    let minutes: Vec<f64> = durations_s.iter().map(|s| s / 60.0).collect();
    let finished = completed + failed;
    let pct = |p| percentile(&minutes, p).map(|v| round(v, 3));
    Workers {
        active,
        completed,
        failed,
        zombies_killed: zombies,
        success_rate: (finished > 0).then(|| round(completed as f64 * 100.0 / finished as f64, 2)),
        avg_duration_minutes: (!minutes.is_empty())
            .then(|| round(minutes.iter().sum::<f64>() / minutes.len() as f64, 3)),
        duration_percentiles: Percentiles { p50: pct(50.0), p90: pct(90.0), p95: pct(95.0), p99: pct(99.0) },
    }
}

fn collect_workers(store: &Store) -> Result<Workers> {
    let active =
        dispatches::list_bucket(store, SpecBucket::Active)?.iter().filter(|d| d.status().is_active()).count() as u64;
    let mut durations = Vec::new();
    let completed_specs = dispatches::list_bucket(store, SpecBucket::Completed)?;
    for d in &completed_specs {
        if let DispatchState::Completed { duration_s, .. } = d.state {
            durations.push(duration_s);
        }
    }
    let mut failed = 0;
    for d in dispatches::list_bucket(store, SpecBucket::Failed)? {
        match &d.state {
            DispatchState::Failed { duration_s, .. } | DispatchState::Timeout(SignalledEnd { duration_s, .. }) => {
                failed += 1;
                durations.extend(*duration_s);
            }
            DispatchState::Lost { .. } => failed += 1,
            _ => {}
        }
    }
    let zombies = dispatches::list_bucket(store, SpecBucket::Zombie)?
        .iter()
        .filter(|d| d.status() == DispatchStatus::Zombie)
        .count() as u64;
    Ok(worker_stats(active, completed_specs.len() as u64, failed, zombies, durations))
}

/// Task counts: the queue, plus finished tasks archived in `task-archive.jsonl` and its sealed
/// segments (the queue wins for a task in both; the archive's last line wins for a task archived
/// twice). The sealed segments are counted from their index headers, kept in `tally` until a
/// segment is added: a snapshot reads the queue and at most one segment, whatever the history.
///
/// The queue is followed by journal offset keeping each task's state only (about 100 bytes a
/// task; `journal::Follower`): a snapshot reads what was appended since the last one, never the
/// whole queue decoded.
fn collect_tasks(
    store: &Store,
    tally: &mut crate::domain::task::archive::Tally,
    queue: &mut crate::domain::task::journal::Follower,
) -> Result<Tasks> {
    let states = queue.refresh(store)?;
    let mut counts = tally.count(store, &|id| states.tasks.contains_key(id))?;
    for t in states.tasks.values() {
        let status = match t {
            crate::domain::task::journal::HeldState::InProgress { .. } => TaskStatus::InProgress,
            crate::domain::task::journal::HeldState::Other(s) => *s,
        };
        *counts.entry(status).or_default() += 1;
    }
    let count = |s: TaskStatus| counts.get(&s).copied().unwrap_or(0);
    Ok(Tasks {
        queued: count(TaskStatus::Queued),
        in_progress: count(TaskStatus::InProgress),
        pending_retry: count(TaskStatus::PendingRetry),
        completed: count(TaskStatus::Completed),
        failed: count(TaskStatus::Failed),
        total: counts.values().sum(),
    })
}

fn collect_tokens(store: &Store) -> Result<Tokens> {
    let b: TokenBudget = store.load()?;
    Ok(Tokens {
        total: b.total,
        used: b.used,
        available: b.available,
        usage_percentage: if b.total > 0 { round(b.used as f64 * 100.0 / b.total as f64, 2) } else { 0.0 },
    })
}

/// Computes snapshots; keeps the previous `/proc` sample of each daemon so CPU use is measured
/// between snapshots (the first one averages over the daemon's life).
#[derive(Debug, Default)]
pub struct Collector {
    prev: HashMap<u32, ProcSample>,
    archive: crate::domain::task::archive::Tally,
    queue: crate::domain::task::journal::Follower,
}

impl Collector {
    pub fn new() -> Self {
        Collector::default()
    }

    fn daemons(&mut self, home: &Home, now: crate::base::clock::Timestamp) -> BTreeMap<String, DaemonStats> {
        let mut out = BTreeMap::new();
        let mut seen = HashMap::new();
        for name in crate::base::daemon_name::Daemon::ALL {
            let Ok(PidStatus::Running(pid)) = pidfile::status(home, name) else { continue };
            if pid == 0 {
                continue;
            }
            let reading = sample::sample(pid);
            let cpu = reading.as_ref().and_then(|s| sample::cpu_percent(s, self.prev.get(&pid)));
            let uptime = crate::store::daemon_mark::read_mark(home, name)
                .filter(|m| m.pid == pid)
                .map(|m| m.started_at)
                .map(|t| (now - t).num_seconds().max(0))
                .or_else(|| reading.as_ref().map(|s| s.age_s as i64));
            out.insert(
                name.to_string(),
                DaemonStats {
                    pid,
                    rss_mb: reading.as_ref().map(|s| round(s.rss_bytes as f64 / (1024.0 * 1024.0), 2)),
                    cpu_percent: cpu.map(|c| round(c, 2)),
                    uptime_s: uptime,
                },
            );
            if let Some(s) = reading {
                seen.insert(pid, s);
            }
        }
        self.prev = seen;
        out
    }

    /// Takes a snapshot of the home now.
    pub fn snapshot(&mut self, store: &Store, clock: &dyn Clock) -> Result<Snapshot> {
        let now = clock.now();
        let scheduler = store
            .load::<SchedulerState>()
            .map(|s| if s.is_paused() { "paused" } else { "running" }.to_string())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Snapshot {
            timestamp: now,
            workers: collect_workers(store)?,
            tokens: collect_tokens(store)?,
            tasks: collect_tasks(store, &mut self.archive, &mut self.queue)?,
            scheduler: SchedulerInfo { state: scheduler },
            daemons: self.daemons(store.home(), now),
        })
    }
}

/// One snapshot of the home now (CPU averaged over each daemon's life): for the API and the CLI.
pub fn snapshot(store: &Store, clock: &dyn Clock) -> Result<Snapshot> {
    Collector::new().snapshot(store, clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn worker_stats_rates_and_minutes() {
        let w = worker_stats(1, 3, 1, 0, vec![60.0, 120.0, 180.0, 240.0]);
        assert_eq!(w.success_rate, Some(75.0));
        assert_eq!(w.avg_duration_minutes, Some(2.5));
        assert_eq!(w.duration_percentiles.p50, Some(2.0));
        assert_eq!(w.duration_percentiles.p99, Some(4.0));
        let empty = worker_stats(0, 0, 0, 0, vec![]);
        assert_eq!(empty.success_rate, None);
        assert_eq!(empty.avg_duration_minutes, None);
    }
}
