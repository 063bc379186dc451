//! The heartbeat daemon's pass, driven by a manual clock over real process groups and real files
//! in a temporary home: thresholds at 65/125/305 s, events once per transition, sequence and
//! missed_count, the false-positive guard, the zombie pipeline (with grandchildren and SIGKILL
//! escalation), a process gone without a recorded exit, mass zombification and the rate limit.

use crate::support::health::*;
use crate::support::*;
use chrono::Duration;
use cortex::base::clock::{Clock, ManualClock, format_ts};
use cortex::daemons::heartbeat::{Monitor, beat};
use cortex::store::Store;
use cortex::store::home::{Home, SpecBucket};
use std::sync::Arc;

struct Rig {
    _t: TestHome,
    home: Home,
    store: Store,
    clock: ManualClock,
    t0: cortex::base::clock::Timestamp,
    monitor: Monitor,
}

impl Rig {
    fn new(policy: serde_json::Value) -> Rig {
        let t = TestHome::new();
        let home = Home::at(t.path());
        patch_json(&home.coord("config/heartbeat-policy.json"), policy);
        let t0 = chrono::Utc::now();
        let clock = ManualClock::new(t0);
        let monitor = Monitor::new(Arc::new(clock.clone()));
        Rig { store: Store::new(home.clone()).with_source("heartbeat"), home, clock, t0, monitor, _t: t }
    }

    fn at(&mut self, secs: f64) -> cortex::daemons::heartbeat::PassReport {
        self.clock.set(self.t0 + Duration::milliseconds((secs * 1000.0) as i64));
        self.monitor.pass(&self.store, 0.0).expect("pass")
    }

    fn count(&self, event_type: &str) -> usize {
        self._t.events_of(event_type).len()
    }

    fn hb(&self, id: &str) -> serde_json::Value {
        read_spec(&self.home, SpecBucket::Active, id).expect("active spec")["heartbeat"].clone()
    }

    fn add(&self, id: &str, group: &Group, budget: u64) {
        write_spec(
            &self.home,
            SpecBucket::Active,
            &running_spec(id, &format!("t-{id}"), "scan-worker", group, self.t0, budget),
        );
    }
}

#[test]
fn thresholds_sequence_and_false_positive_guard() {
    let mut rig = Rig::new(serde_json::json!({"recheck_delay_seconds": 2}));
    let g = Group::start("tail -f /dev/null");
    rig.add("d1", &g, 1000);
    let hb_file = rig.home.heartbeat_file("d1");
    beat::record(&hb_file, Some(100), Some("working".into()), rig.t0).unwrap();

    let r = rig.at(0.0);
    // Deadline-driven: the next pass is due just after the 60 s warning threshold, not sooner
    // than the sampling interval allows.
    let next = r.next_pass.unwrap();
    assert!((next - rig.t0).num_milliseconds() <= 30_000, "sampling every 30 s: {next}");
    assert_eq!(rig.hb("d1")["sequence"], 1);
    assert_eq!(rig.hb("d1")["liveness"], "ok");
    assert_eq!(rig.hb("d1")["health"]["tokens_used"], 100);
    assert_eq!(rig.hb("d1")["health"]["tokens_remaining"], 900);

    rig.at(65.0);
    assert_eq!(rig.count("heartbeat_warning"), 1);
    assert_eq!(rig.hb("d1")["liveness"], "warning");
    assert_eq!(rig.hb("d1")["missed_count"], 2);
    rig.at(70.0);
    rig.at(119.0);
    assert_eq!(rig.count("heartbeat_warning"), 1, "once per transition, not once per check");
    assert_eq!(rig.count("heartbeat_critical"), 0);

    let r = rig.at(125.0);
    assert_eq!(rig.count("heartbeat_critical"), 1);
    assert_eq!(rig.hb("d1")["liveness"], "critical");
    // Next deadline: the zombie threshold (300 s after the last heartbeat), or a sample sooner.
    assert!(r.next_pass.unwrap() <= rig.t0 + Duration::seconds(301));

    let r = rig.at(305.0);
    assert_eq!(rig.count("worker_presumed_dead"), 1);
    assert_eq!(r.suspects, vec!["d1".to_string()], "presumed dead: re-check first, kill nothing yet");
    assert_eq!(r.next_pass.unwrap(), rig.t0 + Duration::milliseconds(307_000));
    assert!(g.members().contains(&g.pid));

    // A heartbeat arrives during the re-check delay: it saves the dispatch.
    beat::record(&hb_file, None, None, rig.t0 + Duration::seconds(306)).unwrap();
    let r = rig.at(307.0);
    assert!(r.suspects.is_empty() && r.cleaned.is_empty(), "{r:?}");
    assert_eq!(rig.count("heartbeat_resumed"), 1);
    assert_eq!(rig.count("zombie_detected"), 0);
    let hb = rig.hb("d1");
    assert_eq!(hb["sequence"], 2, "sequence increments");
    assert_eq!(hb["missed_count"], 0, "missed_count resets");
    assert_eq!(hb["liveness"], "ok");
    assert!(cortex::base::procfs::is_alive(g.pid, g.ticks));
}

