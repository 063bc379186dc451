//! Classifying one failure: from a finished dispatch spec (preferred: it has the exit code, the
//! signal and the stderr path) or from a failure event in the event log. Each failure gets a
//! signature — category, type, worker type and, for exits, the code and the normalised last line
//! of stderr — and the pattern id is a short SHA-256 of that signature.

use crate::base::clock::Timestamp;
use crate::domain::task::{DispatchRecord, DispatchState, SignalledEnd};
use crate::store::events::{Event, EventKind};
use crate::store::home::Home;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

/// SIGKILL: what the kernel's OOM killer sends.
const SIGKILL: i32 = 9;

/// What kind of failure it was (the pattern's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Timeout,
    NonZeroExit,
    KilledBySignal,
    OutOfMemory,
    /// The process could not be started (no exit code, no signal).
    StartFailed,
    Lost,
    Zombie,
    CircuitBreakerTripped,
    MaxRetriesExceeded,
}

/// The broad family of a failure (the pattern's `category`); severity starts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Timeout,
    Crash,
    Resource,
    Liveness,
    Escalation,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Timeout => "timeout",
            Category::Crash => "crash",
            Category::Resource => "resource",
            Category::Liveness => "liveness",
            Category::Escalation => "escalation",
        }
    }
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::NonZeroExit => "non_zero_exit",
            FailureKind::KilledBySignal => "killed_by_signal",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::StartFailed => "start_failed",
            FailureKind::Lost => "lost",
            FailureKind::Zombie => "zombie",
            FailureKind::CircuitBreakerTripped => "circuit_breaker_tripped",
            FailureKind::MaxRetriesExceeded => "max_retries_exceeded",
        }
    }

    pub fn category(self) -> Category {
        match self {
            FailureKind::Timeout => Category::Timeout,
            FailureKind::NonZeroExit | FailureKind::KilledBySignal | FailureKind::StartFailed => Category::Crash,
            FailureKind::OutOfMemory => Category::Resource,
            FailureKind::Lost | FailureKind::Zombie => Category::Liveness,
            FailureKind::CircuitBreakerTripped | FailureKind::MaxRetriesExceeded => Category::Escalation,
        }
    }
}

/// One classified failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Identifies the failure across sources so it is counted once (`dispatch:<id>` or `event:<id>`).
    pub key: String,
    /// When it happened (the dispatch's end or the event's time).
    pub at: Timestamp,
    pub kind: FailureKind,
    pub worker_type: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The normalised last stderr line (exits) or error text, part of the signature for exits.
    pub message: Option<String>,
    pub dispatch_id: Option<String>,
}

/// What groups failures into one pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub category: Category,
    #[serde(rename = "type")]
    pub kind: FailureKind,
    pub worker_type: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Signature {
    /// The signature as one string: `category|type|worker_type[|exit=N][|signal=N][|message]`.
    pub fn text(&self) -> String {
        let mut s = format!("{}|{}|{}", self.category.as_str(), self.kind.as_str(), self.worker_type);
        if let Some(c) = self.exit_code {
            s.push_str(&format!("|exit={c}"));
        }
        if let Some(sig) = self.signal {
            s.push_str(&format!("|signal={sig}"));
        }
        if let Some(m) = &self.message {
            s.push('|');
            s.push_str(m);
        }
        s
    }

    /// The stable pattern id: `fp-` and the first 12 hex digits of the signature's SHA-256.
    pub fn pattern_id(&self) -> String {
        let digest = Sha256::digest(self.text().as_bytes());
        format!("fp-{}", crate::store::hex(&digest[..6]))
    }
}

impl Failure {
    pub fn signature(&self) -> Signature {
        // Only exits carry the code and message in the signature; signals carry the signal.
        let (exit_code, signal, message) = match self.kind {
            FailureKind::NonZeroExit => (self.exit_code, None, self.message.clone()),
            FailureKind::StartFailed => (None, None, self.message.clone()),
            FailureKind::KilledBySignal => (None, self.signal, None),
            _ => (None, None, None),
        };
        Signature {
            category: self.kind.category(),
            kind: self.kind,
            worker_type: self.worker_type.clone(),
            exit_code,
            signal,
            message,
        }
    }
}

