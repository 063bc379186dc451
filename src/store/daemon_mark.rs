//! The daemon's status mark `run/<name>.state.json`: written by the daemon only (the skeleton,
//! `daemons::daemon`), read by `cortex status`, pm, heartbeat, metrics and the API.

use crate::base::clock::Timestamp;
use crate::base::daemon_name::Daemon;
use crate::store::home::Home;
use serde::{Deserialize, Serialize};

/// The daemon's status mark: written by the daemon only, read by `cortex status`, pm and the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonMark {
    pub name: String,
    pub pid: u32,
    pub version: String,
    #[serde(with = "crate::base::clock::ts")]
    pub started_at: Timestamp,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub ready_at: Option<Timestamp>,
    #[serde(with = "crate::base::clock::ts")]
    pub heartbeat_at: Timestamp,
    /// When the daemon's loop last ran.
    #[serde(with = "crate::base::clock::ts")]
    pub last_loop_at: Timestamp,
}

/// Reads a daemon's mark (None when missing or unreadable).
pub fn read_mark(home: &Home, daemon: Daemon) -> Option<DaemonMark> {
    let bytes = std::fs::read(home.daemon_mark(daemon)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
