//! `cortex.toml`: the configuration parser every binary runs at start-up. Any text either loads
//! or is refused with an error; a loaded configuration is the same after a save and a reload.
#![no_main]

use cortex::store::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("cortex.toml");
    if let Ok(cfg) = Config::parse(text, path) {
        let saved = toml::to_string(&cfg).expect("a loaded configuration encodes");
        let again = Config::parse(&saved, path).unwrap_or_else(|e| panic!("saved configuration does not load: {e}"));
        assert_eq!(again, cfg);
    }
});
