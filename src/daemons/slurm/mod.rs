//! The Slurm daemon (`cortex-slurm`): runs the dispatches whose executor is `slurm` as Slurm jobs.
//! The worker never touches them; this daemon is their record's only writer once the coordinator
//! has created it (under lock `worker-specs`, through `task::dispatch_record`, like the worker).
//!
//! A dispatch's way through it:
//! - **Submission, never twice.** For a `starting` Slurm record it first records its intent
//!   (`slurm`, no job id) durably, then runs `sbatch` (a deadline; never while holding the
//!   `worker-specs` lock), then records the job id. A record found with an intent but no job id
//!   (this daemon was killed between `sbatch` returning and the id being written, or `sbatch`
//!   failed because Slurm was unreachable) is looked up by its job name `cortex-<dispatch_id>` in
//!   the next `squeue` before anything is submitted again: found, the job is adopted.
//! - **Polling.** Once per `[slurm] poll_interval_seconds` (a timer deadline of the loop), ONE
//!   `squeue` for all its jobs; Slurm's states are mapped by `domain::slurm::state`: a queued
//!   job's reason is written into the record (only when it changes), a running one gets its
//!   `started_at`, an ended one ends the dispatch with its exit status from the job's own end
//!   record (`run/slurm/<id>.end.json`) or `scontrol show job`; a job Slurm no longer knows is
//!   ended from its end record, else `lost`. The end is written and the record moved to
//!   `completed/` or `failed/` exactly as the worker does, so the coordinator's retry policy,
//!   budgets, events and status apply unchanged.
//! - **Cancel and timeout.** A cancel request (`active/<id>.cancel`: `cortex task cancel`,
//!   `POST /dispatches/<id>/cancel`, `drain --cancel-running`) or the dispatch's timeout (counted
//!   from the job's start) reaches `scancel`: TERM to every step (`--signal=TERM --full`), the
//!   `[worker] grace_seconds`, then `scancel` (Slurm's KILL). A queued job is simply cancelled.
//! - **Slurm down.** A command that cannot reach the controller (or runs past its deadline)
//!   ends nothing: the dispatches wait with the reason in their record, one `slurm_unreachable`
//!   event per outage, polls back off to 30 s; `slurm_reachable` when a call succeeds again.

use crate::base::clock::{self, Timestamp};
use crate::base::error::Result;
use crate::daemons::daemon::DaemonContext;
use crate::domain::slurm::{self, JobEndRecord, JobId, command, parse, script, state};
use crate::domain::task::dispatch_record::{self, Change, NotWritten, cancel_request_path};
use crate::domain::task::model::{DispatchRecord, DispatchState, SignalledEnd};
use crate::domain::task::worker_types::{WorkerTypes, workdir};
use crate::ops::slurm_command::{self as run, Ran, RunError};
use crate::store::LockName;
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::home::{Home, SpecBucket};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The longest any one Slurm command may take before it is stopped and Slurm taken as
/// unreachable.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// Slurm's default `MinJobAge`, used until `scontrol show config` has been read.
const DEFAULT_MIN_JOB_AGE: Duration = Duration::from_secs(300);

/// `MinJobAge = 300 sec` in `scontrol show config`.
fn parse_min_job_age(config: &str) -> Option<Duration> {
    let line = config.lines().find(|l| l.trim_start().starts_with("MinJobAge"))?;
    let value = line.split_once('=')?.1.split_whitespace().next()?;
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// The longest wait between polls while Slurm is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Test hook: the daemon exits right after `sbatch` returned a job id, before recording it (the
/// crash the intent record exists for). Holds the daemon name (`slurm`) when set.
pub const TEST_CRASH_AFTER_SBATCH: &str = "CORTEX_TEST_SLURM_CRASH_AFTER_SBATCH";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    Cancel,
}

#[derive(Debug)]
struct Stop {
    reason: StopReason,
    /// `scancel --signal=TERM` (or, for a queued job, the plain `scancel`) went through.
    termed: bool,
    kill_at: Instant,
    killed: bool,
}

/// A Slurm dispatch this daemon follows.
#[derive(Debug)]
struct Job {
    record: DispatchRecord,
    /// When its timeout runs out (known once Slurm says it runs).
    deadline: Option<Instant>,
    stop: Option<Stop>,
}

