//! Helpers shared by the `task_*` integration tests: a home with short timings, running the
//! coordinator and worker daemons, adding tasks and waiting for their states.
#![allow(dead_code)]

use crate::support::*;
use serde_json::Value;
use std::process::Child;
use std::time::Duration;

/// Generous deadline: the machine may be heavily loaded by parallel builds.
pub(crate) const LONG: Duration = Duration::from_secs(60);

/// Sets `key = value` in `[section]` of the home's cortex.toml.
pub(crate) fn configure(h: &TestHome, settings: &[(&str, &str, &str)]) {
    for (section, key, value) in settings {
        h.set_config(section, key, value);
    }
}

/// A home with fast retry and stop settings.
pub(crate) fn fast_home() -> TestHome {
    let h = TestHome::new();
    configure(
        &h,
        &[
            ("worker", "grace_seconds", "0.5"),
            ("retry", "backoff_strategy", "\"none\""),
            ("retry", "backoff_base_seconds", "0.1"),
            ("retry", "backoff_max_seconds", "1.0"),
        ],
    );
    h
}

/// A running daemon, stopped (TERM, then KILL) when dropped.
pub(crate) struct Daemon {
    pub name: String,
    pub child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

impl Daemon {
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a daemon and waits until it is ready.
pub(crate) fn start(h: &TestHome, name: &str) -> Daemon {
    let mark = h.join(&format!("run/{name}.state.json"));
    let _ = std::fs::remove_file(&mark);
    let mut child = h.spawn_daemon(name);
    let pid = child.id();
    wait_until(LONG, &format!("{name} ready"), || {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{name} exited early ({st}): {err}");
        }
        std::fs::read(&mark)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|m| m["pid"] == pid && !m["ready_at"].is_null())
    });
    Daemon { name: name.to_string(), child }
}

/// `cortex task add` with arguments; returns the task id.
pub(crate) fn add(h: &TestHome, args: &[&str]) -> String {
    let mut a = vec!["task", "add"];
    a.extend_from_slice(args);
    h.cortex_ok(&a).trim().to_string()
}

/// `cortex task show ID --json`.
pub(crate) fn show(h: &TestHome, id: &str) -> Value {
    serde_json::from_str(&h.cortex_ok(&["task", "show", id, "--json"])).unwrap()
}

/// Waits until the task has `status`; returns its record.
pub(crate) fn wait_status(h: &TestHome, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    wait_until(LONG, &format!("task {id} {status}"), || {
        last = show(h, id);
        last["status"] == status
    });
    last
}

/// Waits until every listed task is finished (completed, failed or cancelled). At the deadline
/// it panics naming each unfinished task with its status and where its last dispatch's spec is.
pub(crate) fn wait_finished(h: &TestHome, ids: &[String]) -> Vec<Value> {
    let finished = |t: &Value| matches!(t["status"].as_str(), Some("completed" | "failed" | "cancelled"));
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let all: Value = serde_json::from_str(&h.cortex_ok(&["task", "list", "--all", "--json"])).unwrap();
        let tasks = all["tasks"].as_array().cloned().unwrap_or_default();
        let out: Vec<Value> =
            ids.iter().filter_map(|id| tasks.iter().find(|t| t["task_id"] == id.as_str()).cloned()).collect();
        if out.len() == ids.len() && out.iter().all(finished) {
            return out;
        }
        if std::time::Instant::now() >= deadline {
            let stuck: Vec<String> = ids
                .iter()
                .map(|id| match out.iter().find(|t| t["task_id"] == id.as_str()) {
                    None => format!("{id}: not in the queue or the archive"),
                    Some(t) if finished(t) => String::new(),
                    Some(t) => {
                        let last = t["dispatches"].as_array().and_then(|d| d.last()).and_then(Value::as_str);
                        let where_ = last.map(|d| match spec(h, d) {
                            Some((bucket, s)) => format!("spec {d} in {bucket}/ with status {}", s["status"]),
                            None => format!("no spec for {d}"),
                        });
                        // Its story in the event log, for a failure seen only under load.
                        let events: Vec<String> = h
                            .events()
                            .into_iter()
                            .filter(|e| e.to_string().contains(id) || last.is_some_and(|d| e.to_string().contains(d)))
                            .map(|e| format!("    {} {} {}", e["timestamp"], e["type"], e["message"]))
                            .chain(
                                std::fs::read_dir(h.join("agents/logs/system"))
                                    .into_iter()
                                    .flatten()
                                    .flatten()
                                    .filter_map(|f| std::fs::read_to_string(f.path()).ok())
                                    .flat_map(|text| {
                                        text.lines()
                                            .filter(|l| last.is_some_and(|d| l.contains(d)))
                                            .map(|l| format!("    log: {l}"))
                                            .collect::<Vec<_>>()
                                    }),
                            )
                            .collect();
                        format!(
                            "{id}: {} after {} attempt(s); {}; events:\n{}",
                            t["status"],
                            t["attempts"],
                            where_.unwrap_or_else(|| "never dispatched".into()),
                            events.join("\n")
                        )
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            panic!("timed out after {LONG:?} waiting for tasks to finish; unfinished:\n{}", stuck.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A spec of a dispatch in any bucket.
pub(crate) fn spec(h: &TestHome, dispatch_id: &str) -> Option<(String, Value)> {
    for b in ["active", "completed", "failed", "zombie"] {
        let p = h.join(&format!("coordination/worker-specs/{b}/{dispatch_id}.json"));
        if let Ok(bytes) = std::fs::read(&p) {
            return Some((b.to_string(), serde_json::from_slice(&bytes).unwrap()));
        }
    }
    None
}

/// True while a process runs (a zombie counts as ended).
pub(crate) fn pid_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Reads a PID a task wrote to a file under the home.
pub(crate) fn read_pid(h: &TestHome, rel: &str) -> i32 {
    let mut pid = 0;
    wait_until(LONG, &format!("{rel} written"), || {
        pid = std::fs::read_to_string(h.join(rel)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        pid > 0
    });
    pid
}
