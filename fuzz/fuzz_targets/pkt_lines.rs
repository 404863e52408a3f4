//! The client's half of a push before the pack: pkt-lines with ref-update commands,
//! capabilities and push options, read with small limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hephy_git::fuzzing::receive_request(data);
});
