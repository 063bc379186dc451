//! cortex-integration: the integration daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("integration", cortex::daemon::idle_loop)
}
