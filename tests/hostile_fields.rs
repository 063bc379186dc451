//! Hostile field values — shell metacharacters, newlines, terminal escape sequences, quotes,
//! invalid UTF-8, 1 MB texts — through the paths that take free text today (`cortex event
//! emit`, `cortex schedule add`, the schedule library call behind it), with every daemon
//! running: nothing is executed, each value is stored exactly (one JSONL line per event, the
//! command argv intact), shown escaped (no raw newline or ESC reaches the terminal), and every
//! daemon keeps running.
//!
//! One argument on Linux is at most 128 KiB (MAX_ARG_STRLEN): the kernel refuses a longer one at
//! exec, before Cortex runs. So the CLI paths carry 120 KB values, and the 1 MB description goes
//! through `cortex::schedule::add`, the call the CLI makes, then is read back with the CLI.
mod api_support;
mod common;
mod faults_support;
use common::*;
use faults_support::*;
use std::path::Path;
use std::time::Duration;

/// A string that would do damage if it reached a shell or a terminal unescaped.
const NASTY: &str = "$(touch PWNED1); `touch PWNED2` | touch PWNED3 && touch PWNED4 > x; 'quote\" \\ \
                     \nsecond line\r\n\u{1b}]0;owned-title\u{7}\u{1b}[2J\u{9b}31m; rm -rf \"$HOME/nothing\" #";

fn no_side_effects(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "something was executed: {left:?} appeared in the working directory");
}

fn assert_shown_safely(what: &str, out: &[u8]) {
    assert!(!out.contains(&0x1b), "{what}: a raw ESC reached the terminal");
    assert!(!out.windows(2).any(|w| w == [0xc2, 0x9b]), "{what}: a raw CSI reached the terminal");
    assert!(!out.contains(&b'\r'), "{what}: a raw carriage return reached the terminal");
}

