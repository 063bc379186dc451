//! Schedules end to end: the real coordinator and worker in temporary homes fire `every 1s`
//! schedules into tasks that run; `run-now` on a running coordinator adds exactly one task; a
//! global pause holds every schedule and resume applies each misfire policy; a per-schedule
//! pause holds only that schedule; and SIGKILL of the coordinator again and again while a
//! schedule fires neither duplicates nor silently loses a slot.

use crate::support::task::*;
use crate::support::*;
use cortex::base::clock::{Timestamp, parse_ts};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Every task record on disk: the queue's, the archive's and the intake's (live and folded),
/// each with where it was found. Raw files, so a duplicate cannot hide behind a reader that
/// deduplicates.
struct Records {
    queue: Vec<Value>,
    archive: Vec<Value>,
    intake: Vec<Value>,
}

fn jsonl(h: &TestHome, rel: &str) -> Vec<Value> {
    // Only whole lines: a final line without its newline is an append still in progress.
    std::fs::read_to_string(h.join(rel))
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{rel}: bad line {l:?}: {e}")))
        .collect()
}

fn records(h: &TestHome) -> Records {
    let queue = h.queue_json()["tasks"].as_array().cloned().unwrap_or_default();
    let archive = jsonl(h, "coordination/task-archive.jsonl");
    let mut intake = jsonl(h, "coordination/task-intake.jsonl.folded");
    intake.extend(jsonl(h, "coordination/task-intake.jsonl"));
    Records { queue, archive, intake }
}

impl Records {
    /// Tasks of a schedule, by id, with their latest known status (queue over archive over intake).
    fn of_schedule(&self, sid: &str) -> BTreeMap<String, String> {
        let prefix = format!("sched-{sid}-");
        let mut out = BTreeMap::new();
        for t in self.intake.iter().chain(&self.archive).chain(&self.queue) {
            let id = t["task_id"].as_str().unwrap_or("");
            if id.starts_with(&prefix) {
                out.insert(id.to_string(), t["status"].as_str().unwrap_or("").to_string());
            }
        }
        out
    }
}

fn schedules(h: &TestHome) -> Vec<Value> {
    h.read_json("coordination/schedules.json")["schedules"].as_array().cloned().unwrap_or_default()
}

fn schedule(h: &TestHome, sid: &str) -> Value {
    schedules(h).into_iter().find(|s| s["schedule_id"] == sid).unwrap_or_else(|| panic!("schedule {sid}"))
}

fn cursor(h: &TestHome, sid: &str) -> Option<Timestamp> {
    schedule(h, sid)["next_run_at"].as_str().and_then(parse_ts)
}

/// `cortex schedule add` (every 1s, a tiny budget, the task `true`) with extra options; returns
/// the schedule id.
fn add_schedule(h: &TestHome, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["schedule", "add", "--name", name, "--every", "1s", "--type", "scan-worker", "--budget", "10"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", "true"]);
    h.cortex_ok(&args);
    schedules(h)
        .into_iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["schedule_id"].as_str().map(str::to_string))
        .expect("schedule recorded")
}

fn completed(tasks: &BTreeMap<String, String>) -> usize {
    tasks.values().filter(|s| *s == "completed").count()
}

/// Slot ids (`sched-<sid>-<unix seconds>`) of a schedule's tasks, manual runs left out.
fn slots(tasks: &BTreeMap<String, String>, sid: &str) -> BTreeSet<i64> {
    let prefix = format!("sched-{sid}-");
    tasks.keys().filter_map(|id| id.strip_prefix(&prefix)?.parse().ok()).collect()
}

/// Waits until wall time is past `t` (time itself is the condition here: a schedule that must
/// NOT fire can only be observed over an interval).
fn wait_past(t: Timestamp) {
    wait_until(LONG, "time to pass", || chrono::Utc::now() > t);
}

