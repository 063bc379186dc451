//! Daemon logs through `tracing`: lines go into `agents/logs/system/<name>-daemon.log` through
//! `tracing-appender`'s non-blocking writer (a slow disk never stalls a daemon's loop) on top of
//! the self-rotating [`LogFile`] (`store::rotation`); and the CLI's diagnostics on stderr.

use crate::base::error::Result;
use crate::store::rotation::LogFile;
use std::path::Path;

/// Keeps the non-blocking writer's worker alive; dropping it flushes pending lines.
pub(crate) struct LogGuard {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    pub file: LogFile,
}

/// Sets up `tracing` for a daemon: lines go to its log file through a non-blocking writer that
/// never drops lines (it applies backpressure instead).
pub(crate) fn init_daemon(path: &Path, level: &str, max_size: u64, keep: u32) -> Result<LogGuard> {
    let file = LogFile::open(path, max_size, keep)?;
    let (writer, guard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(file.clone());
    let filter = std::env::var("CORTEX_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| level.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Ok(LogGuard { _guard: guard, file })
}

/// Whether the CLI's diagnostics on stderr may carry colour codes: only on a terminal, and not
/// when `NO_COLOR` is set to anything (<https://no-color.org>). `cortex run` under systemd, cron
/// or a pipe writes plain text.
pub(crate) fn cli_colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Sets up `tracing` for the CLI: warnings and errors to stderr (coloured only per [`cli_colour`]).
pub(crate) fn init_cli() {
    let filter = std::env::var("CORTEX_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(cli_colour())
        .with_target(false)
        .try_init();
}
