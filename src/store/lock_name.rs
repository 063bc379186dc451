//! Every lock of a home by name, and the one order they are taken in (invariant 3).
//!
//! [`LockName`]'s declaration order IS the lock order: a thread holding lock `a` may take lock
//! `b` only when `a < b`. Two processes that both follow it never wait on each other in a
//! cycle. The lock file of each name is `coordination/.locks/<name>.lock` ([`LockName::as_str`]);
//! those names are on disk in existing homes and in `cortex locks`, so they never change.
//!
//! In debug builds (and so in every test) each thread keeps the stack of the locks it holds:
//! taking a lock that is not after every lock held panics, naming both ([`order`]). Release
//! builds only pay for the names.
//!
//! Locks taken alone (never with another held, and never holding another while held):
//! `task-intake` shared (`cortex task add`, one append), `dispatch-exits` shared (a task's exec
//! shim, one append) and exclusive (the worker emptying the exit journal), `logs` (a rotation).
//! `supervisor` is taken under a `daemon-<name>` at most, and nothing under it; `backup` holds
//! only the snapshot's data locks under it (PID-file locks, outside this order, aside).

use std::fmt;

/// A lock under `coordination/.locks/`, in lock order (outermost first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockName {
    /// Serialises backups and restores; held while the snapshot takes every data lock below.
    Backup,
    /// Serialises starting and stopping one daemon (`daemon-<name>`); the supervisor state's
    /// lock may be taken under it.
    Daemon(&'static str),
    /// `run/supervisor-state.json` (restart counts, FAILED marks).
    Supervisor,
    /// `scheduler-state.json`: the coordinator holds it for a whole dispatch cycle.
    Scheduler,
    /// `schedules.json`: firing schedules holds it under `scheduler`.
    Schedules,
    /// `task-queue.json`.
    TaskQueue,
    /// `task-intake.jsonl`: shared by appenders (alone), exclusive when the coordinator folds
    /// it under `task-queue`.
    TaskIntake,
    /// `token-budget.json`.
    TokenBudget,
    /// Every dispatch record in `worker-specs/<bucket>/`.
    WorkerSpecs,
    /// `dashboard-events.jsonl` (its rotation; appends take no lock).
    Events,
    /// `config/worker-types.json`.
    WorkerTypes,
    /// `config/heartbeat-policy.json`.
    HeartbeatPolicy,
    /// `config/worker-restart-policy.json`.
    WorkerRestartPolicy,
    /// `moe/router-config.json`.
    RouterConfig,
    /// `moe/routing-decisions.jsonl`.
    RoutingDecisions,
    /// `patterns/failure-patterns.jsonl`.
    FailurePatterns,
    /// `metrics/metrics-snapshots.jsonl`.
    Metrics,
    /// `circuit-breakers.json`.
    CircuitBreakers,
    /// `config/auto-fix-registry.json`.
    AutoFixRegistry,
    /// `auto-fix/fix-history.jsonl`.
    FixHistory,
    /// `task-archive.jsonl`.
    TaskArchive,
    /// `failure-streaks.json`.
    FailureStreaks,
    /// `event-acks.jsonl`.
    EventAcks,
    /// `config/notifications.json` (edited by the operator; cortex-notify only reads it).
    Notifications,
    /// `run/dispatch-exits.jsonl`: shared by each exec shim, exclusive by the worker; alone.
    DispatchExits,
    /// Rotation of the daemon logs (tried, never waited for, by a daemon's own log writer).
    Logs,
}

impl LockName {
    /// Every lock with a fixed name, in lock order (`Daemon` locks have one per daemon).
    pub const FIXED: [LockName; 25] = [
        LockName::Backup,
        LockName::Supervisor,
        LockName::Scheduler,
        LockName::Schedules,
        LockName::TaskQueue,
        LockName::TaskIntake,
        LockName::TokenBudget,
        LockName::WorkerSpecs,
        LockName::Events,
        LockName::WorkerTypes,
        LockName::HeartbeatPolicy,
        LockName::WorkerRestartPolicy,
        LockName::RouterConfig,
        LockName::RoutingDecisions,
        LockName::FailurePatterns,
        LockName::Metrics,
        LockName::CircuitBreakers,
        LockName::AutoFixRegistry,
        LockName::FixHistory,
        LockName::TaskArchive,
        LockName::FailureStreaks,
        LockName::EventAcks,
        LockName::Notifications,
        LockName::DispatchExits,
        LockName::Logs,
    ];

