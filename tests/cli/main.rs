//! The operator's commands outside the other areas: smoke, `init`, `config check`, `repair`,
//! `recover-stale` and `reset`.
//!
//! One module per former test binary; run one area with `cargo test --test cli`, one module
//! with `cargo test --test cli <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod completions;
mod config_check;
mod init_idempotent;
mod install;
mod recovery_repair;
mod recovery_stale;
mod smoke;
mod status_watch;
mod test_layout;
mod top;
