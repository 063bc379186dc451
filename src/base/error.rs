//! The one error type of the library. Every variant names what went wrong, where (file, lock,
//! JSON pointer), and — where there is one — what the operator can do about it.

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// An I/O call failed on a path.
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// A file is not valid JSON (or a JSONL line is not).
    Corrupt { path: PathBuf, detail: String, quarantined: Option<PathBuf> },
    /// A file parses but breaks its schema: the JSON pointer of the bad field and what was expected.
    Invalid { path: PathBuf, pointer: String, expected: String, quarantined: Option<PathBuf> },
    /// A lock could not be taken in time.
    LockTimeout { lock: PathBuf, holder: Option<String>, waited_ms: u128 },
    /// cortex.toml or a command-line value is wrong.
    Config { path: Option<PathBuf>, detail: String },
    /// A value could not be encoded to (or a built-in document decoded from) JSON: `what` names
    /// the record or file, e.g. "dispatch d-1" or a path.
    Encode { what: String, source: serde_json::Error },
    /// A file watcher could not be started (`path` None) or could not watch `path`.
    Watch { path: Option<PathBuf>, source: notify::Error },
    /// An operating-system call not on a file failed: a signal, a pipe, a thread, a socket.
    /// `action` says what was being done ("send SIGTERM to PID 12"), `hint` what to do (may be
    /// empty).
    System { action: String, source: std::io::Error, hint: &'static str },
    /// A file Cortex refuses to use as it is (a link where a lock or PID file belongs, not a
    /// regular file, another user's): `problem` says what is wrong and what to do.
    Unusable { path: PathBuf, problem: String },
    /// A request the caller made cannot be carried out (unknown id, bad state, ...).
    Refused(String),
    /// Something else, said plainly.
    Other(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), action, source }
    }

    /// An encoding error naming what was being encoded.
    pub fn encode(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Encode { what: what.into(), source }
    }

    /// A watch of `path` that could not be set up.
    pub fn watch(path: impl AsRef<Path>, source: notify::Error) -> Self {
        Error::Watch { path: Some(path.as_ref().to_path_buf()), source }
    }

    /// An OS call (not on a file) that failed while doing `action`.
    pub fn system(action: impl Into<String>, source: std::io::Error) -> Self {
        Error::System { action: action.into(), source, hint: "" }
    }

    /// A file that cannot be used as it is; `problem` follows the path ("is a symbolic link; ...").
    pub fn unusable(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Unusable { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    pub fn refused(msg: impl Into<String>) -> Self {
        Error::Refused(msg.into())
    }

    pub fn other(msg: impl Into<String>) -> Self {
        Error::Other(msg.into())
    }

    /// True when the error says the disk is full, a quota or a file size limit was hit.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EFBIG || code == nix::libc::EDQUOT)
            }
            _ => false,
        }
    }

    /// An exit code for the CLI: 2 for usage/config errors, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, action, source } => {
                write!(f, "cannot {action} {}: {source}", path.display())?;
                if source.raw_os_error() == Some(nix::libc::ENOSPC) {
                    write!(f, " (the disk is full: free space, then retry)")?;
                }
                Ok(())
            }
            Error::Corrupt { path, detail, quarantined } => {
                write!(f, "{} is not valid JSON: {detail}", path.display())?;
                if let Some(q) = quarantined {
                    write!(f, " (a copy was kept at {})", q.display())?;
                }
                write!(f, "; run `cortex repair` or restore it from a backup")
            }
            Error::Invalid { path, pointer, expected, quarantined } => {
                let at = if pointer.is_empty() { "/" } else { pointer.as_str() };
                write!(f, "{} is invalid at {at}: {expected}", path.display())?;
                if let Some(q) = quarantined {
                    write!(f, " (a copy was kept at {})", q.display())?;
                }
                Ok(())
            }
            Error::LockTimeout { lock, holder, waited_ms } => {
                write!(f, "timed out after {waited_ms} ms waiting for lock {}", lock.display())?;
                match holder {
                    Some(h) => write!(f, " held by {h}"),
                    None => Ok(()),
                }
            }
            Error::Config { path: Some(p), detail } => write!(f, "{}: {detail}", p.display()),
            Error::Config { path: None, detail } => write!(f, "{detail}"),
            Error::Encode { what, source } => write!(f, "cannot encode {what}: {source}"),
            Error::Watch { path: Some(p), source } => write!(f, "cannot watch {}: {source}", p.display()),
            Error::Watch { path: None, source } => write!(f, "cannot start a file watcher: {source}"),
            Error::System { action, source, hint } => write!(f, "cannot {action}: {source}{hint}"),
            Error::Unusable { path, problem } => write!(f, "{} {problem}", path.display()),
            Error::Refused(m) | Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Encode { source, .. } => Some(source),
            Error::Watch { source, .. } => Some(source),
            Error::System { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A bare `serde_json` error, where the caller has nothing better to name than the value's
/// type: prefer [`Error::encode`] with the record or file when there is one.
impl From<serde_json::Error> for Error {
    fn from(source: serde_json::Error) -> Self {
        Error::Encode { what: "a value as JSON".into(), source }
    }
}

/// A file watcher that could not be started (a watch of a path uses [`Error::watch`]).
impl From<notify::Error> for Error {
    fn from(source: notify::Error) -> Self {
        Error::Watch { path: None, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_and_unusable_errors_say_what_failed_where_and_keep_their_source() {
        let e = Error::system("send SIGTERM to PID 12", std::io::Error::from_raw_os_error(nix::libc::EPERM));
        assert!(e.to_string().starts_with("cannot send SIGTERM to PID 12: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::System {
            action: "listen on 127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            hint: " (find it with `ss -ltnp`)",
        };
        assert!(e.to_string().ends_with(" (find it with `ss -ltnp`)"), "{e}");
        let e = Error::unusable("/h/run/x.pid", "is not a regular file; a PID file must be one: remove it");
        assert_eq!(e.to_string(), "/h/run/x.pid is not a regular file; a PID file must be one: remove it");
        assert_eq!(e.exit_code(), 1);
    }
}
