//! `cortex completions SHELL` and `cortex manpages --dir DIR`: shell completions and man pages
//! generated from the clap definitions (`clap_complete`, `clap_mangen`), so they never drift
//! from the commands. Neither needs a home. `scripts/install.sh` installs what they write.

use super::Cli;
use crate::base::error::{Error, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Prints the completion script for `shell` to standard output.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "cortex", &mut std::io::stdout());
    Ok(0)
}

/// Writes `cortex.1` and `cortex-<command>[-<subcommand>].1` for every command into `dir`
/// (created if missing); prints each file written.
pub(super) fn manpages(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create the man page directory", e))?;
    let mut cmd = Cli::command();
    // Propagates global options (--home, --json) and the version into every subcommand.
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, "cortex", dir, &mut written)?;
    for p in &written {
        println!("{}", crate::base::text::safe_path(p));
    }
    Ok(0)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let page = cmd.clone().name(name.to_string()).bin_name(name.replacen('-', " ", usize::MAX));
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).map_err(|e| Error::other(format!("cannot render {name}.1: {e}")))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).map_err(|e| Error::io(&path, "write", e))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
