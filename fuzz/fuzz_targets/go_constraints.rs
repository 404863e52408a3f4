//! Go sources as the cgo check reads them: file-name suffixes, `//go:build` lines (checked
//! against a reference evaluator) and `import "C"`. The first line of the input is the file
//! name, the rest its source.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (name, src) = text.split_once('\n').unwrap_or(("main.go", &text));
    hephy_backends::fuzzing::go_source(name, src);
});
