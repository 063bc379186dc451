//! The API and the scheduler against real daemons (api + coordinator + worker in a temporary
//! home): retry and cancel of dispatches, the pause promises (running work finishes while nothing
//! new starts; no dispatch after a returned pause under load), and the emergency drain.
use crate::support::api::*;
use crate::support::task::*;
use crate::support::*;
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The three daemons the lifecycle needs, stopped when dropped (api first).
struct Live {
    api: Api,
    coordinator: Option<Daemon>,
    _worker: Daemon,
}

fn live(h: &TestHome) -> Live {
    live_with(h, Api::start(h))
}

/// [`live`] with an API that has an operate token (retry needs one).
fn live_operated(h: &TestHome) -> Live {
    live_with(h, Api::start_operated(h))
}

fn live_with(h: &TestHome, api: Api) -> Live {
    let worker = start(h, "worker");
    let coordinator = start(h, "coordinator");
    Live { api, coordinator: Some(coordinator), _worker: worker }
}

fn dispatch_of(t: &Value, n: usize) -> String {
    t["dispatches"][n].as_str().unwrap_or_else(|| panic!("no dispatch {n} in {t}")).to_string()
}

/// Waits until the task's current dispatch is `running` (its process started); returns the
/// dispatch id and its process group.
fn wait_running(h: &TestHome, task_id: &str) -> (String, i32) {
    let mut found = None;
    wait_until(LONG, &format!("task {task_id} running"), || {
        let t = show(h, task_id);
        let Some(d) = t["dispatch_id"].as_str().filter(|_| t["status"] == "in_progress") else { return false };
        if let Some(("active", rec)) = spec(h, d).as_ref().map(|(b, r)| (b.as_str(), r))
            && rec["status"] == "running"
        {
            found = Some((d.to_string(), rec["pgid"].as_i64().unwrap() as i32));
            return true;
        }
        false
    });
    found.unwrap()
}

/// `kill(-pgid, 0)`: Ok while any process (a zombie included) is in the group.
fn group_errno(pgid: i32) -> Result<(), nix::errno::Errno> {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None)
}

/// A command that waits for `gate` (a file under the home), for at most 30 s, then exits `code`.
fn gated(h: &TestHome, gate: &str, code: i32) -> String {
    format!(
        "for i in $(seq 600); do [ -f {}/{gate} ] && exit {code}; sleep 0.05; done; exit {code}",
        h.path().display()
    )
}

#[test]
fn retry_of_a_dispatch_follows_the_rules() {
    let h = fast_home();
    let d = live_operated(&h);
    let api = &d.api;
    // Attempt 1 fails at once; attempt 2 waits for the gate, then fails too.
    let cmd = format!("[ \"$CORTEX_ATTEMPT\" = 1 ] && exit 3; {}", gated(&h, "go", 3));
    let id = add(&h, &["--description", "flaky", "--max-attempts", "1", "--", "sh", "-c", &cmd]);
    let t = wait_status(&h, &id, "failed");
    let first = dispatch_of(&t, 0);

    let (code, e) = api.get(&format!("/dispatches/{first}/retry"));
    assert_eq!((code, e["error"].as_str()), (405, Some("method not allowed")));
    let (code, r) = api.post(&format!("/dispatches/{first}/retry"), b"");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "pending_retry");
    assert_eq!(r["dispatch_id"], first.as_str());
    assert_eq!(r["task_id"], id.as_str());
    let ev = h.events_of("task_retry_requested");
    assert!(ev.iter().any(|e| e["data"]["task_id"] == id.as_str()
        && e["data"]["requested_by"].as_str().unwrap().starts_with("operator (api 127.0.0.1:")));

    // The task runs again (attempt 2); it is not failed or cancelled now: 400, twice.
    let (second, _) = wait_running(&h, &id);
    assert_ne!(second, first);
    for target in [&first, &second] {
        let (code, e) = api.post(&format!("/dispatches/{target}/retry"), b"");
        assert_eq!(code, 400, "{e}");
        assert_eq!(e["code"], 400);
    }
    let (_, e) = api.post(&format!("/dispatches/{second}/retry"), b"");
    assert!(e["error"].as_str().unwrap().contains("running"), "{e}");
    std::fs::write(h.join("go"), "").unwrap();
    let t = wait_status(&h, &id, "failed");
    assert_eq!(t["attempts"], 2, "{t}");
    assert_eq!(t["max_attempts"], 2, "one more attempt was granted: {t}");
    assert_eq!(t["result"]["exit_code"], 3);

    // A completed dispatch cannot be retried; an unknown one is 404.
    let ok = add(&h, &["--description", "ok", "--", "true"]);
    let done = dispatch_of(&wait_status(&h, &ok, "completed"), 0);
    let (code, e) = api.post(&format!("/dispatches/{done}/retry"), b"");
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("completed"), "{e}");
    for unknown in ["dsp-no-such", "..", "a.b"] {
        let (code, e) = api.post(&format!("/dispatches/{unknown}/retry"), b"");
        assert_eq!((code, e["code"].as_u64()), (404, Some(404)), "{unknown}: {e}");
    }
    assert_eq!(show(&h, &ok)["status"], "completed", "nothing changed");
}

