//! The Slurm daemon (`cortex-slurm`): runs the dispatches whose executor is `slurm` as Slurm jobs.
//! The worker never touches them; this daemon is their record's only writer once the coordinator
//! has created it (under lock `worker-specs`, through `task::dispatch_record`, like the worker).
//! `sbatch` and `squeue` run on command threads of their own (`io`): the loop never waits for
//! them, so a cancel's `scancel` goes out at once whatever submission or poll is under way.
//!
//! A dispatch's way through it:
//! - **Submission, never twice.** At start-up any `sbatch` a killed predecessor left running is
//!   stopped first (`io::stop_leftover_submitters`). For a `starting` Slurm record the daemon
//!   records its intent (`slurm`, no job id) durably — nothing is submitted if that write or its
//!   fsync fails —, then hands `sbatch` to its thread (never while holding the `worker-specs`
//!   lock), then records the job id. A record found with an intent but no job id is looked up by
//!   its job name `cortex-<dispatch_id>` in the next `squeue` before anything is submitted again:
//!   found, the job is adopted; not found, it is submitted again if its `sbatch` certainly made
//!   no job (`not_submitted`) or the intent is younger than Slurm's `MinJobAge`, else ended from
//!   the job's end record or `lost` (it may have run and been purged).
//! - **Polling.** ONE `squeue --all` for all its jobs per `[slurm] poll_interval_seconds` (a
//!   timer deadline), at once when a job's end record appears in `run/slurm/` (watched), and in
//!   quick succession after a submission or a stop. Slurm's states are mapped by
//!   `domain::slurm::state`: a queued job's reason is written into the record (only when it
//!   changes), a running one gets its `started_at`, an ended one ends the dispatch with its exit
//!   status from the job's own end record (`run/slurm/<id>.end.json`) or `scontrol show job`; a
//!   requeued job is cancelled and its dispatch fails; a job Slurm no longer knows is ended from
//!   its end record, else `lost`. The end is written and the record moved to its bucket exactly as
//!   the worker does, so the coordinator's retry policy, budgets, events and status apply.
//! - **Cancel, timeout, zombie.** A cancel request (`active/<id>.cancel`: `cortex task cancel`,
//!   `POST /dispatches/<id>/cancel`, `drain --cancel-running`), the dispatch's timeout (counted
//!   from the job's start) or a heartbeat staler than the heartbeat policy's zombie threshold
//!   records the stop's reason (`stopping`), then reaches `scancel`: TERM to every step
//!   (`--signal=TERM --full`), the `[worker] grace_seconds`, then `scancel` (Slurm's KILL). A
//!   queued job is simply cancelled. A job whose command completed before stays completed.
//! - **Slurm down.** A command that cannot reach the controller, fails to authenticate (munge)
//!   or runs past its deadline ends nothing: the dispatches wait with the reason in their record,
//!   one `slurm_unreachable` event per outage, polls back off to 30 s; `slurm_reachable` when a
//!   call succeeds again.

mod io;

use crate::base::clock::{self, Timestamp};
use crate::base::error::Result;
use crate::base::wake::Wake;
use crate::daemons::daemon::DaemonContext;
use crate::daemons::heartbeat::beat;
use crate::daemons::heartbeat::policy::HeartbeatPolicy;
use crate::domain::slurm::{self, JobEndRecord, JobId, command, parse, script, state};
use crate::domain::task::dispatch_record::{self, Change, NotWritten, cancel_request_path};
use crate::domain::task::model::{DispatchRecord, DispatchState, SignalledEnd, SlurmStop};
use crate::domain::task::worker_types::{WorkerTypes, workdir};
use crate::ops::slurm_command::{self as run, Ran, RunError};
use crate::store::LockName;
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::home::{Home, SpecBucket};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// Slurm's default `MinJobAge`, used until `scontrol show config` has been read.
const DEFAULT_MIN_JOB_AGE: Duration = Duration::from_secs(300);

/// How long after start-up an intent without a job id that a previous daemon left is not yet
/// submitted again: a `sbatch` of that daemon killed with it may have sent its request, which the
/// controller may take a moment to act on.
const SETTLE: Duration = Duration::from_secs(2);

/// The first quick poll after something is expected to change (a submission, an end record);
/// each next one twice as late, up to the poll interval.
const QUICK_POLL: Duration = Duration::from_millis(100);

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

/// Test hook: the daemon exits right after the first `scancel` of a stop (between a timeout's
/// TERM and the poll that would see the job end).
pub const TEST_CRASH_AFTER_SCANCEL: &str = "CORTEX_TEST_SLURM_CRASH_AFTER_SCANCEL";

