//! The kinds of event in the event log: one enum shared by every emitter and reader, so a
//! typo on either side is a compile error instead of a silently unmatched string.
//!
//! On disk a kind is its snake_case name (the JSONL `type` field, unchanged). Operators emit
//! kinds of their own (`cortex event emit --type anything`, auto-fix `emit_event` actions):
//! those read back as [`EventKind::Other`], so reading accepts every kind ever written.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

macro_rules! event_kinds {
    ($($variant:ident = $name:literal,)*) => {
        /// What an event says happened (the `type` field of a line of the event log).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($variant,)*
            /// A kind this library does not emit: an operator's own (`cortex event emit`) or
            /// one written by another version. Built by [`EventKind::parse`], which maps a
            /// known name to its variant, so `Other` never holds a known name.
            Other(String),
        }

        impl EventKind {
            /// The name on disk.
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventKind::$variant => $name,)*
                    EventKind::Other(s) => s,
                }
            }

            /// The kind named `s`: its variant when the library knows it, else `Other`.
            pub fn parse(s: &str) -> EventKind {
                match s {
                    $($name => EventKind::$variant,)*
                    other => EventKind::Other(other.to_string()),
                }
            }
        }
    };
}

event_kinds! {
    AutoRestartRefused = "auto_restart_refused",
    AutoRestartScheduled = "auto_restart_scheduled",
    BackupRestored = "backup_restored",
    CircuitBreakerClosed = "circuit_breaker_closed",
    CircuitBreakerHalfOpen = "circuit_breaker_half_open",
    CircuitBreakerReset = "circuit_breaker_reset",
    CircuitBreakerTripped = "circuit_breaker_tripped",
    ConfigDefaultsRestored = "config_defaults_restored",
    CoordinatorError = "coordinator_error",
    DaemonExited = "daemon_exited",
    DaemonFailed = "daemon_failed",
    DaemonHung = "daemon_hung",
    DaemonKilled = "daemon_killed",
    DaemonRecovered = "daemon_recovered",
    DaemonRestarted = "daemon_restarted",
    DaemonStartFailed = "daemon_start_failed",
    DaemonStarted = "daemon_started",
    DaemonStopped = "daemon_stopped",
    DispatchFailed = "dispatch_failed",
    DispatchLost = "dispatch_lost",
    DispatchTimeout = "dispatch_timeout",
    DispatchUnrecorded = "dispatch_unrecorded",
    EventAcknowledged = "event_acknowledged",
    EventLogRotated = "event_log_rotated",
    FailureNotification = "failure_notification",
    FailurePatternDetected = "failure_pattern_detected",
    FailureStormDetected = "failure_storm_detected",
    FailureStormSubsided = "failure_storm_subsided",
    FileQuarantined = "file_quarantined",
    FileRepaired = "file_repaired",
    FixApplied = "fix_applied",
    FixFailed = "fix_failed",
    FixRequiresApproval = "fix_requires_approval",
    FixRolledBack = "fix_rolled_back",
    FixValidated = "fix_validated",
    HeartbeatCritical = "heartbeat_critical",
    HeartbeatResumed = "heartbeat_resumed",
    HeartbeatWarning = "heartbeat_warning",
    IntegrationConsistencyRestored = "integration_consistency_restored",
    IntegrationInconsistency = "integration_inconsistency",
    IntegrationValidationFailed = "integration_validation_failed",
    JsonlMalformedLines = "jsonl_malformed_lines",
    MassZombificationDetected = "mass_zombification_detected",
    MaxRetriesExceeded = "max_retries_exceeded",
    NotificationConfigInvalid = "notification_config_invalid",
    NotificationFailed = "notification_failed",
    RestoreRecovered = "restore_recovered",
    ScheduleAdded = "schedule_added",
    ScheduleFired = "schedule_fired",
    ScheduleInvalid = "schedule_invalid",
    ScheduleMisfireCapped = "schedule_misfire_capped",
    ScheduleMisfireSkipped = "schedule_misfire_skipped",
    SchedulePaused = "schedule_paused",
    ScheduleRemoved = "schedule_removed",
    ScheduleResumed = "schedule_resumed",
    ScheduleRunRequested = "schedule_run_requested",
    ScheduleSkippedMaxInstances = "schedule_skipped_max_instances",
    SchedulerPaused = "scheduler_paused",
    SchedulerResumed = "scheduler_resumed",
    SlurmReachable = "slurm_reachable",
    SlurmUnreachable = "slurm_unreachable",
    StorageWriteFailed = "storage_write_failed",
    SystemReset = "system_reset",
    TaskCancelRequested = "task_cancel_requested",
    TaskCancelled = "task_cancelled",
    TaskCompleted = "task_completed",
    TaskDispatched = "task_dispatched",
    TaskFailed = "task_failed",
    TaskIntakeBadLines = "task_intake_bad_lines",
    TaskRetryRequested = "task_retry_requested",
    TaskRetryScheduled = "task_retry_scheduled",
    WorkerHealthLow = "worker_health_low",
    WorkerPresumedDead = "worker_presumed_dead",
    WorkerReady = "worker_ready",
    ZombieCleanupCompleted = "zombie_cleanup_completed",
    ZombieCleanupDeferred = "zombie_cleanup_deferred",
    ZombieCleanupIncomplete = "zombie_cleanup_incomplete",
    ZombieDetected = "zombie_detected",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(EventKind::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_round_trip_as_their_names() {
        let k = EventKind::ZombieDetected;
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"zombie_detected\"");
        assert_eq!(serde_json::from_str::<EventKind>("\"zombie_detected\"").unwrap(), k);
        assert_eq!(EventKind::parse("zombie_detected"), k);
    }

    #[test]
    fn unknown_kinds_are_kept_verbatim() {
        let k: EventKind = serde_json::from_str("\"deploy_finished\"").unwrap();
        assert_eq!(k, EventKind::Other("deploy_finished".into()));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"deploy_finished\"");
    }
}
