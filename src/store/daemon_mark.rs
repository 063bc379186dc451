//! The daemon's status mark `run/<name>.state.json`: written by the daemon only (the skeleton,
//! `daemons::daemon`), read by `cortex status`, pm, heartbeat, metrics and the API.

use crate::base::daemon_name::Daemon;
use crate::store::home::Home;
use serde::{Deserialize, Serialize};

/// The daemon's status mark: written by the daemon only, read by `cortex status`, pm and the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonMark {
    pub name: String,
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub ready_at: Option<String>,
    pub heartbeat_at: String,
    /// When the daemon's loop last ran.
    pub last_loop_at: String,
}

/// Reads a daemon's mark (None when missing or unreadable).
pub fn read_mark(home: &Home, daemon: Daemon) -> Option<DaemonMark> {
    let bytes = std::fs::read(home.daemon_mark(daemon)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
