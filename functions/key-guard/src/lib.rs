//! key-guard: owns the keys that cost money. Rotates them (Secrets Manager rotation), stops
//! spend in an emergency (kill switch first, then each key at its provider), restores it.
//! `main.rs` only wires.

pub mod app;
pub mod config;
pub mod handler;
