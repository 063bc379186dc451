//! Every endpoint's fields and status codes against a live `cortex-api`.
use crate::support::api::*;
use crate::support::records::{completed, failed, running, write_dispatch};
use crate::support::*;

#[test]
fn scheduler_status_pause_resume_fields() {
    let h = api_only_home();
    let api = Api::start(&h);

    let (code, s) = api.get("/scheduler/status");
    assert_eq!(code, 200);
    for key in [
        "state",
        "paused",
        "uptime",
        "last_tick",
        "paused_at",
        "resumed_at",
        "paused_duration",
        "paused_by",
        "reason",
        "tick_interval",
    ] {
        assert!(s.get(key).is_some(), "scheduler status lacks {key}: {s}");
    }
    assert_eq!(s["state"], "running");
    assert_eq!(s["paused"], false);
    assert_eq!(s["paused_at"], serde_json::Value::Null);
    assert_eq!(s["tick_interval"], "30s");

    let (code, p) = api.post("/scheduler/pause", br#"{"reason": "disk swap"}"#);
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["status"], "success");
    assert_eq!(p["message"], "Scheduler paused");
    assert_eq!(p["paused"], true);
    assert!(p["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{p}");

    let (_, s) = api.get("/scheduler/status");
    assert_eq!(s["state"], "paused");
    assert_eq!(s["paused"], true);
    assert_eq!(s["paused_at"], p["timestamp"]);
    assert_eq!(s["reason"], "disk swap");
    assert_eq!(s["paused_by"], "anonymous");
    assert!(s["paused_from"].as_str().unwrap().starts_with("api 127.0.0.1:"), "{s}");
    assert!(s["paused_duration"].as_str().is_some_and(|d| d.ends_with('s')), "{s}");

    // Promise 6: pausing again succeeds, says so, and changes no timestamp.
    let before = std::fs::read(h.join("coordination/scheduler-state.json")).unwrap();
    let (code, again) = api.post("/scheduler/pause", b"");
    assert_eq!(code, 200);
    assert_eq!(again["status"], "success");
    assert_eq!(again["message"], "Scheduler already paused");
    assert_eq!(again["paused_at"], p["timestamp"]);
    assert_eq!(std::fs::read(h.join("coordination/scheduler-state.json")).unwrap(), before);
    assert_eq!(h.events_of("scheduler_paused").len(), 1);

    let (code, r) = api.post("/scheduler/resume", b"");
    assert_eq!(code, 200);
    assert_eq!(r["status"], "success");
    assert_eq!(r["message"], "Scheduler resumed");
    assert_eq!(r["paused"], false);
    let (_, s) = api.get("/scheduler/status");
    assert_eq!(s["state"], "running");
    assert_eq!(s["resumed_at"], r["timestamp"]);
    assert_eq!(s["paused_at"], serde_json::Value::Null);

    let (code, again) = api.post("/scheduler/resume", b"");
    assert_eq!(code, 200);
    assert_eq!(again["message"], "Scheduler already running");
    assert_eq!(h.events_of("scheduler_resumed").len(), 1);

    // The query form of the reason works too; a bad body changes nothing.
    let (code, e) = api.post("/scheduler/pause", b"{not json");
    assert_eq!(code, 400);
    assert_eq!(e["code"], 400);
    assert!(e["error"].as_str().unwrap().contains("not valid JSON"), "{e}");
    let (code, e) = api.post("/scheduler/pause", br#"{"reason": 5}"#);
    assert_eq!(code, 400, "{e}");
    assert_eq!(api.get("/scheduler/status").1["state"], "running");
}

#[test]
fn status_counts_dispatches_tasks_and_budget() {
    let h = api_only_home();
    write_dispatch(&h, "active", running("d-run-1", "t-1"));
    write_dispatch(&h, "active", running("d-run-2", "t-2"));
    write_dispatch(&h, "completed", completed("d-old", "t-3", 3600));
    write_dispatch(&h, "completed", completed("d-new", "t-4", 10));
    write_dispatch(&h, "failed", failed("d-bad", "t-5", 20));
    let api = Api::start(&h);

    let (code, s) = api.get("/status");
    assert_eq!(code, 200);
    for key in [
        "running_count",
        "recent_dispatch_count",
        "max_concurrent",
        "scheduler_state",
        "queued_count",
        "pending_retry_count",
        "uptime_s",
        "token_budget",
    ] {
        assert!(s.get(key).is_some(), "status lacks {key}: {s}");
    }
    assert_eq!(s["running_count"], 2);
    // Running ones (just now), d-new (10 s) and d-bad (20 s); not d-old (an hour ago).
    assert_eq!(s["recent_dispatch_count"], 4);
    assert_eq!(s["max_concurrent"], 4);
    assert_eq!(s["scheduler_state"], "running");
    assert_eq!(s["queued_count"], 0);
    assert_eq!(s["token_budget"]["total"], 500000);
    assert_eq!(s["token_budget"]["available"], 500000);

    // Changes on disk show at once (the cache follows file identity), config included.
    std::fs::rename(
        h.join("coordination/worker-specs/active/d-run-2.json"),
        h.join("coordination/worker-specs/completed/d-run-2.json"),
    )
    .unwrap();
    h.set_config("scheduler", "max_concurrent_dispatches", "15");
    h.cortex_ok(&["scheduler", "pause"]);
    let (_, s) = api.get("/status");
    assert_eq!(s["running_count"], 1);
    assert_eq!(s["max_concurrent"], 15);
    assert_eq!(s["scheduler_state"], "paused");
}

#[test]
fn dispatch_views_and_listing() {
    let h = api_only_home();
    write_dispatch(&h, "completed", completed("d-a1", "task-a", 100));
    write_dispatch(&h, "failed", failed("d-a0", "task-a", 200));
    write_dispatch(&h, "active", running("d-b1", "task-b"));
    std::fs::write(h.join("agents/logs/workers/d-a1.out"), "line one\nall done\n").unwrap();
    let api = Api::start(&h);

    let (code, v) = api.get("/dispatches/task-a");
    assert_eq!(code, 200);
    assert_eq!(v["task_id"], "task-a");
    let ds = v["dispatches"].as_array().unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0]["id"], "d-a0", "oldest first: {v}");
    assert_eq!(ds[0]["status"], "failed");
    assert_eq!(ds[0]["exit_code"], 2);
    let d = &ds[1];
    for key in [
        "id",
        "status",
        "stage",
        "attempt",
        "pid",
        "dispatched_at",
        "ended_at",
        "exit_code",
        "duration_s",
        "worker_type",
        "log_path",
        "output_tail",
    ] {
        assert!(d.get(key).is_some(), "dispatch view lacks {key}: {d}");
    }
    assert_eq!(d["status"], "completed");
    assert_eq!(d["stage"], "completed");
    assert_eq!(d["exit_code"], 0);
    assert_eq!(d["duration_s"], 1.5);
    assert_eq!(d["output_tail"], "line one\nall done\n");
    assert!(d["log_path"].as_str().unwrap().ends_with("agents/logs/workers/d-a1.out"));

    let (code, v) = api.get("/dispatches/d-b1");
    assert_eq!(code, 200);
    assert_eq!(v["task_id"], "task-b");
    assert_eq!(v["dispatches"][0]["status"], "running");
    assert_eq!(v["dispatches"][0]["pid"], std::process::id());

    let (code, v) = api.get("/dispatches?status=running");
    assert_eq!(code, 200);
    let ids: Vec<_> = v["dispatches"].as_array().unwrap().iter().map(|d| d["id"].clone()).collect();
    assert_eq!(ids, [serde_json::json!("d-b1")]);
    let (_, v) = api.get("/dispatches");
    assert_eq!(v["dispatches"].as_array().unwrap().len(), 3);
    let (code, e) = api.get("/dispatches?status=bogus");
    assert_eq!(code, 400);
    assert_eq!(e["code"], 400);

    let (code, e) = api.get("/dispatches/no-such-thing");
    assert_eq!(code, 404);
    assert_eq!(e["code"], 404);

    // The CLI shows the same records.
    let out = h.cortex_ok(&["--json", "dispatches", "--status", "running"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dispatches"][0]["id"], "d-b1");
    assert_eq!(v["count"], 1);
}

#[test]
fn cancel_refusals() {
    let h = api_only_home();
    write_dispatch(&h, "completed", completed("d-done", "t-1", 5));
    let api = Api::start(&h);

    let (code, e) = api.post("/dispatches/d-unknown/cancel", b"");
    assert_eq!(code, 404, "{e}");
    assert_eq!(e["code"], 404);

    let (code, e) = api.post("/dispatches/d-done/cancel", b"");
    assert_eq!(code, 400, "{e}");
    assert_eq!(e["code"], 400);
    assert!(e["error"].as_str().unwrap().starts_with("dispatch not running"), "{e}");
    assert!(!h.join("coordination/worker-specs/active/d-done.cancel").exists());

    // Ids that could escape the directory are unknown, never paths.
    let (code, _) = api.post("/dispatches/..%2F..%2Fcortex/cancel", b"");
    assert_eq!(code, 404);
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let h = api_only_home();
    let api = Api::start(&h);
    let (code, e) = api.get("/no/such/path");
    assert_eq!(code, 404);
    assert_eq!(e["code"], 404);
    assert!(e["error"].is_string());

    let (code, e) = json_request(api.port, "DELETE", "/scheduler/status", &[], b"");
    assert_eq!(code, 405);
    assert_eq!(e, serde_json::json!({"error": "method not allowed", "code": 405}));
    let (code, e) = api.get("/scheduler/pause");
    assert_eq!(code, 405);
    assert_eq!(e["error"], "method not allowed");
    let (code, _) = api.post("/status", b"");
    assert_eq!(code, 405);
    // Retry exists, but needs a token: without a tokens file it is refused before the lookup.
    let (code, _) = api.post("/dispatches/d-1/retry", b"");
    assert_eq!(code, 403);
}

#[test]
fn health_reports_daemons_and_event_classes() {
    let h = api_only_home();
    let api = Api::start(&h);
    let (code, v) = api.get("/health");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["daemons"]["api"], "running");
    assert_eq!(v["daemons"]["coordinator"], "disabled");
    assert!(v["events_1h"].is_number());

    for (sev, ty) in [("info", "task_note"), ("warning", "slow_heartbeat"), ("error", "dispatch_failed")] {
        h.cortex_ok(&[
            "event",
            "emit",
            "--type",
            ty,
            "--severity",
            sev,
            "--message",
            &format!("{sev} thing"),
            "--data",
            r#"{"task_id": "t-9", "dispatch_id": "d-9"}"#,
        ]);
    }
    let (code, v) = api.get("/health");
    assert_eq!(code, 200, "errors alone keep it healthy: {v}");
    let events = v["recent_events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "warning and error only: {v}");
    assert_eq!(events[0]["type"], "error", "newest first: {v}");
    assert_eq!(events[0]["event_type"], "dispatch_failed");
    assert_eq!(events[0]["task_id"], "t-9");
    assert_eq!(events[0]["dispatch_id"], "d-9");
    assert_eq!(events[0]["source"], "cli");
    assert!(events[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[1]["type"], "warning");

    h.cortex_ok(&["event", "emit", "--type", "disk_full", "--severity", "critical", "--message", "disk is full"]);
    let (code, v) = api.get("/health");
    assert_eq!(code, 503);
    assert_eq!(v["healthy"], false);
    assert_eq!(v["recent_events"][0]["type"], "critical");
    assert_eq!(v["events_1h"], 3);

    // A critical event older than the window no longer counts.
    let old = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let h2 = api_only_home();
    let line = serde_json::json!({"id": "evt-old", "timestamp": old, "type": "disk_full", "severity": "critical",
        "source": "test", "message": "old", "data": {}});
    std::fs::write(h2.join("coordination/dashboard-events.jsonl"), format!("{line}\nnot json\n")).unwrap();
    let api2 = Api::start(&h2);
    let (code, v) = api2.get("/health");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["recent_events"].as_array().unwrap().len(), 0);
    drop(api2);

    // Daemons down make it unhealthy.
    let h3 = TestHome::new();
    let api3 = Api::start(&h3);
    let (code, v) = api3.get("/health");
    assert_eq!(code, 503);
    assert_eq!(v["daemons"]["coordinator"], "stopped");
    assert!(v["problems"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().contains("coordinator")));
}

#[test]
fn metrics_exposition() {
    let h = api_only_home();
    write_dispatch(&h, "failed", failed("d-f1", "t-1", 10));
    write_dispatch(&h, "failed", failed("d-f2", "t-2", 10));
    write_dispatch(&h, "active", running("d-r", "t-3"));
    let api = Api::start(&h);
    h.cortex_ok(&["scheduler", "pause"]);
    let (code, body) = try_request(api.port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    for needle in [
        "cortex_dispatch_failures_total 2\n",
        "cortex_dispatches_failed_total 2\n",
        "cortex_dispatches_total 3\n",
        "cortex_dispatches_running 1\n",
        "cortex_scheduler_paused 1\n",
        "cortex_token_budget_available 500000\n",
        "cortex_daemon_up{daemon=\"api\"} 1\n",
        "cortex_daemon_up{daemon=\"coordinator\"} 0\n",
        "cortex_tasks{status=\"queued\"} 0\n",
        "# TYPE cortex_dispatch_latency_seconds\thistogram\n",
        "cortex_dispatch_latency_seconds_bucket{le=\"+Inf\"} 0\n",
        "cortex_uptime_seconds 0\n",
        "# TYPE cortex_dispatch_failures_total\tcounter\n",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
}
