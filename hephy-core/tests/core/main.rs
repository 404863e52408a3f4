//! Integration tests of hephy-core.