    /// The lock file's name without `.lock` (on disk, in `cortex locks`, in messages).
    pub fn as_str(self) -> &'static str {
        match self {
            LockName::Backup => "backup",
            LockName::Daemon(d) => daemon_lock_name(d),
            LockName::Supervisor => "supervisor",
            LockName::Scheduler => "scheduler",
            LockName::Schedules => "schedules",
            LockName::TaskQueue => "task-queue",
            LockName::TaskIntake => "task-intake",
            LockName::TokenBudget => "token-budget",
            LockName::WorkerSpecs => "worker-specs",
            LockName::Events => "events",
            LockName::WorkerTypes => "worker-types",
            LockName::HeartbeatPolicy => "heartbeat-policy",
            LockName::WorkerRestartPolicy => "worker-restart-policy",
            LockName::RouterConfig => "router-config",
            LockName::RoutingDecisions => "routing-decisions",
            LockName::CircuitBreakers => "circuit-breakers",
            LockName::FailurePatterns => "failure-patterns",
            LockName::Metrics => "metrics",
            LockName::TaskArchive => "task-archive",
            LockName::AutoFixRegistry => "auto-fix-registry",
            LockName::FixHistory => "fix-history",
            LockName::FailureStreaks => "failure-streaks",
            LockName::EventAcks => "event-acks",
            LockName::Notifications => "notifications",
            LockName::DispatchExits => "dispatch-exits",
            LockName::Logs => "logs",
        }
    }

    /// The lock file's name: `<name>.lock`.
    pub fn file_name(self) -> String {
        format!("{}.lock", self.as_str())
    }

    /// The lock with this file name (without `.lock`), if it is one of ours.
    pub fn parse(name: &str) -> Option<LockName> {
        if let Some(d) = name.strip_prefix("daemon-") {
            return crate::base::daemon_name::ALL_NAMES.iter().find(|n| **n == d).map(|n| LockName::Daemon(n));
        }
        LockName::FIXED.into_iter().find(|l| l.as_str() == name)
    }

    /// The per-daemon lock of `daemon`.
    pub fn daemon(daemon: crate::base::daemon_name::Daemon) -> LockName {
        LockName::Daemon(daemon.as_str())
    }

    /// The locks a consistent snapshot (and a restore's swap) takes: those guarding data (every
    /// registered file's, and `worker-specs`), in lock order.
    pub fn snapshot() -> impl Iterator<Item = LockName> {
        LockName::FIXED
            .into_iter()
            .filter(|l| *l == LockName::WorkerSpecs || crate::store::files::ALL.iter().any(|f| f.lock == *l))
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `daemon-<name>` for each daemon, spelled once for a `&'static str`.
fn daemon_lock_name(daemon: &str) -> &'static str {
    const NAMES: [&str; 11] = [
        "daemon-worker",
        "daemon-slurm",
        "daemon-pm",
        "daemon-heartbeat",
        "daemon-metrics",
        "daemon-coordinator",
        "daemon-integration",
        "daemon-failure-pattern",
        "daemon-auto-fix",
        "daemon-notify",
        "daemon-api",
    ];
    NAMES.into_iter().find(|n| n.strip_prefix("daemon-") == Some(daemon)).unwrap_or("daemon-unknown")
}

/// The debug-build check of the lock order: a per-thread stack of the locks held.
pub(crate) mod order {
    use super::LockName;

