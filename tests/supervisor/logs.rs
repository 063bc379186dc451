//! `cortex logs`: rotation while a daemon logs at full speed loses and duplicates nothing;
//! clean, archive, tail and tail -f across a rotation.
use crate::support::fleet::Fleet;
use crate::support::supervisor::*;
use crate::support::*;
use std::io::{BufRead, Read};
use std::time::{Duration, SystemTime};

/// Every `seq=N` in the metrics log and its rotated copies (plain or gzipped).
fn flood_seqs(f: &Fleet) -> (Vec<u64>, usize) {
    let dir = f.h.join("agents/logs/system");
    let mut seqs = Vec::new();
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("metrics-daemon.log") {
            continue;
        }
        files += 1;
        let mut text = String::new();
        let file = std::fs::File::open(e.path()).unwrap();
        if name.ends_with(".gz") {
            flate2::read::GzDecoder::new(file).read_to_string(&mut text).unwrap();
        } else {
            std::io::BufReader::new(file).read_to_string(&mut text).unwrap();
        }
        for line in text.lines() {
            if let Some(n) = line.split("flood line seq=").nth(1) {
                seqs.push(n.trim().parse::<u64>().unwrap_or_else(|_| panic!("torn line in {name}: {line:?}")));
            }
        }
    }
    (seqs, files)
}

#[test]
fn rotation_under_a_daemon_logging_at_full_speed_loses_no_line() {
    // The daemon also rotates itself past 2M, concurrently with `cortex logs rotate`.
    let f = Fleet::new("[logs]\nmax_size = \"2M\"\nkeep = 400\n");
    let out = f.run_env(&["start", "metrics"], &[("CORTEX_TEST_LOG_FLOOD", "metrics")]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let rotations = std::env::var("CORTEX_TEST_ROTATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let mut done = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while done < rotations {
        assert!(std::time::Instant::now() < deadline, "only {done} rotations in 120 s");
        let out = f.ok(&["logs", "rotate", "--max-size", "1", "--keep", "400"]);
        // Right after a rotation the new log may still be empty: nothing to rotate yet.
        if out.contains("nothing rotated") {
            continue;
        }
        assert!(out.contains("Rotated: metrics-daemon.log") && out.contains("metrics reopened it"), "{out}");
        done += 1;
    }
    f.ok(&["stop", "metrics"]);
    let (mut seqs, files) = flood_seqs(&f);
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "duplicated lines");
    assert!(total > 10_000, "only {total} lines were logged");
    assert_eq!(*seqs.last().unwrap(), total as u64 - 1, "lost lines: {total} distinct, max {}", seqs.last().unwrap());
    assert!(files > rotations, "{files} files");
    let gz = std::fs::read_dir(f.h.join("agents/logs/system"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".gz"))
        .count();
    assert!(gz >= rotations - 1, "rotated copies from .2 on are gzipped ({gz})");
    assert!(f.h.join("agents/logs/system/metrics-daemon.log.1").exists(), ".1 stays plain (delaycompress)");
    eprintln!("{total} lines across {files} files, {rotations} rotations by cortex logs rotate");
}

fn set_age(path: &std::path::Path, days: u64) {
    let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86400)).unwrap();
}

