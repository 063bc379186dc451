//! cortex-api: the HTTP API daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::Api, cortex::api::run_loop)
}
