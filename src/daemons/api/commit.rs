//! The scheduler's group commit in the api daemon: one committer thread owns a queue of pending
//! pause/resume requests. It takes the first (blocking), drains whatever else is already waiting,
//! applies them all as one batch ([`scheduler_state::apply`]: one lock, one read, one durable write),
//! and answers each request with its own result. Under a hundred concurrent clients this costs
//! one write with its two fsyncs per batch instead of one per request, and no handler thread
//! waits meanwhile (the HTTP side answers through [`super::http::Responder`]).

use crate::base::error::{Error, Result};
use crate::domain::scheduler_state::{self, Request, Transition};
use crate::store::Store;
use std::sync::mpsc::{self, Receiver, Sender};

/// Most requests in one batch (the rest wait for the next one, a write later).
const MAX_BATCH: usize = 4096;

/// What to do with a request's result (called on the committer thread; must not block).
type Answer = Box<dyn FnOnce(Result<Transition>) + Send>;

struct Pending {
    request: Request,
    answer: Answer,
}

/// A handle on the committer thread's queue. Clones share the thread, which ends when the last
/// handle is dropped (after answering what was queued).
#[derive(Clone)]
pub(crate) struct Committer {
    tx: Sender<Pending>,
}

impl Committer {
    /// Starts the committer thread for `store`.
    pub(crate) fn start(store: Store) -> std::io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new().name("scheduler-commit".into()).spawn(move || run(&store, &rx))?;
        Ok(Committer { tx })
    }

    /// Queues `request`; `answer` gets its result once the batch holding it is durable (or has
    /// failed as a whole).
    pub(crate) fn submit(&self, request: Request, answer: impl FnOnce(Result<Transition>) + Send + 'static) {
        if let Err(mpsc::SendError(p)) = self.tx.send(Pending { request, answer: Box::new(answer) }) {
            (p.answer)(Err(Error::other("the scheduler committer has stopped; retry, or use `cortex scheduler`")));
        }
    }
}

fn run(store: &Store, rx: &Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (requests, answers): (Vec<Request>, Vec<Answer>) = batch.into_iter().map(|p| (p.request, p.answer)).unzip();
        let results = scheduler_state::apply(store, &requests);
        tracing::debug!(requests = requests.len(), "scheduler batch committed");
        for (answer, result) in answers.into_iter().zip(results) {
            answer(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduler_state::Actor;
    use std::sync::{Arc, Barrier};

    #[test]
    fn concurrent_submissions_are_each_answered_and_batched() {
        let (_dir, store) = crate::store::fresh_store();
        let committer = Committer::start(store.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        let n = 64;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (committer, tx, barrier) = (committer.clone(), tx.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let actor = Actor { who: format!("c{i}"), from: "test".into() };
                    let request =
                        if i % 2 == 0 { Request::Pause { actor, reason: None } } else { Request::Resume { actor } };
                    barrier.wait();
                    committer.submit(request, move |r| tx.send((i, r.map(|t| t.message))).unwrap());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(tx);
        let answers: Vec<(usize, Result<String>)> = rx.iter().collect();
        assert_eq!(answers.len(), n);
        for (i, r) in answers {
            let m = r.unwrap();
            let expected: &[&str] = if i % 2 == 0 {
                &["Scheduler paused", "Scheduler already paused"]
            } else {
                &["Scheduler resumed", "Scheduler already running"]
            };
            assert!(expected.contains(&m.as_str()), "request {i}: {m}");
        }
    }
}
