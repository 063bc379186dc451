//! Symbolic links planted in the home lead no write elsewhere: a file link (the intake, a daemon
//! log, dangling or not) is refused instead of written through or having its target created, and
//! a directory link (`backups/`, `agents/logs/system`, `agents/logs`) is refused instead of
//! receiving archives and logs or having its files deleted. Retention deletes only Cortex's own
//! archives. Each case performs the attack with the real `cortex` binary.
use crate::support::*;
use std::os::unix::fs::symlink;
use std::path::Path;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Starts `daemon` with `cortex start`; if it did start (the attack worked), stops it again.
fn start_refused(h: &TestHome, daemon: &str, what: &str) -> String {
    h.set_config("api", "bind", &format!("\"127.0.0.1:{}\"", free_port()));
    let out = h.cortex(&["start", daemon]);
    if out.status.success() {
        let _ = h.cortex(&["stop", daemon]);
    }
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!out.status.success(), "{what}: `cortex start {daemon}` succeeded: {said}");
    said
}

#[test]
fn a_linked_intake_receives_no_task() {
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    let rc = outside.path().join(".bashrc");
    std::fs::write(&rc, "alias ll='ls -l'\n").unwrap();
    let intake = h.join("coordination/task-intake.jsonl");
    let _ = std::fs::remove_file(&intake);
    symlink(&rc, &intake).unwrap();
    let out = h.cortex(&["task", "add", "--description", "$(touch /pwned)", "--", "true"]);
    assert!(!out.status.success(), "task add appended through the link");
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), "alias ll='ls -l'\n", "the link's target was written");
}

#[test]
fn a_linked_daemon_log_is_neither_written_nor_created() {
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    let log = h.join("agents/logs/system/heartbeat-daemon.log");
    let _ = std::fs::remove_file(&log);
    // Dangling: the target must not be created.
    symlink(outside.path().join("created"), &log).unwrap();
    let err = start_refused(&h, "heartbeat", "a dangling log link");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(names(outside.path()).is_empty(), "the dangling link's target was created");
    // To a file: not written through.
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    std::fs::remove_file(&log).unwrap();
    symlink(&victim, &log).unwrap();
    start_refused(&h, "heartbeat", "a log linked to a file");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}

