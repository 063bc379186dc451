//! Stopping the fleet around a restore or a reset (`--stop`): pm is stopped first, alone, and
//! every stop is recorded as asked for, so pm neither reports the other daemons' exits as crashes
//! nor restarts one in the middle of the restore (which then failed: "not signalling PID n as
//! coordinator: it does not hold the lock", found by the emergency-recovery runbook's test).
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use std::time::Duration;

#[test]
fn a_restore_with_stop_stops_pm_first_and_nothing_is_reported_as_a_crash() {
    let f = Fleet::new("[supervisor]\nbackoff_initial_seconds = 0.05\n");
    f.ok(&["start"]);
    let pm = f.ready("pm").expect("pm runs");
    for d in ["api", "coordinator", "heartbeat", "metrics"] {
        wait_until(Duration::from_secs(60), &format!("pm watches {d}"), || watching(pm, d));
    }
    f.ok(&["backup"]);
    for round in 0..3 {
        let out = f.run(&["restore", "--latest", "--stop", "--yes"]);
        assert!(out.status.success(), "restore --stop, round {round}: {}{}", text(&out.stdout), text(&out.stderr));
        let log = std::fs::read_to_string(f.h.join("agents/logs/system/pm-daemon.log")).unwrap_or_default();
        let exited = f.h.events_of("daemon_exited");
        assert!(
            exited.is_empty() && !log.contains("went down"),
            "round {round}: pm took the restore's stops for crashes: {exited:?}\npm's log:\n{log}"
        );
        let pm = f.ready("pm").expect("pm started again");
        wait_until(Duration::from_secs(60), "pm watches the api again", || watching(pm, "api"));
    }
}
