//! Real processes through the coordinator and worker daemons: exit codes and signals, timeouts
//! and cancels (with grandchildren), concurrency, budget, retries and failure notifications.
use crate::support::task::*;
use crate::support::*;
use serde_json::Value;

fn dispatch_of(t: &Value, n: usize) -> String {
    t["dispatches"][n].as_str().unwrap().to_string()
}

#[test]
fn exit_codes_signals_output_and_environment() {
    let h = fast_home();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let ok = add(
        &h,
        &[
            "--description",
            "ok",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; echo $CORTEX_ATTEMPT $CORTEX_TASK_ID; cat; pwd",
        ],
    );
    let code = add(&h, &["--description", "code", "--max-attempts", "1", "--", "sh", "-c", "exit 7"]);
    let sig = add(&h, &["--description", "sig", "--max-attempts", "1", "--", "sh", "-c", "kill -KILL $$"]);
    let missing = add(&h, &["--description", "missing", "--max-attempts", "1", "--", "/no/such/program"]);
    let t = wait_status(&h, &ok, "completed");
    assert_eq!(t["result"]["exit_code"], 0);
    let d = dispatch_of(&t, 0);
    let out = std::fs::read_to_string(h.join(&format!("agents/logs/workers/{d}.out"))).unwrap();
    let err = std::fs::read_to_string(h.join(&format!("agents/logs/workers/{d}.err"))).unwrap();
    assert!(out.starts_with(&format!("to-out\n1 {ok}\n")), "{out}");
    assert!(out.trim_end().ends_with(h.path().to_str().unwrap()), "cwd is the home: {out}");
    assert_eq!(err, "to-err\n");
    let (bucket, rec) = spec(&h, &d).unwrap();
    assert_eq!(
        (bucket.as_str(), rec["status"].as_str(), rec["exit_code"].as_i64()),
        ("completed", Some("completed"), Some(0))
    );
    assert!(rec["pid"].is_null() || rec["pid"].as_i64().is_some());
    let t = wait_status(&h, &code, "failed");
    assert_eq!(t["result"]["exit_code"], 7);
    assert_eq!(spec(&h, &dispatch_of(&t, 0)).unwrap().0, "failed");
    let t = wait_status(&h, &sig, "failed");
    assert_eq!(t["result"]["signal"], 9, "{t}");
    let t = wait_status(&h, &missing, "failed");
    assert_eq!(t["result"]["exit_code"], 127);
    assert!(t["result"]["error"].as_str().unwrap().contains("/no/such/program"), "{t}");
}

