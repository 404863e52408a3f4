//! The wiring behind the example binaries `hephy-server` and `hephy`: the CLI's presentation and
//! commands, the CI workflow templates it writes, and how the server composes the library crates.
//! Not published; the libraries are `hephy-core`, `hephy-oci`, `hephy-backends`, `hephy-git`,
//! `hephy-api` and `hephy-deploy`.

pub mod ci;
pub mod cli;
pub mod commands;
pub mod local;
pub mod publisher;
pub mod runtime;
