//! Entry points of the fuzz targets in `fuzz/` (compiled only with `--cfg fuzzing`, which
//! `cargo fuzz` sets; not part of the API). Each runs a parser the way a push does and panics
//! when an invariant breaks.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::receive::commands::{read_request, Limits};

/// Small limits, so that inputs of a few KB reach every one of them.
const LIMITS: Limits = Limits {
    ref_updates: 8,
    ref_update_bytes: 512,
    push_options: 4,
    push_options_bytes: 128,
    count_bytes: 2048,
};

/// Reads `input` as the client's half of a push before the pack: ref-update commands with
/// capabilities, then push options, as receive-pack does with small limits. Checks that what
/// was kept stays within them.
pub fn receive_request(input: &[u8]) {
    let mut reader = input;
    let future = pin!(read_request(&mut reader, &LIMITS));
    // A byte slice is always ready: one poll finishes the read.
    let Poll::Ready(result) = future.poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("reading from memory did not finish in one poll");
    };
    let Ok(req) = result else { return };
    assert!(
        req.commands.len() <= LIMITS.ref_updates,
        "{} ref updates kept",
        req.commands.len()
    );
    assert!(req.push_options.len() <= LIMITS.push_options);
    let option_bytes: usize = req.push_options.iter().map(String::len).sum();
    assert!(option_bytes <= LIMITS.push_options_bytes);
    if !req.caps.push_options || req.commands.is_empty() {
        assert!(
            req.push_options.is_empty(),
            "push options without the capability"
        );
    }
    for c in &req.commands {
        assert!(c.name.len() <= LIMITS.ref_update_bytes);
    }
    if let Some(message) = &req.over_limit {
        assert!(message.contains("the limit is"), "{message}");
    }
}
