//! `cortex run`: the foreground supervisor for systemd. Starts every daemon as its child, tells
//! the notify socket READY=1 and WATCHDOG=1, restarts a killed daemon (pm steps aside), and on
//! SIGTERM stops them all.
mod common;
mod supervisor_support;
use common::*;
use cortex::daemon::DAEMONS;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;
use supervisor_support::*;

#[test]
fn cortex_run_notifies_systemd_restarts_children_and_stops_all_on_sigterm() {
    let f = Fleet::new("[supervisor]\nbackoff_initial_seconds = 0.2\n");
    let sock_path = f.h.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // A stop intent from before is void once `cortex run` starts.
    f.ok(&["stop", "metrics"]);
    let mut run = f
        .cmd()
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let recv = |buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification from cortex run");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv(&mut buf);
    assert!(first.contains("READY=1"), "{first}");
    for d in DAEMONS {
        assert!(f.ready(d).is_some(), "{d} is not ready after READY=1");
    }
    assert!(recv(&mut buf).contains("WATCHDOG=1"));
    let status = text(&f.run(&["status"]).stdout);
    assert!(status.contains("Supervisor: cortex run"), "{status}");

    // A killed daemon is restarted by cortex run (its child: exact cause), not by pm.
    let run_pid = run.id();
    wait_until(Duration::from_secs(60), "cortex run reaps heartbeat", || watching(run_pid, "heartbeat"));
    let old = f.ready("heartbeat").unwrap();
    sigkill(old);
    f.wait_ready_other("heartbeat", Some(old), Duration::from_secs(60));
    wait_until(Duration::from_secs(5), "restart event", || !f.h.events_of("daemon_restarted").is_empty());
    let evs = f.h.events_of("daemon_restarted");
    assert_eq!(evs.len(), 1, "exactly one supervisor restarted it: {evs:?}");
    assert_eq!(evs[0]["data"]["by"], "cortex run");
    assert_eq!(evs[0]["data"]["cause"], "signal 9 (SIGKILL)");

    let pids: Vec<u32> = DAEMONS.iter().map(|d| f.pid(d).unwrap()).collect();
    let st = terminate(&mut run);
    assert!(st.success(), "{st}");
    for p in pids {
        assert!(gone(p), "PID {p} survived cortex run's shutdown");
    }
    let mut saw_stopping = false;
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        saw_stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    assert!(saw_stopping);
    let out = f.run(&["status"]);
    assert!(text(&out.stdout).contains("worker: STOPPED"), "{}", text(&out.stdout));
}
