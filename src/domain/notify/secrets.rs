//! The notify secrets file (`secrets_file` in `notifications.json`): `name=value` lines (blank
//! lines and `#` comments skipped), readable by its owner only (0600). A file others can read is
//! refused with its name and the `chmod` that fixes it. Values are never logged or shown: `Debug`
//! prints the names alone.

use crate::base::error::{Error, Result};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The secrets by name.
#[derive(Clone, Default, PartialEq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({:?})", self.values.keys().collect::<Vec<_>>())
    }
}

impl Secrets {
    /// Loads `path`; refuses a file with any group or other permission bit.
    pub fn load(path: &Path) -> Result<Secrets> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "read the notify secrets file", e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Config {
                path: Some(path.to_path_buf()),
                detail: format!(
                    "the notify secrets file has mode {mode:04o}; it must be readable by its owner only: chmod 600 {}",
                    path.display()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read the notify secrets file", e))?;
        Secrets::parse(&text).map_err(|detail| Error::Config { path: Some(path.to_path_buf()), detail })
    }

    /// Parses `name=value` lines (the value is everything after the first `=`, trimmed).
    pub fn parse(text: &str) -> std::result::Result<Secrets, String> {
        let mut values = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected name=value (the value is not shown)", i + 1));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("line {}: a secret without a name", i + 1));
            }
            values.insert(name.to_string(), value.trim().to_string());
        }
        Ok(Secrets { values })
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every value, longest first: what is masked out of an answer before it is shown or logged.
    pub fn values(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.values.values().map(String::as_str).filter(|v| v.len() >= 4).collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    }

    /// `text` with every secret value replaced by `***` (a receiver may echo a token back).
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.values() {
            out = out.replace(v, "***");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mask_and_debug_never_show_values() {
        let s = Secrets::parse("# c\nslack_url = https://hooks.example/T/B/xyz\n\nsmtp=p=w0rd\n").unwrap();
        assert_eq!(s.get("slack_url"), Some("https://hooks.example/T/B/xyz"));
        assert_eq!(s.get("smtp"), Some("p=w0rd"));
        assert_eq!(s.mask("echo p=w0rd!"), "echo ***!");
        assert!(!format!("{s:?}").contains("w0rd"));
        let e = Secrets::parse("just-a-token-line").unwrap_err();
        assert!(e.contains("line 1") && !e.contains("token-line"), "{e}");
    }

    #[test]
    fn a_group_or_world_readable_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify-secrets");
        std::fs::write(&p, "a=bcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Secrets::load(&p).unwrap_err().to_string();
        assert!(e.contains("notify-secrets") && e.contains("0640") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secrets::load(&p).unwrap().get("a"), Some("bcdef"));
    }
}