fn regexes() -> &'static [(Regex, &'static str)] {
    static R: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    R.get_or_init(|| {
        [
            (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "<ts>"),
            (r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b", "<ts>"),
            (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<id>"),
            (r"(?:~|\.{1,2})?(?:/[^\s/:'\x22,;()\[\]]+)+/?", "<path>"),
            (
                r"(?i)\b(?:0x)?[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b|\b(?:0x)?[0-9a-f]*[a-f][0-9a-f]*\d[0-9a-f]*\b",
                "<hex>",
            ),
            (r"\d+", "<n>"),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(re).expect("normalisation regex"), to))
        .collect()
    })
}

/// Normalises a stderr line so failures that differ only in numbers, ids, paths and times share a
/// signature: timestamps → `<ts>`, UUIDs → `<id>`, paths → `<path>`, hex ids → `<hex>`, digits → `<n>`.
/// Whitespace is collapsed and the result capped at 200 characters.
pub(crate) fn normalise_line(line: &str) -> String {
    let mut s = line.trim().to_string();
    for (re, to) in regexes() {
        // Short hex words that are plain English ("add", "bad", "face") must stay: only runs of
        // 6+ characters mixing digits and letters count as hex ids.
        if *to == "<hex>" {
            s = re
                .replace_all(&s, |c: &regex::Captures| {
                    let m = &c[0];
                    if m.trim_start_matches("0x").len() >= 6 { "<hex>".to_string() } else { m.to_string() }
                })
                .into_owned();
        } else {
            s = re.replace_all(&s, *to).into_owned();
        }
    }
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(200).collect()
}

/// The last non-empty line of a file (reads only its tail). None when missing or empty.
pub(crate) fn last_nonempty_line(path: &Path) -> Option<String> {
    tail(path, 8192)?.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

/// The last `max` bytes of a file, lossily decoded.
fn tail(path: &Path, max: u64) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The stderr file of a dispatch: the spec's `stderr_path` when set (relative to the home or
/// absolute), else `agents/logs/workers/<dispatch_id>.err`.
pub(crate) fn stderr_path(home: &Home, dispatch_id: &str, spec_path: Option<&str>) -> std::path::PathBuf {
    match spec_path.filter(|p| !p.is_empty()) {
        Some(p) if Path::new(p).is_absolute() => p.into(),
        Some(p) => home.join(p),
        None => home.dispatch_stderr(dispatch_id),
    }
}

fn oom_text(text: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r"(?i)out of memory|oom[- _]?kill|\boom\b|\bKilled\b|memory cgroup").expect("oom regex")
    })
    .is_match(text)
}

/// Out of memory: SIGKILL, or exit 137 (a shell reporting its child's SIGKILL), together with the
/// kernel's OOM mark ("Killed", "out of memory", "oom-kill") in the error text or stderr's tail.
fn is_oom(exit_code: Option<i32>, signal: Option<i32>, error: Option<&str>, stderr: Option<&Path>) -> bool {
    if signal != Some(SIGKILL) && exit_code != Some(137) {
        return false;
    }
    error.is_some_and(oom_text) || stderr.and_then(|p| tail(p, 4096)).is_some_and(|t| oom_text(&t))
}

/// Classifies a failed, exited, signalled, timed-out, lost or zombie dispatch; None for a
/// dispatch that did not fail (active, completed, cancelled).
pub(crate) fn from_spec(home: &Home, rec: &DispatchRecord) -> Option<Failure> {
    let stderr = stderr_path(home, &rec.dispatch_id, Some(&rec.stderr_path));
    let (at, kind, exit_code, signal, message) = match &rec.state {
        DispatchState::Starting
        | DispatchState::Running { .. }
        | DispatchState::Slurm { .. }
        | DispatchState::Completed { .. }
        | DispatchState::Cancelled { .. } => return None,
        DispatchState::Timeout(SignalledEnd { ended_at, signal, .. }) => {
            (ended_at, FailureKind::Timeout, None, *signal, None)
        }
        DispatchState::Lost { ended_at, reason } => (ended_at, FailureKind::Lost, None, None, Some(reason.clone())),
        DispatchState::Zombie { ended_at, reason } => (ended_at, FailureKind::Zombie, None, None, Some(reason.clone())),
        DispatchState::Failed { ended_at, exit_code, signal, error, .. } => {
            let (kind, message) = exit_kind(*exit_code, *signal, Some(error), &stderr);
            (ended_at, kind, *exit_code, *signal, message)
        }
    };
    Some(Failure {
        key: format!("dispatch:{}", rec.dispatch_id),
        at: *at,
        kind,
        worker_type: rec.worker_type.clone(),
        exit_code,
        signal,
        message,
        dispatch_id: Some(rec.dispatch_id.clone()),
    })
}

/// The kind of a failed process from its code, signal, error text and stderr; and the signature
/// message (the normalised last stderr line, or the error text when stderr is empty).
fn exit_kind(
    exit_code: Option<i32>,
    signal: Option<i32>,
    error: Option<&str>,
    stderr: &Path,
) -> (FailureKind, Option<String>) {
    if is_oom(exit_code, signal, error, Some(stderr)) {
        return (FailureKind::OutOfMemory, None);
    }
    if signal.is_some() {
        return (FailureKind::KilledBySignal, None);
    }
    let line = last_nonempty_line(stderr).or_else(|| error.map(str::to_string)).map(|l| normalise_line(&l));
    match exit_code {
        Some(_) => (FailureKind::NonZeroExit, line),
        None => (FailureKind::StartFailed, error.map(normalise_line)),
    }
}

/// True for the failure events accepted from the event log.
pub(crate) fn is_failure_event(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::TaskFailed
            | EventKind::DispatchFailed
            | EventKind::DispatchTimeout
            | EventKind::DispatchLost
            | EventKind::ZombieDetected
            | EventKind::CircuitBreakerTripped
            | EventKind::MaxRetriesExceeded
    )
}

