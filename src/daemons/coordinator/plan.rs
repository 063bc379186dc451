//! The coordinator's dispatch decisions, as a pure function: [`plan`] takes what one cycle
//! collected under its locks ([`CycleInput`]: the queue after its ends are folded, the budget,
//! the worker types, the circuit breakers as resolved for this cycle, the scheduler state, the
//! final statuses of archived prerequisites, the time and the slots) and returns a
//! [`DispatchPlan`]: the tasks to dispatch (in order, each with its reservation), the tasks that
//! fail without a dispatch, the waiting reasons to record and the next due time. It reads no file
//! and no clock; the coordinator applies the plan to its queue and budget and writes them.
//!
//! The tasks that can run now beyond the free slots are held apart by the coordinator
//! (`coordinator::parked`) and are not in `tasks`: [`CycleInput::held`] says where they begin in
//! the dispatch order, and the plan says whether it reached that place with a slot they could
//! take ([`DispatchPlan::needs_held`]); the coordinator then lends it more of them and plans
//! again.

use crate::base::clock::Timestamp;
use crate::domain::task::model::{Priority, Task, TaskState, TaskStatus, TokenBudget, WaitingReason};
use crate::domain::task::queue;
use crate::domain::task::worker_types::{ExecutorKind, WorkerTypes};
use std::collections::{HashMap, HashSet};

/// A worker type's circuit breaker as this cycle sees it (types with a closed breaker are absent
/// from the [`BreakerSnapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuardedType {
    /// The breaker lets one trial dispatch of the type through in this cycle.
    pub trial_allowed: bool,
    /// When an open breaker lets its trial through.
    pub half_open_at: Option<Timestamp>,
}

/// The circuit breakers of the worker types whose breaker is not closed, each with its answer
/// for this cycle (`auto_fix::breaker::dispatch_allowed_by`, asked by the coordinator before it
/// plans). At most one task of a guarded type is dispatched per cycle (the half-open trial).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BreakerSnapshot {
    pub guarded: HashMap<String, GuardedType>,
}

/// What one cycle decides from.
pub(crate) struct CycleInput<'a> {
    /// The queue's tasks, with this cycle's ended dispatches folded in.
    pub tasks: &'a [Task],
    /// The token budget after this cycle's settlements.
    pub budget: &'a TokenBudget,
    /// The worker types; None when they cannot be read (nothing is dispatched).
    pub types: Option<&'a WorkerTypes>,
    pub breakers: &'a BreakerSnapshot,
    /// The scheduler state says paused (or cannot be read): nothing is dispatched.
    pub paused: bool,
    /// Final statuses of `--after` prerequisites that have left the queue (archived).
    pub archived: &'a HashMap<String, TaskStatus>,
    /// The cycle's time, read under the `scheduler` lock.
    pub now: Timestamp,
    /// `[scheduler] max_concurrent_dispatches`: how many local dispatches may run at once.
    pub slots: usize,
    /// `[slurm] max_jobs`: how many Slurm dispatches may be in flight at once, counted apart
    /// from the local slots; None when `[slurm] enabled` is false (a Slurm type's tasks wait,
    /// `slurm_disabled`).
    pub slurm_slots: Option<usize>,
    /// The first of the tasks the coordinator holds apart that can run now (not in `tasks`;
    /// `coordinator::parked`), None when it holds none: the plan says whether it would have
    /// reached them with a slot free ([`DispatchPlan::needs_held`]).
    pub held: Option<HeldHead>,
}

/// Where the tasks held apart begin in the dispatch order, and what they may need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HeldHead {
    pub priority: Priority,
    pub created_at: Timestamp,
    /// Some held task is not of a known local worker type (a Slurm one, an unknown one): a
    /// free Slurm slot may change it, not only a free local slot.
    pub beyond_local: bool,
}

