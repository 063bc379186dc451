//! cortex-api: the HTTP API daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Api, cortex::daemons::api::run_loop)
}
