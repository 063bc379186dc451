//! The `cortex` command: argument parsing and dispatch to one module per area. Each module turns
//! arguments into library calls and prints the result (text, or JSON with `--json`).

mod events;
mod logs;
mod setup;
mod supervise;

use crate::error::{Error, Result};
use crate::home::Home;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cortex",
    version,
    about = "Single-host orchestrator for fleets of worker processes",
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
    /// Configuration: check.
    #[command(subcommand)]
    Config(setup::ConfigCommand),
    /// The event log: emit, list.
    #[command(subcommand)]
    Event(events::EventCommand),
    /// Start daemons (all enabled ones, or those named) detached; wait until each is ready.
    Start(supervise::StartArgs),
    /// Stop daemons (all, or those named): SIGTERM, a timeout, then SIGKILL.
    Stop(supervise::StopArgs),
    /// Restart daemons one at a time, each ready and stable before the next.
    Restart(supervise::RestartArgs),
    /// Each daemon's state, the scheduler state and task counts (exit 0 only if all run).
    Status,
    /// Foreground supervisor for service managers (systemd Type=notify): runs and restarts all daemons.
    Run,
    /// For cron: exit 0 healthy, 1 degraded, 2 down; --fix restarts dead daemons.
    HealthCheck(supervise::HealthArgs),
    /// Daemon logs: rotate, reopen, clean, archive, tail.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
}

/// What the CLI needs everywhere.
pub struct Ctx {
    pub home: Home,
    pub json: bool,
}

impl Ctx {
    pub fn store(&self) -> Result<crate::store::Store> {
        let config = crate::config::Config::load(&self.home)?;
        Ok(crate::store::Store::new(self.home.clone()).with_lock_timeout(config.lock_timeout()).with_source("cli"))
    }
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cortex: cannot encode output: {e}"),
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    crate::logging::init_cli();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("cortex: error: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let home = Home::resolve(cli.home.as_deref())?;
    let ctx = Ctx { home, json: cli.json };
    match cli.command {
        None if cli.dry_run || cli.config.is_some() => setup::config_check(&ctx, cli.config.as_deref()),
        None => Err(Error::Config { path: None, detail: "no command given; see `cortex --help`".into() }),
        Some(Command::Init) => setup::init(&ctx),
        Some(Command::Validate) => setup::validate(&ctx),
        Some(Command::Config(c)) => setup::config(&ctx, c),
        Some(Command::Event(c)) => events::run(&ctx, c),
        Some(Command::Start(a)) => supervise::start(&ctx, a),
        Some(Command::Stop(a)) => supervise::stop(&ctx, a),
        Some(Command::Restart(a)) => supervise::restart(&ctx, a),
        Some(Command::Status) => supervise::status(&ctx),
        Some(Command::Run) => crate::supervisor::foreground::run(&ctx.home),
        Some(Command::HealthCheck(a)) => supervise::health_check(&ctx, a),
        Some(Command::Logs(c)) => logs::run(&ctx, c),
    }
}
