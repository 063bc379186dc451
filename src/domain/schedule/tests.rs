//! Unit tests of [`super::fire_due`] and the operator actions, driven by a [`ManualClock`] in a
//! temporary home (real files and locks, no waits).

use super::*;
use crate::base::clock::{Clock, ManualClock, Timestamp, format_ts};
use crate::base::error::{Error, Result};
use crate::domain::scheduler_state::Actor;
use crate::domain::task::{Priority, TaskQueue, TaskState};
use crate::store::Store;
use crate::store::home::Home;
use chrono::{TimeZone, Utc};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn actor() -> Actor {
    Actor { who: "tester".into(), from: "test".into() }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
}

fn fixture(start: Timestamp) -> Fixture {
    let (dir, store) = crate::store::fresh_store();
    Fixture { store, _dir: dir, clock: ManualClock::new(start) }
}

impl Fixture {
    fn set_config(&self, key: &str, value: &str) {
        let path = self.store.home().config_file();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut found = false;
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if l.split('=').next().is_some_and(|k| k.trim() == key) {
                    found = true;
                    format!("{key} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(found, "no key {key} in cortex.toml");
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
    }

    /// Adds the schedule `new` (see [`new_schedule`]).
    fn add(&self, new: NewSchedule) -> Schedule {
        add(&self.store, &self.clock, new, &actor()).unwrap()
    }

    fn schedule(&self, id: &str) -> Schedule {
        self.store.load::<Schedules>().unwrap().find(id).cloned().unwrap()
    }

    fn events_of(&self, event_type: &str) -> Vec<crate::store::events::Event> {
        crate::store::events::read_all(self.store.home())
            .unwrap()
            .records
            .into_iter()
            .filter(|e| e.event_type == event_type)
            .collect()
    }

    /// One pass with an enqueue that only records.
    fn fire(&self, runs: &mut Vec<ScheduledRun>) -> Option<Timestamp> {
        fire_due(&self.store, &self.clock, &mut |r| {
            runs.push(r);
            Ok(())
        })
        .unwrap()
    }

    /// One pass with an enqueue that adds the task to task-queue.json (idempotent by id), as the
    /// coordinator's does.
    fn fire_into_queue(&self, runs: &mut Vec<ScheduledRun>) -> Option<Timestamp> {
        let store = self.store.clone();
        let now = self.clock.now();
        fire_due(&self.store, &self.clock, &mut |r| enqueue_into_queue(&store, now, r, runs)).unwrap()
    }

    /// The runs of one pass at time `at`.
    fn fired_at(&self, at: Timestamp) -> Vec<ScheduledRun> {
        self.clock.set(at);
        let mut runs = Vec::new();
        self.fire(&mut runs);
        runs
    }

    fn queue(&self) -> TaskQueue {
        self.store.load().unwrap()
    }
}

fn enqueue_into_queue(store: &Store, now: Timestamp, run: ScheduledRun, runs: &mut Vec<ScheduledRun>) -> Result<()> {
    let defaults = TaskDefaults { worker_type: "scan-worker".into(), budget: 100, max_attempts: 3 };
    store.update::<TaskQueue, _>(|q| {
        if !q.tasks.iter().any(|t| t.task_id == run.task_id) {
            q.tasks.push(run.to_task(now, &defaults));
        }
        Ok(())
    })?;
    runs.push(run);
    Ok(())
}

/// The slots of a 15-minute schedule added at 10:00 on 2026-03-02, up to 11:00.
fn quarter_hours_to_eleven() -> Vec<Timestamp> {
    (1..=4).map(|q| utc(2026, 3, 2, 10, 0, 0) + chrono::Duration::minutes(15 * q)).collect()
}

fn new_schedule(
    name: &str,
    cron: Option<&str>,
    every: Option<&str>,
    tz: Option<&str>,
    policy: MisfirePolicy,
    max_instances: u32,
) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: cron.map(str::to_string),
        every: every.map(str::to_string),
        timezone: tz.map(str::to_string),
        misfire_policy: policy,
        max_instances,
        task: TaskTemplate {
            description: format!("scheduled {name}"),
            priority: Priority::High,
            worker_type: Some("scan-worker".into()),
            command: vec!["true".into()],
            budget: Some(50),
            max_attempts: Some(2),
        },
    }
}