#[test]
fn alive_without_heartbeats_counts_unless_required() {
    let mut rig = Rig::new(serde_json::json!({"require_heartbeat": false}));
    let g = Group::start("tail -f /dev/null");
    rig.add("quiet", &g, 0);
    rig.at(1000.0);
    assert_eq!(rig.hb("quiet")["liveness"], "ok");
    assert_eq!(rig.count("heartbeat_warning"), 0);
}

#[test]
fn hung_group_is_cleaned_up_with_its_grandchildren() {
    let mut rig =
        Rig::new(serde_json::json!({"require_heartbeat": true, "recheck_delay_seconds": 2, "grace_seconds": 3}));
    let mut g = Group::start("tail -f /dev/null & tail -f /dev/null");
    wait_until(std::time::Duration::from_secs(5), "sh and both sleeps", || g.members().len() == 3);
    let members = g.members();
    rig.add("hung", &g, 5000);
    write_budget(&rig.home, 100_000, 0, &[("hung", 5000), ("other", 1000)]);
    std::fs::create_dir_all(rig.home.worker_logs()).unwrap();
    std::fs::write(rig.home.worker_logs().join("hung.out"), "last words\n").unwrap();
    std::fs::create_dir_all(rig.home.dispatch_runtime_dir()).unwrap();
    std::fs::write(rig.home.usage_file("hung"), r#"{"tokens_used": 1200}"#).unwrap();

    let r = rig.at(301.0);
    assert_eq!(r.suspects, vec!["hung".to_string()]);
    let r = rig.at(303.0);
    assert_eq!(r.cleaned, vec!["hung".to_string()]);
    g.reap();
    for pid in &members {
        assert!(cortex::base::procfs::stat(*pid).is_none_or(|s| !s.is_running()), "process {pid} survived");
    }
    assert!(read_spec(&rig.home, SpecBucket::Active, "hung").is_none());
    let z = read_spec(&rig.home, SpecBucket::Zombie, "hung").expect("zombie spec");
    assert_eq!(z["status"], "zombie");
    assert_eq!(z["reason"], "no_heartbeat");
    assert_eq!(z["tokens_used"], 1200);
    let c = &z["heartbeat"]["zombie_cleanup"];
    assert_eq!(c["signal"], "SIGTERM");
    assert_eq!(c["processes_stopped"], 3);
    assert!(c["completed_at"].is_string());
    let budget = read_budget(&rig.home);
    assert!(!budget.reservations.contains_key("hung"));
    assert_eq!(budget.used, 1200, "used tokens stay used");
    assert_eq!(budget.available, 100_000 - 1200 - 1000, "unused tokens returned");
    let day = (rig.t0 + Duration::seconds(303)).format("%Y-%m-%d").to_string();
    let kept = rig.home.zombie_logs(&day).join("hung.out");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "last words\n");
    assert_eq!(rig.count("zombie_detected"), 1);
    assert_eq!(rig.count("zombie_cleanup_completed"), 1);
    // A later pass does nothing more.
    rig.at(400.0);
    assert_eq!(rig.count("zombie_detected"), 1);
}

#[test]
fn a_group_ignoring_sigterm_is_killed_after_the_grace() {
    let mut rig =
        Rig::new(serde_json::json!({"require_heartbeat": true, "recheck_delay_seconds": 0, "grace_seconds": 0.5}));
    let mut g = Group::start("trap '' TERM; tail -f /dev/null & tail -f /dev/null");
    wait_until(std::time::Duration::from_secs(5), "sh and both sleeps", || g.members().len() == 3);
    rig.add("stubborn", &g, 0);
    rig.at(301.0);
    let r = rig.at(301.5);
    assert_eq!(r.cleaned, vec!["stubborn".to_string()]);
    g.reap();
    assert!(g.members().is_empty());
    let z = read_spec(&rig.home, SpecBucket::Zombie, "stubborn").unwrap();
    assert_eq!(z["heartbeat"]["zombie_cleanup"]["signal"], "SIGKILL");
}

