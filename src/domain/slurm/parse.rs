//! Reading what Slurm's commands print: `sbatch --parsable` (the job id), one `squeue` line per job
//! in the format [`super::command::SQUEUE_FORMAT`], and `scontrol -o show job` (state, reason, exit
//! code). Pure: text in, values out; anything unexpected is an error quoting (a bounded preview of)
//! the text, never a guess.

use super::JobId;
use super::state::JobState;

/// A parse failure: what was expected and the text that was not it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn job_id(text: &str) -> Option<JobId> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n > 0).map(JobId)
}

/// `sbatch --parsable` prints `<job id>` or `<job id>;<cluster>` on its last line (warnings, if
/// any, go to stderr).
pub fn sbatch_parsable(stdout: &str) -> Result<JobId, ParseError> {
    let line = stdout.trim_end().lines().last().unwrap_or("").trim();
    let id = line.split(';').next().unwrap_or("");
    job_id(id)
        .ok_or_else(|| ParseError(format!("sbatch --parsable printed {:?}, not a job id", super::preview(stdout))))
}

/// One job as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub job_id: JobId,
    /// The job's name (`cortex-<dispatch_id>` for ours).
    pub name: String,
    pub state: JobState,
    /// Slurm's reason (`None`, `Priority`, `Resources`, `NonZeroExitCode`, ...).
    pub reason: String,
}

/// The lines of `squeue --noheader --format=%i|%T|%r|%j`: job id, state, reason, then the name
/// last (so a `|` in a foreign job's name cannot shift the fields). Array tasks (`123_4`) and
/// lines that do not parse are skipped and counted: Cortex submits no arrays, and one odd line
/// must not hide the others.
pub fn squeue(stdout: &str) -> (Vec<QueuedJob>, usize) {
    let mut jobs = Vec::new();
    let mut bad = 0;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.splitn(4, '|');
        let parsed = (|| {
            let job_id = job_id(f.next()?.trim())?;
            let state = JobState::parse(f.next()?.trim());
            let reason = f.next()?.trim().to_string();
            let name = f.next()?.to_string();
            Some(QueuedJob { job_id, name, state, reason })
        })();
        match parsed {
            Some(j) => jobs.push(j),
            None => bad += 1,
        }
    }
    (jobs, bad)
}

/// What `scontrol -o show job <id>` says of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job_id: JobId,
    pub name: String,
    pub state: JobState,
    pub reason: String,
    /// `ExitCode=<code>:<signal>`.
    pub exit_code: i32,
    pub exit_signal: i32,
}

/// The outcome of `scontrol -o show job <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowJob {
    Found(JobInfo),
    /// Slurm no longer knows the job (`Invalid job id specified`: purged after `MinJobAge`).
    Unknown,
}

/// Parses `scontrol -o show job` (one line of `Key=Value` words). Only the first occurrence of a
/// key counts, and the keys read here come before any free text (`Command=`, `WorkDir=`, paths
/// that may hold spaces). `stderr` and `success` tell an unknown job from a failure.
pub fn scontrol_show_job(stdout: &str, stderr: &str, success: bool) -> Result<ShowJob, ParseError> {
    if !success {
        if stderr.contains("Invalid job id specified") {
            return Ok(ShowJob::Unknown);
        }
        return Err(ParseError(format!("scontrol show job failed: {}", super::preview(stderr.trim()))));
    }
    let line = stdout.lines().find(|l| l.trim_start().starts_with("JobId=")).unwrap_or("");
    let value = |key: &str| -> Option<&str> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    };
    let err = |what: &str| ParseError(format!("scontrol show job: {what} in {:?}", super::preview(stdout)));
    let job_id = value("JobId").and_then(job_id).ok_or_else(|| err("no JobId"))?;
    let state = JobState::parse(value("JobState").ok_or_else(|| err("no JobState"))?);
    let (code, signal) = value("ExitCode").and_then(|v| v.split_once(':')).ok_or_else(|| err("no ExitCode"))?;
    Ok(ShowJob::Found(JobInfo {
        job_id,
        name: value("JobName").unwrap_or("").to_string(),
        state,
        reason: value("Reason").unwrap_or("None").to_string(),
        exit_code: code.parse().map_err(|_| err("ExitCode is not N:S"))?,
        exit_signal: signal.parse().map_err(|_| err("ExitCode is not N:S"))?,
    }))
}

