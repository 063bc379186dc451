//! The coordination store: every read and write of a coordination file goes through here.
//!
//! - [`atomic`]: atomic, durable replacement of a file (invariant 1).
//! - [`lock`]: flock on dedicated lock files with a deadline (invariant 2).
//! - [`lock_name`]: every lock by name, in the one lock order (invariant 3).
//! - [`jsonl`]: single-`write` appends and tolerant readers (invariant 4).
//! - [`events`]: the event log and its acknowledgements, built on [`jsonl`].
//! - [`identity`]: a file's identity by `stat`, and the racily-clean guard for skipping reads.
//! - this module: typed documents ([`Document`]) loaded and schema-checked, read-modify-write
//!   under the file's lock (invariant 3), and quarantine of bad files (invariant 7).

pub mod api_tokens;
pub mod atomic;
pub mod config;
pub mod daemon_mark;
pub mod events;
pub mod files;
pub mod holders;
pub mod home;
pub(crate) mod identity;
pub(crate) mod init;
pub(crate) mod inventory;
pub mod jsonl;
pub mod lock;
pub(crate) mod lock_name;
pub(crate) mod open;
pub(crate) mod outage;
pub mod pidfile;
pub mod rotation;

use crate::base::error::{Error, Result};
use crate::store::events::{Event, EventKind, Severity};
use crate::store::files::{CoordFile, FileKind};
use crate::store::home::Home;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use lock::LockGuard;

/// Pauses the current process at a named point when `CORTEX_PAUSE_AT` names it (debug builds
/// only): the tests use it to SIGKILL a process at an exact step (a backup, a restore, an archive
/// seal).
pub fn pause_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("CORTEX_PAUSE_AT").is_ok_and(|v| v == name) {
        eprintln!("paused at {name}");
        loop {
            std::thread::park();
        }
    }
}
pub use lock_name::LockName;

/// Default deadline for taking a lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A typed coordination document stored in one JSON file.
pub trait Document: Serialize + DeserializeOwned {
    /// The file this document lives in.
    const FILE: &'static CoordFile;

    /// The bytes to write, checked against the file's schema, for a document with an encoding of
    /// its own (None: pretty-printed and checked whole).
    fn encode_checked(&self, _path: &Path) -> Option<Result<Vec<u8>>> {
        None
    }

    /// Loads a document stored in more than one file (None: the one JSON file).
    fn load_custom(_store: &Store) -> Option<Result<Self>> {
        None
    }

    /// Writes a document stored in more than one file, under its lock (None: the atomic
    /// replace of the one JSON file).
    fn write_custom(&self, _store: &Store) -> Option<Result<()>> {
        None
    }
}

/// Handle on a home's coordination files.
#[derive(Debug, Clone)]
pub struct Store {
    home: Home,
    lock_timeout: Duration,
    /// Who is writing (a daemon name or "cli"): the `source` of events the store records.
    source: String,
}

impl Store {
    pub fn new(home: Home) -> Self {
        Store { home, lock_timeout: DEFAULT_LOCK_TIMEOUT, source: "cortex".into() }
    }

    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The absolute path of a coordination file.
    pub fn path(&self, file: &CoordFile) -> PathBuf {
        self.home.coord_file(file)
    }

    /// Takes the lock that guards `file`.
    pub fn lock(&self, file: &CoordFile) -> Result<LockGuard> {
        self.lock_named(file.lock)
    }

    /// Takes a lock under `coordination/.locks/` exclusive, with the store's deadline.
    pub fn lock_named(&self, name: LockName) -> Result<LockGuard> {
        lock::lock_exclusive(&self.home, name, self.lock_timeout)
    }

    /// Takes a lock under `coordination/.locks/` shared, with the store's deadline.
    pub fn lock_shared(&self, name: LockName) -> Result<LockGuard> {
        lock::lock_shared(&self.home, name, self.lock_timeout)
    }

    /// Reads a JSON coordination file and checks it against its schema. `Ok(None)` when missing.
    /// A file that does not parse or breaks its schema is quarantined and reported.
    pub fn read_value(&self, file: &CoordFile) -> Result<Option<Value>> {
        debug_assert_eq!(file.kind, FileKind::Json);
        self.read_value_at(&self.path(file), Some(file.schema))
    }

    /// Like [`Store::read_value`] for any JSON file under the home (worker specs, say).
    pub fn read_value_at(&self, path: &Path, schema: Option<&str>) -> Result<Option<Value>> {
        // Never through a link: another file's bytes are not ours to parse or quarantine.
        let bytes = match open::read_bytes(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(open::refuse_link(path, "read", e)),
        };
        self.parse_checked(path, &bytes, schema).map(Some)
    }

