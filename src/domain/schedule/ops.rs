//! Operator actions on schedules, shared by the CLI and the HTTP API: add, list, show, pause,
//! resume, remove (archive) and request a run now. Each is one read-modify-write of
//! `schedules.json` under lock `schedules` followed by an audit event.

use super::expr::format_in_zone;
use super::fire::{effective_tz, schedule_expr};
use super::model::{MisfirePolicy, RunRequest, Schedule, ScheduleState, Schedules, TaskTemplate};
use crate::base::clock::{Clock, format_ts};
use crate::base::error::{Error, Result};
use crate::domain::scheduler_state::{Actor, SchedulerState};
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use serde::Serialize;
use serde_json::json;

/// What `cortex schedule add` / the API give to create a schedule.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub cron: Option<String>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    pub misfire_policy: MisfirePolicy,
    pub max_instances: u32,
    pub task: TaskTemplate,
}

/// The outcome of pause, resume, remove.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// False when the schedule already was in the asked-for state.
    pub changed: bool,
    pub message: String,
    pub schedule: Schedule,
}

/// A schedule as `list`/`show` present it: the record plus its zone and next run in that zone.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The zone the expression is read in (the schedule's, else `[scheduler] timezone`).
    pub effective_timezone: String,
    /// `next_run_at` in that zone, e.g. `2026-03-29 03:00:00 CEST`.
    pub next_run_local: Option<String>,
    pub last_run_local: Option<String>,
    /// Plain-English description of the expression.
    pub describe: String,
}

fn invalid(field: &str, detail: impl std::fmt::Display) -> Error {
    Error::Config { path: None, detail: format!("{field}: {detail}") }
}

fn not_found(id: &str) -> Error {
    Error::refused(format!("no schedule with id or name {id:?} (see `cortex schedule list --all`)"))
}

