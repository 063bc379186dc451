//! The health daemons as real processes: heartbeat, metrics, auto-fix, integration,
//! failure-pattern, and the end-to-end health path.
//!
//! One module per former test binary; run one area with `cargo test --test health`, one module
//! with `cargo test --test health <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod autofix_daemon;
mod autofix_registry;
mod autofix_restart;
mod e2e_health;
mod heartbeat_daemon;
mod heartbeat_monitor;
mod integrity_daemon;
mod metrics_daemon;
mod patterns_daemon;
mod support_daemons;
