//! The runbooks' status reads with the real daemons (coordinator, worker, api) running real
//! tasks: the drill's `recent_dispatch_count` expectations around a pause and a resume, every
//! status view degrading (never failing) while each coordination file it reads is corrupt and
//! tasks run, and acknowledging a critical event so the maintenance pre-check goes again.
//! The `curl … | jq …` lines are copied from `000_15ad30380689ddc7.txt` and
//! `001_931c51de143fca98.txt`; only the port changes.

use crate::support::api::*;
use crate::support::task::{LONG, add, fast_home, start, wait_finished};
use crate::support::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

/// Every daemon but the ones these tests run is disabled, so `/health` depends only on them.
fn drill_home() -> TestHome {
    let h = fast_home();
    h.set_config(
        "daemons",
        "disabled",
        r#"["pm", "heartbeat", "metrics", "integration", "failure-pattern", "auto-fix", "notify"]"#,
    );
    h
}

/// A task that runs until `release` exists under the home (at most 60 s, so a failed test
/// leaves nothing running for long).
fn add_held(h: &TestHome, name: &str) -> String {
    let release = h.join("release");
    add(
        h,
        &[
            "--description",
            name,
            "--type",
            "scan-worker",
            "--budget",
            "10",
            "--",
            "sh",
            "-c",
            r#"i=0; while [ ! -e "$0" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"#,
            release.to_str().unwrap(),
        ],
    )
}

fn add_quick(h: &TestHome, name: &str) -> String {
    add(h, &["--description", name, "--type", "scan-worker", "--budget", "10", "--", "true"])
}