/// Regression: the API's cancel answers when the dispatch has ended, before the coordinator has
/// folded that end into the task; a retry right then was refused ("task is in_progress").
#[test]
fn retry_right_after_a_cancel_folds_the_ended_dispatch_first() {
    let h = fast_home();
    let mut d = live_operated(&h);
    let cmd = format!("[ \"$CORTEX_ATTEMPT\" = 2 ] && exit 0; {}", gated(&h, "never", 0));
    let id = add(&h, &["--description", "cancel then retry", "--budget", "1000", "--", "sh", "-c", &cmd]);
    let (first, pgid) = wait_running(&h, &id);
    // No coordinator: nothing folds the cancel but the retry itself.
    drop(d.coordinator.take());
    let (code, c) = d.api.post(&format!("/dispatches/{first}/cancel"), b"");
    assert_eq!((code, c["status"].as_str()), (200, Some("cancelled")), "{c}");
    assert_eq!(group_errno(pgid), Err(nix::errno::Errno::ESRCH));
    assert_eq!(show(&h, &id)["status"], "in_progress", "not folded yet");
    let (code, r) = d.api.post(&format!("/dispatches/{first}/retry"), b"");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "pending_retry");
    let t = show(&h, &id);
    assert_eq!((t["status"].as_str(), t["attempts"].as_u64()), (Some("pending_retry"), Some(1)), "{t}");
    let b = h.read_json("coordination/token-budget.json");
    assert!(b["reservations"].as_object().is_none_or(|r| r.is_empty()), "the cancelled reservation is released: {b}");
    d.coordinator = Some(start(&h, "coordinator"));
    let t = wait_status(&h, &id, "completed");
    assert_eq!(t["attempts"], 2, "{t}");
    assert_eq!(h.events_of("task_cancelled").iter().filter(|e| e["data"]["task_id"] == id.as_str()).count(), 1);
}

/// The task the cancel tests stop: a shell with a background grandchild, both sleeping.
const SLEEPERS: &str = "tail -f /dev/null & tail -f /dev/null";

/// After a cancel: the spec is in `failed/` as cancelled, the whole group is gone, and the task
/// ends `cancelled` after one attempt, not retried.
fn assert_cancelled(h: &TestHome, id: &str, dispatch: &str, pgid: i32) {
    let (bucket, rec) = spec(h, dispatch).unwrap();
    assert_eq!((bucket.as_str(), rec["status"].as_str()), ("failed", Some("cancelled")), "{rec}");
    assert_eq!(group_errno(pgid), Err(nix::errno::Errno::ESRCH), "the group (grandchild included) is gone");
    let t = wait_status(h, id, "cancelled");
    assert_eq!(t["attempts"], 1, "not retried: {t}");
    assert_eq!(t["dispatches"].as_array().unwrap().len(), 1, "{t}");
    let dispatched = h.events_of("task_dispatched");
    assert_eq!(dispatched.iter().filter(|e| e["data"]["task_id"] == id).count(), 1);
}

#[test]
fn cancel_via_the_api_answers_after_the_spec_left_active_and_the_group_is_gone() {
    let h = fast_home();
    let d = live(&h);
    let id = add(&h, &["--description", "sleepers", "--max-attempts", "3", "--", "sh", "-c", SLEEPERS]);
    let (dispatch, pgid) = wait_running(&h, &id);
    assert_eq!(group_errno(pgid), Ok(()));
    let started = Instant::now();
    let (code, c) = d.api.post(&format!("/dispatches/{dispatch}/cancel"), b"");
    assert_eq!(code, 200, "{c}");
    assert_eq!(c, serde_json::json!({"status": "cancelled", "dispatch_id": dispatch}));
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_cancelled(&h, &id, &dispatch, pgid);
    let (code, e) = d.api.post(&format!("/dispatches/{dispatch}/cancel"), b"");
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("dispatch not running"), "{e}");
    let (code, _) = d.api.post("/dispatches/dsp-no-such/cancel", b"");
    assert_eq!(code, 404);
}

