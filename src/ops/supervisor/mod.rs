//! The supervisor: starting, stopping and restarting Cortex's daemons, and keeping them alive.
//!
//! - [`registry`]: the daemons (`daemon_name::Daemon`), their binaries, the operator's stop intent,
//!   the restart policy's state file and the per-daemon lock.
//! - [`process`]: spawning a daemon detached, waiting until it is ready, stopping it (SIGTERM,
//!   deadline, SIGKILL), the worker's task process groups, /proc figures.
//! - [`control`]: `cortex start`, `stop`, `restart` (one daemon at a time, rolling).
//! - [`status`]: `cortex status` and `cortex health-check`.
//! - [`policy`]: the restart policy (backoff, start limit, stable uptime), shared by pm and
//!   `cortex run`.
//! - [`engine`]: the restart engine pm and `cortex run` drive.
//! - [`foreground`]: `cortex run` with sd-notify.

pub(crate) mod control;
pub(crate) mod engine;
pub(crate) mod foreground;
pub(crate) mod maintenance;
pub(crate) mod policy;
pub mod process;
pub(crate) mod registry;
pub(crate) mod status;
