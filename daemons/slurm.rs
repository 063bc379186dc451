//! cortex-slurm: runs Slurm dispatches as Slurm jobs. Its loop lives in the library.

fn main() -> std::process::ExitCode {
    cortex::daemons::daemon::run(cortex::base::daemon_name::Daemon::Slurm, cortex::daemons::slurm::run_loop)
}
