//! The store: atomic replace, JSONL, the event log, locks and their holders, PID files, the lock
//! runbook, validation of corrupt files.
//!
//! One module per former test binary; run one area with `cargo test --test store`, one module
//! with `cargo test --test store <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod atomic_replace;
mod counter;
mod events;
mod holders_churn;
mod jsonl;
mod lock;
mod lock_holders;
mod lock_runbook;
mod pidfile_daemon;
mod validate_corrupt;