/// Classifies a failure event. `spec` is the dispatch's finished spec when one exists (it is
/// preferred: the event then only confirms a failure the spec already describes).
pub(crate) fn from_event(home: &Home, ev: &Event, spec: Option<&DispatchRecord>) -> Option<Failure> {
    if !is_failure_event(&ev.event_type) {
        return None;
    }
    let data = &ev.data;
    let str_of = |k: &str| data.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let int_of = |k: &str| data.get(k).and_then(|v| v.as_i64()).map(|v| v as i32);
    let dispatch_id = str_of("dispatch_id").filter(|d| crate::domain::task::dispatches::is_valid_id(d));
    let at = ev.timestamp;
    let kind_from_type = match ev.event_type {
        EventKind::DispatchTimeout => Some(FailureKind::Timeout),
        EventKind::DispatchLost => Some(FailureKind::Lost),
        EventKind::ZombieDetected => Some(FailureKind::Zombie),
        EventKind::CircuitBreakerTripped => Some(FailureKind::CircuitBreakerTripped),
        EventKind::MaxRetriesExceeded => Some(FailureKind::MaxRetriesExceeded),
        _ => None,
    };
    // Escalations are facts of their own, not of one dispatch: count each event.
    if let Some(k @ (FailureKind::CircuitBreakerTripped | FailureKind::MaxRetriesExceeded)) = kind_from_type {
        return Some(Failure {
            key: format!("event:{}", ev.id),
            at,
            kind: k,
            worker_type: str_of("worker_type").unwrap_or_else(|| "unknown".into()),
            exit_code: None,
            signal: None,
            message: None,
            dispatch_id,
        });
    }
    if let Some(rec) = spec
        && let Some(f) = from_spec(home, rec)
    {
        return Some(f);
    }
    let key = match &dispatch_id {
        Some(d) => format!("dispatch:{d}"),
        None => format!("event:{}", ev.id),
    };
    let worker_type = str_of("worker_type").or_else(|| spec.map(|s| s.worker_type.clone()));
    let (exit_code, signal) = (int_of("exit_code"), int_of("signal"));
    let (kind, message) = match kind_from_type {
        Some(k) => (k, None),
        None => {
            let error = str_of("error").unwrap_or_else(|| ev.message.clone());
            let stderr = dispatch_id.as_deref().map(|d| home.dispatch_stderr(d));
            if is_oom(exit_code, signal, Some(&error), stderr.as_deref()) {
                (FailureKind::OutOfMemory, None)
            } else if signal.is_some() {
                (FailureKind::KilledBySignal, None)
            } else if exit_code.is_some() {
                let line = stderr.as_deref().and_then(last_nonempty_line).unwrap_or(error);
                (FailureKind::NonZeroExit, Some(normalise_line(&line)))
            } else if str_of("status").as_deref() == Some("timeout") {
                (FailureKind::Timeout, None)
            } else {
                (FailureKind::StartFailed, Some(normalise_line(&error)))
            }
        }
    };
    Some(Failure {
        key,
        at,
        kind,
        worker_type: worker_type.unwrap_or_else(|| "unknown".into()),
        exit_code,
        signal,
        message,
        dispatch_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_numbers_ids_paths_and_times() {
        let a = normalise_line(
            "2026-03-01T10:00:00.123Z error: cannot open /var/tmp/job-123/out.json (pid 4411, id 3fa9c2d1e0)",
        );
        let b = normalise_line("2026-03-02T11:30:07Z error: cannot open /srv/x/y.json (pid 9, id 00ab12cd34ef)");
        assert_eq!(a, b);
        assert_eq!(a, "<ts> error: cannot open <path> (pid <n>, id <hex>)");
        assert_eq!(normalise_line("bad add face"), "bad add face");
        assert_eq!(normalise_line("retry 3 of 5 at 12:01:02"), "retry <n> of <n> at <ts>");
    }

    #[test]
    fn signature_groups_exits_by_code_and_message() {
        let f = |code, msg: &str| Failure {
            key: "k".into(),
            at: chrono::Utc::now(),
            kind: FailureKind::NonZeroExit,
            worker_type: "scan-worker".into(),
            exit_code: Some(code),
            signal: None,
            message: Some(msg.into()),
            dispatch_id: None,
        };
        assert_eq!(f(1, "boom <n>").signature().pattern_id(), f(1, "boom <n>").signature().pattern_id());
        assert_ne!(f(1, "boom").signature().pattern_id(), f(2, "boom").signature().pattern_id());
        assert_ne!(f(1, "boom").signature().pattern_id(), f(1, "bang").signature().pattern_id());
        assert_eq!(f(1, "boom").signature().text(), "crash|non_zero_exit|scan-worker|exit=1|boom");
        assert!(f(1, "x").signature().pattern_id().starts_with("fp-"));
        assert_eq!(f(1, "x").signature().pattern_id().len(), 15);
    }

    #[test]
    fn oom_needs_kill_and_mark() {
        assert!(is_oom(Some(137), None, Some("Killed"), None));
        assert!(is_oom(None, Some(9), Some("oom-kill: memory cgroup out of memory"), None));
        assert!(!is_oom(Some(137), None, Some("exited"), None));
        assert!(!is_oom(Some(1), None, Some("out of memory"), None));
    }
}
