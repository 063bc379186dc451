//! Bearer tokens for the API: `[api] tokens_file`, a file that must be readable by its owner
//! only (0600), of `name:token` lines in two sections:
//!
//! ```text
//! # operate tokens (the default section): every endpoint
//! alice:3f0c...        (16 characters at least)
//! [read]
//! # read-only tokens: the reads that show task output, commands and descriptions; no change
//! grafana:9a1e...
//! [operate]
//! ci:77b2...
//! ```
//!
//! A file without section lines is all operate tokens (the format before read-only tokens).
//! Tokens are compared in constant time (SHA-256 of both, then a XOR fold) and never logged:
//! only a token's name is ever shown.

use crate::base::error::{Error, Result};
use crate::store::config::Config;
use crate::store::home::Home;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The tokens `[api] tokens_file` names (none when it is empty).
pub fn load_tokens(home: &Home, config: &Config) -> Result<Tokens> {
    if config.api.tokens_file.trim().is_empty() {
        return Ok(Tokens::none());
    }
    Tokens::load(&home.configured_path(config.api.tokens_file.trim()))
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads only (`[read]` section).
    Read,
    /// Reads and changes (`[operate]` section, the default).
    Operate,
}

/// One configured token. Its secret is kept only as a digest; `Debug` shows the name alone.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub kind: Kind,
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?}, {:?})", self.name, self.kind)
    }
}

/// The caller a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub kind: Kind,
}

/// The tokens the API accepts. Empty: authentication is off (loopback only).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// What is wrong with a token's secret, if anything: the one rule the API applies at start and
/// `cortex config check` applies (both through [`Tokens::parse`]).
pub fn token_problem(secret: &str) -> Option<String> {
    (secret.len() < MIN_TOKEN_LEN).then(|| format!("the token is shorter than {MIN_TOKEN_LEN} characters"))
}

impl Tokens {
    /// No tokens: every request is allowed.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| t.name.as_str()).collect()
    }

    /// Loads a tokens file; refuses one that others can read or write, and names the bad line.
    pub fn load(path: &Path) -> Result<Tokens> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "read the API tokens file", e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Config {
                path: Some(path.to_path_buf()),
                detail: format!(
                    "the API tokens file has mode {mode:04o}; it must be readable by its owner only: chmod 600 {}",
                    path.display()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read the API tokens file", e))?;
        Tokens::parse(&text).map_err(|detail| Error::Config { path: Some(path.to_path_buf()), detail })
    }

    /// Parses `name:token` lines under `[operate]` (the default) and `[read]` section lines
    /// (blank lines and `#` comments are skipped).
    pub fn parse(text: &str) -> std::result::Result<Tokens, String> {
        let mut tokens: Vec<Token> = Vec::new();
        let mut kind = Kind::Operate;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                kind = match section.trim() {
                    "read" => Kind::Read,
                    "operate" => Kind::Operate,
                    other => {
                        return Err(format!(
                            "line {}: unknown section [{other}] (expected [read] or [operate])",
                            i + 1
                        ));
                    }
                };
                continue;
            }
            let Some((name, secret)) = line.split_once(':') else {
                return Err(format!("line {}: expected name:token", i + 1));
            };
            let (name, secret) = (name.trim(), secret.trim());
            if name.is_empty() || secret.is_empty() {
                return Err(format!("line {}: expected name:token with both parts non-empty", i + 1));
            }
            if let Some(problem) = token_problem(secret) {
                return Err(format!("line {} ({name}): {problem}", i + 1));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(format!("line {}: token name {name:?} appears twice", i + 1));
            }
            tokens.push(Token { name: name.to_string(), kind, digest: digest(secret.as_bytes()) });
        }
        if tokens.is_empty() {
            return Err("the file holds no tokens (expected name:token lines)".into());
        }
        Ok(Tokens { tokens })
    }

    /// The caller (token name and kind) an `Authorization` header names, if its token is a
    /// valid one. Every configured token is compared, so the time taken says nothing about
    /// which matched.
    pub fn check(&self, authorization: Option<&str>) -> Option<Caller> {
        let presented = authorization?.trim();
        let (scheme, secret) = presented.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let d = digest(secret.trim().as_bytes());
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(&t.digest, &d) && found.is_none() {
                found = Some(Caller { name: t.name.clone(), kind: t.kind });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check() {
        let t = Tokens::parse("# ops\nalice:aaaaaaaaaaaaaaaaaaaa\n\nbob:bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        assert_eq!(t.names(), ["alice", "bob"]);
        let name = |h: &str| t.check(Some(h)).map(|c| c.name);
        assert_eq!(name("Bearer bbbbbbbbbbbbbbbbbbbb").as_deref(), Some("bob"));
        assert_eq!(name("bearer aaaaaaaaaaaaaaaaaaaa").as_deref(), Some("alice"));
        assert_eq!(t.check(Some("Bearer wrongwrongwrongwrong")), None);
        assert_eq!(t.check(Some("Basic aaaaaaaaaaaaaaaaaaaa")), None);
        assert_eq!(t.check(None), None);
        assert!(!format!("{t:?}").contains("aaaa"));
    }

    #[test]
    fn sections_give_token_kinds() {
        let t = Tokens::parse(
            "ops:oooooooooooooooooooo\n[read]\ngraf:rrrrrrrrrrrrrrrrrrrr\n[operate]\nci:cccccccccccccccccccc\n",
        )
        .unwrap();
        let kind = |s: &str| t.check(Some(&format!("Bearer {s}"))).map(|c| c.kind);
        assert_eq!(kind("oooooooooooooooooooo"), Some(Kind::Operate));
        assert_eq!(kind("rrrrrrrrrrrrrrrrrrrr"), Some(Kind::Read));
        assert_eq!(kind("cccccccccccccccccccc"), Some(Kind::Operate));
        assert!(
            Tokens::parse("[admin]\na:aaaaaaaaaaaaaaaaaaaa\n").unwrap_err().contains("line 1: unknown section [admin]")
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        assert!(Tokens::parse("alice\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("a:short\n").unwrap_err().contains("shorter"));
        assert!(Tokens::parse("a:aaaaaaaaaaaaaaaaaaaa\na:bbbbbbbbbbbbbbbbbbbbbb\n").unwrap_err().contains("twice"));
        assert!(Tokens::parse("\n# nothing\n").is_err());
    }
}
