//! The open Server-Sent Events streams: one thread (`api-streams`) holds every stream's socket
//! (non-blocking) and writes what is broadcast to it, so 100 open dashboards cost 100 sockets and
//! buffers, not 100 threads, and never a handler thread. It `poll`s the sockets: readable means
//! the client closed (a stream's client sends nothing after its request), writable means a
//! buffered message can go on. A client that does not read (its buffer past [`MAX_PENDING`])
//! is dropped: it reconnects with `Last-Event-ID` and catches up from the files. A keep-alive
//! comment goes to every stream every [`KEEP_ALIVE`], so proxies and the browser see it alive.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open streams at most; more get 503.
pub(crate) const MAX_STREAMS: usize = 1024;
/// Bytes buffered for one client at most before it is dropped.
const MAX_PENDING: usize = 4 * 1024 * 1024;
/// How often an idle stream gets a comment line.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One SSE message as sent to clients with and without the right to see task text.
pub(crate) struct Message {
    pub full: Vec<u8>,
    /// What an anonymous client gets when tokens are configured (None: the same as `full`).
    pub redacted: Option<Vec<u8>>,
}

/// Encodes one SSE message: `id:`, `event:`, one `data:` line (JSON has no raw newline).
pub(crate) fn encode(id: &str, event: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + id.len() + event.len() + 24);
    if !id.is_empty() {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(format!("event: {event}\ndata: ").as_bytes());
    // A JSON text never holds a raw newline; a stray one would end the field, so it is dropped.
    out.extend(data.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    out.extend_from_slice(b"\n\n");
    out
}

/// Which broadcasts a client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topic {
    /// `GET /events/stream`: everything the feed broadcasts.
    Main,
    /// A task output stream: only messages addressed to this key.
    Log(u64),
}

/// A stream to add: its socket, what to send first, its rights and topic.
pub(crate) struct Client {
    pub stream: TcpStream,
    pub first: Vec<u8>,
    pub redact: bool,
    pub topic: Topic,
}

enum Command {
    Add(Client),
    Broadcast(Arc<Message>),
    /// To the clients of one [`Topic::Log`] key; `close` ends them after it.
    To(u64, Vec<u8>, bool),
    Stop,
}

/// The handle to the streams thread.
#[derive(Clone)]
pub(crate) struct Hub {
    tx: Sender<Command>,
    wake: Arc<UnixStream>,
    open: Arc<AtomicUsize>,
    /// The [`Topic::Log`] keys with a connected client: a key is added when its client is
    /// handed over and removed when the streams thread drops it, so the feed stops following
    /// output nobody reads.
    live_logs: Arc<Mutex<HashSet<u64>>>,
}

impl Hub {
    pub(crate) fn start() -> std::io::Result<Hub> {
        let (tx, rx) = mpsc::channel();
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let open = Arc::new(AtomicUsize::new(0));
        let live_logs = Arc::new(Mutex::new(HashSet::new()));
        let state =
            Streams { rx, wake: wake_rx, clients: Vec::new(), open: open.clone(), live_logs: live_logs.clone() };
        std::thread::Builder::new().name("api-streams".into()).spawn(move || state.run())?;
        Ok(Hub { tx, wake: Arc::new(wake_tx), open, live_logs })
    }

    /// Reserves a place for a stream; false when [`MAX_STREAMS`] are open.
    pub(crate) fn reserve(&self) -> bool {
        if self.open.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Streams open or reserved (a stream about to join counts).
    pub(crate) fn open_streams(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Gives back a place reserved for a stream that never came.
    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Adds a stream whose place was reserved.
    pub(crate) fn add(&self, client: Client) {
        if let Topic::Log(key) = client.topic {
            lock(&self.live_logs).insert(key);
        }
        self.send(Command::Add(client));
    }

    /// Whether a client of this log key is still connected (it is from [`Hub::add`] until the
    /// streams thread drops it).
    pub(crate) fn log_is_live(&self, key: u64) -> bool {
        lock(&self.live_logs).contains(&key)
    }

    pub(crate) fn broadcast(&self, msg: Message) {
        self.send(Command::Broadcast(Arc::new(msg)));
    }

    /// Sends to the log streams of `key`; `close` ends them afterwards.
    pub(crate) fn to_log(&self, key: u64, bytes: Vec<u8>, close: bool) {
        self.send(Command::To(key, bytes, close));
    }

    pub(crate) fn stop(&self) {
        self.send(Command::Stop);
    }

    fn send(&self, c: Command) {
        if self.tx.send(c).is_ok() {
            let _ = (&*self.wake).write(b"w");
        }
    }
}

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    redact: bool,
    topic: Topic,
    /// Close once `pending` is written.
    closing: bool,
}

impl Conn {
    /// Writes what it can without blocking; false when the client is gone.
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match (&self.stream).write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        !self.closing
    }

