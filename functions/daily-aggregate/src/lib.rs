//! daily-aggregate: the nightly roll-up (and backfills on demand). `main.rs` only wires.

pub mod handler;
