//! Progress of restore (verify, extract, swap) and repair on standard error when it is not a
//! terminal: one plain line when each stage starts and one when it ends, no bar redraws;
//! `--quiet` (and `--json`) silence them; the report on standard output stays.
use crate::support::*;

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect()
}

#[test]
fn restore_and_repair_print_plain_stage_lines_off_a_terminal_and_nothing_with_quiet() {
    let h = TestHome::new();
    h.cortex_ok(&["task", "add", "--description", "something to back up", "--", "true"]);
    h.cortex_ok(&["backup"]);

    let out = h.cortex(&["restore", "--latest", "--yes"]);
    assert!(out.status.success(), "{out:?}");
    let lines = stderr_lines(&out);
    let stages: Vec<&str> = lines.iter().map(|l| l.as_str()).filter(|l| l.starts_with("restore: ")).collect();
    assert_eq!(stages.len(), 6, "a start and an end line per stage: {lines:#?}");
    for (i, stage) in ["verify", "extract", "swap"].iter().enumerate() {
        let start = stages[2 * i];
        let end = stages[2 * i + 1];
        assert!(start.starts_with(&format!("restore: {stage}: ")), "{lines:#?}");
        assert!(end.starts_with(&format!("restore: {stage}: done (")), "{lines:#?}");
    }
    assert!(stages[0].ends_with(" bytes") && stages[4].ends_with(" items"), "{stages:#?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\r'), "no bar redraws off a terminal");

    let quiet = h.cortex(&["restore", "--latest", "--yes", "--quiet"]);
    assert!(quiet.status.success(), "{quiet:?}");
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("restore: "), "{quiet:?}");
    assert!(!quiet.stdout.is_empty(), "the report is still printed");
    let json = h.cortex(&["restore", "--latest", "--yes", "--json"]);
    assert!(json.status.success());
    assert!(!String::from_utf8_lossy(&json.stderr).contains("restore: "), "{json:?}");

    let out = h.cortex(&["repair"]);
    assert!(out.status.success(), "{out:?}");
    let lines = stderr_lines(&out);
    let stages: Vec<&String> = lines.iter().filter(|l| l.starts_with("repair: ")).collect();
    assert_eq!(stages.len(), 2, "{lines:#?}");
    assert!(stages[0].starts_with("repair: check: ") && stages[0].ends_with(" items"), "{stages:#?}");
    assert!(stages[1].starts_with("repair: check: done ("), "{stages:#?}");
    for args in [&["repair", "--quiet"][..], &["repair", "-q"], &["repair", "--json"]] {
        let out = h.cortex(args);
        assert!(out.status.success(), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("repair: "), "{args:?}: {out:?}");
    }
}
