//! cortex-worker: the worker daemon (and, re-invoked with --cortex-exec-shim, each task's shim).

fn main() -> std::process::ExitCode {
    cortex::daemons::worker::shim::run_if_requested();
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Worker, cortex::daemons::worker::run_loop)
}
