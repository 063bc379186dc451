//! `cortex breaker list` and `cortex breaker reset TYPE`: the circuit breakers per worker type.

use super::{Ctx, print_json};
use crate::base::clock::format_ts;
use crate::base::error::{Error, Result};
use crate::base::text::safe;
use crate::daemons::auto_fix::breaker::{self, BreakerState, Breakers};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BreakerCommand {
    /// Show every worker type's breaker.
    List,
    /// Close a worker type's breaker now (failures before now stop counting).
    Reset {
        /// The worker type.
        worker_type: String,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: BreakerCommand) -> Result<u8> {
    let store = ctx.store()?;
    match cmd {
        BreakerCommand::List => {
            let doc: Breakers = store.load()?;
            if ctx.json {
                print_json(&doc);
                return Ok(0);
            }
            if doc.breakers.is_empty() {
                println!("no circuit breakers yet (a worker type gets one at its first failure)");
            }
            for (t, b) in &doc.breakers {
                let state = match &b.state {
                    BreakerState::Closed { since } => format!("closed since {}", format_ts(*since)),
                    BreakerState::Open { opened_at, half_open_at, reason } => {
                        format!("OPEN since {} until {}: {reason}", format_ts(*opened_at), format_ts(*half_open_at))
                    }
                    BreakerState::HalfOpen { since } => {
                        format!("half-open since {} (one trial dispatch)", format_ts(*since))
                    }
                };
                println!(
                    "{:<24} {}; {} failure(s) in window, {} trip(s)",
                    safe(t),
                    safe(&state),
                    b.failures_in_window,
                    b.trips
                );
            }
            Ok(0)
        }
        BreakerCommand::Reset { worker_type } => {
            let by = format!("cli ({})", crate::domain::scheduler_state::local_user());
            match breaker::reset(&store, &worker_type, &by, chrono::Utc::now())? {
                None => Err(Error::refused(format!("no circuit breaker for worker type {worker_type:?}"))),
                Some(_) => {
                    if ctx.json {
                        print_json(&serde_json::json!({"worker_type": worker_type, "state": "closed"}));
                    } else {
                        println!("circuit breaker of {} reset to closed", safe(&worker_type));
                    }
                    Ok(0)
                }
            }
        }
    }
}
