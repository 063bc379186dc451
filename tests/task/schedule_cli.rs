//! `cortex schedule ...` with the real binary in temporary homes, and the exactly-once promise of
//! `schedule::fire_due` across a real SIGKILL at the moment of firing.

use crate::support::reexec::test_name;
use crate::support::*;

use cortex::Home;
use cortex::base::clock::{ManualClock, Timestamp, parse_ts};
use cortex::domain::schedule::{ScheduledRun, TaskDefaults, fire_due};
use cortex::domain::task::TaskQueue;
use cortex::store::Store;
use std::time::Duration;

fn schedules(h: &TestHome) -> Vec<serde_json::Value> {
    h.read_json("coordination/schedules.json")["schedules"].as_array().cloned().unwrap_or_default()
}

#[test]
fn add_list_show_pause_resume_run_now_remove() {
    let h = TestHome::new();
    let out = h.cortex_ok(&[
        "schedule",
        "add",
        "--name",
        "nightly-scan",
        "--cron",
        "0 3 * * 1-5",
        "--tz",
        "Europe/Berlin",
        "--misfire",
        "skip",
        "--priority",
        "high",
        "--type",
        "scan-worker",
        "--budget",
        "500",
        "--max-attempts",
        "2",
        "--",
        "/bin/sh",
        "-c",
        "echo scan",
    ]);
    assert!(out.contains("nightly-scan") && out.contains("Europe/Berlin"), "{out}");
    let s = &schedules(&h)[0];
    let id = s["schedule_id"].as_str().unwrap().to_string();
    assert_eq!(s["state"], "active");
    assert_eq!(s["cron"], "0 3 * * 1-5");
    assert_eq!(s["timezone"], "Europe/Berlin");
    assert_eq!(s["misfire_policy"], "skip");
    assert_eq!(s["max_instances"], 1);
    assert_eq!(s["task"]["command"], serde_json::json!(["/bin/sh", "-c", "echo scan"]));
    assert_eq!(s["task"]["priority"], "high");
    assert_eq!(s["task"]["budget"], 500);
    // The next run is a weekday 03:00 in Berlin (01:00 or 02:00 UTC).
    let next = parse_ts(s["next_run_at"].as_str().unwrap()).unwrap();
    assert!(next > chrono::Utc::now());
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(berlin.format("%H:%M").to_string(), "03:00");

    h.cortex_ok(&["schedule", "add", "--name", "quarter", "--every", "15m", "--", "true"]);
    let list: serde_json::Value = serde_json::from_str(&h.cortex_ok(&["schedule", "list", "--json"])).unwrap();
    let rows = list["schedules"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]["next_run_local"].as_str().unwrap().ends_with(":00 CET")
            || rows[0]["next_run_local"].as_str().unwrap().ends_with(":00 CEST")
    );
    assert_eq!(rows[1]["effective_timezone"], "UTC");
    let text = h.cortex_ok(&["schedule", "list"]);
    assert!(text.contains("NEXT RUN (ZONE)") && text.contains("nightly-scan") && text.contains("every 15m"), "{text}");

    let shown = h.cortex_ok(&["schedule", "show", "nightly-scan"]);
    assert!(shown.contains(&id) && shown.contains("At 03:00"), "{shown}");

    h.cortex_ok(&["schedule", "pause", &id, "--reason", "db upgrade"]);
    let s = &schedules(&h)[0];
    assert_eq!(s["state"], "paused");
    assert_eq!(s["reason"], "db upgrade");
    assert!(s["paused_at"].is_string() && s["paused_by"].is_string());
    assert!(s["next_run_at"].is_null());

    let req: serde_json::Value = serde_json::from_str(&h.cortex_ok(&["--json", "schedule", "run-now", &id])).unwrap();
    let task_id = req["task_id"].as_str().unwrap();
    assert!(task_id.starts_with(&format!("sched-{id}-manual-")));
    assert_eq!(schedules(&h)[0]["pending_runs"][0]["task_id"], task_id);

    h.cortex_ok(&["schedule", "resume", &id]);
    let s = &schedules(&h)[0];
    assert_eq!(s["state"], "active");
    assert!(s["next_run_at"].is_string());

    h.cortex_ok(&["schedule", "remove", "quarter"]);
    assert_eq!(schedules(&h)[1]["state"], "archived");
    assert!(schedules(&h)[1]["archived_at"].is_string());
    let list: serde_json::Value = serde_json::from_str(&h.cortex_ok(&["schedule", "list", "--json"])).unwrap();
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    // Archived: cannot run or resume.
    assert!(!h.cortex(&["schedule", "run-now", "quarter"]).status.success());
    // Unknown id: a clear refusal.
    let out = h.cortex(&["schedule", "pause", "sch-nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no schedule with id or name \"sch-nope\""));

    for t in ["schedule_added", "schedule_paused", "schedule_resumed", "schedule_run_requested", "schedule_removed"] {
        assert!(!h.events_of(t).is_empty(), "no {t} event");
    }
    assert!(h.cortex(&["validate"]).status.success());
}

