//! cortex-heartbeat: the heartbeat daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("heartbeat", cortex::heartbeat::run_loop)
}
