//! alert-fanout: delivers each alert from the alerts topic to the channels its tier routes to,
//! exactly once per (alert, channel); digests warnings where asked; takes acknowledgements.
//! `main.rs` only wires.

pub mod app;
pub mod channels;
pub mod config;
pub mod handler;
