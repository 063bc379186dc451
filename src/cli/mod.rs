//! The `cortex` command: argument parsing and dispatch to one module per area. Each module turns
//! arguments into library calls and prints the result (text, or JSON with `--json`).

mod backup;
mod breaker;
mod dispatches;
mod events;
mod heartbeat;
mod locks;
mod logs;
mod metrics;
mod notify;
mod recovery;
mod runbooks;
mod schedule;
mod scheduler;
mod setup;
mod shell_docs;
mod supervise;
mod task;
mod task_logs;
mod top;

use crate::base::error::{Error, Result};
use crate::store::home::Home;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cortex",
    version,
    about = "Single-host orchestrator for fleets of worker processes",
    after_help = "Operator runbooks (pause/resume, drill, recovery, daemons, schedules, backup): `cortex runbooks`, `cortex help runbooks`.",
    propagate_version = true
)]
pub struct Cli {
    /// The Cortex home (else CORTEX_HOME, COMMIT_RELAY_HOME, the current directory if it is a home, ~/.cortex).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// With --dry-run and no command: validate this cortex.toml (the seed runbooks' form).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With --config and no command: validate only, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a home, or fill in only the files that are missing (never overwrites).
    Init,
    /// Check every JSON and JSONL file under coordination/ (exit 1 if any is bad).
    Validate,
    /// Configuration: check, restore-defaults.
    #[command(subcommand)]
    Config(setup::ConfigCommand),
    /// The event log: emit, list, ack (acknowledge handled errors and criticals).
    #[command(subcommand)]
    Event(events::EventCommand),
    /// Recurring tasks on cron or interval schedules: add, list, show, pause, resume, remove, run-now.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// The latest metrics snapshot (workers, tokens, tasks, scheduler, daemons).
    Metrics(metrics::MetricsArgs),
    /// Record a heartbeat of the running task (run by the task's process).
    Heartbeat(heartbeat::HeartbeatArgs),
    /// Circuit breakers per worker type: list, reset.
    #[command(subcommand)]
    Breaker(breaker::BreakerCommand),
    /// Write a verified backup archive (coordination/, cortex.toml, config/, agents/prompts/).
    Backup(backup::BackupArgs),
    /// Restore from a backup: --latest, --file PATH, --list, --dry-run, --verify-only, --only config.
    Restore(backup::RestoreArgs),
    /// Repair corrupt coordination files (rejected lines and corrupt copies are kept beside them).
    Repair {
        /// Show what would be repaired; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// No progress on standard error (a bar on a terminal, a line per stage otherwise).
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// End active dispatches whose process is gone or that are older than the limit with no heartbeat.
    RecoverStale {
        /// Age limit for dispatches with no heartbeat (e.g. 60m, 2h).
        #[arg(long, default_value = "60m", value_name = "DURATION")]
        older_than: String,
        /// Show what would be recovered; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Complete reset (runbook): pre-reset backup, clear specs, empty queue, reset budget. Needs --yes.
    Reset {
        /// Really do it.
        #[arg(long)]
        yes: bool,
    },
    /// The scheduler switch: pause, resume, status, drain.
    #[command(subcommand)]
    Scheduler(scheduler::SchedulerCommand),
    /// List dispatch records (one per attempt of a task).
    Dispatches(dispatches::DispatchesArgs),
    /// Tasks: add, list, show, logs, cancel, retry, report-usage, seal-archive.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Start daemons (all enabled ones, or those named) detached; wait until each is ready.
    Start(supervise::StartArgs),
    /// Stop daemons (all, or those named): SIGTERM, a timeout, then SIGKILL.
    Stop(supervise::StopArgs),
    /// Restart daemons one at a time, each ready and stable before the next.
    Restart(supervise::RestartArgs),
    /// Each daemon's state, the scheduler state and task counts (exit 0 only if all run);
    /// --watch prints it again every second.
    Status(supervise::StatusArgs),
    /// Foreground supervisor for service managers (systemd Type=notify): runs and restarts all daemons.
    Run,
    /// For cron: exit 0 healthy, 1 degraded, 2 down; --fix restarts dead daemons.
    HealthCheck(supervise::HealthArgs),
    /// Daemon logs: rotate, reopen, clean, archive, tail.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// Every lock and PID file of the home, free or held, by whom (the kernel's lock table) and since when.
    Locks,
    /// The operator runbooks (docs/runbooks/, tested against a real fleet): list them, or print one.
    #[command(after_long_help = runbooks::help_text())]
    Runbooks(runbooks::RunbooksArgs),
    /// Notifications (cortex-notify): test a sink, list recent deliveries.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// A live full-screen view: daemons, scheduler, running tasks, queue, throughput, events;
    /// keys to pause, resume, cancel, retry, read a task's log, filter (? for help, q quits).
    Top(top::TopArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (cortex.1, and cortex-COMMAND.1 for every command, nested too) into DIR.
    Manpages {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// What the CLI needs everywhere.
pub struct Ctx {
    pub home: Home,
    pub json: bool,
}

impl Ctx {
    pub fn store(&self) -> Result<crate::store::Store> {
        let config = crate::store::config::Config::load(&self.home)?;
        Ok(crate::store::Store::new(self.home.clone()).with_lock_timeout(config.lock_timeout()).with_source("cli"))
    }
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{}", crate::base::text::json_safe(s)),
        Err(e) => eprintln!("cortex: cannot encode output: {e}"),
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    // `cortex ... --json | head` must end quietly when the reader goes away, like other Unix tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    crate::daemons::tracing_setup::init_cli();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // Errors quote file names, fields and values from files and requests.
            eprintln!("cortex: error: {}", crate::base::text::safe(&e.to_string()));
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    // Built in, or generated from the definitions alone: no home needed.
    let command = match cli.command {
        Some(Command::Runbooks(a)) => return runbooks::run(cli.json, a),
        Some(Command::Completions { shell }) => return shell_docs::completions(shell),
        Some(Command::Manpages { dir }) => return shell_docs::manpages(&dir),
        other => other,
    };
    let home = Home::resolve(cli.home.as_deref())?;
    let ctx = Ctx { home, json: cli.json };
    match command {
        None if cli.dry_run || cli.config.is_some() => setup::config_check(&ctx, cli.config.as_deref()),
        None => Err(Error::Config { path: None, detail: "no command given; see `cortex --help`".into() }),
        Some(Command::Init) => setup::init(&ctx),
        Some(Command::Validate) => setup::validate(&ctx),
        Some(Command::Config(c)) => setup::config(&ctx, c),
        Some(Command::Event(c)) => events::run(&ctx, c),
        Some(Command::Schedule(c)) => schedule::run(&ctx, c),
        Some(Command::Metrics(a)) => metrics::run(&ctx, a),
        Some(Command::Heartbeat(a)) => heartbeat::run(&ctx, a),
        Some(Command::Breaker(c)) => breaker::run(&ctx, c),
        Some(Command::Backup(a)) => backup::backup(&ctx, a),
        Some(Command::Restore(a)) => backup::restore(&ctx, a),
        Some(Command::Repair { dry_run, quiet }) => recovery::repair(&ctx, dry_run, quiet),
        Some(Command::RecoverStale { older_than, dry_run }) => recovery::recover_stale(&ctx, &older_than, dry_run),
        Some(Command::Reset { yes }) => recovery::reset(&ctx, yes),
        Some(Command::Scheduler(c)) => scheduler::run(&ctx, c),
        Some(Command::Dispatches(a)) => dispatches::run(&ctx, a),
        Some(Command::Task(c)) => task::run(&ctx, c),
        Some(Command::Start(a)) => supervise::start(&ctx, a),
        Some(Command::Stop(a)) => supervise::stop(&ctx, a),
        Some(Command::Restart(a)) => supervise::restart(&ctx, a),
        Some(Command::Status(a)) => supervise::status(&ctx, a),
        Some(Command::Run) => crate::ops::supervisor::foreground::run(&ctx.home),
        Some(Command::HealthCheck(a)) => supervise::health_check(&ctx, a),
        Some(Command::Logs(c)) => logs::run(&ctx, c),
        Some(Command::Locks) => locks::run(&ctx),
        Some(Command::Runbooks(a)) => runbooks::run(ctx.json, a),
        Some(Command::Notify(c)) => notify::run(&ctx, c),
        Some(Command::Top(a)) => top::run(&ctx, a),
        Some(Command::Completions { shell }) => shell_docs::completions(shell),
        Some(Command::Manpages { dir }) => shell_docs::manpages(&dir),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Each command group's one-line description ("The event log: emit, list") names every one of
    /// its subcommands, so `cortex --help` and `cortex <group> --help` do not hide any.
    #[test]
    fn group_descriptions_name_every_subcommand() {
        let cli = Cli::command();
        for group in cli.get_subcommands().filter(|c| c.has_subcommands()) {
            let about = group.get_about().map(|a| a.to_string()).unwrap_or_default();
            for sub in group.get_subcommands().filter(|s| s.get_name() != "help") {
                assert!(
                    about.split(|c: char| !(c.is_alphanumeric() || c == '-')).any(|w| w == sub.get_name()),
                    "`cortex {} --help` says {about:?}, which does not name `{}`",
                    group.get_name(),
                    sub.get_name()
                );
            }
        }
    }
}
