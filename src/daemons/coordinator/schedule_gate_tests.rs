//! Unit tests of the coordinator's schedule gate (`ScheduleGate`): when a schedule pass may be
//! skipped.

use super::*;
use std::time::{Duration, UNIX_EPOCH};

/// A file the gate reads, stat'ed within its timestamp tick, is not trusted: the next cycle
/// passes again even though its identity did not change. One stat'ed later is trusted.
#[test]
fn a_racily_clean_schedules_file_is_passed_again() {
    let (_dir, store) = crate::store::fresh_store();
    let files = ScheduleGate::files(&store);
    let newest = files.iter().flatten().map(|f| f.mtime_ns.max(f.ctime_ns)).max().unwrap();
    let at = |ns: i128| UNIX_EPOCH + Duration::from_nanos(ns as u64);
    let mut gate = ScheduleGate::default();
    gate.pass_seen(&store, files, at(newest + 1_000_000));
    assert_eq!(gate.seen, None, "stat'ed 1 ms after the change: not trusted");
    gate.pass_seen(&store, files, at(newest + 10_000_000_000));
    assert_eq!(gate.seen, Some(files), "stat'ed 10 s after the change: trusted");
}