#[derive(Debug)]
struct Stop {
    reason: SlurmStop,
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
    /// Not submitted again (an intent found without a job) before this: a `sbatch` that may
    /// have sent its request could still make the job.
    settle_until: Option<Instant>,
    /// Its end record was seen (a poll is due at once).
    end_seen: bool,
    /// Its heartbeat looked stale: re-checked at this time (the heartbeat daemon's
    /// false-positive guard), with the reason.
    suspect: Option<(Instant, String)>,
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

    fn stopping(&self) -> Option<SlurmStop> {
        match &self.record.state {
            DispatchState::Slurm { stopping, .. } => *stopping,
            _ => None,
        }
    }
}

/// The record's Slurm state changed by `f` (None when it is not a Slurm state).
fn slurm_state(
    state: &DispatchState,
    f: impl FnOnce(
        &mut Option<u64>,
        &mut Option<String>,
        &mut Option<String>,
        &mut Option<Timestamp>,
        &mut bool,
        &mut Option<SlurmStop>,
    ),
) -> Option<DispatchState> {
    let mut new = state.clone();
    match &mut new {
        DispatchState::Slurm { job_id, job_state, reason, started_at, not_submitted, stopping, .. } => {
            f(job_id, job_state, reason, started_at, not_submitted, stopping);
            Some(new)
        }
        _ => None,
    }
}

