//! A small HTTP/1.1 server built for hostile clients: one reactor thread (`poll`) owns every
//! connection and reads requests without blocking; only a complete request (head and body) is
//! handed to a fixed pool of handler threads (a handler may also defer its answer to another
//! thread: [`Reply::Deferred`], [`Responder`]). So a client that sends slowly (slowloris), sends a
//! huge body, or sends garbage costs a buffer in the reactor, never a thread, and is dropped at
//! its deadline; other clients are served meanwhile. A streamed response ([`Reply::Stream`],
//! Server-Sent Events) leaves the reactor after its head: its socket goes to whoever the handler
//! names (`super::stream`), so an open stream holds no handler thread.
//!
//! Limits: request head 16 KiB, body `max_body` (413 before a byte of it is read), a whole request
//! must arrive within `request_timeout` of its first byte (else 408), idle keep-alive connections
//! close after `request_timeout`, at most `max_connections` open (more get 503), responses are
//! written with a write timeout. `Transfer-Encoding` bodies are refused (411).
//!
//! - [`parse`]: the request parser, pure over bytes (head, headers, limits, body framing).
//! - [`message`]: [`Request`] and [`Response`] as values, and a response's bytes.
//! - this module: the reactor (connections, deadlines), the handler pool and the writes.
//!
//! tiny_http 0.12 was not used: it has no socket timeouts, one unbounded thread per connection,
//! unbounded header lines, and on a declared `Content-Length` it did not read it allocates a
//! buffer of that size (`Content-Length: 999999999999` aborts the process).

pub(crate) mod message;
pub(crate) mod parse;

pub use message::{Request, Response, percent_decode};
pub use parse::{MAX_HEAD_BYTES, Parsed, parse};

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests waiting for a handler thread at most; more get 503.
const QUEUE_CAPACITY: usize = 1024;
/// Slow handlers (cancel waits for a process to end) run on their own threads, at most this many.
const MAX_SLOW_HANDLERS: usize = 64;

/// What a handler returns: a response now, work to run on its own thread (it may block for
/// seconds, e.g. waiting for a cancelled process to end) so it never holds a pool thread, or a
/// response another thread delivers later through a [`Responder`] (e.g. the scheduler's group
/// commit answers a whole batch at once) while no thread waits for it.
pub enum Reply {
    Now(Response),
    Slow(Box<dyn FnOnce() -> Response + Send>),
    /// Called at once, on the handler thread, with the [`Responder`] of this request; it must
    /// not block (hand the responder to whoever will answer).
    Deferred(Box<dyn FnOnce(Responder) + Send>),
    /// A response whose body is a stream (Server-Sent Events): the head is written (without a
    /// length: the body ends when the connection closes), then the socket, non-blocking, is
    /// handed to the function, which must not block (it passes the socket to a thread that
    /// writes every stream); it gets None when the head could not be written. The reactor
    /// forgets the connection, so an open stream costs no handler thread and no place among
    /// `max_connections`; whoever holds it bounds them.
    Stream(Response, Box<dyn FnOnce(Option<TcpStream>) + Send>),
}

/// Delivers the response of a [`Reply::Deferred`] request from any thread. Sending never blocks:
/// the response goes back to the handler pool, which writes it to the client (with the write
/// timeout), so a slow client never holds up the thread that answers. Dropping a responder
/// without sending answers 500.
pub struct Responder {
    job: Option<Job>,
    work: Sender<Work>,
}

impl Responder {
    /// Answers the request.
    pub fn send(mut self, resp: Response) {
        if let Some(job) = self.job.take() {
            // Fails only when the server has stopped; the connection is then closed.
            let _ = self.work.send(Work::Respond(job, resp));
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let _ = self.work.send(Work::Respond(job, Response::error(500, "the request was dropped unanswered")));
        }
    }
}

/// The application behind the server.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Reply;
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub threads: usize,
    pub max_connections: usize,
}

