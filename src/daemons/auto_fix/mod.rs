//! The auto-fix daemon: decides restarts for zombies (see [`restart`]), keeps the circuit
//! breakers per worker type ([`breaker`]), and applies the declarative fixes of the fix registry
//! to failure patterns, validating and rolling them back ([`registry`]). Every decision is an
//! event and a line of the fix history ([`history`]). It wakes on changes to the spec buckets,
//! the patterns file and its configuration, and at its next deadline (a breaker half-opening, a
//! fix validation).

pub mod breaker;
pub(crate) mod history;
pub(crate) mod policy;
pub mod registry;
pub(crate) mod restart;

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

/// What woke the daemon since its last pass, sorted by what it concerns.
#[derive(Debug, Default)]
pub struct Changes {
    /// Ended specs (in `completed/`, `failed/`, `zombie/`) that changed.
    pub specs: Vec<std::path::PathBuf>,
    /// Something in `zombie/` changed: restart decisions are due.
    pub zombies: bool,
    /// The patterns or the fix registry changed: the registry pass is due.
    pub registry: bool,
    /// The restart policy changed (or a bucket must be read again whole).
    pub policy: bool,
}

impl Changes {
    /// Everything: the first pass, and the slow timer's (`[auto_fix] interval_seconds`).
    pub fn all() -> Changes {
        Changes { specs: Vec::new(), zombies: true, registry: true, policy: true }
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty() && !self.zombies && !self.registry && !self.policy
    }

    /// Sorts one changed path.
    pub fn note(&mut self, home: &crate::store::home::Home, store: &Store, path: std::path::PathBuf) {
        let zombie_dir = home.worker_specs(SpecBucket::Zombie);
        if path == store.path(crate::store::files::RESTART_POLICY) {
            self.policy = true;
        } else if path == store.path(crate::store::files::FIX_REGISTRY) {
            self.registry = true;
        } else if path == home.coord("config") {
            // The directory itself (a rescan): both of auto-fix's files may have changed.
            self.policy = true;
            self.registry = true;
        } else if path == home.failure_pattern_state() {
            // failure-pattern's own memory (rewritten as failures arrive): not the patterns.
        } else if path.starts_with(home.coord("config")) {
            // Another configuration file: not auto-fix's.
        } else if breaker::ENDED_BUCKETS.iter().any(|b| home.worker_specs(*b) == path) {
            // A bucket itself (a rescan after an event queue overflow): read everything again.
            self.policy = true;
            self.zombies = true;
        } else if breaker::ENDED_BUCKETS.iter().any(|b| path.parent() == Some(home.worker_specs(*b).as_path())) {
            self.zombies |= path.parent() == Some(zombie_dir.as_path());
            self.specs.push(path);
        } else {
            self.registry = true;
        }
    }
}

/// The auto-fix daemon's memory between passes: the restart policy and the breakers' outcomes,
/// so a pass costs what changed (the spec that ended), not every ended dispatch kept.
pub struct AutoFix {
    store: Store,
    clock: Arc<dyn Clock>,
    policy: Option<RestartPolicy>,
    pub breakers: breaker::Tracker,
    next_registry: Option<Timestamp>,
    /// Passes that did any work (for the tests and the log).
    pub passes: u64,
}

impl AutoFix {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> AutoFix {
        AutoFix { store, clock, policy: None, breakers: breaker::Tracker::default(), next_registry: None, passes: 0 }
    }

    /// One pass over what changed: breakers from the changed specs, restart decisions when a
    /// zombie changed, the registry when patterns or fixes changed or a validation is due. Does
    /// nothing (no file read) for a change that concerns none of them: a success ending while
    /// every breaker is closed.
    pub fn pass(&mut self, changes: Changes) -> Result<PassReport> {
        let now = self.clock.now();
        if changes.policy || self.policy.is_none() {
            self.policy = Some(self.store.load().unwrap_or_else(|e| {
                tracing::error!("restart policy unreadable, using defaults: {e}");
                RestartPolicy::default()
            }));
            self.breakers.invalidate();
        }
        let policy = self.policy.clone().unwrap_or_default();
        let reads = self.breakers.reads;
        for p in &changes.specs {
            self.breakers.note_path(&self.store, p, &policy.circuit_breaker);
        }
        let specs_read = self.breakers.reads != reads || !self.breakers.is_built();
        let registry_due = changes.registry || self.next_registry.is_some_and(|t| now >= t);
        if !specs_read && !changes.zombies && !registry_due {
            return Ok(PassReport::default());
        }
        self.passes += 1;
        let next_breaker = self.breakers.refresh(&self.store, &policy, now)?;
        let decisions = if changes.zombies { restart::process_zombies(&self.store, &policy, now)? } else { Vec::new() };
        if !decisions.is_empty() {
            self.breakers.refresh(&self.store, &policy, self.clock.now())?;
        }
        let registry = if registry_due || !decisions.is_empty() {
            let r = match registry::run(&self.store, now) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("fix registry pass failed: {e}");
                    registry::RegistryReport::default()
                }
            };
            self.next_registry = r.next_validation;
            r
        } else {
            registry::RegistryReport::default()
        };
        let next_pass = match (next_breaker, self.next_registry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(PassReport { decisions, registry, next_pass })
    }
}

/// The loop of `cortex-auto-fix`.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let patterns_dir = ctx.home.coord("patterns");
    crate::store::atomic::create_dir_all(&patterns_dir)?;
    ctx.pace_watches(crate::daemons::daemon::OFF_PATH_PACE);
    ctx.watch(&[
        ctx.home.worker_specs(SpecBucket::Zombie),
        ctx.home.worker_specs(SpecBucket::Failed),
        ctx.home.worker_specs(SpecBucket::Completed),
        patterns_dir,
    ])?;
    // The configuration directory's own entries: a policy or registry replaced by rename (a new
    // inode) is seen too.
    ctx.watch_flat(&[ctx.home.coord("config")])?;
    let safety = Duration::from_secs(ctx.config.auto_fix.interval_seconds.max(1));
    let mut autofix = AutoFix::new(ctx.store.clone(), clock.clone());
    ctx.mark_ready()?;
    let mut changes = Changes::all();
    let mut next_due: Option<Instant> = None;
    let mut next_safety = Instant::now() + safety;
    loop {
        if !changes.is_empty() {
            match autofix.pass(std::mem::take(&mut changes)) {
                Ok(report) => {
                    if report.next_pass.is_some() || next_due.is_some_and(|d| Instant::now() >= d) {
                        next_due = report
                            .next_pass
                            .map(|t| Instant::now() + (t - clock.now()).to_std().unwrap_or(Duration::ZERO));
                    }
                }
                Err(e) => {
                    tracing::error!("auto-fix pass failed: {e}");
                    changes = Changes::all();
                    next_due = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        let deadline = next_due.map_or(next_safety, |d| d.min(next_safety));
        let mut wakes = vec![ctx.wait(Some(deadline))];
        wakes.extend(ctx.drain_pending());
        for w in wakes {
            match w {
                Wake::Shutdown(_) => return Ok(()),
                Wake::Changed(p) => changes.note(&ctx.home, &ctx.store, p),
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= next_safety {
            // The slow timer: zombies and the registry looked at again (breakers from memory).
            changes.zombies = true;
            changes.registry = true;
            next_safety = now + safety;
        }
        if next_due.is_some_and(|d| now >= d) {
            // A breaker half-opening or a fix validation: the pass's breaker refresh and
            // registry pass.
            changes.registry = true;
            next_due = None;
        }
    }
}
