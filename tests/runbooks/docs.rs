//! One test per runbook in `docs/runbooks/`, and the checks that keep the set complete: every
//! runbook file has its test, every fenced block of every file follows the conventions, the index
//! links every runbook, and `cortex runbooks` lists them all.

use crate::markdown::{blocks, steps};
use crate::runner::{root, run_runbook};

/// Every runbook the tests run, by file name without `.md` (README.md is the index).
const RUNBOOKS: &[&str] = &["scheduler", "drill", "emergency-recovery", "daemons", "schedules-and-retries", "backup"];

#[test]
fn scheduler() {
    run_runbook("scheduler");
}

#[test]
fn drill() {
    run_runbook("drill");
}

#[test]
fn emergency_recovery() {
    run_runbook("emergency-recovery");
}

#[test]
fn daemons() {
    run_runbook("daemons");
}

#[test]
fn schedules_and_retries() {
    run_runbook("schedules-and-retries");
}

#[test]
fn backup() {
    run_runbook("backup");
}

fn runbook_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("docs/runbooks"))
        .expect("read docs/runbooks")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .map(|n| n.trim_end_matches(".md").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn every_runbook_has_its_test_and_follows_the_conventions() {
    let mut tested: Vec<String> = RUNBOOKS.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(runbook_files(), tested, "docs/runbooks/*.md and the runbooks this test runs differ: add a test");
    let index = std::fs::read_to_string(root().join("docs/runbooks/README.md")).expect("read the index");
    let mut problems = Vec::new();
    for name in runbook_files() {
        if !index.contains(&format!("({name}.md)")) {
            problems.push(format!("docs/runbooks/README.md does not link {name}.md"));
        }
    }
    for file in runbook_files().into_iter().map(|n| format!("{n}.md")).chain(["README.md".to_string()]) {
        let md = std::fs::read_to_string(root().join("docs/runbooks").join(&file)).unwrap();
        match steps(&md) {
            Ok(s) if file != "README.md" && s.iter().all(|s| s.expect.is_none()) => {
                problems.push(format!("docs/runbooks/{file}: no block states its expected output"))
            }
            Ok(_) => {}
            Err(p) => problems.extend(p.into_iter().map(|p| format!("docs/runbooks/{file}: {p}"))),
        }
        for b in blocks(&md).unwrap_or_default() {
            let runs = b.info.split_whitespace().next() == Some("sh") && !b.info.contains("illustrative");
            if runs && b.text.contains("//127.0.0.1:8900") {
                problems.push(format!(
                    "docs/runbooks/{file}:{}: a block the test runs calls http://127.0.0.1:8900; use http://$CORTEX_API",
                    b.line
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `cortex` with no home at all: the runbooks are built into the binary.
fn cortex_without_home(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::bin("cortex"))
        .args(args)
        .env("HOME", "/nonexistent")
        .env_remove("CORTEX_HOME")
        .env_remove("COMMIT_RELAY_HOME")
        .current_dir("/")
        .output()
        .expect("run cortex")
}

#[test]
fn cortex_runbooks_lists_every_runbook_and_prints_each_as_written() {
    let out = cortex_without_home(&["runbooks", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = v["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .filter(|n| n != "README")
        .collect();
    listed.sort();
    assert_eq!(listed, runbook_files(), "`cortex runbooks` and docs/runbooks/*.md differ: update src/cli/runbooks.rs");
    let help = String::from_utf8_lossy(&cortex_without_home(&["help", "runbooks"]).stdout).into_owned();
    let top = String::from_utf8_lossy(&cortex_without_home(&["--help"]).stdout).into_owned();
    assert!(top.contains("cortex help runbooks"), "cortex --help does not point to the runbooks:\n{top}");
    for name in runbook_files() {
        assert!(help.contains(&format!("docs/runbooks/{name}.md")), "`cortex help runbooks` lacks {name}:\n{help}");
        let printed = cortex_without_home(&["runbooks", &name]);
        let file = std::fs::read(root().join(format!("docs/runbooks/{name}.md"))).unwrap();
        assert_eq!(printed.stdout, file, "`cortex runbooks {name}` is not docs/runbooks/{name}.md");
    }
    let unknown = cortex_without_home(&["runbooks", "no-such-runbook"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("the runbooks are: scheduler"));
}
