//! The notify daemon: follows the event log from its persisted offset (the library's follower,
//! across rotation and restarts), matches each event against the rules of
//! `coordination/config/notifications.json`, writes each notification to the outbox (one file per
//! sink) before sending it, and sends each with retries (exponential backoff with jitter) until
//! its sink acknowledges it or its deadline passes, which becomes a `notification_failed` event.
//! Sending runs on one thread per sink at a time, so a slow receiver delays only its own sink;
//! the loop waits for a result, a change of the event log or the config, or its next deadline.
//!
//! Without `notifications.json` (a default home) it watches only the config directory and does
//! nothing else: it costs nothing until notifications are configured.
//!
//! Delivery is at-least-once: a notification is acknowledged in its outbox file only after its
//! sink answered; killed in between, the daemon sends it again on start, with the same
//! idempotency key (see [`crate::domain::notify::outbox`]).

use crate::base::clock::{Clock, SystemClock, Timestamp};
use crate::base::error::Result;
use crate::base::wake::Wake;
use crate::daemons::daemon::DaemonContext;
use crate::domain::notify::config::NotifyConfig;
use crate::domain::notify::outbox::{self, Delivery, DeliveryState};
use crate::domain::notify::rules::Notification;
use crate::domain::notify::secrets::Secrets;
use crate::domain::notify::state::{FailedDelivery, NotifyState};
use crate::ops::notify::Outcome;
use crate::store::Store;
use crate::store::events::follow::{self, EventCursor};
use crate::store::events::{EventKind, Severity};
use crate::store::files::NOTIFICATIONS;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// The message a sending thread wakes the loop with.
const RESULT: &str = "notify-result";

/// Finished deliveries between two prunes of the outbox.
const PRUNE_EVERY: usize = 100;

/// How long past its timeout an attempt may run before the watchdog counts it failed and frees
/// its sink (a sender stuck in a library that ignores its timeout, e.g. a server dripping bytes).
const WATCHDOG_GRACE: chrono::Duration = chrono::Duration::seconds(30);

/// An attempt being sent: its delivery, its number (a late result of an attempt the watchdog
/// gave up on is recognised and ignored), and when the watchdog gives up on it.
#[derive(Debug, Clone)]
struct Attempt {
    key: String,
    id: u64,
    give_up_at: Timestamp,
}

/// Runs one send, turning a panic into a failed attempt (the sink is freed either way).
fn guarded(send: impl FnOnce() -> Outcome) -> Outcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(send)).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Outcome { acknowledged: false, answer: format!("the sender panicked: {why}") }
    })
}

/// The daemon's state and the decisions over it; [`run_loop`] drives it.
pub struct Notifier {
    store: Store,
    clock: Arc<dyn Clock>,
    config: Option<Arc<(NotifyConfig, Secrets)>>,
    /// The last configuration problem reported (reported once, again when it changes).
    config_error: Option<String>,
    state: NotifyState,
    /// Deliveries not acknowledged yet, by key.
    pending: BTreeMap<String, Delivery>,
    /// Sink → the attempt being sent to it now.
    in_flight: BTreeMap<String, Attempt>,
    /// The number of the last attempt started.
    attempts_started: u64,
    results_tx: Sender<(u64, Outcome)>,
    results_rx: Receiver<(u64, Outcome)>,
    waker: Option<Sender<Wake>>,
    /// The state file needs a write; `durable_dirty`: a durable one (the cursor or a rule moved).
    dirty: bool,
    durable_dirty: bool,
    /// Durable writes of the state file so far (each one an fsync).
    durable_saves: u64,
    finished_since_prune: usize,
}

impl Notifier {
    /// Loads the state and the pending deliveries of the outbox.
    pub fn open(store: Store, clock: Arc<dyn Clock>, waker: Option<Sender<Wake>>) -> Notifier {
        let home = store.home().clone();
        let state = NotifyState::load_or_quarantine(&store).unwrap_or_else(|e| {
            tracing::warn!("{e}; starting from the end of the event log");
            NotifyState::default()
        });
        let (all, bad) = outbox::list(&home);
        for b in bad {
            tracing::warn!("outbox file skipped: {b}");
        }
        outbox::prune(&home, &all);
        let pending =
            all.into_iter().filter(|d| d.state == DeliveryState::Pending).map(|d| (d.key.clone(), d)).collect();
        let (results_tx, results_rx) = mpsc::channel();
        Notifier {
            store,
            clock,
            config: None,
            config_error: None,
            state,
            pending,
            in_flight: BTreeMap::new(),
            attempts_started: 0,
            results_tx,
            results_rx,
            waker,
            dirty: false,
            durable_dirty: false,
            durable_saves: 0,
            finished_since_prune: 0,
        }
    }

