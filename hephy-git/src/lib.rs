//! hephy-git: under construction.
