//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/tools.sh`) driven through WebDriver against real daemons
//! in a temporary home. Each test saves screenshots under `target/dashboard-screenshots/`.
//!
//! Run: `cargo test --test browser`; the first-paint benchmark: `cargo test --test browser
//! bench -- --ignored --nocapture`.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod dashboard;
mod driver;
