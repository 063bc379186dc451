//! The kernel's lock table read while other processes take and release locks: `/proc/locks`
//! comes a page per `read` call, so a held lock could be skipped between two calls and a lookup
//! answered "nobody holds it" (`cortex stop --force` then refused a live daemon: "it does not
//! hold the lock of run/heartbeat.pid (the kernel's lock table names nobody)", seen by the
//! emergency-recovery runbook's test on a loaded machine). A held lock is always found.
use cortex::store::holders;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn a_held_lock_is_found_while_other_locks_churn() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Churners first, so their locks come and go around ours in the table.
    let churners: Vec<_> = (0..3)
        .map(|n| {
            let files: Vec<std::fs::File> =
                (0..40).map(|i| std::fs::File::create(dir.path().join(format!("churn-{n}-{i}"))).unwrap()).collect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for f in &files {
                        f.lock().unwrap();
                    }
                    for f in &files {
                        f.unlock().unwrap();
                    }
                }
            })
        })
        .collect();
    let path = dir.path().join("held");
    let held = std::fs::File::create(&path).unwrap();
    held.lock().unwrap();
    let meta = held.metadata().unwrap();
    let me = std::process::id();
    let (mut missed, mut lookups) = (0, 0);
    // Lookups for a few seconds (a rate over a window is the point): ~0.7 % of the table's reads
    // skipped the held lock here before lookups read it again.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until || lookups < 300 {
        let found =
            if lookups % 50 == 49 { holders::all_holders(&path) } else { holders::holders_of(meta.dev(), meta.ino()) };
        if !found.iter().any(|h| h.pid == me && h.exclusive) {
            missed += 1;
        }
        lookups += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    assert_eq!(missed, 0, "the held lock was missing from {missed} of {lookups} lookups");
}