#[test]
fn every_second_schedule_runs_and_run_now_adds_exactly_one_task() {
    let h = fast_home();
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let sid = add_schedule(&h, "tick", &[]);
    let first_cursor = cursor(&h, &sid).expect("a new schedule has a cursor");

    // Tasks appear with the slot's id, run and complete; the cursor moves.
    wait_until(LONG, "three completed runs", || completed(&records(&h).of_schedule(&sid)) >= 3);
    let later = cursor(&h, &sid).expect("cursor");
    assert!(later >= first_cursor + chrono::Duration::seconds(2), "cursor moved from {first_cursor} to {later}");
    let s = schedule(&h, &sid);
    assert!(s["run_count"].as_u64().unwrap() >= 3, "{s}");
    let last_task = s["last_task_id"].as_str().unwrap().to_string();
    let last_slot: i64 = last_task.rsplit('-').next().unwrap().parse().unwrap();
    assert_eq!(last_task, format!("sched-{sid}-{last_slot}"));
    let fired = h.events_of("schedule_fired");
    assert!(fired.iter().any(|e| e["data"]["task_id"] == last_task.as_str()), "fired event for {last_task}");
    // Each run is a real dispatch of the schedule's command.
    let r = records(&h);
    let done = r.archive.iter().find(|t| t["status"] == "completed" && t["schedule_id"] == sid.as_str()).unwrap();
    assert_eq!(done["created_by"], "schedule:tick");
    assert_eq!(done["command"], serde_json::json!(["/bin/sh", "-c", "true"]));

    // run-now on the running coordinator: exactly one manual task, which runs.
    let manual_before: Vec<String> =
        records(&h).of_schedule(&sid).into_keys().filter(|id| id.contains("-manual-")).collect();
    assert!(manual_before.is_empty());
    h.cortex_ok(&["schedule", "run-now", &sid]);
    let manual = |h: &TestHome| -> BTreeMap<String, String> {
        records(h).of_schedule(&sid).into_iter().filter(|(id, _)| id.contains("-manual-")).collect()
    };
    wait_until(LONG, "the manual run completed", || manual(&h).values().any(|s| s == "completed"));
    // A few more cycles (slots keep firing), and still exactly one manual task.
    let c = cursor(&h, &sid).unwrap();
    wait_until(LONG, "two more slots", || cursor(&h, &sid).is_some_and(|n| n >= c + chrono::Duration::seconds(2)));
    assert_eq!(manual(&h).len(), 1, "{:?}", manual(&h));
    assert!(schedule(&h, &sid)["pending_runs"].as_array().is_none_or(|p| p.is_empty()));
    let fired_manual: Vec<Value> =
        h.events_of("schedule_fired").into_iter().filter(|e| e["data"]["trigger"] == "manual").collect();
    assert_eq!(fired_manual.len(), 1, "{fired_manual:?}");
}

#[test]
fn global_pause_holds_schedules_and_resume_applies_misfire_policies() {
    let h = fast_home();
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let once = add_schedule(&h, "once", &["--misfire", "run_once"]);
    let skip = add_schedule(&h, "skip", &["--misfire", "skip"]);
    let all = add_schedule(&h, "all", &["--misfire", "run_all", "--max-instances", "20"]);
    let ids = [once.clone(), skip.clone(), all.clone()];
    wait_until(LONG, "each schedule ran twice", || {
        let r = records(&h);
        ids.iter().all(|sid| completed(&r.of_schedule(sid)) >= 2)
    });

    h.cortex_ok(&["scheduler", "pause", "--reason", "e2e"]);
    let paused_at = chrono::Utc::now();
    let at_pause: HashMap<String, usize> = ids.iter().map(|s| (s.clone(), records(&h).of_schedule(s).len())).collect();
    let cursors_at_pause: HashMap<String, Timestamp> =
        ids.iter().map(|s| (s.clone(), cursor(&h, s).unwrap())).collect();
    // Three slots pass while paused: no task is added and no cursor moves.
    wait_past(paused_at + chrono::Duration::milliseconds(3500));
    for sid in &ids {
        assert_eq!(records(&h).of_schedule(sid).len(), at_pause[sid], "schedule {sid} fired while paused");
        assert_eq!(cursor(&h, sid).unwrap(), cursors_at_pause[sid], "cursor of {sid} moved while paused");
    }

    let fired_before = h.events_of("schedule_fired").len();
    h.cortex_ok(&["scheduler", "resume"]);
    let resumed_at = chrono::Utc::now();
    // run_all: every slot missed during the pause runs.
    wait_until(LONG, "run_all caught up", || {
        let got = slots(&records(&h).of_schedule(&all), &all);
        let from = cursors_at_pause[&all].timestamp();
        (from..=resumed_at.timestamp() - 1).all(|s| got.contains(&s))
    });
    // The events follow the enqueue (after the cursor write).
    let catch_up = |h: &TestHome| -> Vec<Value> {
        h.events_of("schedule_fired")[fired_before..]
            .iter()
            .filter(|e| e["data"]["schedule_id"] == all.as_str() && e["data"]["trigger"] == "misfire_run_all")
            .cloned()
            .collect()
    };
    wait_until(LONG, "run_all fires the missed slots as misfires", || catch_up(&h).len() >= 2);
    // run_once and skip: the missed slots are reported, not run; one run (the latest slot, on
    // time within the grace) follows.
    wait_until(LONG, "misfire events of run_once and skip", || {
        let ev = h.events_of("schedule_misfire_skipped");
        [&once, &skip].iter().all(|sid| ev.iter().any(|e| e["data"]["schedule_id"] == sid.as_str()))
    });
    for (sid, policy) in [(&once, "run_once"), (&skip, "skip")] {
        let ev = h.events_of("schedule_misfire_skipped");
        let e = ev.iter().find(|e| e["data"]["schedule_id"] == sid.as_str()).unwrap();
        assert_eq!(e["data"]["policy"], policy);
        assert!(e["data"]["dropped"].as_u64().unwrap() >= 2, "{e}");
        let first = parse_ts(e["data"]["first_due"].as_str().unwrap()).unwrap();
        let last = parse_ts(e["data"]["last_due"].as_str().unwrap()).unwrap();
        let got = slots(&records(&h).of_schedule(sid), sid);
        let dropped: Vec<i64> = (first.timestamp()..last.timestamp()).filter(|s| got.contains(s)).collect();
        assert!(dropped.is_empty(), "{policy}: dropped slots ran anyway: {dropped:?}");
        assert!(got.contains(&last.timestamp()), "{policy}: the latest slot {last} runs");
    }
    wait_until(LONG, "all schedules fire again", || {
        let r = records(&h);
        ids.iter().all(|sid| r.of_schedule(sid).len() >= at_pause[sid] + 2)
    });
}

