//! `cortex task logs`: a task's output by task id, followed live while it runs and across a
//! retry, ending by itself when the task is final; the attempts and stderr read afterwards; task
//! output with terminal escapes printed escaped.
use crate::support::task::*;
use crate::support::*;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child killed (and reaped) when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines a child prints, read by a thread of their own.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line equal to `want`; returns the lines seen up to it.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l == want;
                seen.push(l);
                if hit {
                    return;
                }
            }
            Err(_) => panic!("no line {want:?} from `cortex task logs -f` within {LONG:?}; saw {seen:#?}"),
        }
    }
}

#[test]
fn follows_a_running_task_across_its_retry_and_ends_when_it_is_final() {
    let h = fast_home();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let gate = h.join("gate");
    std::fs::create_dir(&gate).unwrap();
    // Each attempt says hello, waits for the test to open its gate, and only the second succeeds.
    let script = format!(
        "echo \"attempt $CORTEX_ATTEMPT start\"; printf 'evil \\033[2J here\\n'; echo oops-$CORTEX_ATTEMPT >&2; \
         while [ ! -e {g}/$CORTEX_ATTEMPT ]; do sleep 0.05; done; printf 'no newline at the end'; \
         [ $CORTEX_ATTEMPT -ge 2 ]",
        g = gate.display()
    );
    let id = add(&h, &["--description", "logs", "--max-attempts", "2", "--", "sh", "-c", &script]);
    let mut follower = Killed(h.cmd().args(["task", "logs", &id, "-f"]).stdout(Stdio::piped()).spawn().unwrap());
    let rx = lines_of(&mut follower.0);
    let mut seen = Vec::new();
    // The first attempt's lines show while it still runs (it waits for its gate).
    expect_line(&rx, "attempt 1 start", &mut seen);
    expect_line(&rx, "evil \\u{1b}[2J here", &mut seen);
    assert_eq!(show(&h, &id)["status"], "in_progress");
    assert!(seen[0].starts_with("--- attempt 1 (dispatch "), "{seen:#?}");
    std::fs::write(gate.join("1"), "").unwrap();
    expect_line(&rx, "no newline at the end", &mut seen);
    expect_line(&rx, "attempt 2 start", &mut seen);
    let sep =
        seen.iter().position(|l| l.starts_with("--- attempt 2 (dispatch ")).expect("a separator before attempt 2");
    assert!(sep > seen.iter().position(|l| l == "no newline at the end").unwrap(), "{seen:#?}");
    std::fs::write(gate.join("2"), "").unwrap();
    expect_line(&rx, "no newline at the end", &mut seen);
    // The task is final: the follower ends by itself.
    let mut status = None;
    wait_until(LONG, "`cortex task logs -f` ends after the task completed", || {
        status = follower.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    assert_eq!(show(&h, &id)["status"], "completed");
    assert!(rx.recv_timeout(Duration::from_secs(5)).is_err(), "nothing after the end");

    // Read afterwards: the latest attempt by default, any attempt, its standard error.
    let latest = h.cortex_ok(&["task", "logs", &id]);
    assert_eq!(latest, "attempt 2 start\nevil \\u{1b}[2J here\nno newline at the end\n");
    let first = h.cortex_ok(&["task", "logs", &id, "--attempt", "1"]);
    assert!(first.starts_with("attempt 1 start\n"), "{first}");
    assert_eq!(h.cortex_ok(&["task", "logs", &id, "--attempt", "1", "--stderr"]), "oops-1\n");
    let out = h.cortex(&["task", "logs", &id, "--attempt", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 2 attempt(s)"), "{out:?}");
    let out = h.cortex(&["task", "logs", "task-nonesuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task task-nonesuch"), "{out:?}");
}

/// A follower started before the task runs waits for its first attempt; one for a task already
/// final prints its log and returns at once.
#[test]
fn waits_for_a_queued_task_and_returns_at_once_for_a_finished_one() {
    let h = fast_home();
    let id = add(&h, &["--description", "later", "--", "sh", "-c", "echo hello from later"]);
    let out = h.cortex(&["task", "logs", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not run yet (queued)"), "{out:?}");
    let mut follower = Killed(h.cmd().args(["task", "logs", &id, "--follow"]).stdout(Stdio::piped()).spawn().unwrap());
    let rx = lines_of(&mut follower.0);
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let mut seen = Vec::new();
    expect_line(&rx, "hello from later", &mut seen);
    wait_until(LONG, "the follower ends with the task", || follower.0.try_wait().unwrap().is_some());
    wait_status(&h, &id, "completed");
    let started = Instant::now();
    let again = h.cortex_ok(&["task", "logs", &id, "-f"]);
    assert!(again.ends_with("hello from later\n"), "{again}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A 50 MB log (and a 3 MB line without a newline) is printed in full while `cortex task logs`
/// keeps its memory bounded (it read the whole log into memory before).
#[test]
fn a_large_log_is_printed_in_full_with_bounded_memory() {
    use std::io::Read;
    let h = fast_home();
    let script = "yes 0123456789abcdef | head -c 50000000; head -c 3000000 /dev/zero | tr '\\0' a";
    let id = add(&h, &["--description", "large", "--", "sh", "-c", script]);
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    wait_status(&h, &id, "completed");
    let mut child = Killed(h.cmd().args(["task", "logs", &id]).stdout(Stdio::piped()).spawn().unwrap());
    let pid = child.0.id();
    let mut stdout = child.0.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        let (mut total, mut longest, mut run) = (0usize, 0usize, 0usize);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                return (total, longest);
            }
            for b in &buf[..n] {
                run = if *b == b'\n' { 0 } else { run + 1 };
                longest = longest.max(run);
            }
            total += n;
        }
    });
    // The high-water mark of its resident memory, as late as it can be read.
    let mut hwm_kb = 0u64;
    while child.0.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            hwm_kb = hwm_kb.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (total, longest) = counter.join().unwrap();
    assert!(child.0.wait().unwrap().success());
    // Every byte, the last line in pieces of at most 1 MiB (each piece ends with a newline).
    assert_eq!(total, 50_000_000 + 3_000_000 + 3, "all of it");
    assert!(longest <= 1024 * 1024, "a long line is printed in pieces: {longest}");
    assert!(hwm_kb > 0 && hwm_kb < 40 * 1024, "bounded memory: VmHWM {hwm_kb} kB");
}
