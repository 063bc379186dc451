//! The metrics daemon: every `[metrics] interval_seconds` it appends one [`Snapshot`] line to
//! `coordination/metrics/metrics-snapshots.jsonl` (size-capped and rotated), and it keeps the
//! event log under `[events] max_file_bytes` by rotation. `cortex metrics` reads the latest line.
//!
//! - [`snapshot`]: the computation (also for the API).
//! - [`sample`]: memory and CPU of daemons, from `/proc` through [`crate::base::procfs`].
//! - [`rotation`]: size caps of the snapshot file and the event log.

pub(crate) mod rotation;
pub(crate) mod sample;
pub(crate) mod snapshot;

pub use snapshot::{Collector, Snapshot, snapshot};

use crate::base::clock::SystemClock;
use crate::base::error::Result;
use crate::store::files;
use crate::store::home::Home;
use crate::store::{Store, jsonl};
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// Appends a snapshot (rotating the file first when it is at its cap).
pub fn record(store: &Store, config: &crate::store::config::Config, snap: &Snapshot) -> Result<()> {
    rotation::rotate_snapshots(store, config)?;
    jsonl::append(&store.path(files::METRICS_SNAPSHOTS), snap)
}

/// The last snapshot line of one file that parses, reading only its tail when possible.
fn last_in(path: &Path) -> Option<Snapshot> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        // The first line of a window that does not start the file may be cut: skip it.
        let lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        let usable = if start > 0 { &lines[1.min(lines.len())..] } else { &lines[..] };
        if let Some(s) = usable.iter().rev().find_map(|l| serde_json::from_slice::<Snapshot>(l).ok()) {
            return Some(s);
        }
        if start == 0 {
            return None;
        }
        window *= 4;
    }
}

/// The latest recorded snapshot (from the current file, else the newest rotated copy).
pub fn latest(home: &Home) -> Option<Snapshot> {
    let path = home.coord_file(files::METRICS_SNAPSHOTS);
    last_in(&path).or_else(|| last_in(&crate::store::rotation::rotated_names(&path, 1).0))
}

/// The metrics daemon's loop: a snapshot now and at every interval (deadline-driven), and a size
/// check of the event log with each snapshot.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let mut collector = Collector::new();
    let every = Duration::from_secs(ctx.config.metrics.interval_seconds.max(1));
    ctx.mark_ready()?;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            match rotation::rotate_event_log(&ctx.store, &ctx.config) {
                Ok(true) => tracing::info!("event log rotated"),
                Ok(false) => {}
                Err(e) => tracing::error!("cannot rotate the event log: {e}"),
            }
            match collector.snapshot(&ctx.store, &SystemClock) {
                Ok(snap) => {
                    if let Err(e) = record(&ctx.store, &ctx.config, &snap) {
                        tracing::error!("cannot record a metrics snapshot: {e}");
                    }
                }
                Err(e) => tracing::error!("cannot take a metrics snapshot: {e}"),
            }
            // The next deadline follows the schedule; after a stall it restarts from now.
            next += every;
            if next <= Instant::now() {
                next = Instant::now() + every;
            }
        }
        if let Wake::Shutdown(_) = ctx.wait(Some(next)) {
            return Ok(());
        }
    }
}
