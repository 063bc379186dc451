//! `scripts/install.sh`: into a temporary prefix, with the binaries this test build already made
//! (`CORTEX_INSTALL_BIN_DIR`, so no release build runs here): every binary, the completions, the
//! man pages and the systemd user unit with the prefix's paths; the installed `cortex` works;
//! `--uninstall` removes exactly what the manifest lists and leaves other files alone.
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

fn install(tmp: &Path, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh"))
        .args(args)
        .env("CORTEX_INSTALL_BIN_DIR", bin_dir())
        .env("CORTEX_SYSTEMD_USER_DIR", tmp.join("systemd-user"))
        .env("HOME", tmp.join("home"))
        .output()
        .unwrap()
}

#[test]
fn install_into_a_prefix_and_uninstall_exactly_what_it_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    // Someone else's file in the same prefix.
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::write(prefix.join("bin/other-tool"), "keep me").unwrap();
    let out = install(tmp.path(), &["--prefix", prefix.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    for b in
        ["cortex", "cortex-worker", "cortex-coordinator", "cortex-pm", "cortex-api", "cortex-exec-shim", "cortex-slurm"]
    {
        let p = prefix.join("bin").join(b);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755, "{}", p.display());
    }
    let bash = std::fs::read_to_string(prefix.join("share/bash-completion/completions/cortex")).unwrap();
    assert!(bash.contains("complete -F _cortex") || bash.contains("-F _cortex"), "{bash}");
    assert!(
        std::fs::read_to_string(prefix.join("share/zsh/site-functions/_cortex"))
            .unwrap()
            .starts_with("#compdef cortex")
    );
    assert!(prefix.join("share/fish/vendor_completions.d/cortex.fish").is_file());
    for page in ["cortex.1", "cortex-top.1", "cortex-task-logs.1", "cortex-scheduler-pause.1"] {
        assert!(prefix.join("share/man/man1").join(page).is_file(), "{page}");
    }
    let unit = std::fs::read_to_string(tmp.path().join("systemd-user/cortex.service")).unwrap();
    let cortex = prefix.join("bin/cortex");
    assert!(unit.contains(&format!("ExecStart={} run\n", cortex.display())), "{unit}");
    assert!(unit.contains(&format!("ExecStartPre={} init\n", cortex.display())), "{unit}");
    assert!(!unit.contains("target/release"), "{unit}");
    // The installed cortex runs.
    let v = Command::new(&cortex).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("cortex {}", env!("CARGO_PKG_VERSION")));

    let manifest = std::fs::read_to_string(prefix.join("share/cortex/install-manifest")).unwrap();
    let listed: Vec<&str> = manifest.lines().collect();
    let mut on_disk: Vec<PathBuf> = files_under(&prefix);
    on_disk.extend(files_under(&tmp.path().join("systemd-user")));
    on_disk.retain(|p| !p.ends_with("other-tool") && !p.ends_with("install-manifest"));
    let mut listed_paths: Vec<PathBuf> = listed.iter().map(PathBuf::from).collect();
    listed_paths.sort();
    on_disk.sort();
    assert_eq!(listed_paths, on_disk, "the manifest lists every file installed");

    let out = install(tmp.path(), &["--uninstall", "--prefix", prefix.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(files_under(&prefix), [prefix.join("bin/other-tool")], "only the other file is left");
    assert!(!prefix.join("share").exists(), "the directories it made are gone");
    assert!(!tmp.path().join("systemd-user/cortex.service").exists());
    assert!(tmp.path().join("systemd-user").is_dir(), "a directory outside the prefix is left in place");
    // Nothing left to uninstall.
    let again = install(tmp.path(), &["--uninstall", "--prefix", prefix.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to uninstall"));
}