fn slots(runs: &[ScheduledRun]) -> Vec<Timestamp> {
    runs.iter().map(|r| r.slot).collect()
}

#[test]
fn fires_every_five_minutes_over_a_simulated_hour() {
    let f = fixture(utc(2026, 3, 2, 10, 2, 13));
    let s = f.add(new_schedule("five", Some("*/5 * * * *"), None, None, MisfirePolicy::Skip, 1));
    assert_eq!(s.next_run_at.map(format_ts).as_deref(), Some("2026-03-02T10:05:00.000000Z"));
    let end = utc(2026, 3, 2, 11, 2, 13);
    let mut runs = Vec::new();
    // Drive it like the coordinator: sleep until the returned deadline (plus wake-up jitter).
    let mut deadline = f.fire(&mut runs).unwrap();
    while deadline <= end {
        f.clock.set(deadline + chrono::Duration::milliseconds(3));
        deadline = f.fire(&mut runs).unwrap();
    }
    assert_eq!(runs.len(), 12, "{:?}", slots(&runs));
    assert_eq!(runs[0].slot, utc(2026, 3, 2, 10, 5, 0));
    assert_eq!(runs[11].slot, utc(2026, 3, 2, 11, 0, 0));
    assert!(runs.iter().all(|r| r.trigger == Trigger::Schedule && r.schedule_id == s.schedule_id));
    assert_eq!(runs[0].task_id, format!("sched-{}-{}", s.schedule_id, utc(2026, 3, 2, 10, 5, 0).timestamp()));
    assert_eq!(deadline, utc(2026, 3, 2, 11, 5, 0));
    // A pass with nothing due changes nothing (no rewrite, so the coordinator's watch settles).
    let before = std::fs::read(f.store.path(files_schedules())).unwrap();
    let mtime = std::fs::metadata(f.store.path(files_schedules())).unwrap().modified().unwrap();
    assert_eq!(f.fire(&mut runs), Some(deadline));
    assert_eq!(std::fs::read(f.store.path(files_schedules())).unwrap(), before);
    assert_eq!(std::fs::metadata(f.store.path(files_schedules())).unwrap().modified().unwrap(), mtime);
    let got = f.schedule(&s.schedule_id);
    assert_eq!(got.run_count, 12);
    assert_eq!(got.last_run_at.map(format_ts).as_deref(), Some("2026-03-02T11:00:00.000000Z"));
    assert_eq!(f.events_of("schedule_fired").len(), 12);
}

fn files_schedules() -> &'static crate::store::files::CoordFile {
    crate::store::files::SCHEDULES
}

#[test]
fn interval_schedule_fires_every_fifteen_minutes() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    f.add(new_schedule("quarter", None, Some("15m"), None, MisfirePolicy::Skip, 1));
    let mut runs = Vec::new();
    for minute in 1..=60 {
        f.clock.set(utc(2026, 3, 2, 10, 0, 0) + chrono::Duration::minutes(minute));
        f.fire(&mut runs);
    }
    assert_eq!(slots(&runs), quarter_hours_to_eleven());
}

#[test]
fn berlin_schedule_fires_after_the_spring_forward_gap() {
    let f = fixture(utc(2026, 3, 28, 12, 0, 0));
    let s = f.add(new_schedule("nightly", Some("30 2 * * *"), None, Some("Europe/Berlin"), MisfirePolicy::Skip, 1));
    // 02:30 does not exist in Berlin on 2026-03-29: croner runs it at 03:00 CEST = 01:00 UTC.
    assert_eq!(s.next_run_at.map(format_ts).as_deref(), Some("2026-03-29T01:00:00.000000Z"));
    let mut runs = Vec::new();
    f.clock.set(utc(2026, 3, 29, 1, 0, 0));
    assert_eq!(f.fire(&mut runs), Some(utc(2026, 3, 30, 0, 30, 0)));
    assert_eq!(slots(&runs), vec![utc(2026, 3, 29, 1, 0, 0)]);
}