/// The exec shim opens the dispatch's logs itself: one that cannot be opened (a directory stands
/// where the `.out` file goes; a symbolic link planted there, which is refused rather than
/// followed) fails the dispatch with an error naming it, and the command does not run.
#[test]
fn a_dispatch_whose_log_cannot_be_opened_fails_naming_it_and_runs_nothing() {
    let h = fast_home();
    let _c = start(&h, "coordinator");
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    std::fs::write(&target, "untouched\n").unwrap();
    let mut cases = Vec::new();
    for (name, link) in [("dir", false), ("link", true)] {
        let marker = h.join(&format!("ran-{name}"));
        let cmd = format!("echo out; touch {}", marker.display());
        let id = add(&h, &["--description", name, "--max-attempts", "1", "--", "sh", "-c", &cmd]);
        // Dispatched with no worker running: the spec names the log paths before anything starts.
        let t = wait_status(&h, &id, "in_progress");
        let d = dispatch_of(&t, 0);
        let out = spec(&h, &d).unwrap().1["stdout_path"].as_str().unwrap().to_string();
        std::fs::create_dir_all(std::path::Path::new(&out).parent().unwrap()).unwrap();
        if link {
            std::os::unix::fs::symlink(&target, &out).unwrap();
        } else {
            std::fs::create_dir(&out).unwrap();
        }
        cases.push((id, d, out, marker));
    }
    let _w = start(&h, "worker");
    for (id, d, out, marker) in cases {
        let t = wait_status(&h, &id, "failed");
        let error = t["result"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("cannot open the log") && error.contains(&out), "{t}");
        assert_eq!(spec(&h, &d).unwrap().0, "failed");
        assert!(!marker.exists(), "the command ran without its log: {t}");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n", "the link was followed");
}

/// A task that ignores TERM and leaves a grandchild that ignores TERM too; both hang until
/// killed (`tail -f /dev/null` never ends by itself, as in the other tests' hanging tasks).
fn stubborn(h: &TestHome, name: &str) -> String {
    format!(
        "trap '' TERM; (trap '' TERM; tail -f /dev/null) & echo $! > {}/{name}.gc; echo started > {}/{name}.started; tail -f /dev/null",
        h.path().display(),
        h.path().display()
    )
}

#[test]
fn timeout_stops_a_term_ignoring_task_and_its_grandchildren() {
    let h = fast_home();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let id = add(
        &h,
        &["--description", "stubborn", "--timeout", "1s", "--max-attempts", "1", "--", "sh", "-c", &stubborn(&h, "t")],
    );
    let gc = read_pid(&h, "t.gc");
    assert!(pid_running(gc));
    let t = wait_status(&h, &id, "failed");
    assert!(t["result"]["error"].as_str().unwrap().contains("timed out"), "{t}");
    assert_eq!(t["result"]["signal"], 9, "TERM was ignored, so KILL ended it: {t}");
    let (bucket, rec) = spec(&h, &dispatch_of(&t, 0)).unwrap();
    assert_eq!((bucket.as_str(), rec["status"].as_str()), ("failed", Some("timeout")));
    let d = rec["duration_s"].as_f64().unwrap();
    assert!((1.3..20.0).contains(&d), "timeout 1s + grace 0.5s, took {d}");
    wait_until(LONG, "grandchild gone", || !pid_running(gc));
}

#[test]
fn cancel_stops_a_running_task_and_its_grandchildren() {
    let h = fast_home();
    let _w = start(&h, "worker");
    let c = start(&h, "coordinator");
    let id = add(&h, &["--description", "to cancel", "--", "sh", "-c", &stubborn(&h, "c")]);
    let gc = read_pid(&h, "c.gc");
    wait_until(LONG, "task started", || h.join("c.started").exists());
    let out = h.cortex_ok(&["task", "cancel", &id, "--wait", "30s"]);
    assert!(out.contains("cancelled"), "{out}");
    let t = show(&h, &id);
    assert_eq!(t["status"], "cancelled");
    assert_eq!(t["attempts"], 1, "no retry after a cancel");
    let (bucket, rec) = spec(&h, &dispatch_of(&t, 0)).unwrap();
    assert_eq!((bucket.as_str(), rec["status"].as_str()), ("failed", Some("cancelled")));
    wait_until(LONG, "grandchild gone", || !pid_running(gc));
    // A queued task is cancelled in the queue; a finished one cannot be cancelled.
    let later = add(&h, &["--description", "later", "--delay", "1h", "--", "true"]);
    h.cortex_ok(&["task", "cancel", &later]);
    assert_eq!(show(&h, &later)["status"], "cancelled");
    let out = h.cortex(&["task", "cancel", &later]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already ended"));
    // Retry brings a cancelled task back (with the coordinator stopped first: it would start the
    // stubborn task again, and the worker leaves running tasks running when this test ends).
    drop(c);
    let retried: Value = serde_json::from_str(&h.cortex_ok(&["task", "retry", &id, "--json"])).unwrap();
    assert_eq!(retried["status"], "pending_retry");
    let events = h.events_of("task_cancelled");
    assert!(events.iter().any(|e| e["data"]["task_id"] == id.as_str()));
}

#[test]
fn max_concurrency_is_never_exceeded() {
    let h = fast_home();
    configure(&h, &[("scheduler", "max_concurrent_dispatches", "2")]);
    let log = h.join("conc.log");
    let script =
        format!("echo \"start $(date +%s%N)\" >> {l}; sleep 0.3; echo \"end $(date +%s%N)\" >> {l}", l = log.display());
    let ids: Vec<String> =
        (0..6).map(|i| add(&h, &["--description", &format!("c{i}"), "--", "sh", "-c", &script])).collect();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let tasks = wait_finished(&h, &ids);
    assert!(tasks.iter().all(|t| t["status"] == "completed"));
    let mut events: Vec<(u128, i32)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, t) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), if k == "start" { 1 } else { -1 })
        })
        .collect();
    events.sort_by_key(|&(t, d)| (t, d));
    let (mut cur, mut max) = (0, 0);
    for (_, d) in events {
        cur += d;
        max = max.max(cur);
    }
    assert_eq!(max, 2, "two slots are used, never more");
}

