//! cortex-failure-pattern: the failure-pattern daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::FailurePattern, cortex::patterns::run_loop)
}