    /// True when notifications are configured.
    pub fn configured(&self) -> bool {
        self.config.is_some()
    }

    /// Deliveries not acknowledged yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// (Re)loads `notifications.json` and its secrets. A bad file keeps the configuration that
    /// was running (alerts keep flowing) and is reported once as `notification_config_invalid`.
    pub fn reload_config(&mut self) {
        match NotifyConfig::load_checked(&self.store) {
            Ok(Some(c)) => {
                if self.config.as_deref() != Some(&c) {
                    tracing::info!(rules = c.0.rules.len(), sinks = c.0.sinks.len(), "notifications configured");
                }
                self.state.rules.retain_configured(&c.0);
                if self.state.cursor.is_none() {
                    // Newly configured: notify about what happens from now on, not about
                    // history. Taken here, before the daemon says it is ready, so an event
                    // emitted right after its start is not skipped.
                    self.state.cursor = Some(EventCursor::at_end(self.store.home()));
                    self.dirty = true;
                    self.durable_dirty = true;
                }
                self.config = Some(Arc::new(c));
                self.config_error = None;
            }
            Ok(None) => {
                if self.config.take().is_some() {
                    tracing::info!("notifications.json removed: notifications are off");
                }
                self.config_error = None;
                // The cursor is kept: an editor that saves by renaming the old file away and
                // writing a new one removes it for a moment, and the events of that moment
                // are matched once the file is back.
            }
            Err(e) => {
                let msg = e.to_string();
                if self.config_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!("{msg}");
                    let _ = self.store.emit(
                        EventKind::NotificationConfigInvalid,
                        Severity::Error,
                        format!(
                            "{msg}; {} (fix it, then `cortex config check`)",
                            if self.config.is_some() {
                                "the previous rules stay in force"
                            } else {
                                "no notification is sent"
                            }
                        ),
                        serde_json::json!({"file": format!("coordination/{}", NOTIFICATIONS.rel), "error": msg}),
                    );
                    self.config_error = Some(msg);
                }
            }
        }
    }

    /// One pass: results of sends, new events, closed digests, new outbox files, the state
    /// file, then the sends that are due. Returns the next time something is due.
    pub fn pass(&mut self) -> Result<Option<Timestamp>> {
        let now = self.clock.now();
        while let Ok((id, outcome)) = self.results_rx.try_recv() {
            // A result the watchdog already gave up on is late: that attempt was counted.
            let Some(key) = self.in_flight.values().find(|a| a.id == id).map(|a| a.key.clone()) else { continue };
            self.finish(&key, outcome, now);
        }
        let stuck: Vec<Attempt> = self.in_flight.values().filter(|a| a.give_up_at <= now).cloned().collect();
        for a in stuck {
            tracing::error!(key = %a.key, "a send gave no result within its timeout and grace; counted failed");
            let outcome = Outcome {
                acknowledged: false,
                answer: format!(
                    "no result within the timeout and {} s of grace (the sender is stuck)",
                    WATCHDOG_GRACE.num_seconds()
                ),
            };
            self.finish(&a.key, outcome, now);
        }
        if let Some(cfg) = self.config.clone() {
            let home = self.store.home().clone();
            if self.state.cursor.is_none() {
                // Newly configured: notify about what happens from now on, not about history.
                self.state.cursor = Some(EventCursor::at_end(&home));
                self.dirty = true;
                self.durable_dirty = true;
            }
            let mut cursor = self.state.cursor.clone().unwrap_or_default();
            let events = follow::read_new_events(&home, &mut cursor)?;
            // Matching works on a copy of the rules' state: the cursor and the rules move only
            // once the outbox files of what they made are durable. A failed write (a full disk)
            // leaves both where they were, so the same events are matched again on the next
            // pass (the keys make a notification made twice one delivery).
            let mut rules = self.state.rules.clone();
            let mut notes = Vec::new();
            for ev in &events {
                notes.extend(rules.observe(&cfg.0, ev, now));
            }
            notes.extend(rules.due(&cfg.0, now));
            self.enqueue(&cfg.0, &notes)?;
            let rules_moved = rules != self.state.rules;
            let cursor_moved = self.state.cursor.as_ref() != Some(&cursor);
            if rules_moved || cursor_moved {
                self.state.cursor = Some(cursor);
                self.state.rules = rules;
                self.dirty = true;
            }
            // A cursor alone need not reach the disk: lost, its events are read again and
            // their keys recognised. What was made, or a throttle or digest that moved, must.
            if !notes.is_empty() || rules_moved {
                self.durable_dirty = true;
            }
        }
        if self.dirty {
            self.state.pending = self.pending.len();
            self.state.save(self.store.home(), now, self.durable_dirty)?;
            if self.durable_dirty {
                self.durable_saves += 1;
                tracing::debug!(durable_saves = self.durable_saves, "state saved durably");
            }
            self.dirty = false;
            self.durable_dirty = false;
        }
        self.start_due(now);
        Ok(self.next_due())
    }

    /// Writes the outbox files of `notes`, one per notification and sink, unless they exist
    /// (made before a crash), all durable before this returns.
    fn enqueue(&mut self, cfg: &NotifyConfig, notes: &[Notification]) -> Result<()> {
        let home = self.store.home().clone();
        let mut new: Vec<Delivery> = Vec::new();
        for (n, sink_name) in notes.iter().flat_map(|n| n.sinks.iter().map(move |s| (n, s))) {
            let key = n.key(sink_name);
            if self.pending.contains_key(&key) || new.iter().any(|d| d.key == key) || outbox::exists(&home, &key) {
                continue;
            }
            let Some(sink) = cfg.sinks.get(sink_name) else { continue };
            let deadline = chrono::Duration::from_std(cfg.deadline(sink)).unwrap_or(chrono::Duration::hours(1));
            let d = Delivery {
                key: key.clone(),
                rule: n.rule.clone(),
                sink: sink_name.clone(),
                state: DeliveryState::Pending,
                created_at: n.created_at,
                send_after: n.send_after,
                deadline_at: n.send_after + deadline,
                next_attempt_at: n.send_after,
                attempts: 0,
                last_attempt_at: None,
                last_answer: None,
                last_error: None,
                finished_at: None,
                body: crate::domain::notify::body::body(n, sink_name),
            };
            new.push(d);
        }
        outbox::write_new(&home, &new)?;
        self.pending.extend(new.into_iter().map(|d| (d.key.clone(), d)));
        Ok(())
    }

    /// Starts a send for each sink that has a due delivery and none in flight.
    fn start_due(&mut self, now: Timestamp) {
        let Some(cfg) = self.config.clone() else { return };
        let due: Vec<String> = self
            .pending
            .values()
            .filter(|d| d.next_attempt_at <= now && d.send_after <= now && !self.in_flight.contains_key(&d.sink))
            .map(|d| d.key.clone())
            .collect();
        for key in due {
            let Some(d) = self.pending.get(&key) else { continue };
            if self.in_flight.contains_key(&d.sink) {
                continue;
            }
            let Some(sink) = cfg.0.sinks.get(&d.sink).cloned() else {
                let outcome = Outcome {
                    acknowledged: false,
                    answer: format!("sink {:?} is no longer in notifications.json", d.sink),
                };
                let mut d = d.clone();
                d.deadline_at = now;
                self.pending.insert(key.clone(), d);
                self.finish(&key, outcome, now);
                continue;
            };
            let timeout = cfg.0.timeout(&sink);
            self.attempts_started += 1;
            let id = self.attempts_started;
            let give_up_at =
                now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::hours(1)) + WATCHDOG_GRACE;
            self.in_flight.insert(d.sink.clone(), Attempt { key: key.clone(), id, give_up_at });
            let (tx, waker, cfg, body, home) =
                (self.results_tx.clone(), self.waker.clone(), cfg.clone(), d.body.clone(), self.store.home().clone());
            let spawned = std::thread::Builder::new().name(format!("notify-{}", d.sink)).spawn(move || {
                let outcome = guarded(|| crate::ops::notify::send(&home, &sink, &cfg.1, &body, timeout));
                let _ = tx.send((id, outcome));
                if let Some(w) = waker {
                    let _ = w.send(Wake::Message(RESULT.into()));
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start a sending thread: {e}");
                let sink = d.sink.clone();
                self.in_flight.remove(&sink);
            }
        }
    }

    /// Records the outcome of one attempt.
    fn finish(&mut self, key: &str, outcome: Outcome, now: Timestamp) {
        let Some(mut d) = self.pending.remove(key) else { return };
        if self.in_flight.get(&d.sink).is_some_and(|a| a.key == key) {
            self.in_flight.remove(&d.sink);
        }
        d.attempts += 1;
        d.last_attempt_at = Some(now);
        d.last_answer = Some(outcome.answer.clone());
        let home = self.store.home().clone();
        self.dirty = true;
        if outcome.acknowledged {
            d.state = DeliveryState::Delivered;
            d.finished_at = Some(now);
            d.last_error = None;
            self.state.count(&d.sink, "delivered");
            tracing::info!(key = %d.key, sink = %d.sink, attempts = d.attempts, "notification delivered");
        } else if now >= d.deadline_at {
            d.state = DeliveryState::Failed;
            d.finished_at = Some(now);
            d.last_error = Some(outcome.answer.clone());
            self.state.count(&d.sink, "failed");
            self.state.failed(FailedDelivery {
                key: d.key.clone(),
                sink: d.sink.clone(),
                rule: d.rule.clone(),
                failed_at: now,
                error: outcome.answer.clone(),
            });
            tracing::error!(key = %d.key, sink = %d.sink, attempts = d.attempts, "notification failed: {}", outcome.answer);
            let _ = self.store.emit(
                EventKind::NotificationFailed,
                Severity::Error,
                format!(
                    "notification {} (rule {}) could not be delivered to sink {} after {} attempt(s) by its deadline: {}",
                    d.key,
                    d.rule,
                    d.sink,
                    d.attempts,
                    crate::base::text::safe(&outcome.answer)
                ),
                serde_json::json!({"key": d.key, "rule": d.rule, "sink": d.sink, "attempts": d.attempts,
                    "created_at": crate::base::clock::format_ts(d.created_at),
                    "deadline_at": crate::base::clock::format_ts(d.deadline_at), "error": outcome.answer,
                    "title": d.body.get("title")}),
            );
        } else {
            let (initial, max) =
                self.config.as_ref().map_or((5.0, 300.0), |c| (c.0.backoff_initial_seconds, c.0.backoff_max_seconds));
            let wait = outbox::backoff(initial, max, d.attempts, fastrand::f64());
            let next = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1));
            d.next_attempt_at = next.min(d.deadline_at);
            d.last_error = Some(outcome.answer.clone());
            self.state.count(&d.sink, "retried");
            tracing::warn!(key = %d.key, sink = %d.sink, attempts = d.attempts, "notification not delivered, retrying: {}", outcome.answer);
        }
        if let Err(e) = outbox::update(&home, &d) {
            tracing::error!("cannot record the delivery {}: {e}", d.key);
        }
        if d.state == DeliveryState::Pending {
            self.pending.insert(d.key.clone(), d);
        } else {
            self.finished_since_prune += 1;
            if self.finished_since_prune >= PRUNE_EVERY {
                self.finished_since_prune = 0;
                outbox::prune(&home, &outbox::list(&home).0);
            }
        }
    }

    /// When the next send, digest or watchdog is due (sends in flight wake the loop themselves
    /// when they finish; the watchdog is for those that never do).
    fn next_due(&self) -> Option<Timestamp> {
        self.config.as_ref()?;
        let sends = self
            .pending
            .values()
            .filter(|d| !self.in_flight.contains_key(&d.sink))
            .map(|d| d.next_attempt_at.max(d.send_after));
        let watchdogs = self.in_flight.values().map(|a| a.give_up_at);
        sends.chain(watchdogs).chain(self.state.rules.next_due()).min()
    }

    fn instant(&self, t: Timestamp) -> Instant {
        let ahead = (t - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + ahead
    }
}

