//! cortex-pm: the pm daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Pm, cortex::daemons::pm::run_loop)
}