fn status(api: &Api) -> Value {
    let (code, v) = api.get("/status");
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn drill_recent_dispatch_count_is_new_dispatches_since_the_pause_and_since_the_resume() {
    let h = drill_home();
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let api = Api::start(&h);
    let sh = Shell { port: api.port };

    // Work done before the maintenance window: three dispatches within the last 300 s.
    let quick: Vec<String> = (0..3).map(|i| add_quick(&h, &format!("before {i}"))).collect();
    wait_finished(&h, &quick);
    let held: Vec<String> = (0..2).map(|i| add_held(&h, &format!("held {i}"))).collect();
    wait_until(LONG, "two dispatches running", || status(&api)["running_count"] == 2);

    // Pause: the runbook's step 1, 2 and the final verification of step 3.
    sh.ok("curl -s -X POST http://127.0.0.1:8900/scheduler/pause");
    assert_eq!(sh.ok("curl -s http://127.0.0.1:8900/scheduler/status | jq -r '.state // \"unknown\"'"), "paused");
    let v = sh.ok(r#"NEW_DISPATCHES=$(curl -s http://127.0.0.1:8900/status | jq -r '.recent_dispatch_count // 0')
if [ "$NEW_DISPATCHES" -gt 0 ]; then
    echo "⚠️  WARNING: New dispatches detected after pause ($NEW_DISPATCHES)"
fi
echo "$NEW_DISPATCHES""#);
    assert_eq!(v, "0", "no new dispatch since the pause, while two run");
    let paused_at = api.get("/scheduler/status").1["paused_at"].clone();
    assert_eq!(status(&api)["recent_since"], paused_at);
    // Drill scenario 1: the running ones continue.
    assert_eq!(sh.ok("curl -s http://127.0.0.1:8900/status | jq '.running_count'"), "2");

    // Queued work arrives during the window; nothing is dispatched.
    let queued: Vec<String> = (0..2).map(|i| add_quick(&h, &format!("queued {i}"))).collect();
    wait_until(LONG, "the new tasks folded into the queue", || status(&api)["queued_count"] == 2);

    // Drill scenario 3: the running dispatches end; the system is drained.
    std::fs::write(h.join("release"), b"").unwrap();
    wait_until(LONG, "drained", || {
        sh.run("[ $(curl -s http://127.0.0.1:8900/status | jq '.running_count') -gt 0 ]").0 == 1
    });
    let v: Value = serde_json::from_str(&sh.ok(r#"curl -s http://127.0.0.1:8900/status | jq '{
  running_count: .running_count,
  recent_dispatch_count: .recent_dispatch_count,
  scheduler_state: .scheduler_state
}'"#))
    .unwrap();
    assert_eq!(v, json!({"running_count": 0, "recent_dispatch_count": 0, "scheduler_state": "paused"}));

    // Resume; within 30 s the queued work is dispatched and the post-resume check sees it.
    sh.ok("curl -s -X POST http://127.0.0.1:8900/scheduler/resume");
    let resumed_at = api.get("/scheduler/status").1["resumed_at"].clone();
    let check = r#"NEW_DISPATCHES_POST=$(curl -s http://127.0.0.1:8900/status | jq -r '.recent_dispatch_count // 0')
if [ "$NEW_DISPATCHES_POST" -eq 0 ]; then
    echo "⚠️  WARNING: No new dispatches detected 30s after resume"
else
    echo "✅ New dispatches resumed: $NEW_DISPATCHES_POST"
fi"#;
    wait_until(std::time::Duration::from_secs(30), "new dispatches within 30 s of the resume", || {
        sh.ok(check).starts_with("✅ New dispatches resumed:")
    });
    assert_eq!(status(&api)["recent_since"], resumed_at);
    wait_finished(&h, &queued);
    wait_finished(&h, &held);
    assert_eq!(status(&api)["recent_dispatch_count"], 2, "exactly the two queued during the pause");
}

/// Holds the lock of a file (`coordination/.locks/<name>.lock`) while it is swapped, as a
/// careful operator would; the status views take no lock, so they see the swap at once.
fn with_lock<R>(h: &TestHome, lock: &str, f: impl FnOnce() -> R) -> R {
    let file = h.hold_lock(lock);
    let r = f();
    file.unlock().unwrap();
    r
}

fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("drill-tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn status_views_degrade_while_each_coordination_file_is_corrupt_and_tasks_run() {
    let h = drill_home();
    let _worker = start(&h, "worker");
    let _coord = start(&h, "coordinator");
    let api = Api::start(&h);
    let sh = Shell { port: api.port };

    let done = add_quick(&h, "done");
    wait_finished(&h, std::slice::from_ref(&done));
    let completed = std::fs::read_dir(h.join("coordination/worker-specs/completed"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".json"))
        .expect("a completed dispatch spec");
    let held: Vec<String> = (0..2).map(|i| add_held(&h, &format!("held {i}"))).collect();
    wait_until(LONG, "two dispatches running", || status(&api)["running_count"] == 2);
    wait_until(LONG, "healthy with every file readable", || api.get("/health").0 == 200);

    let files = [
        ("scheduler-state.json", "scheduler"),
        ("task-queue.json", "task-queue"),
        ("token-budget.json", "token-budget"),
        (&format!("worker-specs/completed/{completed}") as &str, "worker-specs"),
    ];
    for (rel, lock) in files {
        let file = format!("coordination/{rel}");
        let path = h.join(&file);
        let good = with_lock(&h, lock, || {
            let good = std::fs::read(&path).unwrap();
            replace(&path, b"{\"tasks\": [ not json");
            good
        });
        let names = |v: &Value| {
            v["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["file"] == file.as_str() && e["error"].is_string()))
        };

        // The runbook's load check still sees what runs.
        let v = sh.ok(r#"RUNNING_COUNT=$(curl -s http://127.0.0.1:8900/status | jq -r '.running_count // 0')
echo "$RUNNING_COUNT""#);
        assert_eq!(v, "2", "{file} corrupt");
        assert_eq!(sh.run("curl -s -f http://127.0.0.1:8900/status >/dev/null").0, 0, "{file}: /status answers");
        let s = status(&api);
        assert!(names(&s), "{file} named in /status errors: {s}");

        let (code, v) = api.get("/health");
        assert_eq!((code, &v["healthy"]), (503, &json!(false)), "{file}: {v}");
        assert!(names(&v), "{file} named in /health errors: {v}");
        assert_eq!(
            sh.ok("curl -s http://127.0.0.1:8900/health | jq -r '.healthy // false'"),
            "false",
            "{file}: the pre-check says STOP"
        );

        let (code, body) = try_request(api.port, "GET", "/metrics", &[], b"").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(code, 200, "{file}: {text}");
        assert!(text.contains(&format!("cortex_status_file_unreadable{{file=\"{file}\"}} 1")), "{file}: {text}");
        assert!(text.contains("\ncortex_dispatches_running 2\n"), "{file}: {text}");

        let (code, v) = api.get("/scheduler/status");
        assert_eq!(code, 200, "{file}: {v}");
        let sched_corrupt = rel == "scheduler-state.json";
        assert_eq!(v["state"], if sched_corrupt { "unknown" } else { "running" }, "{file}: {v}");
        assert_eq!(names(&v), sched_corrupt, "{file}: {v}");

        let out = h.cortex(&["status", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{file}: cortex status says something is wrong");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["running_count"], 2, "{file}: {v}");
        assert!(names(&v) && v["healthy"] == false, "{file}: {v}");
        let text = h.cortex(&["status"]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("Dispatches: 2 running") && text.contains(&file), "{file}: {text}");

        let out = h.cortex(&["scheduler", "status", "--json"]);
        assert_eq!(out.status.code(), Some(if sched_corrupt { 1 } else { 0 }), "{file}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["state"], if sched_corrupt { "unknown" } else { "running" }, "{file}: {v}");

        with_lock(&h, lock, || replace(&path, &good));
        wait_until(LONG, &format!("healthy again once {file} is restored"), || api.get("/health").0 == 200);
        assert!(status(&api)["errors"].as_array().unwrap().is_empty());
    }

    // The JSONL files: bad lines are skipped; one that cannot be read at all is named.
    for rel in ["dashboard-events.jsonl", "event-acks.jsonl"] {
        jsonl_append(&h.join(&format!("coordination/{rel}")), b"not json {\n");
    }
    let (code, v) = api.get("/health");
    assert_eq!(code, 200, "bad lines are skipped: {v}");
    let acks = h.join("coordination/event-acks.jsonl");
    std::fs::remove_file(&acks).unwrap();
    std::fs::create_dir(&acks).unwrap();
    let (code, v) = api.get("/health");
    assert_eq!(code, 503, "{v}");
    assert!(v["errors"].as_array().unwrap().iter().any(|e| e["file"] == "coordination/event-acks.jsonl"), "{v}");
    assert_eq!(status(&api)["running_count"], 2);
    std::fs::remove_dir(&acks).unwrap();
    assert_eq!(api.get("/health").0, 200);

    std::fs::write(h.join("release"), b"").unwrap();
    wait_finished(&h, &held);
    assert_eq!(status(&api)["running_count"], 0);
}

fn jsonl_append(path: &std::path::Path, line: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(line).unwrap();
}

#[test]
fn a_handled_critical_event_is_acknowledged_and_the_precheck_goes_again() {
    let h = api_only_home();
    let mut api = Api::start(&h);
    let port = api.port;
    let sh = Shell { port };
    let precheck = r#"HEALTH_STATUS=$(curl -s http://127.0.0.1:8900/health | jq -r '.healthy // false')
if [ "$HEALTH_STATUS" != "true" ]; then
    echo "❌ STOP: System reports unhealthy - investigate first"
    exit 1
fi
echo "✅ System health verified""#;
    assert_eq!(sh.ok(precheck), "✅ System health verified");

    // Runbook 002 logs the recovery as critical; runbook 000's pre-check then says STOP.
    let id = h
        .cortex_ok(&[
            "event",
            "emit",
            "--type",
            "emergency_recovery",
            "--severity",
            "critical",
            "--message",
            "System recovered from P1 failure",
        ])
        .trim()
        .to_string();
    assert_eq!(sh.run(precheck).0, 1);

    // The operator acknowledges it: GO again, and the event is still listed, acknowledged.
    let out = h.cortex_ok(&["event", "ack", &id, "--note", "P1 handled, see incident report"]);
    assert!(out.contains(&id), "{out}");
    assert_eq!(sh.ok(precheck), "✅ System health verified");
    let (_, v) = api.get("/health");
    let listed = v["recent_events"].as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).cloned().unwrap();
    assert_eq!((listed["type"].as_str(), listed["acknowledged"].as_bool()), (Some("critical"), Some(true)), "{v}");
    // Audited as an info event, which never counts itself.
    let audit = h.events_of("event_acknowledged");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["severity"], "info");
    assert_eq!(audit[0]["data"]["event_id"], id.as_str());
    assert_eq!(audit[0]["data"]["note"], "P1 handled, see incident report");
    // Acknowledging it again changes nothing.
    assert!(h.cortex_ok(&["event", "ack", &id]).contains("already acknowledged"));
    assert_eq!(h.events_of("event_acknowledged").len(), 1);

    // A new critical event counts; acknowledged over the API (no tokens: open on loopback).
    let id2 = h.cortex_ok(&["event", "emit", "--type", "disk_full", "--severity", "critical"]).trim().to_string();
    assert_eq!(sh.run(precheck).0, 1);
    let v = sh.ok(&format!(
        r#"curl -s -X POST -d '{{"note": "disk cleaned"}}' http://127.0.0.1:8900/events/{id2}/ack | jq -r '.status'"#
    ));
    assert_eq!(v, "success");
    assert_eq!(sh.ok(precheck), "✅ System health verified");
    let (code, v) = api.post("/events/evt-no-such/ack", b"");
    assert_eq!(code, 404, "{v}");
    assert!(!h.cortex(&["event", "ack", "evt-no-such"]).status.success());

    // Several at once: --all; an error stays listed, acknowledged too.
    for sev in ["critical", "error", "critical"] {
        h.cortex_ok(&["event", "emit", "--type", "burst", "--severity", sev]);
    }
    assert_eq!(sh.run(precheck).0, 1);
    let v: Value = serde_json::from_str(&h.cortex_ok(&["--json", "event", "ack", "--all"])).unwrap();
    assert_eq!(v["acknowledged"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(sh.ok(precheck), "✅ System health verified");
    assert!(h.cortex_ok(&["event", "ack", "--all"]).contains("Nothing to acknowledge"));
    // A critical event after the --all still counts.
    h.cortex_ok(&["event", "emit", "--type", "later", "--severity", "critical"]);
    assert_eq!(sh.run(precheck).0, 1);
    let (code, _) = api.post("/events/all/ack", b"");
    assert_eq!(code, 200);

    // Acknowledgements are files: they survive an api restart. With tokens, acknowledging
    // needs one, like every other change.
    api.kill();
    let tokens = h.join("api-tokens");
    std::fs::write(&tokens, "alice:alice-0123456789abcdef-secret\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    h.set_config("api", "tokens_file", "\"api-tokens\"");
    let api = Api::start_on(&h, port);
    assert_eq!(sh.ok(precheck), "✅ System health verified");
    let id3 = h.cortex_ok(&["event", "emit", "--type", "again", "--severity", "critical"]).trim().to_string();
    let (code, _) = api.post(&format!("/events/{id3}/ack"), b"");
    assert_eq!(code, 401);
    assert_eq!(sh.run(precheck).0, 1);
    let (code, v) = json_request(
        port,
        "POST",
        &format!("/events/{id3}/ack"),
        &[("Authorization", "Bearer alice-0123456789abcdef-secret")],
        b"",
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["ack"]["by"].as_str().unwrap().starts_with("alice"), "{v}");
    assert_eq!(sh.ok(precheck), "✅ System health verified");
}
