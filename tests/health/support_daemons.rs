//! The supporting daemons cost what concerns them (issue 19): their file watches never
//! subscribe to reads, the integration daemon validates what changed (a burst once, a read never),
//! auto-fix reads no spec for a success while every breaker is closed yet still opens and closes
//! a breaker, and a heartbeat pass reads the dispatch's own processes, not every process on the
//! host. Real daemons and real process groups in temporary homes.

use crate::support::health::*;
use crate::support::*;
use cortex::domain::task::{DispatchRecord, DispatchState};
use cortex::store::home::{Home, SpecBucket};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A daemon this test started: stopped (TERM, then KILL) even when an assertion fails first.
struct Daemon(std::process::Child);

impl Daemon {
    fn start(h: &TestHome, name: &str) -> Daemon {
        Daemon(h.spawn_daemon(name))
    }

    fn stop(mut self) {
        assert!(terminate(&mut self.0).success());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_ready(h: &TestHome, daemon: &str) {
    wait_until(WAIT, &format!("{daemon} ready"), || {
        std::fs::read(h.join(&format!("run/{daemon}.state.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|m| m["ready_at"].is_string())
    });
}

/// The masks of every inotify watch a process holds, from `/proc/<pid>/fdinfo`.
fn inotify_masks(pid: u32) -> Vec<u32> {
    let mut masks = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        for line in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            let mask = line.split_whitespace().find_map(|f| f.strip_prefix("mask:")).unwrap();
            masks.push(u32::from_str_radix(mask, 16).unwrap());
        }
    }
    masks
}

#[test]
fn no_daemon_watch_subscribes_to_opens_or_reads() {
    let h = TestHome::new();
    let names = ["integration", "auto-fix", "heartbeat", "failure-pattern", "worker", "coordinator"];
    let children: Vec<Daemon> = names.iter().map(|n| Daemon::start(&h, n)).collect();
    for n in names {
        wait_ready(&h, n);
    }
    for (n, c) in names.iter().zip(&children) {
        let masks = inotify_masks(c.0.id());
        assert!(!masks.is_empty(), "{n} watches nothing");
        for m in masks {
            // IN_ACCESS 0x1, IN_CLOSE_NOWRITE 0x10, IN_OPEN 0x20: a reader would wake the daemon.
            assert_eq!(m & cortex::base::watch::READ_BITS, 0, "{n} has a watch with mask {m:#x}");
        }
    }
    for c in children {
        c.stop();
    }
}

fn put(h: &TestHome, rel: &str, bytes: &[u8]) {
    let path = h.join(rel);
    let tmp = path.with_file_name(format!(".tmp.test.{}", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// The integration daemon's "validating a changed file" log lines (debug level), by file.
fn validations(h: &TestHome, file: &str) -> usize {
    std::fs::read_to_string(h.join("agents/logs/system/integration-daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("validating a changed file") && l.contains(file))
        .count()
}

#[test]
fn integration_validates_a_burst_once_quarantines_it_and_never_validates_on_reads() {
    let h = TestHome::new();
    h.set_config("logs", "level", "\"debug\"");
    let d = Daemon::start(&h, "integration");
    wait_ready(&h, "integration");

    // A burst of writes that ends corrupt: reported and quarantined once.
    let budget = std::fs::read(h.join("coordination/token-budget.json")).unwrap();
    for _ in 0..30 {
        put(&h, "coordination/token-budget.json", &budget);
    }
    put(&h, "coordination/token-budget.json", br#"{"total": "lots", "used": 0, "available": 0}"#);
    wait_until(WAIT, "the corrupt budget reported", || {
        h.events_of("integration_validation_failed")
            .iter()
            .any(|e| e["data"]["file"] == "coordination/token-budget.json")
    });
    // The daemon's log is written by a non-blocking appender: its line may follow the event.
    wait_until(WAIT, "the burst's validation logged", || validations(&h, "token-budget.json") >= 1);
    let burst = validations(&h, "token-budget.json");
    assert!((1..=5).contains(&burst), "31 writes in a burst cost {burst} validations");
    let copies = std::fs::read_dir(h.join("coordination/quarantine"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("coordination__token-budget.json."))
        .count();
    assert_eq!(copies, 1);

    // Reading coordination files, many times, is no change (the event log is left out: the
    // daemon's own reports append to it).
    let read = ["task-queue.json", "token-budget.json", "scheduler-state.json", "config/worker-types.json"];
    let count = || read.iter().map(|f| validations(&h, f)).sum::<usize>();
    let before = count();
    for _ in 0..50 {
        for f in read {
            let _ = std::fs::read(h.join(&format!("coordination/{f}")));
        }
    }
    // A change after the reads: once it is validated, the reads were seen (or not) too.
    put(&h, "coordination/marker.json", b"{}");
    wait_until(WAIT, "the marker validated", || validations(&h, "marker.json") == 1);
    assert_eq!(count(), before, "reads caused validations");
    d.stop();
}

fn ended_spec(id: &str, worker_type: &str, group: &Group, failure: bool) -> DispatchRecord {
    let now = cortex::base::clock::now();
    let state = if failure {
        DispatchState::Failed {
            ended_at: now,
            exit_code: Some(2),
            signal: None,
            duration_s: Some(0.1),
            error: "exit 2".into(),
        }
    } else {
        DispatchState::Completed { ended_at: now, exit_code: 0, duration_s: 0.1 }
    };
    DispatchRecord { state, ..running_spec(id, &format!("t-{id}"), worker_type, group, now, 0) }
}

/// Moves a spec into its bucket by rename, as the worker ends a dispatch (nothing opened there).
fn move_in(home: &Home, bucket: SpecBucket, spec: &DispatchRecord) {
    let stage = home.root().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let tmp = stage.join(format!("{}.json", spec.dispatch_id));
    std::fs::write(&tmp, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let to = cortex::domain::task::dispatches::spec_path(home, bucket, &spec.dispatch_id);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(&tmp, &to).unwrap();
}

fn breaker(home: &Home, worker_type: &str) -> Value {
    std::fs::read(home.coord("circuit-breakers.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map(|v| v["breakers"][worker_type].clone())
        .unwrap_or(Value::Null)
}

/// Opens of files in `dir` by anyone since the watch was set up.
fn opens(inotify: &mut inotify::Inotify) -> usize {
    let mut buffer = [0u8; 64 * 1024];
    let mut n = 0;
    while let Ok(events) = inotify.read_events(&mut buffer) {
        let batch = events.filter(|e| e.mask.contains(inotify::EventMask::OPEN) && e.name.is_some()).count();
        if batch == 0 {
            break;
        }
        n += batch;
    }
    n
}

#[test]
fn autofix_reads_no_success_while_breakers_are_closed_and_still_opens_and_closes_them() {
    let h = TestHome::new();
    let home = Home::at(h.path());
    patch_json(
        &home.coord("config/worker-restart-policy.json"),
        json!({"circuit_breaker": {"enabled": true, "failure_threshold": 3, "failure_window_seconds": 900, "reset_timeout_seconds": 2}}),
    );
    let g = Group::start("exec tail -f /dev/null");
    move_in(&home, SpecBucket::Failed, &ended_spec("f0", "w", &g, true));
    let d = Daemon::start(&h, "auto-fix");
    wait_until(WAIT, "the first failure counted", || breaker(&home, "w")["failures_in_window"] == 1);

    // Thirty successes end while every breaker is closed: auto-fix opens none of them.
    let completed = home.worker_specs(SpecBucket::Completed);
    std::fs::create_dir_all(&completed).unwrap();
    let mut inotify = inotify::Inotify::init().unwrap();
    inotify.watches().add(&completed, inotify::WatchMask::OPEN).unwrap();
    for i in 0..30 {
        move_in(&home, SpecBucket::Completed, &ended_spec(&format!("s{i}"), "w", &g, false));
    }
    // A failure after them: once it is counted, the successes were taken in (or skipped) too.
    move_in(&home, SpecBucket::Failed, &ended_spec("f1", "w", &g, true));
    wait_until(WAIT, "the second failure counted", || breaker(&home, "w")["failures_in_window"] == 2);
    assert_eq!(opens(&mut inotify), 0, "auto-fix read specs of successes while every breaker was closed");

    // The third failure opens the breaker; after the reset timeout it half-opens; a success
    // dispatched after that (the trial) closes it.
    move_in(&home, SpecBucket::Failed, &ended_spec("f2", "w", &g, true));
    wait_until(WAIT, "the breaker open", || breaker(&home, "w")["state"] == "open");
    wait_until(WAIT, "the breaker half-open", || breaker(&home, "w")["state"] == "half_open");
    move_in(&home, SpecBucket::Completed, &ended_spec("trial", "w", &g, false));
    wait_until(WAIT, "the breaker closed by the trial", || breaker(&home, "w")["state"] == "closed");
    // The file is written first, then each transition recorded, once.
    wait_until(WAIT, "circuit_breaker_closed", || h.events_of("circuit_breaker_closed").len() == 1);
    assert_eq!(h.events_of("circuit_breaker_tripped").len(), 1);
    assert_eq!(h.events_of("circuit_breaker_half_open").len(), 1);
    d.stop();
}

#[test]
fn a_heartbeat_pass_reads_the_dispatchs_processes_not_every_process() {
    use cortex::base::clock::ManualClock;
    let h = TestHome::new();
    let home = Home::at(h.path());
    let g = Group::start("sleep 100 & sleep 100 & wait");
    wait_until(Duration::from_secs(5), "sh and both sleeps", || g.members().len() == 3);
    let now = chrono::Utc::now();
    write_spec(&home, SpecBucket::Active, &running_spec("d1", "t1", "w", &g, now, 0));
    let store = cortex::store::Store::new(home.clone()).with_source("heartbeat");
    let mut monitor = cortex::daemons::heartbeat::Monitor::new(std::sync::Arc::new(ManualClock::new(now)));
    let before = cortex::base::procfs::stat_reads();
    let report = monitor.pass(&store, 0.0).expect("pass");
    let reads = cortex::base::procfs::stat_reads() - before;
    assert_eq!(report.running, 1);
    let host = cortex::base::procfs::pids().len();
    assert!(reads <= 12, "{reads} /proc/<pid>/stat reads for one dispatch of 3 processes ({host} on the host)");
    // The group's memory was still sampled from its members.
    let spec = read_spec(&home, SpecBucket::Active, "d1").unwrap();
    assert!(spec["heartbeat"]["health"]["memory_usage_mb"].as_f64().is_some_and(|m| m > 0.0), "{spec}");
    assert!(Path::new(&format!("/proc/{}", g.pid)).exists());
}