#[test]
fn crash_after_enqueue_before_the_write_refires_the_same_task_id() {
    let f = fixture(utc(2026, 3, 2, 10, 2, 0));
    let s = f.add(new_schedule("five", Some("*/5 * * * *"), None, None, MisfirePolicy::RunAll, 1));
    f.clock.set(utc(2026, 3, 2, 10, 5, 1));
    let before = std::fs::read(f.store.path(files_schedules())).unwrap();

    // The enqueue lands in the queue, then the process dies before schedules.json is written.
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let store = f.store.clone();
        let _ = fire_due(&f.store, &f.clock, &mut |r| {
            enqueue_into_queue(
                &store,
                crate::base::clock::parse_ts("2026-03-02T10:05:01Z").unwrap(),
                r,
                &mut Vec::new(),
            )?;
            panic!("simulated crash between enqueue and the schedules.json write");
        });
    }));
    assert!(crashed.is_err());
    assert_eq!(std::fs::read(f.store.path(files_schedules())).unwrap(), before, "cursor must not have moved");
    assert_eq!(f.queue().tasks.len(), 1);

    // A recording enqueue sees the same id again: the slot is re-offered, not lost.
    let dir2 = tempfile::tempdir().unwrap();
    let copy = Home::at(dir2.path());
    crate::store::init::init_home(&copy).unwrap();
    std::fs::copy(f.store.path(files_schedules()), copy.coord("schedules.json")).unwrap();
    let mut again = Vec::new();
    fire_due(&Store::new(copy), &f.clock, &mut |r| {
        again.push(r);
        Ok(())
    })
    .unwrap();
    let id = slot_task_id(&s.schedule_id, utc(2026, 3, 2, 10, 5, 0));
    assert_eq!(again.iter().map(|r| r.task_id.clone()).collect::<Vec<_>>(), vec![id.clone()]);

    // The restarted coordinator's pass: the id is already queued, so exactly one task exists.
    let mut runs = Vec::new();
    f.fire_into_queue(&mut runs);
    let ids: Vec<_> = f.queue().tasks.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(ids, vec![id.clone()]);
    let got = f.schedule(&s.schedule_id);
    assert_eq!(got.last_task_id.as_deref(), Some(id.as_str()));
    assert_eq!(got.next_run_at.map(format_ts).as_deref(), Some("2026-03-02T10:10:00.000000Z"));
    // And a further pass fires nothing more for that slot.
    f.fire_into_queue(&mut runs);
    assert_eq!(f.queue().tasks.len(), 1);
}

#[test]
fn failed_enqueue_keeps_earlier_runs_and_retries_the_failed_slot() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let s = f.add(new_schedule("q", None, Some("15m"), None, MisfirePolicy::RunAll, 10));
    f.clock.set(utc(2026, 3, 2, 11, 10, 0));
    let mut calls = Vec::new();
    let err = fire_due(&f.store, &f.clock, &mut |r| {
        calls.push(r.task_id.clone());
        if calls.len() == 3 { Err(Error::other("queue unavailable")) } else { Ok(()) }
    })
    .unwrap_err();
    assert!(err.to_string().contains("queue unavailable"));
    let got = f.schedule(&s.schedule_id);
    assert_eq!(got.run_count, 2);
    assert_eq!(got.next_run_at.map(format_ts).as_deref(), Some("2026-03-02T10:45:00.000000Z"));
    let mut runs = Vec::new();
    f.fire(&mut runs);
    let ids: Vec<String> = runs.iter().map(|r| r.task_id.clone()).collect();
    let expected = vec![calls[2].clone(), slot_task_id(&s.schedule_id, utc(2026, 3, 2, 11, 0, 0))];
    assert_eq!(ids, expected);
}

/// Downtime from 10:00 to 11:10 across the 10:15, 10:30, 10:45 and 11:00 slots of a 15m schedule.
/// `max_instances` 10, so only the misfire policy limits the catch-up.
fn downtime(policy: MisfirePolicy) -> (Fixture, Schedule, Vec<ScheduledRun>) {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let s = f.add(new_schedule("q", None, Some("15m"), None, policy, 10));
    f.clock.set(utc(2026, 3, 2, 11, 10, 0));
    let mut runs = Vec::new();
    let next = f.fire(&mut runs);
    assert_eq!(next, Some(utc(2026, 3, 2, 11, 15, 0)));
    (f, s, runs)
}

