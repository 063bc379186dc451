//! The worker's record keeping: what it writes into the dispatch records (through
//! `task::dispatch_record`) as dispatches start and end. A step's ends and starts go in one
//! group commit under lock `worker-specs` ([`Worker::write_step`]); an end that cannot be
//! written is kept and written again; a record that vanished while its process ran is created
//! anew in its final bucket; a record left in `active/` with a final state is moved on. How a
//! dispatch ended ([`final_state`]) is decided here from the stop reason, the shim's exit
//! report and what the loop saw.

use super::executor::{self, Executor, Reaped};
use super::{Gone, Live, StopReason, Worker, exits};
use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::domain::task::dispatch_record::{self, Change, NotWritten, final_bucket};
use crate::domain::task::model::{DispatchRecord, DispatchState, DispatchStatus, SignalledEnd};
use crate::domain::task::processes::TaskProcess;
use crate::store::LockName;
use crate::store::home::Home;
use nix::sys::signal::Signal;

/// An ended dispatch whose end is to be written: its final state and the tokens it reported.
pub(super) type End = (String, DispatchState, Option<u64>);

/// The change that writes an ended dispatch's final state (and the tokens it reported).
pub(super) fn end_change((id, state, tokens): &End) -> (String, Change) {
    let (state, tokens) = (state.clone(), *tokens);
    let change: Change = Box::new(move |r: &mut DispatchRecord| {
        r.state = state;
        if tokens.is_some() {
            r.tokens_used = tokens;
        }
        Ok(())
    });
    (id.clone(), change)
}

/// The change that records a started dispatch `running` (refused unless it is `starting`).
pub(super) fn running_change(rec: &DispatchRecord, l: &executor::Launched, started_at: Timestamp) -> (String, Change) {
    let state = DispatchState::Running { started_at, pid: l.pid, pgid: l.pgid, proc_start_ticks: l.start_ticks };
    let change: Change = Box::new(move |r: &mut DispatchRecord| {
        if r.status() != DispatchStatus::Starting {
            return Err(NotWritten::MovedOn(format!(
                "dispatch {} is {}, not starting",
                r.dispatch_id,
                r.status().as_str()
            )));
        }
        r.state = state;
        Ok(())
    });
    (rec.dispatch_id.clone(), change)
}

/// Why a dispatch whose process ran without a record ended `lost`.
pub(super) const UNRECORDED_REASON: &str = "its process ran without a record in worker-specs/active/ (the spec was removed or \
replaced while it ran); the worker stopped its process group (TERM, grace, KILL) so that its task cannot run twice";

/// How a dispatch ended: from the stop reason, the shim's exit report or what was seen.
pub(super) fn final_state(l: &Live, gone: Gone, report: Option<exits::ExitReport>) -> DispatchState {
    let ended_at = crate::base::clock::now();
    let duration = Some(l.started.elapsed().as_secs_f64());
    let seen_signal = match gone {
        Gone::Reaped(Reaped::Signaled(s)) => Some(s),
        _ => None,
    };
    let signal = report.as_ref().and_then(|r| r.signal).or(seen_signal);
    match (l.stop.as_ref().map(|s| s.reason), &report, gone) {
        (Some(StopReason::Cancel), _, _) => {
            DispatchState::Cancelled(SignalledEnd { ended_at, signal, duration_s: duration })
        }
        (Some(StopReason::Timeout), _, _) => {
            DispatchState::Timeout(SignalledEnd { ended_at, signal, duration_s: duration })
        }
        (Some(StopReason::Unrecorded), _, _) => DispatchState::Lost { ended_at, reason: UNRECORDED_REASON.into() },
        // A failed attempt (retried by policy), not a cancel: nobody asked for it to stop.
        (Some(StopReason::NotStarted), _, _) => DispatchState::Failed {
            ended_at,
            exit_code: None,
            signal,
            duration_s: Some(0.0),
            error: "the worker could not record the dispatch as running (see its log); the command was not started"
                .into(),
        },
        (None, Some(r), _) => match (r.exit_code, r.signal, &r.error) {
            (Some(0), _, None) => {
                DispatchState::Completed { ended_at, exit_code: 0, duration_s: l.started.elapsed().as_secs_f64() }
            }
            (code, sig, err) => DispatchState::Failed {
                ended_at,
                exit_code: code,
                signal: sig,
                duration_s: duration,
                error: err.clone().unwrap_or_else(|| match (code, sig) {
                    (Some(c), _) => format!("exited with code {c}"),
                    (None, Some(s)) => format!("killed by signal {s}{}", signal_label(s)),
                    _ => "ended without an exit status".into(),
                }),
            },
        },
        (None, None, Gone::Reaped(how)) => DispatchState::Failed {
            ended_at,
            exit_code: match how {
                Reaped::Exited(c) => Some(c),
                Reaped::Signaled(_) => None,
            },
            signal: seen_signal,
            duration_s: duration,
            error: format!(
                "the task's exec shim (PID {}) ended ({}) without recording the command's exit; \
                     its process group was stopped",
                l.pid,
                match how {
                    Reaped::Exited(c) => format!("exit {c}"),
                    Reaped::Signaled(s) => format!("signal {s}{}", signal_label(s)),
                }
            ),
        },
        (None, None, Gone::Vanished) => DispatchState::Lost {
            ended_at,
            reason: format!("process {} ended while no worker watched it and left no exit status", l.pid),
        },
    }
}

