//! The dashboard in a real browser.
#[path = "../support/mod.rs"]
mod support;
