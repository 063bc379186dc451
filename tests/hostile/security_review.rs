//! Security review checks that need real processes:
//! - every file and directory Cortex creates in a home is private (files 0600, directories 0700)
//!   even under `umask 000`;
//! - no PID, lock or temporary file goes to a world-writable directory: with TMPDIR pointing at
//!   a fresh 1777 directory, a home's daemons and commands leave nothing there, and the source
//!   names no `/tmp` path outside its tests;
//! - the API refuses an IPv6 wildcard bind without tokens (the IPv4 case is in `tests/api/auth.rs`).
use crate::support::faults::*;
use crate::support::fleet::Fleet;
use crate::support::reexec;
use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

const UMASK_TEST: &str = "files_are_private_under_umask_000_and_nothing_goes_to_tmp";

#[test]
fn files_are_private_under_umask_000_and_nothing_goes_to_tmp() {
    // umask is process-wide and the other tests of this binary run in parallel threads, so the
    // check runs in a copy of this binary started for this test alone, which sets umask 000.
    match reexec::role().as_deref() {
        None => {
            let out = reexec::child(module_path!(), UMASK_TEST, "umask-000").output().expect("run the umask 000 copy");
            reexec::results("the umask 000 run", &out);
            return;
        }
        Some("umask-000") => {}
        Some(other) => panic!("unexpected role {other}"),
    }
    // Children inherit both: a permissive umask, and a world-writable TMPDIR to watch.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let world = tempfile::Builder::new().prefix("cortex-world-").tempdir().unwrap();
    std::fs::set_permissions(world.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let h = TestHome::empty();
    let run = |args: &[&str]| {
        let out = h.cmd().env("TMPDIR", world.path()).args(args).output().expect("run cortex");
        assert!(out.status.success(), "cortex {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["init"]);
    let port = configure_fast(&h);
    let fleet = Fleet::start_with(&h, port, None, &[("TMPDIR", world.path())]);
    run(&["event", "emit", "--type", "probe", "--message", "m"]);
    run(&["scheduler", "pause", "--reason", "umask"]);
    run(&["scheduler", "resume"]);
    run(&["schedule", "add", "--name", "s", "--every", "1h", "--", "true"]);
    run(&["backup"]);
    let archive = std::fs::read_dir(h.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("an archive");
    run(&["restore", "--file", archive.to_str().unwrap(), "--verify-only"]);
    std::fs::write(h.join("coordination/task-queue.json"), b"{broken").unwrap();
    std::fs::set_permissions(h.join("coordination/task-queue.json"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let _ = h.cmd().env("TMPDIR", world.path()).arg("validate").output();
    run(&["repair"]);
    drop(fleet);
    run(&["restore", "--file", archive.to_str().unwrap(), "--yes"]);

    let mut paths = Vec::new();
    walk(h.path(), &mut paths);
    let mut open = Vec::new();
    for p in &paths {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            open.push(format!("{:o} {}", mode, h.relative(p)));
        }
    }
    assert!(open.is_empty(), "readable or writable by others under umask 000:\n{}", open.join("\n"));
    assert!(paths.len() > 40, "only {} paths checked", paths.len());

    let mut left = Vec::new();
    walk(world.path(), &mut left);
    assert!(left.is_empty(), "Cortex wrote to the world-writable TMPDIR: {left:?}");
}

trait Relative {
    fn relative(&self, p: &Path) -> String;
}

impl Relative for TestHome {
    fn relative(&self, p: &Path) -> String {
        p.strip_prefix(self.path()).unwrap_or(p).display().to_string()
    }
}

/// The library and daemons name no path in /tmp (or the system temporary directory) outside
/// their tests: PID files, locks and temporaries all live under the home.
#[test]
fn the_source_names_no_shared_temporary_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    walk(&root.join("daemons"), &mut files);
    let mut hits = Vec::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests sit at the end of each file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            // `tempfile::…_in(dir)` creates inside a directory we name (under the home): fine.
            let shared_tempfile = l.contains("tempfile::") && !l.contains("_in(");
            if l.contains("\"/tmp") || l.contains("temp_dir()") || shared_tempfile || l.contains("\"/var/tmp") {
                hits.push(format!("{}:{}: {}", f.strip_prefix(root).unwrap().display(), i + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "shared temporary directories named outside tests:\n{}", hits.join("\n"));
}

#[test]
fn ipv6_wildcard_bind_without_tokens_is_refused() {
    let h = TestHome::new();
    let port = free_port();
    let out = std::process::Command::new(bin("cortex-api"))
        .arg("--home")
        .arg(h.path())
        .env("CORTEX_API_BIND", format!("[::]:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on [::]"), "{err}");
}
