//! budget-check: evaluates every budget on a schedule (or on demand) and raises each alert
//! once per crossing. `main.rs` only wires; the event mapping is in `handler`.

pub mod app;
pub mod config;
pub mod handler;
