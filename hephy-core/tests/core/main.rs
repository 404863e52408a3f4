//! Integration tests of hephy-core: value types, `hephy.toml`, events, the pipeline and the
//! public API and auto-trait snapshots.

mod api;
mod auto_traits;
mod config;
mod events;
mod pipeline;
mod records;
mod values;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
