//! Backup archive verification (`backup::verify`) on arbitrary bytes. The first byte picks the
//! mode: even, the rest is the `.tar.gz` itself; odd, the rest is a tar stream that the harness
//! gzips first (so the fuzzer reaches the tar and manifest checks instead of stopping at the
//! gzip header). A verified archive must hold only what its manifest lists, at safe paths.
#![no_main]

use cortex::ops::backup::{manifest, verify};
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).unwrap();
        gz.finish().unwrap()
    };
    if let Ok(v) = verify::verify_bytes(Path::new("fuzz.tar.gz"), &bytes) {
        assert!(v.manifest.check().is_ok());
        for f in &v.manifest.files {
            assert!(manifest::check_member_path(&f.path).is_ok());
        }
    }
});
