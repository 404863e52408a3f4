//! Shared wiring for the example binaries.
