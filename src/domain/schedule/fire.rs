//! [`fire_due`]: the coordinator's hook that turns due schedule slots (and `run-now` requests)
//! into task enqueues, applies misfire policies and `max_instances`, and moves each schedule's
//! cursor (`next_run_at`) in `schedules.json`. See the module documentation of
//! [`crate::domain::schedule`] for the exactly-once argument.

use super::expr::{Expr, parse_tz};
use super::model::{MisfirePolicy, Schedule, ScheduleState, Schedules, TaskTemplate};
use crate::base::clock::{Clock, Timestamp, format_ts};
use crate::base::error::Result;
use crate::domain::scheduler_state::SchedulerState;
use crate::domain::task::{Task, TaskState, TaskStatus};
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::files;
use crate::store::{Document, Store};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

/// Why a run was enqueued.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// The slot came due while the coordinator was watching.
    Schedule,
    /// A missed slot, run under the `run_once` or `run_all` policy.
    Misfire { policy: MisfirePolicy },
    /// `cortex schedule run-now` / `POST /schedules/<id>/run`.
    Manual { requested_by: Option<String> },
}

impl Trigger {
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Misfire { policy: MisfirePolicy::RunAll } => "misfire_run_all",
            Trigger::Misfire { .. } => "misfire_run_once",
            Trigger::Manual { .. } => "manual",
        }
    }
}

/// One run to enqueue: a task id fixed by the slot, and the schedule's task template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledRun {
    /// `sched-<schedule_id>-<slot unix seconds>` (a manual run: `sched-<schedule_id>-manual-<ms>`).
    pub task_id: String,
    pub schedule_id: String,
    pub schedule_name: String,
    /// The slot this run is for (a manual run: when it was requested).
    #[serde(with = "crate::base::clock::ts")]
    pub slot: Timestamp,
    pub trigger: Trigger,
    pub task: TaskTemplate,
}

/// What the enqueue side fills in where the template leaves a field unset (the same defaults
/// `cortex task add` applies).
#[derive(Debug, Clone)]
pub struct TaskDefaults {
    pub worker_type: String,
    pub budget: u64,
    pub max_attempts: u32,
}

impl ScheduledRun {
    /// The queued task this run becomes, `created_by` `schedule:<name>`, with `schedule_id` set
    /// (what [`fire_due`] counts for `max_instances`).
    pub fn to_task(&self, created_at: Timestamp, defaults: &TaskDefaults) -> Task {
        Task {
            task_id: self.task_id.clone(),
            description: self.task.description.clone(),
            priority: self.task.priority,
            worker_type: self.task.worker_type.clone().unwrap_or_else(|| defaults.worker_type.clone()),
            command: self.task.command.clone(),
            state: TaskState::Queued { waiting_reason: None },
            created_at,
            created_by: format!("schedule:{}", self.schedule_name),
            attempts: 0,
            max_attempts: self.task.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            budget: self.task.budget.unwrap_or(defaults.budget),
            routing: None,
            timeout_seconds: None,
            after: None,
            not_before: None,
            result: None,
            dispatches: Vec::new(),
            schedule_id: Some(self.schedule_id.clone()),
            repo: None,
            executor: None,
            slurm: None,
        }
    }
}

/// The deterministic task id of a schedule's slot.
pub fn slot_task_id(schedule_id: &str, slot: Timestamp) -> String {
    format!("sched-{schedule_id}-{}", slot.timestamp())
}

/// The zone a schedule's cron expression is read in: its own, else `[scheduler] timezone`, else UTC.
pub(crate) fn effective_tz(schedule_tz: Option<&str>, config_tz: &str) -> std::result::Result<Tz, String> {
    match schedule_tz.filter(|s| !s.trim().is_empty()) {
        Some(tz) => parse_tz(tz),
        None => Ok(parse_tz(config_tz).unwrap_or(Tz::UTC)),
    }
}

