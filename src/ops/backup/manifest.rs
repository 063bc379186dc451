//! `MANIFEST.json`: the first entry of every archive. It names every file the archive holds with
//! its size, mode and SHA-256, and the compatibility alias (see [`alias_dir`]). Verification
//! trusts nothing else in the archive.

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

/// The archive entry holding the manifest.
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest accepted (a bigger one is not ours).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Top-level names an archive may hold files under.
pub const ALLOWED_ROOTS: [&str; 4] = ["coordination", "config", "agents", "cortex.toml"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub cortex_version: String,
    #[serde(with = "crate::base::clock::ts")]
    pub created_at: Timestamp,
    pub host: String,
    /// The home the archive was taken from.
    pub home: String,
    /// `backup`, `pre-restore` or `pre-reset`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub files: Vec<ManifestFile>,
    /// Symbolic links in the archive (only the compatibility alias).
    #[serde(default)]
    pub links: Vec<ManifestLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the archive, relative, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestLink {
    pub path: String,
    pub target: String,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn file(&self, path: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Checks the manifest itself: known format, safe and unique paths, well-formed checksums.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "MANIFEST.json has format_version {} but this Cortex reads version {FORMAT_VERSION}{}",
                self.format_version,
                if self.format_version > FORMAT_VERSION { " (made by a newer Cortex: upgrade first)" } else { "" }
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            check_member_path(&f.path).map_err(|e| format!("MANIFEST.json lists {:?}: {e}", f.path))?;
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("MANIFEST.json: {:?} has a malformed sha256", f.path));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(format!("MANIFEST.json lists {:?} twice", f.path));
            }
        }
        for l in &self.links {
            check_link(&l.path, &l.target).map_err(|e| format!("MANIFEST.json link {:?}: {e}", l.path))?;
            if !seen.insert(l.path.as_str()) {
                return Err(format!("MANIFEST.json lists {:?} twice", l.path));
            }
        }
        Ok(())
    }
}

/// A path an archive member may have: relative, only normal components, valid UTF-8, under one
/// of [`ALLOWED_ROOTS`] (or the alias directory).
pub fn check_member_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("path with a NUL or backslash".into());
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("path with `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
            Component::CurDir => return Err("path with `.`".into()),
        }
    }
    let first = path.split('/').next().unwrap_or("");
    let allowed = ALLOWED_ROOTS.contains(&first) || is_alias_name(first);
    if !allowed {
        return Err(format!("outside the directories a Cortex backup holds ({})", ALLOWED_ROOTS.join(", ")));
    }
    if first == "agents" && !path.starts_with("agents/prompts/") {
        return Err("under agents/ but not agents/prompts/".into());
    }
    if first == "cortex.toml" && path != "cortex.toml" {
        return Err("under cortex.toml".into());
    }
    Ok(())
}

/// A symbolic link is acceptable only when it stays inside the archive.
pub fn check_link(path: &str, target: &str) -> std::result::Result<(), String> {
    check_member_path(path)?;
    if target.starts_with('/') {
        return Err(format!("points to the absolute path {target:?}"));
    }
    let mut depth: i64 = path.split('/').count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err(format!("points to {target:?}")),
        }
        if depth < 0 {
            return Err(format!("points outside the archive ({target:?})"));
        }
    }
    Ok(())
}

/// The compatibility alias: a directory `cortex-backup-<ts>/` whose `coordination` links to the
/// archive's own `coordination/`, so the runbook's `tar -xzf B -C T; cp T/*/coordination/config/*.json …`
/// works while `cd $HOME && tar -xzf B` still restores files in place.
pub fn alias_dir(archive_stem: &str) -> String {
    archive_stem.to_string()
}

fn is_alias_name(name: &str) -> bool {
    ["cortex-backup-", "pre-restore-", "pre-reset-"].iter().any(|p| name.starts_with(p))
}

/// Parses manifest bytes. A value its type cannot take (a malformed `created_at`) is named by
/// its JSON pointer.
pub fn parse(bytes: &[u8]) -> Result<Manifest> {
    let not_ours = |e: String| Error::other(format!("MANIFEST.json is not a Cortex manifest: {e}"));
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| not_ours(e.to_string()))?;
    crate::store::decode_value(&value).map_err(|(pointer, expected)| {
        not_ours(format!("{} {expected}", if pointer.is_empty() { "/" } else { pointer.as_str() }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(created_at: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format_version": 1, "cortex_version": "0.1.0", "created_at": created_at, "host": "h",
            "home": "/h", "kind": "backup", "files": [], "links": [],
        }))
        .unwrap()
    }

    #[test]
    fn manifest_time_loads_in_every_form_and_is_written_as_before() {
        let m = parse(&manifest_json("2026-01-01T00:00:00.250000Z")).unwrap();
        let written = serde_json::to_value(&m).unwrap();
        assert_eq!(written["created_at"], "2026-01-01T00:00:00.250000Z");
        let other = parse(&manifest_json("2026-01-01T01:00:00.25+01:00")).unwrap();
        assert_eq!(other.created_at, m.created_at);
    }

    /// Before, any string was taken as the archive's time.
    #[test]
    fn a_malformed_manifest_time_refuses_the_manifest_naming_the_field() {
        let err = parse(&manifest_json("last night")).unwrap_err().to_string();
        assert!(err.contains("MANIFEST.json is not a Cortex manifest: /created_at"), "{err}");
        assert!(err.contains("\"last night\" is not an RFC 3339 time"), "{err}");
    }

    #[test]
    fn member_paths() {
        assert!(check_member_path("coordination/task-queue.json").is_ok());
        assert!(check_member_path("cortex.toml").is_ok());
        assert!(check_member_path("agents/prompts/a.md").is_ok());
        assert!(check_member_path("../../etc/x").is_err());
        assert!(check_member_path("/etc/passwd").is_err());
        assert!(check_member_path("coordination/../../x").is_err());
        assert!(check_member_path("etc/x").is_err());
        assert!(check_member_path("agents/logs/x").is_err());
    }

    #[test]
    fn links() {
        assert!(check_link("cortex-backup-1/coordination", "../coordination").is_ok());
        assert!(check_link("cortex-backup-1/coordination", "../../etc").is_err());
        assert!(check_link("coordination/x", "/etc/passwd").is_err());
    }
}
