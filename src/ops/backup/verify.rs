//! Complete verification of an archive before anything is touched: the gzip stream and its CRC,
//! the tar structure, `MANIFEST.json` first and well formed, and every entry checked against it
//! (regular files only, plus the declared alias link): safe relative path, size equal to the
//! manifest's (a larger one is refused before it is read), SHA-256 equal, nothing missing,
//! nothing extra, no duplicates, no device, FIFO, hard link or escaping symlink.
//!
//! [`walk`] also drives extraction, so what is written is exactly what was verified, and is
//! checked again while it is written.

use super::manifest::{self, Manifest, ManifestFile};
use crate::base::error::{Error, Result};
use flate2::read::GzDecoder;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// A verified archive.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub path: PathBuf,
    pub archive_bytes: u64,
    pub manifest: Manifest,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::refused(format!("{} is not a usable backup: {reason}; nothing was changed", path.display()))
}

/// Verifies an archive completely.
pub fn verify(path: &Path) -> Result<Verified> {
    walk(path, |_, _| Ok(()))
}

/// Reads the archive, verifying everything; calls `sink(file, content)` for each regular file
/// (the content reader yields exactly the manifest's size). A sink error stops the walk. The
/// checksum of each file is compared after its sink has run, so a caller that writes the content
/// must discard it when the walk fails.
pub fn walk(path: &Path, sink: impl FnMut(&ManifestFile, &mut dyn Read) -> Result<()>) -> Result<Verified> {
    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let archive_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    walk_reader(path, BufReader::with_capacity(1 << 16, file), archive_bytes, sink)
}

/// Verifies archive bytes already in memory (`label` names them in errors). The fuzzer's entry.
pub fn verify_bytes(label: &Path, bytes: &[u8]) -> Result<Verified> {
    walk_reader(label, bytes, bytes.len() as u64, |_, _| Ok(()))
}

/// Reads only the manifest of an archive (its first entry), checked: enough to tell an archive
/// `cortex backup` wrote from any other file with a similar name, without reading the rest.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let file = crate::store::open::read(path).map_err(|e| crate::store::open::refuse_link(path, "open", e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::with_capacity(1 << 16, file)));
    let damaged = |e: std::io::Error| bad(path, format!("the gzip/tar data is damaged or truncated ({e})"));
    let mut entries = archive.entries().map_err(damaged)?;
    first_manifest(path, entries.next())
}

