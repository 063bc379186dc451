//! cortex-worker: the worker daemon (and, re-invoked with --cortex-exec-shim, each task's shim).

fn main() -> std::process::ExitCode {
    cortex::worker::shim::run_if_requested();
    cortex::daemon::run("worker", cortex::worker::run_loop)
}