#[test]
fn cancel_via_the_cli_stops_the_group_and_is_not_retried() {
    let h = fast_home();
    let _d = live(&h);
    let id = add(&h, &["--description", "sleepers", "--max-attempts", "3", "--", "sh", "-c", SLEEPERS]);
    let (dispatch, pgid) = wait_running(&h, &id);
    let out = h.cortex_ok(&["task", "cancel", &id]);
    assert!(out.contains(&format!("Task {id} cancelled")), "{out}");
    assert_cancelled(&h, &id, &dispatch, pgid);
}

/// `dispatched_at` of every dispatch spec (active, completed, failed).
fn dispatch_times(h: &TestHome) -> Vec<(String, String, chrono::DateTime<chrono::Utc>)> {
    let mut out = Vec::new();
    for bucket in ["active", "completed", "failed"] {
        let dir = h.join(&format!("coordination/worker-specs/{bucket}"));
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else { continue };
            let rec: Value = serde_json::from_slice(&bytes).unwrap();
            let at = cortex::base::clock::parse_ts(rec["dispatched_at"].as_str().unwrap()).unwrap();
            out.push((rec["dispatch_id"].as_str().unwrap().into(), rec["task_id"].as_str().unwrap().into(), at));
        }
    }
    out
}

/// Names of the spec files in `active/`.
fn active_specs(h: &TestHome) -> std::collections::HashSet<String> {
    std::fs::read_dir(h.join("coordination/worker-specs/active"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect()
}

fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    cortex::base::clock::parse_ts(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"))).unwrap()
}

#[test]
fn pause_lets_running_work_finish_and_starts_nothing_until_resume() {
    let h = fast_home();
    std::fs::write(h.join("coordination/token-budget.json"), r#"{"total": 100000, "used": 0, "available": 100000}"#)
        .unwrap();
    let d = live(&h);
    let api = &d.api;
    let runner = add(
        &h,
        &[
            "--description",
            "runs through the pause",
            "--budget",
            "1000",
            "--",
            "sh",
            "-c",
            &format!("echo 123 > $CORTEX_USAGE_FILE; {}", gated(&h, "go", 0)),
        ],
    );
    let flaky_cmd = format!("[ \"$CORTEX_ATTEMPT\" = 2 ] && exit 0; {}", gated(&h, "go", 1));
    let flaky = add(
        &h,
        &["--description", "fails once", "--budget", "1000", "--max-attempts", "2", "--", "sh", "-c", &flaky_cmd],
    );
    let (runner_dispatch, _) = wait_running(&h, &runner);
    wait_running(&h, &flaky);

    let (code, p) = api.post("/scheduler/pause", br#"{"reason": "promise 1"}"#);
    assert_eq!(code, 200, "{p}");
    let paused_at = ts(&p["timestamp"]);
    let queued = add(&h, &["--description", "queued while paused", "--budget", "1000", "--", "true"]);
    std::fs::write(h.join("go"), "").unwrap();

    // Running dispatches finish normally and are folded: completion, budget, retry bookkeeping.
    let t = wait_status(&h, &runner, "completed");
    assert_eq!(t["result"]["tokens_used"], 123);
    assert_eq!(spec(&h, &runner_dispatch).unwrap().0, "completed");
    let t = wait_status(&h, &flaky, "pending_retry");
    assert_eq!(t["attempts"], 1);
    assert!(ts(&t["next_retry_at"]) <= chrono::Utc::now(), "the retry is due: {t}");
    wait_until(LONG, "budget settled", || {
        let b = h.read_json("coordination/token-budget.json");
        b["used"] == 123
            && b["available"] == 100000 - 123
            && b["reservations"].as_object().is_some_and(|r| r.is_empty())
    });
    // One more coordinator cycle after all that (it folds a new task into the queue file), and
    // still nothing is dispatched: not the due retry, not the queued tasks.
    let probe = add(&h, &["--description", "probe", "--", "true"]);
    wait_until(LONG, "probe folded into the queue", || {
        h.queue_json()["tasks"].as_array().is_some_and(|ts| ts.iter().any(|t| t["task_id"] == probe.as_str()))
    });
    assert_eq!(show(&h, &flaky)["status"], "pending_retry");
    assert_eq!(show(&h, &queued)["status"], "queued");
    assert_eq!(show(&h, &probe)["status"], "queued");
    assert_eq!(std::fs::read_dir(h.join("coordination/worker-specs/active")).unwrap().count(), 0);
    let (_, s) = api.get("/status");
    assert_eq!((s["running_count"].as_u64(), s["scheduler_state"].as_str()), (Some(0), Some("paused")), "{s}");

    let (code, r) = api.post("/scheduler/resume", b"");
    assert_eq!(code, 200, "{r}");
    let resumed_at = ts(&r["timestamp"]);
    let t = wait_status(&h, &flaky, "completed");
    assert_eq!(t["attempts"], 2);
    wait_status(&h, &queued, "completed");
    wait_status(&h, &probe, "completed");
    for (id, task, at) in dispatch_times(&h) {
        assert!(!(at > paused_at && at < resumed_at), "dispatch {id} (task {task}) started at {at} while paused");
    }
    let after: Vec<_> = dispatch_times(&h).into_iter().filter(|(_, _, at)| *at > resumed_at).collect();
    assert_eq!(after.len(), 3, "the retry and both queued tasks started after the resume: {after:?}");
}

/// A keep-alive HTTP/1.1 connection to the API.
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn connect(port: u16) -> KeepAlive {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        KeepAlive { reader: BufReader::new(s) }
    }

    fn post(&mut self, path: &str) -> Value {
        let req = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        let (status, headers, body) = read_response(&mut self.reader).unwrap();
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(
            !headers.iter().any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close")),
            "the server keeps the connection open"
        );
        serde_json::from_slice(&body).unwrap()
    }
}

/// A home on tmpfs when there is one (this test is about ordering, not the disk).
fn tmpfs_home() -> TestHome {
    match tempfile::Builder::new().prefix("cortex-test-").tempdir_in("/dev/shm") {
        Ok(dir) => {
            let h = TestHome::in_dir(dir);
            h.cortex_ok(&["init"]);
            h
        }
        Err(_) => TestHome::new(),
    }
}

#[test]
fn no_dispatch_starts_after_a_returned_pause_under_load() {
    // CORTEX_TEST_LONG=N runs N cycles (10,000 when it is not a number of at least 1,000).
    let cycles: usize = std::env::var("CORTEX_TEST_LONG")
        .ok()
        .map(|v| v.parse().ok().filter(|n| *n >= 1000).unwrap_or(10_000))
        .unwrap_or(1000);
    let h = tmpfs_home();
    configure(&h, &[("worker", "grace_seconds", "0.5"), ("scheduler", "max_concurrent_dispatches", "6")]);
    std::fs::write(
        h.join("coordination/token-budget.json"),
        r#"{"total": 1000000000, "used": 0, "available": 1000000000}"#,
    )
    .unwrap();
    let d = live(&h);

    // A steady stream of short tasks: keep about a dozen waiting.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let root = h.path().to_path_buf();
        std::thread::spawn(move || {
            let store = cortex::Store::new(cortex::Home::at(&root));
            let mut added = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let waiting =
                    store.load::<cortex::domain::task::model::TaskQueue>().map(|q| q.tasks.len()).unwrap_or(0);
                if waiting < 12 {
                    for _ in 0..4 {
                        let new = cortex::domain::task::ops::NewTask {
                            description: format!("load {added}"),
                            command: vec!["true".into()],
                            budget: Some(10),
                            ..Default::default()
                        };
                        cortex::domain::task::ops::add_task(&store, new).unwrap();
                        added += 1;
                    }
                }
                // Pacing of the load generator, not a wait for a condition.
                std::thread::sleep(Duration::from_millis(5));
            }
            added
        })
    };
    wait_until(LONG, "load flowing", || dispatch_times(&h).len() >= 20);

    let started = Instant::now();
    let mut client = KeepAlive::connect(d.api.port);
    let mut windows = Vec::with_capacity(cycles);
    // A second witness that does not trust the coordinator's stamps: a spec that appears in
    // active/ between a returned pause and its resume was recorded while paused.
    let mut appeared_while_paused = Vec::new();
    for i in 0..cycles {
        let p = client.post("/scheduler/pause");
        assert_eq!((p["changed"].as_bool(), p["paused"].as_bool()), (Some(true), Some(true)), "{p}");
        let before = active_specs(&h);
        // Vary how long each state lasts so the coordinator meets both mid-cycle.
        if i % 3 == 0 {
            std::thread::sleep(Duration::from_micros(fastrand::u64(0..2000)));
        }
        appeared_while_paused.extend(active_specs(&h).difference(&before).cloned());
        let r = client.post("/scheduler/resume");
        assert_eq!(r["changed"], true, "{r}");
        windows.push((ts(&p["timestamp"]), ts(&r["timestamp"])));
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_micros(fastrand::u64(0..3000)));
        }
    }
    let cycling = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let added = feeder.join().unwrap();

    // The audit trail agrees with what the client was told.
    let paused_events: Vec<_> = h.events_of("scheduler_paused").iter().map(|e| ts(&e["data"]["paused_at"])).collect();
    let resumed_events: Vec<_> =
        h.events_of("scheduler_resumed").iter().map(|e| ts(&e["data"]["resumed_at"])).collect();
    assert_eq!(paused_events, windows.iter().map(|w| w.0).collect::<Vec<_>>());
    assert_eq!(resumed_events, windows.iter().map(|w| w.1).collect::<Vec<_>>());

    let times = dispatch_times(&h);
    let mut violations = Vec::new();
    let mut in_running_windows = 0;
    for (id, task, at) in &times {
        // The last window starting at or before this dispatch.
        let i = windows.partition_point(|w| w.0 <= *at);
        if i > 0 && *at > windows[i - 1].0 && *at < windows[i - 1].1 {
            violations.push(format!("{id} (task {task}) at {at} within pause {:?}", windows[i - 1]));
        }
        if i > 0 && i < windows.len() && *at >= windows[i - 1].1 {
            in_running_windows += 1;
        }
    }
    eprintln!(
        "{cycles} pause/resume cycles in {cycling:?}; {added} tasks added, {} dispatches, {in_running_windows} \
         between a resume and the next pause",
        times.len()
    );
    assert!(violations.is_empty(), "{} dispatches while paused: {violations:#?}", violations.len());
    assert!(appeared_while_paused.is_empty(), "specs written while paused: {appeared_while_paused:?}");
    assert!(
        in_running_windows >= cycles / 20,
        "the load must keep dispatching between the cycles for the test to mean anything ({in_running_windows})"
    );
}

