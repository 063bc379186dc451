//! `cortex event emit`: the flag form and the older positional form both append one
//! schema-valid event line; bad `--data` is refused with a clear error and writes nothing.

use crate::support::*;
use serde_json::Value;

fn last_event(h: &TestHome) -> Value {
    let text = std::fs::read_to_string(h.join("coordination/dashboard-events.jsonl")).unwrap();
    let line = text.lines().last().expect("an event line");
    let v: Value = serde_json::from_str(line).expect("the line parses");
    let violations = cortex::base::schema::check("event", &v, 5);
    assert!(violations.is_empty(), "schema violations {violations:?} in {line}");
    assert!(cortex::base::clock::parse_ts(v["timestamp"].as_str().unwrap()).is_some(), "RFC 3339 timestamp: {line}");
    v
}

#[test]
fn emit_flag_form_writes_a_schema_valid_line() {
    let h = TestHome::new();
    let id = h.cortex_ok(&[
        "event",
        "emit",
        "--type",
        "deploy_finished",
        "--severity",
        "warning",
        "--message",
        "deploy took long",
        "--data",
        r#"{"task_id": "t-42", "seconds": 310}"#,
        "--source",
        "ops",
    ]);
    let e = last_event(&h);
    assert_eq!(e["id"], id.trim());
    assert_eq!(e["type"], "deploy_finished");
    assert_eq!(e["severity"], "warning");
    assert_eq!(e["message"], "deploy took long");
    assert_eq!(e["source"], "ops");
    assert_eq!(e["data"], serde_json::json!({"task_id": "t-42", "seconds": 310}));

    let out = h.cortex_ok(&["--json", "event", "list", "--type", "deploy_finished"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["events"][0]["id"], id.trim());
    assert_eq!(listed["malformed_lines"], 0);
}

#[test]
fn emit_positional_form_writes_a_schema_valid_line() {
    let h = TestHome::new();
    h.cortex_ok(&["event", "emit", "task_started", r#"{"task_id": "t-1", "message": "started t-1"}"#, "pm"]);
    let e = last_event(&h);
    assert_eq!(e["type"], "task_started");
    assert_eq!(e["source"], "pm");
    assert_eq!(e["severity"], "info");
    assert_eq!(e["message"], "started t-1");
    assert_eq!(e["data"]["task_id"], "t-1");

    // Without SOURCE the source is `cli`.
    h.cortex_ok(&["event", "emit", "heartbeat_missed", "{}"]);
    let e = last_event(&h);
    assert_eq!((e["type"].as_str(), e["source"].as_str()), (Some("heartbeat_missed"), Some("cli")));
}

#[test]
fn bad_data_is_refused_and_writes_nothing() {
    let h = TestHome::new();
    h.cortex_ok(&["event", "emit", "--type", "before", "--message", "x"]);
    let events = h.join("coordination/dashboard-events.jsonl");
    let before = std::fs::read(&events).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["event", "emit", "--type", "t", "--data", "{not json"], "--data is not JSON"),
        (&["event", "emit", "t", "{\"unterminated\": "], "--data is not JSON"),
        (&["event", "emit", "--type", "t", "--data", "[1, 2]"], "must be a JSON object"),
        (&["event", "emit", "--type", "t", "--severity", "loud"], "unknown severity"),
    ];
    for (args, expected) in cases {
        let out = h.cortex(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: stderr should say {expected:?}: {stderr}");
        assert_eq!(std::fs::read(&events).unwrap(), before, "{args:?} must write nothing");
    }
    // A missing type is an error too.
    let out = h.cortex(&["event", "emit", "--message", "no type"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--type"));
    assert_eq!(std::fs::read(&events).unwrap(), before);
}

/// `cortex event ack`: each acknowledgement is one schema-valid line of `event-acks.jsonl`
/// (`cortex validate` finds nothing wrong), followed by its `event_acknowledged` info event.
#[test]
fn ack_writes_schema_valid_lines_and_an_info_event() {
    let h = TestHome::new();
    let id = h.cortex_ok(&["event", "emit", "--type", "disk_full", "--severity", "critical"]).trim().to_string();
    h.cortex_ok(&["event", "ack", &id, "--note", "cleaned\nup"]);
    let audit = last_event(&h);
    assert_eq!((audit["type"].as_str(), audit["severity"].as_str()), (Some("event_acknowledged"), Some("info")));
    h.cortex_ok(&["event", "emit", "--type", "oops", "--severity", "error"]);
    h.cortex_ok(&["event", "ack", "--all"]);
    let text = std::fs::read_to_string(h.join("coordination/event-acks.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for v in &lines {
        let violations = cortex::base::schema::check("event-ack", v, 5);
        assert!(violations.is_empty(), "schema violations {violations:?} in {v}");
    }
    assert_eq!(lines[0]["event_id"], id.as_str());
    assert_eq!(lines[0]["note"], "cleaned\nup");
    assert!(lines[1]["up_to"].is_string() && lines[1].get("event_id").is_none());
    // A line naming both an event and a time is not an acknowledgement the schema allows.
    let both = serde_json::json!({"event_id": "e", "up_to": "t", "at": "t", "by": "me"});
    assert!(!cortex::base::schema::check("event-ack", &both, 5).is_empty());
    let out = h.cortex(&["validate"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.lines().any(|l| l == "[OK] coordination/event-acks.jsonl"), "{report}");
    // Unknown ids are refused with what to do.
    let out = h.cortex(&["event", "ack", "evt-nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cortex event list"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
