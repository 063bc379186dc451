//! Restore refuses damaged and hostile archives before touching anything: exit non-zero, a
//! clear message, the home byte-for-byte as it was, no pre-restore backup, nothing written
//! outside. The archives are built here with the `tar` crate.
use crate::support::*;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const QUEUE: &[u8] = b"{\"tasks\": []}\n";
const BUDGET: &[u8] = b"{\"total\": 1000, \"used\": 0, \"available\": 1000}\n";

/// One archive member as the test wants it written (name bytes used verbatim).
struct Member {
    name: String,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<String>,
    /// Header size different from the data length (the data is padded/cut to it).
    size: Option<u64>,
}

fn file(name: &str, data: &[u8]) -> Member {
    Member { name: name.into(), kind: tar::EntryType::Regular, data: data.to_vec(), link: None, size: None }
}

fn special(name: &str, kind: tar::EntryType, link: Option<&str>) -> Member {
    Member { name: name.into(), kind, data: Vec::new(), link: link.map(str::to_string), size: None }
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest listing `files` (path, data).
fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
    let files: Vec<_> = files
        .iter()
        .map(|(p, d)| serde_json::json!({"path": p, "size": d.len(), "mode": 0o600, "sha256": sha(d)}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "format_version": 1, "cortex_version": "0.1.0", "created_at": "2026-01-01T00:00:00Z",
        "host": "test", "home": "/nowhere", "kind": "backup", "files": files, "links": []
    }))
    .unwrap()
}

fn good_files() -> Vec<(&'static str, &'static [u8])> {
    vec![("coordination/task-queue.json", QUEUE), ("coordination/token-budget.json", BUDGET)]
}

fn build(path: &Path, members: Vec<Member>) {
    let mut tar = tar::Builder::new(GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::default()));
    for m in members {
        let mut h = tar::Header::new_old();
        let name = m.name.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = &m.link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        let size = m.size.unwrap_or(m.data.len() as u64);
        h.set_entry_type(m.kind);
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_cksum();
        let mut data = m.data.clone();
        data.resize(size as usize, b' ');
        tar.append(&h, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// Manifest first, then the good files, then `extra`.
fn with_extra(path: &Path, extra: Vec<Member>) {
    let mut members = vec![file("MANIFEST.json", &manifest(&good_files()))];
    members.extend(good_files().into_iter().map(|(p, d)| file(p, d)));
    members.extend(extra);
    build(path, members);
}

/// Every file under the home except lock files: path → SHA-256.
fn fingerprint(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                if !p.ends_with(".locks") {
                    stack.push(p);
                }
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    sha(&std::fs::read(&p).unwrap_or_default()),
                );
            }
        }
    }
    out
}

fn assert_refused(name: &str, archive: &Path, expect: &str) {
    let h = TestHome::new();
    h.cortex_ok(&["event", "emit", "--type", "before", "--message", "state before"]);
    let before = fingerprint(h.path());
    let a = archive.display().to_string();
    for args in [vec!["restore", "--file", &a, "--yes"], vec!["restore", "--file", &a, "--verify-only"]] {
        let out = h.cortex(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {args:?} must fail");
        assert!(err.contains("not a usable backup") && err.contains(expect), "{name}: unclear message: {err}");
        assert!(err.contains("nothing was changed"), "{name}: {err}");
    }
    assert_eq!(fingerprint(h.path()), before, "{name}: the home changed");
    assert!(!h.join("backups/pre-restore").exists(), "{name}: pre-restore backup written before verification");
}

fn tmp_archive(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.tar.gz"))
}

#[test]
fn a_well_formed_handmade_archive_verifies() {
    // The control: the builder itself produces archives restore accepts.
    let dir = tempfile::tempdir().unwrap();
    let a = tmp_archive(&dir, "good");
    with_extra(&a, vec![]);
    let h = TestHome::new();
    let out = h.cortex_ok(&["restore", "--file", &a.display().to_string(), "--verify-only"]);
    assert!(out.starts_with("OK "), "{out}");
}

#[test]
fn damaged_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A real backup, then damaged copies of it.
    let src = TestHome::new();
    src.cortex_ok(&["event", "emit", "--type", "x", "--message", &"padding ".repeat(2000)]);
    let out = src.cortex_ok(&["--json", "backup"]);
    let real = PathBuf::from(serde_json::from_str::<serde_json::Value>(&out).unwrap()["path"].as_str().unwrap());
    let bytes = std::fs::read(&real).unwrap();

    let truncated = tmp_archive(&dir, "truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused("truncated", &truncated, "damaged or truncated");

    let flipped = tmp_archive(&dir, "flipped");
    let mut f = bytes.clone();
    let i = f.len() / 2;
    f[i] ^= 0x40;
    std::fs::write(&flipped, &f).unwrap();
    assert_refused("flipped byte", &flipped, "");

    let not_gzip = tmp_archive(&dir, "not-gzip");
    std::fs::write(&not_gzip, b"this is not an archive").unwrap();
    assert_refused("not gzip", &not_gzip, "damaged or truncated");
}

#[test]
fn missing_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = tmp_archive(&dir, "no-manifest");
    build(&a, good_files().into_iter().map(|(p, d)| file(p, d)).collect());
    assert_refused("missing manifest", &a, "MANIFEST.json is missing");
}

