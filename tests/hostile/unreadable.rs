//! Unreadable coordination files (mode 000), with every daemon running: each keeps running and
//! its loop keeps turning, the integration daemon reports the file (`integration_validation_failed`
//! "cannot be read"), `cortex validate` fails naming it, nothing overwrites it, and once its mode
//! is restored everything validates again.
//!
//! Tests run as root here, and permission bits do not stop root's reads. So when the test runs
//! as root, the home belongs to `nobody` and the daemons and the CLI run as `nobody` (uid 65534,
//! set with setuid/setgid in the child before exec); as any other user they run as that user.
use crate::support::faults::*;
use crate::support::fleet::Fleet;
use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Output;
use std::time::Duration;

const NOBODY: u32 = 65534;

/// The user the Cortex processes run as: `nobody` when we are root, else ourselves.
fn run_as() -> Option<u32> {
    is_root().then_some(NOBODY)
}

fn cortex_as(h: &TestHome, args: &[&str]) -> Output {
    let mut c = h.cmd();
    if let Some(uid) = run_as() {
        c.uid(uid).gid(uid);
    }
    c.args(args).output().expect("run cortex")
}

fn chown_tree(path: &std::path::Path, uid: u32) {
    let owner = Some(nix::unistd::Uid::from_raw(uid));
    let group = Some(nix::unistd::Gid::from_raw(uid));
    nix::unistd::chown(path, owner, group).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

#[test]
fn unreadable_files_are_reported_and_survived_then_recovered() {
    let h = TestHome::empty();
    if let Some(uid) = run_as() {
        chown_tree(h.path(), uid);
    }
    let out = cortex_as(&h, &["init"]);
    assert!(out.status.success(), "cortex init: {}", String::from_utf8_lossy(&out.stderr));
    let port = configure_fast(&h);
    let mut fleet = Fleet::start_as(&h, port, run_as());
    let mut cases = 0;
    for f in cortex::store::files::ALL {
        let rel = format!("coordination/{}", f.rel);
        let path = h.join(&rel);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let before = std::fs::read(&path).unwrap();
        let reported_before = file_events(&h, "integration_validation_failed", &rel).len();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Events cannot be appended to an unreadable event log (the append reads its last
        // byte): for that one file the report is `cortex validate` alone.
        if f.rel != "dashboard-events.jsonl" {
            wait_until(Duration::from_secs(30), &format!("a report that {rel} cannot be read"), || {
                fleet.assert_alive(&format!("{rel} unreadable"));
                file_events(&h, "integration_validation_failed", &rel)
                    .iter()
                    .skip(reported_before)
                    .any(|e| e["message"].as_str().unwrap_or("").contains("cannot be read"))
            });
        }
        let out = cortex_as(&h, &["validate"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "validate passed with {rel} unreadable:\n{stdout}");
        assert!(stdout.contains(&rel) && stdout.contains("unreadable"), "validate does not name {rel}:\n{stdout}");
        fleet.assert_alive(&format!("{rel} unreadable"));

        std::fs::set_permissions(&path, meta.permissions()).unwrap();
        let now = std::fs::read(&path).unwrap();
        if f.kind == cortex::store::files::FileKind::Json {
            assert!(now == before, "{rel} was overwritten while unreadable");
        } else {
            assert!(now.starts_with(&before), "{rel} was rewritten while unreadable");
        }
        let out = cortex_as(&h, &["validate"]);
        assert!(
            out.status.success(),
            "validate fails after {rel} is readable again:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} files checked");
    fleet.assert_loops_running(chrono::Utc::now(), "unreadable files");
    eprintln!(
        "unreadable: {cases} files, daemons as {}",
        if is_root() { "nobody (dropped from root)" } else { "the test user" }
    );
}
