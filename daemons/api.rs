//! cortex-api: the api daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("api", cortex::daemon::idle_loop)
}
