//! `cortex logs rotate|reopen|clean|archive|tail`.

use super::{Ctx, print_json};
use crate::base::error::{Error, Result};
use crate::base::text::{safe, safe_path};
use crate::store::config::{Config, parse_size};
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Rotate daemon logs above a size: NAME.log -> NAME.log.1, shift, gzip, drop beyond --keep, SIGHUP.
    Rotate {
        /// Rotate logs larger than this (10M, 512K, bytes; default `[logs] max_size`).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Rotated copies kept (default `[logs] keep`).
        #[arg(long)]
        keep: Option<u32>,
    },
    /// Send SIGHUP to this home's running daemons so they reopen their logs (logrotate's postrotate).
    Reopen,
    /// Delete logs not modified for a while (never one a running daemon writes).
    Clean {
        /// Age of `*.log*` files to delete (default `[logs] clean_older_than_days`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Age of gzipped files to delete.
        #[arg(long, value_name = "AGE", default_value = "30d")]
        gz_older_than: String,
    },
    /// Move rotated logs into archives/logs/<date>.tar.gz.
    Archive,
    /// Print the end of a daemon's log.
    Tail {
        /// A daemon (worker, pm, ...), its log file (worker-daemon.log), the runbook's names
        /// (heartbeat-monitor-daemon.log, metrics-snapshot-daemon.log,
        /// integration-validator-daemon.log) or a file in agents/logs/system/.
        name: String,
        /// Lines to print.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines (across rotations) until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines mentioning error, exception, failed, fatal or panicked.
        #[arg(long)]
        errors: bool,
    },
}

fn age(s: &str) -> Result<Duration> {
    crate::base::clock::parse_duration(s).map_err(|detail| Error::Config { path: None, detail })
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}K", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}

pub(super) fn run(ctx: &Ctx, cmd: LogsCommand) -> Result<u8> {
    let config = Config::load(&ctx.home)?;
    let home = &ctx.home;
    match cmd {
        LogsCommand::Rotate { max_size, keep } => {
            let size_text = max_size.unwrap_or_else(|| config.logs.max_size.clone());
            let max = parse_size(&size_text).map_err(|detail| Error::Config { path: None, detail })?;
            let keep = keep.unwrap_or(config.logs.keep);
            let rotated = crate::ops::logs::rotate(home, max, keep, Duration::from_secs(5))?;
            if ctx.json {
                print_json(&rotated);
            } else if rotated.is_empty() {
                println!("No log above {size_text}; nothing rotated.");
            } else {
                for r in &rotated {
                    let name = std::path::Path::new(&r.file).file_name().unwrap_or_default().to_string_lossy();
                    let reopen = match (&r.daemon, r.reopened) {
                        (Some(d), Some(true)) => format!(", {d} reopened it"),
                        (Some(d), _) => format!(", {d} did NOT reopen it within 5s (still writes {name}.1)"),
                        _ => String::new(),
                    };
                    println!("Rotated: {} ({}{reopen})", safe(&name), human_bytes(r.size));
                }
            }
            Ok(if rotated.iter().all(|r| r.reopened != Some(false)) { 0 } else { 1 })
        }
        LogsCommand::Reopen => {
            let done = crate::ops::supervisor::control::reopen_logs(home);
            if ctx.json {
                print_json(&done);
            } else if done.is_empty() {
                println!("No daemon is running in {}", safe_path(home.root()));
            } else {
                for (d, pid) in &done {
                    println!("{d}: sent SIGHUP (PID {pid})");
                }
            }
            Ok(0)
        }
        LogsCommand::Clean { older_than, gz_older_than } => {
            let older = match older_than {
                Some(s) => age(&s)?,
                None => Duration::from_secs(config.logs.clean_older_than_days as u64 * 86400),
            };
            let c = crate::ops::logs::clean(home, older, age(&gz_older_than)?)?;
            if ctx.json {
                print_json(&c);
            } else {
                for f in &c.removed {
                    println!("Removed: {}", safe(f));
                }
                println!(
                    "Removed {} file(s), freed {}; agents/logs/ now holds {}",
                    c.removed.len(),
                    human_bytes(c.freed_bytes),
                    human_bytes(c.remaining_bytes)
                );
            }
            Ok(0)
        }
        LogsCommand::Archive => {
            let a = crate::ops::logs::archive(home)?;
            if ctx.json {
                print_json(&a);
            } else {
                match &a.archive {
                    Some(p) => {
                        println!(
                            "Archived {} rotated log(s) ({}) into {}",
                            a.files.len(),
                            human_bytes(a.bytes),
                            safe(p)
                        )
                    }
                    None => println!("No rotated logs to archive."),
                }
            }
            Ok(0)
        }
        LogsCommand::Tail { name, lines, follow, errors } => {
            let path = crate::ops::logs::log_path(home, &name)?;
            let (last, read) = crate::ops::logs::tail(&path, lines, errors)?;
            // Log lines quote task output, event messages and file content: escaped like any
            // other untrusted text.
            for l in last {
                println!("{}", safe(&l));
            }
            if follow {
                use std::io::Write;
                let mut out = std::io::stdout();
                crate::ops::logs::follow(&path, read, errors, |l| {
                    writeln!(out, "{}", safe(l)).and_then(|()| out.flush()).is_ok()
                })?;
            }
            Ok(0)
        }
    }
}
