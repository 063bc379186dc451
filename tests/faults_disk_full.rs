//! A full disk (ENOSPC): the home lives on a small tmpfs (mounted by the test as root, unmounted
//! at the end; skipped with a loud message where mounting is not permitted). With every daemon
//! running, the disk is filled, then store writes, event appends, schedule changes and a backup
//! are attempted; with the daemons stopped, a restore. Each time:
//! - the previous version of every file stays intact (JSON byte-identical; JSONL: the old
//!   content is still its prefix), no temporary file or partial archive is left behind;
//! - the CLI fails with an error that says the disk is full;
//! - no daemon spins (CPU time from /proc over a few seconds) and none exits;
//! - once space is back, every daemon records an `error` event saying its writes failed (the
//!   `storage_write_failed` event), the same commands succeed, and everything validates.
//!
//! The same checks with a file size limit (RLIMIT_FSIZE = 0, EFBIG) run without root.
mod api_support;
mod common;
mod faults_support;
use common::*;
use faults_support::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("cortex-diskfull-").tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "\n!!!! SKIPPED: cannot mount a tmpfs here ({}); the disk-full test needs root (CAP_SYS_ADMIN) !!!!\n",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("\n!!!! SKIPPED: cannot run mount ({e}); the disk-full test needs root !!!!\n");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Fills the file system: one big file until ENOSPC, then small ones until not even a page is left.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let mut small = 0;
    while small < 64 {
        let mut g = std::fs::File::create(dir.join(format!("filler-{small}"))).unwrap();
        if g.write_all(&[0u8; 4096]).is_err() {
            break;
        }
        small += 1;
    }
    filler
}

fn unfill(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("filler") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Every file under a directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(p, b);
            }
        }
    }
    out
}

/// The previous version of every file is intact: JSON identical or a complete replacement that
/// still validates (a daemon's own successful write); JSONL still starts with its old content.
fn assert_intact(h: &TestHome, before: &BTreeMap<PathBuf, Vec<u8>>, during: &str) {
    for (path, old) in before {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.ends_with(".lock") || name.ends_with(".pid") {
            continue;
        }
        let now = std::fs::read(path).unwrap_or_else(|e| panic!("{during}: {} vanished: {e}", path.display()));
        if name.ends_with(".jsonl") {
            assert!(now.starts_with(old), "{during}: {} lost its old content", path.display());
        } else if now != *old {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&now).is_ok(),
                "{during}: {} was replaced by something that is not JSON",
                path.display()
            );
        }
    }
    let temps: Vec<_> = snapshot(&h.join("coordination"))
        .into_keys()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp."))
        .collect();
    assert!(temps.is_empty(), "{during}: temporary files left behind: {temps:?}");
}

fn assert_fails_for_space(out: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded on a full disk");
    assert!(
        err.contains("No space left") || err.contains("File too large"),
        "{what}: the error does not say the disk is full: {err}"
    );
}