#[test]
fn per_schedule_pause_holds_only_that_schedule() {
    let h = fast_home();
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let held = add_schedule(&h, "held", &[]);
    let other = add_schedule(&h, "other", &[]);
    wait_until(LONG, "both ran", || {
        let r = records(&h);
        completed(&r.of_schedule(&held)) >= 1 && completed(&r.of_schedule(&other)) >= 1
    });
    h.cortex_ok(&["schedule", "pause", &held, "--reason", "maintenance"]);
    let s = schedule(&h, &held);
    assert_eq!(s["state"], "paused");
    assert!(s["next_run_at"].is_null(), "a paused schedule has no cursor: {s}");
    let held_count = records(&h).of_schedule(&held).len();
    let other_count = records(&h).of_schedule(&other).len();
    wait_until(LONG, "the other schedule fires three more times", || {
        records(&h).of_schedule(&other).len() >= other_count + 3
    });
    assert_eq!(records(&h).of_schedule(&held).len(), held_count, "a paused schedule fired");

    h.cortex_ok(&["schedule", "resume", &held]);
    let resumed = chrono::Utc::now();
    wait_until(LONG, "the resumed schedule fires again", || {
        records(&h).of_schedule(&held).values().filter(|s| *s == "completed").count() > held_count
    });
    // Resuming starts from the next slot: the paused interval is not caught up.
    let new: Vec<i64> =
        slots(&records(&h).of_schedule(&held), &held).into_iter().filter(|&s| s < resumed.timestamp() - 1).collect();
    assert_eq!(new.len(), held_count, "slots before the resume were run: {new:?}");
    assert!(
        !h.events_of("schedule_misfire_skipped").iter().any(|e| e["data"]["schedule_id"] == held.as_str()),
        "a per-schedule resume is not a misfire"
    );
}

