//! Faults: the chaos soak (SIGKILL of daemons at random moments) and a full disk.
//!
//! One module per former test binary; run one area with `cargo test --test faults`, one module
//! with `cargo test --test faults <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod chaos;
mod disk_full;