impl<E: Executor> Worker<E> {
    /// Ends a dispatch that never ran its command.
    pub(super) fn end_unstarted(&mut self, rec: &DispatchRecord, state: DispatchState) {
        // Written like any end (kept and retried if it cannot be written; meanwhile the scan
        // does not launch it).
        self.records.insert(rec.dispatch_id.clone(), rec.clone());
        self.write_step(vec![(rec.dispatch_id.clone(), state, None)], Vec::new());
    }

    /// Moves a spec with a final state from `active/` to `completed/` or `failed/` and removes
    /// its cancel request.
    pub(super) fn move_final(&self, rec: &DispatchRecord) -> Result<()> {
        let guard = self.store.lock_named(LockName::WorkerSpecs)?;
        let mut dirs = Vec::new();
        let moved = dispatch_record::move_ended_locked(&self.home, &[rec], &mut dirs);
        drop(guard);
        moved.and(crate::store::atomic::fsync_dirs(&dirs))
    }
}

fn signal_label(sig: i32) -> String {
    Signal::try_from(sig).map(|s| format!(" ({})", s.as_str())).unwrap_or_default()
}

/// The record of a task process of this home found running with no spec accounting for it,
/// rebuilt from what its environment and command line say.
pub(super) fn orphan_record(home: &Home, p: &TaskProcess) -> DispatchRecord {
    let now = crate::base::clock::now();
    DispatchRecord {
        dispatch_id: p.dispatch_id.clone(),
        task_id: if p.task_id.is_empty() { "unknown".into() } else { p.task_id.clone() },
        worker_type: "unknown".into(),
        state: DispatchState::Running { started_at: now, pid: p.pid, pgid: p.pgid, proc_start_ticks: p.start_ticks },
        dispatched_at: now,
        attempt: p.attempt.unwrap_or(1).max(1),
        command: p.command.clone(),
        budget_reserved: 0,
        timeout_seconds: 0.0,
        stdout_path: home.dispatch_stdout(&p.dispatch_id).display().to_string(),
        stderr_path: home.dispatch_stderr(&p.dispatch_id).display().to_string(),
        heartbeat: None,
        tokens_used: None,
        executor: Default::default(),
        slurm: None,
    }
}

