//! `cortex init`: creates a home, or fills in only what is missing. Never overwrites a file.

use crate::base::error::{Error, Result};
use crate::store::atomic;
use crate::store::files::{self, FileKind};
use crate::store::home::{Home, home_dirs};
use std::path::PathBuf;

/// Creates missing directories and files of `home`; returns what it created.
pub(crate) fn init_home(home: &Home) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for dir in home_dirs(home) {
        if !dir.exists() {
            atomic::create_dir_all(&dir)?;
            created.push(dir);
        }
    }
    let cfg = home.config_file();
    if create_if_missing(&cfg, crate::store::config::DEFAULT_TOML.as_bytes())? {
        created.push(cfg);
    }
    for f in files::ALL.iter().filter(|f| f.essential) {
        let path = home.coord(f.rel);
        let content = f.default.unwrap_or(if f.kind == FileKind::Json { "{}" } else { "" });
        if create_if_missing(&path, content.as_bytes())? {
            created.push(path);
        }
    }
    Ok(created)
}

/// Writes `content` to `path` atomically unless the path exists. Two concurrent inits never
/// overwrite each other: the final step is a hard link, which fails if the name is taken.
pub(crate) fn create_if_missing(path: &std::path::Path, content: &[u8]) -> Result<bool> {
    if path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        atomic::create_dir_all(dir)?;
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!("{}init.{}.{:x}", atomic::TEMP_PREFIX, std::process::id(), fastrand::u64(..)));
    {
        use std::io::Write;
        // Created 0600 from the start (not chmod-ed after): never readable by others, whatever the umask.
        let mut f = crate::store::open::create_new(&tmp)?;
        f.write_all(content).map_err(|e| Error::io(&tmp, "write", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            atomic::fsync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, "create", e)),
    }
}
