//! The real servers and tools hephy's tests start, shared by every crate's tests: Debian's
//! `docker-registry` on a free loopback port (with basic or token auth), `skopeo` to look at what
//! was pushed, free ports, and git fixtures.
//!
//! Not published: it exists so tests exercise the real thing, never a mock of it. Crates use it
//! as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! hephy-testing.workspace = true
//! ```
#![deny(missing_docs)]

mod registry;
mod tools;

pub use registry::*;
pub use tools::*;