    /// Parses bytes that were read from `path` and checks them against `schema`, quarantining a
    /// copy when they are bad.
    pub fn parse_checked(&self, path: &Path, bytes: &[u8], schema: Option<&str>) -> Result<Value> {
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                let detail = if bytes.is_empty() { "the file is empty".to_string() } else { e.to_string() };
                let quarantined = self.quarantine(path, bytes, "not valid JSON", &detail, "");
                return Err(Error::Corrupt { path: path.to_path_buf(), detail, quarantined });
            }
        };
        if let Some(schema) = schema
            && let Some(v) = crate::base::schema::check(schema, &value, 1).into_iter().next()
        {
            let quarantined = self.quarantine(path, bytes, "breaks its schema", &v.expected, &v.pointer);
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                pointer: v.pointer,
                expected: v.expected,
                quarantined,
            });
        }
        Ok(value)
    }

    /// Loads a typed document; a missing file yields the embedded default.
    pub fn load<D: Document>(&self) -> Result<D> {
        if let Some(loaded) = D::load_custom(self) {
            return loaded;
        }
        self.load_snapshot()
    }

    /// Loads a document's own JSON file alone (for the queue: the snapshot without its journal).
    pub fn load_snapshot<D: Document>(&self) -> Result<D> {
        let path = self.path(D::FILE);
        let value = match self.read_value(D::FILE)? {
            Some(v) => v,
            None => default_value(D::FILE)?,
        };
        self.decode(&path, value)
    }

    /// Turns a schema-valid value into its type. A value the type cannot take (a field the
    /// schema leaves optional but the type needs) is quarantined like any other bad file.
    /// Decodes a value read from `path` (by [`Store::read_value_at`]) as `D`: a value its type
    /// cannot take (a malformed time, a wrong type) is an `Error::Invalid` naming the file and
    /// the field, with a quarantined copy of the file.
    pub fn decode<D: DeserializeOwned>(&self, path: &Path, value: Value) -> Result<D> {
        decode_value(&value).map_err(|(pointer, expected)| {
            let bytes = std::fs::read(path).unwrap_or_else(|_| serde_json::to_vec_pretty(&value).unwrap_or_default());
            let quarantined = self.quarantine(path, &bytes, "cannot be read as its type", &expected, &pointer);
            Error::Invalid { path: path.to_path_buf(), pointer, expected, quarantined }
        })
    }

    /// Loads a typed document only if its file exists.
    pub fn load_existing<D: Document>(&self) -> Result<Option<D>> {
        let path = self.path(D::FILE);
        if path.symlink_metadata().is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            return Ok(None);
        }
        if let Some(loaded) = D::load_custom(self) {
            return loaded.map(Some);
        }
        self.read_value(D::FILE)?.map(|v| self.decode(&path, v)).transpose()
    }

    /// Read-modify-write of a typed document under its lock: load (default when missing), let
    /// `change` edit it, validate, replace atomically. When `change` returns an error nothing is
    /// written. A bad file on disk is quarantined and not overwritten.
    pub fn update<D: Document, R>(&self, change: impl FnOnce(&mut D) -> Result<R>) -> Result<R> {
        let guard = self.lock(D::FILE)?;
        self.update_locked(&guard, change)
    }

    /// [`Store::update`] for a caller that already holds the document's lock (to update several
    /// files under one critical section). The guard proves the lock is held.
    pub fn update_locked<D: Document, R>(
        &self,
        guard: &LockGuard,
        change: impl FnOnce(&mut D) -> Result<R>,
    ) -> Result<R> {
        debug_assert_eq!(guard.name(), Some(D::FILE.lock));
        let mut doc: D = self.load()?;
        let out = change(&mut doc)?;
        self.write_locked(guard, &doc)?;
        Ok(out)
    }

    /// [`Store::update`] that writes only when `change` changed the document (no fsync, no new
    /// file, no watcher wake-up for a no-op).
    pub fn update_if_changed<D: Document + Clone + PartialEq, R>(
        &self,
        change: impl FnOnce(&mut D) -> Result<R>,
    ) -> Result<R> {
        let guard = self.lock(D::FILE)?;
        let mut doc: D = self.load()?;
        let before = doc.clone();
        let out = change(&mut doc)?;
        if doc != before {
            self.write_locked(&guard, &doc)?;
        }
        Ok(out)
    }

    /// Validates and atomically writes a document whose lock the caller holds.
    pub fn write_locked<D: Document>(&self, _guard: &LockGuard, doc: &D) -> Result<()> {
        if let Some(written) = doc.write_custom(self) {
            return written;
        }
        atomic::write_atomic(&self.path(D::FILE), &self.encode_doc(doc)?)
    }

    /// The bytes [`Store::write_locked`] writes for `doc`: checked against the file's schema.
    pub fn encode_doc<D: Document>(&self, doc: &D) -> Result<Vec<u8>> {
        let path = self.path(D::FILE);
        if let Some(bytes) = doc.encode_checked(&path) {
            return bytes;
        }
        let value = serde_json::to_value(doc).map_err(|e| Error::encode(path.display().to_string(), e))?;
        encode_checked(&path, &value, Some(D::FILE.schema))
    }

    /// Replaces a whole document under its lock, refusing if the file on disk is bad (it is
    /// quarantined first, so an operator can see what was there).
    pub fn replace<D: Document>(&self, doc: &D) -> Result<()> {
        let guard = self.lock(D::FILE)?;
        self.read_value(D::FILE)?;
        self.write_locked(&guard, doc)
    }

    /// Copies a bad file to `coordination/quarantine/` (once per distinct content) and records a
    /// `file_quarantined` event. Returns the copy's path. Best effort: it never fails the caller.
    pub fn quarantine(&self, path: &Path, bytes: &[u8], what: &str, expected: &str, pointer: &str) -> Option<PathBuf> {
        let rel = self.home.relative(path).to_string_lossy().replace('/', "__");
        let hash = hex(&Sha256::digest(bytes)[..6]);
        let dir = self.home.quarantine_dir();
        let dest = dir.join(format!("{rel}.{hash}.bad"));
        if dest.exists() {
            return Some(dest);
        }
        atomic::create_dir_all(&dir).ok()?;
        atomic::write_atomic(&dest, bytes).ok()?;
        let event = Event::new(
            EventKind::FileQuarantined,
            Severity::Error,
            &self.source,
            format!(
                "{} {what} at {}: {expected}; a copy is kept at {}",
                self.home.relative(path).display(),
                if pointer.is_empty() { "/" } else { pointer },
                self.home.relative(&dest).display()
            ),
        )
        .with_data(serde_json::json!({
            "file": self.home.relative(path),
            "pointer": pointer,
            "expected": expected,
            "quarantine_path": self.home.relative(&dest),
        }));
        let _ = crate::store::events::append(&self.home, &event);
        Some(dest)
    }

    /// Records an event in `dashboard-events.jsonl` with this store's source.
    pub fn emit(
        &self,
        event_type: EventKind,
        severity: Severity,
        message: impl Into<String>,
        data: Value,
    ) -> Result<Event> {
        let event = self.event(event_type, severity, message, data);
        crate::store::events::append(&self.home, &event)?;
        Ok(event)
    }

    /// An event from this store's source, not yet recorded (see [`crate::store::events::append_many`]).
    pub fn event(&self, event_type: EventKind, severity: Severity, message: impl Into<String>, data: Value) -> Event {
        Event::new(event_type, severity, &self.source, message).with_data(data)
    }
}