/// Whether a Slurm command failed because the controller cannot be reached (down, restarting, the
/// network): then nothing about the job is known and nothing must end or fail — the dispatch waits
/// (`slurm_unavailable`) until a call succeeds again. Recognised by Slurm's own texts (22.05):
/// `Unable to contact slurm controller`, `Socket timed out`, `Slurm backup controller in standby
/// mode`, `Zero Bytes were transmitted or received`.
pub fn controller_unreachable(stderr: &str) -> bool {
    [
        "Unable to contact slurm controller",
        "Socket timed out",
        "backup controller in standby mode",
        "Zero Bytes were transmitted or received",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
        || auth_unavailable(stderr)
}

/// Whether a Slurm command failed because authentication does not work right now (munged down
/// or unreachable on this host or the controller's, a credential the controller could not
/// check): an outage like an unreachable controller — the dispatch waits — not a refusal of the
/// job. Slurm's texts (22.05): `Munge encode failed`, `Munge decode failed` (auth/munge),
/// `Protocol authentication error`, `Invalid authentication credential`.
pub fn auth_unavailable(stderr: &str) -> bool {
    ["Munge encode failed", "Munge decode failed", "Protocol authentication error", "Invalid authentication credential"]
        .iter()
        .any(|needle| stderr.contains(needle))
}

/// Whether a failed command certainly never reached the controller with its request (it could not
/// connect, or authentication refused it): for `sbatch`, no job was made, so submitting again is
/// safe. A timeout (`Socket timed out`) is not certain: the request may have been taken.
pub fn never_reached(stderr: &str) -> bool {
    stderr.contains("(connect failure)") || auth_unavailable(stderr)
}

/// `scontrol ping`: true when a controller answers `UP` (`Slurmctld(primary) at host is UP`).
pub fn ping_up(stdout: &str) -> bool {
    stdout.lines().any(|l| l.starts_with("Slurmctld(") && l.trim_end().ends_with(" is UP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_output() {
        assert_eq!(sbatch_parsable("12345\n"), Ok(JobId(12345)));
        assert_eq!(sbatch_parsable("77;cortexdev\n"), Ok(JobId(77)));
        for bad in ["", "\n", "Submitted batch job 5\n", "12a\n", "0\n", "-3\n", "99999999999999999999999\n"] {
            let e = sbatch_parsable(bad).unwrap_err();
            assert!(e.0.contains("not a job id"), "{bad:?}: {e}");
        }
    }

    /// Lines as the 22.05 squeue of `scripts/slurm-dev.sh` prints them.
    #[test]
    fn squeue_lines() {
        let out = "23|FAILED|NonZeroExitCode|cortex-fail\n24|PENDING|Resources|cortex-dsp-1\n\
                   22|RUNNING|None|cortex-dsp-2\n25_3|RUNNING|None|array\n26|CANCELLED|None|odd|name\ngarbage\n";
        let (jobs, bad) = squeue(out);
        assert_eq!(bad, 2);
        assert_eq!(jobs.len(), 4);
        assert_eq!(
            jobs[1],
            QueuedJob {
                job_id: JobId(24),
                name: "cortex-dsp-1".into(),
                state: JobState::Pending,
                reason: "Resources".into()
            }
        );
        assert_eq!(jobs[0].state, JobState::Failed);
        assert_eq!(jobs[2].state, JobState::Running);
        assert_eq!(jobs[3].name, "odd|name");
    }

    #[test]
    fn scontrol_output() {
        let out = "JobId=23 JobName=cortex-fail UserId=root(0) GroupId=root(0) MCS_label=N/A \
                   Priority=4294901737 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode \
                   Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 \
                   Command=/a dir/with JobState=COMPLETED ExitCode=0:0\n";
        let ShowJob::Found(info) = scontrol_show_job(out, "", true).unwrap() else { panic!() };
        assert_eq!(
            info,
            JobInfo {
                job_id: JobId(23),
                name: "cortex-fail".into(),
                state: JobState::Failed,
                reason: "NonZeroExitCode".into(),
                exit_code: 3,
                exit_signal: 0
            }
        );
        let gone = scontrol_show_job("", "slurm_load_jobs error: Invalid job id specified\n", false).unwrap();
        assert_eq!(gone, ShowJob::Unknown);
        let down = scontrol_show_job("", "slurm_load_jobs error: Unable to contact slurm controller\n", false);
        assert!(down.unwrap_err().0.contains("Unable to contact"));
        assert!(scontrol_show_job("JobId=5 JobName=x\n", "", true).is_err());
    }

    /// The first three texts are what the dev cluster's 22.05 clients printed with slurmctld
    /// stopped (`slurm-dev.sh stop-controller`; sbatch after 9 s of retries); the fourth is
    /// Slurm's message for a controller that accepts but does not answer (not reproduced here).
    #[test]
    fn controller_down_is_recognised() {
        for text in [
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n",
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
            "scancel: error: Kill job error on job id 5: Unable to contact slurm controller (connect failure)\n",
            "squeue: error: slurm_receive_msg: Socket timed out on send/recv operation\n",
        ] {
            assert!(controller_unreachable(text), "{text}");
        }
        assert!(!controller_unreachable(
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
        ));
        assert!(!controller_unreachable("slurm_load_jobs error: Invalid job id specified\n"));
        // munged down (auth/munge): an outage, not a refusal; certainly not submitted.
        for text in [
            "sbatch: error: Munge encode failed: Failed to connect to \"/run/munge/munge.socket.2\": Connection refused\n\
             sbatch: error: Batch job submission failed: Protocol authentication error\n",
            "squeue: error: slurm_receive_msg: Protocol authentication error\n",
        ] {
            assert!(controller_unreachable(text) && never_reached(text), "{text}");
        }
        assert!(never_reached(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n"
        ));
        assert!(!never_reached("squeue: error: slurm_receive_msg: Socket timed out on send/recv operation\n"));
        assert!(ping_up("Slurmctld(primary) at vm is UP\n"));
        assert!(!ping_up("Slurmctld(primary) at vm is DOWN\n*****\n** RESTORE SLURMCTLD DAEMON TO SERVICE **\n"));
    }
}
