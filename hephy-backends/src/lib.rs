//! hephy-backends: under construction.
