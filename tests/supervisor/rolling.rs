//! `cortex restart --rolling`: one daemon at a time, all but one always running, and a stop at
//! the first daemon that fails readiness, leaving the rest running.
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use cortex::base::daemon_name::NAMES;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Samples how many daemons run (PID file locked) until stopped; returns the fewest seen and the
/// number of samples.
fn monitor(f: &Fleet) -> (Arc<AtomicBool>, std::thread::JoinHandle<(usize, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let home = f.home();
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let (mut fewest, mut samples) = (usize::MAX, 0);
        while !flag.load(Ordering::Relaxed) {
            let running = NAMES
                .iter()
                .filter(|d| {
                    matches!(
                        cortex::store::pidfile::status(&home, cortex::base::daemon_name::Daemon::parse(d).unwrap()),
                        Ok(cortex::store::pidfile::PidStatus::Running(_))
                    )
                })
                .count();
            fewest = fewest.min(running);
            samples += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (fewest, samples)
    });
    (stop, handle)
}

#[test]
fn rolling_restart_keeps_all_but_one_running_and_stops_at_a_daemon_that_fails_readiness() {
    let f = Fleet::new("[supervisor]\nstabilization_seconds = 0.3\nready_timeout_seconds = 60.0\n");
    f.ok(&["start"]);
    let before: Vec<u32> = NAMES.iter().map(|d| f.ready(d).unwrap()).collect();

    let (stop, handle) = monitor(&f);
    let out = f.ok(&["restart", "--rolling"]);
    stop.store(true, Ordering::Relaxed);
    let (fewest, samples) = handle.join().unwrap();
    assert!(samples > 50, "only {samples} samples");
    assert!(fewest >= NAMES.len() - 1, "at some instant only {fewest} daemons ran:\n{out}");
    assert!(out.contains("Rolling restart complete (10 daemons)"), "{out}");
    let after: Vec<u32> = NAMES.iter().map(|d| f.ready(d).unwrap()).collect();
    for (i, d) in NAMES.iter().enumerate() {
        assert_ne!(before[i], after[i], "{d} was not restarted");
        assert!(out.contains(&format!("{d}: restarted (PID {} -> {})", before[i], after[i])), "{out}");
    }
    // Order: worker first, api last.
    assert!(out.find("worker: restarted").unwrap() < out.find("api: restarted").unwrap());

    // metrics will not become ready: the restart stops there.
    let toml = std::fs::read_to_string(f.h.join("cortex.toml")).unwrap();
    std::fs::write(
        f.h.join("cortex.toml"),
        toml.replace("ready_timeout_seconds = 60.0", "ready_timeout_seconds = 4.0"),
    )
    .unwrap();
    let (stop, handle) = monitor(&f);
    let out = f.run_env(&["restart", "--rolling"], &[("CORTEX_TEST_NEVER_READY", "metrics")]);
    stop.store(true, Ordering::Relaxed);
    let (fewest, _) = handle.join().unwrap();
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(fewest >= NAMES.len() - 1, "at some instant only {fewest} daemons ran:\n{s}");
    assert!(s.contains("metrics: restart FAILED: not ready after 4.0s"), "{s}");
    assert!(
        s.contains("not restarted (still running): coordinator, integration, failure-pattern, auto-fix, notify, api"),
        "{s}"
    );
    let now: Vec<Option<u32>> = NAMES.iter().map(|d| f.pid(d)).collect();
    for (i, d) in NAMES.iter().enumerate() {
        match *d {
            "worker" | "pm" | "heartbeat" => assert_ne!(now[i], Some(after[i]), "{d} should have been restarted"),
            "metrics" => assert_eq!(now[i], None, "metrics failed readiness and is stopped"),
            _ => assert_eq!(now[i], Some(after[i]), "{d} must not be touched after the failure"),
        }
    }
}
