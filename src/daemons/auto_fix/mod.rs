//! The auto-fix daemon: decides restarts for zombies (see [`restart`]), keeps the circuit
//! breakers per worker type ([`breaker`]), and applies the declarative fixes of the fix registry
//! to failure patterns, validating and rolling them back ([`registry`]). Every decision is an
//! event and a line of the fix history ([`history`]). It wakes on changes to the spec buckets,
//! the patterns file and its configuration, and at its next deadline (a breaker half-opening, a
//! fix validation).

pub mod breaker;
pub mod history;
pub mod policy;
pub mod registry;
pub mod restart;

pub use breaker::is_dispatch_allowed;
pub use policy::RestartPolicy;

use crate::base::clock::{Clock, SystemClock, Timestamp};
use crate::base::error::Result;
use crate::store::Store;
use crate::store::home::SpecBucket;
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub decisions: Vec<restart::Made>,
    pub registry: registry::RegistryReport,
    pub next_pass: Option<Timestamp>,
}

/// One pass: breakers first (so a zombie's decision sees a breaker its own failure tripped),
/// then the zombies' restart decisions, then the fix registry.
pub fn pass(store: &Store, clock: &dyn Clock) -> Result<PassReport> {
    let policy: RestartPolicy = store.load().unwrap_or_else(|e| {
        tracing::error!("restart policy unreadable, using defaults: {e}");
        RestartPolicy::default()
    });
    let next_breaker = breaker::refresh(store, &policy, clock.now())?;
    let decisions = restart::process_zombies(store, &policy, clock.now())?;
    // Restarts do not change breakers, but failures the pass found may have: refresh once more
    // only when decisions were made (cheap and keeps the file current for the coordinator).
    if !decisions.is_empty() {
        breaker::refresh(store, &policy, clock.now())?;
    }
    let registry = match registry::run(store, clock.now()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("fix registry pass failed: {e}");
            registry::RegistryReport::default()
        }
    };
    let next_pass = match (next_breaker, registry.next_validation) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(PassReport { decisions, registry, next_pass })
}

/// The loop of `cortex-auto-fix`.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let clock = Arc::new(SystemClock);
    let patterns_dir = ctx.home.coord("patterns");
    crate::store::atomic::create_dir_all(&patterns_dir)?;
    ctx.watch(&[
        ctx.home.worker_specs(SpecBucket::Zombie),
        ctx.home.worker_specs(SpecBucket::Failed),
        ctx.home.worker_specs(SpecBucket::Completed),
        patterns_dir,
        ctx.store.path(crate::store::files::RESTART_POLICY),
        ctx.store.path(crate::store::files::FIX_REGISTRY),
    ])?;
    let safety = Duration::from_secs(ctx.config.auto_fix.interval_seconds.max(1));
    ctx.mark_ready()?;
    loop {
        let deadline = match pass(&ctx.store, clock.as_ref()) {
            Ok(report) => {
                let wall = report.next_pass.map(|t| (t - clock.now()).to_std().unwrap_or(Duration::ZERO));
                Instant::now() + wall.unwrap_or(safety).min(safety)
            }
            Err(e) => {
                tracing::error!("auto-fix pass failed: {e}");
                Instant::now() + Duration::from_secs(1)
            }
        };
        if let Wake::Shutdown(_) = ctx.wait(Some(deadline)) {
            return Ok(());
        }
        if ctx.drain_pending().iter().any(|w| matches!(w, Wake::Shutdown(_))) {
            return Ok(());
        }
    }
}