/// The expression of a stored schedule, in its effective zone.
pub(crate) fn schedule_expr(s: &Schedule, config_tz: &str) -> std::result::Result<Expr, String> {
    let tz = effective_tz(s.timezone.as_deref(), config_tz).map_err(|e| format!("timezone: {e}"))?;
    Expr::new(s.cron.as_deref(), s.every.as_deref(), tz, s.created_at).map_err(|e| {
        let field = if s.cron.is_some() { "cron" } else { "every" };
        format!("{field}: {e}")
    })
}

struct Pending {
    event_type: EventKind,
    severity: Severity,
    message: String,
    data: Value,
}

/// What one pass knows and collects.
/// What a pass needs of the queue: every task's id and, for an unfinished task (queued, pending
/// retry, in progress) of a schedule, that schedule's id.
#[derive(Default)]
struct ScheduleView {
    tasks: HashMap<Box<str>, Option<Box<str>>>,
}

impl crate::domain::task::journal::Holder for ScheduleView {
    fn clear(&mut self) {
        self.tasks.clear();
    }
    fn put(&mut self, t: Task) {
        let unfinished = matches!(t.status(), TaskStatus::Queued | TaskStatus::PendingRetry | TaskStatus::InProgress);
        let schedule = t.schedule_id.filter(|_| unfinished).map(String::into_boxed_str);
        self.tasks.insert(t.task_id.into_boxed_str(), schedule);
    }
    fn remove(&mut self, task_id: &str) {
        self.tasks.remove(task_id);
    }
}

struct Pass {
    now: Timestamp,
    grace: chrono::Duration,
    cap: usize,
    config_tz: String,
    /// Task ids already in the queue (enqueued by an earlier, interrupted pass).
    present: HashSet<String>,
    /// Unfinished tasks (queued, pending_retry, in_progress) per schedule id.
    running: HashMap<String, u32>,
    events: Vec<Pending>,
    changed: bool,
}

impl Pass {
    fn event(&mut self, event_type: EventKind, severity: Severity, message: String, data: Value) {
        self.events.push(Pending { event_type, severity, message, data });
    }
}

