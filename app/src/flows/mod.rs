//! The use cases, each over the ports it needs.

pub mod authorize;
pub mod caps;
pub mod check;
pub mod drill;
pub mod fanout;
pub mod guard;
pub mod ingest;
pub mod intake;
pub mod nightly;
pub mod rollup;
pub mod rotation;
pub mod security;
pub mod shutdown;
pub mod throttle;
pub mod tick;
pub mod withhold;