    #[cfg(debug_assertions)]
    thread_local! {
        static HELD: std::cell::RefCell<Vec<(LockName, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
        static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// A lock this thread holds, registered by [`acquiring`]; dropping it forgets the lock (in
    /// any order: guards need not be dropped last-in first-out).
    #[derive(Debug)]
    pub(crate) struct Held {
        #[cfg(debug_assertions)]
        entry: (LockName, u64),
        #[cfg(debug_assertions)]
        thread: std::thread::ThreadId,
    }

    /// Checks that `name` comes after every lock this thread holds (panics otherwise, in debug
    /// builds) and records it as held.
    pub(crate) fn acquiring(name: LockName) -> Held {
        #[cfg(debug_assertions)]
        {
            HELD.with(|held| {
                let held = held.borrow();
                if let Some((last, _)) = held.iter().filter(|(h, _)| *h >= name).max_by_key(|(h, _)| *h) {
                    let chain: Vec<_> = held.iter().map(|(h, _)| h.as_str()).collect();
                    panic!(
                        "lock order violated: taking `{name}` while holding `{last}` (held: {}); \
                         locks are taken in LockName's order (store::lock_name)",
                        chain.join(" → ")
                    );
                }
            });
            let id = NEXT.with(|n| {
                let id = n.get();
                n.set(id + 1);
                id
            });
            HELD.with(|held| held.borrow_mut().push((name, id)));
            Held { entry: (name, id), thread: std::thread::current().id() }
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = name;
            Held {}
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            #[cfg(debug_assertions)]
            if std::thread::current().id() == self.thread {
                // `try_with`: a guard dropped while the thread's locals are torn down.
                let _ = HELD.try_with(|h| h.borrow_mut().retain(|e| *e != self.entry));
            }
        }
    }

    /// The locks this thread holds, in the order taken (empty in release builds).
    #[cfg(test)]
    pub(crate) fn held() -> Vec<LockName> {
        #[cfg(debug_assertions)]
        {
            HELD.with(|h| h.borrow().iter().map(|(n, _)| *n).collect())
        }
        #[cfg(not(debug_assertions))]
        {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_files_on_disk_and_parse_back() {
        for l in LockName::FIXED {
            assert_eq!(LockName::parse(l.as_str()), Some(l));
        }
        for d in crate::base::daemon_name::Daemon::ALL {
            let l = LockName::daemon(d);
            assert_eq!(l.as_str(), format!("daemon-{d}"));
            assert_eq!(LockName::parse(l.as_str()), Some(l));
        }
        assert!(LockName::FIXED.windows(2).all(|w| w[0] < w[1]), "FIXED is in declaration order");
        assert_eq!(LockName::WorkerSpecs.file_name(), "worker-specs.lock");
    }

    #[test]
    fn every_registered_file_is_in_the_snapshot_in_the_documented_order() {
        let snap: Vec<_> = LockName::snapshot().map(LockName::as_str).collect();
        assert_eq!(&snap[..6], ["scheduler", "schedules", "task-queue", "task-intake", "token-budget", "worker-specs"]);
        // The order backups took before the enum: the documented six, then registry order.
        let mut before = vec!["scheduler", "schedules", "task-queue", "task-intake", "token-budget", "worker-specs"];
        for f in crate::store::files::ALL {
            if !before.contains(&f.lock.as_str()) {
                before.push(f.lock.as_str());
            }
        }
        assert_eq!(snap, before);
    }

    use crate::store::home::Home;
    use crate::store::lock::{lock_exclusive, lock_shared, try_lock_exclusive};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn locks_taken_in_order_are_held_and_released_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let s = lock_exclusive(&home, LockName::Scheduler, WAIT).unwrap();
        let q = lock_exclusive(&home, LockName::TaskQueue, WAIT).unwrap();
        let i = lock_shared(&home, LockName::TaskIntake, WAIT).unwrap();
        let b = try_lock_exclusive(&home, LockName::TokenBudget).unwrap().unwrap();
        let w = lock_exclusive(&home, LockName::WorkerSpecs, WAIT).unwrap();
        assert_eq!(
            order::held(),
            [
                LockName::Scheduler,
                LockName::TaskQueue,
                LockName::TaskIntake,
                LockName::TokenBudget,
                LockName::WorkerSpecs
            ]
        );
        // Dropped out of order (the coordinator releases the queue before the budget).
        drop(q);
        drop(i);
        assert_eq!(order::held(), [LockName::Scheduler, LockName::TokenBudget, LockName::WorkerSpecs]);
        drop((w, b));
        // After the inner locks are released, an earlier one may be taken again.
        let q = lock_exclusive(&home, LockName::TaskQueue, WAIT).unwrap();
        drop((q, s));
        assert!(order::held().is_empty());
        // Another thread has a stack of its own.
        let _w = lock_exclusive(&home, LockName::WorkerSpecs, WAIT).unwrap();
        let h = home.clone();
        std::thread::spawn(move || drop(lock_exclusive(&h, LockName::Scheduler, WAIT).unwrap())).join().unwrap();
    }

    #[test]
    #[cfg(debug_assertions)]
    fn a_lock_taken_out_of_order_panics_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let _w = lock_exclusive(&home, LockName::WorkerSpecs, WAIT).unwrap();
        let h = home.clone();
        let err = std::thread::spawn(move || {
            let _b = lock_exclusive(&h, LockName::TokenBudget, WAIT).unwrap();
            let _q = lock_exclusive(&h, LockName::TaskQueue, WAIT);
        })
        .join()
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("taking `task-queue` while holding `token-budget`"), "{msg}");
        // The same lock twice in one thread (flock would wait on itself) panics too.
        let err = std::thread::spawn(move || {
            let _i = lock_shared(&home, LockName::TaskIntake, WAIT).unwrap();
            let _j = lock_shared(&home, LockName::TaskIntake, WAIT);
        })
        .join()
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("taking `task-intake` while holding `task-intake`"), "{msg}");
        // A try-lock is checked and recorded the same way.
        assert_eq!(order::held(), [LockName::WorkerSpecs]);
        let dir2 = tempfile::tempdir().unwrap();
        let home2 = Home::at(dir2.path());
        let err = std::thread::spawn(move || {
            let _l = try_lock_exclusive(&home2, LockName::Logs).unwrap();
            let _e = try_lock_exclusive(&home2, LockName::Events);
        })
        .join()
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("taking `events` while holding `logs`"), "{msg}");
    }
}
