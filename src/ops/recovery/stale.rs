//! `cortex recover-stale`: the runbook's "mark dispatches running for over 60 minutes failed".
//! An active dispatch whose process is gone (its PID is dead, or now belongs to another process:
//! the start time in `/proc/<pid>/stat` differs from `proc_start_ticks`), or that is older than
//! the limit with no recent heartbeat, ends `lost` and moves to `failed/` under lock
//! `worker-specs`. A live but silent process group is stopped first (TERM, grace, KILL), so the
//! retry the coordinator schedules never runs beside it.

use crate::base::clock::{Clock, Timestamp, parse_ts};
use crate::base::error::{Error, Result};
use crate::base::procfs::is_alive;
use crate::domain::task::dispatch_record::{self, cancel_request_path};
use crate::domain::task::model::{DispatchRecord, DispatchState};
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::home::SpecBucket;
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

/// One dispatch recover-stale ended (or, in a dry run, would end).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StaleDispatch {
    pub dispatch_id: String,
    pub task_id: String,
    pub reason: String,
    /// True when a live process group had to be stopped first (in a dry run: would have to be).
    pub stopped_process: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct StaleReport {
    pub dry_run: bool,
    pub checked: usize,
    pub lost: Vec<StaleDispatch>,
}

/// The newest heartbeat time recorded in a spec, whatever the heartbeat daemon calls the field.
fn last_heartbeat(rec: &DispatchRecord) -> Option<Timestamp> {
    let hb = rec.heartbeat.as_ref()?;
    if let Some(s) = hb.as_str() {
        return parse_ts(s);
    }
    ["last_seen", "last_heartbeat", "at", "timestamp", "checked_at", "updated_at"]
        .iter()
        .filter_map(|k| hb.get(k).and_then(|v| v.as_str()).and_then(parse_ts))
        .max()
}

/// Why an active dispatch is stale, if it is.
fn stale_reason(rec: &DispatchRecord, now: Timestamp, limit: chrono::Duration) -> Option<(String, bool)> {
    match &rec.state {
        DispatchState::Running { pid, proc_start_ticks, started_at, .. } => {
            if !is_alive(*pid, *proc_start_ticks) {
                return Some((format!("process {pid} is gone"), false));
            }
            let since = last_heartbeat(rec).unwrap_or(*started_at);
            (now - since > limit).then(|| {
                (
                    format!(
                        "running for {} with no heartbeat in the last {}",
                        crate::base::clock::human_duration((now - *started_at).num_seconds()),
                        crate::base::clock::human_duration(limit.num_seconds())
                    ),
                    true,
                )
            })
        }
        DispatchState::Starting => {
            let since = rec.dispatched_at;
            (now - since > limit).then(|| {
                (
                    format!(
                        "never started: dispatched {} ago and no worker picked it up",
                        crate::base::clock::human_duration((now - since).num_seconds())
                    ),
                    false,
                )
            })
        }
        // cortex-slurm follows it through Slurm (a job may wait in Slurm's queue for days).
        DispatchState::Slurm { .. } => None,
        _ => Some(("ended but still in active/".into(), false)),
    }
}

/// Ends every stale active dispatch as `lost`.
pub(crate) fn recover_stale(
    store: &Store,
    clock: &dyn Clock,
    older_than: Duration,
    grace: Duration,
    dry_run: bool,
) -> Result<StaleReport> {
    let home = store.home();
    let limit = chrono::Duration::from_std(older_than)
        .map_err(|e| Error::Config { path: None, detail: format!("--older-than {older_than:?}: {e}") })?;
    let mut report = StaleReport { dry_run, ..Default::default() };
    let guard = if dry_run { None } else { Some(store.lock_named(crate::store::LockName::WorkerSpecs)?) };
    for rec in crate::domain::task::dispatches::list_bucket(store, SpecBucket::Active)? {
        report.checked += 1;
        let now = clock.now();
        let Some((reason, alive)) = stale_reason(&rec, now, limit) else { continue };
        let entry = StaleDispatch {
            dispatch_id: rec.dispatch_id.clone(),
            task_id: rec.task_id.clone(),
            reason: reason.clone(),
            stopped_process: alive,
        };
        if dry_run {
            report.lost.push(entry);
            continue;
        }
        if alive && let DispatchState::Running { pid, pgid, proc_start_ticks, .. } = rec.state {
            stop_group(pid, pgid, proc_start_ticks, grace);
        }
        let mut ended = rec.clone();
        ended.state = DispatchState::Lost { ended_at: clock.now(), reason: reason.clone() };
        dispatch_record::end_in(home, &ended, SpecBucket::Failed)?;
        let _ = std::fs::remove_file(cancel_request_path(home, &rec.dispatch_id));
        let _ = store.emit(
            EventKind::DispatchLost,
            Severity::Warning,
            format!("Dispatch {} of task {} marked lost: {reason}", rec.dispatch_id, rec.task_id),
            json!({"dispatch_id": rec.dispatch_id, "task_id": rec.task_id, "reason": reason, "by": "recover-stale"}),
        );
        report.lost.push(entry);
    }
    drop(guard);
    Ok(report)
}

/// Stops a dispatch's process group: TERM, up to `grace`, then KILL, only while the leader is
/// still the process that was started (a reused PID is never signalled).
pub(crate) fn stop_group(pid: i32, pgid: i32, ticks: u64, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if !is_alive(pid, ticks) || pgid <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while is_alive(pid, ticks) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_alive(pid, ticks) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}
