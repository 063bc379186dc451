//! cortex-metrics: the metrics daemon. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Metrics, cortex::daemons::metrics::run_loop)
}
