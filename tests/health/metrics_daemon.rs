//! The metrics daemon, as a real process: a snapshot line with every field at each interval,
//! `cortex metrics`, rotation of the snapshot file, and rotation of the event log that loses no
//! line while other processes append.
use crate::support::records::{dispatch, task_record};
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn set_config(h: &TestHome, from: &str, to: &str) {
    let toml = std::fs::read_to_string(h.join("cortex.toml")).unwrap();
    assert!(toml.contains(from), "cortex.toml lacks {from:?}");
    std::fs::write(h.join("cortex.toml"), toml.replace(from, to)).unwrap();
}

fn write_json(h: &TestHome, rel: &str, v: &Value) {
    std::fs::write(h.join(rel), serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn spec(id: &str, state: Value) -> Value {
    dispatch(id, &format!("t-{id}"), "2026-05-01T10:00:00Z", state)
}

fn snapshots(h: &TestHome) -> Vec<Value> {
    std::fs::read_to_string(h.join("coordination/metrics/metrics-snapshots.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("snapshot line is JSON"))
        .collect()
}

#[test]
fn snapshot_lines_have_every_field() {
    let h = TestHome::new();
    set_config(&h, "[metrics]\ninterval_seconds = 60", "[metrics]\ninterval_seconds = 1");
    let ended = "2026-05-01T10:05:00Z";
    for (i, secs) in [60.0, 120.0, 180.0, 240.0].iter().enumerate() {
        write_json(
            &h,
            &format!("coordination/worker-specs/completed/c{i}.json"),
            &spec(
                &format!("c{i}"),
                json!({"status": "completed", "ended_at": ended, "exit_code": 0, "duration_s": secs}),
            ),
        );
    }
    write_json(
        &h,
        "coordination/worker-specs/failed/f1.json",
        &spec("f1", json!({"status": "failed", "ended_at": ended, "exit_code": 1, "error": "exit 1"})),
    );
    write_json(
        &h,
        "coordination/worker-specs/failed/x1.json",
        &spec("x1", json!({"status": "cancelled", "ended_at": ended})),
    );
    write_json(
        &h,
        "coordination/worker-specs/zombie/z1.json",
        &spec("z1", json!({"status": "zombie", "ended_at": ended, "reason": "no heartbeat"})),
    );
    write_json(
        &h,
        "coordination/worker-specs/active/a1.json",
        &spec("a1", json!({"status": "running", "started_at": ended, "pid": 1, "pgid": 1, "proc_start_ticks": 1})),
    );
    write_json(
        &h,
        "coordination/task-queue.json",
        &json!({"tasks": [
            task_record("q1", "queued", json!({})),
            task_record("q2", "queued", json!({})),
            task_record("p1", "in_progress", json!({"started_at": ended, "dispatch_id": "a1"})),
            task_record("r1", "pending_retry", json!({"next_retry_at": ended})),
            task_record("done-twice", "completed", json!({"completed_at": ended})),
        ]}),
    );
    // The archive: two completed, one failed, one cancelled, and a task also still in the queue.
    let archive: String = [
        task_record("ar1", "completed", json!({"completed_at": ended})),
        task_record("ar2", "completed", json!({"completed_at": ended})),
        task_record("ar3", "failed", json!({"completed_at": ended})),
        task_record("ar4", "cancelled", json!({"completed_at": ended})),
        task_record("done-twice", "completed", json!({"completed_at": ended})),
    ]
    .iter()
    .map(|t| format!("{t}\n"))
    .collect();
    std::fs::write(h.join("coordination/task-archive.jsonl"), archive).unwrap();
    write_json(
        &h,
        "coordination/token-budget.json",
        &json!({"total": 1000, "used": 250, "available": 740, "reservations": {"a1": 10}}),
    );

    let mut d = h.spawn_daemon("metrics");
    wait_until(WAIT, "two snapshot lines (1 s interval)", || snapshots(&h).len() >= 2);
    let s = snapshots(&h).pop().unwrap();
    let w = &s["workers"];
    assert_eq!((w["active"].as_u64(), w["completed"].as_u64()), (Some(1), Some(4)));
    assert_eq!((w["failed"].as_u64(), w["zombies_killed"].as_u64()), (Some(1), Some(1)), "cancelled is not failed");
    assert_eq!(w["success_rate"], 80.0);
    assert_eq!(w["avg_duration_minutes"], 2.5);
    assert_eq!(w["duration_percentiles"], json!({"p50": 2.0, "p90": 4.0, "p95": 4.0, "p99": 4.0}));
    assert_eq!(s["tokens"], json!({"total": 1000, "used": 250, "available": 740, "usage_percentage": 25.0}));
    assert_eq!(
        s["tasks"],
        json!({"queued": 2, "in_progress": 1, "pending_retry": 1, "completed": 3, "failed": 1, "total": 9})
    );
    assert_eq!(s["scheduler"], json!({"state": "running"}));
    let me = &s["daemons"]["metrics"];
    assert_eq!(me["pid"], d.id());
    assert!(me["rss_mb"].as_f64().unwrap() > 0.0, "{me}");
    assert!(me["cpu_percent"].as_f64().unwrap() >= 0.0, "{me}");
    assert!(me["uptime_s"].as_i64().unwrap() >= 0, "{me}");
    assert!(cortex::base::clock::parse_ts(s["timestamp"].as_str().unwrap()).is_some());

    // `cortex metrics --json` prints the latest line; the text form names each block.
    // The next snapshot sees a pause.
    write_json(&h, "coordination/scheduler-state.json", &json!({"state": "paused", "paused": true}));
    wait_until(WAIT, "a snapshot of the paused scheduler", || {
        snapshots(&h).last().is_some_and(|s| s["scheduler"]["state"] == "paused")
    });
    let printed: Value = serde_json::from_str(&h.cortex_ok(&["metrics", "--json"])).unwrap();
    let lines = snapshots(&h);
    assert!(lines.contains(&printed), "printed snapshot is one of the recorded lines");
    let text = h.cortex_ok(&["metrics"]);
    for word in ["Workers:", "success rate 80%", "Tokens:", "Tasks:", "Scheduler:", "Daemons:", "metrics"] {
        assert!(text.contains(word), "{word} missing in:\n{text}");
    }
    assert!(terminate(&mut d).success());
    let out = h.cortex(&["validate"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[OK] coordination/metrics/metrics-snapshots.jsonl"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn metrics_without_a_snapshot_says_what_to_do() {
    let h = TestHome::new();
    let out = h.cortex(&["metrics"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cortex start metrics") && err.contains("--live"), "{err}");
    let live: Value = serde_json::from_str(&h.cortex_ok(&["metrics", "--live", "--json"])).unwrap();
    assert_eq!(live["tasks"]["total"], 0);
    assert_eq!(live["workers"]["success_rate"], Value::Null);
}

#[test]
fn snapshot_file_is_capped_and_rotated() {
    let h = TestHome::new();
    set_config(
        &h,
        "[metrics]\ninterval_seconds = 60\nmax_file_bytes = 10485760\nkeep = 5",
        "[metrics]\ninterval_seconds = 1\nmax_file_bytes = 1200\nkeep = 2",
    );
    let mut d = h.spawn_daemon("metrics");
    let file = h.join("coordination/metrics/metrics-snapshots.jsonl");
    wait_until(WAIT, "two rotations", || h.join("coordination/metrics/metrics-snapshots.jsonl.2").exists());
    assert!(terminate(&mut d).success());
    assert!(!h.join("coordination/metrics/metrics-snapshots.jsonl.3").exists(), "keep = 2");
    // Each file holds whole snapshot lines only and stays near the cap (one line over at most).
    for p in [file.clone(), h.join("coordination/metrics/metrics-snapshots.jsonl.1")] {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for l in text.lines() {
            serde_json::from_str::<Value>(l).expect("whole line");
        }
        let longest = text.lines().map(str::len).max().unwrap_or(0) as u64;
        assert!(text.len() as u64 <= 1200 + longest + 1, "{} is {} bytes", p.display(), text.len());
    }
}

#[test]
fn event_log_rotation_loses_no_line_under_concurrent_appenders() {
    let h = TestHome::new();
    set_config(&h, "[metrics]\ninterval_seconds = 60", "[metrics]\ninterval_seconds = 1");
    set_config(&h, "[events]\nmax_file_bytes = 52428800\nkeep = 5", "[events]\nmax_file_bytes = 20000\nkeep = 1000");
    let mut d = h.spawn_daemon("metrics");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appenders: Vec<_> = (0..4)
        .map(|w| {
            let home = cortex::Home::at(h.path());
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    cortex::store::events::emit(
                        &home,
                        cortex::store::events::EventKind::parse("load_test"),
                        cortex::store::events::Severity::Info,
                        "test",
                        format!("appender {w} line {n}"),
                        json!({"w": w, "n": n}),
                    )
                    .unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_micros(300));
                }
                n
            })
        })
        .collect();
    let events = h.join("coordination/dashboard-events.jsonl");
    wait_until(WAIT, "three rotations while appending", || {
        cortex::store::rotation::rotated_names(&events, 3).0.exists()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written: Vec<u64> = appenders.into_iter().map(|a| a.join().unwrap()).collect();
    assert!(terminate(&mut d).success());

    let mut files = vec![events.clone()];
    files.extend((1..1000).map(|n| cortex::store::rotation::rotated_names(&events, n).0).take_while(|p| p.exists()));
    let mut seen = vec![std::collections::BTreeSet::new(); 4];
    let mut rotations_logged = 0;
    for f in &files {
        // Blank lines are skipped as every reader does (an appender that closes what looked like
        // a torn tail while another append was in flight leaves one).
        for line in std::fs::read_to_string(f).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let e: Value =
                serde_json::from_str(line).unwrap_or_else(|_| panic!("torn line in {}: {line}", f.display()));
            if e["type"] == "load_test" {
                let (w, n) = (e["data"]["w"].as_u64().unwrap() as usize, e["data"]["n"].as_u64().unwrap());
                assert!(seen[w].insert(n), "line {w}/{n} appears twice");
            }
            if e["type"] == "event_log_rotated" {
                rotations_logged += 1;
            }
        }
    }
    for (w, count) in written.iter().enumerate() {
        assert_eq!(seen[w].len() as u64, *count, "appender {w}: every line is in some file");
    }
    assert!(rotations_logged >= 3, "each rotation is recorded");
    assert!(files.len() >= 4);
}