impl Job {
    fn job_id(&self) -> Option<JobId> {
        match &self.record.state {
            DispatchState::Slurm { job_id, .. } => job_id.map(JobId),
            _ => None,
        }
    }

    fn started_at(&self) -> Option<Timestamp> {
        match &self.record.state {
            DispatchState::Slurm { started_at, .. } => *started_at,
            _ => None,
        }
    }
}

/// What one `squeue` (or `scontrol show job`) says of a job.
struct Seen {
    job_id: JobId,
    state: state::JobState,
    reason: String,
}

pub struct SlurmDaemon {
    store: Store,
    home: Home,
    config: Config,
    grace: Duration,
    poll_every: Duration,
    jobs: BTreeMap<String, Job>,
    /// Specs in `active/` that are not Slurm dispatches (the worker's): not read again.
    local: HashSet<String>,
    next_poll: Instant,
    /// Slurm's `MinJobAge`, once read.
    min_job_age: Option<Duration>,
    /// Why Slurm is unreachable, while it is (reported once per outage).
    down: Option<String>,
    failures: u32,
}

fn since(at: Timestamp) -> Duration {
    (clock::now() - at).to_std().unwrap_or(Duration::ZERO)
}

impl SlurmDaemon {
    pub fn new(store: Store, config: Config) -> SlurmDaemon {
        SlurmDaemon {
            home: store.home().clone(),
            store,
            grace: Duration::from_secs_f64(config.worker.grace_seconds.max(0.0)),
            poll_every: Duration::from_secs_f64(config.slurm.poll_interval_seconds),
            config,
            jobs: BTreeMap::new(),
            local: HashSet::new(),
            next_poll: Instant::now(),
            min_job_age: None,
            down: None,
            failures: 0,
        }
    }

    /// Number of Slurm dispatches followed.
    pub fn followed(&self) -> usize {
        self.jobs.len()
    }

    /// One pass: new specs and cancel requests, submissions, the poll when due, the timers.
    pub fn step(&mut self) {
        let cancels = self.scan();
        for id in cancels {
            self.request_stop(&id, StopReason::Cancel);
        }
        self.submit_starting();
        if Instant::now() >= self.next_poll
            && self.jobs.values().any(|j| matches!(j.record.state, DispatchState::Slurm { .. }))
        {
            self.poll();
        }
        self.run_timers();
    }

    /// The next time the loop must run without being woken.
    pub fn next_deadline(&self) -> Option<Instant> {
        let poll = (!self.jobs.is_empty()).then_some(self.next_poll);
        let timers = self.jobs.values().filter_map(|j| match &j.stop {
            None => j.deadline,
            Some(s) if !s.termed => Some(self.next_poll),
            Some(s) if !s.killed => Some(s.kill_at),
            Some(_) => None,
        });
        poll.into_iter().chain(timers).min()
    }

