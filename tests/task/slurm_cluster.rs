//! The Slurm library (`cortex::domain::slurm`) against a REAL single-node cluster: `scripts/slurm-dev.sh`
//! starts Debian's slurmctld and slurmd on loopback in a temporary directory (one per test, own
//! ports), the generated batch script is submitted with the generated `sbatch` argv, and what the
//! real `squeue` and `scontrol` print is parsed. Skipped, with a message saying so, only when the
//! Slurm binaries are not installed (`. .ci/tools.sh` installs them).

use crate::support::slurm::Cluster;
use cortex::Home;
use cortex::domain::slurm::command::{self, Submission};
use cortex::domain::slurm::parse::{self, ShowJob};
use cortex::domain::slurm::script::{self, BatchScript};
use cortex::domain::slurm::state::{self, End, Phase};
use cortex::domain::slurm::{JobId, job_name};
use cortex::domain::task::model::DispatchState;
use cortex::domain::task::worker_types::SlurmOptions;
use cortex::store::config::SlurmConfig;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: the dev cluster schedules every ~2-3 s (its first job completes in about 3 s), and
/// six developers share the machine's two cores.
const JOB_DEADLINE: Duration = Duration::from_secs(120);

impl Cluster {
    /// Runs a Slurm client argv against this cluster, with `stdin` if given.
    fn run_argv(&self, argv: &[String], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]).env("SLURM_CONF", &self.conf).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = c.spawn().unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn submit(&self, cfg: &SlurmConfig, sub: &Submission, script: &str) -> JobId {
        let out = self.run_argv(&command::sbatch(cfg, sub), Some(script.as_bytes()));
        assert!(out.status.success(), "sbatch failed: {}", String::from_utf8_lossy(&out.stderr));
        parse::sbatch_parsable(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    fn squeue(&self, cfg: &SlurmConfig, names: &[String]) -> Vec<parse::QueuedJob> {
        let out = self.run_argv(&command::squeue(cfg, names), None);
        assert!(out.status.success(), "squeue failed: {}", String::from_utf8_lossy(&out.stderr));
        let (jobs, bad) = parse::squeue(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(bad, 0, "squeue printed lines that do not parse:\n{}", String::from_utf8_lossy(&out.stdout));
        jobs
    }

    fn show(&self, cfg: &SlurmConfig, job: JobId) -> ShowJob {
        let out = self.run_argv(&command::scontrol_show_job(cfg, job), None);
        parse::scontrol_show_job(
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
            out.status.success(),
        )
        .unwrap()
    }

    /// Polls (every 200 ms: each poll is an RPC to slurmctld) until `cond` holds.
    fn wait_for<T>(&self, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + JOB_DEADLINE;
        loop {
            if let Some(v) = cond() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {JOB_DEADLINE:?} waiting for {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A home-like directory with the directories the daemon will create (logs, end records).
fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::Builder::new().prefix("cortex-slurm-home-").tempdir().unwrap();
    let home = Home::at(dir.path());
    std::fs::create_dir_all(home.worker_logs()).unwrap();
    std::fs::create_dir_all(home.slurm_dir()).unwrap();
    (dir, home)
}

/// The environment a local task gets (`worker::plan`), for a dispatch.
fn cortex_env(home: &Home, dispatch_id: &str) -> Vec<(String, String)> {
    vec![
        ("CORTEX_HOME".into(), home.root().display().to_string()),
        ("CORTEX_TASK_ID".into(), "task-slurm-1".into()),
        ("CORTEX_DISPATCH_ID".into(), dispatch_id.into()),
        ("CORTEX_ATTEMPT".into(), "1".into()),
        ("CORTEX_HEARTBEAT_FILE".into(), home.heartbeat_file(dispatch_id).display().to_string()),
        ("CORTEX_USAGE_FILE".into(), home.usage_file(dispatch_id).display().to_string()),
    ]
}

fn unique_id(label: &str) -> String {
    format!("dsp-{label}-{}-{:06x}", std::process::id(), fastrand::u32(..0x100_0000))
}

/// The batch script and sbatch argv of a dispatch running `argv` in `home`.
fn submit_dispatch(cluster: &Cluster, home: &Home, id: &str, argv: &[String]) -> JobId {
    let cfg = SlurmConfig::default();
    let env = cortex_env(home, id);
    let end = home.slurm_end_record(id).display().to_string();
    let text = BatchScript { dispatch_id: id, argv, env: &env, end_record: &end }.render().unwrap();
    let (stdout, stderr) = (home.dispatch_stdout(id), home.dispatch_stderr(id));
    let options = SlurmOptions::default();
    let sub = Submission {
        dispatch_id: id,
        stdout: stdout.to_str().unwrap(),
        stderr: stderr.to_str().unwrap(),
        workdir: home.root().to_str().unwrap(),
        timeout_seconds: 600.0,
        options: &options,
    };
    cluster.submit(&cfg, &sub, &text)
}

/// Hostile argv elements (quotes, `$()`, backquotes, newlines, globs, 100 KB) reach the job's
/// command byte for byte: `printf '%s\0'` prints each back and the job's stdout file (the
/// dispatch's usual log) is compared with the exact bytes. Nothing the values spell out runs
/// (the `touch` markers stay absent), the `CORTEX_*` environment arrives, and the job's end
/// record says exit 0.
#[test]
fn hostile_argv_reaches_a_real_slurm_job_byte_for_byte() {
    let Some(cluster) = Cluster::start("hostile_argv_reaches_a_real_slurm_job_byte_for_byte", "cs") else { return };
    let (_dir, home) = home();
    let marker = home.root().join("pwned");
    let m = marker.display();
    let mut values: Vec<String> = vec![
        String::new(),
        "'".into(),
        "it's \"quoted\" \\'".into(),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("'; touch {m}; '"),
        format!("\"; touch {m}; \""),
        "${CORTEX_HOME}$HOME".into(),
        "line one\nline two\n\n".into(),
        "\\n\\0\\x41".into(),
        "* ? [a-z] ~ #".into(),
        "-n".into(),
        "tab\there\r\u{1b}[2J".into(),
        "é 日本 \u{202e}".into(),
    ];
    let unit = "$(x)`y`'z'\"w\"\n";
    values.push(unit.repeat(100 * 1024 / unit.len() + 1));
    assert!(values.last().unwrap().len() >= 100 * 1024);
    let id = unique_id("hostile");
    let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
    argv.extend(values.iter().cloned());
    // The environment a local task gets, printed after the values.
    argv.push("CORTEX_DISPATCH_ID".into());
    let argv_env: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "\"$0\" \"$@\" && printf '%s\\n' \"$CORTEX_DISPATCH_ID|$CORTEX_TASK_ID|$CORTEX_ATTEMPT|$CORTEX_HOME\"".into(),
    ];
    let full: Vec<String> = argv_env.into_iter().chain(argv.iter().cloned()).collect();
    let job = submit_dispatch(&cluster, &home, &id, &full);

    let end_path = home.slurm_end_record(&id);
    let record = cluster.wait_for("the job's end record", || {
        std::fs::read_to_string(&end_path).ok().and_then(|t| script::parse_end_record(&t))
    });
    assert_eq!((record.dispatch_id.as_str(), record.job_id, record.exit_status), (id.as_str(), job.0, 0));

    let mut want = Vec::new();
    for v in values.iter().chain(std::iter::once(&"CORTEX_DISPATCH_ID".to_string())) {
        want.extend_from_slice(v.as_bytes());
        want.push(0);
    }
    want.extend_from_slice(format!("{id}|task-slurm-1|1|{}\n", home.root().display()).as_bytes());
    let got = std::fs::read(home.dispatch_stdout(&id)).unwrap();
    assert!(got == want, "the job's output differs: {} bytes, want {}", got.len(), want.len());
    assert_eq!(std::fs::read_to_string(home.dispatch_stderr(&id)).unwrap(), "", "stderr is empty");
    assert!(!marker.exists(), "a value ran as shell code: {} exists", marker.display());

    // Slurm agrees: COMPLETED, exit 0, under the job name of the dispatch.
    let cfg = SlurmConfig::default();
    let done = cluster.wait_for("COMPLETED in scontrol", || match cluster.show(&cfg, job) {
        ShowJob::Found(info) if info.state.phase() == Phase::Ended(End::Completed) => Some(info),
        _ => None,
    });
    assert_eq!((done.name.as_str(), done.exit_code, done.exit_signal), (job_name(&id).as_str(), 0, 0));
}

/// What the real squeue and scontrol print for a running job, a failed one (exit 3) and a
/// cancelled one parses, and maps to the dispatch's phase and end; one squeue call lists them all
/// by name; a job id Slurm never had reads as unknown.
#[test]
fn real_squeue_and_scontrol_output_parses() {
    let Some(cluster) = Cluster::start("real_squeue_and_scontrol_output_parses", "cs") else { return };
    let (_dir, home) = home();
    let cfg = SlurmConfig::default();
    let (run_id, fail_id) = (unique_id("running"), unique_id("failing"));
    let running = submit_dispatch(&cluster, &home, &run_id, &["sleep".into(), "300".into()]);
    let failing =
        submit_dispatch(&cluster, &home, &fail_id, &["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()]);
    let names = vec![job_name(&run_id), job_name(&fail_id)];

    // One squeue for both, until the first runs and the second has failed.
    let jobs = cluster.wait_for("one RUNNING and one FAILED in squeue", || {
        let jobs = cluster.squeue(&cfg, &names);
        let find = |j: JobId| jobs.iter().find(|q| q.job_id == j).map(|q| q.state.phase());
        (find(running) == Some(Phase::Running) && find(failing) == Some(Phase::Ended(End::Failed))).then_some(jobs)
    });
    assert_eq!(jobs.len(), 2, "only the named jobs: {jobs:?}");
    let r = jobs.iter().find(|q| q.job_id == running).unwrap();
    assert_eq!((r.name.as_str(), r.reason.as_str()), (names[0].as_str(), "None"));
    let f = jobs.iter().find(|q| q.job_id == failing).unwrap();
    assert_eq!((f.name.as_str(), f.reason.as_str()), (names[1].as_str(), "NonZeroExitCode"));

    let ShowJob::Found(info) = cluster.show(&cfg, running) else { panic!("running job unknown to scontrol") };
    assert_eq!((info.name.as_str(), info.state.phase()), (names[0].as_str(), Phase::Running));
    let ShowJob::Found(info) = cluster.show(&cfg, failing) else { panic!("failed job unknown to scontrol") };
    assert_eq!((info.exit_code, info.exit_signal, info.reason.as_str()), (3, 0, "NonZeroExitCode"));
    let record = cluster.wait_for("the failed job's end record", || {
        std::fs::read_to_string(home.slurm_end_record(&fail_id)).ok().and_then(|t| script::parse_end_record(&t))
    });
    let end = state::dispatch_end(
        &info.state,
        &info.reason,
        Some((info.exit_code, info.exit_signal)),
        Some(&record),
        cortex::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
        None,
    );
    let DispatchState::Failed { exit_code: Some(3), signal: None, error, .. } = end else { panic!("{end:?}") };
    assert_eq!(error, "Slurm job FAILED, exit code 3 (NonZeroExitCode)");
    assert_eq!(std::fs::read_to_string(home.dispatch_stderr(&fail_id)).unwrap(), "oops\n");

    // Cancelled: scancel, then squeue and scontrol say CANCELLED, which ends the dispatch
    // cancelled (no end record: the script was killed with its command).
    let out = cluster.run_argv(&command::scancel(&cfg, running, None), None);
    assert!(out.status.success(), "scancel: {}", String::from_utf8_lossy(&out.stderr));
    cluster.wait_for("CANCELLED in squeue", || {
        cluster
            .squeue(&cfg, &names)
            .iter()
            .any(|q| q.job_id == running && q.state.phase() == Phase::Ended(End::Cancelled))
            .then_some(())
    });
    let ShowJob::Found(info) = cluster.show(&cfg, running) else { panic!("cancelled job unknown to scontrol") };
    let end = state::dispatch_end(
        &info.state,
        &info.reason,
        Some((info.exit_code, info.exit_signal)),
        None,
        cortex::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap(),
        None,
    );
    assert!(matches!(end, DispatchState::Cancelled { .. }), "{end:?}");

    assert_eq!(cluster.show(&cfg, JobId(running.0 + 100_000)), ShowJob::Unknown);
}
