//! The cron-facing wrappers: `scripts/backup.sh` and `scripts/restore-from-backup.sh` (the
//! emergency-recovery runbook's form), run as an operator or cron would.
use crate::support::*;
use std::path::PathBuf;
use std::process::{Command, Output};

fn script(h: &TestHome, rel: &str, args: &[&str], cortex_bin: bool) -> Output {
    let mut c = Command::new("bash");
    c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).args(args);
    c.env("CORTEX_HOME", h.path()).env_remove("COMMIT_RELAY_HOME").env_remove("CORTEX_BIN");
    if cortex_bin {
        c.env("CORTEX_BIN", bin("cortex"));
    } else {
        // A minimal PATH with the binaries on it, as in a crontab with PATH=... set.
        c.env("PATH", format!("{}:/usr/bin:/bin", bin_dir().display()));
    }
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn backup_then_list_and_verify_through_the_scripts() {
    let h = TestHome::new();
    let out = script(&h, "scripts/backup.sh", &[], true);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("backup finished"), "{}", text(&out.stdout));
    let archives: Vec<PathBuf> = std::fs::read_dir(h.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");

    let out = script(&h, "scripts/restore-from-backup.sh", &["--list"], false);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let name = archives[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(text(&out.stdout).contains(&name), "{}", text(&out.stdout));

    let file = archives[0].to_string_lossy().into_owned();
    let out = script(&h, "scripts/restore-from-backup.sh", &["--verify-only", "--file", &file], false);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));

    let out = script(&h, "scripts/restore-from-backup.sh", &["--help"], false);
    assert!(out.status.success() && text(&out.stdout).contains("--latest"), "{}", text(&out.stdout));
}

#[test]
fn a_missing_binary_fails_the_backup() {
    let h = TestHome::new();
    let out = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/backup.sh"))
        .env("CORTEX_HOME", h.path())
        .env("CORTEX_BIN", h.join("no-such-cortex"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        std::fs::read_dir(h.join("backups"))
            .unwrap()
            .flatten()
            .all(|e| !e.path().to_string_lossy().ends_with(".tar.gz"))
    );
}
