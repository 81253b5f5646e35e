//! daily-aggregate: the nightly roll-up (and backfills on demand). `main.rs` only wires.

pub mod app;
pub mod config;
pub mod handler;
