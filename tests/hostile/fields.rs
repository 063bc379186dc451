//! Hostile field values — shell metacharacters, newlines, terminal escape sequences, quotes,
//! invalid UTF-8, 1 MB texts — through the paths that take free text today (`cortex event
//! emit`, `cortex schedule add`, the schedule library call behind it), with every daemon
//! running: nothing is executed, each value is stored exactly (one JSONL line per event, the
//! command argv intact), shown escaped (no raw newline or ESC reaches the terminal), and every
//! daemon keeps running.
//!
//! Tasks too (`cortex task add`, the library's `add_task` for 1 MB), run through a real
//! coordinator and worker whose command templates hand the description to a script as one
//! argument: nothing is injected (no marker file appears, no template placeholder inside a
//! description is expanded), the queue, archive and `task show --json` hold the exact strings,
//! `task list/show`, `dispatches` and the daemon logs show them escaped, and a command printing
//! invalid UTF-8 and escape sequences gives a valid JSON `output_tail` through the API.
//!
//! One argument on Linux is at most 128 KiB (MAX_ARG_STRLEN): the kernel refuses a longer one at
//! exec, before Cortex runs. So the CLI paths carry 120 KB values, and the 1 MB description goes
//! through `cortex::domain::schedule::add`, the call the CLI makes, then is read back with the CLI.
use crate::support::faults::*;
use crate::support::fleet::Fleet;
use crate::support::*;
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
    let stored = h.events_of("hostile_probe");
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
        assert!(h.events_of("utf8_probe").is_empty());
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
    let added = cortex::domain::schedule::add(
        &store,
        &cortex::base::clock::SystemClock,
        cortex::domain::schedule::NewSchedule {
            name: "mega".into(),
            cron: Some("0 3 * * *".into()),
            every: None,
            timezone: None,
            misfire_policy: cortex::domain::schedule::MisfirePolicy::Skip,
            max_instances: 1,
            task: cortex::domain::schedule::TaskTemplate {
                description: mega.clone(),
                priority: cortex::domain::task::Priority::Medium,
                worker_type: None,
                command: vec!["sh".into(), "-c".into(), NASTY.into()],
                budget: None,
                max_attempts: None,
            },
        },
        &cortex::domain::scheduler_state::Actor { who: "tester".into(), from: "test".into() },
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
    fleet.assert_loops_running(since, "hostile field values");
    wait_until(Duration::from_secs(10), "the API serves /status", || {
        matches!(api::try_request(fleet.api_port, "GET", "/status", &[], b""), Ok((200, _)))
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

/// Every file under `dir` whose name starts with PWNED (a marker an injection would create).
fn markers_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with("PWNED") {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

#[test]
fn hostile_task_fields_inject_nothing_are_stored_exactly_and_shown_safely() {
    use serde_json::{Value, json};
    let h = TestHome::new();
    let port = configure_fast(&h);
    // Every worker type hands the description to a script as $1; the script writes it to a file
    // and prints invalid UTF-8, terminal escapes and a CR on stdout and stderr.
    let outside = tempfile::tempdir().unwrap();
    let script = format!(
        "printf '%s' \"$1\" > '{}'/\"$CORTEX_TASK_ID\".arg; printf 'out \\033[2J\\033]0;title\\007 \\377\\376 bad\\r\\n'; \
         printf 'err \\377\\033[31m\\n' >&2",
        outside.path().display()
    );
    let types_path = h.join("coordination/config/worker-types.json");
    let mut types: Value = serde_json::from_slice(&std::fs::read(&types_path).unwrap()).unwrap();
    for (_, t) in types["worker_types"].as_object_mut().unwrap() {
        t["command"] = json!(["sh", "-c", script, "cortex-task", "{description}"]);
    }
    std::fs::write(&types_path, serde_json::to_vec_pretty(&types).unwrap()).unwrap();
    let mut fleet = Fleet::start_configured(&h, port);
    let _coordinator = task::start(&h, "coordinator");
    let _worker = task::start(&h, "worker");
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| h.cmd().current_dir(cwd.path()).args(args).output().expect("run cortex");
    let add = |args: &[&str]| -> String {
        let mut a = vec!["task", "add"];
        a.extend_from_slice(args);
        let out = run(&a);
        assert!(out.status.success(), "task add: {}", String::from_utf8_lossy(&out.stderr));
        assert_shown_safely("task add", &out.stdout);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // Through the template, with placeholders that must stay text, 120 KB.
    let templated = format!("{NASTY} {{home}} {{task_id}} {{description}} {{{}", "x".repeat(120_000));
    let a = add(&["--type", "analysis-worker", "--description", &templated]);
    // Routed: regex syntax in a description is only ever matched as text ("bug" picks fix-worker).
    let routed = format!("bug\r\n\u{1b}[2J\u{9b}31m (.*)[a-z]+ ^$ \\d{{999999}} (?i) [ {NASTY}");
    let b = add(&["--description", &routed]);
    // Its own argv, metacharacters and all.
    let argv = ["printf", "%s\\n", NASTY, "arg with spaces", ""];
    let mut args = vec!["--type", "analysis-worker", "--description", "explicit argv", "--"];
    args.extend_from_slice(&argv);
    let c = add(&args);
    // 1 MB descriptions through the library: one with its own command, one through the template
    // (one argument is at most 128 KiB: exec refuses it, the task fails saying so).
    let store = cortex::Store::new(cortex::Home::at(h.path()));
    let mega = format!("{NASTY}{}", "m".repeat(1024 * 1024));
    let new = |description: &str, command: Vec<String>, max_attempts| cortex::domain::task::ops::NewTask {
        description: description.to_string(),
        worker_type: Some("analysis-worker".into()),
        command,
        max_attempts: Some(max_attempts),
        ..Default::default()
    };
    let d = cortex::domain::task::ops::add_task(&store, new(&mega, vec!["true".into()], 3)).unwrap().task_id;
    let mega2 = format!("{mega} again");
    let e = cortex::domain::task::ops::add_task(&store, new(&mega2, vec![], 1)).unwrap().task_id;
    let ids = [a.clone(), b.clone(), c.clone(), d.clone(), e.clone()];
    let finished = task::wait_finished(&h, &ids);
    let status: Vec<&str> = finished.iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(
        status,
        ["completed", "completed", "completed", "completed", "failed"],
        "{:?}",
        finished.iter().map(|t| &t["result"]).collect::<Vec<_>>()
    );
    let e_error = finished[4]["result"]["error"].as_str().unwrap_or("").to_string();
    assert!(e_error.contains("Argument list too long"), "{e_error}");

    // Nothing injected; the script got each description exactly, placeholders unexpanded.
    for dir in [h.path(), cwd.path(), outside.path()] {
        assert!(markers_under(dir).is_empty(), "injected: {:?}", markers_under(dir));
    }
    assert_eq!(std::fs::read_to_string(outside.path().join(format!("{a}.arg"))).unwrap(), templated);
    assert_eq!(std::fs::read_to_string(outside.path().join(format!("{b}.arg"))).unwrap(), routed);

    // Stored exactly: `task show --json`, the archive, the routing log.
    let shown = |id: &str| task::show(&h, id);
    assert_eq!(shown(&a)["description"], templated.as_str());
    let tb = shown(&b);
    assert_eq!((tb["description"].as_str(), tb["worker_type"].as_str()), (Some(routed.as_str()), Some("fix-worker")));
    assert_eq!(tb["routing"]["rule"], "fix");
    assert_eq!(shown(&c)["command"], json!(argv));
    assert_eq!(shown(&d)["description"], mega.as_str());
    wait_until(Duration::from_secs(20), "every task archived", || {
        h.queue_json()["tasks"].as_array().is_some_and(|t| t.is_empty())
    });
    let (archived, bad) = cortex::domain::task::archive::all(&store).unwrap();
    assert_eq!(bad, 0);
    let find = |id: &str| archived.iter().find(|t| t.task_id == id).unwrap_or_else(|| panic!("{id} not archived"));
    assert_eq!(find(&a).description, templated);
    assert_eq!(find(&b).description, routed);
    assert_eq!(find(&c).command, argv.map(String::from).to_vec());
    assert_eq!(find(&d).description, mega);
    assert_eq!(find(&e).description, mega2);
    let decisions = std::fs::read_to_string(h.join("coordination/moe/routing-decisions.jsonl")).unwrap();
    let decision: Value = decisions
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["task_id"] == b.as_str())
        .unwrap();
    assert_eq!(decision["description"], routed.as_str());

    // Shown escaped: one line per task in the list, no raw control character anywhere.
    let out = run(&["task", "list", "--all"]);
    assert!(out.status.success());
    assert_shown_safely("task list", &out.stdout);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        ids.len(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for id in &ids {
        let out = run(&["task", "show", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_shown_safely("task show", &out.stdout);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().all(|l| l.starts_with(|c: char| c.is_ascii_lowercase())),
            "a value faked a line:\n{}",
            text.chars().take(2000).collect::<String>()
        );
    }
    let shown_c = String::from_utf8(run(&["task", "show", &c]).stdout).unwrap();
    assert!(shown_c.contains("command          printf '%s\\n' '$(touch PWNED1);"), "{shown_c}");
    for args in [
        &["dispatches"][..],
        &["dispatches", "--task", &c],
        &["logs", "tail", "worker"],
        &["logs", "tail", "coordinator"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_shown_safely(&format!("{args:?}"), &out.stdout);
    }
    let out = run(&["--json", "dispatches"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("dispatches --json is JSON");
    assert!(v["count"].as_u64().unwrap() >= ids.len() as u64);

    // The API: output that is not UTF-8 and full of escapes comes back as valid JSON.
    for id in [&a, &c] {
        let (code, body) = api::try_request(fleet.api_port, "GET", &format!("/dispatches/{id}"), &[], b"").unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).expect("GET /dispatches/<task> is JSON");
        let tail = v["dispatches"][0]["output_tail"].as_str().unwrap_or_else(|| panic!("no output_tail: {v}"));
        assert!(tail.starts_with("out ") || tail.contains("$(touch PWNED1)"), "{tail:?}");
        if id == &a {
            assert!(tail.contains('\u{fffd}') && tail.contains('\u{1b}'), "{tail:?}");
        }
    }

    let out = run(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    no_side_effects(cwd.path());
    fleet.assert_loops_running(chrono::Utc::now(), "hostile task fields");
}