/// Turns a schema-valid value into its type; on failure, the JSON pointer of the field that
/// could not be read (a malformed time, say) and what was wrong with it.
pub fn decode_value<D: DeserializeOwned>(value: &Value) -> std::result::Result<D, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut pointer = json_pointer(e.path());
        let message = e.inner().to_string();
        // Inside a `#[serde(flatten)]` (a task's or a dispatch's state) serde loses the path at
        // the object: a malformed time is found there by its value.
        if let Some(obj) = value.pointer(&pointer).and_then(Value::as_object) {
            let mut fields = obj
                .iter()
                .filter(|(_, v)| v.as_str().is_some_and(|s| message == crate::base::clock::ts::not_a_time(s)))
                .map(|(k, _)| k);
            if let (Some(k), None) = (fields.next(), fields.next()) {
                pointer.push('/');
                pointer.push_str(&escape_pointer(k));
            }
        }
        (pointer, crate::base::schema::bounded(&message, crate::base::schema::MAX_EXPECTED_CHARS))
    })
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A serde path (`tasks[3].created_at`) as a JSON pointer (`/tasks/3/created_at`).
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", escape_pointer(key))),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Validates `value` against `schema` and writes it atomically (pretty-printed, for operators).
pub fn write_value_checked(path: &Path, value: &Value, schema: Option<&str>) -> Result<()> {
    atomic::write_atomic(path, &encode_checked(path, value, schema)?)
}

/// The bytes [`write_value_checked`] would write: the value checked against its schema (a
/// violation refuses the write, naming the file and the field), pretty-printed.
pub fn encode_checked(path: &Path, value: &Value, schema: Option<&str>) -> Result<Vec<u8>> {
    if let Some(schema) = schema
        && let Some(v) = crate::base::schema::check(schema, value, 1).into_iter().next()
    {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            pointer: v.pointer,
            expected: format!("refusing to write: {}", v.expected),
            quarantined: None,
        });
    }
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::encode(path.display().to_string(), e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The embedded default content of a JSON file, parsed.
pub fn default_value(file: &CoordFile) -> Result<Value> {
    let src = file.default.ok_or_else(|| {
        Error::other(format!("coordination/{} is missing and has no default; run `cortex init`", file.rel))
    })?;
    serde_json::from_str(src).map_err(|e| Error::encode(format!("the embedded default of {}", file.rel), e))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of a file, as hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| Error::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// For unit tests: a store in a new initialised home, kept alive by the returned directory.
#[cfg(test)]
pub(crate) fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let home = crate::store::home::Home::at(dir.path());
    crate::store::init::init_home(&home).unwrap();
    (dir, Store::new(home).with_source("test"))
}