    /// Reads the names in `active/`: adopts new Slurm specs, forgets those that left, moves on
    /// ended ones, and returns the dispatches with a cancel request.
    fn scan(&mut self) -> Vec<String> {
        let dir = self.home.worker_specs(SpecBucket::Active);
        let mut present = HashSet::new();
        let mut cancels = Vec::new();
        let mut new = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::store::atomic::is_temp_name(&name) {
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                if !self.jobs.contains_key(id) && !self.local.contains(id) {
                    new.push(entry.path());
                }
                present.insert(id.to_string());
            } else if let Some(id) = name.strip_suffix(".cancel") {
                cancels.push(id.to_string());
            }
        }
        self.local.retain(|id| present.contains(id));
        let gone: Vec<String> = self.jobs.keys().filter(|id| !present.contains(*id)).cloned().collect();
        for id in gone {
            let job = self.jobs.remove(&id).expect("listed");
            if let Some(job_id) = job.job_id()
                && !dispatch_record::exists_anywhere(&self.home, &id)
            {
                // Its record was removed by hand: a job nobody would watch, stopped before the
                // coordinator may run its task again.
                tracing::warn!("the record of Slurm dispatch {id} (job {job_id}) was removed; cancelling the job");
                let _ = self.slurm(&command::scancel(&self.config.slurm, job_id, None), None);
            }
        }
        new.sort();
        for rec in dispatch_record::read_specs_logged(&self.store, new) {
            if !rec.is_slurm() {
                self.local.insert(rec.dispatch_id);
                continue;
            }
            if !rec.status().is_active() {
                self.move_final(&rec);
                continue;
            }
            let deadline = match &rec.state {
                DispatchState::Slurm { started_at: Some(at), .. } => Some(self.timeout_deadline(&rec, *at)),
                _ => None,
            };
            if let DispatchState::Slurm { job_id, .. } = &rec.state {
                tracing::info!("following Slurm dispatch {} (job {job_id:?})", rec.dispatch_id);
            }
            self.jobs.insert(rec.dispatch_id.clone(), Job { record: rec, deadline, stop: None });
        }
        cancels.retain(|id| self.jobs.contains_key(id));
        cancels
    }

    fn timeout_deadline(&self, rec: &DispatchRecord, started_at: Timestamp) -> Instant {
        let started = Instant::now().checked_sub(since(started_at)).unwrap_or_else(Instant::now);
        started + Duration::from_secs_f64(rec.timeout_seconds.max(0.0))
    }

    /// Runs one Slurm command; an unreachable controller or a run past the deadline is `Err`
    /// with the reason (and marks Slurm down), any other outcome is the command's.
    fn slurm(&mut self, argv: &[String], stdin: Option<&[u8]>) -> std::result::Result<Ran, String> {
        match run::run(argv, stdin, COMMAND_DEADLINE) {
            Ok(ran) if !ran.success && parse::controller_unreachable(&ran.stderr) => {
                let why = format!("{}: {}", argv[0], slurm::preview(ran.stderr.trim()));
                self.mark_down(&why);
                Err(why)
            }
            Ok(ran) => Ok(ran),
            Err(e @ (RunError::TimedOut { .. } | RunError::Spawn(_))) => {
                let why = e.to_string();
                self.mark_down(&why);
                Err(why)
            }
        }
    }

    fn mark_down(&mut self, why: &str) {
        self.failures += 1;
        let backoff = self.poll_every.saturating_mul(1 << self.failures.min(8)).min(MAX_BACKOFF);
        self.next_poll = Instant::now() + backoff.max(self.poll_every);
        if self.down.is_none() {
            tracing::warn!("Slurm unreachable: {why}");
            let _ = self.store.emit(
                EventKind::SlurmUnreachable,
                Severity::Warning,
                format!("Slurm is unreachable ({why}); {} Slurm dispatch(es) wait, nothing fails", self.jobs.len()),
                serde_json::json!({"reason": why, "dispatches": self.jobs.len()}),
            );
        }
        self.down = Some(why.to_string());
    }

    fn mark_up(&mut self) {
        self.failures = 0;
        if let Some(why) = self.down.take() {
            tracing::info!("Slurm reachable again");
            let _ = self.store.emit(
                EventKind::SlurmReachable,
                Severity::Info,
                format!("Slurm is reachable again (was: {why})"),
                serde_json::json!({"was": why}),
            );
        }
    }

    fn unreachable_reason(&self) -> String {
        format!("waiting: Slurm unreachable ({})", self.down.as_deref().unwrap_or("unknown"))
    }

    /// Submits the `starting` dispatches: intent recorded first (one group commit), then `sbatch`
    /// for each (no lock held), then the job ids recorded (one group commit).
    fn submit_starting(&mut self) {
        let ids: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.record.state, DispatchState::Starting))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        if self.down.is_some() && Instant::now() < self.next_poll {
            return;
        }
        let (cancelled, to_submit): (Vec<String>, Vec<String>) =
            ids.into_iter().partition(|id| cancel_request_path(&self.home, id).exists());
        let now = clock::now();
        let mut updates: Vec<(String, DispatchState)> = cancelled
            .into_iter()
            .map(|id| {
                (id, DispatchState::Cancelled(SignalledEnd { ended_at: now, signal: None, duration_s: Some(0.0) }))
            })
            .collect();
        updates.extend(to_submit.iter().map(|id| {
            (
                id.clone(),
                DispatchState::Slurm {
                    submitted_at: now,
                    job_id: None,
                    job_state: None,
                    reason: Some("submitting to Slurm".into()),
                    started_at: None,
                },
            )
        }));
        let written = self.write(updates);
        let intended: Vec<String> = to_submit.into_iter().filter(|id| written.contains(id)).collect();
        self.submit(intended);
    }

    /// `sbatch` for dispatches whose intent is recorded and that no job of Slurm's carries.
    fn submit(&mut self, ids: Vec<String>) {
        let types = WorkerTypes::load(&self.store).ok();
        let mut updates = Vec::new();
        for id in ids {
            if self.down.is_some() {
                let reason = self.unreachable_reason();
                if let Some(update) = self.with_reason(&id, None, reason) {
                    updates.push(update);
                }
                continue;
            }
            let Some(job) = self.jobs.get(&id) else { continue };
            if job.stop.is_some() {
                let ended = DispatchState::Cancelled(SignalledEnd {
                    ended_at: clock::now(),
                    signal: None,
                    duration_s: Some(0.0),
                });
                updates.push((id, ended));
                continue;
            }
            let rec = job.record.clone();
            match self.sbatch(&rec, types.as_ref()) {
                Ok(job_id) => {
                    if crate::daemons::daemon::test_hook(TEST_CRASH_AFTER_SBATCH, "slurm") {
                        tracing::warn!("test hook: exiting after sbatch returned job {job_id} for {id}");
                        std::process::exit(3);
                    }
                    tracing::info!("dispatch {id} submitted as Slurm job {job_id}");
                    if let DispatchState::Slurm { submitted_at, .. } = &rec.state {
                        updates.push((
                            id,
                            DispatchState::Slurm {
                                submitted_at: *submitted_at,
                                job_id: Some(job_id.0),
                                job_state: Some("PENDING".into()),
                                reason: None,
                                started_at: None,
                            },
                        ));
                    }
                }
                Err(Some(refused)) => {
                    tracing::error!("Slurm refused dispatch {id}: {refused}");
                    updates.push((
                        id,
                        DispatchState::Failed {
                            ended_at: clock::now(),
                            exit_code: None,
                            signal: None,
                            duration_s: Some(0.0),
                            error: refused,
                        },
                    ));
                }
                Err(None) => {
                    let reason = self.unreachable_reason();
                    updates.extend(self.with_reason(&id, None, reason));
                }
            }
        }
        self.write(updates);
    }

    /// Runs `sbatch` for one dispatch: Ok(job id); Err(Some(why)) when Slurm (or the script)
    /// refuses it — the dispatch fails, retried by policy; Err(None) when Slurm is unreachable.
    fn sbatch(
        &mut self,
        rec: &DispatchRecord,
        types: Option<&WorkerTypes>,
    ) -> std::result::Result<JobId, Option<String>> {
        let id = &rec.dispatch_id;
        let wt = types.and_then(|t| t.worker_types.get(&rec.worker_type));
        let dir = workdir(&self.home, &self.config.worker.workdir, wt, &rec.task_id);
        let (stdout, stderr) = (self.home.dispatch_stdout(id), self.home.dispatch_stderr(id));
        for d in [stdout.parent(), Some(dir.as_path()), Some(self.home.slurm_dir().as_path())]
            .into_iter()
            .flatten()
            .chain([self.home.dispatch_runtime_dir().as_path()])
        {
            if let Err(e) = crate::store::atomic::create_dir_all(d) {
                return Err(Some(format!("cannot create {}: {e}", d.display())));
            }
        }
        let mut env = crate::domain::task::processes::task_env(&self.home, rec);
        env.push((crate::domain::task::processes::EXECUTOR_VAR.to_string(), "slurm".to_string()));
        let end_record = self.home.slurm_end_record(id).display().to_string();
        let text = script::BatchScript { dispatch_id: id, argv: &rec.command, env: &env, end_record: &end_record }
            .render()
            .map_err(|e| Some(format!("cannot write the batch script: {e}")))?;
        let options = rec.slurm.clone().unwrap_or_default();
        let (out_s, err_s, dir_s) =
            (stdout.display().to_string(), stderr.display().to_string(), dir.display().to_string());
        let argv = command::sbatch(
            &self.config.slurm,
            &command::Submission {
                dispatch_id: id,
                stdout: &out_s,
                stderr: &err_s,
                workdir: &dir_s,
                timeout_seconds: rec.timeout_seconds,
                options: &options,
            },
        );
        let ran = self.slurm(&argv, Some(text.as_bytes())).map_err(|_| None)?;
        if !ran.success {
            return Err(Some(format!("sbatch refused the job: {}", slurm::preview(ran.stderr.trim()))));
        }
        self.mark_up();
        parse::sbatch_parsable(&ran.stdout).map_err(|e| Some(e.to_string()))
    }

    /// The record's Slurm state with `reason` (and the job state) if that changes it.
    fn with_reason(&self, id: &str, job_state: Option<&str>, reason: String) -> Option<(String, DispatchState)> {
        let job = self.jobs.get(id)?;
        let DispatchState::Slurm { submitted_at, job_id, job_state: old_state, reason: old, started_at } =
            &job.record.state
        else {
            return None;
        };
        let new_state = job_state.map(str::to_string).or_else(|| old_state.clone());
        if old.as_deref() == Some(reason.as_str()) && *old_state == new_state {
            return None;
        }
        Some((
            id.to_string(),
            DispatchState::Slurm {
                submitted_at: *submitted_at,
                job_id: *job_id,
                job_state: new_state,
                reason: Some(reason),
                started_at: *started_at,
            },
        ))
    }

    /// One `squeue` for every job followed; then each dispatch moved on from what it says.
    fn poll(&mut self) {
        self.next_poll = Instant::now() + self.poll_every;
        let names: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.record.state, DispatchState::Slurm { .. }))
            .map(|(id, _)| slurm::job_name(id))
            .collect();
        if names.is_empty() {
            return;
        }
        let ran = match self.slurm(&command::squeue(&self.config.slurm, &names), None) {
            Ok(ran) if ran.success => ran,
            Ok(ran) => {
                tracing::warn!("squeue failed: {}", slurm::preview(ran.stderr.trim()));
                return;
            }
            Err(_) => {
                let reason = self.unreachable_reason();
                let ids: Vec<String> = self.jobs.keys().cloned().collect();
                let updates = ids.iter().filter_map(|id| self.with_reason(id, None, reason.clone())).collect();
                self.write(updates);
                return;
            }
        };
        self.mark_up();
        self.load_min_job_age();
        let (listed, bad) = parse::squeue(&ran.stdout);
        if bad > 0 {
            tracing::warn!("squeue printed {bad} line(s) that do not parse; skipped");
        }
        let mut by_name: HashMap<&str, Vec<&parse::QueuedJob>> = HashMap::new();
        for j in &listed {
            if let Some(id) = slurm::dispatch_of_job(&j.name) {
                by_name.entry(id).or_default().push(j);
            }
        }
        let ids: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.record.state, DispatchState::Slurm { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        let mut updates = Vec::new();
        let mut resubmit = Vec::new();
        for id in ids {
            let known = self.jobs[&id].job_id();
            let found = by_name.get(id.as_str()).and_then(|jobs| {
                jobs.iter().find(|j| Some(j.job_id) == known).or_else(|| jobs.iter().max_by_key(|j| j.job_id)).copied()
            });
            let seen = match (found, known) {
                (Some(j), _) => Seen { job_id: j.job_id, state: j.state.clone(), reason: j.reason.clone() },
                // Intent recorded, no job of that name: sbatch never made one. Submit.
                // Intent recorded, no job of that name in Slurm: sbatch never made one — unless
                // the job ran, ended and was purged (MinJobAge) while nobody looked. Its end
                // record, or an intent older than MinJobAge, says so; else submit.
                (None, None) => {
                    let submitted = match &self.jobs[&id].record.state {
                        DispatchState::Slurm { submitted_at, .. } => since(*submitted_at),
                        _ => Duration::ZERO,
                    };
                    if self.end_record(&id).is_some() || submitted > self.min_job_age() {
                        updates.push((id.clone(), self.purged_end(&id, None)));
                    } else {
                        resubmit.push(id);
                    }
                    continue;
                }
                (None, Some(job_id)) => match self.show_job(job_id) {
                    Some(Some(info)) => Seen { job_id, state: info.state, reason: info.reason },
                    Some(None) => {
                        updates.push((id.clone(), self.purged_end(&id, Some(job_id))));
                        continue;
                    }
                    None => continue,
                },
            };
            updates.extend(self.progress(&id, seen));
        }
        self.write(updates);
        if !resubmit.is_empty() {
            self.submit(resubmit);
        }
    }

    /// `scontrol show job`: Some(Some(info)), Some(None) when Slurm no longer knows the job,
    /// None when it cannot be asked.
    fn show_job(&mut self, job_id: JobId) -> Option<Option<parse::JobInfo>> {
        let ran = self.slurm(&command::scontrol_show_job(&self.config.slurm, job_id), None).ok()?;
        match parse::scontrol_show_job(&ran.stdout, &ran.stderr, ran.success) {
            Ok(parse::ShowJob::Found(info)) => Some(Some(info)),
            Ok(parse::ShowJob::Unknown) => Some(None),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn end_record(&self, id: &str) -> Option<JobEndRecord> {
        let text = crate::store::open::read(&self.home.slurm_end_record(id)).ok().and_then(|mut f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).ok().map(|_| s)
        })?;
        script::parse_end_record(&text).filter(|r| r.dispatch_id == id)
    }

    fn duration(&self, id: &str) -> Option<f64> {
        self.jobs.get(id)?.started_at().map(|at| since(at).as_secs_f64())
    }

    /// The end of a job Slurm has purged: from its end record, else `lost`.
    fn purged_end(&self, id: &str, job_id: Option<JobId>) -> DispatchState {
        let record = self.end_record(id);
        match (&record, self.jobs.get(id).and_then(|j| j.stop.as_ref())) {
            (_, Some(stop)) => self.stopped_end(stop.reason, id),
            (Some(r), None) => state::dispatch_end(
                &state::JobState::Other("PURGED".into()),
                "",
                None,
                Some(r),
                clock::now(),
                self.duration(id),
            ),
            (None, None) => DispatchState::Lost {
                ended_at: clock::now(),
                reason: match job_id {
                    Some(job_id) => format!("Slurm no longer knows job {job_id} and the job left no end record"),
                    None => format!(
                        "submitted to Slurm over {}s ago with no job id recorded, and Slurm has no job named {} \
                         nor did one leave an end record: whether it ran is unknown (purged after MinJobAge)",
                        self.min_job_age().as_secs(),
                        slurm::job_name(id)
                    ),
                },
            },
        }
    }

    /// Slurm's `MinJobAge` (how long an ended job stays listed), from `scontrol show config`,
    /// read once; 300 s (Slurm's default) until it could be read.
    fn min_job_age(&self) -> Duration {
        self.min_job_age.unwrap_or(DEFAULT_MIN_JOB_AGE)
    }

    fn load_min_job_age(&mut self) {
        if self.min_job_age.is_some() {
            return;
        }
        let argv = vec![self.config.slurm.scontrol.clone(), "show".into(), "config".into()];
        if let Ok(ran) = self.slurm(&argv, None)
            && ran.success
            && let Some(age) = parse_min_job_age(&ran.stdout)
        {
            self.min_job_age = Some(age);
        }
    }

    fn stopped_end(&self, reason: StopReason, id: &str) -> DispatchState {
        let (ended_at, duration_s) = (clock::now(), self.duration(id));
        match reason {
            StopReason::Cancel => DispatchState::Cancelled(SignalledEnd { ended_at, signal: None, duration_s }),
            StopReason::Timeout => DispatchState::Timeout(SignalledEnd { ended_at, signal: None, duration_s }),
        }
    }

    /// What a job's state means for its record: the new state, if it changed.
    fn progress(&mut self, id: &str, seen: Seen) -> Option<(String, DispatchState)> {
        let job = self.jobs.get(id)?;
        let DispatchState::Slurm { submitted_at, job_id, started_at, .. } = job.record.state.clone() else {
            return None;
        };
        if job_id.is_none() {
            tracing::info!("dispatch {id}: adopted Slurm job {} found by its name", seen.job_id);
        }
        match seen.state.phase() {
            state::Phase::Queued | state::Phase::Running => {
                let running = seen.state.phase() == state::Phase::Running;
                let new = DispatchState::Slurm {
                    submitted_at,
                    job_id: Some(seen.job_id.0),
                    job_state: Some(seen.state.as_str().to_string()),
                    reason: (!running).then(|| state::waiting_text(&seen.state, &seen.reason)),
                    started_at: if running { started_at.or_else(|| Some(clock::now())) } else { started_at },
                };
                (new != job.record.state).then(|| (id.to_string(), new))
            }
            state::Phase::Ended(_) => {
                if let Some(stop) = &job.stop {
                    return Some((id.to_string(), self.stopped_end(stop.reason, id)));
                }
                let record = self.end_record(id);
                let exit = if record.is_some() {
                    None
                } else {
                    self.show_job(seen.job_id).flatten().map(|i| (i.exit_code, i.exit_signal))
                };
                let ended = state::dispatch_end(
                    &seen.state,
                    &seen.reason,
                    exit,
                    record.as_ref(),
                    clock::now(),
                    self.duration(id),
                );
                Some((id.to_string(), ended))
            }
        }
    }

    /// Asks for a dispatch to stop (cancel or timeout); the signals go out from [`run_timers`].
    fn request_stop(&mut self, id: &str, reason: StopReason) {
        if let Some(job) = self.jobs.get_mut(id)
            && job.stop.is_none()
        {
            tracing::info!("stopping Slurm dispatch {id}: {reason:?}");
            job.stop = Some(Stop { reason, termed: false, kill_at: Instant::now(), killed: false });
        }
    }

    /// Timeouts due, and the scancels of stops: TERM to every step of a running job, the grace,
    /// then scancel; a queued job is cancelled at once.
    fn run_timers(&mut self) {
        let now = Instant::now();
        for id in crate::daemons::daemon::due(&self.jobs, now, |j| j.deadline.filter(|_| j.stop.is_none())) {
            self.request_stop(&id, StopReason::Timeout);
        }
        let mut acts = Vec::new();
        for (id, job) in &self.jobs {
            let (Some(stop), Some(job_id)) = (&job.stop, job.job_id()) else { continue };
            if self.down.is_some() && now < self.next_poll {
                continue;
            }
            let running = job.started_at().is_some();
            if !stop.termed {
                acts.push((id.clone(), job_id, running, false));
            } else if !stop.killed && now >= stop.kill_at {
                acts.push((id.clone(), job_id, running, true));
            }
        }
        for (id, job_id, running, kill) in acts {
            let signal = (running && !kill).then_some("TERM");
            let ok = match self.slurm(&command::scancel(&self.config.slurm, job_id, signal), None) {
                Ok(ran) => {
                    if !ran.success {
                        tracing::warn!("scancel {job_id}: {}", slurm::preview(ran.stderr.trim()));
                    }
                    true
                }
                Err(_) => false,
            };
            let grace = self.grace;
            if let Some(stop) = self.jobs.get_mut(&id).and_then(|j| j.stop.as_mut())
                && ok
            {
                if !stop.termed {
                    stop.termed = true;
                    stop.kill_at = Instant::now() + grace;
                    stop.killed = signal.is_none();
                } else {
                    stop.killed = true;
                }
            }
        }
    }

    /// Writes new states into the records (one group commit under `worker-specs`); ended ones
    /// move to their buckets. Returns the ids written.
    fn write(&mut self, updates: Vec<(String, DispatchState)>) -> HashSet<String> {
        let mut written = HashSet::new();
        if updates.is_empty() {
            return written;
        }
        let tokens: HashMap<String, Option<u64>> = updates
            .iter()
            .filter(|(_, s)| !s.status().is_active())
            .map(|(id, _)| (id.clone(), crate::domain::task::ops::read_usage_file(&self.home.usage_file(id))))
            .collect();
        let changes: Vec<(String, Change)> = updates
            .iter()
            .map(|(id, state)| {
                let (state, tokens) = (state.clone(), tokens.get(id).copied().flatten());
                let change: Change = Box::new(move |r: &mut DispatchRecord| {
                    if !r.is_slurm() || !r.status().is_active() {
                        return Err(NotWritten::MovedOn(format!(
                            "dispatch {} is {}, not an active Slurm dispatch",
                            r.dispatch_id,
                            r.status().as_str()
                        )));
                    }
                    r.state = state;
                    if tokens.is_some() {
                        r.tokens_used = tokens;
                    }
                    Ok(())
                });
                (id.clone(), change)
            })
            .collect();
        let mut dirs = Vec::new();
        let results = match self.store.lock_named(LockName::WorkerSpecs) {
            Ok(guard) => {
                let updated = dispatch_record::update_active_locked(&self.store, changes, |_| None);
                if let Some(p) = updated.published {
                    dirs.extend(p.into_dirs());
                }
                let ended: Vec<&DispatchRecord> = updated
                    .results
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .filter(|r| !r.status().is_active())
                    .collect();
                if let Err(e) = dispatch_record::move_ended_locked(&self.home, &ended, &mut dirs) {
                    tracing::error!("cannot move ended Slurm dispatches: {e}");
                }
                drop(guard);
                updated.results
            }
            Err(e) => {
                tracing::error!("cannot take the worker-specs lock: {e}");
                return written;
            }
        };
        if let Err(e) = crate::store::atomic::fsync_dirs(&dirs) {
            tracing::error!("cannot make the dispatch records durable: {e}");
        }
        for ((id, _), result) in updates.into_iter().zip(results) {
            match result {
                Ok(rec) => {
                    written.insert(id.clone());
                    if rec.status().is_active() {
                        let deadline = match &rec.state {
                            DispatchState::Slurm { started_at: Some(at), .. } => Some(self.timeout_deadline(&rec, *at)),
                            _ => None,
                        };
                        if let Some(job) = self.jobs.get_mut(&id) {
                            job.record = rec;
                            job.deadline = job.deadline.or(deadline);
                        }
                    } else {
                        tracing::info!("Slurm dispatch {id} ended {}", rec.status().as_str());
                        self.jobs.remove(&id);
                        for file in
                            [self.home.slurm_end_record(&id), self.home.heartbeat_file(&id), self.home.usage_file(&id)]
                        {
                            if file.exists() {
                                let _ = std::fs::remove_file(file);
                            }
                        }
                    }
                }
                Err(NotWritten::MovedOn(why)) => {
                    tracing::info!("not recording Slurm dispatch {id}: {why}");
                    self.jobs.remove(&id);
                }
                // Kept: the next step or poll finds the same and writes again.
                Err(NotWritten::Failed(e)) => tracing::error!("cannot record Slurm dispatch {id} (will retry): {e}"),
            }
        }
        written
    }

    /// Moves a record left in `active/` with a final state to its bucket.
    fn move_final(&self, rec: &DispatchRecord) {
        let Ok(guard) = self.store.lock_named(LockName::WorkerSpecs) else { return };
        let mut dirs = Vec::new();
        let moved = dispatch_record::move_ended_locked(&self.home, &[rec], &mut dirs);
        drop(guard);
        if let Err(e) = moved.and(crate::store::atomic::fsync_dirs(&dirs)) {
            tracing::error!("cannot move ended dispatch {}: {e}", rec.dispatch_id);
        }
    }
}

/// The Slurm daemon's loop (`cortex-slurm`).
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    ctx.watch(&[ctx.home.worker_specs(SpecBucket::Active)])?;
    let mut daemon = SlurmDaemon::new(ctx.store.clone(), ctx.config.clone());
    ctx.mark_ready()?;
    // Jobs keep running in Slurm after a shutdown; the next cortex-slurm adopts them.
    ctx.run_steps(|| {
        daemon.step();
        daemon.next_deadline()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_job_age_from_scontrol_show_config() {
        let text = "Configuration data as of 2026-12-06T04:00:00\nMaxJobCount             = 10000\n\
                    MinJobAge               = 300 sec\nOverTimeLimit           = 0 min\n";
        assert_eq!(parse_min_job_age(text), Some(Duration::from_secs(300)));
        assert_eq!(parse_min_job_age("MinJobAge = 2 sec"), Some(Duration::from_secs(2)));
        assert_eq!(parse_min_job_age("nothing here"), None);
    }
}
