//! Support shared by the integration tests: a temporary home, running the real binaries in it,
//! and waiting for a condition with a deadline (never a fixed sleep).
#![allow(dead_code)]

pub(crate) mod api;
pub(crate) mod faults;
pub(crate) mod fleet;
pub(crate) mod health;
pub(crate) mod records;
pub(crate) mod reexec;
pub(crate) mod slurm;
pub(crate) mod supervisor;
pub(crate) mod task;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the built binaries (`cortex`, `cortex-worker`, ...).
pub(crate) fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cortex")).parent().expect("binary dir").to_path_buf()
}

/// The path of a built binary: `bin("cortex")`, `bin("cortex-worker")`.
pub(crate) fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A fresh home in a temporary directory, initialised with `cortex init`. Clones share the
/// directory, removed when the last one is dropped (a `Fleet` keeps the home it runs in).
#[derive(Clone)]
pub(crate) struct TestHome {
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

impl Drop for TestHome {
    /// The last clone of a home kills what is still running in it: a task left running by a
    /// test (the worker leaves tasks running when it stops, to adopt them again) is found by its
    /// exec shim's arguments, which name this home, and its process group is killed.
    fn drop(&mut self) {
        if std::sync::Arc::strong_count(&self.dir) == 1 {
            kill_processes_naming(self.dir.path());
        }
    }
}

/// SIGKILLs the process group of every process whose command line names `home` (never this
/// test process's own group).
pub(crate) fn kill_processes_naming(home: &Path) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::{Pid, getpgid};
    let needle = home.as_os_str().as_encoded_bytes();
    let own = getpgid(None).ok();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else { continue };
        if !cmdline.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        if let Ok(group) = getpgid(Some(Pid::from_raw(pid)))
            && Some(group) != own
        {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

impl TestHome {
    pub(crate) fn new() -> TestHome {
        let h = TestHome::empty();
        let out = h.cortex(&["init"]);
        assert!(out.status.success(), "cortex init failed: {}", String::from_utf8_lossy(&out.stderr));
        h
    }

    /// A temporary directory without `cortex init`: private (0700) whatever the umask, since Cortex
    /// refuses a home others can write (`tempfile` leaves the umask's say: 0777 under umask 000).
    pub(crate) fn empty() -> TestHome {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("cortex-test-").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod 0700 the home");
        TestHome::in_dir(dir)
    }

    /// A home in a temporary directory the test made itself (on a tmpfs, in /dev/shm), as is.
    pub(crate) fn in_dir(dir: tempfile::TempDir) -> TestHome {
        TestHome { dir: std::sync::Arc::new(dir) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `cortex --home <home>` command, with a clean environment for the home variables.
    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(bin("cortex"));
        c.arg("--home").arg(self.path());
        c.env_remove("CORTEX_HOME").env_remove("COMMIT_RELAY_HOME").env_remove("CORTEX_API_BIND");
        c.stdin(Stdio::null());
        c
    }

    /// Runs `cortex --home <home> args...` to completion.
    pub(crate) fn cortex(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cortex")
    }

    /// Runs cortex and returns stdout, asserting success.
    pub(crate) fn cortex_ok(&self, args: &[&str]) -> String {
        let out = self.cortex(args);
        assert!(
            out.status.success(),
            "cortex {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a daemon binary (`cortex-<name>`) in the foreground as a child of the test.
    pub(crate) fn spawn_daemon(&self, name: &str) -> Child {
        Command::new(bin(&format!("cortex-{name}")))
            .arg("--home")
            .arg(self.path())
            .env_remove("CORTEX_HOME")
            .env_remove("COMMIT_RELAY_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon")
    }

    /// Sets `key = value` (a TOML literal) in `[section]` of the home's cortex.toml: replaces the
    /// key's line, or adds it at the top of the table when the shipped file leaves it commented.
    pub(crate) fn set_config(&self, section: &str, key: &str, value: &str) {
        let path = self.join("cortex.toml");
        let text = std::fs::read_to_string(&path).expect("read cortex.toml");
        let (mut out, mut current, mut done) = (String::new(), String::new(), false);
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') && t.ends_with(']') {
                current = t[1..t.len() - 1].to_string();
            }
            if current == section && !done && t.split('=').next().map(str::trim) == Some(key) {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        if !done {
            let header = format!("[{section}]\n");
            match out.find(&header) {
                Some(at) => out.insert_str(at + header.len(), &format!("{key} = {value}\n")),
                None => out.push_str(&format!("\n{header}{key} = {value}\n")),
            }
        }
        std::fs::write(&path, out).expect("write cortex.toml");
    }

    /// Takes `coordination/.locks/<name>.lock` as a wedged process would: held until the returned
    /// file is dropped.
    pub(crate) fn hold_lock(&self, name: &str) -> std::fs::File {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.join(&format!("coordination/.locks/{name}.lock")))
            .unwrap();
        lock.lock().unwrap();
        lock
    }

    /// Reads a JSON file under the home.
    pub(crate) fn read_json(&self, rel: &str) -> serde_json::Value {
        let bytes = std::fs::read(self.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {rel}: {e}"))
    }

    /// The task queue as every reader sees it — the snapshot `task-queue.json` with its journal
    /// applied (the snapshot alone lags until the next compaction) — as JSON.
    pub(crate) fn queue_json(&self) -> serde_json::Value {
        let store = cortex::Store::new(cortex::Home::at(self.path()));
        let q: cortex::domain::task::model::TaskQueue = store.load().unwrap_or_else(|e| panic!("load the queue: {e}"));
        serde_json::to_value(q).expect("encode the queue")
    }

    /// Every event in the event log, read as every reader does: line by line, bad lines (even
    /// invalid UTF-8 ones, which a hostile test writes) skipped.
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        let bytes = std::fs::read(self.join("coordination/dashboard-events.jsonl")).unwrap_or_default();
        bytes.split(|b| *b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect()
    }

    /// Events of one type.
    pub(crate) fn events_of(&self, event_type: &str) -> Vec<serde_json::Value> {
        self.events().into_iter().filter(|e| e["type"] == event_type).collect()
    }
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` at the deadline.
pub(crate) fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until a child started with `CORTEX_PAUSE_AT` (and stderr piped) reports on stderr that it
/// is paused at its pause point; false if it does not within `within`.
pub(crate) fn wait_for_pause(child: &mut Child, within: Duration) -> bool {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("the child's stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("paused at ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(within).is_ok()
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Sends SIGTERM to a child and waits for it (with a deadline, then SIGKILL).
pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