impl HeldHead {
    /// `t` comes after every held task in the dispatch order (a held task and a task of `tasks`
    /// with the same priority and creation time: the task of `tasks` first).
    fn precedes(&self, t: &Task) -> bool {
        t.priority < self.priority || (t.priority == self.priority && t.created_at > self.created_at)
    }
}

/// The executor a task's dispatch would use: its own (`task add --executor`), else its worker
/// type's (local when the type is unknown).
pub(crate) fn executor_of(types: Option<&WorkerTypes>, t: &Task) -> ExecutorKind {
    t.executor
        .or_else(|| types.and_then(|ty| ty.worker_types.get(&t.worker_type)).map(|wt| wt.executor))
        .unwrap_or_default()
}

/// Free local slots and free Slurm slots: the limits less the tasks in progress on each executor.
pub(crate) fn free_slots(
    tasks: &[Task],
    types: Option<&WorkerTypes>,
    slots: usize,
    slurm_slots: Option<usize>,
) -> (usize, usize) {
    let (mut local, mut slurm) = (0, 0);
    for t in tasks.iter().filter(|t| t.status() == TaskStatus::InProgress) {
        match executor_of(types, t) {
            ExecutorKind::Local => local += 1,
            ExecutorKind::Slurm => slurm += 1,
        }
    }
    (slots.saturating_sub(local), slurm_slots.unwrap_or(0).saturating_sub(slurm))
}

/// One dispatch to make: the task (an index into [`CycleInput::tasks`]) and what its record
/// needs besides the dispatch id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedDispatch {
    pub task: usize,
    /// Tokens reserved for the dispatch (the task's budget).
    pub reserve: u64,
    /// The worker type's argv template to expand with the dispatch id; None when the task has
    /// its own command.
    pub template: Option<Vec<String>>,
    /// The task's timeout, else its worker type's `default_duration`.
    pub timeout_seconds: f64,
}

/// What one cycle does to the queue, decided by [`plan`].
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DispatchPlan {
    /// Dispatches in the order they are made (priority, then age).
    pub dispatch: Vec<PlannedDispatch>,
    /// Tasks that fail without a dispatch (a failed or missing prerequisite, an unknown worker
    /// type, no command), with the error recorded in their result.
    pub fail: Vec<(usize, String)>,
    /// Waiting reasons to record on tasks that stay queued (`delay`, `after`, `circuit_breaker`,
    /// `budget`; None clears a delay's reason once a retry waits for its time).
    pub waiting: Vec<(usize, Option<WaitingReason>)>,
    /// The earliest time a waiting task becomes due (a delay, a retry, a breaker's half-open).
    pub next_due: Option<Timestamp>,
    /// The plan reached the held tasks' place in the dispatch order ([`CycleInput::held`]) with
    /// a slot they could take still free: it is not the plan of the whole queue, and is made
    /// again with more of them in `tasks`. False when it is: the held tasks would all have been
    /// left as they are (no slot for them, paused, or no worker types).
    pub needs_held: bool,
}

impl DispatchPlan {
    fn due_at(&mut self, at: Timestamp) {
        self.next_due = Some(self.next_due.map_or(at, |d| d.min(at)));
    }
}