#[test]
fn metacharacters_newlines_escapes_and_big_values_are_stored_exactly_and_shown_safely() {
    let h = TestHome::new();
    let mut fleet = Fleet::start(&h);
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| h.cmd().current_dir(cwd.path()).args(args).output().expect("run cortex");

    // --- cortex event emit: one line, exact round trip.
    let big = format!("{NASTY}{}", "x".repeat(120_000));
    let data = serde_json::json!({"description": big, "nested": {"cmd": NASTY, "list": [NASTY, 1, null]}});
    let lines_before =
        std::fs::read(h.join("coordination/dashboard-events.jsonl")).unwrap().split(|b| *b == b'\n').count();
    let out = run(&[
        "event",
        "emit",
        "--type",
        "hostile_probe",
        "--severity",
        "warning",
        "--message",
        NASTY,
        "--source",
        "tester",
        "--data",
        &data.to_string(),
    ]);
    assert!(out.status.success(), "emit: {}", String::from_utf8_lossy(&out.stderr));
    let stored = events_of(&h, "hostile_probe");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["message"], NASTY);
    assert_eq!(stored[0]["data"], data);
    let raw = std::fs::read(h.join("coordination/dashboard-events.jsonl")).unwrap();
    // Other daemons append too; the probe itself is exactly one line.
    let probe_lines = raw.split(|b| *b == b'\n').filter(|l| l.windows(13).any(|w| w == b"hostile_probe")).count();
    assert_eq!(probe_lines, 1, "the event spans more than one line");
    assert!(raw.split(|b| *b == b'\n').count() > lines_before);

    // Shown: one line, escaped.
    let out = run(&["event", "list", "--type", "hostile_probe"]);
    assert!(out.status.success());
    assert_shown_safely("event list", &out.stdout);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one event, one line:\n{text}");
    assert!(text.contains("\\nsecond line") && text.contains("\\u{1b}]0;owned-title"), "{text}");
    let out = run(&["--json", "event", "list", "--type", "hostile_probe"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["events"][0]["message"], NASTY);

    // Invalid UTF-8 in an argument: refused with a clear error, nothing written, no crash.
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff\xfe");
        let out = h
            .cmd()
            .current_dir(cwd.path())
            .args(["event", "emit", "--type", "utf8_probe", "--message"])
            .arg(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
        assert!(events_of(&h, "utf8_probe").is_empty());
    }

    // --- cortex schedule add: name, description and argv with metacharacters.
    let desc = format!("{NASTY}{}", "d".repeat(120_000));
    let out = run(&[
        "schedule",
        "add",
        "--name",
        NASTY,
        "--every",
        "1h",
        "--description",
        &desc,
        "--",
        "sh",
        "-c",
        NASTY,
        "arg with spaces",
        "",
    ]);
    assert!(out.status.success(), "schedule add: {}", String::from_utf8_lossy(&out.stderr));
    assert_shown_safely("schedule add", &out.stdout);
    let doc = h.read_json("coordination/schedules.json");
    let s = &doc["schedules"][0];
    assert_eq!(s["name"], NASTY);
    assert_eq!(s["task"]["description"], desc);
    assert_eq!(s["task"]["command"], serde_json::json!(["sh", "-c", NASTY, "arg with spaces", ""]));
    let id = s["schedule_id"].as_str().unwrap().to_string();
    let out = run(&["schedule", "show", &id]);
    assert!(out.status.success());
    assert_shown_safely("schedule show", &out.stdout);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("command:      sh -c '$(touch PWNED1);"), "{shown}");
    assert!(shown.contains("'arg with spaces' ''"), "{shown}");
    let out = run(&["schedule", "list"]);
    assert_shown_safely("schedule list", &out.stdout);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "header and one row");

    // --- 1 MB description through the library call the CLI makes; read back with the CLI.
    let store = cortex::Store::new(cortex::Home::at(h.path()));
    let mega = format!("{NASTY}{}", "m".repeat(1024 * 1024));
    let added = cortex::schedule::add(
        &store,
        &cortex::clock::SystemClock,
        cortex::schedule::NewSchedule {
            name: "mega".into(),
            cron: Some("0 3 * * *".into()),
            every: None,
            timezone: None,
            misfire_policy: cortex::schedule::MisfirePolicy::Skip,
            max_instances: 1,
            task: cortex::schedule::TaskTemplate {
                description: mega.clone(),
                priority: cortex::task::Priority::Medium,
                worker_type: None,
                command: vec!["sh".into(), "-c".into(), NASTY.into()],
                budget: None,
                max_attempts: None,
            },
        },
        &cortex::scheduler::Actor { who: "tester".into(), from: "test".into() },
    )
    .expect("add a schedule with a 1 MB description");
    let out = run(&["--json", "schedule", "show", &added.schedule_id]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"]["description"], mega);
    let out = run(&["schedule", "show", "mega"]);
    assert_shown_safely("schedule show (1 MB)", &out.stdout);
    let out = run(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    no_side_effects(cwd.path());
    assert!(!h.join("PWNED1").exists() && !Path::new("PWNED1").exists());
    let since = chrono::Utc::now();
    fleet.assert_loops_running(&h, since, "hostile field values");
    wait_until(Duration::from_secs(10), "the API serves /status", || {
        matches!(api_support::try_request(fleet.api_port, "GET", "/status", &[], b""), Ok((200, _)))
    });
}

/// Regression (found by the schedule_expr fuzz target, then by hand on the other duration
/// options): a huge duration panicked (`Duration::from_secs_f64`, `DateTime - TimeDelta`).
#[test]
fn huge_durations_on_the_command_line_are_refused_or_clamped_not_a_panic() {
    let h = TestHome::new();
    h.cortex_ok(&["event", "emit", "--type", "old_probe", "--message", "m"]);
    let out = h.cortex(&["event", "list", "--since", "99999999999d", "--type", "old_probe"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("old_probe"));
    for args in [
        &["schedule", "add", "--name", "n", "--every", "30830888888888880088888888800", "--", "true"][..],
        &["schedule", "add", "--name", "n", "--every", "9223372036854775807", "--", "true"],
        &["recover-stale", "--older-than", "99999999999999999999d", "--dry-run"],
    ] {
        let out = h.cortex(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "cortex {args:?} panicked: {err}");
        assert!(!err.contains("panicked"), "cortex {args:?}: {err}");
    }
    let out = h.cortex(&["schedule", "add", "--name", "n", "--every", "30830888888888880088888888800", "--", "true"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("too long"));
}
