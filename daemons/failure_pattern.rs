//! cortex-failure-pattern: the failure-pattern daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("failure-pattern", cortex::patterns::run_loop)
}
