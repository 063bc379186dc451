//! cortex-notify as a real process over real files, delivering to receivers the tests start:
//! an HTTP server (webhook and Signal forms), a plain-text SMTP server, a command hook.
//!
//! Run one with `cargo test --test notify <name>`.

#[path = "../support/mod.rs"]
mod support;

mod delivery;
mod receivers;
