//! cortex-worker: the worker daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("worker", cortex::daemon::idle_loop)
}
