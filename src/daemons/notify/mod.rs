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
    /// Sink → the key being sent to it now.
    in_flight: BTreeMap<String, String>,
    results_tx: Sender<(String, Outcome)>,
    results_rx: Receiver<(String, Outcome)>,
    waker: Option<Sender<Wake>>,
    /// The state file needs a write; `durable_dirty`: a durable one (the cursor or a rule moved).
    dirty: bool,
    durable_dirty: bool,
    finished_since_prune: usize,
}

impl Notifier {
    /// Loads the state and the pending deliveries of the outbox.
    pub fn open(store: Store, clock: Arc<dyn Clock>, waker: Option<Sender<Wake>>) -> Notifier {
        let home = store.home().clone();
        let state = NotifyState::load(&home).unwrap_or_else(|e| {
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
            results_tx,
            results_rx,
            waker,
            dirty: false,
            durable_dirty: false,
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
                self.config = Some(Arc::new(c));
                self.config_error = None;
            }
            Ok(None) => {
                if self.config.take().is_some() {
                    tracing::info!("notifications.json removed: notifications are off");
                }
                self.config_error = None;
                // Configured again later, it starts from the end of the log then.
                if self.state.cursor.take().is_some() {
                    self.dirty = true;
                    self.durable_dirty = true;
                }
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
        while let Ok((key, outcome)) = self.results_rx.try_recv() {
            self.finish(&key, outcome, now);
        }
        if let Some(cfg) = self.config.clone() {
            let home = self.store.home().clone();
            let mut cursor = self.state.cursor.clone().unwrap_or_else(|| EventCursor::at_end(&home));
            let before = self.state.cursor.clone();
            let events = follow::read_new_events(&home, &mut cursor)?;
            if before.as_ref() != Some(&cursor) {
                self.state.cursor = Some(cursor);
                self.dirty = true;
                self.durable_dirty = true;
            }
            let mut notes = Vec::new();
            for ev in &events {
                notes.extend(self.state.rules.observe(&cfg.0, ev, now));
            }
            notes.extend(self.state.rules.due(&cfg.0, now));
            if !events.is_empty() || !notes.is_empty() {
                self.dirty = true;
                self.durable_dirty = true;
            }
            self.enqueue(&cfg.0, &notes)?;
        }
        if self.dirty {
            self.state.pending = self.pending.len();
            self.state.save(self.store.home(), now, self.durable_dirty)?;
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
            self.in_flight.insert(d.sink.clone(), key.clone());
            let (tx, waker, cfg, body, home) =
                (self.results_tx.clone(), self.waker.clone(), cfg.clone(), d.body.clone(), self.store.home().clone());
            let timeout = cfg.0.timeout(&sink);
            let spawned = std::thread::Builder::new().name(format!("notify-{}", d.sink)).spawn(move || {
                let outcome = crate::ops::notify::send(&home, &sink, &cfg.1, &body, timeout);
                let _ = tx.send((key, outcome));
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
        if self.in_flight.get(&d.sink).is_some_and(|k| k == key) {
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

    /// When the next send or digest is due (sends in flight wake the loop themselves).
    fn next_due(&self) -> Option<Timestamp> {
        self.config.as_ref()?;
        let sends = self
            .pending
            .values()
            .filter(|d| !self.in_flight.contains_key(&d.sink))
            .map(|d| d.next_attempt_at.max(d.send_after));
        sends.chain(self.state.rules.next_due()).min()
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
}
