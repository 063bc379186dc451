//! The bottom layer: leaves that import nothing of Cortex above them (only one another).
//!
//! - [`clock`]: timestamps, the injectable clock, durations.
//! - [`error`]: `Error`, the one error type.
//! - [`heap`]: the heap's policy (memory a whole read freed goes back to the system).
//! - [`procfs`]: the one reader of `/proc`.
//! - [`daemon_name`]: `Daemon`, the daemons by name.
//! - [`home_trust`]: whether a home may be used (ownership and modes).
//! - [`schema`]: the embedded JSON Schemas and their checks.
//! - [`text`]: text made safe for a terminal.
//! - [`wake`]: why a waiting loop woke up.
//! - [`watch`]: the daemons' file watcher (inotify, changes only).

pub mod clock;
pub mod daemon_name;
pub mod error;
pub(crate) mod heap;
pub(crate) mod home_trust;
pub mod procfs;
pub mod schema;
pub(crate) mod text;
pub(crate) mod wake;
pub mod watch;