#[test]
fn downtime_with_skip_runs_nothing_and_says_so() {
    let (f, _s, runs) = downtime(MisfirePolicy::Skip);
    assert!(runs.is_empty());
    let ev = f.events_of("schedule_misfire_skipped");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["missed"], 4);
    assert_eq!(ev[0].data["first_due"], "2026-03-02T10:15:00.000000Z");
    assert_eq!(ev[0].data["last_due"], "2026-03-02T11:00:00.000000Z");
}

#[test]
fn downtime_with_run_once_runs_the_latest_slot_once() {
    let (f, s, runs) = downtime(MisfirePolicy::RunOnce);
    assert_eq!(slots(&runs), vec![utc(2026, 3, 2, 11, 0, 0)]);
    assert_eq!(runs[0].trigger, Trigger::Misfire { policy: MisfirePolicy::RunOnce });
    assert_eq!(f.events_of("schedule_misfire_skipped")[0].data["dropped"], 3);
    assert_eq!(f.schedule(&s.schedule_id).run_count, 1);
}

#[test]
fn downtime_with_run_all_runs_every_missed_slot() {
    let (f, _s, runs) = downtime(MisfirePolicy::RunAll);
    assert_eq!(slots(&runs), quarter_hours_to_eleven());
    assert!(f.events_of("schedule_misfire_capped").is_empty());
}

#[test]
fn run_all_is_capped_with_an_event() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    f.set_config("misfire_run_all_cap", "2");
    f.add(new_schedule("q", None, Some("15m"), None, MisfirePolicy::RunAll, 10));
    let runs = f.fired_at(utc(2026, 3, 2, 11, 10, 0));
    assert_eq!(slots(&runs), vec![utc(2026, 3, 2, 10, 45, 0), utc(2026, 3, 2, 11, 0, 0)]);
    let ev = f.events_of("schedule_misfire_capped");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["dropped"], 2);
    assert_eq!(ev[0].data["cap"], 2);
}

#[test]
fn a_slot_within_the_grace_runs_even_under_skip() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    f.add(new_schedule("q", None, Some("15m"), None, MisfirePolicy::Skip, 1));
    // Down across 10:15, 10:30, 10:45; back 20 s after the 10:45 slot.
    let runs = f.fired_at(utc(2026, 3, 2, 10, 45, 20));
    assert_eq!(slots(&runs), vec![utc(2026, 3, 2, 10, 45, 0)]);
    assert_eq!(runs[0].trigger, Trigger::Schedule);
    assert_eq!(f.events_of("schedule_misfire_skipped")[0].data["missed"], 2);
}

#[test]
fn max_instances_skips_while_the_previous_run_is_unfinished() {
    let f = fixture(utc(2026, 3, 2, 10, 2, 0));
    let s = f.add(new_schedule("five", Some("*/5 * * * *"), None, None, MisfirePolicy::Skip, 1));
    let mut runs = Vec::new();
    f.clock.set(utc(2026, 3, 2, 10, 5, 0));
    f.fire_into_queue(&mut runs);
    assert_eq!(runs.len(), 1);
    // Still queued at the next slot: skipped, with an event.
    f.clock.set(utc(2026, 3, 2, 10, 10, 0));
    f.fire_into_queue(&mut runs);
    assert_eq!(runs.len(), 1);
    let ev = f.events_of("schedule_skipped_max_instances");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["slots"][0], "2026-03-02T10:10:00.000000Z");
    assert_eq!(f.schedule(&s.schedule_id).next_run_at.map(format_ts).as_deref(), Some("2026-03-02T10:15:00.000000Z"));
    // In progress counts too.
    f.store
        .update::<TaskQueue, _>(|q| {
            q.tasks[0].state = TaskState::InProgress {
                started_at: crate::base::clock::parse_ts("2026-03-02T10:11:00Z").unwrap(),
                dispatch_id: "d1".into(),
            };
            Ok(())
        })
        .unwrap();
    f.clock.set(utc(2026, 3, 2, 10, 15, 0));
    f.fire_into_queue(&mut runs);
    assert_eq!(runs.len(), 1);
    // Once it completed, the next slot runs.
    f.store
        .update::<TaskQueue, _>(|q| {
            q.tasks[0].state = TaskState::Completed {
                started_at: None,
                completed_at: crate::base::clock::parse_ts("2026-03-02T10:16:00Z").unwrap(),
            };
            Ok(())
        })
        .unwrap();
    f.clock.set(utc(2026, 3, 2, 10, 20, 0));
    f.fire_into_queue(&mut runs);
    assert_eq!(slots(&runs), vec![utc(2026, 3, 2, 10, 5, 0), utc(2026, 3, 2, 10, 20, 0)]);
}

