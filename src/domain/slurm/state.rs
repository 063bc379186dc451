//! Slurm's job states and what each means for a Cortex dispatch: still waiting in Slurm (with
//! Slurm's reason), running, or ended — and then which dispatch end ([`DispatchState`]) it is, so
//! a Slurm dispatch ends through the same retry policy as a local one.

use super::JobEndRecord;
use crate::base::clock::Timestamp;
use crate::domain::task::model::{DispatchState, SignalledEnd};

/// A job state as `squeue %T` and `scontrol JobState=` print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Configuring,
    Running,
    Completing,
    Suspended,
    Completed,
    Failed,
    NodeFail,
    OutOfMemory,
    BootFail,
    Deadline,
    Timeout,
    Cancelled,
    Preempted,
    Requeued,
    RequeueHold,
    /// A state this mapping does not name (kept, shown, treated as running until it ends).
    Other(String),
}

impl JobState {
    /// Parses a state name; `CANCELLED by 0` (sacct's form) is `Cancelled`.
    pub fn parse(s: &str) -> JobState {
        match s.split_whitespace().next().unwrap_or("") {
            "PENDING" | "PD" => JobState::Pending,
            "CONFIGURING" | "CF" => JobState::Configuring,
            "RUNNING" | "R" => JobState::Running,
            "COMPLETING" | "CG" => JobState::Completing,
            "SUSPENDED" | "S" => JobState::Suspended,
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Failed,
            "NODE_FAIL" | "NF" => JobState::NodeFail,
            "OUT_OF_MEMORY" | "OOM" => JobState::OutOfMemory,
            "BOOT_FAIL" | "BF" => JobState::BootFail,
            "DEADLINE" | "DL" => JobState::Deadline,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "PREEMPTED" | "PR" => JobState::Preempted,
            "REQUEUED" | "RQ" => JobState::Requeued,
            "REQUEUE_HOLD" | "RH" => JobState::RequeueHold,
            other => JobState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Configuring => "CONFIGURING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Suspended => "SUSPENDED",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::Timeout => "TIMEOUT",
            JobState::Cancelled => "CANCELLED",
            JobState::Preempted => "PREEMPTED",
            JobState::Requeued => "REQUEUED",
            JobState::RequeueHold => "REQUEUE_HOLD",
            JobState::Other(s) => s,
        }
    }

    /// What the state means for the dispatch.
    pub fn phase(&self) -> Phase {
        match self {
            // Queued in Slurm: not yet running anywhere. A requeued job is queued again too;
            // cortex-slurm cancels it and ends the dispatch (`dispatch_end`: failed), so that
            // Cortex's retry policy, not Slurm, decides whether the task runs again.
            JobState::Pending | JobState::Configuring | JobState::Requeued | JobState::RequeueHold => Phase::Queued,
            // Started and not ended: COMPLETING is the job's cleanup, its end comes next; a
            // suspended job keeps its allocation and resumes.
            JobState::Running | JobState::Completing | JobState::Suspended | JobState::Other(_) => Phase::Running,
            JobState::Completed => Phase::Ended(End::Completed),
            JobState::Failed => Phase::Ended(End::Failed),
            JobState::NodeFail => Phase::Ended(End::Failed),
            JobState::OutOfMemory => Phase::Ended(End::Failed),
            JobState::BootFail => Phase::Ended(End::Failed),
            JobState::Deadline => Phase::Ended(End::Failed),
            JobState::Preempted => Phase::Ended(End::Failed),
            JobState::Timeout => Phase::Ended(End::Timeout),
            JobState::Cancelled => Phase::Ended(End::Cancelled),
        }
    }
}

/// Where a job is, for Cortex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting in Slurm's queue: the dispatch waits, with Slurm's reason shown.
    Queued,
    Running,
    Ended(End),
}

/// How a job ended, for the dispatch's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