#[test]
fn a_linked_log_directory_receives_no_log() {
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    let system = h.join("agents/logs/system");
    std::fs::remove_dir_all(&system).unwrap();
    symlink(outside.path(), &system).unwrap();
    let err = start_refused(&h, "heartbeat", "agents/logs/system as a link");
    assert!(err.contains("symbolic link") && err.contains("agents/logs/system"), "{err}");
    assert!(names(outside.path()).is_empty(), "logs were created outside the home: {:?}", names(outside.path()));

    // `cortex logs clean` through a linked `agents/logs/` deletes nothing out there.
    std::fs::remove_file(&system).unwrap();
    let old = outside.path().join("precious.log");
    std::fs::write(&old, "keep\n").unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(400 * 86400);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(long_ago).unwrap();
    std::fs::remove_dir_all(h.join("agents/logs")).unwrap();
    symlink(outside.path(), h.join("agents/logs")).unwrap();
    let out = h.cortex(&["logs", "clean", "--older-than", "1d"]);
    assert!(!out.status.success() && stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert!(old.exists(), "logs clean deleted a file outside the home");
}

#[test]
fn a_linked_backups_directory_receives_no_archive_and_loses_no_file() {
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    // A file that looks like an old archive, in someone else's directory.
    let decoy = outside.path().join("cortex-backup-20000101-000000.tar.gz");
    std::fs::write(&decoy, "not ours").unwrap();
    std::fs::remove_dir_all(h.join("backups")).unwrap();
    symlink(outside.path(), h.join("backups")).unwrap();
    let out = h.cortex(&["backup", "--keep", "1"]);
    assert!(!out.status.success(), "backup wrote through the linked backups/");
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(names(outside.path()), ["cortex-backup-20000101-000000.tar.gz"], "written or deleted out there");
}

#[test]
fn retention_deletes_only_cortex_archives() {
    let h = TestHome::new();
    h.cortex_ok(&["backup", "--keep", "0"]);
    // Files named like archives that `cortex backup` did not write: kept whatever `--keep` says.
    let decoy = h.join("backups/cortex-backup-20000101-000000.tar.gz");
    std::fs::write(&decoy, "an operator's file").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    std::fs::write(&target, "x").unwrap();
    symlink(&target, h.join("backups/cortex-backup-20000102-000000.tar.gz")).unwrap();
    h.cortex_ok(&["backup", "--keep", "1"]);
    h.cortex_ok(&["backup", "--keep", "1"]);
    let left = names(&h.join("backups"));
    assert!(left.contains(&"cortex-backup-20000101-000000.tar.gz".to_string()), "the decoy was deleted: {left:?}");
    assert!(left.contains(&"cortex-backup-20000102-000000.tar.gz".to_string()), "the link was deleted: {left:?}");
    assert!(target.exists());
    let ours = left.iter().filter(|n| n.starts_with("cortex-backup-2") && !n.starts_with("cortex-backup-2000")).count();
    assert_eq!(ours, 1, "keep 1 of Cortex's own archives: {left:?}");
}

#[test]
fn a_linked_json_file_is_not_read_nor_copied_into_quarantine() {
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "root:secret-hash:19000:0:99999:7:::\n").unwrap();
    let queue = h.join("coordination/task-queue.json");
    std::fs::remove_file(&queue).unwrap();
    symlink(&secret, &queue).unwrap();
    let out = h.cortex(&["task", "list"]);
    assert!(!out.status.success(), "task list read through the link");
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    let out = h.cortex(&["validate"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("symbolic link"), "{said}");
    let copied: Vec<String> = std::fs::read_dir(h.join("coordination/quarantine"))
        .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
        .unwrap_or_default();
    assert!(!copied.iter().any(|c| c.contains("secret-hash")), "the link's target was copied into quarantine");
    assert!(queue.symlink_metadata().unwrap().file_type().is_symlink(), "the link was replaced");
}

/// The exec shim opens the dispatch's logs itself: a directory link planted on their path after
/// the worker created it is refused there too (the shim walks from the home its `CORTEX_HOME`
/// names), so task output never lands outside the home.
#[test]
fn the_exec_shim_writes_no_log_through_a_directory_link() {
    use std::os::unix::process::CommandExt;
    let h = TestHome::new();
    let outside = tempfile::tempdir().unwrap();
    let logs = h.join("agents/logs");
    std::fs::create_dir_all(&logs).unwrap();
    symlink(outside.path(), logs.join("linked")).unwrap();
    // The go pipe: its write end is closed at once, so the shim runs nothing after its logs.
    let (go_read, go_write) = nix::unistd::pipe().unwrap();
    drop(go_write);
    let go_fd = std::os::fd::AsRawFd::as_raw_fd(&go_read);
    let mut cmd = std::process::Command::new(bin("cortex-worker"));
    cmd.arg("--cortex-exec-shim")
        .arg("3")
        .arg("dsp-shim-link")
        .arg(h.join("run/dispatch-exits.jsonl"))
        .arg(h.join("coordination/.locks/dispatch-exits.lock"))
        .arg(logs.join("linked/dsp-shim-link.out"))
        .arg(logs.join("linked/dsp-shim-link.err"))
        .args(["--", "true"])
        .env("CORTEX_HOME", h.path());
    // SAFETY: dup2 is async-signal-safe; the descriptor stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || nix::libc::dup2(go_fd, 3).ge(&0).then_some(()).ok_or_else(std::io::Error::last_os_error));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(names(outside.path()).is_empty(), "the shim wrote through the link: {:?}", names(outside.path()));
}
