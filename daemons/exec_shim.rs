//! cortex-exec-shim: the small program each task runs under (`cortex::daemons::worker::shim`: own process
//! group, go-ahead pipe, exit journal). The worker's own binary can play this part too
//! (`cortex-worker --cortex-exec-shim ...`), but this one links only the shim and starts in about
//! half the time, which every task pays on its way to its first instruction.

fn main() {
    cortex::daemons::worker::shim::run_if_requested();
    eprintln!(
        "usage: cortex-exec-shim {} GO_FD DISPATCH_ID EXIT_JOURNAL EXIT_LOCK STDOUT_LOG STDERR_LOG -- COMMAND [ARGS...] (started by the worker only)",
        cortex::domain::task::processes::SHIM_ARG
    );
    std::process::exit(2);
}