/// The text shown for a queued job: Slurm's reason (`Priority`, `Resources`, ...), named as such.
pub fn waiting_text(state: &JobState, reason: &str) -> String {
    let reason = if reason.is_empty() || reason == "None" { "no reason given" } else { reason };
    format!("queued in Slurm ({}: {reason})", state.as_str())
}

/// The dispatch's end from the job's final state, its exit code and signal as Slurm reports them
/// (`scontrol ExitCode=N:S`, when it still knows the job), and the end record the job wrote
/// (which wins for the exit code: it is the command's own `$?`).
pub fn dispatch_end(
    state: &JobState,
    reason: &str,
    slurm_exit: Option<(i32, i32)>,
    record: Option<&JobEndRecord>,
    ended_at: Timestamp,
    duration_s: Option<f64>,
) -> DispatchState {
    let (exit_code, signal) = match (record, slurm_exit) {
        (Some(r), _) if r.exit_status > 128 => (None, Some(r.exit_status - 128)),
        (Some(r), _) => (Some(r.exit_status), None),
        (None, Some((code, sig))) if sig != 0 => (Some(code), Some(sig)),
        (None, Some((code, _))) => (Some(code), None),
        (None, None) => (None, None),
    };
    let end = match state.phase() {
        Phase::Ended(e) => e,
        // Requeued: cancelled by cortex-slurm, ended as a failure (retried by policy).
        Phase::Queued if matches!(state, JobState::Requeued | JobState::RequeueHold) => End::Failed,
        // Not ended in Slurm's eyes: only a caller that knows better (an end record) gets here.
        Phase::Queued | Phase::Running => match record {
            Some(r) if r.exit_status == 0 => End::Completed,
            _ => End::Failed,
        },
    };
    match end {
        End::Completed if exit_code == Some(0) || (exit_code.is_none() && signal.is_none()) => {
            DispatchState::Completed { ended_at, exit_code: 0, duration_s: duration_s.unwrap_or(0.0) }
        }
        End::Completed | End::Failed => DispatchState::Failed {
            ended_at,
            exit_code,
            signal,
            duration_s,
            error: failure_text(state, reason, exit_code, signal),
        },
        End::Timeout => DispatchState::Timeout(SignalledEnd { ended_at, signal, duration_s }),
        End::Cancelled => DispatchState::Cancelled(SignalledEnd { ended_at, signal, duration_s }),
    }
}

