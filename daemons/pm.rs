//! cortex-pm: the pm daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run("pm", cortex::daemon::idle_loop)
}
