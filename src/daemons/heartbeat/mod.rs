//! The heartbeat daemon: watches running dispatches' heartbeats and process groups, keeps the
//! `heartbeat` record of each spec, records threshold transitions once each, and cleans up
//! zombies (see [`zombie`]). It is deadline-driven: it sleeps until the next threshold crossing,
//! re-check or sample, or until a heartbeat file or spec changes.
//!
//! - [`policy`]: the file `config/heartbeat-policy.json`.
//! - [`beat`]: the per-dispatch heartbeat and usage files; `cortex heartbeat` writes them.
//! - [`liveness`], [`health`]: pure threshold and score logic.
//! - [`process`]: `/proc`, process groups, stopping them.
//! - [`record`]: the `heartbeat` object in a spec.
//! - [`monitor`]: one pass; [`zombie`]: the cleanup pipeline; [`daemons`]: hung daemons.

pub mod beat;
pub(crate) mod daemons;
pub(crate) mod health;
pub(crate) mod liveness;
pub(crate) mod monitor;
pub(crate) mod policy;
pub(crate) mod process;
pub(crate) mod record;
pub(crate) mod zombie;

pub use monitor::{Monitor, PassReport};
pub use policy::HeartbeatPolicy;

use crate::base::clock::{Clock, SystemClock};
use crate::base::error::Result;
use crate::store::home::SpecBucket;
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The loop of `cortex-heartbeat`.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut monitor = Monitor::new(clock.clone());
    monitor.marks_every = Duration::from_secs(ctx.config.heartbeat.interval_seconds.max(1));
    let dispatch_runs = ctx.home.run_dir().join("dispatches");
    crate::store::atomic::create_dir_all(&dispatch_runs)?;
    ctx.pace_watches(crate::daemons::daemon::OFF_PATH_PACE);
    ctx.watch(&[dispatch_runs, ctx.home.worker_specs(SpecBucket::Active)])?;
    // The policy's directory, not the file: an edit replaces the file (a new inode), and a watch
    // of the old one would see no later edit.
    let policy = ctx.store.path(crate::store::files::HEARTBEAT_POLICY);
    ctx.watch_flat(&[policy.parent().unwrap_or(&policy).to_path_buf()])?;
    let hung_after = ctx.config.supervisor.hung_after_seconds as f64;
    let safety = Duration::from_secs(ctx.config.heartbeat.interval_seconds.max(1));
    ctx.mark_ready()?;
    // A pass runs at its deadline (a threshold crossing, a re-check, a sample, the slow timer)
    // or `SETTLE` after the first change of a burst (specs and heartbeat files change several
    // times per dispatch): one pass per burst, not one per file event.
    let mut next_pass = Instant::now();
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= next_pass || settle_until.is_some_and(|t| now >= t) {
            settle_until = None;
            next_pass = match monitor.pass(&ctx.store, hung_after) {
                Ok(report) => {
                    let wall = report.next_pass.map(|t| (t - clock.now()).to_std().unwrap_or(Duration::ZERO));
                    Instant::now() + wall.unwrap_or(safety).min(safety)
                }
                Err(e) => {
                    tracing::error!("heartbeat pass failed: {e}");
                    Instant::now() + Duration::from_secs(1)
                }
            };
        }
        let deadline = settle_until.map_or(next_pass, |s| s.min(next_pass));
        // While a burst settles, its further changes are collected at its end, not woken for.
        let first = if settle_until.is_some() { ctx.wait_settling(deadline) } else { ctx.wait(Some(deadline)) };
        let mut wakes = vec![first];
        wakes.extend(ctx.drain_pending());
        for w in wakes {
            match w {
                Wake::Shutdown(_) => return Ok(()),
                Wake::Deadline => {}
                _ => {
                    settle_until.get_or_insert_with(|| Instant::now() + SETTLE);
                }
            }
        }
    }
}

/// How long a burst of changes settles before the pass that looks at it.
const SETTLE: Duration = Duration::from_millis(50);