#[test]
fn invalid_expressions_and_zones_are_rejected_and_nothing_is_written() {
    let h = TestHome::new();
    let before = std::fs::read(h.join("coordination/schedules.json")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--cron", "61 * * * *"], "cron:"),
        (&["--cron", "*/5 * * *"], "cron:"),
        (&["--cron", "0 0 3 * * *"], "cron:"),
        (&["--cron", "@fortnightly"], "cron:"),
        (&["--every", "15x"], "every:"),
        (&["--every", "0s"], "every:"),
        (&["--cron", "@daily", "--tz", "Mars/Olympus"], "timezone:"),
        (&["--cron", "@daily", "--every", "5m"], "cron/every:"),
        (&[], "cron/every:"),
        (&["--cron", "@daily", "--max-instances", "0"], "max_instances:"),
        (&["--cron", "@daily", "--misfire", "sometimes"], "--misfire"),
        (&["--cron", "@daily", "--type", "no-such-worker"], "worker_type:"),
    ];
    for (args, field) in cases {
        let mut all = vec!["schedule", "add", "--name", "bad"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        let out = h.cortex(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(h.join("coordination/schedules.json")).unwrap(), before);
    assert!(h.events_of("schedule_added").is_empty());
}

#[test]
fn concurrent_adds_are_all_recorded() {
    let h = TestHome::new();
    let children: Vec<_> = (0..6)
        .map(|i| {
            h.cmd()
                .args(["schedule", "add", "--name", &format!("s{i}"), "--every", "1h", "--", "true"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut names: Vec<String> = schedules(&h).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, (0..6).map(|i| format!("s{i}")).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_schedules_file_is_quarantined_with_a_clear_error() {
    let h = TestHome::new();
    std::fs::write(h.join("coordination/schedules.json"), b"{\"schedules\": [ {").unwrap();
    let out = h.cortex(&["schedule", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schedules.json") && err.contains("not valid JSON"), "{err}");
    assert!(!h.events_of("file_quarantined").is_empty());
    // Nothing overwrote it.
    assert_eq!(std::fs::read(h.join("coordination/schedules.json")).unwrap(), b"{\"schedules\": [ {");
}

const CHILD_HOME: &str = "CORTEX_TEST_FIRE_HOME";
const CHILD_AT: &str = "CORTEX_TEST_FIRE_AT";

fn enqueue_into_queue(store: &Store, run: &ScheduledRun) -> cortex::Result<()> {
    let defaults = TaskDefaults { worker_type: "scan-worker".into(), budget: 10, max_attempts: 1 };
    store.update::<TaskQueue, _>(|q| {
        if !q.tasks.iter().any(|t| t.task_id == run.task_id) {
            q.tasks.push(run.to_task(chrono::Utc::now(), &defaults));
        }
        Ok(())
    })
}

/// Run in a child process by the SIGKILL test: fires, lands the task in the queue, then hangs
/// inside `enqueue` (before schedules.json is written) until it is killed.
#[test]
#[ignore = "helper process of sigkill_at_the_moment_of_firing_yields_exactly_one_task"]
fn child_fires_and_hangs_inside_enqueue() {
    let (Ok(home), Ok(at)) = (std::env::var(CHILD_HOME), std::env::var(CHILD_AT)) else { return };
    let home = Home::at(home);
    let store = Store::new(home.clone());
    let clock = ManualClock::new(parse_ts(&at).unwrap());
    let marker = home.join("enqueued.marker");
    let _ = fire_due(&store, &clock, &mut |run| {
        enqueue_into_queue(&store, &run)?;
        std::fs::write(&marker, &run.task_id).unwrap();
        loop {
            std::thread::park();
        }
    });
}

#[test]
fn sigkill_at_the_moment_of_firing_yields_exactly_one_task() {
    let h = TestHome::new();
    h.cortex_ok(&["schedule", "add", "--name", "five", "--cron", "*/5 * * * *", "--", "true"]);
    let s = &schedules(&h)[0];
    let id = s["schedule_id"].as_str().unwrap().to_string();
    let slot: Timestamp = parse_ts(s["next_run_at"].as_str().unwrap()).unwrap();
    let at = cortex::base::clock::format_ts(slot + chrono::Duration::seconds(1));
    let before = std::fs::read(h.join("coordination/schedules.json")).unwrap();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test_name(module_path!(), "child_fires_and_hangs_inside_enqueue")])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_HOME, h.path())
        .env(CHILD_AT, &at)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The marker is created, then written: wait for its content, not just its name.
    wait_until(Duration::from_secs(20), "the child to enqueue", || {
        std::fs::read(h.join("enqueued.marker")).is_ok_and(|b| !b.is_empty())
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();

    let expected = format!("sched-{id}-{}", slot.timestamp());
    assert_eq!(std::fs::read_to_string(h.join("enqueued.marker")).unwrap(), expected);
    assert_eq!(
        std::fs::read(h.join("coordination/schedules.json")).unwrap(),
        before,
        "the cursor moved before the kill"
    );

    // The restarted coordinator's pass (same time): the slot is offered again with the same id.
    let store = Store::new(Home::at(h.path()));
    let clock = ManualClock::new(parse_ts(&at).unwrap());
    let mut offered = Vec::new();
    let next = fire_due(&store, &clock, &mut |run| {
        offered.push(run.task_id.clone());
        enqueue_into_queue(&store, &run)
    })
    .unwrap();
    assert!(offered.iter().all(|t| *t == expected), "{offered:?}");
    let q = h.queue_json();
    let ids: Vec<&str> = q["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![expected.as_str()]);
    assert_eq!(q["tasks"][0]["schedule_id"], id.as_str());
    let s = &schedules(&h)[0];
    assert_eq!(s["last_task_id"], expected.as_str());
    assert_eq!(next, Some(slot + chrono::Duration::minutes(5)));
    assert_eq!(s["next_run_at"], cortex::base::clock::format_ts(slot + chrono::Duration::minutes(5)));
    assert_eq!(h.events_of("schedule_fired").len(), 1);
}
