//! cortex-pm: the pm daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::Pm, cortex::pm::run_loop)
}
