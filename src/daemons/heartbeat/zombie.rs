//! The zombie pipeline for a dispatch past the zombie threshold or whose process is gone
//! without a recorded exit:
//!
//! 1. `zombie_detected`;
//! 2. claim, under locks `token-budget` → `worker-specs`: settle the reservation (tokens the task
//!    reported stay used, the rest returns to `available`), write the spec
//!    `zombie{ended_at, reason}` with `heartbeat.zombie_cleanup` (the process identity) and move
//!    it to `worker-specs/zombie/`. Claiming first means the worker, seeing its child die, finds
//!    the spec gone from `active/` and records nothing, and a crash after the claim is finished
//!    at the next start from what the spec holds;
//! 3. SIGTERM → grace → SIGKILL the process group (identity checked first);
//! 4. copy its logs to `agents/logs/zombie-workers/<date>/`;
//! 5. mark the cleanup complete in the spec and record `zombie_cleanup_completed`. The restart
//!    decision is auto-fix's (it watches `worker-specs/zombie/`).

use super::policy::HeartbeatPolicy;
use super::record::{HeartbeatRecord, ZombieCleanup};
use crate::base::clock::{Timestamp, format_ts};
use crate::base::error::{Error, Result};
use crate::domain::task::dispatch_record::{self, read_spec, spec_path};
use crate::domain::task::{DispatchRecord, DispatchState, TokenBudget};
use crate::store::Store;
use crate::store::events::{EventKind, Severity};
use crate::store::home::SpecBucket;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Runs the whole pipeline for one dispatch. Returns the zombie spec, or None when the dispatch
/// ended or changed before it could be claimed (nothing is done then).
pub(crate) fn clean_up(
    store: &Store,
    spec: &DispatchRecord,
    reason: &str,
    tokens_used: Option<u64>,
    policy: &HeartbeatPolicy,
    now: Timestamp,
) -> Result<Option<DispatchRecord>> {
    let DispatchState::Running { pid, pgid, .. } = spec.state else { return Ok(None) };
    let hb = HeartbeatRecord::of(spec, &spec_path(store.home(), SpecBucket::Active, &spec.dispatch_id))?;
    store.emit(
        EventKind::ZombieDetected,
        Severity::Warning,
        format!("dispatch {} (task {}, {}) is a zombie: {reason}", spec.dispatch_id, spec.task_id, spec.worker_type),
        json!({
            "dispatch_id": spec.dispatch_id, "task_id": spec.task_id, "worker_type": spec.worker_type,
            "pid": pid, "pgid": pgid, "reason": reason, "last_heartbeat": hb.last_heartbeat.map(format_ts),
            "missed_count": hb.missed_count,
        }),
    )?;
    let Some(claimed) = claim(store, spec, reason, tokens_used, now)? else {
        tracing::info!(dispatch = %spec.dispatch_id, "dispatch ended before it could be claimed as a zombie");
        return Ok(None);
    };
    finish(store, &claimed, policy, now).map(Some)
}

/// Step 2: settle tokens and move the spec to `zombie/`, both under their locks.
fn claim(
    store: &Store,
    spec: &DispatchRecord,
    reason: &str,
    tokens_used: Option<u64>,
    now: Timestamp,
) -> Result<Option<DispatchRecord>> {
    let DispatchState::Running { pid, pgid, proc_start_ticks, .. } = spec.state else { return Ok(None) };
    let id = &spec.dispatch_id;
    let budget_guard = store.lock(crate::store::files::TOKEN_BUDGET)?;
    let specs_guard = store.lock_named(crate::store::LockName::WorkerSpecs)?;
    let active = spec_path(store.home(), SpecBucket::Active, id);
    let Some(mut current) = read_spec(store, &active)? else { return Ok(None) };
    if !matches!(current.state, DispatchState::Running { pid: p, .. } if p == pid) {
        return Ok(None);
    }
    let used = tokens_used.or(current.tokens_used).unwrap_or(0);
    let mut budget: TokenBudget = store.load()?;
    let tokens_returned = match budget.reservations.remove(id) {
        Some(reserved) => {
            budget.used = budget.used.saturating_add(used);
            budget.recompute();
            budget.last_updated = Some(now);
            store.write_locked(&budget_guard, &budget)?;
            reserved.saturating_sub(used)
        }
        None => 0,
    };
    drop(budget_guard);
    let mut hb = HeartbeatRecord::of(&current, &active)?;
    hb.zombie_cleanup = Some(ZombieCleanup {
        reason: reason.to_string(),
        detected_at: now,
        pid,
        pgid,
        proc_start_ticks,
        tokens_returned,
        completed_at: None,
        signal: None,
        processes_stopped: 0,
        logs_dir: None,
    });
    current.heartbeat = Some(serde_json::to_value(&hb)?);
    current.tokens_used = Some(used);
    current.state = DispatchState::Zombie { ended_at: now, reason: reason.to_string() };
    dispatch_record::end_in(store.home(), &current, SpecBucket::Zombie)?;
    drop(specs_guard);
    Ok(Some(current))
}