/// Fires what is due. Under lock `scheduler` (a paused scheduler fires nothing and returns
/// `None`) and then lock `schedules`: for every schedule, first its pending `run-now` requests,
/// then (active schedules only) its due slots under its misfire policy and `max_instances`;
/// `enqueue` is called once per run with its deterministic task id; then `last_run_at`,
/// `next_run_at` and the consumed requests are written to `schedules.json` (only when something
/// changed, so the coordinator's own watch on the file settles), and events are recorded.
///
/// Returns the earliest `next_run_at` of the active schedules: the deadline the coordinator
/// sleeps until. It must also wake on changes to `schedules.json` (new schedule, `run-now`,
/// resume) and `scheduler-state.json` (global resume).
///
/// `enqueue` must be idempotent by task id and must not take the `scheduler` or `schedules`
/// locks (they are held). When it fails, the runs before it stay recorded, the failed slot
/// stays the cursor, and the error is returned.
pub fn fire_due(
    store: &Store,
    clock: &dyn Clock,
    enqueue: &mut dyn FnMut(ScheduledRun) -> Result<()>,
) -> Result<Option<Timestamp>> {
    let config = Config::load(store.home())?;
    let scheduler_guard = store.lock(files::SCHEDULER_STATE)?;
    let scheduler: SchedulerState = store.load()?;
    if scheduler.is_paused() {
        return Ok(None);
    }
    let guard = store.lock(Schedules::FILE)?;
    let mut doc: Schedules = store.load()?;
    if doc.schedules.is_empty() {
        // Nothing to fire: the queue (the whole backlog) is not read.
        return Ok(None);
    }
    // Read without its lock: the queue is replaced atomically, and a task the enqueue side is
    // adding right now is deduplicated there by its id. Read one task at a time, keeping each
    // one's id and, for an unfinished task of a schedule, that schedule (never the whole queue).
    let mut queue = ScheduleView::default();
    crate::domain::task::journal::load_into(store, &mut queue)?;
    let mut pass = Pass {
        now: clock.now(),
        grace: chrono::Duration::seconds(config.scheduler.misfire_grace_seconds as i64),
        cap: config.scheduler.misfire_run_all_cap.max(1) as usize,
        config_tz: config.scheduler.timezone.clone(),
        present: HashSet::with_capacity(queue.tasks.len()),
        running: HashMap::new(),
        events: Vec::new(),
        changed: false,
    };
    for (id, schedule) in queue.tasks {
        if let Some(sid) = schedule {
            *pass.running.entry(sid.into()).or_default() += 1;
        }
        pass.present.insert(id.into());
    }

    let mut failure = None;
    for s in doc.schedules.iter_mut() {
        if let Err(e) = fire_schedule(s, &mut pass, enqueue) {
            failure = Some(e);
            break;
        }
    }
    if pass.changed {
        doc.updated_at = Some(pass.now);
        store.write_locked(&guard, &doc)?;
    }
    drop(guard);
    drop(scheduler_guard);
    for e in pass.events {
        let _ = store.emit(e.event_type, e.severity, e.message, e.data);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(doc.schedules.iter().filter(|s| s.is_active()).filter_map(|s| s.next_run()).min())
}

fn fire_schedule(s: &mut Schedule, pass: &mut Pass, enqueue: &mut dyn FnMut(ScheduledRun) -> Result<()>) -> Result<()> {
    if s.is_archived() {
        return Ok(());
    }
    // Run-now requests: honoured while the schedule is paused too (an operator asked), not
    // bound by max_instances.
    while let Some(req) = s.pending_runs.first().cloned() {
        let run = ScheduledRun {
            task_id: req.task_id.clone(),
            schedule_id: s.schedule_id.clone(),
            schedule_name: s.name.clone(),
            slot: req.requested_at,
            trigger: Trigger::Manual { requested_by: req.requested_by.clone() },
            task: s.task.clone(),
        };
        if !pass.present.contains(&run.task_id) {
            enqueue(run.clone())?;
        }
        record_fired(s, pass, &run);
        s.pending_runs.remove(0);
        pass.changed = true;
    }
    if !s.is_active() {
        return Ok(());
    }
    let expr = match schedule_expr(s, &pass.config_tz) {
        Ok(e) => e,
        Err(problem) => {
            // A hand-edited record that no longer parses: hold it (visible, nothing lost) instead
            // of failing every pass.
            let now = pass.now;
            s.state = ScheduleState::Paused {
                paused_at: now,
                paused_by: Some("cortex".into()),
                reason: Some(format!("invalid schedule: {problem}")),
            };
            s.next_run_at = None;
            s.updated_at = Some(now);
            pass.changed = true;
            pass.event(
                EventKind::ScheduleInvalid,
                Severity::Error,
                format!("Schedule {} ({}) is invalid and was paused: {problem}", s.name, s.schedule_id),
                json!({"schedule_id": s.schedule_id, "name": s.name, "problem": problem}),
            );
            return Ok(());
        }
    };
    let now = pass.now;
    let Some(cursor) = s.next_run() else {
        set_next(s, pass, expr.next_after(now));
        return Ok(());
    };
    let first = match expr.at_or_after(cursor) {
        Some(f) if f <= now => f,
        other => {
            set_next(s, pass, other);
            return Ok(());
        }
    };
    let due = expr.due_between(first, now, pass.cap);
    let Some(&latest) = due.recent.last() else {
        set_next(s, pass, expr.next_after(now));
        return Ok(());
    };
    let on_time = now - latest <= pass.grace;
    let missed = due.total - u64::from(on_time);
    let policy = s.misfire_policy;
    let to_fire: Vec<Timestamp> = match policy {
        _ if missed == 0 => vec![latest],
        MisfirePolicy::Skip if on_time => vec![latest],
        MisfirePolicy::Skip => vec![],
        MisfirePolicy::RunOnce => vec![latest],
        MisfirePolicy::RunAll => due.recent.clone(),
    };
    let dropped = due.total - to_fire.len() as u64;
    if missed > 0 && dropped > 0 {
        let (event_type, what) = match policy {
            MisfirePolicy::RunAll => (EventKind::ScheduleMisfireCapped, "beyond the run_all cap"),
            MisfirePolicy::RunOnce => (EventKind::ScheduleMisfireSkipped, "coalesced into one run (run_once)"),
            MisfirePolicy::Skip => (EventKind::ScheduleMisfireSkipped, "skipped (misfire policy skip)"),
        };
        let count = if due.exact { dropped.to_string() } else { format!("about {dropped}") };
        pass.event(
            event_type,
            Severity::Warning,
            format!("Schedule {} ({}): {count} missed run(s) {what}", s.name, s.schedule_id),
            json!({
                "schedule_id": s.schedule_id, "name": s.name, "policy": policy.as_str(),
                "missed": missed, "dropped": dropped, "exact": due.exact,
                "first_due": format_ts(first), "last_due": format_ts(latest),
                "cap": if policy == MisfirePolicy::RunAll { Some(pass.cap) } else { None },
            }),
        );
    }
    let mut limited: Vec<String> = Vec::new();
    for slot in to_fire {
        let trigger = if slot == latest && on_time { Trigger::Schedule } else { Trigger::Misfire { policy } };
        let run = ScheduledRun {
            task_id: slot_task_id(&s.schedule_id, slot),
            schedule_id: s.schedule_id.clone(),
            schedule_name: s.name.clone(),
            slot,
            trigger,
            task: s.task.clone(),
        };
        if !pass.present.contains(&run.task_id) {
            let running = pass.running.get(&s.schedule_id).copied().unwrap_or(0);
            if running >= s.max_instances {
                limited.push(format_ts(slot));
                continue;
            }
            if let Err(e) = enqueue(run.clone()) {
                s.next_run_at = Some(slot);
                pass.changed = true;
                push_limited(s, pass, &limited);
                return Err(e);
            }
            *pass.running.entry(s.schedule_id.clone()).or_default() += 1;
        }
        record_fired(s, pass, &run);
    }
    push_limited(s, pass, &limited);
    set_next(s, pass, expr.next_after(now));
    Ok(())
}

fn push_limited(s: &Schedule, pass: &mut Pass, limited: &[String]) {
    if limited.is_empty() {
        return;
    }
    let running = pass.running.get(&s.schedule_id).copied().unwrap_or(0);
    pass.event(
        EventKind::ScheduleSkippedMaxInstances,
        Severity::Warning,
        format!(
            "Schedule {} ({}): {} run(s) skipped, {running} earlier run(s) still queued or running (max_instances {})",
            s.name,
            s.schedule_id,
            limited.len(),
            s.max_instances
        ),
        json!({"schedule_id": s.schedule_id, "name": s.name, "slots": limited,
               "max_instances": s.max_instances, "unfinished": running}),
    );
}

fn record_fired(s: &mut Schedule, pass: &mut Pass, run: &ScheduledRun) {
    let slot = format_ts(run.slot);
    s.last_run_at = Some(run.slot);
    s.last_task_id = Some(run.task_id.clone());
    s.run_count += 1;
    s.updated_at = Some(pass.now);
    pass.present.insert(run.task_id.clone());
    pass.changed = true;
    pass.event(
        EventKind::ScheduleFired,
        Severity::Info,
        format!(
            "Schedule {} ({}) enqueued task {} for {slot} ({})",
            s.name,
            s.schedule_id,
            run.task_id,
            run.trigger.label()
        ),
        json!({"schedule_id": s.schedule_id, "name": s.name, "task_id": run.task_id, "slot": slot,
               "trigger": run.trigger.label()}),
    );
}

fn set_next(s: &mut Schedule, pass: &mut Pass, next: Option<Timestamp>) {
    if s.next_run_at != next {
        s.next_run_at = next;
        pass.changed = true;
    }
}