/// A fresh intent to submit (recorded before each `sbatch`).
fn intent(now: Timestamp) -> DispatchState {
    DispatchState::Slurm {
        submitted_at: now,
        job_id: None,
        job_state: None,
        reason: Some("submitting to Slurm".into()),
        started_at: None,
        not_submitted: false,
        stopping: None,
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
    /// The next quick poll's delay (doubling up to the poll interval).
    quick: Duration,
    /// Slurm's `MinJobAge`, once read.
    min_job_age: Option<Duration>,
    /// Why Slurm is unreachable, while it is (reported once per outage).
    down: Option<String>,
    failures: u32,
    started: Instant,
    /// To the command threads (`sbatch`; `squeue`), and their answers.
    submits: Sender<io::Request>,
    polls: Sender<io::Request>,
    replies: Receiver<io::Reply>,
    /// Dispatches whose `sbatch` is with the command thread.
    submitting: HashSet<String>,
    /// A `squeue` is with the command thread.
    polling: bool,
    /// When a running job's heartbeat is next due to cross the zombie threshold (or be
    /// re-checked).
    next_beat_check: Option<Instant>,
}

fn since(at: Timestamp) -> Duration {
    (clock::now() - at).to_std().unwrap_or(Duration::ZERO)
}

impl SlurmDaemon {
    /// The daemon, with its command thread (answers wake the loop through `waker`).
    pub fn new(store: Store, config: Config, waker: Option<Sender<Wake>>) -> Result<SlurmDaemon> {
        let (thread_replies, replies) = mpsc::channel();
        let crash = crate::daemons::daemon::test_hook(TEST_CRASH_AFTER_SBATCH, "slurm");
        let (submits, polls) = io::spawn(store.home().root().display().to_string(), thread_replies, waker, crash)
            .map_err(|e| crate::base::error::Error::system("start the Slurm command threads", e))?;
        Ok(SlurmDaemon {
            home: store.home().clone(),
            store,
            grace: Duration::from_secs_f64(config.worker.grace_seconds.max(0.0)),
            poll_every: Duration::from_secs_f64(config.slurm.poll_interval_seconds),
            config,
            jobs: BTreeMap::new(),
            local: HashSet::new(),
            next_poll: Instant::now(),
            quick: QUICK_POLL,
            min_job_age: None,
            down: None,
            failures: 0,
            started: Instant::now(),
            submits,
            polls,
            replies,
            submitting: HashSet::new(),
            polling: false,
            next_beat_check: None,
        })
    }

    /// Number of Slurm dispatches followed.
    pub fn followed(&self) -> usize {
        self.jobs.len()
    }

    /// One pass: the command thread's answers, new specs and cancel requests, submissions, the
    /// poll when due, the timers.
    pub fn step(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            match reply {
                io::Reply::Submitted(results) => self.submitted(results),
                io::Reply::Polled(outcome) => self.polled(outcome),
            }
        }
        let cancels = self.scan();
        for id in cancels {
            self.request_stop(&id, SlurmStop::Cancel);
        }
        self.submit_starting();
        self.notice_end_records();
        if Instant::now() >= self.next_poll
            && !self.polling
            && self.jobs.values().any(|j| matches!(j.record.state, DispatchState::Slurm { .. }))
        {
            self.request_poll();
        }
        self.check_heartbeats();
        self.run_timers();
    }

    /// Heartbeats of running Slurm jobs, as the heartbeat daemon watches a local dispatch's: a
    /// job whose heartbeat file (`CORTEX_HEARTBEAT_FILE`, on the shared filesystem) is older than
    /// the policy's `zombie_threshold_seconds` (counted from the job's start if it never wrote
    /// one and the policy requires heartbeats) is re-checked after `recheck_delay_seconds`, then
    /// stopped (`scancel`) and ended `zombie`; the retry policy applies as for a local zombie.
    fn check_heartbeats(&mut self) {
        let running: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.started_at().is_some() && j.stop.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        self.next_beat_check = None;
        if running.is_empty() {
            return;
        }
        let policy = self.store.load::<HeartbeatPolicy>().unwrap_or_default();
        let now = clock::now();
        let instant = Instant::now();
        let secs = |s: f64| chrono::Duration::microseconds((s.max(0.0) * 1e6) as i64);
        let mut zombies = Vec::new();
        for id in running {
            let seen = beat::observe(&self.home.heartbeat_file(&id));
            let job = self.jobs.get_mut(&id).expect("listed");
            let Some(started) = job.started_at() else { continue };
            if seen.last.is_none() && !policy.require_heartbeat {
                job.suspect = None;
                continue;
            }
            let reference = seen.last.map_or(started, |l| l.max(started));
            let dead_at = reference + secs(policy.zombie_threshold_seconds);
            if now <= dead_at {
                job.suspect = None;
                let wait = (dead_at - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(1);
                self.next_beat_check = Some(self.next_beat_check.map_or(instant + wait, |t| t.min(instant + wait)));
                continue;
            }
            let age = (now - reference).num_milliseconds() as f64 / 1000.0;
            let reason = format!(
                "no heartbeat for {age:.0} s (zombie_threshold_seconds {}); its Slurm job was cancelled",
                policy.zombie_threshold_seconds
            );
            match &job.suspect {
                None => {
                    let at = instant + Duration::from_secs_f64(policy.recheck_delay_seconds.max(0.0));
                    tracing::info!("Slurm dispatch {id}: presumed dead ({reason}); re-checking");
                    job.suspect = Some((at, reason));
                    self.next_beat_check = Some(self.next_beat_check.map_or(at, |t| t.min(at)));
                }
                Some((at, _)) if instant >= *at => zombies.push((id.clone(), reason)),
                Some((at, _)) => {
                    let at = *at;
                    self.next_beat_check = Some(self.next_beat_check.map_or(at, |t| t.min(at)));
                }
            }
        }
        for (id, reason) in zombies {
            let (task, job_id) = self.jobs.get(&id).map(|j| (j.record.task_id.clone(), j.job_id())).unwrap_or_default();
            let _ = self.store.emit(
                EventKind::ZombieDetected,
                Severity::Warning,
                format!("Slurm dispatch {id} (task {task}) is a zombie: {reason}"),
                serde_json::json!({"dispatch_id": id, "task_id": task, "job_id": job_id.map(|j| j.0), "reason": reason}),
            );
            self.request_stop(&id, SlurmStop::Zombie);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.suspect = Some((Instant::now(), reason));
            }
        }
    }

    /// The next time the loop must run without being woken (the command thread's answers wake it).
    pub fn next_deadline(&self) -> Option<Instant> {
        let poll = (!self.jobs.is_empty() && !self.polling).then_some(self.next_poll);
        let timers = self.jobs.values().filter_map(|j| match &j.stop {
            None => j.deadline,
            Some(s) if !s.termed => Some(self.next_poll),
            Some(s) if !s.killed => Some(s.kill_at),
            Some(_) => None,
        });
        poll.into_iter().chain(timers).chain(self.next_beat_check).min()
    }

    /// A poll soon: something is expected to change (a job just submitted, an end record
    /// written). Quick polls double up to the poll interval.
    fn poll_soon(&mut self) {
        let at = Instant::now() + self.quick.min(self.poll_every);
        if at < self.next_poll {
            self.next_poll = at;
        }
    }

    /// An end record newly written by a followed job: poll at once (its end is read then, not
    /// up to a poll interval later).
    fn notice_end_records(&mut self) {
        let mut any = false;
        for (id, job) in self.jobs.iter_mut() {
            if !job.end_seen && job.job_id().is_some() && self.home.slurm_end_record(id).exists() {
                job.end_seen = true;
                any = true;
            }
        }
        if any {
            self.quick = QUICK_POLL;
            self.next_poll = Instant::now();
        }
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
                let _ = self.slurm(&command::scancel(&self.config.slurm, job_id, None));
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
            let (deadline, stop, settle_until) = match &rec.state {
                DispatchState::Slurm { started_at, stopping, job_id, .. } => (
                    started_at.map(|at| self.timeout_deadline(&rec, at)),
                    // A stop a previous daemon began: carried on (TERM again, grace, scancel).
                    stopping.map(|reason| Stop { reason, termed: false, kill_at: Instant::now(), killed: false }),
                    job_id.is_none().then_some(self.started + SETTLE),
                ),
                _ => (None, None, None),
            };
            if let DispatchState::Slurm { job_id, .. } = &rec.state {
                tracing::info!("following Slurm dispatch {} (job {job_id:?})", rec.dispatch_id);
            }
            self.jobs.insert(
                rec.dispatch_id.clone(),
                Job { record: rec, deadline, stop, settle_until, end_seen: false, suspect: None },
            );
        }
        cancels.retain(|id| self.jobs.contains_key(id));
        cancels
    }

    fn timeout_deadline(&self, rec: &DispatchRecord, started_at: Timestamp) -> Instant {
        let started = Instant::now().checked_sub(since(started_at)).unwrap_or_else(Instant::now);
        started + Duration::from_secs_f64(rec.timeout_seconds.max(0.0))
    }

    /// Runs one quick Slurm command here (`scancel`, `scontrol`); an unreachable controller or a
    /// run past the deadline is `Err` with the reason (and marks Slurm down), any other outcome is
    /// the command's.
    fn slurm(&mut self, argv: &[String]) -> std::result::Result<Ran, String> {
        let outcome = run::run(argv, None, io::COMMAND_DEADLINE);
        self.reached(argv, outcome)
    }

    /// Classifies a command's outcome: unreachable (marks Slurm down) or what it printed.
    fn reached(
        &mut self,
        argv: &[String],
        outcome: std::result::Result<Ran, RunError>,
    ) -> std::result::Result<Ran, String> {
        if !io::unreachable(&outcome) {
            return outcome.map_err(|e| e.to_string());
        }
        let why = match &outcome {
            Ok(ran) => format!("{}: {}", argv[0], slurm::preview(ran.stderr.trim())),
            Err(e) => e.to_string(),
        };
        self.mark_down(&why);
        Err(why)
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

    /// Submits the `starting` dispatches: intent recorded first (one group commit, durable),
    /// then `sbatch` for each on the command thread, then the job ids recorded when it answers.
    fn submit_starting(&mut self) {
        let ids: Vec<String> = self
            .jobs
            .iter()
            .filter(|(id, j)| matches!(j.record.state, DispatchState::Starting) && !self.submitting.contains(*id))
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
        updates.extend(to_submit.iter().map(|id| (id.clone(), intent(now))));
        let (written, durable) = self.write(updates);
        if !durable {
            tracing::error!("the intents to submit are not durable (see above): nothing is submitted until they are");
            return;
        }
        let intended: Vec<String> = to_submit.into_iter().filter(|id| written.contains(id)).collect();
        self.submit(intended);
    }

    /// Hands `sbatch` of dispatches whose intent is durably recorded (and that no job of Slurm's
    /// carries) to the command thread.
    fn submit(&mut self, ids: Vec<String>) {
        let types = WorkerTypes::load(&self.store).ok();
        let mut updates = Vec::new();
        let mut batch = Vec::new();
        for id in ids {
            let Some(job) = self.jobs.get(&id) else { continue };
            if self.down.is_some() {
                // Nothing is tried while Slurm is unreachable: certainly no job.
                let reason = self.unreachable_reason();
                updates.extend(self.with_reason(&id, reason, true));
                continue;
            }
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
            match self.prepare(&rec, types.as_ref()) {
                Ok(p) => batch.push(p),
                Err(refused) => {
                    tracing::error!("cannot submit dispatch {id}: {refused}");
                    updates.push((id, self.refused(refused)));
                }
            }
        }
        self.write(updates);
        if batch.is_empty() {
            return;
        }
        self.submitting.extend(batch.iter().map(|p| p.id.clone()));
        if self.submits.send(io::Request::Submit(batch)).is_err() {
            tracing::error!("the Slurm command thread is gone");
        }
    }

    fn refused(&self, error: String) -> DispatchState {
        DispatchState::Failed { ended_at: clock::now(), exit_code: None, signal: None, duration_s: Some(0.0), error }
    }

    /// What the command thread's `sbatch` runs said: job ids recorded; a refusal fails the
    /// dispatch (retried by policy); Slurm unreachable leaves the intent waiting, marked
    /// `not_submitted` when the request certainly never reached the controller.
    fn submitted(&mut self, results: Vec<(String, io::Attempt)>) {
        let mut updates = Vec::new();
        let mut any = false;
        for (id, attempt) in results {
            self.submitting.remove(&id);
            if !self.jobs.contains_key(&id) {
                continue;
            }
            let outcome = match attempt {
                io::Attempt::NotTried => {
                    let reason = self.unreachable_reason();
                    updates.extend(self.with_reason(&id, reason, true));
                    continue;
                }
                io::Attempt::Ran(outcome) => outcome,
            };
            let never_reached = match &outcome {
                Ok(ran) => parse::never_reached(&ran.stderr),
                Err(RunError::Spawn(_)) => true,
                Err(RunError::TimedOut { .. }) => false,
            };
            let sbatch = vec![self.config.slurm.sbatch.clone()];
            match self.reached(&sbatch, outcome) {
                Ok(ran) if ran.success => {
                    self.mark_up();
                    match parse::sbatch_parsable(&ran.stdout) {
                        Ok(job_id) => {
                            tracing::info!("dispatch {id} submitted as Slurm job {job_id}");
                            any = true;
                            let state = slurm_state(&self.jobs[&id].record.state, |j, js, r, _, ns, _| {
                                *j = Some(job_id.0);
                                *js = Some("PENDING".into());
                                *r = None;
                                *ns = false;
                            });
                            updates.extend(state.map(|s| (id.clone(), s)));
                        }
                        // A job may exist: the intent stays, and the next squeue finds it by name.
                        Err(e) => tracing::error!("dispatch {id}: {e}; looking for its job by name"),
                    }
                }
                Ok(ran) => {
                    let why = format!("sbatch refused the job: {}", slurm::preview(ran.stderr.trim()));
                    tracing::error!("Slurm refused dispatch {id}: {why}");
                    updates.push((id, self.refused(why)));
                }
                Err(_) => {
                    if !never_reached && let Some(job) = self.jobs.get_mut(&id) {
                        // The request may have reached a slow controller: not submitted again
                        // before it had as long again to act on it.
                        job.settle_until = Some(Instant::now() + io::COMMAND_DEADLINE);
                    }
                    let reason = self.unreachable_reason();
                    updates.extend(self.with_reason(&id, reason, never_reached));
                }
            }
        }
        self.write(updates);
        if any {
            self.quick = QUICK_POLL;
            self.poll_soon();
        }
    }

    /// The argv and batch script of one dispatch's `sbatch`; Err(why) when it cannot be
    /// submitted (the dispatch fails, retried by policy).
    fn prepare(&self, rec: &DispatchRecord, types: Option<&WorkerTypes>) -> std::result::Result<io::Prepared, String> {
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
                return Err(format!("cannot create {}: {e}", d.display()));
            }
        }
        let mut env = crate::domain::task::processes::task_env(&self.home, rec);
        env.push((crate::domain::task::processes::EXECUTOR_VAR.to_string(), "slurm".to_string()));
        let end_record = self.home.slurm_end_record(id).display().to_string();
        let script = script::BatchScript { dispatch_id: id, argv: &rec.command, env: &env, end_record: &end_record }
            .render()
            .map_err(|e| format!("cannot write the batch script: {e}"))?;
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
        Ok(io::Prepared { id: id.clone(), argv, script })
    }

    /// The record's Slurm state with `reason` (and `not_submitted` set when `certain`) if that
    /// changes it.
    fn with_reason(&self, id: &str, reason: String, certain: bool) -> Option<(String, DispatchState)> {
        let job = self.jobs.get(id)?;
        let new = slurm_state(&job.record.state, |job_id, _, r, _, ns, _| {
            *r = Some(reason);
            if certain && job_id.is_none() {
                *ns = true;
            }
        })?;
        (new != job.record.state).then(|| (id.to_string(), new))
    }

    /// Hands one `squeue` for every job followed to the command thread.
    fn request_poll(&mut self) {
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
        if self.polls.send(io::Request::Poll(command::squeue(&self.config.slurm, &names))).is_ok() {
            self.polling = true;
        }
    }

    /// What the `squeue` said: each dispatch moved on from it.
    fn polled(&mut self, outcome: std::result::Result<Ran, RunError>) {
        self.polling = false;
        let squeue = vec![self.config.slurm.squeue.clone()];
        let ran = match self.reached(&squeue, outcome) {
            Ok(ran) if ran.success => ran,
            Ok(ran) => {
                tracing::warn!("squeue failed: {}", slurm::preview(ran.stderr.trim()));
                return;
            }
            Err(_) => {
                let reason = self.unreachable_reason();
                let ids: Vec<String> = self.jobs.keys().filter(|id| !self.submitting.contains(*id)).cloned().collect();
                let updates = ids.iter().filter_map(|id| self.with_reason(id, reason.clone(), false)).collect();
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
            .filter(|(id, j)| matches!(j.record.state, DispatchState::Slurm { .. }) && !self.submitting.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut updates = Vec::new();
        let mut resubmit = Vec::new();
        let mut expecting = false;
        for id in ids {
            let known = self.jobs[&id].job_id();
            let jobs = by_name.get(id.as_str()).cloned().unwrap_or_default();
            let found =
                jobs.iter().find(|j| Some(j.job_id) == known).or_else(|| jobs.iter().min_by_key(|j| j.job_id)).copied();
            // More than one job for a dispatch (a submission whose answer never came, made by a
            // slow controller after all): only the one followed may run.
            for extra in jobs.iter().filter(|j| Some(j.job_id) != found.map(|f| f.job_id)) {
                if state::JobState::phase(&extra.state) != state::Phase::Queued
                    && state::JobState::phase(&extra.state) != state::Phase::Running
                {
                    continue;
                }
                tracing::warn!("dispatch {id}: cancelling Slurm job {} (a second job of the same name)", extra.job_id);
                let _ = self.slurm(&command::scancel(&self.config.slurm, extra.job_id, None));
            }
            let seen = match (found, known) {
                (Some(j), _) => Seen { job_id: j.job_id, state: j.state.clone(), reason: j.reason.clone() },
                // Intent recorded, no job of that name in Slurm: sbatch never made one — unless
                // the job ran, ended and was purged (MinJobAge) while nobody looked, or a sbatch
                // of a killed daemon or a timed-out one may still make it.
                (None, None) => {
                    let job = &self.jobs[&id];
                    if job.settle_until.is_some_and(|t| Instant::now() < t) {
                        expecting = true;
                        continue;
                    }
                    let (submitted, not_submitted) = match &job.record.state {
                        DispatchState::Slurm { submitted_at, not_submitted, .. } => {
                            (since(*submitted_at), *not_submitted)
                        }
                        _ => (Duration::ZERO, false),
                    };
                    if not_submitted {
                        resubmit.push(id);
                    } else if self.end_record(&id).is_some() || submitted > self.min_job_age() {
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
            if self.jobs[&id].end_seen && !matches!(seen.state.phase(), state::Phase::Ended(_)) {
                // The job's command ended: Slurm's end follows within moments.
                expecting = true;
            }
            updates.extend(self.progress(&id, seen));
        }
        self.write(updates);
        if expecting {
            self.quick = (self.quick * 2).min(self.poll_every);
            self.poll_soon();
        }
        if !resubmit.is_empty() {
            self.resubmit(resubmit);
        }
    }

    /// Submits again dispatches whose intent Slurm has no job for: a fresh intent first
    /// (durable), then `sbatch`.
    fn resubmit(&mut self, ids: Vec<String>) {
        if self.down.is_some() {
            return;
        }
        let now = clock::now();
        let (written, durable) = self.write(ids.iter().map(|id| (id.clone(), intent(now))).collect());
        if !durable {
            tracing::error!("the intents to submit again are not durable (see above): nothing is submitted");
            return;
        }
        self.submit(ids.into_iter().filter(|id| written.contains(id)).collect());
    }

    /// `scontrol show job`: Some(Some(info)), Some(None) when Slurm no longer knows the job,
    /// None when it cannot be asked.
    fn show_job(&mut self, job_id: JobId) -> Option<Option<parse::JobInfo>> {
        let ran = self.slurm(&command::scontrol_show_job(&self.config.slurm, job_id)).ok()?;
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

    /// Why the dispatch is being stopped, if it is (this daemon's stop, or one recorded).
    fn stop_reason(&self, id: &str) -> Option<SlurmStop> {
        let job = self.jobs.get(id)?;
        job.stop.as_ref().map(|s| s.reason).or_else(|| job.stopping())
    }

    /// The end of a job Slurm has purged: from its end record, else `lost`.
    fn purged_end(&self, id: &str, job_id: Option<JobId>) -> DispatchState {
        let record = self.end_record(id);
        let from_record = record.as_ref().map(|r| {
            state::dispatch_end(
                &state::JobState::Other("PURGED".into()),
                "",
                None,
                Some(r),
                clock::now(),
                self.duration(id),
            )
        });
        match (from_record, self.stop_reason(id)) {
            (Some(ended @ DispatchState::Completed { .. }), _) => ended,
            (_, Some(reason)) => self.stopped_end(reason, id),
            (Some(ended), None) => ended,
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
        if let Ok(ran) = self.slurm(&argv)
            && ran.success
            && let Some(age) = parse_min_job_age(&ran.stdout)
        {
            self.min_job_age = Some(age);
        }
    }

    fn stopped_end(&self, reason: SlurmStop, id: &str) -> DispatchState {
        let (ended_at, duration_s) = (clock::now(), self.duration(id));
        match reason {
            SlurmStop::Cancel => DispatchState::Cancelled(SignalledEnd { ended_at, signal: None, duration_s }),
            SlurmStop::Timeout => DispatchState::Timeout(SignalledEnd { ended_at, signal: None, duration_s }),
            SlurmStop::Zombie => DispatchState::Zombie {
                ended_at,
                reason: self
                    .jobs
                    .get(id)
                    .and_then(|j| j.suspect.as_ref().map(|(_, r)| r.clone()))
                    .unwrap_or_else(|| "its heartbeat went stale; its Slurm job was cancelled".into()),
            },
        }
    }

    /// What a job's state means for its record: the new state, if it changed.
    fn progress(&mut self, id: &str, seen: Seen) -> Option<(String, DispatchState)> {
        let job = self.jobs.get(id)?;
        let DispatchState::Slurm { job_id, started_at, .. } = job.record.state.clone() else {
            return None;
        };
        if job_id.is_none() {
            tracing::info!("dispatch {id}: adopted Slurm job {} found by its name", seen.job_id);
        }
        let phase = seen.state.phase();
        // Requeued by Slurm (an operator's `scontrol requeue`, a preemption that requeues, a node
        // failure): the job would run again — a second run Cortex did not decide. It is
        // cancelled, and the dispatch ends through the retry policy like any failure.
        let requeued = matches!(seen.state, state::JobState::Requeued | state::JobState::RequeueHold)
            || (phase == state::Phase::Queued && started_at.is_some());
        if requeued && self.stop_reason(id).is_none() {
            return self.end_requeued(id, &seen);
        }
        match phase {
            state::Phase::Queued | state::Phase::Running => {
                let running = phase == state::Phase::Running;
                let new = slurm_state(&job.record.state, |j, js, r, st, ns, _| {
                    *j = Some(seen.job_id.0);
                    *js = Some(seen.state.as_str().to_string());
                    *r = (!running).then(|| state::waiting_text(&seen.state, &seen.reason));
                    if running {
                        *st = st.or_else(|| Some(clock::now()));
                    }
                    *ns = false;
                })?;
                (new != job.record.state).then(|| (id.to_string(), new))
            }
            state::Phase::Ended(_) => {
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
                // A job that completed (its command's own exit 0) stays completed whatever stop
                // was asked meanwhile, as a local dispatch whose exit the worker saw first.
                Some(match (ended, self.stop_reason(id)) {
                    (ended @ DispatchState::Completed { .. }, _) => (id.to_string(), ended),
                    (_, Some(reason)) => (id.to_string(), self.stopped_end(reason, id)),
                    (ended, None) => (id.to_string(), ended),
                })
            }
        }
    }

    /// A requeued job: cancelled in Slurm (so it cannot run again), then the dispatch ends
    /// `failed`; kept as it is while the cancel cannot go through.
    fn end_requeued(&mut self, id: &str, seen: &Seen) -> Option<(String, DispatchState)> {
        tracing::warn!(
            "Slurm job {} of dispatch {id} was requeued ({}); cancelling it",
            seen.job_id,
            seen.state.as_str()
        );
        match self.slurm(&command::scancel(&self.config.slurm, seen.job_id, None)) {
            Ok(ran) if ran.success || ran.stderr.contains("already completing or completed") => {}
            Ok(ran) => {
                tracing::warn!("scancel {}: {}", seen.job_id, slurm::preview(ran.stderr.trim()));
                return None;
            }
            Err(_) => return None,
        }
        let state = match seen.state {
            state::JobState::Requeued | state::JobState::RequeueHold => seen.state.clone(),
            _ => state::JobState::Requeued,
        };
        Some((id.to_string(), state::dispatch_end(&state, &seen.reason, None, None, clock::now(), self.duration(id))))
    }

    /// Asks for a dispatch to stop (cancel or timeout); the signals go out from [`run_timers`].
    /// A job whose command already ended (its end record is written) is not stopped: its own
    /// end is recorded, as the worker records an exit it saw before a cancel.
    fn request_stop(&mut self, id: &str, reason: SlurmStop) {
        let ended = self.end_record(id).is_some();
        if let Some(job) = self.jobs.get_mut(id)
            && job.stop.is_none()
        {
            if ended {
                tracing::info!("Slurm dispatch {id}: {reason:?} asked after its command ended; its end stands");
                return;
            }
            tracing::info!("stopping Slurm dispatch {id}: {reason:?}");
            job.stop = Some(Stop { reason, termed: false, kill_at: Instant::now(), killed: false });
        }
    }

    /// Timeouts due, and the scancels of stops: the stop's reason recorded first, then TERM to
    /// every step of a running job, the grace, then scancel; a queued job is cancelled at once.
    fn run_timers(&mut self) {
        let now = Instant::now();
        for id in crate::daemons::daemon::due(&self.jobs, now, |j| j.deadline.filter(|_| j.stop.is_none())) {
            self.request_stop(&id, SlurmStop::Timeout);
        }
        // A stop of an intent that certainly made no job (Slurm was unreachable): nothing to
        // cancel in Slurm, it ends now.
        let unsent: Vec<(String, DispatchState)> = self
            .jobs
            .iter()
            .filter(|(id, j)| {
                j.stop.is_some()
                    && !self.submitting.contains(*id)
                    && matches!(j.record.state, DispatchState::Slurm { job_id: None, not_submitted: true, .. })
            })
            .map(|(id, j)| (id.clone(), self.stopped_end(j.stop.as_ref().expect("filtered").reason, id)))
            .collect();
        self.write(unsent);
        if self.down.is_some() && now < self.next_poll {
            return;
        }
        // The reason first, durably: a restart after the scancel still ends it so.
        let unrecorded: Vec<(String, DispatchState)> = self
            .jobs
            .iter()
            .filter_map(|(id, job)| {
                let stop = job.stop.as_ref()?;
                job.job_id()?;
                if job.stopping().is_some() {
                    return None;
                }
                slurm_state(&job.record.state, |_, _, _, _, _, s| *s = Some(stop.reason)).map(|st| (id.clone(), st))
            })
            .collect();
        if !unrecorded.is_empty() && !self.write(unrecorded).1 {
            tracing::error!("cannot record why Slurm jobs stop (see above); their scancel waits");
            return;
        }
        let mut acts = Vec::new();
        for (id, job) in &self.jobs {
            let (Some(stop), Some(job_id)) = (&job.stop, job.job_id()) else { continue };
            if job.stopping().is_none() {
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
            let ok = match self.slurm(&command::scancel(&self.config.slurm, job_id, signal)) {
                Ok(ran) => {
                    if !ran.success {
                        tracing::warn!("scancel {job_id}: {}", slurm::preview(ran.stderr.trim()));
                    }
                    true
                }
                Err(_) => false,
            };
            if ok && !kill && crate::daemons::daemon::test_hook(TEST_CRASH_AFTER_SCANCEL, "slurm") {
                tracing::warn!("test hook: exiting after the first scancel of {id}");
                std::process::exit(3);
            }
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
            if ok {
                self.poll_soon();
            }
        }
    }

    /// Writes new states into the records (one group commit under `worker-specs`); ended ones
    /// move to their buckets. Returns the ids written, and whether all of it is durable (the
    /// directories' fsync): an intent that is not must not be followed by `sbatch`.
    fn write(&mut self, updates: Vec<(String, DispatchState)>) -> (HashSet<String>, bool) {
        let mut written = HashSet::new();
        if updates.is_empty() {
            return (written, true);
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
                return (written, false);
            }
        };
        let mut durable = true;
        if let Err(e) = sync_dirs(&dirs) {
            tracing::error!("cannot make the dispatch records durable: {e}");
            durable = false;
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
                Err(NotWritten::Failed(e)) => {
                    durable = false;
                    tracing::error!("cannot record Slurm dispatch {id} (will retry): {e}")
                }
            }
        }
        (written, durable)
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

/// Test hook: the directories' fsync after a write of dispatch records fails (as on a disk that
/// reports an I/O error), for the daemon named (`slurm`), while the file it names exists.
pub const TEST_FAIL_DIR_SYNC: &str = "CORTEX_TEST_SLURM_FAIL_DIR_SYNC";

fn sync_dirs(dirs: &[std::path::PathBuf]) -> Result<()> {
    if let Ok(flag) = std::env::var(TEST_FAIL_DIR_SYNC)
        && std::path::Path::new(&flag).exists()
    {
        return Err(crate::base::error::Error::other(format!(
            "fsync of {dirs:?} failed (test hook {TEST_FAIL_DIR_SYNC})"
        )));
    }
    crate::store::atomic::fsync_dirs(dirs)
}

/// The Slurm daemon's loop (`cortex-slurm`).
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    // A sbatch of a killed predecessor could still submit after this daemon found no job by
    // name: each is stopped (and gone) before anything is looked up.
    match io::stop_leftover_submitters(&ctx.home, Duration::from_secs(10)) {
        Ok(0) => {}
        Ok(n) => tracing::warn!("stopped {n} sbatch process(es) left running by a previous cortex-slurm"),
        Err(e) => return Err(crate::base::error::Error::other(e)),
    }
    ctx.watch(&[ctx.home.worker_specs(SpecBucket::Active)])?;
    // End records: a job's end is read as soon as its command wrote it.
    ctx.watch_flat(&[ctx.home.slurm_dir()])?;
    let mut daemon = SlurmDaemon::new(ctx.store.clone(), ctx.config.clone(), Some(ctx.waker()))?;
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
