//! `cortex backup` and `cortex restore`: round trips, hostile archives, restore limits, SIGKILL
//! mid-backup, backups under load, the backup scripts.
//!
//! One module per former test binary; run one area with `cargo test --test backup`, one module
//! with `cargo test --test backup <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod hostile;
mod kill;
mod load;
mod progress;
mod restore_limits;
mod roundtrip;
mod scripts;
