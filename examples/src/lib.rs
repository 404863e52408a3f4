//! The wiring behind the example binaries `hephy-server` and `hephy`: the CLI's presentation and
//! how the server composes the library crates (the control API and CI templates they use live in
//! `hephy_git::api` and `hephy_git::ci`). Not published; the libraries are `hephy-core`, `hephy-backends`, `hephy-git` and
//! `hephy-deploy`.

pub mod cli;
pub mod local;
pub mod publisher;
pub mod runtime;
