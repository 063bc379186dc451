//! `cortex scheduler pause [--reason R] | resume | status | drain [--cancel-running] [--wait]
//! [--timeout SECS]`: the same library calls as the API's `/scheduler/*` endpoints, working with
//! every daemon down (state lives in `coordination/scheduler-state.json`).

use super::{Ctx, print_json};
use crate::base::clock::{format_ts, format_ts_or};
use crate::base::error::Result;
use crate::base::text::{safe, safe_or};
use crate::domain::scheduler_state::{self, Actor, local_user};
use crate::domain::task::dispatches;
use crate::ops::status::{StatusReader, wait_no_active};
use clap::Subcommand;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Stop new dispatches (running ones continue). Persistent until `resume`.
    Pause {
        /// Why (recorded in the state file and the scheduler_paused event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Allow new dispatches again.
    Resume,
    /// Show the scheduler's state (works while the daemons are down).
    Status,
    /// Emergency drain: pause, optionally cancel every running dispatch, wait for none to run.
    Drain {
        /// Cancel every running dispatch (process group TERM, grace, KILL by the worker).
        #[arg(long)]
        cancel_running: bool,
        /// Wait until no dispatch runs (or the timeout).
        #[arg(long)]
        wait: bool,
        /// Longest wait, seconds.
        #[arg(long, default_value_t = 300.0, value_name = "SECS")]
        timeout: f64,
        /// Why (recorded with the pause).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn actor() -> Actor {
    Actor { who: local_user(), from: "cli".into() }
}

pub(super) fn run(ctx: &Ctx, cmd: SchedulerCommand) -> Result<u8> {
    let store = ctx.store()?;
    match cmd {
        SchedulerCommand::Pause { reason } => {
            let t = scheduler_state::pause(&store, &actor(), reason.as_deref())?;
            if ctx.json {
                print_json(&json!({"status": "success", "message": t.message, "timestamp": format_ts(t.timestamp),
                    "paused": true, "changed": t.changed, "paused_at": t.state.paused_at.map(format_ts),
                    "paused_by": t.state.paused_by, "reason": t.state.reason}));
            } else if t.changed {
                println!(
                    "Scheduler paused at {} (running dispatches continue; `cortex scheduler resume` to resume)",
                    format_ts(t.timestamp)
                );
            } else {
                println!(
                    "Scheduler already paused (since {}, by {})",
                    format_ts_or(t.state.paused_at, "?"),
                    safe_or(t.state.paused_by.as_deref(), "?")
                );
            }
            Ok(0)
        }
        SchedulerCommand::Resume => {
            let t = scheduler_state::resume(&store, &actor())?;
            if ctx.json {
                print_json(&json!({"status": "success", "message": t.message, "timestamp": format_ts(t.timestamp),
                    "paused": false, "changed": t.changed, "resumed_at": t.state.resumed_at.map(format_ts)}));
            } else if t.changed {
                println!("Scheduler resumed at {}", format_ts(t.timestamp));
            } else {
                println!("Scheduler already running");
            }
            Ok(0)
        }
        SchedulerCommand::Status => {
            let reader = StatusReader::new(store, crate::store::config::Config::load(&ctx.home)?);
            let s = reader.scheduler_status()?;
            // Unknown state (the file cannot be read): still a report, with exit status 1.
            let code = if s.errors.is_empty() { 0 } else { 1 };
            if ctx.json {
                print_json(&s);
                return Ok(code);
            }
            if s.paused.is_none() {
                println!("Scheduler: unknown");
            } else if s.paused == Some(true) {
                println!("Scheduler: paused for {}", safe_or(s.paused_duration.as_deref(), "?"));
                println!("  paused at:   {}", format_ts_or(s.paused_at, "?"));
                println!(
                    "  paused by:   {} ({})",
                    safe_or(s.paused_by.as_deref(), "?"),
                    safe_or(s.paused_from.as_deref(), "?")
                );
                println!("  reason:      {}", safe_or(s.reason.as_deref(), "-"));
            } else {
                println!("Scheduler: running");
                println!("  resumed at:  {}", format_ts_or(s.resumed_at, "never paused"));
            }
            println!("  coordinator: {} (uptime {})", safe(s.coordinator), safe_or(s.uptime.as_deref(), "-"));
            println!("  last tick:   {}", safe_or(s.last_tick.as_deref(), "-"));
            println!("  tick interval: {}", safe(&s.tick_interval));
            for e in &s.errors {
                println!("Problem: cannot read {}: {}", safe(&e.file), safe(&e.error));
            }
            Ok(code)
        }
        SchedulerCommand::Drain { cancel_running, wait, timeout, reason } => {
            let started = Instant::now();
            let reason = reason.unwrap_or_else(|| "drain".into());
            let t = scheduler_state::pause(&store, &actor(), Some(&reason))?;
            let reader = StatusReader::new(store.clone(), crate::store::config::Config::load(&ctx.home)?);
            let active: Vec<String> =
                reader.dispatches()?.iter().filter(|d| d.is_active()).map(|d| d.record.dispatch_id.clone()).collect();
            let mut cancel_requested = Vec::new();
            let mut cancel_errors = Vec::new();
            if cancel_running {
                let by = format!("{} (cli drain)", local_user());
                for id in &active {
                    match dispatches::request_cancel(&store, id, &by) {
                        Ok(_) => cancel_requested.push(id.clone()),
                        // It ended meanwhile: nothing to cancel.
                        Err(crate::base::error::Error::Refused(m)) => cancel_errors.push(m),
                        Err(e) => return Err(e),
                    }
                }
            }
            let must_wait = wait || cancel_running;
            let remaining = if must_wait {
                wait_no_active(&reader, Duration::from_secs_f64(timeout.max(0.0)))?
            } else {
                active.len()
            };
            let drained = remaining == 0;
            if ctx.json {
                print_json(&json!({
                    "paused": true,
                    "pause_message": t.message,
                    "running_at_start": active.len(),
                    "cancel_requested": cancel_requested,
                    "cancel_skipped": cancel_errors,
                    "waited": must_wait,
                    "running_count": remaining,
                    "drained": drained,
                    "elapsed_s": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                }));
            } else {
                println!("{}", safe(&t.message));
                println!("Running dispatches at start: {}", active.len());
                if cancel_running {
                    println!("Cancel requested: {}", cancel_requested.len());
                    for m in &cancel_errors {
                        println!("  skipped: {}", safe(m));
                    }
                }
                if must_wait {
                    if drained {
                        println!("Drained: 0 running dispatches after {:.1}s", started.elapsed().as_secs_f64());
                    } else {
                        println!(
                            "Timed out after {:.1}s: {remaining} dispatch(es) still running (see `cortex dispatches --status running`)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                } else {
                    println!("Not waiting: {remaining} dispatch(es) still running (add --wait to wait for them)");
                }
            }
            Ok(if must_wait && !drained { 1 } else { 0 })
        }
    }
}
