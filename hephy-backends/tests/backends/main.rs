//! Integration tests of hephy-backends, against real tools (docker-registry, skopeo, go, umoci).

mod build_env;
mod cargo;
mod check;
mod dockerfile;
mod exec;
mod files;
mod go;
mod paths;
mod registry;
mod sandbox;
mod spin;
mod support;
