//! cortex-auto-fix: the auto-fix daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::AutoFix, cortex::daemons::auto_fix::run_loop)
}
