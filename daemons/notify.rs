//! cortex-notify: delivers alerts about events to webhooks, Signal, email and command hooks. Its
//! loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Notify, cortex::daemons::notify::run_loop)
}
