//! Integration tests of hephy-backends, against real tools (docker-registry, skopeo, go, umoci).

mod registry;
mod cargo;
mod check;
mod dockerfile;
mod spin;
mod files;
mod go;
mod layer;
mod layout;
