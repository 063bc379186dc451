//! Running one runbook against a real fleet: a temporary home with every daemon started by
//! `cortex start`, the runbook's shell blocks run in order in one bash session, each block's
//! output checked against its `expect` block.
//!
//! What a block sees (the same variables an operator sets at the top of each runbook):
//! `CORTEX_HOME` = the test's home, `CORTEX_API` = its API's `127.0.0.1:<free port>`, `CORTEX_SRC` =
//! this checkout (for the compatibility scripts in `scripts/`), the built
//! binaries first on `PATH`, `HOME` and the working directory a scratch directory (so nothing a
//! runbook writes lands outside the test's directories), `NO_COLOR=1`. The fleet's settings are
//! the shipped `config/cortex.toml` with the timings of [`FLEET_SETTINGS`].

use crate::markdown::{Step, first_missing, steps};
use crate::support::fleet::Fleet;
use crate::support::*;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a whole runbook may take (a loaded 2-core machine runs several at once).
const DEADLINE: Duration = Duration::from_secs(150);

/// Timings that keep a runbook quick; everything else is the shipped default.
pub(crate) const FLEET_SETTINGS: &[(&str, &str, &str)] = &[
    ("daemons", "heartbeat_interval_seconds", "1"),
    ("supervisor", "ready_timeout_seconds", "60.0"),
    ("supervisor", "stabilization_seconds", "0.5"),
    ("worker", "grace_seconds", "0.5"),
    ("retry", "backoff_base_seconds", "0.5"),
    ("retry", "backoff_max_seconds", "1.0"),
];

/// The repository's root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `docs/runbooks/<name>.md`.
pub(crate) fn runbook_path(name: &str) -> PathBuf {
    root().join("docs/runbooks").join(format!("{name}.md"))
}

/// The bash script for a runbook's steps: each block in a brace group (so its variables stay
/// for the next) with its output in `<out>/<n>.out`; `<out>/current` names the block running.
fn script(steps: &[Step], out: &Path) -> String {
    let mut s = String::from("set -euo pipefail\n");
    for (n, step) in steps.iter().enumerate() {
        let file = out.join(format!("{n}.out"));
        let _ = writeln!(s, "echo {n} > '{}'", out.join("current").display());
        let _ = writeln!(s, "{{\n{}\n}} > '{}' 2>&1", step.script.trim_end(), file.display());
    }
    let _ = writeln!(s, "echo done > '{}'", out.join("current").display());
    s
}

/// Runs `docs/runbooks/<name>.md` against a fresh fleet; panics naming each block that failed
/// or did not print what its `expect` block says.
pub(crate) fn run_runbook(name: &str) {
    let path = runbook_path(name);
    let rel = format!("docs/runbooks/{name}.md");
    let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    let steps = steps(&md).unwrap_or_else(|p| panic!("{rel} breaks the runbook conventions:\n{}", p.join("\n")));
    assert!(!steps.is_empty(), "{rel} has no block the test runs");

    let shipped = std::fs::read_to_string(root().join("config/cortex.toml")).expect("read config/cortex.toml");
    let fleet = Fleet::new(&shipped);
    fleet.h.set_config("api", "bind", &format!("\"127.0.0.1:{}\"", fleet.api_port));
    for (section, key, value) in FLEET_SETTINGS {
        fleet.h.set_config(section, key, value);
    }
    fleet.ok(&["start"]);

    let scratch = tempfile::Builder::new().prefix("cortex-runbook-").tempdir().expect("scratch dir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = tempfile::Builder::new().prefix("cortex-runbook-out-").tempdir().expect("output dir");
    let script_path = out.path().join("runbook.sh");
    std::fs::write(&script_path, script(&steps, out.path())).unwrap();
    let path_var = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new("bash")
        .args(["--noprofile", "--norc"])
        .arg(&script_path)
        .current_dir(scratch.path())
        .env("PATH", path_var)
        .env("HOME", scratch.path())
        .env("CORTEX_HOME", fleet.h.path())
        .env("CORTEX_API", format!("127.0.0.1:{}", fleet.api_port))
        .env("CORTEX_SRC", root())
        // The scripts prefer the checkout's release build to PATH: the binaries under test win.
        .env("CORTEX_BIN_DIR", bin_dir())
        .env("CORTEX_BIN", bin_dir().join("cortex"))
        .env("NO_COLOR", "1")
        .env_remove("COMMIT_RELAY_HOME")
        .env_remove("CORTEX_API_BIND")
        .env_remove("CORTEX_SAFE_HOMES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run bash");

    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for bash") {
            break Some(st);
        }
        if started.elapsed() > DEADLINE {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output_of = |n: usize| std::fs::read_to_string(out.path().join(format!("{n}.out"))).unwrap_or_default();
    let current = std::fs::read_to_string(out.path().join("current")).unwrap_or_default();
    let reached = current.trim().parse::<usize>().unwrap_or(steps.len());

    let mut problems = Vec::new();
    let mut explain = |n: usize, what: String| {
        let step = &steps[n];
        problems.push(format!(
            "{rel}:{}: {what}\n--- block\n{}--- its output\n{}---",
            step.line,
            step.script,
            output_of(n)
        ));
    };
    match status {
        None => explain(reached.min(steps.len() - 1), format!("still running after {DEADLINE:?}")),
        Some(st) if !st.success() => {
            let n = reached.min(steps.len() - 1);
            explain(n, format!("failed ({st}); the blocks after it did not run"));
        }
        Some(_) => {}
    }
    for (n, step) in steps.iter().enumerate().take(reached.min(steps.len())) {
        if let Some((line, expected)) = &step.expect
            && let Some(missing) = first_missing(expected, &output_of(n))
        {
            explain(n, format!("the output lacks {missing:?} (expected at line {line}, in order)"));
        }
    }
    if !problems.is_empty() {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        panic!(
            "runbook {rel}: {} problem(s)\n{}\nbash stderr: {stderr}\n(home {})",
            problems.len(),
            problems.join("\n\n"),
            fleet.h.path().display()
        );
    }
    eprintln!("{rel}: {} blocks ran in {:.1}s", steps.len(), started.elapsed().as_secs_f64());
}