#[test]
fn checksum_and_size_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = tmp_archive(&dir, "checksum");
    let mut members = vec![file("MANIFEST.json", &manifest(&good_files()))];
    members.push(file("coordination/task-queue.json", b"{\"tasks\": [1]}"));
    members.push(file("coordination/token-budget.json", BUDGET));
    build(&a, members);
    assert_refused("checksum mismatch", &a, "checksum mismatch");

    let a = tmp_archive(&dir, "bigger");
    let mut members = vec![file("MANIFEST.json", &manifest(&good_files()))];
    let mut big = file("coordination/task-queue.json", QUEUE);
    big.size = Some(1 << 20);
    members.push(big);
    members.push(file("coordination/token-budget.json", BUDGET));
    build(&a, members);
    assert_refused("size beyond the manifest", &a, "more than the");

    let a = tmp_archive(&dir, "missing-member");
    build(&a, vec![file("MANIFEST.json", &manifest(&good_files())), file("coordination/task-queue.json", QUEUE)]);
    assert_refused("member missing", &a, "missing from the archive");
}

#[test]
fn hostile_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("escaped");
    let cases = [
        ("dotdot", "../../etc/x", "path with `..`"),
        ("absolute", "/tmp/cortex-hostile-absolute-x", "absolute path"),
        ("nested dotdot", "coordination/../../x", "path with `..`"),
        ("outside roots", "etc/cron.d/x", "outside the directories"),
        ("unlisted", "coordination/extra.json", "not listed in MANIFEST.json"),
    ];
    for (name, path, expect) in cases {
        let a = tmp_archive(&dir, &name.replace(' ', "-"));
        with_extra(&a, vec![file(path, b"{}")]);
        assert_refused(name, &a, expect);
    }
    assert!(!Path::new("/tmp/cortex-hostile-absolute-x").exists());
    assert!(!outside.exists());

    // A manifest that itself lists a hostile path.
    let a = tmp_archive(&dir, "manifest-dotdot");
    let evil: &[(&str, &[u8])] = &[("../../etc/x", b"{}")];
    build(&a, vec![file("MANIFEST.json", &manifest(evil)), file("../../etc/x", b"{}")]);
    assert_refused("manifest lists ..", &a, "path with `..`");
}

#[test]
fn links_devices_and_fifos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "symlink escaping",
            special("coordination/evil", tar::EntryType::Symlink, Some("../../../etc/passwd")),
            "points outside",
        ),
        (
            "absolute symlink",
            special("coordination/evil", tar::EntryType::Symlink, Some("/etc/passwd")),
            "absolute path",
        ),
        (
            "hard link escaping",
            special("coordination/evil", tar::EntryType::Link, Some("../../etc/passwd")),
            "hard link",
        ),
        ("device node", special("coordination/dev", tar::EntryType::Char, None), "device node"),
        ("block device", special("coordination/blk", tar::EntryType::Block, None), "device node"),
        ("fifo", special("coordination/fifo", tar::EntryType::Fifo, None), "FIFO"),
    ];
    for (name, member, expect) in cases {
        let a = tmp_archive(&dir, &name.replace(' ', "-"));
        with_extra(&a, vec![member]);
        assert_refused(name, &a, expect);
    }
}