    fn queue(&mut self, bytes: &[u8]) -> bool {
        if self.pending.len() + bytes.len() > MAX_PENDING {
            return false;
        }
        self.pending.extend_from_slice(bytes);
        true
    }
}

struct Streams {
    rx: Receiver<Command>,
    wake: UnixStream,
    clients: Vec<Conn>,
    open: Arc<AtomicUsize>,
    live_logs: Arc<Mutex<HashSet<u64>>>,
}

fn lock(set: &Mutex<HashSet<u64>>) -> std::sync::MutexGuard<'_, HashSet<u64>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    fn run(mut self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut next_keep_alive = Instant::now() + KEEP_ALIVE;
        loop {
            let timeout = next_keep_alive.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX);
            let ready: Vec<(bool, bool)> = {
                let mut fds = Vec::with_capacity(self.clients.len() + 1);
                fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
                for c in &self.clients {
                    let mut flags = PollFlags::POLLIN;
                    if !c.pending.is_empty() {
                        flags |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(c.stream.as_fd(), flags));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("api streams: poll failed: {e}");
                        return;
                    }
                }
                fds.iter()
                    .map(|f| {
                        let r = f.revents().unwrap_or(PollFlags::empty());
                        (
                            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR),
                            r.contains(PollFlags::POLLOUT),
                        )
                    })
                    .collect()
            };
            // Clients first (indices match `ready`), then the commands that may add clients.
            let mut keep = vec![true; self.clients.len()];
            for (i, c) in self.clients.iter_mut().enumerate() {
                let (readable, writable) = ready[i + 1];
                if readable && !drain_input(&c.stream) {
                    keep[i] = false;
                } else if writable {
                    keep[i] = c.flush();
                }
            }
            let mut i = 0;
            let mut dropped = Vec::new();
            self.clients.retain(|c| {
                i += 1;
                if !keep[i - 1] {
                    dropped.push(c.topic.clone());
                }
                keep[i - 1]
            });
            self.gone(&dropped);
            if ready[0].0 {
                let mut sink = [0u8; 256];
                while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            }
            loop {
                match self.rx.try_recv() {
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Ok(c) => self.apply(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            if Instant::now() >= next_keep_alive {
                for c in &mut self.clients {
                    if c.pending.is_empty() {
                        c.pending.extend_from_slice(b": keep-alive\n\n");
                    }
                }
                self.flush_all();
                next_keep_alive = Instant::now() + KEEP_ALIVE;
            }
        }
    }

    /// Clients left: their places are free again, and their log keys are no longer live.
    fn gone(&self, topics: &[Topic]) {
        if topics.is_empty() {
            return;
        }
        self.open.fetch_sub(topics.len(), Ordering::SeqCst);
        let mut live = lock(&self.live_logs);
        for t in topics {
            if let Topic::Log(key) = t {
                live.remove(key);
            }
        }
    }

    fn apply(&mut self, c: Command) {
        match c {
            Command::Add(client) => {
                let mut conn = Conn {
                    stream: client.stream,
                    pending: client.first,
                    redact: client.redact,
                    topic: client.topic,
                    closing: false,
                };
                if conn.flush() {
                    self.clients.push(conn);
                } else {
                    self.gone(&[conn.topic]);
                }
            }
            Command::Broadcast(msg) => {
                for c in &mut self.clients {
                    if c.topic != Topic::Main {
                        continue;
                    }
                    let bytes = match (&msg.redacted, c.redact) {
                        (Some(r), true) => r,
                        _ => &msg.full,
                    };
                    if !c.queue(bytes) {
                        c.closing = true;
                        c.pending.clear();
                    }
                }
                self.flush_all();
            }
            Command::To(key, bytes, close) => {
                for c in self.clients.iter_mut().filter(|c| c.topic == Topic::Log(key)) {
                    // Like a broadcast: a client that does not read is dropped, never sent a
                    // torn message; it reconnects with `Last-Event-ID` (its last offset).
                    if !c.queue(&bytes) {
                        c.pending.clear();
                        c.closing = true;
                    }
                    c.closing |= close;
                }
                self.flush_all();
            }
            Command::Stop => {}
        }
    }

    fn flush_all(&mut self) {
        let mut dropped = Vec::new();
        self.clients.retain_mut(|c| {
            let alive = c.flush();
            if !alive {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                dropped.push(c.topic.clone());
            }
            alive
        });
        self.gone(&dropped);
    }
}

/// Reads and drops what a stream's client sent; false when it closed the connection.
fn drain_input(mut stream: &TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_data_line() {
        let m = String::from_utf8(encode("7-120", "event", "{\"a\":\"x\\ny\"}\n")).unwrap();
        assert_eq!(m, "id: 7-120\nevent: event\ndata: {\"a\":\"x\\ny\"}\n\n");
    }
}
