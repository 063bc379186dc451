//! The Slurm executor's domain logic, pure and unit-tested: what a dispatch run on a Slurm cluster
//! is submitted as and how Slurm's answers read. No process is started here; the `cortex-slurm`
//! daemon (the next step, see /work/notes/slurm.md) runs these argv vectors and records the
//! outcomes in the dispatch records.
//!
//! - `script`: the batch script (the task's argv single-quoted byte for byte, the `CORTEX_*`
//!   environment, the end record the job writes itself);
//! - `command`: the argv of `sbatch`, `squeue`, `scontrol`, `scancel` from `[slurm]` and a worker
//!   type's Slurm options;
//! - `parse`: `sbatch --parsable`, `squeue`, `scontrol -o show job`;
//! - `state`: Slurm's job states → queued (with Slurm's reason) / running / the dispatch's end.
//!
//! A job is named `cortex-<dispatch_id>` ([`job_name`]), so after any crash it is found again by
//! name before a dispatch is submitted a second time.

pub mod command;
pub mod parse;
pub mod script;
pub mod state;

use serde::{Deserialize, Serialize};

/// A Slurm job id (`sbatch --parsable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// In the environment of each `sbatch` cortex-slurm runs, the home's root: a restarted daemon
/// finds by it the submissions its killed predecessor left running and stops them before it looks
/// for their jobs by name (else one could still submit after the look found nothing).
pub const SUBMITTER_VAR: &str = "CORTEX_SLURM_SUBMITTER";

/// The prefix of every job Cortex submits.
pub const JOB_NAME_PREFIX: &str = "cortex-";

/// The Slurm job name of a dispatch.
pub fn job_name(dispatch_id: &str) -> String {
    format!("{JOB_NAME_PREFIX}{dispatch_id}")
}

/// The dispatch a job name belongs to (`cortex-<id>` with a valid dispatch id), else `None`.
pub fn dispatch_of_job(name: &str) -> Option<&str> {
    name.strip_prefix(JOB_NAME_PREFIX).filter(|id| crate::domain::task::dispatches::is_valid_id(id))
}

/// `run/slurm/<dispatch_id>.end.json`, written by the job's script when its command ended (one
/// writer: that job; temporary file and rename in the same directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEndRecord {
    pub dispatch_id: String,
    /// `SLURM_JOB_ID` as the job saw it (0 if it had none).
    pub job_id: u64,
    /// The shell's `$?` after the command: its exit code, or 128 + the signal that ended it.
    pub exit_status: i32,
    /// The node's clock, RFC 3339 UTC, whole seconds.
    pub ended_at: String,
}

/// At most 200 characters of a text, for error messages quoting something Slurm printed.
/// `text` cut to 200 characters (for messages quoting what a Slurm command printed).
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_round_trip() {
        assert_eq!(job_name("dsp-20260101-abc"), "cortex-dsp-20260101-abc");
        assert_eq!(dispatch_of_job("cortex-dsp-20260101-abc"), Some("dsp-20260101-abc"));
        for foreign in ["wrap", "cortex-", "cortex-a b", "cortex-../x", "xcortex-a"] {
            assert_eq!(dispatch_of_job(foreign), None, "{foreign}");
        }
        assert_eq!(preview(&"é".repeat(300)).chars().count(), 203);
    }
}
