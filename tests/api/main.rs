//! The HTTP API (`cortex-api`) over real sockets: endpoints, access and tokens, robustness, the
//! runbooks' drills, group commit of pauses, schedules, Prometheus output.
//!
//! One module per former test binary; run one area with `cargo test --test api`, one module
//! with `cargo test --test api <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod auth;
mod dashboard;
mod drill;
mod endpoints;
mod group_commit;
mod lifecycle;
mod log_streams;
mod promtool;
mod robustness;
mod runbook;
mod schedules;