/// Steps 3–5 for a claimed spec. Also used at start-up for a cleanup a crash interrupted.
pub(crate) fn finish(
    store: &Store,
    spec: &DispatchRecord,
    policy: &HeartbeatPolicy,
    now: Timestamp,
) -> Result<DispatchRecord> {
    let zombie = spec_path(store.home(), SpecBucket::Zombie, &spec.dispatch_id);
    let hb = HeartbeatRecord::of(spec, &zombie)?;
    let Some(cleanup) = hb.zombie_cleanup.clone() else {
        return Err(Error::other(format!("dispatch {} has no zombie cleanup record", spec.dispatch_id)));
    };
    let grace = Duration::from_secs_f64(policy.grace_seconds.max(0.0));
    let stop = super::process::stop_group(cleanup.pid, cleanup.pgid, cleanup.proc_start_ticks, grace);
    if stop.remaining > 0 {
        store.emit(
            EventKind::ZombieCleanupIncomplete,
            Severity::Critical,
            format!(
                "{} process(es) of dispatch {} survived SIGKILL (group {}): investigate",
                stop.remaining, spec.dispatch_id, cleanup.pgid
            ),
            json!({"dispatch_id": spec.dispatch_id, "pgid": cleanup.pgid, "remaining": stop.remaining}),
        )?;
    }
    let logs_dir = copy_logs(store, spec, now);
    let updated = {
        let _guard = store.lock_named(crate::store::LockName::WorkerSpecs)?;
        let mut current = read_spec(store, &zombie)?.unwrap_or_else(|| spec.clone());
        let mut hb = HeartbeatRecord::of(&current, &zombie)?;
        let c = hb.zombie_cleanup.get_or_insert(cleanup.clone());
        c.completed_at = Some(now);
        c.signal = stop.signal.map(str::to_string);
        c.processes_stopped = stop.found;
        c.logs_dir = logs_dir.as_ref().map(|d| store.home().relative(d).display().to_string());
        current.heartbeat = Some(serde_json::to_value(&hb)?);
        dispatch_record::write(&zombie, &current)?;
        current
    };
    store.emit(
        EventKind::ZombieCleanupCompleted,
        Severity::Info,
        format!(
            "dispatch {} cleaned up: {} process(es) stopped{}, {} tokens returned",
            spec.dispatch_id,
            stop.found,
            stop.signal.map(|s| format!(" with {s}")).unwrap_or_default(),
            cleanup.tokens_returned
        ),
        json!({
            "dispatch_id": spec.dispatch_id, "task_id": spec.task_id, "worker_type": spec.worker_type,
            "reason": cleanup.reason, "signal": stop.signal, "processes_stopped": stop.found,
            "tokens_returned": cleanup.tokens_returned,
            "logs_dir": logs_dir.as_ref().map(|d| store.home().relative(d).display().to_string()),
        }),
    )?;
    Ok(updated)
}

/// Copies the dispatch's stdout/stderr logs to `agents/logs/zombie-workers/<date>/`. Returns the
/// directory when something was copied. Best effort: a missing log is not an error.
fn copy_logs(store: &Store, spec: &DispatchRecord, now: Timestamp) -> Option<PathBuf> {
    let home = store.home();
    let resolve = |p: &str, ext: &str| -> PathBuf {
        if p.is_empty() {
            home.worker_logs().join(format!("{}.{ext}", spec.dispatch_id))
        } else if std::path::Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            home.join(p)
        }
    };
    let dir = home.zombie_logs(&now.format("%Y-%m-%d").to_string());
    let mut copied = false;
    for (src, ext) in [(resolve(&spec.stdout_path, "out"), "out"), (resolve(&spec.stderr_path, "err"), "err")] {
        if !src.is_file() {
            continue;
        }
        let dest = dir.join(format!("{}.{ext}", spec.dispatch_id));
        let result = crate::store::atomic::create_dir_all(&dir).and_then(|()| copy_private(&src, &dest));
        match result {
            Ok(()) => copied = true,
            Err(e) => tracing::warn!("cannot keep the log of zombie dispatch {}: {e}", spec.dispatch_id),
        }
    }
    copied.then_some(dir)
}

/// Copies a log into a new 0600 file (a plain `fs::copy` would take the source's mode, readable
/// by others until a later chmod). Never follows a link planted at the destination.
fn copy_private(src: &std::path::Path, dest: &std::path::Path) -> crate::base::error::Result<()> {
    let mut from = crate::store::open::read(src).map_err(|e| crate::store::open::refuse_link(src, "open", e))?;
    let mut to = crate::store::open::open(dest, crate::store::open::How::Truncate)?;
    std::io::copy(&mut from, &mut to).map_err(|e| Error::io(dest, "copy log to", e))?;
    Ok(())
}
