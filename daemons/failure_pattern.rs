//! cortex-failure-pattern: the failure-pattern daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(
        cortex::base::daemon_name::Daemon::FailurePattern,
        cortex::daemons::failure_pattern::run_loop,
    )
}
