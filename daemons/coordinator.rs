//! cortex-coordinator: the coordinator daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("coordinator", cortex::coordinator::run_loop)
}
