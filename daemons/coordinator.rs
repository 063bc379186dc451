//! cortex-coordinator: the coordinator daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Coordinator, cortex::daemons::coordinator::run_loop)
}
