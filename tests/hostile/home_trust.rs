//! A home is a trust boundary: its `cortex.toml` and worker types name the commands Cortex runs.
//! A home owned by another user, or one others can write, is refused from every source (the
//! current directory, `--home`, `CORTEX_HOME`), by the CLI and the daemons alike, with an error
//! saying why and how to trust it — unless the operator trusts it from outside the home
//! (`CORTEX_SAFE_HOMES`, or the user's `safe-homes` file), as git's `safe.directory` does.
use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chown_tree(path: &Path, uid: u32) {
    let id = Some(nix::unistd::Uid::from_raw(uid));
    nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(uid))).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

/// `cortex args...` run in `cwd` with no home named anywhere, and a user config directory of its
/// own (so no safe-homes file of the machine's user counts).
fn cortex_in(cwd: &Path, config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("cortex"));
    c.current_dir(cwd)
        .args(args)
        .env_remove("CORTEX_HOME")
        .env_remove("COMMIT_RELAY_HOME")
        .env_remove("CORTEX_SAFE_HOMES")
        .env("XDG_CONFIG_HOME", config)
        .stdin(std::process::Stdio::null());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pid_files(h: &TestHome) -> Vec<String> {
    std::fs::read_dir(h.join("run"))
        .map(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".pid")).collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_home_owned_by_another_user_in_the_current_directory_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give the home to nobody");
        return;
    }
    let config = tempfile::tempdir().unwrap();
    let h = TestHome::new();
    h.set_config("api", "bind", &format!("\"127.0.0.1:{}\"", free_port()));
    // Another user's directory with a configuration (and so the commands) of their choosing.
    chown_tree(h.path(), NOBODY);
    let out = cortex_in(h.path(), config.path(), &["start"]).output().unwrap();
    let started = pid_files(&h);
    if !started.is_empty() {
        // Without the check the daemons now run nobody's configuration as root: stop them.
        let _ = cortex_in(h.path(), config.path(), &["stop"]).env("CORTEX_SAFE_HOMES", "*").output();
    }
    assert!(!out.status.success(), "cortex start ran in nobody's directory as root (started: {started:?})");
    assert!(started.is_empty(), "daemons started in nobody's home: {started:?}");
    let err = stderr(&out);
    for want in ["refusing the home", "the current directory", "owned by uid 65534", "CORTEX_SAFE_HOMES", "safe-homes"]
    {
        assert!(err.contains(want), "the error does not say {want:?}: {err}");
    }

    // The same home named by --home or CORTEX_HOME, and by a daemon, is refused too.
    let elsewhere = tempfile::tempdir().unwrap();
    let home = h.path().to_str().unwrap();
    let out = cortex_in(elsewhere.path(), config.path(), &["--home", home, "validate"]).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("found through --home"), "{}", stderr(&out));
    let out = cortex_in(elsewhere.path(), config.path(), &["validate"]).env("CORTEX_HOME", home).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("found through CORTEX_HOME"), "{}", stderr(&out));
    let out = Command::new(bin("cortex-heartbeat"))
        .args(["--home", home])
        .env("XDG_CONFIG_HOME", config.path())
        .env_remove("CORTEX_SAFE_HOMES")
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("owned by uid 65534"), "daemon: {}", stderr(&out));
    assert!(pid_files(&h).is_empty());

    // Trusted explicitly from outside the home: by the environment, or by the user's file.
    let out = cortex_in(h.path(), config.path(), &["validate"]).env("CORTEX_SAFE_HOMES", format!("/x:{home}")).output();
    assert!(out.as_ref().unwrap().status.success(), "{}", stderr(out.as_ref().unwrap()));
    std::fs::create_dir_all(config.path().join("cortex")).unwrap();
    std::fs::write(config.path().join("cortex/safe-homes"), format!("# trusted\n{home}\n")).unwrap();
    let out = cortex_in(h.path(), config.path(), &["validate"]).output().unwrap();
    assert!(out.status.success(), "listed in safe-homes: {}", stderr(&out));
}

#[test]
fn a_group_or_world_writable_home_of_our_own_is_refused() {
    let config = tempfile::tempdir().unwrap();
    let h = TestHome::new();
    let home = h.path().to_str().unwrap().to_string();
    for (mode, why) in [(0o777, "world-writable"), (0o770, "group-writable"), (0o1777, "world-writable")] {
        std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let out = cortex_in(h.path(), config.path(), &["--home", &home, "validate"]).output().unwrap();
        assert!(!out.status.success(), "a home of mode {mode:o} was used");
        assert!(stderr(&out).contains(why) && stderr(&out).contains("chmod go-w"), "{mode:o}: {}", stderr(&out));
        let out = cortex_in(h.path(), config.path(), &["--home", &home, "validate"])
            .env("CORTEX_SAFE_HOMES", "*")
            .output()
            .unwrap();
        assert!(out.status.success(), "CORTEX_SAFE_HOMES=* at mode {mode:o}: {}", stderr(&out));
    }
    // Private (0700) and the usual checkout (0755) are fine.
    for mode in [0o700, 0o755] {
        std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let out = cortex_in(h.path(), config.path(), &["validate"]).output().unwrap();
        assert!(out.status.success(), "a home of mode {mode:o} was refused: {}", stderr(&out));
    }
}

/// The home's own directory is not all that names the commands Cortex runs: a private root whose
/// `coordination/config/` (or `coordination/`) others can write, or whose `cortex.toml` another
/// user owns, is refused the same way, naming what is wrong.
#[test]
fn a_private_home_with_a_writable_config_directory_or_a_foreign_cortex_toml_is_refused() {
    let config = tempfile::tempdir().unwrap();
    let h = TestHome::new();
    let home = h.path().to_str().unwrap().to_string();
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for (rel, mode, why) in [
        ("coordination/config", 0o777, "its coordination/config: it is world-writable"),
        ("coordination", 0o770, "its coordination: it is group-writable"),
    ] {
        let dir = h.join(rel);
        let before = std::fs::metadata(&dir).unwrap().permissions();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = cortex_in(h.path(), config.path(), &["--home", &home, "validate"]).output().unwrap();
        assert!(!out.status.success(), "a home whose {rel} is mode {mode:o} was used");
        assert!(stderr(&out).contains(why), "{rel}: {}", stderr(&out));
        std::fs::set_permissions(&dir, before).unwrap();
    }
    if is_root() {
        let toml = h.join("cortex.toml");
        nix::unistd::chown(&toml, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
        let out = cortex_in(h.path(), config.path(), &["--home", &home, "validate"]).output().unwrap();
        assert!(!out.status.success(), "a home whose cortex.toml nobody owns was used");
        assert!(stderr(&out).contains("its cortex.toml: it is owned by uid 65534"), "{}", stderr(&out));
        nix::unistd::chown(&toml, Some(nix::unistd::geteuid()), None).unwrap();
    }
    let out = cortex_in(h.path(), config.path(), &["--home", &home, "validate"]).output().unwrap();
    assert!(out.status.success(), "put right, the home is used again: {}", stderr(&out));
}
