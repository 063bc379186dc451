//! The re-exec trick: a test starts copies of its own test binary as child processes, each
//! running one "child test" that does real work with the library only when `CORTEX_TEST_ROLE`
//! is set (in a normal run the child test returns at once). Parameters travel in environment
//! variables `CORTEX_TEST_<NAME>`; results come back as `RESULT ...` lines on stdout.

use std::process::{Child, Command, Output, Stdio};

/// The variable that turns a child test on.
pub(crate) const ROLE_ENV: &str = "CORTEX_TEST_ROLE";

/// The role of this process when a test started it with [`child`]; `None` in a normal run.
pub(crate) fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok().filter(|s| !s.is_empty())
}

/// The name the test harness knows test function `test` of module `module` by (`module` as
/// `module_path!()` gives it: the binary's name first, which the harness leaves out).
pub(crate) fn test_name(module: &str, test: &str) -> String {
    match module.split_once("::") {
        Some((_, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    }
}

/// A command that re-runs this test binary for exactly `child_test` of `module` (the caller's
/// `module_path!()`), playing `role`.
/// Add parameters with [`param`]-named variables: `.env(param_name("HOME"), ...)`.
pub(crate) fn child(module: &str, child_test: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("current test binary");
    let mut c = Command::new(exe);
    c.args(["--exact", &test_name(module, child_test), "--nocapture", "--test-threads=1", "-q"]);
    c.env(ROLE_ENV, role);
    c.env_remove("CORTEX_HOME").env_remove("COMMIT_RELAY_HOME");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The environment variable that carries parameter `name`.
pub(crate) fn param_name(name: &str) -> String {
    format!("CORTEX_TEST_{name}")
}

/// Reads parameter `name` in a child (panics when missing or unparsable: the child fails loudly).
pub(crate) fn param<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let var = param_name(name);
    let raw = std::env::var(&var).unwrap_or_else(|_| panic!("child test needs {var}"));
    raw.parse().unwrap_or_else(|e| panic!("{var}={raw:?}: {e:?}"))
}

/// Prints a result line the parent picks up with [`results`].
pub(crate) fn report(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "RESULT {line}");
    let _ = out.flush();
}

/// The `RESULT` lines of a finished child, asserting it succeeded.
pub(crate) fn results(what: &str, out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // A name that matches no test runs nothing and succeeds: make that a failure, not a pass.
    assert!(stdout.contains(" 1 passed;"), "{what} ran no test (is the child test's name right?):\n{stdout}");
    stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")).map(str::to_string).collect()
}

/// Waits for a child and returns its `RESULT` lines.
pub(crate) fn finish(what: &str, child: Child) -> Vec<String> {
    let out = child.wait_with_output().expect("wait for child test");
    results(what, &out)
}

/// Sends SIGKILL to a child and reaps it.
pub(crate) fn kill_hard(child: &mut Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}
