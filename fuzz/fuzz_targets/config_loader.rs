//! `config::load_str` on arbitrary UTF-8 text. Problems are fine; a panic is not. A config that
//! loads must load again, to the same `Config`, from its own `effective_settings()` (which
//! `--check-config` prints and promises to be loadable).
#![no_main]

use std::path::Path;

use glint::config::load_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/glint/glint-api.conf");
    match load_str(text, path) {
        Ok(loaded) => {
            let settings = loaded.config.effective_settings();
            match load_str(&settings, path) {
                Ok(again) => assert_eq!(
                    again.config, loaded.config,
                    "effective settings load differently:\n{settings}"
                ),
                Err(error) => panic!("effective settings do not load: {error}\n{settings}"),
            }
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error without problems");
            let _ = error.to_string();
        }
    }
});
