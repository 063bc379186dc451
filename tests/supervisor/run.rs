//! `cortex run`: the foreground supervisor for systemd. Starts every daemon as its child, tells
//! the notify socket READY=1 and WATCHDOG=1, restarts a killed daemon (pm steps aside), and on
//! SIGTERM stops them all.
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use cortex::base::daemon_name::NAMES;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

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
    for d in NAMES {
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

    // Its PID file removed by hand: written again, and pm (which tells a supervising `cortex
    // run` by that file's lock) still steps aside.
    let pid_file = f.h.join("run/supervisor.pid");
    std::fs::remove_file(&pid_file).unwrap();
    wait_until(Duration::from_secs(10), "cortex run writes its PID file again", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == run_pid.to_string())
    });
    wait_until(Duration::from_secs(60), "cortex run reaps metrics", || watching(run_pid, "metrics"));
    let old = f.ready("metrics").unwrap();
    sigkill(old);
    f.wait_ready_other("metrics", Some(old), Duration::from_secs(60));
    wait_until(Duration::from_secs(5), "restart event", || f.h.events_of("daemon_restarted").len() >= 2);
    let evs = f.h.events_of("daemon_restarted");
    assert_eq!(evs.len(), 2, "exactly one supervisor restarted it: {evs:?}");
    assert_eq!(evs[1]["data"]["by"], "cortex run");

    let pids: Vec<u32> = NAMES.iter().map(|d| f.pid(d).unwrap()).collect();
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

/// `cortex run` under systemd or a pipe writes plain text: its diagnostics (here the warning
/// that a killed daemon went down) carry no colour codes when stderr is not a terminal.
#[test]
fn cortex_run_writes_no_colour_codes_to_a_pipe() {
    let others: Vec<String> = NAMES.iter().filter(|d| **d != "heartbeat").map(|d| format!("{d:?}")).collect();
    let f = Fleet::new(&format!(
        "[daemons]\ndisabled = [{}]\n[supervisor]\nbackoff_initial_seconds = 0.2\n",
        others.join(", ")
    ));
    let mut run = f
        .cmd()
        .arg("run")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run_pid = run.id();
    wait_until(Duration::from_secs(60), "cortex run reaps heartbeat", || watching(run_pid, "heartbeat"));
    let old = f.ready("heartbeat").unwrap();
    sigkill(old);
    f.wait_ready_other("heartbeat", Some(old), Duration::from_secs(60));
    let st = terminate(&mut run);
    assert!(st.success(), "{st}");
    let mut err = Vec::new();
    std::io::Read::read_to_end(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    let shown = text(&err);
    assert!(shown.contains("heartbeat went down"), "the warning is missing: {shown}");
    assert!(!err.contains(&0x1b), "colour codes written to a pipe: {shown:?}");
}

/// A daemon that fails to start (the API on a port already taken) says why, once, and nothing
/// about tracing: the failure is logged while its log writer still runs.
#[test]
fn a_failed_daemon_start_logs_its_error_without_writer_complaints() {
    let f = Fleet::new("");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    f.h.set_config("api", "bind", &format!("\"127.0.0.1:{port}\""));
    let out = std::process::Command::new(bin("cortex-api"))
        .arg("--home")
        .arg(f.h.path())
        .env_remove("CORTEX_API_BIND")
        .env_remove("CORTEX_HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&port.to_string()), "the error does not name the address: {err}");
    assert!(!err.contains("tracing-subscriber") && !err.contains("Unable to write"), "{err}");
    let log = std::fs::read_to_string(f.h.join("agents/logs/system/api-daemon.log")).unwrap();
    assert!(log.contains("api daemon failed") && log.contains(&port.to_string()), "{log}");
    assert!(!log.contains("tracing-subscriber"), "{log}");
    drop(taken);
}