#[test]
fn max_instances_bounds_a_run_all_catch_up() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    f.add(new_schedule("q", None, Some("15m"), None, MisfirePolicy::RunAll, 2));
    f.clock.set(utc(2026, 3, 2, 11, 10, 0));
    let mut runs = Vec::new();
    f.fire_into_queue(&mut runs);
    assert_eq!(slots(&runs), vec![utc(2026, 3, 2, 10, 15, 0), utc(2026, 3, 2, 10, 30, 0)]);
    let ev = f.events_of("schedule_skipped_max_instances");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["slots"].as_array().unwrap().len(), 2);
}

#[test]
fn paused_schedule_fires_nothing_and_resumes_from_now() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let s = f.add(new_schedule("q", None, Some("15m"), None, MisfirePolicy::RunAll, 1));
    let other = f.add(new_schedule("other", Some("*/5 * * * *"), None, None, MisfirePolicy::Skip, 1));
    let c = pause(&f.store, &f.clock, &s.schedule_id, &actor(), Some("maintenance")).unwrap();
    assert!(c.changed);
    assert!(
        matches!(c.schedule.state, ScheduleState::Paused { ref reason, .. } if reason.as_deref() == Some("maintenance"))
    );
    assert!(!pause(&f.store, &f.clock, &s.schedule_id, &actor(), None).unwrap().changed);
    let mut runs = Vec::new();
    f.clock.set(utc(2026, 3, 2, 11, 10, 0));
    // The other schedule keeps the deadline; the paused one adds none.
    let next = f.fire(&mut runs);
    assert_eq!(next, Some(utc(2026, 3, 2, 11, 15, 0)));
    assert!(runs.iter().all(|r| r.schedule_id == other.schedule_id));
    let c = resume(&f.store, &f.clock, "q", &actor()).unwrap();
    assert!(c.changed);
    assert_eq!(c.schedule.next_run_at.map(format_ts).as_deref(), Some("2026-03-02T11:15:00.000000Z"));
    runs.clear();
    f.fire(&mut runs);
    assert!(runs.is_empty(), "{:?}", slots(&runs));
    assert_eq!(f.events_of("schedule_paused").len(), 1);
    assert_eq!(f.events_of("schedule_resumed").len(), 1);
}

#[test]
fn global_pause_holds_schedules_and_misfire_policy_applies_on_resume() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let s = f.add(new_schedule("q", None, Some("15m"), None, MisfirePolicy::RunAll, 10));
    crate::domain::scheduler_state::pause(&f.store, &actor(), Some("maintenance")).unwrap();
    let mut runs = Vec::new();
    for minute in [15, 30, 45, 60, 70] {
        f.clock.set(utc(2026, 3, 2, 10, 0, 0) + chrono::Duration::minutes(minute));
        assert_eq!(f.fire(&mut runs), None);
    }
    assert!(runs.is_empty());
    assert_eq!(f.schedule(&s.schedule_id).next_run_at.map(format_ts).as_deref(), Some("2026-03-02T10:15:00.000000Z"));
    crate::domain::scheduler_state::resume(&f.store, &actor()).unwrap();
    assert_eq!(f.fire(&mut runs), Some(utc(2026, 3, 2, 11, 15, 0)));
    assert_eq!(runs.len(), 4);
}

