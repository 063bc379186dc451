//! cortex-integration: the integration daemon (validator). Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::Integration, cortex::integrity::run_loop)
}