/// A running server. Dropping it (or [`Server::stop`]) stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    reactor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// To tell each handler thread to stop, once the reactor has stopped.
    work: Sender<Work>,
}

impl Server {
    /// Starts serving on a bound listener.
    pub fn start(listener: TcpListener, limits: Limits, handler: Arc<dyn Handler>) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        // Unbounded, because deferred responses must never block whoever sends them; the
        // reactor bounds the requests in it by `queued` instead.
        let (work_tx, work_rx) = mpsc::channel::<Work>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let queued = Arc::new(AtomicUsize::new(0));
        let (back_tx, back_rx) = mpsc::channel::<Option<Conn>>();
        let slow = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for i in 0..limits.threads.max(1) {
            let ctx = WorkerCtx {
                jobs: work_rx.clone(),
                work: work_tx.clone(),
                queued: queued.clone(),
                back: back_tx.clone(),
                wake: wake_tx.try_clone()?,
                handler: handler.clone(),
                write_timeout: limits.request_timeout,
                slow: slow.clone(),
            };
            workers.push(std::thread::Builder::new().name(format!("api-worker-{i}")).spawn(move || ctx.run())?);
        }
        let reactor = Reactor {
            listener,
            wake_rx,
            stop: stop.clone(),
            limits,
            conns: HashMap::new(),
            busy: 0,
            next_id: 0,
            jobs: work_tx.clone(),
            queued,
            back: back_rx,
        };
        let reactor = std::thread::Builder::new().name("api-reactor".into()).spawn(move || reactor.run())?;
        Ok(Server { addr, stop, wake: wake_tx, reactor: Some(reactor), workers, work: work_tx })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes connections, and waits for the threads (handlers in progress
    /// finish first).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = (&self.wake).write(b"s");
        if let Some(reactor) = self.reactor.take() {
            let _ = reactor.join();
        }
        // Requests already queued come first; then each handler thread meets a Stop.
        for _ in 0..self.workers.len() {
            let _ = self.work.send(Work::Stop);
        }
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A client connection and what has been read from it.
struct Conn {
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    /// Set when a request has started arriving: the whole request must be in by then.
    deadline: Instant,
    /// True once some bytes of the current request arrived.
    started: bool,
    /// `100 Continue` already sent for the current request.
    continued: bool,
}

struct Job {
    conn: Conn,
    req: Request,
    keep_alive: bool,
    head_only: bool,
}

/// What the handler threads take from their queue.
enum Work {
    /// A request to handle.
    Request(Job),
    /// A deferred request's response, to write.
    Respond(Job, Response),
    /// The server stops.
    Stop,
}

/// Best-effort write of a small response on a non-blocking socket, then close.
fn reject(mut stream: &TcpStream, resp: &Response) {
    let _ = stream.write(&resp.to_bytes(false, false));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

struct Reactor {
    listener: TcpListener,
    wake_rx: UnixStream,
    stop: Arc<AtomicBool>,
    limits: Limits,
    conns: HashMap<u64, Conn>,
    /// Connections currently with a handler.
    busy: usize,
    next_id: u64,
    jobs: Sender<Work>,
    /// Requests in `jobs` not yet taken by a handler thread (at most [`QUEUE_CAPACITY`]).
    queued: Arc<AtomicUsize>,
    /// Connections coming back from handlers (None: the handler closed it).
    back: Receiver<Option<Conn>>,
}

impl Reactor {
    fn run(mut self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let next = self.conns.values().map(|c| c.deadline).min();
            let timeout = match next {
                Some(d) => PollTimeout::try_from(d.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            let ready: Vec<bool> = {
                let mut fds = Vec::with_capacity(ids.len() + 2);
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN));
                for id in &ids {
                    fds.push(PollFd::new(self.conns[id].stream.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("api poll failed: {e}");
                        return;
                    }
                }
                fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
            };
            if ready[1] {
                let mut sink = [0u8; 64];
                while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
            }
            while let Ok(back) = self.back.try_recv() {
                self.busy = self.busy.saturating_sub(1);
                if let Some(conn) = back {
                    self.returned(conn);
                }
            }
            if ready[0] {
                self.accept();
            }
            for (i, id) in ids.iter().enumerate() {
                if ready[i + 2] {
                    self.readable(*id);
                }
            }
            self.expire();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    if self.conns.len() + self.busy >= self.limits.max_connections {
                        reject(&stream, &Response::error(503, "too many connections; retry shortly"));
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    let deadline = Instant::now() + self.limits.idle_timeout;
                    let conn = Conn { id, stream, peer, buf: Vec::new(), deadline, started: false, continued: false };
                    self.conns.insert(id, conn);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: keep serving the open connections.
                    tracing::warn!("api accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn readable(&mut self, id: u64) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        let cap = MAX_HEAD_BYTES + self.limits.max_body + 4;
        let mut chunk = [0u8; 8192];
        loop {
            match (&conn.stream).read(&mut chunk) {
                Ok(0) => return, // closed by the client
                Ok(n) => {
                    conn.buf.extend_from_slice(&chunk[..n]);
                    if conn.buf.len() > cap {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
        self.process(conn);
    }

    /// A connection back from a handler: serve a pipelined request already buffered, or wait.
    fn returned(&mut self, mut conn: Conn) {
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        conn.started = false;
        conn.continued = false;
        conn.deadline = Instant::now() + self.limits.idle_timeout;
        if conn.buf.is_empty() {
            self.conns.insert(conn.id, conn);
        } else {
            self.process(conn);
        }
    }

    fn process(&mut self, mut conn: Conn) {
        if conn.buf.is_empty() {
            self.conns.insert(conn.id, conn);
            return;
        }
        if !conn.started {
            conn.started = true;
            conn.deadline = Instant::now() + self.limits.request_timeout;
        }
        match parse(&conn.buf, conn.peer, self.limits.max_body) {
            Parsed::Incomplete { expect_continue } => {
                if expect_continue && !conn.continued {
                    conn.continued = true;
                    let _ = (&conn.stream).write(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                self.conns.insert(conn.id, conn);
            }
            Parsed::Bad(resp) => {
                tracing::debug!(peer = %conn.peer, status = resp.status, "api: rejected a malformed request");
                reject(&conn.stream, &resp);
            }
            Parsed::Complete { req, consumed, keep_alive, head_only } => {
                conn.buf.drain(..consumed);
                if self.queued.load(Ordering::SeqCst) >= QUEUE_CAPACITY {
                    reject(&conn.stream, &Response::error(503, "server busy; retry shortly"));
                    return;
                }
                self.queued.fetch_add(1, Ordering::SeqCst);
                match self.jobs.send(Work::Request(Job { conn, req, keep_alive, head_only })) {
                    Ok(()) => self.busy += 1,
                    Err(_) => {
                        self.queued.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self.conns.values().filter(|c| c.deadline <= now).map(|c| c.id).collect();
        for id in expired {
            if let Some(conn) = self.conns.remove(&id) {
                if conn.started {
                    tracing::debug!(peer = %conn.peer, "api: request not complete in time; dropping the client");
                    reject(&conn.stream, &Response::error(408, "request not received in time"));
                } else {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
}

/// Writes a response to a client's (non-blocking) socket within `timeout`. A response almost
/// always fits the socket's buffer: one `write` and done. Only the rest of one that does not is
/// written blocking, with the deadline, so a client that reads slowly holds a thread at most that
/// long.
fn send_response(stream: &TcpStream, bytes: &[u8], timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut first = stream;
    let sent = loop {
        match first.write(bytes) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break 0,
            Err(e) => return Err(e),
        }
    };
    if sent == bytes.len() {
        return Ok(());
    }
    stream.set_nonblocking(false)?;
    write_all_by(stream, &bytes[sent..], deadline)?;
    stream.set_nonblocking(true)
}

/// Writes all of `bytes` before `deadline` (a client reading slowly cannot hold a thread longer).
fn write_all_by(mut stream: &TcpStream, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "client too slow to read the response"));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "connection closed")),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct WorkerCtx {
    jobs: Arc<Mutex<Receiver<Work>>>,
    /// For the responders of deferred requests.
    work: Sender<Work>,
    queued: Arc<AtomicUsize>,
    back: Sender<Option<Conn>>,
    wake: UnixStream,
    handler: Arc<dyn Handler>,
    write_timeout: Duration,
    slow: Arc<AtomicUsize>,
}

impl WorkerCtx {
    fn run(self) {
        loop {
            let work = {
                let rx = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                match rx.recv() {
                    Ok(w) => w,
                    Err(_) => return,
                }
            };
            let job = match work {
                Work::Request(job) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    job
                }
                Work::Respond(job, resp) => {
                    self.finish(job, resp);
                    continue;
                }
                Work::Stop => return,
            };
            let handler = self.handler.clone();
            let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&job.req)))
                .unwrap_or_else(|_| Reply::Now(Response::error(500, "internal error while handling the request")));
            match reply {
                Reply::Now(resp) => self.finish(job, resp),
                Reply::Stream(head, take) => self.stream(job, head, take),
                Reply::Deferred(start) => {
                    let responder = Responder { job: Some(job), work: self.work.clone() };
                    // A panic drops the responder, which answers 500.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || start(responder)));
                }
                Reply::Slow(work) => {
                    if self.slow.fetch_add(1, Ordering::SeqCst) >= MAX_SLOW_HANDLERS {
                        self.slow.fetch_sub(1, Ordering::SeqCst);
                        self.finish(job, Response::error(503, "too many slow requests in progress; retry shortly"));
                        continue;
                    }
                    let me = WorkerCtx {
                        jobs: self.jobs.clone(),
                        work: self.work.clone(),
                        queued: self.queued.clone(),
                        back: self.back.clone(),
                        wake: match self.wake.try_clone() {
                            Ok(w) => w,
                            Err(_) => continue,
                        },
                        handler: self.handler.clone(),
                        write_timeout: self.write_timeout,
                        slow: self.slow.clone(),
                    };
                    let spawned = std::thread::Builder::new().name("api-slow".into()).spawn(move || {
                        let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                            .unwrap_or_else(|_| Response::error(500, "internal error while handling the request"));
                        me.finish(job, resp);
                        me.slow.fetch_sub(1, Ordering::SeqCst);
                    });
                    if spawned.is_err() {
                        self.slow.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// Writes a stream's head and hands its socket over; the reactor hears that the connection
    /// left it.
    fn stream(&self, job: Job, head: Response, take: Box<dyn FnOnce(Option<TcpStream>) + Send>) {
        let Job { conn, req, head_only, .. } = job;
        tracing::debug!(method = %req.method, path = %req.path, status = head.status, "api stream");
        let ok = send_response(&conn.stream, &head.stream_head(), self.write_timeout).is_ok();
        let stream = if ok && !head_only {
            Some(conn.stream)
        } else {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            None
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || take(stream)));
        if self.back.send(None).is_ok() {
            let _ = (&self.wake).write(b"c");
        }
    }

    /// Writes the response; returns the connection to the reactor if it stays open.
    fn finish(&self, job: Job, resp: Response) {
        let Job { conn, req, keep_alive, head_only } = job;
        if resp.status >= 500 {
            tracing::warn!(method = %req.method, path = %req.path, status = resp.status, "api request failed");
        } else {
            tracing::debug!(method = %req.method, path = %req.path, status = resp.status, "api request");
        }
        let bytes = resp.to_bytes(keep_alive, head_only);
        let ok = send_response(&conn.stream, &bytes, self.write_timeout).is_ok();
        let back = if ok && keep_alive {
            Some(conn)
        } else {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            None
        };
        // The reactor counts the connection busy until it hears back, open or closed.
        if self.back.send(back).is_ok() {
            let _ = (&self.wake).write(b"c");
        }
    }
}
