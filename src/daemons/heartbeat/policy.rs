//! `coordination/config/heartbeat-policy.json`: the thresholds and limits of the heartbeat
//! daemon. Every key has a default, so a partial file works.

use crate::store::Document;
use crate::store::files::{self, CoordFile};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatPolicy {
    /// How often tasks are expected to heartbeat; also how often CPU and memory are sampled.
    pub heartbeat_interval_seconds: f64,
    pub warning_seconds: f64,
    pub critical_seconds: f64,
    /// Past this a dispatch is presumed dead and goes through the zombie pipeline.
    pub zombie_threshold_seconds: f64,
    /// Health score points lost per missed heartbeat interval.
    pub health_score_decay_rate: f64,
    /// A `worker_health_low` event is recorded when the score falls below this.
    pub min_health_score: f64,
    /// When true, a live process that never heartbeats ages from its start; when false, being
    /// alive counts as a heartbeat for such a process.
    pub require_heartbeat: bool,
    /// The false-positive guard: a presumed-dead dispatch is checked again after this long.
    pub recheck_delay_seconds: f64,
    /// SIGTERM to the process group, this long, then SIGKILL.
    pub grace_seconds: f64,
    pub max_cleanups_per_minute: u32,
    /// This many presumed-dead dispatches at once raise one critical event and kill nothing.
    pub mass_zombie_threshold: u32,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            heartbeat_interval_seconds: 30.0,
            warning_seconds: 60.0,
            critical_seconds: 120.0,
            zombie_threshold_seconds: 300.0,
            health_score_decay_rate: 5.0,
            min_health_score: 20.0,
            require_heartbeat: false,
            recheck_delay_seconds: 2.0,
            grace_seconds: 5.0,
            max_cleanups_per_minute: 5,
            mass_zombie_threshold: 5,
        }
    }
}

impl Document for HeartbeatPolicy {
    const FILE: &'static CoordFile = files::HEARTBEAT_POLICY;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_equals_struct_default() {
        let v: HeartbeatPolicy = serde_json::from_str(files::HEARTBEAT_POLICY.default.unwrap()).unwrap();
        assert_eq!(v, HeartbeatPolicy::default());
    }
}