#[test]
fn budget_reserve_settle_release_and_wait() {
    let h = fast_home();
    std::fs::write(h.join("coordination/token-budget.json"), r#"{"total": 1000, "used": 0, "available": 1000}"#)
        .unwrap();
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let cortex_bin = bin("cortex");
    let big = add(
        &h,
        &[
            "--description",
            "big",
            "--budget",
            "800",
            "--",
            "sh",
            "-c",
            &format!(
                "while [ ! -f {h}/go ]; do sleep 0.05; done; {c} --home {h} task report-usage 300",
                h = h.path().display(),
                c = cortex_bin.display()
            ),
        ],
    );
    wait_status(&h, &big, "in_progress");
    wait_until(LONG, "800 reserved", || {
        let b = h.read_json("coordination/token-budget.json");
        b["available"] == 200 && b["reservations"].as_object().map(|r| r.len()) == Some(1)
    });
    let small = add(&h, &["--description", "small", "--budget", "500", "--", "true"]);
    wait_until(LONG, "small waits for budget", || show(&h, &small)["waiting_reason"] == "budget");
    std::fs::write(h.join("go"), "").unwrap();
    wait_status(&h, &big, "completed");
    let t = wait_status(&h, &small, "completed");
    assert_eq!(t["result"]["tokens_used"], Value::Null, "nothing reported: released in full");
    assert_eq!(show(&h, &big)["result"]["tokens_used"], 300);
    wait_until(LONG, "budget settled", || {
        let b = h.read_json("coordination/token-budget.json");
        b["used"] == 300 && b["available"] == 700 && b["reservations"].as_object().is_some_and(|r| r.is_empty())
    });
    // The usage file written directly by a task counts too.
    let direct = add(
        &h,
        &[
            "--description",
            "direct",
            "--budget",
            "100",
            "--",
            "sh",
            "-c",
            "echo '{\"tokens_used\": 50}' > $CORTEX_USAGE_FILE",
        ],
    );
    wait_status(&h, &direct, "completed");
    wait_until(LONG, "budget settled again", || h.read_json("coordination/token-budget.json")["used"] == 350);
}

fn gaps_of(h: &TestHome, t: &Value) -> Vec<f64> {
    let times: Vec<chrono::DateTime<chrono::Utc>> = t["dispatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let (_, rec) = spec(h, d.as_str().unwrap()).unwrap();
            cortex::base::clock::parse_ts(rec["dispatched_at"].as_str().unwrap()).unwrap()
        })
        .collect();
    times.windows(2).map(|w| (w[1] - w[0]).num_milliseconds() as f64 / 1000.0).collect()
}

