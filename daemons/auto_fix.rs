//! cortex-auto-fix: the auto-fix daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::AutoFix, cortex::autofix::run_loop)
}