/// Decides one cycle's dispatches: tasks in priority, then age order; a task not yet due
/// (`--delay`, `next_retry_at`) or waiting for its prerequisite stays queued; nothing is
/// dispatched while paused, without a free slot or without readable worker types; a guarded
/// worker type gets at most its trial; a task whose budget does not fit what is left waits.
pub(crate) fn plan(input: &CycleInput) -> DispatchPlan {
    let tasks = input.tasks;
    let now = input.now;
    let mut out = DispatchPlan::default();
    let (mut free, mut free_slurm) = free_slots(tasks, input.types, input.slots, input.slurm_slots);
    let mut available = input.budget.available;
    let mut trials_made: HashSet<&str> = HashSet::new();
    let prereq: HashMap<&str, TaskStatus> = {
        let wanted: HashSet<&str> = tasks.iter().filter_map(|t| t.after.as_deref()).collect();
        tasks.iter().filter(|t| wanted.contains(t.task_id.as_str())).map(|t| (t.task_id.as_str(), t.status())).collect()
    };
    // Would a held task, at this point of the walk, be looked at with a slot it could take?
    let open = |free: usize, free_slurm: usize, h: &HeldHead| {
        !input.paused && input.types.is_some() && (free > 0 || (free_slurm > 0 && h.beyond_local))
    };
    let mut held_reached = false;
    for i in queue::dispatch_order(tasks) {
        let t = &tasks[i];
        if !held_reached
            && let Some(h) = &input.held
            && h.precedes(t)
        {
            held_reached = true;
            if open(free, free_slurm, h) {
                out.needs_held = true;
                return out;
            }
        }
        let due_at = match &t.state {
            TaskState::Queued { .. } => t.not_before,
            TaskState::PendingRetry { next_retry_at, .. } => Some(*next_retry_at),
            _ => continue,
        };
        if let Some(due) = due_at
            && due > now
        {
            out.due_at(due);
            let reason = (t.status() == TaskStatus::Queued).then_some(WaitingReason::Delay);
            out.waiting.push((i, reason));
            continue;
        }
        if let Some(a) = t.after.as_deref() {
            match prereq.get(a).or_else(|| input.archived.get(a)) {
                Some(TaskStatus::Completed) => {}
                Some(s @ (TaskStatus::Failed | TaskStatus::Cancelled)) => {
                    out.fail.push((i, format!("prerequisite task {a} ended {}", s.as_str())));
                    continue;
                }
                Some(_) => {
                    out.waiting.push((i, Some(WaitingReason::After)));
                    continue;
                }
                None => {
                    out.fail.push((i, format!("prerequisite task {a} does not exist")));
                    continue;
                }
            }
        }
        if input.paused || (free == 0 && free_slurm == 0) {
            continue;
        }
        let Some(types) = input.types else { continue };
        let wt = match types.get(&t.worker_type) {
            Ok(wt) => wt,
            Err(e) => {
                out.fail.push((i, e.to_string()));
                continue;
            }
        };
        let slurm = t.executor.unwrap_or(wt.executor) == ExecutorKind::Slurm;
        if slurm && input.slurm_slots.is_none() {
            out.waiting.push((i, Some(WaitingReason::SlurmDisabled)));
            continue;
        }
        if (slurm && free_slurm == 0) || (!slurm && free == 0) {
            continue;
        }
        if t.command.is_empty() && wt.command.is_empty() {
            out.fail.push((
                i,
                format!("worker type {} has no command template and the task has no command", t.worker_type),
            ));
            continue;
        }
        if let Some(g) = input.breakers.guarded.get(&t.worker_type)
            && (!g.trial_allowed || trials_made.contains(t.worker_type.as_str()))
        {
            // Wake at the half-open time even if nobody rewrites the breakers file then.
            if let Some(at) = g.half_open_at.filter(|at| *at > now) {
                out.due_at(at);
            }
            out.waiting.push((i, Some(WaitingReason::CircuitBreaker)));
            continue;
        }
        if t.budget > available {
            out.waiting.push((i, Some(WaitingReason::Budget)));
            continue;
        }
        if input.breakers.guarded.contains_key(&t.worker_type) {
            trials_made.insert(t.worker_type.as_str());
        }
        available -= t.budget;
        if slurm {
            free_slurm -= 1;
        } else {
            free -= 1;
        }
        out.dispatch.push(PlannedDispatch {
            task: i,
            reserve: t.budget,
            template: t.command.is_empty().then(|| wt.command.clone()),
            timeout_seconds: t.timeout_seconds.unwrap_or(wt.default_duration * 60.0),
        });
    }
    if !held_reached && let Some(h) = &input.held {
        out.needs_held = open(free, free_slurm, h);
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
