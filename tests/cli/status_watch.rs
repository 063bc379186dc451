//! `cortex status --watch`: the plain status printed again every interval until interrupted,
//! for terminals where `cortex top` does not fit.
use crate::support::*;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn status_watch_prints_the_status_every_interval_until_interrupted() {
    let h = TestHome::new();
    let mut child = h.cmd().args(["status", "--watch", "--interval", "200ms"]).stdout(Stdio::piped()).spawn().unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut headers = 0;
    let mut schedulers = 0;
    for line in out.lines().map_while(Result::ok) {
        headers += usize::from(line.starts_with("Every 200ms: cortex status"));
        schedulers += usize::from(line == "Scheduler: running");
        if headers == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "too slow");
    }
    // Still running after three rounds: it goes on until interrupted.
    assert!(child.try_wait().unwrap().is_none());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success());
    assert_eq!((headers, schedulers), (3, 2), "each round prints the whole status");
    let out = h.cortex(&["status", "--interval", "2s"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch"), "--interval needs --watch: {out:?}");
}