/// The manifest from the archive's first entry, which must be `MANIFEST.json`.
fn first_manifest<R: Read>(path: &Path, first: Option<std::io::Result<tar::Entry<'_, R>>>) -> Result<Manifest> {
    let damaged = |e: std::io::Error| bad(path, format!("the gzip/tar data is damaged or truncated ({e})"));
    let manifest: Manifest = match first {
        None => return Err(bad(path, "MANIFEST.json is missing (the archive is empty)")),
        Some(Err(e)) => return Err(damaged(e)),
        Some(Ok(mut entry)) => {
            let name = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            if name != manifest::MANIFEST_NAME || !entry.header().entry_type().is_file() {
                return Err(bad(
                    path,
                    format!(
                        "MANIFEST.json is missing (the first entry is {name:?}): it was not written by `cortex backup`, so \
                     its content cannot be verified; extract it by hand only if you trust it"
                    ),
                ));
            }
            let size = entry.header().entry_size().map_err(damaged)?;
            if size > manifest::MAX_MANIFEST_BYTES {
                return Err(bad(path, format!("MANIFEST.json is {size} bytes, too large to be a Cortex manifest")));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(damaged)?;
            let m = manifest::parse(&bytes).map_err(|e| bad(path, e))?;
            m.check().map_err(|e| bad(path, e))?;
            m
        }
    };
    Ok(manifest)
}

/// [`walk`] over any reader of the gzip stream; `path` names the archive in errors.
pub fn walk_reader(
    path: &Path,
    reader: impl Read,
    archive_bytes: u64,
    mut sink: impl FnMut(&ManifestFile, &mut dyn Read) -> Result<()>,
) -> Result<Verified> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let damaged = |e: std::io::Error| bad(path, format!("the gzip/tar data is damaged or truncated ({e})"));
    let mut entries = archive.entries().map_err(damaged)?;

    // MANIFEST.json comes first.
    let manifest = first_manifest(path, entries.next())?;

    let index: HashMap<&str, usize> = manifest.files.iter().enumerate().map(|(i, f)| (f.path.as_str(), i)).collect();
    let links: HashMap<&str, &str> = manifest.links.iter().map(|l| (l.path.as_str(), l.target.as_str())).collect();
    let mut seen_files = vec![false; manifest.files.len()];
    let mut seen_links = std::collections::HashSet::new();

    for entry in entries {
        let mut entry = entry.map_err(damaged)?;
        let raw_name = entry.path().map_err(|e| bad(path, format!("an entry has an unreadable name ({e})")))?;
        let name = raw_name
            .to_str()
            .ok_or_else(|| bad(path, format!("the entry {raw_name:?} has a name that is not UTF-8")))?
            .to_string();
        let etype = entry.header().entry_type();
        let what = |reason: String| bad(path, format!("entry {name:?}: {reason}"));
        if etype.is_symlink() {
            let target =
                entry.link_name().map_err(damaged)?.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            if let Err(e) = manifest::check_link(&name, &target) {
                return Err(what(format!("symbolic link {e}")));
            }
            match links.get(name.as_str()) {
                Some(t) if *t == target => {}
                _ => return Err(what(format!("symbolic link to {target:?} not listed in MANIFEST.json"))),
            }
            if !seen_links.insert(name.clone()) {
                return Err(what("appears twice".into()));
            }
            continue;
        }
        if etype.is_hard_link() {
            let target =
                entry.link_name().map_err(damaged)?.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            let reason = match manifest::check_link(&name, &target) {
                Err(e) => format!("hard link {e}"),
                Ok(()) => format!("hard link to {target:?} (Cortex archives hold no links)"),
            };
            return Err(what(reason));
        }
        if etype.is_character_special() || etype.is_block_special() {
            return Err(what("a device node".into()));
        }
        if etype.is_fifo() {
            return Err(what("a FIFO".into()));
        }
        manifest::check_member_path(&name).map_err(what)?;
        if etype.is_dir() {
            return Err(what("a directory entry, not listed in MANIFEST.json".into()));
        }
        if !etype.is_file() && !etype.is_contiguous() {
            return Err(what(format!("an entry of unsupported type {:?}", etype.as_byte() as char)));
        }
        let Some(&i) = index.get(name.as_str()) else {
            return Err(what("not listed in MANIFEST.json".into()));
        };
        if seen_files[i] {
            return Err(what("appears twice".into()));
        }
        seen_files[i] = true;
        let mf = &manifest.files[i];
        let size = entry.header().entry_size().map_err(damaged)?;
        if size > mf.size {
            return Err(what(format!("{size} bytes, more than the {} bytes MANIFEST.json lists", mf.size)));
        }
        if size != mf.size {
            return Err(what(format!("{size} bytes but MANIFEST.json lists {}", mf.size)));
        }
        let mut reader = HashingReader { inner: &mut entry, hasher: Sha256::new(), count: 0 };
        sink(mf, &mut reader)?;
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(damaged)?;
        if reader.count != mf.size {
            return Err(what(format!("holds {} bytes but MANIFEST.json lists {}", reader.count, mf.size)));
        }
        let sum = crate::store::hex(&reader.hasher.finalize());
        if sum != mf.sha256 {
            return Err(what(format!("checksum mismatch (SHA-256 {sum}, MANIFEST.json lists {})", mf.sha256)));
        }
    }
    // The rest of the gzip stream: its CRC and length are checked at its end.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(damaged)?;

    if let Some(i) = seen_files.iter().position(|s| !s) {
        return Err(bad(
            path,
            format!("{} is listed in MANIFEST.json but missing from the archive", manifest.files[i].path),
        ));
    }
    if let Some(l) = manifest.links.iter().find(|l| !seen_links.contains(&l.path)) {
        return Err(bad(path, format!("{} is listed in MANIFEST.json but missing from the archive", l.path)));
    }
    Ok(Verified { path: path.to_path_buf(), archive_bytes, manifest })
}

struct HashingReader<'a, R> {
    inner: &'a mut R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
