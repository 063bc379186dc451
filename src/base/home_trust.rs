//! Whether a home may be used: the home's `cortex.toml` and `coordination/config/` name the
//! commands Cortex runs, so a home another user can change would run their commands as us. Like
//! git's `safe.directory`, a home (from `--home`, `CORTEX_HOME`, `COMMIT_RELAY_HOME`, the current
//! directory or `~/.cortex`) is used only if it is owned by the current user and is not group- or
//! world-writable, unless the operator trusts it explicitly from *outside* the home: the
//! environment variable `CORTEX_SAFE_HOMES` (paths separated by `:`) or the user's file
//! `$XDG_CONFIG_HOME/cortex/safe-homes` (default `~/.config/cortex/safe-homes`, one path a line);
//! `*` in either trusts every home. A list inside the home could not vouch for the home itself.

use crate::base::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The environment variable listing homes trusted whatever their owner and mode.
pub(crate) const SAFE_HOMES_ENV: &str = "CORTEX_SAFE_HOMES";

/// The user's file listing trusted homes (one path a line, `*` for all, `#` comments), or `None`
/// when neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub(crate) fn safe_homes_file() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = nonempty("XDG_CONFIG_HOME").or_else(|| nonempty("HOME").map(|h| h.join(".config")))?;
    Some(base.join("cortex/safe-homes"))
}

/// Checks that `root` (found through `source`, for the message) may be used as a home. A home that
/// does not exist yet is fine: Cortex creates it private (0700).
pub(crate) fn check(root: &Path, source: &str) -> Result<()> {
    let Some(why) = first_untrusted(root)? else {
        return Ok(());
    };
    if explicitly_trusted(root) {
        return Ok(());
    }
    let file =
        safe_homes_file().map(|p| p.display().to_string()).unwrap_or_else(|| "~/.config/cortex/safe-homes".into());
    Err(Error::refused(format!(
        "refusing the home {} (found through {source}): {why}. Its cortex.toml and coordination/config/ \
         name the commands Cortex runs, so a home another user can change would run their commands as \
         you. Use a home you own that only you can write (chown it to you, `chmod go-w` it), or, if \
         you trust it, say so from outside the home as git's safe.directory does: add its path to \
         {SAFE_HOMES_ENV} (paths separated by ':') or to {file} (one path a line; `*` trusts every home)",
        root.display()
    )))
}

/// What in the home names the commands Cortex runs, besides the home itself: each must be ours
/// and writable by us alone too (a trusted root holding another user's `coordination/config/`
/// would run their commands just the same).
const GUARDED: [&str; 3] = ["cortex.toml", "coordination", "coordination/config"];

/// The first of the home and its [`GUARDED`] paths (those that exist; links followed, as the
/// readers follow them) that is not trusted, and why; `None` when all are.
fn first_untrusted(root: &Path) -> Result<Option<String>> {
    let me = nix::unistd::geteuid().as_raw();
    for (rel, path) in std::iter::once(("", root.to_path_buf())).chain(GUARDED.iter().map(|r| (*r, root.join(r)))) {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, "inspect the home", e)),
        };
        if let Some(why) = untrusted_because(meta.uid(), meta.mode(), me) {
            return Ok(Some(if rel.is_empty() { why } else { format!("its {rel}: {why}") }));
        }
    }
    Ok(None)
}

/// Why a directory with this owner and mode is not trusted by user `me`, or `None`.
pub(crate) fn untrusted_because(owner: u32, mode: u32, me: u32) -> Option<String> {
    if owner != me {
        return Some(format!("it is owned by uid {owner}, not by you (uid {me})"));
    }
    match mode & 0o022 {
        0 => None,
        0o020 => Some(format!("it is group-writable (mode {:o})", mode & 0o7777)),
        _ => Some(format!("it is world-writable (mode {:o})", mode & 0o7777)),
    }
}

/// True when `root` is listed in `CORTEX_SAFE_HOMES` or the user's safe-homes file (or either says `*`).
fn explicitly_trusted(root: &Path) -> bool {
    let mut entries: Vec<String> = Vec::new();
    if let Some(v) = std::env::var_os(SAFE_HOMES_ENV) {
        entries.extend(v.to_string_lossy().split(':').map(str::to_string));
    }
    if let Some(text) = safe_homes_file().and_then(|p| std::fs::read_to_string(p).ok()) {
        entries.extend(text.lines().map(str::to_string));
    }
    let canonical = std::fs::canonicalize(root).ok();
    entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty() && !e.starts_with('#')).any(|e| {
        e == "*"
            || Path::new(e) == root
            || canonical.as_deref().is_some_and(|c| std::fs::canonicalize(e).is_ok_and(|listed| listed == c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_own_home_that_others_cannot_write_is_trusted() {
        assert_eq!(untrusted_because(1000, 0o40700, 1000), None);
        assert_eq!(untrusted_because(1000, 0o40755, 1000), None);
        assert!(untrusted_because(65534, 0o40700, 0).unwrap().contains("owned by uid 65534"));
        assert!(untrusted_because(0, 0o40770, 0).unwrap().contains("group-writable"));
        assert!(untrusted_because(0, 0o41777, 0).unwrap().contains("world-writable"));
    }
}
