//! Benchmarks of hephy.