/// Validates a new schedule and records it (state active, `next_run_at` its first slot after
/// now). Nothing is written when a field is invalid; the error names the field.
pub fn add(store: &Store, clock: &dyn Clock, new: NewSchedule, actor: &Actor) -> Result<Schedule> {
    let config = Config::load(store.home())?;
    let name = new.name.trim().to_string();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if new.max_instances == 0 {
        return Err(invalid("max_instances", "must be at least 1"));
    }
    if new.task.max_attempts == Some(0) {
        return Err(invalid("max_attempts", "must be at least 1"));
    }
    if new.task.command.is_empty() && new.task.worker_type.is_none() {
        return Err(invalid("command", "give the command after `--`, or a worker type whose template runs"));
    }
    match (&new.cron, &new.every) {
        (Some(_), Some(_)) => {
            return Err(invalid("cron/every", "give either a cron expression or an interval, not both"));
        }
        (None, None) => return Err(invalid("cron/every", "give a cron expression (--cron) or an interval (--every)")),
        _ => {}
    }
    if let Some(wt) = &new.task.worker_type {
        let types = store.read_value(crate::store::files::WORKER_TYPES)?.unwrap_or_default();
        let known = types.get("worker_types").and_then(|t| t.as_object());
        if !known.is_some_and(|k| k.contains_key(wt)) {
            let names = known.map(|k| k.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default();
            return Err(invalid(
                "worker_type",
                format!("unknown worker type {wt:?} (coordination/config/worker-types.json has: {names})"),
            ));
        }
    }
    let timezone = new.timezone.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let now = clock.now();
    let mut schedule = Schedule {
        schedule_id: String::new(),
        name: name.clone(),
        cron: new.cron.map(|c| c.trim().to_string()),
        every: new.every.map(|e| e.trim().to_string()),
        timezone,
        task: new.task,
        state: ScheduleState::Active,
        misfire_policy: new.misfire_policy,
        max_instances: new.max_instances,
        last_run_at: None,
        last_task_id: None,
        next_run_at: None,
        // Whole seconds: an interval's slots count from here.
        created_at: chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        created_by: Some(actor.who.clone()),
        run_count: 0,
        pending_runs: Vec::new(),
        updated_at: Some(now),
    };
    let expr = schedule_expr(&schedule, &config.scheduler.timezone).map_err(|e| {
        let (field, detail) = e.split_once(": ").unwrap_or(("schedule", e.as_str()));
        invalid(field, detail)
    })?;
    schedule.next_run_at = Some(expr.next_after(now).ok_or_else(|| {
        invalid(if schedule.cron.is_some() { "cron" } else { "every" }, "never matches a future time")
    })?);
    let schedule = store.update::<Schedules, _>(|doc| {
        if doc.schedules.iter().any(|s| s.name == name && !s.is_archived()) {
            return Err(Error::refused(format!(
                "a schedule named {name:?} exists already (remove it first, or choose another name)"
            )));
        }
        let mut id = new_schedule_id();
        while doc.schedules.iter().any(|s| s.schedule_id == id) {
            id = new_schedule_id();
        }
        schedule.schedule_id = id;
        doc.schedules.push(schedule.clone());
        doc.updated_at = Some(now);
        Ok(schedule)
    })?;
    let _ = store.emit(
        EventKind::ScheduleAdded,
        Severity::Info,
        format!(
            "Schedule {} ({}) added by {}: {}, next run {}",
            schedule.name,
            schedule.schedule_id,
            actor.who,
            schedule.expression_label(),
            schedule.next_run_at.map_or_else(|| "-".into(), format_ts)
        ),
        json!({"schedule_id": schedule.schedule_id, "name": schedule.name, "cron": schedule.cron,
               "every": schedule.every, "timezone": schedule.timezone, "next_run_at": schedule.next_run_at.map(format_ts),
               "added_by": actor.who, "from": actor.from}),
    );
    Ok(schedule)
}

fn new_schedule_id() -> String {
    format!("sch-{:08x}", fastrand::u32(..))
}

/// Every schedule (archived ones only with `include_archived`), with next run times.
pub fn list(store: &Store, include_archived: bool) -> Result<Vec<ScheduleView>> {
    let config = Config::load(store.home())?;
    let doc: Schedules = store.load()?;
    Ok(doc
        .schedules
        .into_iter()
        .filter(|s| include_archived || !s.is_archived())
        .map(|s| view(s, &config.scheduler.timezone))
        .collect())
}

/// One schedule by id or name.
pub fn show(store: &Store, id: &str) -> Result<ScheduleView> {
    let config = Config::load(store.home())?;
    let doc: Schedules = store.load()?;
    let s = doc.find(id).cloned().ok_or_else(|| not_found(id))?;
    Ok(view(s, &config.scheduler.timezone))
}

/// True when the global scheduler pause holds every schedule.
pub fn scheduler_paused(store: &Store) -> Result<bool> {
    Ok(store.load::<SchedulerState>()?.is_paused())
}

fn view(schedule: Schedule, config_tz: &str) -> ScheduleView {
    let tz = effective_tz(schedule.timezone.as_deref(), config_tz).unwrap_or(chrono_tz::Tz::UTC);
    let describe =
        schedule_expr(&schedule, config_tz).map(|e| e.describe()).unwrap_or_else(|e| format!("invalid: {e}"));
    ScheduleView {
        effective_timezone: tz.name().to_string(),
        next_run_local: schedule.next_run().map(|t| format_in_zone(t, tz)),
        last_run_local: schedule.last_run_at.map(|t| format_in_zone(t, tz)),
        describe,
        schedule,
    }
}

/// One RMW of a schedule; returns whether it changed, `apply`'s note, and the schedule after.
fn change<N>(store: &Store, id: &str, apply: impl FnOnce(&mut Schedule) -> Result<N>) -> Result<(bool, N, Schedule)> {
    store.update::<Schedules, _>(|doc| {
        let s = doc.find_mut(id).ok_or_else(|| not_found(id))?;
        let before = s.clone();
        let note = apply(s)?;
        let changed = *s != before;
        let s = s.clone();
        if changed {
            doc.updated_at = s.updated_at;
        }
        Ok((changed, note, s))
    })
}

/// Pauses one schedule: it fires nothing until [`resume`].
pub fn pause(store: &Store, clock: &dyn Clock, id: &str, actor: &Actor, reason: Option<&str>) -> Result<Change> {
    let now = clock.now();
    let (changed, _, s) = change(store, id, |s| {
        match &s.state {
            ScheduleState::Archived { .. } => {
                return Err(Error::refused(format!("schedule {} is archived; it cannot be paused", s.schedule_id)));
            }
            ScheduleState::Paused { .. } => return Ok(()),
            ScheduleState::Active => {}
        }
        s.state = ScheduleState::Paused {
            paused_at: now,
            paused_by: Some(actor.who.clone()),
            reason: reason.map(str::to_string),
        };
        s.next_run_at = None;
        s.updated_at = Some(now);
        Ok(())
    })?;
    if changed {
        let _ = store.emit(
            EventKind::SchedulePaused,
            Severity::Info,
            format!(
                "Schedule {} ({}) paused by {} from {}{}",
                s.name,
                s.schedule_id,
                actor.who,
                actor.from,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            json!({"schedule_id": s.schedule_id, "name": s.name, "paused_by": actor.who, "from": actor.from,
                   "reason": reason, "paused_at": format_ts(now)}),
        );
    }
    let message = if changed { "Schedule paused" } else { "Schedule already paused" };
    Ok(Change { changed, message: message.into(), schedule: s })
}

/// Resumes a paused schedule. Slots that passed while it was paused are not run (the operator
/// held them on purpose): its next run is its first slot after now. (A global scheduler pause
/// is different: schedules keep their cursor and the misfire policy decides on resume.)
pub fn resume(store: &Store, clock: &dyn Clock, id: &str, actor: &Actor) -> Result<Change> {
    let config = Config::load(store.home())?;
    let now = clock.now();
    let (changed, _, s) = change(store, id, |s| {
        match &s.state {
            ScheduleState::Archived { .. } => {
                return Err(Error::refused(format!("schedule {} is archived; add it again instead", s.schedule_id)));
            }
            ScheduleState::Active => return Ok(()),
            ScheduleState::Paused { .. } => {}
        }
        let expr = schedule_expr(s, &config.scheduler.timezone)
            .map_err(|e| Error::refused(format!("schedule {} cannot resume: {e}", s.schedule_id)))?;
        s.state = ScheduleState::Active;
        s.next_run_at = expr.next_after(now);
        s.updated_at = Some(now);
        Ok(())
    })?;
    if changed {
        let _ = store.emit(
            EventKind::ScheduleResumed,
            Severity::Info,
            format!(
                "Schedule {} ({}) resumed by {} from {}, next run {}",
                s.name,
                s.schedule_id,
                actor.who,
                actor.from,
                s.next_run_at.map_or_else(|| "-".into(), format_ts)
            ),
            json!({"schedule_id": s.schedule_id, "name": s.name, "resumed_by": actor.who, "from": actor.from,
                   "next_run_at": s.next_run_at.map(format_ts)}),
        );
    }
    let message = if changed { "Schedule resumed" } else { "Schedule already active" };
    Ok(Change { changed, message: message.into(), schedule: s })
}

/// Archives a schedule: it never fires again and drops its pending run requests. The record
/// stays in `schedules.json` (state archived) for the audit trail.
pub fn remove(store: &Store, clock: &dyn Clock, id: &str, actor: &Actor) -> Result<Change> {
    let now = clock.now();
    let (changed, dropped, s) = change(store, id, |s| {
        if s.is_archived() {
            return Ok(0);
        }
        let dropped = s.pending_runs.len();
        s.state = ScheduleState::Archived { archived_at: now, archived_by: Some(actor.who.clone()) };
        s.next_run_at = None;
        s.pending_runs.clear();
        s.updated_at = Some(now);
        Ok(dropped)
    })?;
    if changed {
        let _ = store.emit(
            EventKind::ScheduleRemoved,
            Severity::Info,
            format!("Schedule {} ({}) removed (archived) by {} from {}", s.name, s.schedule_id, actor.who, actor.from),
            json!({"schedule_id": s.schedule_id, "name": s.name, "removed_by": actor.who, "from": actor.from,
                   "archived_at": format_ts(now), "dropped_run_requests": dropped}),
        );
    }
    let message = if changed { "Schedule removed (archived)" } else { "Schedule already archived" };
    Ok(Change { changed, message: message.into(), schedule: s })
}

/// Asks for one run now. The request (with its task id, fixed here) is stored in the schedule's
/// `pending_runs`; the coordinator's next [`super::fire_due`] (it watches `schedules.json`)
/// enqueues it through the same path as scheduled runs and removes it in the same write that
/// records it. Allowed on paused schedules; refused on archived ones.
pub fn request_run(store: &Store, clock: &dyn Clock, id: &str, actor: &Actor) -> Result<(Schedule, RunRequest)> {
    let now = clock.now();
    let (_, _, s) = change(store, id, |s| {
        if s.is_archived() {
            return Err(Error::refused(format!("schedule {} is archived; it cannot run", s.schedule_id)));
        }
        let mut ms = now.timestamp_millis();
        let mut task_id = format!("sched-{}-manual-{ms}", s.schedule_id);
        while s.pending_runs.iter().any(|r| r.task_id == task_id) || s.last_task_id.as_deref() == Some(&task_id) {
            ms += 1;
            task_id = format!("sched-{}-manual-{ms}", s.schedule_id);
        }
        s.pending_runs.push(RunRequest {
            task_id,
            requested_at: now,
            requested_by: Some(actor.who.clone()),
            requested_from: Some(actor.from.clone()),
        });
        s.updated_at = Some(now);
        Ok(())
    })?;
    let req = s.pending_runs.last().cloned().ok_or_else(|| Error::other("run request was not recorded"))?;
    let _ = store.emit(
        EventKind::ScheduleRunRequested,
        Severity::Info,
        format!(
            "Run of schedule {} ({}) requested by {} from {} as task {}",
            s.name, s.schedule_id, actor.who, actor.from, req.task_id
        ),
        json!({"schedule_id": s.schedule_id, "name": s.name, "task_id": req.task_id, "requested_by": actor.who,
               "from": actor.from}),
    );
    Ok((s, req))
}
