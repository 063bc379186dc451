//! The argv of each Slurm command Cortex runs (`sbatch`, `squeue`, `scontrol`, `scancel`), built
//! from `[slurm]` and a worker type's Slurm options. Pure: argv vectors, run by the caller without
//! a shell. Options are separate argv elements, so a value cannot inject another option.

use super::JobId;
use crate::domain::task::worker_types::SlurmOptions;
use crate::store::config::SlurmConfig;

/// `squeue`'s output format: job id, state, reason, name — the name last, see
/// [`super::parse::squeue`].
pub const SQUEUE_FORMAT: &str = "%i|%T|%r|%j";

/// What one submission needs besides the script (which sbatch reads from stdin).
#[derive(Debug, Clone, PartialEq)]
pub struct Submission<'a> {
    pub dispatch_id: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
    pub workdir: &'a str,
    /// The dispatch's timeout, seconds.
    pub timeout_seconds: f64,
    pub options: &'a SlurmOptions,
}

/// Slurm's `--time` in whole minutes, rounded up, at least 1: Slurm's limit has minute
/// granularity, so the daemon enforces the exact timeout itself (`scancel`) like the worker does.
pub fn time_limit_minutes(timeout_seconds: f64) -> u64 {
    if !timeout_seconds.is_finite() || timeout_seconds <= 0.0 {
        return 1;
    }
    ((timeout_seconds / 60.0).ceil() as u64).max(1)
}

/// A path for `--output`/`--error`: Slurm expands `%j`, `%x`... in these names, so `%` is
/// written `%%` (a literal percent sign).
pub fn output_pattern(path: &str) -> String {
    path.replace('%', "%%")
}

/// `sbatch --parsable ...` reading the script from stdin. The worker type's `extra_args` come
/// last, less any that would override what Cortex sets (`reserved_sbatch_option`).
pub fn sbatch(cfg: &SlurmConfig, s: &Submission) -> Vec<String> {
    let mut v = vec![
        cfg.sbatch.clone(),
        "--parsable".into(),
        format!("--job-name={}", super::job_name(s.dispatch_id)),
        format!("--output={}", output_pattern(s.stdout)),
        format!("--error={}", output_pattern(s.stderr)),
        format!("--chdir={}", s.workdir),
        format!("--time={}", time_limit_minutes(s.timeout_seconds)),
        "--no-requeue".into(),
    ];
    let o = s.options;
    let mut opt = |flag: &str, value: &Option<String>| {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            v.push(format!("--{flag}={value}"));
        }
    };
    opt("partition", &o.partition);
    opt("account", &o.account);
    opt("qos", &o.qos);
    opt("mem", &o.memory);
    opt("gres", &o.gres);
    if let Some(cpus) = o.cpus {
        v.push(format!("--cpus-per-task={cpus}"));
    }
    // Never one that overrides what Cortex sets (`config check` reports it).
    v.extend(
        o.extra_args.iter().filter(|a| crate::domain::task::worker_types::reserved_sbatch_option(a).is_none()).cloned(),
    );
    v
}

/// One `squeue` for every job Cortex follows: by name, all states (finished jobs stay listed until
/// Slurm purges them, `MinJobAge`), all partitions (`--all`: hidden ones and those the user's
/// group may not see too — else a job there would look never submitted).
pub fn squeue(cfg: &SlurmConfig, job_names: &[String]) -> Vec<String> {
    vec![
        cfg.squeue.clone(),
        "--all".into(),
        "--noheader".into(),
        "--states=all".into(),
        format!("--format={SQUEUE_FORMAT}"),
        format!("--name={}", job_names.join(",")),
    ]
}

/// `scontrol -a -o show job <id>`: one job's state, reason and exit code (`-a`: in a hidden
/// partition too).
pub fn scontrol_show_job(cfg: &SlurmConfig, job: JobId) -> Vec<String> {
    vec![cfg.scontrol.clone(), "-a".into(), "-o".into(), "show".into(), "job".into(), job.0.to_string()]
}

/// `scontrol ping`: whether the controller answers.
pub fn scontrol_ping(cfg: &SlurmConfig) -> Vec<String> {
    vec![cfg.scontrol.clone(), "ping".into()]
}

/// `scancel [--signal=SIG --full] <id>`: SIGTERM to every process of the job (batch script
/// included) first; without a signal Slurm's own cancel (SIGTERM, `KillWait`, SIGKILL).
pub fn scancel(cfg: &SlurmConfig, job: JobId, signal: Option<&str>) -> Vec<String> {
    let mut v = vec![cfg.scancel.clone()];
    if let Some(sig) = signal {
        v.push(format!("--signal={sig}"));
        v.push("--full".into());
    }
    v.push(job.0.to_string());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_argv() {
        let cfg = SlurmConfig::default();
        let options = SlurmOptions {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            qos: None,
            cpus: Some(4),
            memory: Some("8G".into()),
            gres: Some("gpu:1".into()),
            extra_args: vec!["--exclusive".into()],
        };
        let s = Submission {
            dispatch_id: "dsp-1",
            stdout: "/h/agents/logs/workers/dsp-1.out",
            stderr: "/h/100%/dsp-1.err",
            workdir: "/h",
            timeout_seconds: 61.0,
            options: &options,
        };
        assert_eq!(
            sbatch(&cfg, &s),
            [
                "sbatch",
                "--parsable",
                "--job-name=cortex-dsp-1",
                "--output=/h/agents/logs/workers/dsp-1.out",
                "--error=/h/100%%/dsp-1.err",
                "--chdir=/h",
                "--time=2",
                "--no-requeue",
                "--partition=gpu",
                "--account=lab",
                "--mem=8G",
                "--gres=gpu:1",
                "--cpus-per-task=4",
                "--exclusive"
            ]
        );
    }

    #[test]
    fn time_limits() {
        assert_eq!(time_limit_minutes(0.5), 1);
        assert_eq!(time_limit_minutes(60.0), 1);
        assert_eq!(time_limit_minutes(60.1), 2);
        assert_eq!(time_limit_minutes(f64::NAN), 1);
        assert_eq!(time_limit_minutes(-3.0), 1);
    }

    #[test]
    fn squeue_and_scancel_argv() {
        let cfg = SlurmConfig::default();
        assert_eq!(
            squeue(&cfg, &["cortex-a".into(), "cortex-b".into()]),
            ["squeue", "--all", "--noheader", "--states=all", "--format=%i|%T|%r|%j", "--name=cortex-a,cortex-b"]
        );
        assert_eq!(scancel(&cfg, JobId(7), Some("TERM")), ["scancel", "--signal=TERM", "--full", "7"]);
        assert_eq!(scancel(&cfg, JobId(7), None), ["scancel", "7"]);
        assert_eq!(scontrol_show_job(&cfg, JobId(7)), ["scontrol", "-a", "-o", "show", "job", "7"]);
    }
}
