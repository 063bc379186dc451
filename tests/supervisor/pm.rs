//! The pm daemon keeps the others alive: restart within 2 s of a SIGKILL, exponential backoff,
//! give up after the start limit, catch a hung daemon, never fight `cortex stop`.
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use std::time::{Duration, Instant};

fn wait_watched(f: &Fleet, daemon: &str) {
    let pm = f.ready("pm").expect("pm runs");
    wait_until(Duration::from_secs(60), &format!("pm watches {daemon}"), || watching(pm, daemon));
}

#[test]
fn pm_restarts_a_sigkilled_daemon_within_2s_with_default_policy() {
    let f = Fleet::new("");
    f.ok(&["start", "pm", "heartbeat"]);
    wait_watched(&f, "heartbeat");
    let old = f.ready("heartbeat").unwrap();
    let t0 = Instant::now();
    sigkill(old);
    let mut new = 0;
    wait_until(Duration::from_secs(10), "heartbeat restarted", || {
        new = f.pid("heartbeat").filter(|p| *p != old).unwrap_or(0);
        new != 0
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "restarted after {took:?}");
    f.wait_ready_other("heartbeat", Some(old), Duration::from_secs(60));
    wait_until(Duration::from_secs(5), "restart event", || !f.h.events_of("daemon_restarted").is_empty());
    let ev = &f.h.events_of("daemon_restarted")[0];
    assert_eq!(ev["data"]["daemon"], "heartbeat");
    assert_eq!(ev["data"]["old_pid"], old);
    assert!(ev["data"]["cause"].as_str().unwrap().contains("died abruptly"), "{ev}");
    let out = text(&f.run(&["status"]).stdout);
    assert!(out.contains(&format!("heartbeat: RUNNING (PID {new},")), "{out}");
    assert!(out.contains("Supervisor: pm"), "{out}");
}

#[test]
fn pm_backs_off_then_gives_up_after_the_start_limit() {
    let f = Fleet::new(
        "[supervisor]\nbackoff_initial_seconds = 0.3\nbackoff_max_seconds = 1.0\nstart_limit = 3\n\
         start_limit_window_seconds = 120\nstable_uptime_seconds = 60\n",
    );
    f.ok(&["start", "pm", "heartbeat"]);
    let mut gaps = Vec::new();
    for _ in 0..3 {
        wait_watched(&f, "heartbeat");
        let old = f.ready("heartbeat").unwrap();
        let t0 = Instant::now();
        sigkill(old);
        let mut new = 0;
        wait_until(Duration::from_secs(60), "heartbeat restarted", || {
            new = f.pid("heartbeat").filter(|p| *p != old).unwrap_or(0);
            new != 0
        });
        gaps.push(t0.elapsed());
        f.wait_ready_other("heartbeat", Some(old), Duration::from_secs(60));
    }
    // Backoff 0.3 s, 0.6 s, then the 1.0 s cap: each restart waits at least that long.
    for (gap, min) in gaps.iter().zip([0.3, 0.6, 1.0]) {
        assert!(gap.as_secs_f64() >= min, "gaps {gaps:?}");
    }
    let delays: Vec<f64> =
        f.h.events_of("daemon_exited").iter().map(|e| e["data"]["restart_in_seconds"].as_f64().unwrap()).collect();
    assert_eq!(delays, vec![0.3, 0.6, 1.0]);
    // The fourth death is beyond the start limit: FAILED and a critical event.
    wait_watched(&f, "heartbeat");
    let old = f.ready("heartbeat").unwrap();
    sigkill(old);
    wait_until(Duration::from_secs(10), "daemon_failed event", || !f.h.events_of("daemon_failed").is_empty());
    let ev = &f.h.events_of("daemon_failed")[0];
    assert_eq!(ev["severity"], "critical");
    assert!(f.h.events_of("daemon_exited")[3]["data"]["restart_in_seconds"].is_null());
    assert_eq!(ev["data"]["restarts"], 3);
    let restarts = f.h.events_of("daemon_restarted");
    assert_eq!(restarts.len(), 3);
    assert_eq!(restarts[1]["data"]["cause"], "signal 9 (SIGKILL)", "pm's own child: exact cause");
    assert!(f.pid("heartbeat").is_none());
    let out = text(&f.run(&["status"]).stdout);
    assert!(out.contains("heartbeat: FAILED (gave up after 3 restarts)"), "{out}");
    // The operator starts it again: history cleared, pm watches it again.
    f.ok(&["start", "heartbeat"]);
    let out = text(&f.run(&["status"]).stdout);
    assert!(out.contains("heartbeat: RUNNING"), "{out}");
    wait_watched(&f, "heartbeat");
    let old = f.ready("heartbeat").unwrap();
    sigkill(old);
    f.wait_ready_other("heartbeat", Some(old), Duration::from_secs(60));
}

#[test]
fn pm_leaves_an_operator_stopped_daemon_alone() {
    let f = Fleet::new("[supervisor]\nbackoff_initial_seconds = 0.1\n");
    f.ok(&["start", "pm", "heartbeat", "metrics"]);
    wait_watched(&f, "heartbeat");
    wait_watched(&f, "metrics");
    let out = f.ok(&["stop", "heartbeat"]);
    assert!(out.contains("heartbeat: stopped"), "{out}");
    // Also a daemon the operator kills right after `cortex stop` recorded the intent.
    let m = f.ready("metrics").unwrap();
    f.ok(&["stop", "metrics", "--force"]);
    wait_until(Duration::from_secs(5), "metrics gone", || gone(m));
    // pm would restart within 0.1 s; give it twenty times that.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert!(f.pid("heartbeat").is_none() && f.pid("metrics").is_none(), "pm restarted a stopped daemon");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(f.h.events_of("daemon_restarted").is_empty());
    let out = text(&f.run(&["status"]).stdout);
    assert!(out.contains("heartbeat: STOPPED (by cortex stop)"), "{out}");
    // Started again by the operator, it is supervised again.
    f.ok(&["start", "heartbeat"]);
    wait_watched(&f, "heartbeat");
    let old = f.ready("heartbeat").unwrap();
    sigkill(old);
    f.wait_ready_other("heartbeat", Some(old), Duration::from_secs(60));
}

#[test]
fn pm_restarts_a_hung_daemon() {
    let f = Fleet::new(
        "[daemons]\nheartbeat_interval_seconds = 1\n\
         [supervisor]\nhung_after_seconds = 3\nstop_timeout_seconds = 1.0\nbackoff_initial_seconds = 0.1\n",
    );
    f.ok(&["start", "pm", "metrics"]);
    wait_watched(&f, "metrics");
    let old = f.ready("metrics").unwrap();
    // Alive but frozen: it holds its PID file but stops heartbeating.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), nix::sys::signal::Signal::SIGSTOP).unwrap();
    f.wait_ready_other("metrics", Some(old), Duration::from_secs(40));
    wait_until(Duration::from_secs(5), "restart event", || !f.h.events_of("daemon_restarted").is_empty());
    let ev = &f.h.events_of("daemon_restarted")[0];
    assert!(ev["data"]["cause"].as_str().unwrap().starts_with("missed heartbeat"), "{ev}");
    assert!(gone(old));
}

/// `cortex restart` stops each daemon as `cortex stop` does, asked for: neither pm nor the event
/// log take the old instance's exit for a crash ("exited on its own (clean shutdown not asked
/// for by cortex stop)"), and pm does not restart it a second time — also when pm sees the exit
/// only after the restart is complete, and after two restarts in a row.
#[test]
fn a_restart_is_not_reported_as_an_unasked_exit() {
    let f = Fleet::new("[supervisor]\nbackoff_initial_seconds = 0.1\nstabilization_seconds = 0.3\n");
    f.ok(&["start", "pm", "heartbeat"]);
    let pm = f.ready("pm").unwrap();
    let signal = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pm as i32), s).unwrap();
    let log = || std::fs::read_to_string(f.h.join("agents/logs/system/pm-daemon.log")).unwrap_or_default();
    // pm decides on the exit of the instance it watched: asked for (the log line below), or a
    // crash (a `daemon_exited` event, written before its log line). Either ends the wait.
    let decided = |pid: u32| {
        wait_until(Duration::from_secs(30), &format!("pm decided on heartbeat PID {pid}"), || {
            log().contains(&format!("heartbeat (PID {pid}) stopped by cortex"))
                || !f.h.events_of("daemon_exited").is_empty()
        })
    };
    // One restart, then two in a row, each while pm is stopped: it sees the old instance's exit
    // only once the restarts are complete (the order a loaded machine may give: the new instance
    // already runs, its stop intent already removed).
    for restarts in [1, 2] {
        wait_watched(&f, "heartbeat");
        let watched = f.ready("heartbeat").unwrap();
        signal(nix::sys::signal::Signal::SIGSTOP);
        for _ in 0..restarts {
            let old = f.ready("heartbeat").unwrap();
            let out = f.run(&["restart", "heartbeat"]);
            assert!(text(&out.stdout).contains("heartbeat: restarted"), "{}", text(&out.stdout));
            assert_ne!(f.ready("heartbeat").unwrap(), old);
        }
        signal(nix::sys::signal::Signal::SIGCONT);
        decided(watched);
        let exited = f.h.events_of("daemon_exited");
        assert!(exited.is_empty(), "{restarts} restart(s) reported as a crash: {exited:?}\npm's log:\n{}", log());
    }
    wait_watched(&f, "heartbeat");
    assert!(f.h.events_of("daemon_restarted").is_empty(), "pm restarted it again\npm's log:\n{}", log());
    let log = log();
    assert!(!log.contains("exited on its own") && !log.contains("went down"), "{log}");
}
