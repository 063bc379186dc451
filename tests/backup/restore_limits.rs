//! What a consistent (well-formed, checksummed) archive still cannot do to a home: open it up
//! with the modes it records (restored files are 0600 and directories 0700 whatever the archive
//! says), or fill the disk (a restore bigger than `[backup] max_restore_bytes` is refused before
//! anything is extracted).
use crate::support::*;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn only_archive(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Copies a real archive to `to`, with mode 0777 for every file in the manifest and the tar headers.
fn rewrite_with_mode_0777(from: &Path, to: &Path) {
    let mut archive = tar::Archive::new(GzDecoder::new(std::fs::File::open(from).unwrap()));
    let mut out = tar::Builder::new(GzEncoder::new(std::fs::File::create(to).unwrap(), Compression::fast()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if entry.path().unwrap().to_string_lossy() == "MANIFEST.json" {
            let mut m: serde_json::Value = serde_json::from_slice(&data).unwrap();
            for f in m["files"].as_array_mut().unwrap() {
                f["mode"] = serde_json::json!(0o777);
            }
            data = serde_json::to_vec(&m).unwrap();
            header.set_size(data.len() as u64);
        }
        header.set_mode(0o777);
        header.set_cksum();
        out.append(&header, data.as_slice()).unwrap();
    }
    out.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn a_restore_ignores_the_archives_modes() {
    let h = TestHome::new();
    h.cortex_ok(&["backup"]);
    let real = only_archive(&h.join("backups"));
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.tar.gz");
    rewrite_with_mode_0777(&real, &open);
    h.cortex_ok(&["restore", "--file", open.to_str().unwrap(), "--verify-only"]);
    h.cortex_ok(&["restore", "--file", open.to_str().unwrap(), "--yes"]);

    let mut paths = Vec::new();
    walk(h.path(), &mut paths);
    let mut loose = Vec::new();
    for p in paths.iter().filter(|p| !p.starts_with(h.join("backups"))) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        if !meta.file_type().is_symlink() && mode != expected {
            loose.push(format!("{mode:o} {}", p.strip_prefix(h.path()).unwrap().display()));
        }
    }
    assert!(loose.is_empty(), "restored with the archive's modes:\n{}", loose.join("\n"));
    for f in ["cortex.toml", "coordination/config/worker-types.json", "coordination/task-queue.json"] {
        assert_eq!(std::fs::metadata(h.join(f)).unwrap().permissions().mode() & 0o777, 0o600, "{f}");
    }
}

#[test]
fn a_restore_larger_than_the_limit_is_refused_before_extraction() {
    let h = TestHome::new();
    // A prompt of 4 MB of zeros: a few KB compressed, 4 MB restored.
    std::fs::create_dir_all(h.join("agents/prompts")).unwrap();
    std::fs::write(h.join("agents/prompts/big.md"), vec![0u8; 4 << 20]).unwrap();
    h.cortex_ok(&["backup"]);
    let archive = only_archive(&h.join("backups"));
    assert!(std::fs::metadata(&archive).unwrap().len() < 1 << 20, "the archive should be small");
    h.set_config("backup", "max_restore_bytes", &(1u64 << 20).to_string());
    let queue = std::fs::read(h.join("coordination/task-queue.json")).unwrap();
    for extra in [&["--yes"][..], &["--dry-run"][..]] {
        let mut args = vec!["restore", "--file", archive.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = h.cortex(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a 4 MB restore passed a 1 MB limit");
        assert!(err.contains("max_restore_bytes") && err.contains("nothing was changed"), "{err}");
    }
    // Nothing was extracted or staged, and no pre-restore backup was taken.
    let staged: Vec<_> = std::fs::read_dir(h.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp."))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    assert!(
        !h.join("backups/pre-restore").exists()
            || std::fs::read_dir(h.join("backups/pre-restore")).unwrap().next().is_none()
    );
    assert_eq!(std::fs::read(h.join("coordination/task-queue.json")).unwrap(), queue);
    // Under the default limit the same archive restores.
    h.set_config("backup", "max_restore_bytes", "1073741824");
    h.cortex_ok(&["restore", "--file", archive.to_str().unwrap(), "--yes"]);
    assert_eq!(std::fs::metadata(h.join("agents/prompts/big.md")).unwrap().len(), 4 << 20);
}
