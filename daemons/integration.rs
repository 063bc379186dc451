//! cortex-integration: the integration daemon (validator). Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Integration, cortex::daemons::integration::run_loop)
}
