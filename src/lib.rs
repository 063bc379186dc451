//! Cortex: a single-host orchestrator for fleets of worker processes.
//!
//! The library owns every file format, lock, path and policy; the binaries (`cortex` and the
//! `cortex-*` daemons in `daemons/`) are thin. See ARCHITECTURE.md for the code map.

pub mod api;
pub mod autofix;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod daemon;
pub mod daemon_name;
pub mod error;
pub mod files;
pub mod heartbeat;
pub mod home;
pub mod home_trust;
pub mod init;
pub mod integrity;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod patterns;
pub mod pidfile;
pub mod pm;
pub mod procfs;
pub mod recovery;
pub mod schedule;
pub mod scheduler;
pub mod schema;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod task;
pub mod validate;
pub mod watch;
pub mod worker;

pub use error::{Error, Result};
pub use home::Home;
pub use store::Store;