#[test]
fn run_now_enqueues_once_even_while_the_schedule_is_paused() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let s = f.add(new_schedule("q", Some("@daily"), None, None, MisfirePolicy::Skip, 1));
    pause(&f.store, &f.clock, "q", &actor(), None).unwrap();
    let (_, req) = request_run(&f.store, &f.clock, "q", &actor()).unwrap();
    assert!(req.task_id.starts_with(&format!("sched-{}-manual-", s.schedule_id)));
    // Held by a global pause.
    crate::domain::scheduler_state::pause(&f.store, &actor(), None).unwrap();
    let mut runs = Vec::new();
    f.fire_into_queue(&mut runs);
    assert!(runs.is_empty());
    crate::domain::scheduler_state::resume(&f.store, &actor()).unwrap();
    f.fire_into_queue(&mut runs);
    f.fire_into_queue(&mut runs);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].task_id, req.task_id);
    assert!(matches!(runs[0].trigger, Trigger::Manual { .. }));
    let q = f.queue();
    assert_eq!(q.tasks.len(), 1);
    assert_eq!(q.tasks[0].schedule_id.as_deref(), Some(s.schedule_id.as_str()));
    assert_eq!(q.tasks[0].created_by, "schedule:q");
    assert_eq!(q.tasks[0].budget, 50);
    assert!(f.schedule("q").pending_runs.is_empty());
    // Archived schedules refuse.
    remove(&f.store, &f.clock, "q", &actor()).unwrap();
    assert!(request_run(&f.store, &f.clock, &s.schedule_id, &actor()).is_err());
}

#[test]
fn invalid_input_is_rejected_with_the_field_and_nothing_written() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let path = f.store.path(files_schedules());
    let before = std::fs::read(&path).unwrap();
    let cases: Vec<(NewSchedule, &str)> = vec![
        (new_schedule("a", Some("61 * * * *"), None, None, MisfirePolicy::Skip, 1), "cron"),
        (new_schedule("a", Some("* * * *"), None, None, MisfirePolicy::Skip, 1), "cron"),
        (new_schedule("a", Some("@sometimes"), None, None, MisfirePolicy::Skip, 1), "cron"),
        (new_schedule("a", None, Some("soon"), None, MisfirePolicy::Skip, 1), "every"),
        (new_schedule("a", None, Some("0s"), None, MisfirePolicy::Skip, 1), "every"),
        (new_schedule("a", Some("@daily"), None, Some("Mars/Olympus"), MisfirePolicy::Skip, 1), "timezone"),
        (new_schedule("a", Some("@daily"), Some("5m"), None, MisfirePolicy::Skip, 1), "cron/every"),
        (new_schedule("a", None, None, None, MisfirePolicy::Skip, 1), "cron/every"),
        (new_schedule("a", Some("@daily"), None, None, MisfirePolicy::Skip, 0), "max_instances"),
        (new_schedule(" ", Some("@daily"), None, None, MisfirePolicy::Skip, 1), "name"),
        (
            NewSchedule {
                task: TaskTemplate {
                    worker_type: Some("no-such-worker".into()),
                    ..new_schedule("a", None, None, None, MisfirePolicy::Skip, 1).task
                },
                ..new_schedule("a", Some("@daily"), None, None, MisfirePolicy::Skip, 1)
            },
            "worker_type",
        ),
    ];
    for (new, field) in cases {
        let err = add(&f.store, &f.clock, new, &actor()).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{field}: ")), "{field}: {err}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(f.events_of("schedule_added").is_empty());
    // Duplicate names are refused too.
    f.add(new_schedule("a", Some("@daily"), None, None, MisfirePolicy::Skip, 1));
    assert!(
        add(&f.store, &f.clock, new_schedule("a", Some("@hourly"), None, None, MisfirePolicy::Skip, 1), &actor())
            .is_err()
    );
}

#[test]
fn a_hand_broken_schedule_is_paused_with_an_event_not_fatal() {
    let f = fixture(utc(2026, 3, 2, 10, 0, 0));
    let good = f.add(new_schedule("good", Some("*/5 * * * *"), None, None, MisfirePolicy::Skip, 1));
    let bad = f.add(new_schedule("bad", Some("*/5 * * * *"), None, None, MisfirePolicy::Skip, 1));
    f.store
        .update::<Schedules, _>(|d| {
            d.find_mut("bad").unwrap().timezone = Some("Nowhere/Land".into());
            Ok(())
        })
        .unwrap();
    let mut runs = f.fired_at(utc(2026, 3, 2, 10, 5, 0));
    assert_eq!(runs.iter().map(|r| r.schedule_id.clone()).collect::<Vec<_>>(), vec![good.schedule_id]);
    assert!(matches!(f.schedule(&bad.schedule_id).state, ScheduleState::Paused { .. }));
    assert_eq!(f.events_of("schedule_invalid").len(), 1);
    f.fire(&mut runs);
    assert_eq!(f.events_of("schedule_invalid").len(), 1);
}