fn failure_text(state: &JobState, reason: &str, exit_code: Option<i32>, signal: Option<i32>) -> String {
    let what = match state {
        JobState::NodeFail => "the node failed (Slurm NODE_FAIL)".to_string(),
        JobState::OutOfMemory => "out of memory (Slurm OUT_OF_MEMORY)".to_string(),
        JobState::BootFail => "the node failed to boot (Slurm BOOT_FAIL)".to_string(),
        JobState::Deadline => "Slurm's deadline passed (DEADLINE)".to_string(),
        JobState::Preempted => "preempted by Slurm (PREEMPTED)".to_string(),
        JobState::Requeued | JobState::RequeueHold => {
            format!("requeued by Slurm ({}); its job was cancelled, the retry policy decides", state.as_str())
        }
        other => format!("Slurm job {}", other.as_str()),
    };
    let how = match (exit_code, signal) {
        (_, Some(s)) => format!(", signal {s}"),
        (Some(c), None) => format!(", exit code {c}"),
        (None, None) => String::new(),
    };
    let reason = if reason.is_empty() || reason == "None" { String::new() } else { format!(" ({reason})") };
    format!("{what}{how}{reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: i32) -> JobEndRecord {
        JobEndRecord { dispatch_id: "d".into(), job_id: 1, exit_status: status, ended_at: "t".into() }
    }

    #[test]
    fn phases() {
        for s in ["PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "PD"] {
            assert_eq!(JobState::parse(s).phase(), Phase::Queued, "{s}");
        }
        for s in ["RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT"] {
            assert_eq!(JobState::parse(s).phase(), Phase::Running, "{s}");
        }
        assert_eq!(JobState::parse("COMPLETED").phase(), Phase::Ended(End::Completed));
        for s in ["FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"] {
            assert_eq!(JobState::parse(s).phase(), Phase::Ended(End::Failed), "{s}");
        }
        assert_eq!(JobState::parse("TIMEOUT").phase(), Phase::Ended(End::Timeout));
        assert_eq!(JobState::parse("CANCELLED by 0").phase(), Phase::Ended(End::Cancelled));
        assert_eq!(JobState::parse("STAGE_OUT"), JobState::Other("STAGE_OUT".into()));
        assert_eq!(JobState::parse("OUT_OF_MEMORY").as_str(), "OUT_OF_MEMORY");
    }

    #[test]
    fn waiting_reason_is_slurms() {
        assert_eq!(waiting_text(&JobState::Pending, "Resources"), "queued in Slurm (PENDING: Resources)");
        assert_eq!(waiting_text(&JobState::Pending, "None"), "queued in Slurm (PENDING: no reason given)");
    }

    #[test]
    fn ends() {
        let t = || crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            dispatch_end(&JobState::Completed, "None", Some((0, 0)), None, t(), Some(2.0)),
            DispatchState::Completed { ended_at: t(), exit_code: 0, duration_s: 2.0 }
        );
        let DispatchState::Failed { exit_code, signal, error, .. } =
            dispatch_end(&JobState::Failed, "NonZeroExitCode", Some((3, 0)), None, t(), None)
        else {
            panic!()
        };
        assert_eq!((exit_code, signal), (Some(3), None));
        assert_eq!(error, "Slurm job FAILED, exit code 3 (NonZeroExitCode)");
        let DispatchState::Failed { error, .. } = dispatch_end(&JobState::OutOfMemory, "", None, None, t(), None)
        else {
            panic!()
        };
        assert!(error.contains("out of memory"), "{error}");
        let DispatchState::Failed { error, .. } = dispatch_end(&JobState::NodeFail, "", None, None, t(), None) else {
            panic!()
        };
        assert!(error.contains("NODE_FAIL"), "{error}");
        let DispatchState::Failed { error, .. } = dispatch_end(&JobState::Preempted, "", None, None, t(), None) else {
            panic!()
        };
        assert!(error.contains("preempted"), "{error}");
        // Requeued (`scontrol requeue`, a requeueing preemption): a failure, retried by policy.
        for requeued in [JobState::Requeued, JobState::RequeueHold] {
            let DispatchState::Failed { error, .. } = dispatch_end(&requeued, "", None, None, t(), None) else {
                panic!()
            };
            assert!(error.contains("requeued by Slurm"), "{error}");
        }
        assert!(matches!(
            dispatch_end(&JobState::Timeout, "TimeLimit", Some((0, 15)), None, t(), None),
            DispatchState::Timeout(SignalledEnd { signal: Some(15), .. })
        ));
        assert!(matches!(
            dispatch_end(&JobState::Cancelled, "", Some((0, 15)), None, t(), None),
            DispatchState::Cancelled { .. }
        ));
    }

    /// A purged job (Slurm no longer knows it) ends from its end record alone.
    #[test]
    fn end_record_decides_for_a_purged_job() {
        let t = || crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap();
        let gone = JobState::Other("UNKNOWN".into());
        assert!(matches!(
            dispatch_end(&gone, "", None, Some(&rec(0)), t(), None),
            DispatchState::Completed { exit_code: 0, .. }
        ));
        assert!(matches!(
            dispatch_end(&gone, "", None, Some(&rec(4)), t(), None),
            DispatchState::Failed { exit_code: Some(4), signal: None, .. }
        ));
        assert!(matches!(
            dispatch_end(&JobState::Completed, "", Some((0, 0)), Some(&rec(137)), t(), None),
            DispatchState::Failed { exit_code: None, signal: Some(9), .. }
        ));
    }
}