/// Kills of the coordinator while an every-1s schedule fires (`E2E_SCHED_KILLS` for a longer run).
fn kills() -> usize {
    std::env::var("E2E_SCHED_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

#[test]
fn sigkill_of_the_coordinator_while_firing_neither_duplicates_nor_loses_a_slot() {
    let h = fast_home();
    let _worker = start(&h, "worker");
    let coord = start(&h, "coordinator");
    let sid = add_schedule(&h, "killed", &["--misfire", "run_all", "--max-instances", "100"]);
    let first = cursor(&h, &sid).unwrap();
    wait_until(LONG, "first run", || !records(&h).of_schedule(&sid).is_empty());
    let mut coord = Some(coord);
    let mut window_hits = 0;
    for i in 0..kills() {
        if i % 2 == 0 {
            // At the moment of firing: right after the slot's task is appended to the intake,
            // before the schedule's cursor is written (the window the slot's fixed id covers).
            kill_point_intake_append(&h);
        } else {
            // At any point of the firing second.
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..1100)));
        }
        coord.take().unwrap().kill9();
        // Killed between the enqueue and the cursor write: the cursor's slot is already a task.
        if let Some(c) = cursor(&h, &sid)
            && records(&h).of_schedule(&sid).contains_key(&format!("sched-{sid}-{}", c.timestamp()))
        {
            window_hits += 1;
        }
        if i % 3 == 0 {
            // Sometimes stay down across a slot: the restart catches it up (run_all).
            std::thread::sleep(Duration::from_millis(1200));
        }
        coord = Some(start(&h, "coordinator"));
    }
    // The last coordinator catches up. Every slot before the cursor it records was enqueued
    // before the cursor moved past it; wait until they have all run, then stop it.
    let up_at = chrono::Utc::now() + chrono::Duration::seconds(1);
    wait_until(LONG, "the cursor passes the last restart", || cursor(&h, &sid).is_some_and(|c| c > up_at));
    let final_cursor = cursor(&h, &sid).unwrap();
    let before_cursor = |id: &String| slot_of(id, &sid).is_some_and(|s| s < final_cursor.timestamp());
    wait_until(LONG, "slots before the final cursor completed", || {
        records(&h).of_schedule(&sid).iter().filter(|(id, _)| before_cursor(id)).all(|(_, s)| s == "completed")
    });
    let mut coord = coord.unwrap();
    assert!(terminate(&mut coord.child).success());
    let r = records(&h);

    // At most once: in the queue + archive together, and in the intake (live + folded). A task
    // may have two archive lines (the coordinator killed between its archive append and the
    // queue write archives it again; readers take the last line), so the archive counts by id.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let archived: std::collections::HashSet<&str> = r.archive.iter().filter_map(|t| t["task_id"].as_str()).collect();
    for id in r.queue.iter().filter_map(|t| t["task_id"].as_str()).chain(archived) {
        *seen.entry(id.to_string()).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "tasks recorded twice in queue + archive: {dup:?}");
    let mut in_intake: HashMap<String, usize> = HashMap::new();
    for t in &r.intake {
        *in_intake.entry(t["task_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let dup: Vec<_> = in_intake.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "tasks appended twice to the intake: {dup:?}");

    // No slot before the final cursor is missing unless an event explains it.
    let got = slots(&r.of_schedule(&sid), &sid);
    let explained = explained_slots(&h, &sid);
    let missing: Vec<i64> =
        (first.timestamp()..final_cursor.timestamp()).filter(|s| !got.contains(s) && !explained.contains(s)).collect();
    assert!(missing.is_empty(), "slots lost without an event: {missing:?} (have {got:?})");
    eprintln!(
        "{} kills ({window_hits} between an enqueue and its cursor write), {} slots fired exactly once, \
         {} explained by events",
        kills(),
        got.len(),
        explained.len()
    );
}

/// Returns as soon as a line is appended to the intake (busy-polling its size; the append is
/// followed by the cursor write within milliseconds).
fn kill_point_intake_append(h: &TestHome) {
    let path = h.join("coordination/task-intake.jsonl");
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while size() <= before && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

fn slot_of(task_id: &str, sid: &str) -> Option<i64> {
    task_id.strip_prefix(&format!("sched-{sid}-"))?.parse().ok()
}

/// Slots that events say were deliberately not run: misfire drops (first_due..last_due, the
/// latest excluded unless capped) and max_instances skips.
fn explained_slots(h: &TestHome, sid: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for e in h.events() {
        if e["data"]["schedule_id"] != sid {
            continue;
        }
        match e["type"].as_str() {
            Some("schedule_misfire_skipped" | "schedule_misfire_capped") => {
                let first = e["data"]["first_due"].as_str().and_then(parse_ts).unwrap();
                let last = e["data"]["last_due"].as_str().and_then(parse_ts).unwrap();
                out.extend(first.timestamp()..=last.timestamp());
            }
            Some("schedule_skipped_max_instances") => {
                for s in e["data"]["slots"].as_array().into_iter().flatten() {
                    out.extend(s.as_str().and_then(parse_ts).map(|t| t.timestamp()));
                }
            }
            _ => {}
        }
    }
    out
}
