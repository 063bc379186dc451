//! The operator runbooks in `docs/runbooks/`, executed: each runbook's `sh` blocks run in order
//! against a real fleet in a temporary home, and their output is checked where the runbook states
//! it (`expect` blocks). A change that breaks a documented command fails here. The conventions
//! are in `markdown.rs` and, for operators, in `docs/runbooks/README.md`.
//!
//! Run one runbook with `cargo test --test runbooks scheduler`.

#[path = "../support/mod.rs"]
mod support;

mod docs;
mod markdown;
mod runner;