#[test]
fn list_shows_next_runs_in_the_zone_and_remove_archives() {
    let f = fixture(utc(2026, 7, 1, 12, 0, 0));
    f.add(new_schedule("berlin", Some("0 3 * * 1-5"), None, Some("Europe/Berlin"), MisfirePolicy::Skip, 1));
    f.set_config("timezone", "\"America/New_York\"");
    f.add(new_schedule("ny", Some("@daily"), None, None, MisfirePolicy::Skip, 1));
    let views = list(&f.store, false).unwrap();
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].schedule.next_run_at.map(format_ts).as_deref(), Some("2026-07-02T01:00:00.000000Z"));
    assert_eq!(views[0].next_run_local.as_deref(), Some("2026-07-02 03:00:00 CEST"));
    assert_eq!(views[1].effective_timezone, "America/New_York");
    assert_eq!(views[1].next_run_local.as_deref(), Some("2026-07-02 00:00:00 EDT"));
    let c = remove(&f.store, &f.clock, "ny", &actor()).unwrap();
    assert!(matches!(c.schedule.state, ScheduleState::Archived { .. }));
    assert_eq!(list(&f.store, false).unwrap().len(), 1);
    assert_eq!(list(&f.store, true).unwrap().len(), 2);
    assert!(resume(&f.store, &f.clock, &c.schedule.schedule_id, &actor()).is_err());
    assert_eq!(f.events_of("schedule_removed").len(), 1);
}

/// A schedules.json as an older version or an operator may have left it: whole seconds and an
/// offset load; a time that is not one is refused naming its field, and the file is kept.
#[test]
fn schedule_times_load_in_every_accepted_form_and_a_bad_one_names_its_field() {
    let (_dir, store) = crate::store::fresh_store();
    let path = store.path(crate::store::files::SCHEDULES);
    let doc = |paused_at: &str| {
        serde_json::json!({"schedules": [{
            "schedule_id": "s1", "name": "n", "every": "15m", "timezone": null,
            "task": {"description": "d", "priority": "medium"},
            "state": "paused", "paused_at": paused_at, "paused_by": "me", "reason": null,
            "misfire_policy": "skip", "max_instances": 1,
            "last_run_at": "2026-03-02T10:00:00Z", "next_run_at": null,
            "created_at": "2026-03-02T11:00:00+01:00",
            "pending_runs": [{"task_id": "t", "requested_at": "2026-03-02T10:00:00.5Z"}]}],
            "updated_at": null})
    };
    std::fs::write(&path, doc("2026-03-02T10:01:00Z").to_string()).unwrap();
    let loaded: Schedules = store.load().unwrap();
    let s = &loaded.schedules[0];
    assert_eq!(s.created_at, utc(2026, 3, 2, 10, 0, 0));
    assert_eq!(s.last_run_at, Some(utc(2026, 3, 2, 10, 0, 0)));
    assert_eq!(s.pending_runs[0].requested_at.timestamp_subsec_millis(), 500);
    assert_eq!(
        s.state,
        ScheduleState::Paused { paused_at: utc(2026, 3, 2, 10, 1, 0), paused_by: Some("me".into()), reason: None }
    );

    let bad = doc("last tuesday").to_string();
    std::fs::write(&path, &bad).unwrap();
    let err = store.load::<Schedules>().unwrap_err();
    let Error::Invalid { pointer, .. } = &err else { panic!("{err}") };
    assert_eq!(pointer, "/schedules/0/paused_at", "{err}");
    assert!(err.to_string().contains("\"last tuesday\" is not an RFC 3339 time"), "{err}");
    assert!(store.update::<Schedules, _>(|_| Ok(())).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), bad, "never overwritten");
}
