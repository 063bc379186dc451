//! cortex-heartbeat: the heartbeat daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::Heartbeat, cortex::heartbeat::run_loop)
}
