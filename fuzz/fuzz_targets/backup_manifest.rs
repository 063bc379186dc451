//! `MANIFEST.json` of a backup archive: parse, check (paths, links, checksums, duplicates), and
//! the member-path and link checks on their own. Whatever a checked manifest lists must be a
//! path that stays inside the home.
#![no_main]

use cortex::ops::backup::manifest;
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fn stays_inside(path: &str) {
    assert!(!path.starts_with('/'), "{path:?} accepted as a member path");
    assert!(Path::new(path).components().all(|c| matches!(c, Component::Normal(_))), "{path:?} accepted");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = manifest::parse(data)
        && m.check().is_ok()
    {
        for f in &m.files {
            stays_inside(&f.path);
        }
        for l in &m.links {
            stays_inside(&l.path);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (a, b) = text.split_once('\n').unwrap_or((text, ""));
        if manifest::check_member_path(a).is_ok() {
            stays_inside(a);
        }
        if manifest::check_link(a, b).is_ok() {
            stays_inside(a);
            assert!(!b.starts_with('/'));
        }
    }
});
