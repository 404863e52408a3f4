//! Benchmarks of hephy.
//!
//! Whole-process comparisons against peers are scripts beside this crate:
//! `benches/build-vs-buildah.sh` builds and pushes a generated 250 MB context with hephy (the
//! `hephy-bench` binary of this package) and with buildah, to the same local registry, and prints
//! both times, their ratio, and the share of bytes re-uploaded after a one-file change.
//! Component benchmarks (criterion) live in the crates they measure.
