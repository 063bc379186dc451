//! Scheduled and recurring tasks: `coordination/schedules.json` (lock `schedules`), cron and
//! interval expressions with time zones, misfire policies, `max_instances`, and the
//! coordinator's hook [`fire_due`].
//!
//! - [`model`]: the records (a schedule, its state active | paused | archived with its times,
//!   misfire policy, task template, pending run-now requests).
//! - [`expr`]: parsing (croner for 5-field cron and `@hourly`..`@yearly`; `every 30s/15m/2h`) and
//!   slot computation in the schedule's zone (else `[scheduler] timezone`, else UTC).
//! - [`fire`]: [`fire_due`] and [`ScheduledRun`].
//! - [`ops`]: add, list, show, pause, resume, remove (archive), request a run now: the library
//!   calls behind `cortex schedule ...` and the API's `/schedules` endpoints.
//!
//! # Slots and the cursor
//! Each active schedule's `next_run_at` is its cursor: the first slot not handled yet. A pass of
//! [`fire_due`] at time `now` handles every slot in `[next_run_at, now]` and moves the cursor
//! to the first slot after `now`; the coordinator sleeps until the earliest cursor it returns
//! (a deadline, not a poll) and also wakes when `schedules.json` or `scheduler-state.json`
//! change.
//!
//! # Exactly once
//! Every run gets a deterministic task id: `sched-<schedule_id>-<slot unix seconds>` (a run-now
//! request fixes its id, `sched-<schedule_id>-manual-<ms>`, when it is made and stores it in
//! `schedules.json`). [`fire_due`] calls `enqueue` first and records the moved cursor in
//! `schedules.json` after, under lock `schedules`. A crash (SIGKILL) between the two leaves the
//! old cursor on disk, so the next pass computes the same slot and the same task id again: the
//! enqueue side deduplicates by task id (and [`fire_due`] itself skips ids already in
//! `task-queue.json`), so the slot yields exactly one task. A crash before `enqueue` loses
//! nothing either: the cursor has not moved. Two coordinators cannot fire concurrently: the pass
//! holds lock `schedules` throughout.
//!
//! # Missed runs
//! When a pass finds slots older than `[scheduler] misfire_grace_seconds` (downtime, a global
//! pause), the schedule's misfire policy decides: `skip` drops them, `run_once` runs one for the
//! latest, `run_all` runs them all, at most `[scheduler] misfire_run_all_cap` (the most recent;
//! `schedule_misfire_capped` says how many were cut). A slot within the grace is on time and
//! always runs. `max_instances` (default 1) skips a slot while that many tasks of the schedule
//! are still queued, pending_retry or in_progress (`schedule_skipped_max_instances`); runs a
//! `run_all` catch-up enqueues count too, so a full catch-up needs `max_instances` at least as
//! large as the number of missed runs (the default 1 runs the oldest missed slot only).
//!
//! # Pauses
//! A global scheduler pause (`scheduler-state.json`) holds every schedule: [`fire_due`] fires
//! nothing, cursors stay, and on resume the misfire policy applies to what passed. A
//! per-schedule pause clears the cursor; resuming starts from the next slot after now.
//!
//! # Locks
//! Order: `scheduler` → `schedules` → `task-queue` → `token-budget` → `worker-specs`.

pub mod expr;
pub(crate) mod fire;
pub(crate) mod model;
pub(crate) mod ops;

pub use fire::{ScheduledRun, TaskDefaults, Trigger, fire_due, slot_task_id};
pub use model::{MisfirePolicy, RunRequest, Schedule, ScheduleState, Schedules, TaskTemplate};
pub use ops::{
    Change, NewSchedule, ScheduleView, add, list, pause, remove, request_run, resume, scheduler_paused, show,
};

#[cfg(test)]
mod tests;