#[test]
fn retries_follow_each_backoff_strategy() {
    for (strategy, check) in [("none", [0.0, 0.0]), ("fixed", [0.6, 0.6]), ("exponential", [0.4, 0.8])] {
        let h = fast_home();
        configure(
            &h,
            &[
                ("retry", "backoff_strategy", &format!("\"{strategy}\"")),
                ("retry", "backoff_base_seconds", if strategy == "fixed" { "0.6" } else { "0.4" }),
                ("retry", "backoff_max_seconds", "5.0"),
            ],
        );
        let _w = start(&h, "worker");
        let _c = start(&h, "coordinator");
        let id = add(&h, &["--description", "flaky", "--max-attempts", "3", "--", "sh", "-c", "exit 1"]);
        let t = wait_status(&h, &id, "failed");
        assert_eq!(t["attempts"], 3, "{strategy}");
        let gaps = gaps_of(&h, &t);
        assert_eq!(gaps.len(), 2);
        for (g, min) in gaps.iter().zip(check) {
            assert!(*g >= min, "{strategy}: gap {g} < {min} ({gaps:?})");
            assert!(*g < min + 10.0, "{strategy}: gap {g} far too long");
        }
        let retries = h.events_of("task_retry_scheduled");
        assert_eq!(retries.iter().filter(|e| e["data"]["task_id"] == id.as_str()).count(), 2, "{strategy}");
    }
}

#[test]
fn failure_notification_threshold_and_throttle() {
    let h = fast_home();
    configure(
        &h,
        &[("retry", "failure_notification_threshold", "2"), ("retry", "failure_notification_throttle_seconds", "3600")],
    );
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let one = add(&h, &["--description", "f1", "--type", "fix-worker", "--max-attempts", "1", "--", "false"]);
    wait_status(&h, &one, "failed");
    assert!(h.events_of("failure_notification").is_empty(), "one failure is below the threshold");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            add(&h, &["--description", &format!("f{i}"), "--type", "fix-worker", "--max-attempts", "1", "--", "false"])
        })
        .collect();
    wait_finished(&h, &ids);
    // Streaks are recorded just after the queue write: wait for all four failures to count.
    wait_until(LONG, "four failures recorded", || {
        h.read_json("coordination/failure-streaks.json")["worker_types"]["fix-worker"]["consecutive_failures"] == 4
    });
    let n = h.events_of("failure_notification");
    assert_eq!(n.len(), 1, "reached at the second failure, then throttled for an hour: {n:?}");
    assert_eq!((n[0]["severity"].as_str(), n[0]["data"]["worker_type"].as_str()), (Some("error"), Some("fix-worker")));
    assert_eq!(n[0]["data"]["consecutive_failures"], 2);
    // A success resets the streak.
    let good = add(&h, &["--description", "ok", "--type", "fix-worker", "--", "true"]);
    wait_status(&h, &good, "completed");
    wait_until(LONG, "streak reset", || {
        h.read_json("coordination/failure-streaks.json")["worker_types"]["fix-worker"]["consecutive_failures"] == 0
    });
}

/// The worker runs tasks under the small `cortex-exec-shim` installed beside it, and under its own
/// binary's shim mode when that is missing (a worker copied alone still works).
#[test]
fn tasks_run_under_the_small_shim_or_the_workers_own_binary_without_it() {
    let shim_of = |h: &TestHome| -> String {
        let id = add(h, &["--description", "hold", "--", "sleep", "300"]);
        let t = wait_status(h, &id, "in_progress");
        let d = dispatch_of(&t, 0);
        let mut pid = 0;
        wait_until(LONG, "the dispatch recorded running", || {
            pid = spec(h, &d).and_then(|(_, s)| s["pid"].as_i64()).unwrap_or(0) as i32;
            pid > 0
        });
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        h.cortex_ok(&["task", "cancel", &id]);
        exe.file_name().unwrap().to_string_lossy().into_owned()
    };

    let h = fast_home();
    let w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    assert_eq!(shim_of(&h), "cortex-exec-shim");
    drop(w);

    // A worker binary alone in a directory: its own shim mode.
    let alone = tempfile::tempdir().unwrap();
    let worker = alone.path().join("cortex-worker");
    std::fs::copy(bin("cortex-worker"), &worker).unwrap();
    let mut child = std::process::Command::new(&worker)
        .arg("--home")
        .arg(h.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(shim_of(&h), "cortex-worker");
    terminate(&mut child);
}