#[test]
fn drain_cancels_every_running_dispatch_and_waits_until_every_spec_left_active() {
    let h = fast_home();
    configure(&h, &[("scheduler", "max_concurrent_dispatches", "4")]);
    let _d = live(&h);
    let ids: Vec<String> =
        (0..3).map(|i| add(&h, &["--description", &format!("sleepers {i}"), "--", "sh", "-c", SLEEPERS])).collect();
    let running: Vec<(String, i32)> = ids.iter().map(|id| wait_running(&h, id)).collect();
    let started = Instant::now();
    let out = h.cortex(&["scheduler", "drain", "--cancel-running", "--wait", "--timeout", "30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drain failed ({}): {text}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(text.contains("Scheduler paused"), "{text}");
    assert!(text.contains("Running dispatches at start: 3"), "{text}");
    assert!(text.contains("Cancel requested: 3"), "{text}");
    assert!(text.contains("Drained: 0 running dispatches"), "{text}");
    assert_eq!(active_specs(&h), Default::default(), "every spec has left active/");
    let s: Value = serde_json::from_str(&h.cortex_ok(&["scheduler", "status", "--json"])).unwrap();
    assert_eq!(s["state"], "paused");
    assert_eq!(s["reason"], "drain");
    for (id, (dispatch, pgid)) in ids.iter().zip(&running) {
        assert_cancelled(&h, id, dispatch, *pgid);
    }
    // Paused: new work waits.
    let later = add(&h, &["--description", "after the drain", "--", "true"]);
    wait_until(LONG, "folded", || {
        h.queue_json()["tasks"].as_array().is_some_and(|ts| ts.iter().any(|t| t["task_id"] == later.as_str()))
    });
    assert_eq!(show(&h, &later)["status"], "queued");
}
