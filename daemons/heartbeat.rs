//! cortex-heartbeat: the heartbeat daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Heartbeat, cortex::daemons::heartbeat::run_loop)
}
