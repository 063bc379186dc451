//! `cortex reset --yes`: the runbook's "complete reset". It stops the daemons, writes a
//! pre-reset backup (`backups/pre-reset/`), stops every task process of the home (found by its
//! environment, spec or no spec: `domain::task::processes`), clears the active and zombie worker specs, empties the task queue (and the intake),
//! resets the token budget to its total with nothing used or reserved, keeps configuration and
//! logs, records a `system_reset` event, and starts again the daemons that were running.

use crate::base::error::{Error, Result};
use crate::domain::task::model::{DispatchState, TokenBudget};
use crate::ops::backup::ArchiveKind;
use crate::ops::backup::create::{self, BackupOptions};
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::files;
use crate::store::home::SpecBucket;
use crate::store::{Store, atomic};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResetReport {
    pub pre_reset_backup: PathBuf,
    pub stopped_daemons: Vec<String>,
    pub restarted_daemons: Vec<String>,
    pub tasks_cleared: usize,
    pub specs_cleared: usize,
    /// Dispatches whose processes were stopped.
    pub processes_stopped: usize,
    /// The task processes of this home found running (by their environment, whether or not a
    /// spec still names them) and stopped.
    pub task_processes_killed: Vec<crate::domain::task::processes::TaskProcess>,
    pub budget_total: u64,
    pub warnings: Vec<String>,
}

/// What `cortex reset` without `--yes` says.
pub(crate) const EXPLANATION: &str = "cortex reset is the emergency recovery runbook's complete reset: it stops the daemons, \
writes a pre-reset backup to backups/pre-reset/, stops the processes of running dispatches, deletes the active and \
zombie worker specs, empties the task queue and intake, resets the token budget to its total with nothing used, \
keeps configuration and logs, and starts the daemons that were running again. Queued and running tasks are dropped \
(they stay in the pre-reset backup). Run `cortex reset --yes` to do it.";

pub(crate) fn reset(store: &Store, config: &Config) -> Result<ResetReport> {
    let home = store.home().clone();
    let lock = create::lock_backups(store)?;
    let stopped = crate::ops::supervisor::maintenance::stop_all(&home, config)?;
    let result = (|| -> Result<ResetReport> {
        let pre = create::create_locked(store, config, &BackupOptions::new(ArchiveKind::PreReset), &lock)?;
        let guards = crate::ops::backup::lock_all(store)?;
        let grace = Duration::from_secs_f64(config.worker.grace_seconds.max(0.0));
        // Every task process of the home, found by its environment: the specs may have been
        // removed while their processes ran. Then the groups the remaining specs name (a command
        // that cleared its environment but stayed in its group).
        let killed = crate::domain::task::processes::stop_all(&home, grace);
        let mut stopped_dispatches: std::collections::HashSet<String> =
            killed.iter().map(|p| p.dispatch_id.clone()).collect();
        for rec in crate::domain::task::dispatches::list_bucket(store, SpecBucket::Active).unwrap_or_default() {
            if let DispatchState::Running { pid, pgid, proc_start_ticks, .. } = rec.state
                && crate::base::procfs::is_alive(pid, proc_start_ticks)
            {
                super::stale::stop_group(pid, pgid, proc_start_ticks, grace);
                stopped_dispatches.insert(rec.dispatch_id.clone());
            }
        }
        let processes_stopped = stopped_dispatches.len();
        let mut specs_cleared = 0;
        for bucket in [SpecBucket::Active, SpecBucket::Zombie] {
            let dir = home.worker_specs(bucket);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), "remove", err))?;
                    specs_cleared += e.path().extension().is_some_and(|x| x == "json") as usize;
                }
            }
            if dir.exists() {
                atomic::fsync_dir(&dir)?;
            }
        }
        let queue_path = store.path(files::TASK_QUEUE);
        // Snapshot and journal, as every reader sees the queue.
        let tasks_cleared = store.load::<crate::domain::task::model::TaskQueue>().map(|q| q.tasks.len()).unwrap_or(0);
        let now = crate::base::clock::now_string();
        crate::store::write_value_checked(
            &queue_path,
            &json!({"tasks": [], "updated_at": now}),
            Some(files::TASK_QUEUE.schema),
        )?;
        // Its journal's lines no longer apply (the new queue has no generation); emptied too.
        crate::domain::task::journal::reset(store)?;
        if let Some(intake) = files::by_rel("task-intake.jsonl") {
            let p = store.path(intake);
            if p.exists() {
                atomic::write_atomic(&p, b"")?;
            }
        }
        let default: TokenBudget = serde_json::from_value(crate::store::default_value(files::TOKEN_BUDGET)?)
            .map_err(|e| Error::encode(format!("the built-in default of {}", files::TOKEN_BUDGET.rel), e))?;
        let total = std::fs::read(store.path(files::TOKEN_BUDGET))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("total").and_then(|t| t.as_u64()))
            .unwrap_or(default.total);
        let budget = json!({"total": total, "used": 0, "available": total, "reservations": {}, "last_updated": now});
        crate::store::write_value_checked(&store.path(files::TOKEN_BUDGET), &budget, Some(files::TOKEN_BUDGET.schema))?;
        drop(guards);
        let _ = store.emit(
            EventKind::SystemReset,
            Severity::Critical,
            format!(
                "Complete reset: {tasks_cleared} task(s) and {specs_cleared} active/zombie spec(s) cleared, budget reset to {total}; previous state in {}",
                pre.path.display()
            ),
            json!({"pre_reset_backup": pre.path, "tasks_cleared": tasks_cleared, "specs_cleared": specs_cleared,
                   "processes_stopped": processes_stopped, "budget_total": total}),
        );
        Ok(ResetReport {
            pre_reset_backup: pre.path,
            stopped_daemons: stopped.iter().map(|s| s.to_string()).collect(),
            restarted_daemons: Vec::new(),
            tasks_cleared,
            specs_cleared,
            processes_stopped,
            task_processes_killed: killed,
            budget_total: total,
            warnings: Vec::new(),
        })
    })();
    let restart =
        if stopped.is_empty() { Ok(()) } else { crate::ops::supervisor::maintenance::start(&home, config, &stopped) };
    let mut report = result?;
    match restart {
        Ok(()) => report.restarted_daemons = report.stopped_daemons.clone(),
        Err(e) => report.warnings.push(format!("could not start the daemons again: {e}; run `cortex start`")),
    }
    Ok(report)
}