#[test]
fn a_process_gone_without_a_recorded_exit_is_a_zombie() {
    let mut rig = Rig::new(serde_json::json!({"recheck_delay_seconds": 1}));
    let mut g = Group::start("exit 0");
    g.child.wait().unwrap();
    rig.add("gone", &g, 0);
    let r = rig.at(1.0);
    assert_eq!(r.suspects, vec!["gone".to_string()]);
    let r = rig.at(2.0);
    assert_eq!(r.cleaned, vec!["gone".to_string()]);
    let z = read_spec(&rig.home, SpecBucket::Zombie, "gone").unwrap();
    assert_eq!(z["reason"], "process_gone");
    assert!(z["heartbeat"]["zombie_cleanup"]["signal"].is_null());
}

#[test]
fn mass_zombification_raises_one_critical_event_and_kills_nothing() {
    let mut rig = Rig::new(
        serde_json::json!({"require_heartbeat": true, "recheck_delay_seconds": 1, "mass_zombie_threshold": 5}),
    );
    let groups: Vec<Group> = (0..5).map(|_| Group::start("tail -f /dev/null")).collect();
    for (i, g) in groups.iter().enumerate() {
        rig.add(&format!("m{i}"), g, 0);
    }
    rig.at(301.0);
    let r = rig.at(302.0);
    assert!(r.mass_alert && r.cleaned.is_empty());
    rig.at(310.0);
    rig.at(400.0);
    let crit = rig._t.events_of("mass_zombification_detected");
    assert_eq!(crit.len(), 1);
    assert_eq!(crit[0]["severity"], "critical");
    assert_eq!(rig.count("zombie_detected"), 0);
    for g in &groups {
        assert!(cortex::base::procfs::is_alive(g.pid, g.ticks));
    }
}

#[test]
fn cleanups_are_rate_limited_per_minute() {
    let mut rig = Rig::new(serde_json::json!({
        "require_heartbeat": true, "recheck_delay_seconds": 0, "grace_seconds": 1,
        "max_cleanups_per_minute": 2, "mass_zombie_threshold": 10
    }));
    let groups: Vec<Group> = (0..3).map(|_| Group::start("tail -f /dev/null")).collect();
    for (i, g) in groups.iter().enumerate() {
        rig.add(&format!("r{i}"), g, 0);
    }
    rig.at(301.0);
    let r = rig.at(301.1);
    assert_eq!(r.cleaned.len(), 2);
    assert_eq!(rig.count("zombie_cleanup_deferred"), 1);
    let next = r.next_pass.unwrap();
    assert!(next <= rig.t0 + Duration::milliseconds(361_100), "wakes when the window frees: {next}");
    let r = rig.at(330.0);
    assert!(r.cleaned.is_empty());
    let r = rig.at(361.2);
    assert_eq!(r.cleaned.len(), 1);
    assert_eq!(rig.count("zombie_cleanup_deferred"), 1);
    assert!(rig.clock.now() > rig.t0);
}

#[test]
fn a_daemon_whose_mark_stops_is_reported_hung_once_then_recovered() {
    let mut rig = Rig::new(serde_json::json!({}));
    let home = rig.home.clone();
    // Stand in for a running metrics daemon: hold its PID file, write its mark by hand.
    let _pid = cortex::store::pidfile::PidFile::acquire(
        &home,
        cortex::base::daemon_name::Daemon::Metrics,
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let mark = |at: cortex::base::clock::Timestamp| {
        let m = serde_json::json!({"name": "metrics", "pid": std::process::id(), "version": "t",
            "started_at": format_ts(at), "ready_at": null, "heartbeat_at": format_ts(at), "last_loop_at": format_ts(at)});
        std::fs::write(home.daemon_mark(cortex::base::daemon_name::Daemon::Metrics), m.to_string()).unwrap();
    };
    mark(rig.t0);
    rig.clock.set(rig.t0 + Duration::seconds(30));
    let r = rig.monitor.pass(&rig.store, 60.0).unwrap();
    assert!(r.next_pass.unwrap() <= rig.t0 + Duration::seconds(61), "wakes when the mark would be late");
    assert_eq!(rig.count("daemon_hung"), 0);
    rig.clock.set(rig.t0 + Duration::seconds(61));
    rig.monitor.pass(&rig.store, 60.0).unwrap();
    rig.clock.set(rig.t0 + Duration::seconds(90));
    rig.monitor.pass(&rig.store, 60.0).unwrap();
    let hung = rig._t.events_of("daemon_hung");
    assert_eq!(hung.len(), 1);
    assert_eq!(hung[0]["data"]["daemon"], "metrics");
    mark(rig.t0 + Duration::seconds(90));
    rig.monitor.pass(&rig.store, 60.0).unwrap();
    assert_eq!(rig.count("daemon_recovered"), 1);
}
