//! The wiring behind the example binaries `hephy-server` and `hephy`: the control API between
//! them, the CLI's presentation, CI workflow templates, and how the server composes the library
//! crates. Not published; the libraries are `hephy-core`, `hephy-backends`, `hephy-git` and
//! `hephy-deploy`.

pub mod api;
pub mod ci;
pub mod cli;
pub mod local;
pub mod publisher;
pub mod runtime;