impl<E: Executor> Worker<E> {
    /// One group commit of a step's spec changes, under one hold of the `worker-specs` lock:
    /// the final states (and reported tokens) of ended dispatches and the `running` records of
    /// started ones are fsynced together and renamed into place; each started dispatch then gets
    /// its go-ahead (a dispatch whose record failed never runs its command), and the ended
    /// specs move to their buckets. The directories are fsynced last, in parallel, after the
    /// lock is released: a crash of the machine before that can only bring a dispatch back as
    /// `starting` (its command died with the machine, and the next worker launches it) or an
    /// end back as `running` (read again as `lost`).
    ///
    /// An end that cannot be written (a full disk) is kept and written again on later steps:
    /// the worker alone knows how the process ended (its exit, the signal it reaped), which
    /// re-reading the spec once space is back would turn into `lost`.
    pub(super) fn write_step(&mut self, ends: Vec<End>, started: Vec<(DispatchRecord, executor::Launched)>) {
        if ends.is_empty() && started.is_empty() {
            return;
        }
        let started_at = crate::base::clock::now();
        let mut changes: Vec<(String, Change)> = ends.iter().map(end_change).collect();
        changes.extend(started.iter().map(|(rec, l)| running_change(rec, l, started_at)));
        let mut dirs = Vec::new();
        let mut results = match self.store.lock_named(LockName::WorkerSpecs) {
            Ok(guard) => {
                let records = &self.records;
                let dispatch_record::Updated { mut results, published, created } =
                    dispatch_record::update_active_locked(&self.store, changes, |id| records.get(id).cloned());
                let start_results = results.split_off(ends.len());
                self.let_run(started, start_results);
                let (anew, recorded): (Vec<&DispatchRecord>, Vec<&DispatchRecord>) =
                    results.iter().filter_map(|r| r.as_ref().ok()).partition(|r| created.contains(&r.dispatch_id));
                for rec in anew {
                    tracing::warn!(
                        "dispatch {} ended with its spec gone from worker-specs/; its end is recorded anew in {}/",
                        rec.dispatch_id,
                        final_bucket(rec).dir_name()
                    );
                }
                if let Some(p) = published {
                    dirs.extend(p.into_dirs());
                }
                let moved = dispatch_record::move_ended_locked(&self.home, &recorded, &mut dirs);
                drop(guard);
                // A spec that did not move keeps its final state in `active/`; the next scan
                // moves it.
                if let Err(e) = moved {
                    tracing::error!("cannot move ended dispatches: {e}");
                }
                results
            }
            Err(e) => {
                let msg = e.to_string();
                self.let_run(
                    started,
                    changes
                        .iter()
                        .skip(ends.len())
                        .map(|_| Err(NotWritten::Failed(Error::other(msg.clone()))))
                        .collect(),
                );
                ends.iter().map(|_| Err(NotWritten::Failed(Error::other(msg.clone())))).collect()
            }
        };
        if let Err(e) = crate::store::atomic::fsync_dirs(&dirs) {
            tracing::error!("cannot make the dispatch records durable: {e}");
        }
        for ((id, state, tokens), result) in ends.into_iter().zip(results.drain(..)) {
            match result {
                Ok(_) => {}
                // The heartbeat daemon claimed it as a zombie (moved it out of active/): its record stands.
                Err(NotWritten::MovedOn(why)) => tracing::info!("not recording the end of dispatch {id}: {why}"),
                Err(NotWritten::Failed(e)) => {
                    if !self.unrecorded_ends.contains_key(&id) {
                        tracing::error!("cannot record the end of dispatch {id} (will retry): {e}");
                    }
                    self.unrecorded_ends.insert(id, (state, tokens));
                    continue;
                }
            }
            self.unrecorded_ends.remove(&id);
            self.records.remove(&id);
            // The heartbeat and usage files were read; they are done with.
            for file in [self.home.heartbeat_file(&id), self.home.usage_file(&id)] {
                if file.exists() {
                    let _ = std::fs::remove_file(file);
                }
            }
        }
    }

    /// Empties the exit journal once every report in it is consumed and every end is written
    /// (at the end of a step or of the start-up reconciliation: within a step, ends taken from
    /// the journal may not be written yet, and only the journal holds their exit status).
    pub(super) fn compact_exits(&mut self) {
        self.exits.compact(!self.unrecorded_ends.is_empty());
    }
}
