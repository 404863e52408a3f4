//! Dockerfiles, parsed and planned as the dockerfile backend does before running a builder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        hephy_backends::fuzzing::dockerfile(text);
    }
});