/// The notify daemon's loop: a pass on start, on every change of the event log or of
/// `coordination/config/`, when a send finishes, and when a retry or digest is due.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let home = ctx.home.clone();
    let mut n = Notifier::open(ctx.store.clone(), Arc::new(SystemClock), Some(ctx.waker()));
    let config_dir = home.coord("config");
    ctx.watch_flat(std::slice::from_ref(&config_dir))?;
    n.reload_config();
    let events = home.events_file();
    let mut watched_events: Option<(u64, u64)> = None;
    let mut events_watch = None;
    ctx.mark_ready()?;
    loop {
        if n.configured() {
            let current = follow::file_id(&events);
            if current.is_none() {
                crate::store::jsonl::append_raw(&events, b"")?;
            }
            let current = follow::file_id(&events);
            if current != watched_events {
                // A rotated log is a new file: its watch replaces the old file's.
                let watched = match events_watch {
                    Some(id) => ctx.rewatch(id, std::slice::from_ref(&events)).map(|()| id),
                    None => ctx.watch(std::slice::from_ref(&events)),
                };
                match watched {
                    Ok(id) => {
                        events_watch = Some(id);
                        watched_events = current;
                    }
                    Err(e) => tracing::warn!("cannot watch the event log: {e}"),
                }
            }
        }
        let next = match n.pass() {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("notify pass failed: {e}");
                Some(chrono::Utc::now() + chrono::Duration::seconds(5))
            }
        };
        let wake = ctx.wait(next.map(|t| n.instant(t)));
        let pending = ctx.drain_pending();
        if matches!(wake, Wake::Shutdown(_)) || pending.iter().any(|w| matches!(w, Wake::Shutdown(_))) {
            if n.pending() > 0 {
                tracing::info!(
                    pending = n.pending(),
                    "stopping with notifications not acknowledged; sent again on start"
                );
            }
            return Ok(());
        }
        let config_file = home.coord_file(NOTIFICATIONS);
        if std::iter::once(&wake)
            .chain(&pending)
            .any(|w| matches!(w, Wake::Changed(p) if p == &config_file || p == &config_dir))
        {
            n.reload_config();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;

    /// Passes until `done` holds (sends run on their own threads), at most 20 s.
    fn pass_until(n: &mut Notifier, mut done: impl FnMut(&Notifier) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            n.pass().unwrap();
            if done(n) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The deadline and the backoff run on the injected clock: an hour-long deadline passes in
    /// no time, and the retry waits for the clock, not for the wall.
    #[test]
    fn retries_wait_for_the_clock_and_the_deadline_is_the_clocks() {
        let (_dir, store) = crate::store::fresh_store();
        let home = store.home().clone();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = serde_json::json!({"deadline_seconds": 3600, "backoff_initial_seconds": 60,
            "backoff_max_seconds": 600, "timeout_seconds": 5,
            "sinks": {"down": {"type": "webhook", "url": format!("http://127.0.0.1:{closed}/x")}},
            "rules": [{"name": "r", "events": ["daemon_failed"], "sinks": ["down"]}]});
        std::fs::write(home.coord_file(NOTIFICATIONS), config.to_string()).unwrap();
        let t0 = crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(t0);
        let mut n = Notifier::open(store.clone(), Arc::new(clock.clone()), None);
        n.reload_config();
        assert!(n.configured());
        n.pass().unwrap();
        store.emit(EventKind::DaemonFailed, Severity::Critical, "metrics is FAILED", serde_json::Value::Null).unwrap();
        pass_until(&mut n, |n| n.pending.values().any(|d| d.attempts == 1));
        let d = n.pending.values().next().unwrap().clone();
        let wait = d.next_attempt_at - t0;
        assert!(wait >= chrono::Duration::seconds(30) && wait <= chrono::Duration::seconds(60), "{wait}");
        assert_eq!(d.deadline_at, t0 + chrono::Duration::hours(1));
        // Not due until the clock says so: passes send nothing.
        for _ in 0..20 {
            n.pass().unwrap();
        }
        assert_eq!(n.pending.values().next().unwrap().attempts, 1);
        assert!(n.in_flight.is_empty());
        // Past the deadline: one last attempt, then notification_failed.
        clock.set(t0 + chrono::Duration::seconds(3601));
        pass_until(&mut n, |n| n.pending.is_empty());
        let (all, _) = outbox::list(&home);
        assert_eq!((all.len(), all[0].state, all[0].attempts), (1, DeliveryState::Failed, 2));
        let failed = crate::store::events::read_all(&home).unwrap().records;
        assert_eq!(failed.iter().filter(|e| e.event_type == EventKind::NotificationFailed).count(), 1);
        assert_eq!(n.state.counters["down"]["failed"], 1);
        assert_eq!(n.state.counters["down"]["retried"], 1);
    }

    fn configure(home: &crate::store::home::Home, config: &serde_json::Value) {
        std::fs::write(home.coord_file(NOTIFICATIONS), config.to_string()).unwrap();
    }

    /// A home configured with `config` and a notifier on a manual clock that made its first pass.
    fn started(config: &serde_json::Value) -> (tempfile::TempDir, crate::store::Store, Notifier) {
        let (dir, store) = crate::store::fresh_store();
        configure(store.home(), config);
        let clock = ManualClock::new(crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap());
        let mut n = Notifier::open(store.clone(), Arc::new(clock), None);
        n.reload_config();
        n.pass().unwrap();
        (dir, store, n)
    }

    /// One rule on `daemon_failed` to a webhook nobody listens on, with a long backoff: the
    /// outbox keeps what was made.
    fn closed_sink_config() -> serde_json::Value {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        serde_json::json!({"deadline_seconds": 3600, "backoff_initial_seconds": 600,
            "backoff_max_seconds": 600, "timeout_seconds": 1,
            "sinks": {"down": {"type": "webhook", "url": format!("http://127.0.0.1:{closed}/x")}},
            "rules": [{"name": "r", "events": ["daemon_failed"], "sinks": ["down"]}]})
    }

    fn emit_failed(store: &Store) {
        store.emit(EventKind::DaemonFailed, Severity::Critical, "metrics is FAILED", serde_json::Value::Null).unwrap();
    }

    /// The outbox cannot be written (here its directory is a file, as a full disk would make
    /// any write fail): the pass fails and neither the cursor nor the rules move, so once the
    /// outbox can be written the same event becomes its notification.
    #[test]
    fn a_failed_outbox_write_keeps_the_event_for_the_next_pass() {
        let config = closed_sink_config();
        let (_dir, store, mut n) = started(&config);
        let home = store.home().clone();
        std::fs::create_dir_all(home.notify_dir()).unwrap();
        std::fs::write(home.notify_outbox(), b"not a directory").unwrap();
        emit_failed(&store);
        let cursor = n.state.cursor.clone();
        assert!(n.pass().is_err(), "the outbox write fails");
        assert_eq!(n.state.cursor, cursor, "the cursor stays where it was");
        assert!(n.pass().is_err(), "and fails again while the outbox cannot be written");
        assert_eq!(n.pending(), 0);
        std::fs::remove_file(home.notify_outbox()).unwrap();
        n.pass().unwrap();
        let (all, _) = outbox::list(&home);
        assert_eq!(all.len(), 1, "the notification is made once the outbox can be written");
        assert_eq!(all[0].rule, "r");
        assert_eq!(NotifyState::load(&home).unwrap().cursor, n.state.cursor);
    }

    /// Removing notifications.json for a moment (an editor saving by rename) keeps the cursor:
    /// an event emitted while the file was missing is notified once it is back.
    #[test]
    fn an_event_while_the_config_is_briefly_missing_is_notified() {
        let config = closed_sink_config();
        let (_dir, store, mut n) = started(&config);
        let home = store.home().clone();
        std::fs::remove_file(home.coord_file(NOTIFICATIONS)).unwrap();
        n.reload_config();
        assert!(!n.configured());
        n.pass().unwrap();
        emit_failed(&store);
        n.pass().unwrap();
        configure(&home, &config);
        n.reload_config();
        n.pass().unwrap();
        assert_eq!(outbox::list(&home).0.len(), 1, "the event of the gap is notified");
    }

    /// Events no rule matches move the cursor with a volatile write; a notification made is
    /// written durably.
    #[test]
    fn only_what_made_a_notification_is_written_durably() {
        let config = closed_sink_config();
        let (_dir, store, mut n) = started(&config);
        let home = store.home().clone();
        let start = n.durable_saves;
        for _ in 0..5 {
            store.emit(EventKind::DispatchLost, Severity::Error, "unmatched", serde_json::Value::Null).unwrap();
            n.pass().unwrap();
        }
        assert_eq!(n.durable_saves, start, "unmatched events are not fsync'd");
        assert_eq!(NotifyState::load(&home).unwrap().cursor, n.state.cursor, "the cursor was saved");
        emit_failed(&store);
        n.pass().unwrap();
        assert_eq!(n.durable_saves, start + 1);
    }

    /// A send that never returns is given up on at its timeout plus the grace: the attempt is
    /// counted failed and the sink is free for the retry.
    #[test]
    fn the_watchdog_frees_a_sink_whose_send_never_returns() {
        let (_dir, store) = crate::store::fresh_store();
        let home = store.home().clone();
        // Accepts connections (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let config = serde_json::json!({"deadline_seconds": 3600, "backoff_initial_seconds": 60,
            "backoff_max_seconds": 60, "timeout_seconds": 600,
            "sinks": {"silent": {"type": "webhook", "url": format!("http://127.0.0.1:{port}/x")}},
            "rules": [{"name": "r", "events": ["daemon_failed"], "sinks": ["silent"]}]});
        configure(&home, &config);
        let t0 = crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(t0);
        let mut n = Notifier::open(store.clone(), Arc::new(clock.clone()), None);
        n.reload_config();
        n.pass().unwrap();
        emit_failed(&store);
        n.pass().unwrap();
        assert_eq!(n.in_flight.len(), 1, "the send is in flight");
        let give_up = t0 + chrono::Duration::seconds(600) + WATCHDOG_GRACE;
        assert_eq!(n.next_due(), Some(give_up), "the loop wakes for the watchdog");
        clock.set(give_up);
        n.pass().unwrap();
        assert!(n.in_flight.is_empty(), "the sink is free");
        let d = n.pending.values().next().unwrap();
        assert_eq!(d.attempts, 1);
        assert!(d.last_answer.as_deref().unwrap().contains("stuck"), "{:?}", d.last_answer);
        assert_eq!(n.state.counters["silent"]["retried"], 1);
    }

    /// A state file that is not JSON, or has a field of the wrong type, is kept in quarantine
    /// with an event naming the field, and the notifier starts with an empty state (it was
    /// overwritten silently before).
    #[test]
    fn a_bad_state_file_is_quarantined_not_overwritten() {
        for (bad, pointer) in [(&b"{\"cursor\": "[..], ""), (&br#"{"pending": "many"}"#[..], "/pending")] {
            let (_dir, store) = crate::store::fresh_store();
            let home = store.home().clone();
            crate::store::atomic::create_dir_all(&home.notify_dir()).unwrap();
            std::fs::write(home.notify_state(), bad).unwrap();
            let clock = ManualClock::new(crate::base::clock::parse_ts("2026-01-01T00:00:00Z").unwrap());
            let n = Notifier::open(store.clone(), Arc::new(clock), None);
            assert_eq!(n.state, NotifyState::default());
            let kept: Vec<_> = std::fs::read_dir(home.quarantine_dir()).unwrap().flatten().map(|e| e.path()).collect();
            assert_eq!(kept.len(), 1, "{kept:?}");
            assert_eq!(std::fs::read(&kept[0]).unwrap(), bad, "the copy is the bad file");
            let events = crate::store::events::read_all(&home).unwrap();
            let q: Vec<_> = events.records.iter().filter(|e| e.event_type == EventKind::FileQuarantined).collect();
            assert_eq!(q.len(), 1, "one file_quarantined event");
            assert_eq!(q[0].data["pointer"], pointer);
            assert!(q[0].data["file"].as_str().unwrap().ends_with("notify/state.json"), "{:?}", q[0].data);
        }
    }

    #[test]
    fn a_panicking_sender_is_a_failed_attempt() {
        let o = guarded(|| panic!("boom in a TLS library"));
        assert!(!o.acknowledged);
        assert!(o.answer.contains("panicked: boom in a TLS library"), "{}", o.answer);
        assert!(guarded(|| Outcome { acknowledged: true, answer: "200".into() }).acknowledged);
    }
}
