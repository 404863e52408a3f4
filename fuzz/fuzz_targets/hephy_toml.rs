//! `hephy.toml` as a push carries it, parsed by hephy-core.
#![no_main]

use hephy_core::AppConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AppConfig::from_toml("hephy.toml", text) {
        Ok(config) => {
            // What parsed can be looked at as the pipeline does.
            let _ = format!("{config:?}");
            let _ = config.build.backend_tables().count();
        }
        Err(e) => {
            assert!(e.to_string().contains("hephy.toml"), "{e}");
            let _ = (e.line(), e.column());
        }
    }
});
