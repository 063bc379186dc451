//! cortex-worker: the worker daemon (and, re-invoked with --cortex-exec-shim, each task's shim).

fn main() -> std::process::ExitCode {
    cortex::worker::shim::run_if_requested();
    cortex::daemon::run(cortex::daemon_name::Daemon::Worker, cortex::worker::run_loop)
}
