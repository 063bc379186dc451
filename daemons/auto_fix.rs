//! cortex-auto-fix: the auto-fix daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("auto-fix", cortex::autofix::run_loop)
}
