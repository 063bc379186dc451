//! Hostile input and the threat model: hostile files, fields, HTTP clients and terminals,
//! unreadable files, links below the home, home trust, the security review.
//!
//! One module per former test binary; run one area with `cargo test --test hostile`, one module
//! with `cargo test --test hostile <module>::`.

#[path = "../support/mod.rs"]
mod support;

mod fields;
mod files;
mod home_trust;
mod http;
mod links;
mod security_review;
mod terminal;
mod unreadable;
