//! cortex-coordinator: the coordinator daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::Coordinator, cortex::coordinator::run_loop)
}
