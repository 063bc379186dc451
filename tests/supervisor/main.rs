//! The supervisor: start/stop/restart, rolling restarts, pm, `cortex run`, logs and the scripts.
//!
//! One module per former test binary; run one area with `cargo test --test supervisor`, one module
//! with `cargo test --test supervisor <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod lifecycle;
mod logs;
mod maintenance;
mod pm;
mod rolling;
mod run;
mod scripts;
