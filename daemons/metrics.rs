//! cortex-metrics: the metrics daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemon::run(cortex::daemon_name::Daemon::Metrics, cortex::metrics::run_loop)
}
