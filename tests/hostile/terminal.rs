//! Hostile values reaching the operator's terminal: a pause reason set through the real API and
//! a schedule name and description set through the CLI carry OSC (window title), CSI (clear
//! screen, C1 form too), a carriage return, a newline followed by a fake status line, and the
//! bidirectional controls (U+202A–U+202E, U+2066–U+2069). Every command that prints them
//! (`cortex scheduler status`, `cortex status`, `cortex schedule run-now|show|list|pause`,
//! `cortex event list`, and the error of a refused request) shows them escaped: no raw ESC, C1
//! CSI, CR, bidi control, and no line of output the value made up. `--json` output holds the
//! exact value, with the C1 and bidi controls JSON leaves raw written as `\u` escapes (`\u009b`).
use crate::support::api::*;
use crate::support::*;

/// A value that sets the window title, clears the screen, fakes a status line and reorders text.
const HOSTILE: &str = "maint\u{1b}]0;pwned-title\u{7}\u{1b}[2J\u{1b}[H\u{9b}31m\r\nScheduler: running\n\
                       \u{202e}gnirts desrever\u{202c} \u{2066}iso\u{2069} \u{202a}\u{202b}\u{202d}\u{2067}\u{2068}end";

const BIDI: [char; 9] =
    ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'];

/// Fails when `out` (a command's stdout or stderr) carries anything of the hostile value raw.
fn assert_escaped(what: &str, out: &[u8]) {
    assert!(!out.contains(&0x1b), "{what}: a raw ESC reached the terminal:\n{}", String::from_utf8_lossy(out));
    assert!(!out.windows(2).any(|w| w == [0xc2, 0x9b]), "{what}: a raw C1 CSI reached the terminal");
    assert!(!out.contains(&b'\r'), "{what}: a raw carriage return reached the terminal");
    let text = String::from_utf8_lossy(out);
    for c in BIDI {
        assert!(!text.contains(c), "{what}: the bidirectional control U+{:04X} reached the terminal", c as u32);
    }
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("Scheduler: running") && !line.starts_with("end"),
            "{what}: the value made up an output line {line:?}:\n{text}"
        );
    }
}

fn run(h: &TestHome, args: &[&str]) -> std::process::Output {
    h.cortex(args)
}

#[test]
fn a_hostile_pause_reason_from_the_api_is_shown_escaped_by_status_commands() {
    let h = TestHome::new();
    let api = Api::start(&h);
    let body = serde_json::json!({ "reason": HOSTILE }).to_string();
    let (code, reply) = api.post("/scheduler/pause", body.as_bytes());
    assert_eq!(code, 200, "{reply}");
    // Stored exactly: escaping is for display only.
    assert_eq!(h.read_json("coordination/scheduler-state.json")["reason"], HOSTILE);

    let status = run(&h, &["scheduler", "status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_escaped("cortex scheduler status", &status.stdout);
    assert_escaped("cortex scheduler status (stderr)", &status.stderr);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("Scheduler: paused"), "{shown}");
    assert!(
        shown.contains("\\u{1b}]0;pwned-title") && shown.contains("\\u{202e}"),
        "reason not shown escaped: {shown}"
    );

    let overview = run(&h, &["status"]);
    assert_escaped("cortex status", &overview.stdout);
    assert_escaped("cortex status (stderr)", &overview.stderr);
    let shown = String::from_utf8_lossy(&overview.stdout);
    assert!(shown.contains("Scheduler: paused (maint\\u{1b}]0;"), "{shown}");

    // --json: the same value exactly, with no raw C1 or bidi control (JSON leaves those raw).
    let json = run(&h, &["--json", "scheduler", "status"]);
    assert_escaped("cortex --json scheduler status", &json.stdout);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["reason"], HOSTILE);

    // The same pause seen from the event log.
    let events = run(&h, &["event", "list", "--type", "scheduler_paused"]);
    assert_escaped("cortex event list", &events.stdout);

    // `cortex scheduler pause` again: "already paused (since .., by ..)".
    let again = run(&h, &["scheduler", "pause", "--reason", HOSTILE]);
    assert_escaped("cortex scheduler pause (already paused)", &again.stdout);
    drop(api);
}

#[test]
fn a_hostile_schedule_name_is_shown_escaped_by_every_schedule_command() {
    let h = TestHome::new();
    let out = run(
        &h,
        &["schedule", "add", "--name", HOSTILE, "--description", HOSTILE, "--every", "1h", "--", "echo", HOSTILE],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_escaped("cortex schedule add", &out.stdout);
    let id = h.read_json("coordination/schedules.json")["schedules"][0]["schedule_id"].as_str().unwrap().to_string();
    let run_now = run(&h, &["schedule", "run-now", &id]);
    assert_escaped("cortex schedule run-now", &run_now.stdout);
    let shown = String::from_utf8_lossy(&run_now.stdout);
    assert!(shown.contains("(maint\\u{1b}]0;pwned-title"), "{shown}");

    for args in [
        vec!["schedule", "run-now", id.as_str()],
        vec!["schedule", "show", id.as_str()],
        vec!["schedule", "list"],
        vec!["schedule", "pause", id.as_str(), "--reason", HOSTILE],
        vec!["schedule", "show", id.as_str()],
    ] {
        let out = run(&h, &args);
        assert!(out.status.success(), "cortex {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_escaped(&format!("cortex {args:?}"), &out.stdout);
        assert_escaped(&format!("cortex {args:?} (stderr)"), &out.stderr);
    }

    // An error quoting a hostile value (an unknown schedule id) is escaped too.
    let refused = run(&h, &["schedule", "show", &format!("missing-{HOSTILE}")]);
    assert!(!refused.status.success());
    assert_escaped("cortex schedule show <hostile id> (error)", &refused.stderr);
}