#[test]
fn clean_and_archive_and_keep_what_is_in_use() {
    let f = Fleet::new("");
    f.ok(&["start", "worker"]);
    let sys = f.h.join("agents/logs/system");
    let put = |name: &str, days: u64| {
        let p = sys.join(name);
        std::fs::write(&p, format!("{name}\n")).unwrap();
        set_age(&p, days);
        p
    };
    let old_gz = put("coordinator-daemon.log.3.gz", 40);
    let old_plain = put("coordinator-daemon.log.2", 20);
    let recent = put("coordinator-daemon.log.1", 5);
    let live = sys.join("worker-daemon.log");
    set_age(&live, 20);
    let out = f.ok(&["logs", "clean", "--older-than", "14d"]);
    assert!(out.contains("Removed 2 file(s)"), "{out}");
    assert!(!old_gz.exists() && !old_plain.exists());
    assert!(recent.exists(), "younger than 14 days");
    assert!(live.exists(), "a log the running worker writes is never removed");

    let gz2 = put("coordinator-daemon.log.2.gz", 1);
    let out = f.ok(&["logs", "archive"]);
    assert!(out.contains("Archived 2 rotated log(s)"), "{out}");
    assert!(!recent.exists() && !gz2.exists() && live.exists());
    let date = chrono::Local::now().format("%Y-%m-%d").to_string();
    let archive = f.h.join(&format!("archives/logs/{date}.tar.gz"));
    let mut names: Vec<String> =
        tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
    names.sort();
    assert_eq!(
        names,
        vec![format!("{date}/system/coordinator-daemon.log.1"), format!("{date}/system/coordinator-daemon.log.2.gz")]
    );
    assert!(f.ok(&["logs", "archive"]).contains("No rotated logs to archive"));
}

#[test]
fn tail_errors_and_follow_across_a_rotation() {
    let f = Fleet::new("");
    let log = f.h.join("agents/logs/system/worker-daemon.log");
    std::fs::write(&log, "one\nERROR something failed\ntwo\nthree\n").unwrap();
    assert_eq!(f.ok(&["logs", "tail", "worker", "-n", "2"]), "two\nthree\n");
    assert_eq!(f.ok(&["logs", "tail", "worker", "--errors"]), "ERROR something failed\n");
    assert_eq!(f.run(&["logs", "tail", "nosuch"]).status.code(), Some(2));

    let mut child = Killed(
        f.cmd()
            .args(["logs", "tail", "worker", "-f", "-n", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(10)).expect("a line from tail -f");
    assert_eq!(next(), "three");
    let append = |p: &std::path::Path, s: &str| {
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).create(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
    };
    append(&log, "four\n");
    assert_eq!(next(), "four");
    // Rotated away (a last line still lands in the old file), then a new file.
    std::fs::rename(&log, f.h.join("agents/logs/system/worker-daemon.log.1")).unwrap();
    append(&f.h.join("agents/logs/system/worker-daemon.log.1"), "five\n");
    append(&log, "six\n");
    assert_eq!(next(), "five");
    assert_eq!(next(), "six");
    terminate(&mut child.0);
}

/// A child process killed when the test ends, even by a failed assertion.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runbook 003's table names three logs by an earlier implementation's names
/// (`heartbeat-monitor-daemon.log`, `metrics-snapshot-daemon.log`,
/// `integration-validator-daemon.log`): `cortex logs tail` takes them (and every daemon's log file
/// name) for the daemon's log, even before the daemon has written it.
#[test]
fn tail_takes_the_runbooks_log_names() {
    let f = Fleet::new("");
    let dir = f.h.join("agents/logs/system");
    std::fs::create_dir_all(&dir).unwrap();
    for (alias, daemon) in [
        ("heartbeat-monitor-daemon.log", "heartbeat"),
        ("metrics-snapshot-daemon.log", "metrics"),
        ("integration-validator-daemon.log", "integration"),
        ("heartbeat-monitor", "heartbeat"),
        ("coordinator-daemon.log", "coordinator"),
    ] {
        std::fs::write(dir.join(format!("{daemon}-daemon.log")), format!("{daemon} line\n")).unwrap();
        assert_eq!(f.ok(&["logs", "tail", alias, "-n", "1"]), format!("{daemon} line\n"), "{alias}");
    }
    std::fs::remove_file(dir.join("metrics-snapshot-daemon.log")).ok();
    std::fs::remove_file(dir.join("auto-fix-daemon.log")).ok();
    let out = f.run(&["logs", "tail", "auto-fix-daemon.log"]);
    assert!(out.status.success(), "a daemon's log that is not written yet reads as empty");
    let out = f.run(&["logs", "tail", "nosuch-daemon.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("heartbeat-monitor-daemon.log"), "{}", text(&out.stderr));
}
