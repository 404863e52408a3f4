//! End-to-end tests of the product: `hephy-server` and the `hephy` CLI as built binaries, with the
//! real `git` and OpenSSH clients, Debian's docker-registry, go, runc and qemu-user-static.

mod attacks;
mod cli;
mod dataplane;
mod push;
mod support;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