#[test]
fn full_disk_loses_nothing_spins_nothing_and_resumes() {
    let Some(mnt) = Tmpfs::mount("4M") else { return };
    let h = TestHome { dir: tempfile::Builder::new().prefix("home-").tempdir_in(mnt.path()).unwrap() };
    h.cortex_ok(&["init"]);
    let mut fleet = Fleet::start(&h);
    h.cortex_ok(&["backup"]);
    let backups_before = snapshot(&h.join("backups"));
    assert_eq!(backups_before.len(), 1);
    let before = snapshot(&h.join("coordination"));

    fill(mnt.path());
    let full_since = chrono::Utc::now();

    // A store write (read-modify-write of scheduler-state.json): refused, old file intact.
    let out = h.cortex(&["scheduler", "pause", "--reason", "disk full test"]);
    assert_fails_for_space(&out, "cortex scheduler pause");
    assert_eq!(h.read_json("coordination/scheduler-state.json")["state"], "running");
    // A schedule change.
    let out = h.cortex(&["schedule", "add", "--name", "full", "--every", "1h", "--", "true"]);
    assert_fails_for_space(&out, "cortex schedule add");
    // Event appends: a few may still fit in a partly used page; the rest fail with the reason.
    let mut failed = 0;
    for i in 0..50 {
        let out = h.cortex(&[
            "event",
            "emit",
            "--type",
            "disk_probe",
            "--message",
            &format!("probe {i} {}", "p".repeat(500)),
        ]);
        if !out.status.success() {
            assert_fails_for_space(&out, "cortex event emit");
            failed += 1;
        }
    }
    assert!(failed > 0, "every append succeeded: the disk is not full");
    // A backup: refused, no partial archive, the old one intact.
    let out = h.cortex(&["backup"]);
    assert_fails_for_space(&out, "cortex backup");
    assert_eq!(snapshot(&h.join("backups")), backups_before, "a partial archive was left, or the old one changed");
    assert_intact(&h, &before, "writes on a full disk");

    // Nobody spins while the disk is full (each daemon's heartbeat mark write fails every second).
    let shares = cpu_shares(&fleet, Duration::from_secs(3));
    for (name, share) in &shares {
        assert!(*share < 0.25, "cortex-{name} used {:.0}% of a core while the disk was full", share * 100.0);
    }
    fleet.assert_alive(&h, "the full disk");
    eprintln!("CPU share per daemon on a full disk: {shares:?}");

    // Space comes back: every daemon notices by itself and records what failed.
    unfill(mnt.path());
    fleet.assert_loops_running(&h, chrono::Utc::now(), "space coming back");
    wait_until(Duration::from_secs(20), "every daemon records its failed writes", || {
        let reported: Vec<String> = events_of(&h, "storage_write_failed")
            .into_iter()
            .filter(|e| e["severity"] == "error")
            .map(|e| e["source"].as_str().unwrap_or("").to_string())
            .collect();
        DAEMONS.iter().all(|d| reported.iter().any(|s| s == d))
    });
    let ev = events_of(&h, "storage_write_failed").pop().unwrap();
    assert!(ev["message"].as_str().unwrap().contains("No space left"), "{ev}");
    assert!(ev["data"]["failed_writes"].as_u64().unwrap() >= 1, "{ev}");
    assert!(ev["data"]["first_failed_at"].as_str().and_then(cortex::clock::parse_ts).unwrap() >= full_since);

    h.cortex_ok(&["scheduler", "pause", "--reason", "space is back"]);
    h.cortex_ok(&["scheduler", "resume"]);
    h.cortex_ok(&["schedule", "add", "--name", "after", "--every", "1h", "--", "true"]);
    h.cortex_ok(&["backup"]);
    h.cortex_ok(&["event", "emit", "--type", "after_probe", "--message", "space is back"]);
    // A line cut by the full disk is skipped by readers and moved aside by repair.
    h.cortex(&["repair"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "validate after space came back:\n{}", String::from_utf8_lossy(&out.stdout));
    drop(fleet);

    // --- A restore on a full disk (daemons stopped, as restore requires).
    let before = snapshot(&h.join("coordination"));
    fill(mnt.path());
    let archive = backups_before.keys().next().unwrap().clone();
    let out = h.cortex(&["restore", "--file", archive.to_str().unwrap(), "--yes"]);
    assert_fails_for_space(&out, "cortex restore");
    // Lock files record their last holder; everything else must be exactly as before.
    let data = |m: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
        m.into_iter().filter(|(p, _)| !p.components().any(|c| c.as_os_str() == ".locks")).collect()
    };
    assert!(data(snapshot(&h.join("coordination"))) == data(before), "a failed restore changed coordination files");
    unfill(mnt.path());
    h.cortex_ok(&["restore", "--file", archive.to_str().unwrap(), "--yes"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "validate after the restore:\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(h.read_json("coordination/schedules.json")["schedules"].as_array().map(Vec::len), Some(0));
}

/// `cortex <args>` with RLIMIT_FSIZE 0 (every write that grows a file fails with EFBIG;
/// SIGXFSZ ignored, as a service manager would set it, so the write returns the error).
fn cortex_with_no_file_size(h: &TestHome, args: &[&str]) -> std::process::Output {
    let mut line =
        format!("trap '' XFSZ; ulimit -f 0; exec '{}' --home '{}'", bin("cortex").display(), h.path().display());
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    Command::new("sh").arg("-c").arg(line).env_remove("CORTEX_HOME").output().expect("run sh")
}

#[test]
fn file_size_limit_fails_cleanly_and_keeps_every_file() {
    let h = TestHome::new();
    let before = snapshot(&h.join("coordination"));
    let out = cortex_with_no_file_size(&h, &["scheduler", "pause", "--reason", "limit"]);
    assert_fails_for_space(&out, "cortex scheduler pause under RLIMIT_FSIZE");
    let out = cortex_with_no_file_size(&h, &["event", "emit", "--type", "limit_probe", "--message", "m"]);
    assert_fails_for_space(&out, "cortex event emit under RLIMIT_FSIZE");
    let out = cortex_with_no_file_size(&h, &["schedule", "add", "--name", "n", "--every", "1h", "--", "true"]);
    assert_fails_for_space(&out, "cortex schedule add under RLIMIT_FSIZE");
    let out = cortex_with_no_file_size(&h, &["backup"]);
    assert_fails_for_space(&out, "cortex backup under RLIMIT_FSIZE");
    assert_intact(&h, &before, "writes under RLIMIT_FSIZE");
    let backups: Vec<_> = snapshot(&h.join("backups")).into_keys().filter(|p| !p.ends_with(".gitkeep")).collect();
    assert!(backups.is_empty(), "a partial archive was left: {backups:?}");
    // Without the limit, all of it works, and the event log shows no trace of a cut line.
    h.cortex_ok(&["scheduler", "pause", "--reason", "no limit"]);
    h.cortex_ok(&["event", "emit", "--type", "limit_probe", "--message", "m"]);
    h.cortex_ok(&["backup"]);
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
